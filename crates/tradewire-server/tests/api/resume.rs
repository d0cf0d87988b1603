//! Durable replay: a client that was away gets exactly what it missed, then live changes.

use serde_json::json;
use tradewire_protocol::ServerFrame;

use crate::backend::TestSql;
use crate::helpers::{Closed, insert_signal, spawn_app};
#[allow(unused_imports)]
use tradewire_server::db::Sql;

#[tokio::test]
async fn reconnecting_from_a_position_replays_exactly_the_missed_changes_then_live() {
    let app = spawn_app().await;
    let mut ws = app.ws("alice").await;
    let (pos, _) = ws.subscribe_snapshot("s1", json!(["*"])).await;
    drop(ws);

    app.insert_signals("alice", 500, "while away");
    app.insert_signals("bob", 50, "not alice's");

    let mut ws = app.ws("alice").await;
    ws.send_json(json!({"op": "subscribe", "id": "s1", "topics": ["*"], "from": pos})).await;
    assert!(matches!(ws.frame().await, ServerFrame::Subscribed { .. }));
    for i in 1..=500 {
        let ev = ws.event().await;
        assert_eq!(ev.seq, pos.seq + i, "replay is contiguous and in order");
        assert_eq!(ev.topic, "signals");
        assert_eq!(ev.row.as_ref().unwrap()["user_id"], "u_alice");
    }
    // Then live.
    app.insert_signals("alice", 1, "live");
    let live = ws.event().await;
    assert_eq!(live.seq, pos.seq + 501);
    assert_eq!(live.row.unwrap()["reason"], "live");
}

#[tokio::test]
async fn resume_works_across_a_server_restart() {
    let mut app = spawn_app().await;
    let mut ws = app.ws("alice").await;
    let (pos, _) = ws.subscribe_snapshot("s1", json!(["*"])).await;
    app.insert_signals("alice", 3, "before");
    let mut last = pos.clone();
    for _ in 0..3 {
        last = ws.event().await.position();
    }
    app.stop().await;
    assert_eq!(ws.expect_close().await, Closed::Code(1001), "clients are told the server is going away");

    // Written while the server is down: only the database knows.
    app.insert_signals("alice", 200, "while down");
    app = app.restart().await;

    let mut ws = app.ws("alice").await;
    ws.send_json(json!({"op": "subscribe", "id": "s1", "topics": ["*"], "from": last})).await;
    assert!(matches!(ws.frame().await, ServerFrame::Subscribed { .. }));
    for i in 1..=200 {
        let ev = ws.event().await;
        assert_eq!(ev.seq, last.seq + i);
        assert_eq!(ev.epoch, last.epoch, "the epoch survives a restart");
    }
    app.insert_signals("alice", 1, "after");
    assert_eq!(ws.event().await.seq, last.seq + 201);
}

#[tokio::test]
async fn a_position_that_cannot_be_served_gets_resync_required() {
    let app = spawn_app().await;
    app.insert_signals("alice", 10, "old");
    let mut ws = app.ws("alice").await;

    ws.send_json(
        json!({"op": "subscribe", "id": "a", "topics": ["*"], "from": {"epoch": "other", "seq": 3}}),
    )
    .await;
    assert_eq!(
        ws.frame().await,
        ServerFrame::ResyncRequired { id: "a".into(), reason: "epoch_changed".into() }
    );

    ws.send_json(
        json!({"op": "subscribe", "id": "b", "topics": ["*"], "from": {"epoch": app.epoch(), "seq": 999}}),
    )
    .await;
    assert_eq!(
        ws.frame().await,
        ServerFrame::ResyncRequired { id: "b".into(), reason: "position_ahead".into() }
    );

    // Prune everything past retention (as the pump would after 24 h).
    app.settle().await;
    let pruned =
        tradewire_server::changefeed::ChangeLog::prune_sync(&mut app.sql(), i64::MAX, 1_000_000).unwrap();
    assert!(pruned >= 10);
    ws.send_json(
        json!({"op": "subscribe", "id": "c", "topics": ["*"], "from": {"epoch": app.epoch(), "seq": 3}}),
    )
    .await;
    assert_eq!(
        ws.frame().await,
        ServerFrame::ResyncRequired { id: "c".into(), reason: "history_expired".into() }
    );

    // At the head nothing is missing, so even a pruned log can serve it.
    let head = app.head("alice").await;
    ws.send_json(
        json!({"op": "subscribe", "id": "d", "topics": ["*"], "from": {"epoch": app.epoch(), "seq": head}}),
    )
    .await;
    assert!(matches!(ws.frame().await, ServerFrame::Subscribed { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_replay_racing_a_burst_of_live_changes_loses_nothing_and_is_not_cut_off() {
    let app = spawn_app().await;
    let mut ws = app.ws("alice").await;
    let (pos, _) = ws.subscribe_snapshot("s1", json!(["*"])).await;
    drop(ws);
    app.insert_signals("alice", 5000, "before");

    // Reconnect while one big transaction is being published by the pump: the replay and
    // the live burst overlap.
    let mut ws = app.ws("alice").await;
    app.sql()
        .batch(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 19999)
             INSERT INTO signals(id, user_id, symbol, direction, confidence, reason, ts)
             SELECT 'sig_burst_' || (100000 + i), 'u_alice', 'BTCUSDT', 'long', '0.5', 'burst', 0 FROM n;",
        )
        .unwrap();
    ws.send_json(json!({"op": "subscribe", "id": "s1", "topics": ["*"], "from": pos})).await;
    assert!(matches!(ws.frame().await, ServerFrame::Subscribed { .. }));
    // Keep reading (a client that stops reading during a burst is a slow consumer): the
    // head is known, 5,000 + 20,000 changes after `pos`.
    let head = pos.seq + 25_000;
    let mut last = pos.seq;
    while last < head {
        let ev = ws.event().await;
        assert_eq!(ev.seq, last + 1);
        last = ev.seq;
    }
    assert_eq!(app.head("alice").await, head);
    assert_eq!(app.state.hub().stats().overflows, 0, "the replaying session was never cut off");
}

/// Live commits that land while a replay is being read (each its own transaction, so some
/// commit after a replay batch was read and are published while the session is still
/// replaying) reach the resuming subscription exactly once, in order — and the session's
/// other subscription, live all along, gets each of them once too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_commits_racing_a_replay_are_each_delivered_once() {
    let app = spawn_app().await;
    for round in 0..4 {
        let mut ws = app.ws("alice").await;
        let (pos, _) = ws.subscribe_snapshot("s1", json!(["*"])).await;
        drop(ws);
        app.insert_signals("alice", 1500, "while away");

        let mut ws = app.ws("alice").await;
        let (live_from, _) = ws.subscribe_snapshot("live", json!(["*"])).await;
        let target = app.target();
        let writer = std::thread::spawn(move || {
            let mut c = TestSql::open(&target);
            for _ in 0..400 {
                insert_signal(&mut c, "alice", "live during the replay");
            }
        });
        ws.send_json(json!({"op": "subscribe", "id": "s1", "topics": ["*"], "from": pos})).await;
        assert!(matches!(ws.frame().await, ServerFrame::Subscribed { .. }));
        tokio::task::spawn_blocking(move || writer.join().expect("writer")).await.unwrap();
        let head = app.head("alice").await;
        assert_eq!(head, pos.seq + 1900);
        let (mut replayed, mut live) = (pos.seq, live_from.seq);
        while replayed < head || live < head {
            let ev = ws.event().await;
            let last = match ev.id.as_deref() {
                Some("s1") => &mut replayed,
                Some("live") => &mut live,
                other => panic!("an event for {other:?}"),
            };
            assert_eq!(ev.seq, *last + 1, "round {round}, {:?}: contiguous, nothing lost or doubled", ev.id);
            *last = ev.seq;
        }
    }
}
