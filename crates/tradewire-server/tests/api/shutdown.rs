//! Graceful shutdown: every client is told 1001, and after a restart resumes with nothing
//! lost and nothing doubled.

use serde_json::json;
use tradewire_protocol::ServerFrame;

use crate::helpers::{Closed, spawn_app};

#[tokio::test]
async fn clients_get_1001_and_resume_after_restart_with_nothing_lost() {
    let mut app = spawn_app().await;
    let mut clients = Vec::new();
    for name in ["alice", "alice", "bob"] {
        let mut ws = app.ws(name).await;
        let (pos, _) = ws.subscribe_snapshot("s", json!(["*"])).await;
        clients.push((name, ws, pos));
    }
    // Commits racing the shutdown: some reach clients before 1001, the rest after restart.
    app.insert_signals("alice", 100, "racing");
    app.insert_signals("bob", 100, "racing");
    app.stop().await;

    let mut resume_points = Vec::new();
    for (name, mut ws, pos) in clients {
        let (seen, closed) = ws.drain_until_close().await;
        assert_eq!(closed, Closed::Code(1001), "{name} is told the server is going away");
        let mut last = pos.seq;
        for ev in seen {
            assert_eq!(ev.seq, last + 1);
            last = ev.seq;
        }
        resume_points.push((name, last));
    }

    app.insert_signals("alice", 10, "while down");
    let app = app.restart().await;
    for (name, mut last) in resume_points {
        let mut ws = app.ws(name).await;
        ws.send_json(json!({"op": "subscribe", "id": "s", "topics": ["*"], "from": {"epoch": app.epoch(), "seq": last}}))
            .await;
        assert!(matches!(ws.frame().await, ServerFrame::Subscribed { .. }));
        let head = app.head(name).await;
        while last < head {
            let ev = ws.event().await;
            assert_eq!(ev.seq, last + 1, "{name}: nothing lost, nothing doubled");
            last = ev.seq;
        }
    }
}

#[tokio::test]
async fn a_missing_data_directory_is_created_and_an_unusable_one_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let nested = tmp.path().join("a/b/c");
    let config =
        tradewire_server::Config { data_dir: nested.clone(), demo: Some(false), ..Default::default() };
    tradewire_server::Server::build(config).await.expect("a missing directory is created");
    assert!(nested.join("tradewire.db").exists());

    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let config = tradewire_server::Config { data_dir: file, demo: Some(false), ..Default::default() };
    let err = tradewire_server::Server::build(config)
        .await
        .err()
        .expect("a file is not a data directory")
        .to_string();
    assert!(err.contains("not-a-dir") && err.contains("not a directory"), "{err}");
}
