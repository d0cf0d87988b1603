//! Snapshot + delta without a race: clients that subscribe with a snapshot at random
//! moments while a writer commits as fast as it can all end with the database's state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tradewire_protocol::{ChangeOp, ServerFrame};

use crate::helpers::spawn_app;
use crate::helpers::{Target, TestSql};
#[allow(unused_imports)]
use tradewire_server::db::Sql;

type State = BTreeMap<String, Value>;

/// Insert, update and delete alice's orders until `stop`; returns the number of commits.
fn writer(app_db: Target, stop: Arc<AtomicBool>) -> u64 {
    let mut c = TestSql::open(&app_db);
    let mut n = 0u64;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let id = format!("ord_{}", i % 40);
        // Cycle: insert if absent, else update, and every 7th round delete.
        let sql = if i.is_multiple_of(7) {
            format!("DELETE FROM orders WHERE id = '{id}'")
        } else {
            format!(
                "INSERT INTO orders(id, user_id, client_order_id, symbol, side, type, quantity, price, filled_quantity, created_at, updated_at)
                 VALUES ('{id}', 'u_alice', 'c_{id}', 'BTCUSDT', 'buy', 'limit', '1', '27000', '0', {i}, {i})
                 ON CONFLICT(id) DO UPDATE SET filled_quantity = '0.{i}', updated_at = {i}"
            )
        };
        c.batch(&sql).unwrap();
        n += 1;
    }
    n
}

fn apply(state: &mut State, ev: &tradewire_protocol::EventFrame) {
    match ev.change {
        ChangeOp::Delete => {
            let id = ev.old.as_ref().unwrap()["id"].as_str().unwrap().to_owned();
            state.remove(&id);
        }
        _ => {
            let row = ev.row.clone().unwrap();
            state.insert(row["id"].as_str().unwrap().to_owned(), Value::Object(row));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_taken_during_a_write_storm_converge_on_the_database() {
    let app = Arc::new(spawn_app().await);
    let stop = Arc::new(AtomicBool::new(false));
    let writes = tokio::task::spawn_blocking({
        let (db, stop) = (app.target(), stop.clone());
        move || writer(db, stop)
    });

    let mut clients = Vec::new();
    for k in 0..20u64 {
        let app = app.clone();
        clients.push(tokio::spawn(async move {
            // Subscribe at a pseudo-random moment inside the storm.
            tokio::time::sleep(Duration::from_millis((k * 7919) % 1500)).await;
            let mut ws = app.ws("alice").await;
            let (pos, rows) = ws.subscribe_snapshot("s", json!(["orders"])).await;
            let state: State = rows["orders"]
                .iter()
                .map(|r| (r["id"].as_str().unwrap().to_owned(), Value::Object(r.clone())))
                .collect();
            (ws, pos.seq, state)
        }));
    }
    let mut subscribed = Vec::new();
    for c in clients {
        subscribed.push(c.await.unwrap());
    }
    // Keep the storm going a little past the last subscription, then stop it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let commits = writes.await.unwrap();
    assert!(commits > 200, "the writer made only {commits} commits");
    let head = app.head("alice").await;

    let db_state: State = {
        let mut c = app.sql();
        let ids: Vec<String> = c
            .query("SELECT id FROM orders WHERE user_id = 'u_alice'", &[])
            .unwrap()
            .into_iter()
            .filter_map(|r| r.into_iter().next()?.into_text())
            .collect();
        let rows: Value = app.get("alice", "/v1/orders?limit=1000").await.json().await.unwrap();
        let state: State = rows["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["id"].as_str().unwrap().to_owned(), r.clone()))
            .collect();
        assert_eq!(state.len(), ids.len());
        state
    };

    for (i, (mut ws, mut last, mut state)) in subscribed.into_iter().enumerate() {
        while last < head {
            match ws.any_frame().await {
                ServerFrame::Event(ev) => {
                    assert!(
                        ev.seq > last,
                        "client {i}: seq {} after {last} (duplicate or out of order)",
                        ev.seq
                    );
                    assert_eq!(
                        ev.seq,
                        last + 1,
                        "client {i}: every change of alice is an order, so seq is contiguous"
                    );
                    last = ev.seq;
                    apply(&mut state, &ev);
                }
                ServerFrame::Heartbeat { .. } => {}
                other => panic!("client {i}: unexpected {other:?}"),
            }
        }
        assert_eq!(state, db_state, "client {i} diverged from the database");
    }
}

#[tokio::test]
async fn a_snapshot_position_is_the_state_it_shows() {
    let app = spawn_app().await;
    app.insert_signals("alice", 5, "x");
    let mut ws = app.ws("alice").await;
    let (pos, rows) = ws.subscribe_snapshot("s", json!(["signals"])).await;
    assert_eq!(pos.seq, app.head("alice").await);
    assert_eq!(rows["signals"].len(), 5);
}
