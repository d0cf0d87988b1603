//! Isolation: whatever topics or filters alice asks for, she never receives bob's rows.

use serde_json::{Value, json};
use tradewire_protocol::ServerFrame;

use crate::helpers::{TestApp, spawn_app};
#[allow(unused_imports)]
use tradewire_server::db::Sql;

fn assert_alice_only(rows: impl IntoIterator<Item = Value>) {
    for r in rows {
        assert_eq!(r["user_id"], "u_alice", "a row that is not alice's leaked: {r}");
    }
}

/// Writes of every captured table for `name`, through a separate connection.
fn write_everything(app: &TestApp, name: &str, tag: &str) {
    let mut c = app.sql();
    let u = TestApp::user_id(name);
    let pf = format!("pf_{name}_main");
    let sql = format!(
        "INSERT INTO trading_bots(id, user_id, portfolio_id, name, strategy, symbol, status, config, created_at, updated_at)
            VALUES ('bot_{tag}', '{u}', '{pf}', 'b', 'grid', 'BTCUSDT', 'running', '{{}}', 0, 0);
         UPDATE portfolios SET balance = '9000', margin_used = '10' WHERE id = '{pf}';
         INSERT INTO positions(id, user_id, portfolio_id, symbol, side, quantity, entry_price, opened_at, updated_at)
            VALUES ('pos_{tag}', '{u}', '{pf}', 'BTCUSDT', 'long', '1', '27000', 0, 0);
         INSERT INTO orders(id, user_id, portfolio_id, client_order_id, symbol, side, type, quantity, price, created_at, updated_at)
            VALUES ('ord_{tag}', '{u}', '{pf}', 'c_{tag}', 'BTCUSDT', 'buy', 'limit', '1', '27000', 0, 0);
         INSERT INTO fills(id, user_id, order_id, symbol, side, price, quantity, ts)
            VALUES ('fill_{tag}', '{u}', 'ord_{tag}', 'BTCUSDT', 'buy', '27000', '1', 0);
         INSERT INTO lifecycle(id, user_id, entity, entity_id, event, ts) VALUES ('lc_{tag}', '{u}', 'order', 'ord_{tag}', 'x', 0);
         INSERT INTO signals(id, user_id, symbol, direction, confidence, ts) VALUES ('sig_{tag}', '{u}', 'BTCUSDT', 'long', '0.5', 0);
         UPDATE risk SET circuit_breaker = 'tripped' WHERE user_id = '{u}';
         INSERT INTO pnl(id, user_id, portfolio_id, equity, balance, realized_pnl, unrealized_pnl, ts)
            VALUES ('pnl_{tag}', '{u}', '{pf}', '1', '1', '0', '0', 0);
         DELETE FROM orders WHERE id = 'ord_{tag}';"
    );
    c.batch(&sql).unwrap();
}

#[tokio::test]
async fn alice_never_receives_bobs_rows_over_websocket_whatever_she_asks_for() {
    let app = spawn_app().await;
    write_everything(&app, "bob", "b0");
    write_everything(&app, "alice", "a0");

    let topics =
        ["*", "bots", "portfolios", "positions", "orders", "fills", "lifecycle", "signals", "risk", "pnl"];
    let filters = [
        None,
        Some(json!({"user_id": "u_bob"})),
        Some(json!({"user_id": {"in": ["u_bob", "u_alice"]}})),
        Some(json!({"symbol": "BTCUSDT"})),
        Some(json!({"id": {"in": ["ord_b1", "ord_a1", "sig_b1", "sig_a1"]}})),
    ];
    let mut clients = Vec::new();
    for (i, topic) in topics.iter().enumerate() {
        for (j, filter) in filters.iter().enumerate() {
            let mut ws = app.ws("alice").await;
            let mut sub =
                json!({"op": "subscribe", "id": format!("s{i}_{j}"), "topics": [topic], "from": "snapshot"});
            if let Some(f) = filter {
                sub["where"] = f.clone();
            }
            ws.send_json(sub).await;
            match ws.frame().await {
                ServerFrame::Subscribed { .. } => {}
                // A filter column that none of the topics has is rejected; that is not a leak.
                ServerFrame::Error { code, .. } => {
                    assert_eq!(code.as_str(), "invalid_filter");
                    continue;
                }
                other => panic!("unexpected {other:?}"),
            }
            let ServerFrame::Snapshot { rows, .. } = ws.frame().await else { panic!("snapshot expected") };
            assert_alice_only(rows.into_values().flatten().map(Value::Object));
            clients.push(ws);
        }
    }
    assert!(clients.len() > 30, "most combinations are valid subscriptions");

    write_everything(&app, "bob", "b1");
    // The fence: alice's own last write. Every client that can see it must see it, and
    // nothing of bob's before it.
    app.sql()
        .batch("INSERT INTO signals(id, user_id, symbol, direction, confidence, reason, ts) VALUES ('sig_fence', 'u_alice', 'BTCUSDT', 'long', '1', 'fence', 0);")
        .unwrap();
    let fence_seq = app.head("alice").await;
    for ws in &mut clients {
        // Read until the position reaches the fence (heartbeats carry it for filtered subs).
        let deadline = tokio::time::Instant::now() + crate::helpers::DEADLINE;
        loop {
            assert!(tokio::time::Instant::now() < deadline, "the fence {fence_seq} was not reached in time");
            match ws.any_frame().await {
                ServerFrame::Event(ev) => {
                    assert_alice_only(
                        ev.row
                            .clone()
                            .map(Value::Object)
                            .into_iter()
                            .chain(ev.old.clone().map(Value::Object)),
                    );
                    if ev.seq >= fence_seq {
                        break;
                    }
                }
                ServerFrame::Heartbeat { position, .. } if position.seq >= fence_seq => break,
                ServerFrame::Heartbeat { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn a_row_that_changes_owner_leaves_one_stream_and_enters_the_other() {
    let app = spawn_app().await;
    let mut alice = app.ws("alice").await;
    alice.subscribe_snapshot("a", json!(["*"])).await;
    let mut bob = app.ws("bob").await;
    bob.subscribe_snapshot("b", json!(["*"])).await;
    app.sql()
        .batch(
            "INSERT INTO signals(id, user_id, symbol, direction, confidence, reason, ts) VALUES ('sig_x', 'u_bob', 'BTCUSDT', 'long', '1', 'secret', 0);
             UPDATE signals SET user_id = 'u_alice', reason = 'handed over' WHERE id = 'sig_x';",
        )
        .unwrap();
    let ins = bob.event().await;
    assert_eq!(ins.change.as_str(), "insert");
    let gone = bob.event().await;
    assert_eq!(gone.change.as_str(), "delete", "bob sees the row leave");
    assert_eq!(gone.old.unwrap()["reason"], "secret", "bob's delete carries bob's last version");

    let arrived = alice.event().await;
    assert_eq!(arrived.change.as_str(), "insert", "alice sees it arrive");
    assert!(arrived.old.is_none(), "alice never sees bob's version of the row");
    assert_eq!(arrived.row.unwrap()["reason"], "handed over");
}

#[tokio::test]
async fn rest_reads_and_commands_are_scoped_to_the_caller() {
    let app = spawn_app().await;
    write_everything(&app, "bob", "b0");
    for path in ["/v1/bots/bot_b0", "/v1/positions/pos_b0", "/v1/portfolios/pf_bob_main"] {
        assert_eq!(app.get("alice", path).await.status(), 404, "{path}");
    }
    let r = app.post("alice", "/v1/bots/bot_b0/stop", json!({})).await;
    assert_eq!(r.status(), 404);
    let list: Value = app.get("alice", "/v1/positions?user_id=u_bob").await.json().await.unwrap();
    assert_eq!(list["items"], json!([]));
}
