//! Public market data over the WebSocket: shared topics, conflated per client. The test is
//! the market source here (the simulator feeds the same bus in the product).

use serde_json::json;
use tradewire_hub::{MarketKind, MarketMessage};
use tradewire_protocol::{ErrorCode, ServerFrame};

use crate::helpers::{TestApp, Ws, spawn_app};

fn ticker(app: &TestApp, n: u64) {
    let data = json!({"bid": format!("{}.00", 27000 + n), "ask": format!("{}.50", 27000 + n), "last": format!("{}.10", 27000 + n), "n": n});
    app.state.market_bus().publish(MarketMessage::encode(
        "ticker:BTCUSDT",
        MarketKind::Latest,
        n as i64,
        data,
    ));
}

fn market_n(frame: &ServerFrame) -> Option<u64> {
    match frame {
        ServerFrame::Market { topic, data, .. } if topic == "ticker:BTCUSDT" => data["n"].as_u64(),
        _ => None,
    }
}

#[tokio::test]
async fn market_topics_are_refused_while_no_source_serves_the_symbol() {
    let app = spawn_app().await;
    let mut ws = app.ws("alice").await;
    ws.send_json(json!({"op": "subscribe", "id": "m", "topics": ["ticker:BTCUSDT"]})).await;
    let ServerFrame::Error { code, .. } = ws.frame().await else { panic!("error expected") };
    assert_eq!(code, ErrorCode::InvalidTopic);

    app.state.market_bus().set_symbols(["ETHUSDT".to_owned()]);
    ws.send_json(json!({"op": "subscribe", "id": "m", "topics": ["ticker:BTCUSDT"]})).await;
    let ServerFrame::Error { code, .. } = ws.frame().await else { panic!("error expected") };
    assert_eq!(code, ErrorCode::InvalidTopic, "an unknown symbol is refused too");
}

#[tokio::test]
async fn subscribers_get_the_current_value_then_updates_and_unsubscribing_stops_them() {
    let app = spawn_app().await;
    app.state.market_bus().set_symbols(["BTCUSDT".to_owned()]);
    ticker(&app, 1);
    let mut ws = app.ws("alice").await;
    ws.send_json(
        json!({"op": "subscribe", "id": "m", "topics": ["ticker:BTCUSDT", "orders"], "from": "snapshot"}),
    )
    .await;
    let ServerFrame::Subscribed { topics, .. } = ws.frame().await else { panic!("subscribed expected") };
    assert_eq!(topics, ["orders", "ticker:BTCUSDT"]);
    let mut saw_snapshot = false;
    let mut saw_current = false;
    while !(saw_snapshot && saw_current) {
        match ws.frame().await {
            ServerFrame::Snapshot { .. } => saw_snapshot = true,
            f => {
                assert_eq!(market_n(&f), Some(1), "the current value first");
                saw_current = true;
            }
        }
    }
    ticker(&app, 2);
    assert_eq!(market_n(&ws.frame().await), Some(2));

    ws.send_json(json!({"op": "unsubscribe", "id": "m"})).await;
    assert!(matches!(ws.frame().await, ServerFrame::Unsubscribed { .. }));
    ticker(&app, 3);
    ws.send_json(json!({"op": "ping", "ts": 9})).await;
    assert_eq!(
        ws.frame().await,
        ServerFrame::Pong { ts: Some(json!(9)) },
        "no market message after unsubscribe"
    );
    assert_eq!(app.state.market_bus().subscribers("ticker:BTCUSDT"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_gets_fresh_prices_not_a_backlog_and_is_not_disconnected() {
    let app = spawn_app().await;
    app.state.market_bus().set_symbols(["BTCUSDT".to_owned()]);
    let mut slow = Ws::connect_small_buffer(app.addr, &app.ws_url(), &app.token("alice")).await;
    assert!(matches!(slow.frame().await, ServerFrame::Welcome { .. }));
    slow.send_json(json!({"op": "subscribe", "id": "m", "topics": ["ticker:BTCUSDT"]})).await;
    assert!(matches!(slow.frame().await, ServerFrame::Subscribed { .. }));

    // Far more than fits in socket buffers, while the client reads nothing.
    const PUBLISHED: u64 = 100_000;
    for n in 1..=PUBLISHED {
        ticker(&app, n);
        if n % 1000 == 0 {
            tokio::task::yield_now().await;
        }
    }
    // Now read: messages arrive in order, far fewer than were published, ending with the
    // latest price; the connection is never closed as a slow consumer.
    let mut received = 0u64;
    let mut last = 0;
    while last < PUBLISHED {
        let n = market_n(&slow.frame().await).expect("only market messages");
        assert!(n > last, "prices only move forward in time");
        last = n;
        received += 1;
    }
    assert!(received < PUBLISHED / 2, "conflated: {received} of {PUBLISHED} delivered");
    assert_eq!(app.state.hub().stats().overflows, 0);
    slow.send_json(json!({"op": "ping", "ts": 1})).await;
    assert_eq!(slow.frame().await, ServerFrame::Pong { ts: Some(json!(1)) }, "still connected");
}
