//! Commands through the REST API: orders are idempotent by `client_order_id`, validated,
//! cancelable once; bots move through their states; each command shows up on the owner's
//! stream as its domain event, and nobody else can see or command the owner's rows.

use serde_json::{Value, json};
use tradewire_protocol::EventFrame;

use crate::helpers::{TestApp, spawn_app};
#[allow(unused_imports)]
use tradewire_server::db::Sql;

async fn delete(app: &TestApp, name: &str, path: &str) -> reqwest::Response {
    app.http.delete(app.url(path)).bearer_auth(app.token(name)).send().await.unwrap()
}

async fn patch(app: &TestApp, name: &str, path: &str, body: Value) -> reqwest::Response {
    app.http.patch(app.url(path)).bearer_auth(app.token(name)).json(&body).send().await.unwrap()
}

/// `POST <bot path>/<action>` as `name`.
async fn command(app: &TestApp, name: &str, bot_path: &str, action: &str) -> reqwest::Response {
    app.post(name, &format!("{bot_path}/{action}"), json!({})).await
}

async fn expect_error(resp: reqwest::Response, status: u16, code: &str) {
    assert_eq!(resp.status(), status);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

async fn json_of(resp: reqwest::Response, status: u16) -> Value {
    assert_eq!(resp.status(), status);
    resp.json().await.unwrap()
}

fn count_orders(app: &TestApp, name: &str, client_order_id: &str) -> i64 {
    app.sql().int(
        "SELECT COUNT(*) FROM orders WHERE user_id = ?1 AND client_order_id = ?2",
        tradewire_server::sql_params![TestApp::user_id(name), client_order_id],
    )
}

fn assert_event(ev: &EventFrame, topic: &str, change: &str, events: &[&str]) {
    assert_eq!(ev.topic, topic, "{ev:?}");
    assert_eq!(ev.change.as_str(), change, "{ev:?}");
    assert_eq!(ev.events, events, "{ev:?}");
}

#[tokio::test]
async fn the_same_client_order_id_twice_places_one_order() {
    let app = spawn_app().await;
    let first = json_of(app.place_order("alice", "c-1").await, 201).await;
    assert_eq!(first["client_order_id"], "c-1");
    assert_eq!(first["status"], "new");
    assert_eq!(first["user_id"], "u_alice");
    assert_eq!(first["portfolio_id"], "pf_alice_main");
    let head = app.head("alice").await;

    let again = json_of(app.place_order("alice", "c-1").await, 200).await;
    assert_eq!(again, first, "the retry answers with the order already placed");

    // A retry with other parameters is still the same request: it is not applied again.
    let body = json!({"client_order_id": "c-1", "symbol": "ETHUSDT", "side": "sell", "type": "market", "quantity": "5"});
    let other = json_of(app.post("alice", "/v1/orders", body).await, 200).await;
    assert_eq!(other, first);

    assert_eq!(count_orders(&app, "alice", "c-1"), 1);
    assert_eq!(app.head("alice").await, head, "a retry writes nothing");
    let listed = json_of(app.get("alice", "/v1/orders").await, 200).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn ten_concurrent_posts_with_one_client_order_id_place_one_order() {
    let app = spawn_app().await;
    let answers = futures::future::join_all((0..10).map(|_| app.place_order("alice", "burst"))).await;
    let mut created = 0;
    let mut ids = Vec::new();
    for r in answers {
        let status = r.status().as_u16();
        assert!(status == 201 || status == 200, "status {status}");
        created += usize::from(status == 201);
        let body: Value = r.json().await.unwrap();
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(created, 1, "exactly one request created the order");
    assert!(ids.iter().all(|id| *id == ids[0]), "every answer names the same order: {ids:?}");
    assert_eq!(count_orders(&app, "alice", "burst"), 1);
}

#[tokio::test]
async fn two_users_may_use_the_same_client_order_id() {
    let app = spawn_app().await;
    let a = json_of(app.place_order("alice", "shared").await, 201).await;
    let b = json_of(app.place_order("bob", "shared").await, 201).await;
    assert_ne!(a["id"], b["id"]);
    assert_eq!(a["user_id"], "u_alice");
    assert_eq!(b["user_id"], "u_bob");
    assert_eq!(count_orders(&app, "alice", "shared"), 1);
    assert_eq!(count_orders(&app, "bob", "shared"), 1);

    // Each retry finds its own user's order.
    assert_eq!(json_of(app.place_order("bob", "shared").await, 200).await["id"], b["id"]);
    assert_eq!(json_of(app.place_order("alice", "shared").await, 200).await["id"], a["id"]);
    let path = format!("/v1/orders/{}", a["id"].as_str().unwrap());
    assert_eq!(app.get("alice", &path).await.status(), 200);
    expect_error(app.get("bob", &path).await, 404, "not_found").await;
}

#[tokio::test]
async fn invalid_orders_are_rejected_and_write_nothing() {
    let app = spawn_app().await;
    let head = app.head("alice").await;
    let valid = json!({"client_order_id": "v", "symbol": "BTCUSDT", "side": "buy", "type": "limit",
                       "price": "27000.5", "quantity": "0.01"});
    let with = |field: &str, value: Value| {
        let mut b = valid.clone();
        b[field] = value;
        b
    };
    let without = |field: &str| {
        let mut b = valid.clone();
        b.as_object_mut().unwrap().remove(field);
        b
    };
    let cases = [
        ("unknown symbol", with("symbol", json!("NOPEUSDT"))),
        ("limit without price", without("price")),
        ("zero quantity", with("quantity", json!("0"))),
        ("negative quantity", with("quantity", json!("-1"))),
        ("quantity not a number", with("quantity", json!("abc"))),
        ("quantity as a float", with("quantity", json!(0.01))),
        ("zero price", with("price", json!("0"))),
        ("bad side", with("side", json!("hold"))),
        ("bad type", with("type", json!("iceberg"))),
        ("missing quantity", without("quantity")),
        ("stop without stop_price", with("type", json!("stop"))),
        ("empty client_order_id", with("client_order_id", json!(""))),
        ("client_order_id over 64 characters", with("client_order_id", json!("x".repeat(65)))),
    ];
    for (what, body) in cases {
        let r = app.post("alice", "/v1/orders", body).await;
        assert_eq!(r.status(), 400, "{what}");
        let err: Value = r.json().await.unwrap();
        assert_eq!(err["error"]["code"], "bad_request", "{what}: {err}");
    }
    let n = app.sql().int("SELECT COUNT(*) FROM orders", &[]);
    assert_eq!(n, 0, "no rejected order was stored");
    assert_eq!(app.head("alice").await, head, "no rejected order produced a change");

    // A rejected request does not use up its client_order_id.
    json_of(app.post("alice", "/v1/orders", valid).await, 201).await;
}

#[tokio::test]
async fn canceling_an_open_order_reaches_the_owners_stream_once() {
    let app = spawn_app().await;
    let order = json_of(app.place_order("alice", "to-cancel").await, 201).await;
    let id = order["id"].as_str().unwrap();
    let path = format!("/v1/orders/{id}");

    let mut ws = app.ws("alice").await;
    let (_, rows) = ws.subscribe_snapshot("o", json!(["orders"])).await;
    assert_eq!(rows["orders"].len(), 1);
    assert_eq!(rows["orders"][0]["status"], "new");

    // Bob cannot cancel (or even see) alice's order.
    expect_error(delete(&app, "bob", &path).await, 404, "not_found").await;
    assert_eq!(json_of(app.get("alice", &path).await, 200).await["status"], "new");

    let canceled = json_of(delete(&app, "alice", &path).await, 200).await;
    assert_eq!(canceled["id"], id);
    assert_eq!(canceled["status"], "canceled");

    // The first change after the snapshot is the cancel: bob's attempt changed nothing.
    let ev = ws.event().await;
    assert_event(&ev, "orders", "update", &["order.canceled"]);
    assert_eq!(ev.row.as_ref().unwrap()["status"], "canceled");
    assert_eq!(ev.old.as_ref().unwrap()["status"], "new");
    assert_eq!(ev.row.as_ref().unwrap()["id"], id);

    expect_error(delete(&app, "alice", &path).await, 409, "conflict").await;
    expect_error(delete(&app, "alice", "/v1/orders/ord_nope").await, 404, "not_found").await;
    assert_eq!(json_of(app.get("alice", &path).await, 200).await["status"], "canceled");

    // The failed second cancel wrote nothing: the next event is the next real change.
    let next = json_of(app.place_order("alice", "after").await, 201).await;
    let ev = ws.event().await;
    assert_event(&ev, "orders", "insert", &["order.accepted"]);
    assert_eq!(ev.row.unwrap()["id"], next["id"]);
}

#[tokio::test]
async fn a_bot_goes_through_its_states_and_each_command_is_an_event() {
    let app = spawn_app().await;
    let mut ws = app.ws("alice").await;
    ws.subscribe_snapshot("b", json!(["bots"])).await;

    let body = json!({"name": "Grid one", "strategy": "grid", "symbol": "BTCUSDT",
                      "portfolio_id": "pf_alice_main", "config": {"levels": 10}});
    let bot = json_of(app.post("alice", "/v1/bots", body).await, 201).await;
    assert_eq!(bot["status"], "stopped");
    assert_eq!(bot["user_id"], "u_alice");
    let id = bot["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/bots/{id}");
    let ev = ws.event().await;
    assert_event(&ev, "bots", "insert", &["bot.created"]);
    assert_eq!(ev.row.as_ref().unwrap()["id"], id.as_str());

    assert_eq!(json_of(command(&app, "alice", &path, "start").await, 200).await["status"], "running");
    let ev = ws.event().await;
    assert_event(&ev, "bots", "update", &["bot.status_changed"]);
    assert_eq!(ev.old.as_ref().unwrap()["status"], "stopped");
    assert_eq!(ev.row.as_ref().unwrap()["status"], "running");

    // Asking for the state the bot is in succeeds and changes nothing.
    assert_eq!(json_of(command(&app, "alice", &path, "start").await, 200).await["status"], "running");

    assert_eq!(json_of(command(&app, "alice", &path, "pause").await, 200).await["status"], "paused");
    let ev = ws.event().await;
    assert_event(&ev, "bots", "update", &["bot.status_changed"]);
    assert_eq!(ev.old.as_ref().unwrap()["status"], "running", "the repeated start wrote nothing");
    assert_eq!(ev.row.as_ref().unwrap()["status"], "paused");

    assert_eq!(json_of(command(&app, "alice", &path, "start").await, 200).await["status"], "running");
    assert_event(&ws.event().await, "bots", "update", &["bot.status_changed"]);

    let renamed = json_of(patch(&app, "alice", &path, json!({"name": "Grid renamed"})).await, 200).await;
    assert_eq!(renamed["name"], "Grid renamed");
    assert_eq!(renamed["status"], "running");
    let ev = ws.event().await;
    assert_event(&ev, "bots", "update", &["bot.config_changed"]);
    assert_eq!(ev.row.as_ref().unwrap()["name"], "Grid renamed");

    expect_error(delete(&app, "alice", &path).await, 409, "conflict").await;
    assert_eq!(
        json_of(app.get("alice", &path).await, 200).await["status"],
        "running",
        "a running bot is not deleted"
    );

    assert_eq!(json_of(command(&app, "alice", &path, "stop").await, 200).await["status"], "stopped");
    let ev = ws.event().await;
    assert_event(&ev, "bots", "update", &["bot.status_changed"]);
    assert_eq!(ev.row.as_ref().unwrap()["status"], "stopped");

    expect_error(command(&app, "alice", &path, "pause").await, 409, "conflict").await;
    assert_eq!(json_of(app.get("alice", &path).await, 200).await["status"], "stopped");

    assert_eq!(delete(&app, "alice", &path).await.status(), 204);
    // The rejected pause wrote nothing: the next event is the delete.
    let ev = ws.event().await;
    assert_event(&ev, "bots", "delete", &["bot.deleted"]);
    assert!(ev.row.is_none(), "a delete has no row");
    assert_eq!(ev.old.as_ref().unwrap()["id"], id.as_str());
    expect_error(app.get("alice", &path).await, 404, "not_found").await;
    expect_error(delete(&app, "alice", &path).await, 404, "not_found").await;
}

#[tokio::test]
async fn bot_commands_are_validated() {
    let app = spawn_app().await;
    let head = app.head("alice").await;
    for (what, body) in [
        ("unknown symbol", json!({"name": "x", "strategy": "grid", "symbol": "NOPEUSDT"})),
        ("empty name", json!({"name": " ", "strategy": "grid", "symbol": "BTCUSDT"})),
        (
            "someone else's portfolio",
            json!({"name": "x", "strategy": "grid", "symbol": "BTCUSDT", "portfolio_id": "pf_bob_main"}),
        ),
        (
            "config not an object",
            json!({"name": "x", "strategy": "grid", "symbol": "BTCUSDT", "config": [1]}),
        ),
        ("missing strategy", json!({"name": "x", "symbol": "BTCUSDT"})),
    ] {
        let r = app.post("alice", "/v1/bots", body).await;
        assert_eq!(r.status(), 400, "{what}");
        let err: Value = r.json().await.unwrap();
        assert_eq!(err["error"]["code"], "bad_request", "{what}: {err}");
    }
    assert_eq!(app.head("alice").await, head, "nothing was written");

    // A bot's status changes only through its commands, and ids are not editable.
    let body = json!({"name": "x", "strategy": "grid", "symbol": "BTCUSDT"});
    let bot = json_of(app.post("alice", "/v1/bots", body).await, 201).await;
    let path = format!("/v1/bots/{}", bot["id"].as_str().unwrap());
    for (what, body) in [
        ("status", json!({"status": "running"})),
        ("user_id", json!({"user_id": "u_bob"})),
        ("unknown symbol", json!({"symbol": "NOPEUSDT"})),
        ("empty name", json!({"name": ""})),
    ] {
        expect_error(patch(&app, "alice", &path, body).await, 400, "bad_request").await;
        let now = json_of(app.get("alice", &path).await, 200).await;
        assert_eq!(now, bot, "a rejected patch ({what}) changes nothing");
    }
}

#[tokio::test]
async fn bob_can_neither_see_nor_command_alices_bot() {
    let app = spawn_app().await;
    let body = json!({"name": "Alice's", "strategy": "grid", "symbol": "ETHUSDT"});
    let bot = json_of(app.post("alice", "/v1/bots", body).await, 201).await;
    let path = format!("/v1/bots/{}", bot["id"].as_str().unwrap());
    assert_eq!(json_of(command(&app, "alice", &path, "start").await, 200).await["status"], "running");

    // (With logical capture a snapshot taken before the start is captured would be
    // followed by the start's own change, applied again; see PROTOCOL.md.)
    app.settle().await;
    let mut ws = app.ws("alice").await;
    ws.subscribe_snapshot("b", json!(["bots", "lifecycle"])).await;

    expect_error(app.get("bob", &path).await, 404, "not_found").await;
    for action in ["start", "pause", "stop"] {
        expect_error(command(&app, "bob", &path, action).await, 404, "not_found").await;
    }
    expect_error(patch(&app, "bob", &path, json!({"name": "mine now"})).await, 404, "not_found").await;
    expect_error(delete(&app, "bob", &path).await, 404, "not_found").await;
    let bobs = json_of(app.get("bob", "/v1/bots").await, 200).await;
    assert_eq!(bobs["items"], json!([]), "bob's list does not show alice's bot");

    let mine = json_of(app.get("alice", &path).await, 200).await;
    assert_eq!(mine["name"], "Alice's");
    assert_eq!(mine["status"], "running");
    // Nothing bob did reached alice's stream: the next event is her own pause.
    assert_eq!(json_of(command(&app, "alice", &path, "pause").await, 200).await["status"], "paused");
    let ev = ws.event().await;
    assert_event(&ev, "bots", "update", &["bot.status_changed"]);
    assert_eq!(ev.row.unwrap()["status"], "paused");
}
