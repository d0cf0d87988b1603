//! The Rust client (`tradewire-client`, used by `tradewire tail`): snapshot, live events,
//! and resume across a server restart without a gap or a duplicate.

use tradewire_client::{Options, Subscriber, Update};

use crate::helpers::{DEADLINE, spawn_app};

async fn next(sub: &mut Subscriber) -> Update {
    tokio::time::timeout(DEADLINE, sub.next()).await.expect("an update in time").expect("no client error")
}

#[tokio::test]
async fn the_client_resumes_across_a_restart_with_every_change_once() {
    let mut app = spawn_app().await;
    let mut opts = Options::new(app.ws_url(), app.token("alice"), vec!["*".into()]);
    opts.backoff_base = std::time::Duration::from_millis(50);
    let mut sub = Subscriber::new(opts);
    assert!(matches!(next(&mut sub).await, Update::Connected { .. }));
    let Update::Snapshot { position, .. } = next(&mut sub).await else { panic!("snapshot first") };
    let mut last = position.seq;

    app.insert_signals("alice", 20, "before");
    for _ in 0..20 {
        let Update::Event(ev) = next(&mut sub).await else { panic!("event expected") };
        assert_eq!(ev.seq, last + 1);
        last = ev.seq;
    }

    app.stop().await;
    assert!(matches!(next(&mut sub).await, Update::Disconnected { code: Some(1001), .. }));
    app.insert_signals("alice", 30, "while down");

    // The same data directory and port: the client reconnects by itself (with backoff)
    // and resumes from the last change it handed out.
    let app = app.restart().await;
    assert!(matches!(next(&mut sub).await, Update::Connected { .. }));
    app.insert_signals("alice", 5, "after");
    for _ in 0..35 {
        let Update::Event(ev) = next(&mut sub).await else { panic!("event expected") };
        assert_eq!(ev.seq, last + 1, "resumed with nothing lost and nothing doubled");
        last = ev.seq;
    }
    assert_eq!(last, app.head("alice").await);
    assert_eq!((sub.gaps_detected, sub.duplicates_dropped), (0, 0));
}

#[tokio::test]
async fn the_client_stops_on_a_close_code_that_forbids_retrying() {
    let app = spawn_app().await;
    let mut sub = Subscriber::new(Options::new(app.ws_url(), "not-a-token", vec!["*".into()]));
    let err = tokio::time::timeout(DEADLINE, sub.next()).await.expect("in time").expect_err("4001 is fatal");
    assert!(err.to_string().contains("4001"), "{err}");
}
