//! Any writer: a change made by another process (the `sqlite3` shell) is pushed; a
//! rolled-back transaction leaves no trace.

use std::process::Command;

use serde_json::json;

use crate::helpers::spawn_app;

fn sqlite3(db: &std::path::Path, sql: &str) {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("the sqlite3 shell is installed (apt-get install sqlite3; .ci/run does it)");
    assert!(out.status.success(), "sqlite3 failed: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn a_commit_by_another_process_is_pushed_and_a_rollback_is_not() {
    let app = spawn_app().await;
    let mut ws = app.ws("alice").await;
    let (pos, _) = ws.subscribe_snapshot("s", json!(["*"])).await;

    sqlite3(
        &app.db_path(),
        "BEGIN; UPDATE portfolios SET balance = '1' WHERE user_id = 'u_alice'; ROLLBACK;
         UPDATE portfolios SET name = 'Renamed by sqlite3' WHERE user_id = 'u_alice';",
    );
    let ev = ws.event().await;
    assert_eq!(ev.seq, pos.seq + 1, "the rollback took no seq");
    assert_eq!(ev.row.as_ref().unwrap()["name"], "Renamed by sqlite3");
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
    assert_eq!(app.head("alice"), pos.seq + 2);
}

#[tokio::test]
async fn a_transaction_of_ten_thousand_rows_arrives_complete_and_in_order() {
    let app = spawn_app().await;
    let mut ws = app.ws("alice").await;
    let (pos, _) = ws.subscribe_snapshot("s", json!(["signals"])).await;
    sqlite3(
        &app.db_path(),
        "INSERT INTO signals(id, user_id, symbol, direction, confidence, reason, ts)
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 9999)
         SELECT printf('sig_%05d', i), 'u_alice', 'BTCUSDT', 'long', '0.5', 'batch', 0 FROM n;",
    );
    for i in 0..10_000u64 {
        let ev = ws.event().await;
        assert_eq!(ev.seq, pos.seq + 1 + i);
        assert_eq!(ev.row.unwrap()["id"], format!("sig_{i:05}"));
    }
}
