//! The paper-trading simulator end to end: its writes travel the capture pipeline like any
//! other writer's, and its market data reaches clients on the public topics.

use serde_json::{Value, json};
use tradewire_protocol::ServerFrame;

use crate::helpers::{TestApp, spawn_app_with};

async fn sim_app() -> TestApp {
    spawn_app_with(|c| {
        c.simulator = true;
        c.testing_endpoints = true;
        c.sim_ticks_per_second = 20;
    })
    .await
}

async fn running_bot(app: &TestApp, name: &str) -> String {
    let r = app
        .post(
            name,
            "/v1/bots",
            json!({"name": "trend", "strategy": "ma_crossover", "symbol": "BTCUSDT",
                                       "portfolio_id": format!("pf_{name}_main")}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let bot: Value = r.json().await.unwrap();
    let id = bot["id"].as_str().unwrap().to_owned();
    assert_eq!(app.post(name, &format!("/v1/bots/{id}/start"), json!({})).await.status(), 200);
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_signal_reaches_the_owner_as_the_trading_story_in_seq_order() {
    let app = sim_app().await;
    let bot = running_bot(&app, "alice").await;
    let mut alice = app.ws("alice").await;
    let (pos, _) = alice.subscribe_snapshot("a", json!(["*"])).await;
    let mut bob = app.ws("bob").await;
    bob.subscribe_snapshot("b", json!(["*"])).await;

    let r =
        app.post("alice", "/v1/testing/simulate-signal", json!({"bot_id": bot, "direction": "long"})).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // Follow alice's stream until the position opens; note where each event first shows.
    let story = [
        "signal.generated",
        "order.accepted",
        "margin.reserved",
        "fill.executed",
        "order.filled",
        "position.opened",
    ];
    let mut first_seen = vec![None; story.len()];
    let mut last = pos.seq;
    while first_seen.last().unwrap().is_none() {
        let ev = alice.event().await;
        assert_eq!(ev.seq, last + 1, "contiguous");
        last = ev.seq;
        assert_eq!(ev.row.as_ref().or(ev.old.as_ref()).unwrap()["user_id"], "u_alice");
        for (i, name) in story.iter().enumerate() {
            if first_seen[i].is_none() && ev.events.iter().any(|e| e == name) {
                first_seen[i] = Some(ev.seq);
            }
        }
    }
    let seqs: Vec<u64> = first_seen.iter().map(|s| s.expect("every step of the story happened")).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in this order: {story:?} at {seqs:?}");

    // Nothing of it reached bob: his next event is his own.
    app.insert_signals("bob", 1, "bob's own");
    loop {
        let ev = bob.event().await;
        let row = ev.row.unwrap();
        assert_eq!(row["user_id"], "u_bob");
        if row.get("reason") == Some(&json!("bob's own")) {
            break;
        }
    }
}

#[tokio::test]
async fn orders_placed_through_the_api_are_matched_and_idempotent() {
    let app = sim_app().await;
    let order = json!({"client_order_id": "m-1", "symbol": "ETHUSDT", "side": "buy", "type": "market",
                       "quantity": "0.1", "leverage": 5});
    let r = app.post("alice", "/v1/orders", order.clone()).await;
    assert_eq!(r.status(), 201);
    let placed: Value = r.json().await.unwrap();
    assert_eq!(placed["status"], "filled", "a market order fills against the simulated book");
    let again: Value = {
        let r = app.post("alice", "/v1/orders", order).await;
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    };
    assert_eq!(again["id"], placed["id"], "the same client_order_id is not applied twice");
    let positions: Value = app.get("alice", "/v1/positions?status=open").await.json().await.unwrap();
    assert_eq!(positions["items"].as_array().unwrap().len(), 1);

    // A pre-trade denial is a clear 422.
    let r = app
        .post(
            "alice",
            "/v1/orders",
            json!({"symbol": "ETHUSDT", "side": "buy", "type": "limit", "price": "1.001", "quantity": "0.1"}),
        )
        .await;
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "order_rejected");
}

#[tokio::test]
async fn market_data_flows_on_public_topics() {
    let app = sim_app().await;
    let mut ws = app.ws("bob").await;
    ws.send_json(json!({"op": "subscribe", "id": "m", "topics": ["ticker:BTCUSDT", "book:BTCUSDT"]})).await;
    assert!(matches!(ws.frame().await, ServerFrame::Subscribed { .. }));
    let (mut tickers, mut books) = (0, 0);
    while tickers < 3 || books < 1 {
        let ServerFrame::Market { topic, data, .. } = ws.frame().await else { continue };
        if topic == "ticker:BTCUSDT" {
            let bid: f64 = data["bid"].as_str().unwrap().parse().unwrap();
            let ask: f64 = data["ask"].as_str().unwrap().parse().unwrap();
            assert!(bid < ask, "bid {bid} below ask {ask}");
            tickers += 1;
        } else {
            assert_eq!(topic, "book:BTCUSDT");
            assert!(data["update_id"].as_u64().is_some());
            books += 1;
        }
    }
}

#[tokio::test]
async fn market_reference_data_and_current_values_over_rest() {
    let app = sim_app().await;
    let symbols: Value = app.get("alice", "/v1/market/symbols").await.json().await.unwrap();
    let names: Vec<&str> =
        symbols["items"].as_array().unwrap().iter().map(|i| i["symbol"].as_str().unwrap()).collect();
    assert!(names.contains(&"BTCUSDT") && names.len() >= 10, "{names:?}");
    let ticker: Value = app.get("alice", "/v1/market/BTCUSDT/ticker").await.json().await.unwrap();
    assert!(ticker["bid"].as_str().is_some() && ticker["ask"].as_str().is_some(), "{ticker}");
    let book: Value = app.get("alice", "/v1/market/BTCUSDT/book").await.json().await.unwrap();
    assert_eq!(book["bids"].as_array().unwrap().len(), 20);
    let klines: Value = app.get("alice", "/v1/market/BTCUSDT/klines").await.json().await.unwrap();
    assert!(!klines["items"].as_array().unwrap().is_empty());
    assert_eq!(app.get("alice", "/v1/market/NOPEUSDT/ticker").await.status(), 404);
    assert_eq!(app.get("alice", "/v1/market/BTCUSDT/depth").await.status(), 404);
}

#[tokio::test]
async fn a_bot_paused_through_the_api_stops_opening_positions_at_once() {
    let app = sim_app().await;
    let bot = running_bot(&app, "alice").await;
    let r = app.post("alice", &format!("/v1/bots/{bot}/pause"), json!({})).await;
    assert_eq!(r.status(), 200);
    // Right after the answer, with no wait: the simulator already knows.
    let r =
        app.post("alice", "/v1/testing/simulate-signal", json!({"bot_id": bot, "direction": "long"})).await;
    assert_eq!(r.status(), 200, "the signal is still recorded");
    let positions: Value = app.get("alice", "/v1/positions?status=open").await.json().await.unwrap();
    assert_eq!(positions["items"], json!([]), "a paused bot opens nothing");
    let orders: Value = app.get("alice", &format!("/v1/orders?bot_id={bot}")).await.json().await.unwrap();
    assert_eq!(orders["items"], json!([]), "and places no order");

    // Started again, the same signal opens a position.
    assert_eq!(app.post("alice", &format!("/v1/bots/{bot}/start"), json!({})).await.status(), 200);
    let r =
        app.post("alice", "/v1/testing/simulate-signal", json!({"bot_id": bot, "direction": "long"})).await;
    assert_eq!(r.status(), 200);
    let positions: Value = app.get("alice", "/v1/positions?status=open").await.json().await.unwrap();
    assert_eq!(positions["items"].as_array().unwrap().len(), 1, "{positions}");
}
