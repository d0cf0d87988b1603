//! Any writer: a change made by another process (the `sqlite3` or `psql` shell) is pushed; a
//! rolled-back transaction leaves no trace.

use serde_json::json;

use tradewire_client::{Options, Subscriber, Update};

use crate::helpers::{DEADLINE, shell, spawn_app, spawn_app_with};

#[tokio::test]
async fn a_commit_by_another_process_is_pushed_and_a_rollback_is_not() {
    let app = spawn_app().await;
    let mut ws = app.ws("alice").await;
    let (pos, _) = ws.subscribe_snapshot("s", json!(["*"])).await;

    shell(
        &app.target(),
        "BEGIN; UPDATE portfolios SET balance = '1' WHERE user_id = 'u_alice'; ROLLBACK;
         UPDATE portfolios SET name = 'Renamed by a shell' WHERE user_id = 'u_alice';",
    );
    let ev = ws.event().await;
    assert_eq!(ev.seq, pos.seq + 1, "the rollback took no seq");
    assert_eq!(ev.row.as_ref().unwrap()["name"], "Renamed by a shell");
    assert_eq!(ev.row.as_ref().unwrap()["balance"], "10000", "the rolled-back balance never shows");
    assert_eq!(ev.old.as_ref().unwrap()["name"], "Main");

    // An in-process writer (the REST API) and the external one share one sequence.
    let r = app.place_order("alice", "c1").await;
    assert_eq!(r.status(), 201);
    let ev = ws.event().await;
    assert_eq!(
        (ev.seq, ev.topic.as_str(), ev.events.as_slice()),
        (pos.seq + 2, "orders", &["order.accepted".to_owned()][..])
    );
    assert_eq!(app.head("alice").await, pos.seq + 2);
}

/// The burst is 10,000 changes at once, more than a session queue holds by default
/// (4,096): a client that falls behind while it arrives may be cut off as a slow consumer
/// and then resumes, as the protocol says. What it must see is every row, once, in order.
#[tokio::test]
async fn a_transaction_of_ten_thousand_rows_arrives_complete_and_in_order() {
    // A small queue makes the cut-off-and-resume path the usual one here.
    let app = spawn_app_with(|c| c.queue_max_messages = 512).await;
    let mut opts = Options::new(app.ws_url(), app.token("alice"), vec!["signals".into()]);
    opts.backoff_base = std::time::Duration::from_millis(20);
    let mut sub = Subscriber::new(opts);
    let start = loop {
        match tokio::time::timeout(DEADLINE, sub.next()).await.unwrap().unwrap() {
            Update::Snapshot { position, .. } => break position.seq,
            _ => continue,
        }
    };
    shell(
        &app.target(),
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 9999)
         INSERT INTO signals(id, user_id, symbol, direction, confidence, reason, ts)
         SELECT 'sig_' || (10000 + i), 'u_alice', 'BTCUSDT', 'long', '0.5', 'batch', 0 FROM n;",
    );
    let mut i = 0u64;
    while i < 10_000 {
        match tokio::time::timeout(DEADLINE, sub.next()).await.unwrap().unwrap() {
            Update::Event(ev) => {
                assert_eq!(ev.seq, start + 1 + i, "complete and in order");
                assert_eq!(ev.row.unwrap()["id"], format!("sig_{}", 10_000 + i));
                i += 1;
            }
            Update::Disconnected { code, .. } => assert_eq!(code, Some(4008), "only ever cut off as slow"),
            Update::Connected { .. } => {}
            Update::Snapshot { .. } => panic!("a resume never needs a new snapshot here"),
        }
    }
    assert_eq!(sub.gaps_detected, 0);
}

/// Two API-style writers lock the same two rows in opposite orders: PostgreSQL aborts one
/// as the deadlock victim (40P01). `Db::write` runs the victim's transaction again, so both
/// commit; the aborted attempt took no `seq`, and each stream stays contiguous.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlock_between_two_writers_is_retried_and_both_commit() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};

    use tradewire_server::db::{DbError, Sql};
    use tradewire_server::sql_params;

    if crate::backend::backend() == crate::backend::Backend::Sqlite {
        return; // one writer at a time: SQLite cannot deadlock
    }
    let app = spawn_app().await;
    let (alice_before, bob_before) = (app.head("alice").await, app.head("bob").await);
    let barrier = Arc::new(Barrier::new(2));
    let attempts = Arc::new(AtomicUsize::new(0));
    let writer = |first: &'static str, second: &'static str, name: &'static str| {
        let (db, barrier, attempts) = (app.state.db().clone(), barrier.clone(), attempts.clone());
        async move {
            let mut waited = false;
            db.write(move |tx: &mut dyn Sql| {
                attempts.fetch_add(1, Ordering::SeqCst);
                let rename = "UPDATE portfolios SET name = ?1 WHERE user_id = ?2";
                tx.execute(rename, sql_params![name, first])?;
                if !waited {
                    // Both hold their first row before either asks for its second.
                    waited = true;
                    barrier.wait();
                }
                tx.execute(rename, sql_params![name, second])?;
                Ok::<_, DbError>(())
            })
            .await
        }
    };
    let (a, b) = tokio::join!(
        tokio::spawn(writer("u_alice", "u_bob", "A")),
        tokio::spawn(writer("u_bob", "u_alice", "B"))
    );
    a.unwrap().expect("writer A commits");
    b.unwrap().expect("writer B commits");
    assert_eq!(attempts.load(Ordering::SeqCst), 3, "one of the two ran again");

    let mut ws = app.ws("alice").await;
    let from = format!("{}:{alice_before}", app.epoch());
    ws.send_json(json!({"op": "subscribe", "id": "r", "topics": ["portfolios"], "from": from})).await;
    assert!(matches!(ws.frame().await, tradewire_protocol::ServerFrame::Subscribed { .. }));
    let (first, second) = (ws.event().await, ws.event().await);
    assert_eq!((first.seq, second.seq), (alice_before + 1, alice_before + 2), "contiguous");
    assert_eq!(app.head("alice").await, alice_before + 2, "the aborted attempt took no seq");
    assert_eq!(app.head("bob").await, bob_before + 2);
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("tradewire_write_retries_total"), "counted");
}
