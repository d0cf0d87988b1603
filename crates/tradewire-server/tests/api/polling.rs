//! The polling fallback `GET /v1/changes`: exactly the changes after `since`, in order, at
//! most `limit` of them, and a position to ask from next time that also moves past changes
//! the filter drops; 409 `resync_required` when `since` cannot be served.

use serde_json::{Value, json};

use crate::helpers::{TestApp, insert_signal, spawn_app};
#[allow(unused_imports)]
use tradewire_server::db::Sql;

async fn poll(app: &TestApp, name: &str, params: &[(&str, &str)]) -> reqwest::Response {
    app.http.get(app.url("/v1/changes")).query(params).bearer_auth(app.token(name)).send().await.unwrap()
}

/// A successful poll: `(events, position.seq, more)`, with the position's epoch checked.
async fn poll_ok(app: &TestApp, name: &str, since: u64, extra: &[(&str, &str)]) -> (Vec<Value>, u64, bool) {
    let since = format!("{}:{since}", app.epoch());
    let mut params = vec![("since", since.as_str())];
    params.extend_from_slice(extra);
    let r = poll(app, name, &params).await;
    assert_eq!(r.status(), 200, "{params:?}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["position"]["epoch"], app.epoch(), "{body}");
    let events = body["events"].as_array().unwrap().clone();
    for e in &events {
        assert_eq!(e["epoch"], app.epoch());
        assert!(e.get("id").is_none(), "polled events carry no subscription id: {e}");
    }
    (events, body["position"]["seq"].as_u64().unwrap(), body["more"].as_bool().unwrap())
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

async fn expect_error(resp: reqwest::Response, status: u16, code: &str) {
    assert_eq!(resp.status(), status);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

async fn place(app: &TestApp, name: &str, coid: &str, symbol: &str) -> Value {
    let r = app
        .post(
            name,
            "/v1/orders",
            json!({"client_order_id": coid, "symbol": symbol, "side": "sell", "type": "limit",
                   "price": "100", "quantity": "2"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

#[tokio::test]
async fn polling_returns_exactly_the_changes_after_since_in_order() {
    let app = spawn_app().await;
    let p = app.head("alice").await;
    let mut c = app.sql();
    for i in 0..5 {
        insert_signal(&mut c, "alice", &format!("n{i}"));
        insert_signal(&mut c, "bob", "bob's");
    }
    // Polling reads the log: wait until the writes are captured (at once on SQLite and with
    // the outbox; with logical replication, when the server has read them from the WAL).
    app.settle().await;

    let (events, pos, more) = poll_ok(&app, "alice", p, &[]).await;
    assert_eq!(seqs(&events), (p + 1..=p + 5).collect::<Vec<_>>());
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["topic"], "signals");
        assert_eq!(e["change"], "insert");
        assert_eq!(e["events"], json!(["signal.generated"]));
        assert_eq!(e["row"]["reason"], format!("n{i}"));
        assert_eq!(e["row"]["user_id"], "u_alice");
    }
    assert_eq!(pos, p + 5);
    assert!(!more);

    let (events, pos, more) = poll_ok(&app, "alice", p + 2, &[]).await;
    assert_eq!(seqs(&events), [p + 3, p + 4, p + 5]);
    assert_eq!((pos, more), (p + 5, false));

    // At the head: nothing new, and the position stays.
    let (events, pos, more) = poll_ok(&app, "alice", p + 5, &[]).await;
    assert!(events.is_empty());
    assert_eq!((pos, more), (p + 5, false));
}

#[tokio::test]
async fn limit_caps_each_answer_and_following_the_position_yields_every_change_once() {
    let app = spawn_app().await;
    let start = app.head("alice").await;
    let mut c = app.sql();
    for i in 0..23 {
        insert_signal(&mut c, "alice", &format!("n{i}"));
        if i % 4 == 0 {
            insert_signal(&mut c, "bob", "bob's");
        }
    }
    let head = app.head("alice").await;
    assert_eq!(head, start + 23);

    let (first, pos, more) = poll_ok(&app, "alice", start, &[("limit", "5")]).await;
    assert_eq!(seqs(&first), (start + 1..=start + 5).collect::<Vec<_>>());
    assert_eq!(pos, start + 5, "the position is the last change scanned");
    assert!(more);

    let mut seen = seqs(&first);
    let mut since = pos;
    let mut calls = 1;
    loop {
        let (events, pos, more) = poll_ok(&app, "alice", since, &[("limit", "5")]).await;
        calls += 1;
        assert!(events.len() <= 5);
        assert!(pos > since || !more, "every answer makes progress");
        seen.extend(seqs(&events));
        since = pos;
        if !more {
            break;
        }
        assert!(calls < 20, "polling drains");
    }
    assert_eq!(calls, 5, "23 changes in pages of 5");
    assert_eq!(seen, (start + 1..=head).collect::<Vec<_>>(), "every change exactly once, in order");
    assert_eq!(since, head);
}

#[tokio::test]
async fn a_long_history_is_served_across_internal_read_batches() {
    let app = spawn_app().await;
    let start = app.head("alice").await;
    let mut c = app.sql();
    c.batch("BEGIN").unwrap();
    for _ in 0..1234 {
        insert_signal(&mut c, "alice", "bulk");
    }
    c.batch("COMMIT").unwrap();
    let head = app.head("alice").await;
    assert_eq!(head, start + 1234);

    let (all, pos, more) = poll_ok(&app, "alice", start, &[("limit", "5000")]).await;
    assert_eq!(seqs(&all), (start + 1..=head).collect::<Vec<_>>());
    assert_eq!((pos, more), (head, false));

    // The default page is 500.
    let mut pages = Vec::new();
    let mut since = start;
    loop {
        let (events, pos, more) = poll_ok(&app, "alice", since, &[]).await;
        pages.push(events.len());
        since = pos;
        if !more {
            break;
        }
    }
    assert_eq!(pages, [500, 500, 234]);
    assert_eq!(since, head);

    // A filter nothing matches still scans to the head in one answer.
    let (events, pos, more) = poll_ok(&app, "alice", start, &[("topics", "orders")]).await;
    assert!(events.is_empty());
    assert_eq!((pos, more), (head, false));
}

#[tokio::test]
async fn topic_and_where_filters_apply_and_the_position_still_advances() {
    let app = spawn_app().await;
    let start = app.head("alice").await;
    let btc = place(&app, "alice", "b1", "BTCUSDT").await;
    app.insert_signals("alice", 2, "noise");
    let eth = place(&app, "alice", "e1", "ETHUSDT").await;
    app.insert_signals("alice", 3, "trailing noise");
    let head = app.head("alice").await;

    let (events, pos, more) = poll_ok(&app, "alice", start, &[("topics", "orders")]).await;
    let ids: Vec<&Value> = events.iter().map(|e| &e["row"]["id"]).collect();
    assert_eq!(ids, [&btc["id"], &eth["id"]]);
    let [btc_seq, eth_seq] = seqs(&events)[..] else { panic!("two orders") };
    assert!(events.iter().all(|e| e["topic"] == "orders"));
    assert_eq!(pos, head, "the position moves past the trailing signals the topic drops");
    assert!(!more);

    let filter = [("topics", "orders"), ("where", r#"{"symbol":"ETHUSDT"}"#)];
    let (events, pos, more) = poll_ok(&app, "alice", start, &filter).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["row"]["id"], eth["id"]);
    assert_eq!((pos, more), (head, false));

    let in_filter = [("topics", "*"), ("where", r#"{"symbol":{"in":["BTCUSDT","SOLUSDT"]}}"#)];
    let (events, _, _) = poll_ok(&app, "alice", start, &in_filter).await;
    // The BTCUSDT order and the BTCUSDT signals match; the ETHUSDT order does not.
    assert_eq!(events.len(), 6, "{events:?}");
    assert!(events.iter().all(|e| e["row"]["symbol"] == "BTCUSDT"));

    let (events, pos, more) =
        poll_ok(&app, "alice", start, &[("topics", "signals"), ("where", r#"{"reason":"trailing noise"}"#)])
            .await;
    assert_eq!(seqs(&events), [head - 2, head - 1, head]);
    assert_eq!((pos, more), (head, false));

    // Nothing matches: an empty answer still moves the position to the head.
    let (events, pos, more) = poll_ok(&app, "alice", start, &[("topics", "fills")]).await;
    assert!(events.is_empty());
    assert_eq!((pos, more), (head, false));

    // With a limit, the position stops before the first matching change not returned (it
    // may skip the non-matching ones in between).
    let (events, pos, more) = poll_ok(&app, "alice", start, &[("topics", "orders"), ("limit", "1")]).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["row"]["id"], btc["id"]);
    assert_eq!(events[0]["seq"], btc_seq);
    assert!((btc_seq..eth_seq).contains(&pos), "position {pos} between {btc_seq} and {eth_seq}");
    assert!(more);
    let (events, mut pos, mut more) =
        poll_ok(&app, "alice", pos, &[("topics", "orders"), ("limit", "1")]).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["row"]["id"], eth["id"]);
    assert!((eth_seq..=head).contains(&pos), "position {pos} between {eth_seq} and the head {head}");
    assert_eq!(more, pos < head, "more until the head is scanned");
    if more {
        let (events, p, m) = poll_ok(&app, "alice", pos, &[("topics", "orders"), ("limit", "1")]).await;
        assert!(events.is_empty());
        (pos, more) = (p, m);
    }
    assert_eq!((pos, more), (head, false));
}

#[tokio::test]
async fn positions_that_cannot_be_served_get_409_resync_required() {
    let app = spawn_app().await;
    app.insert_signals("alice", 10, "old");
    let head = app.head("alice").await;

    let r = poll(&app, "alice", &[("since", "e_other:3")]).await;
    expect_error(r, 409, "resync_required").await;

    let ahead = format!("{}:{}", app.epoch(), head + 1);
    expect_error(poll(&app, "alice", &[("since", &ahead)]).await, 409, "resync_required").await;

    let pruned =
        tradewire_server::changefeed::ChangeLog::prune_sync(&mut app.sql(), i64::MAX, 1_000_000).unwrap();
    assert!(pruned >= 10);
    let old = format!("{}:3", app.epoch());
    expect_error(poll(&app, "alice", &[("since", &old)]).await, 409, "resync_required").await;

    // At the head nothing is missing, so even a pruned log serves it.
    let (events, pos, more) = poll_ok(&app, "alice", head, &[]).await;
    assert!(events.is_empty());
    assert_eq!((pos, more), (head, false));
}

#[tokio::test]
async fn bad_poll_requests_are_rejected() {
    let app = spawn_app().await;
    let since = format!("{}:0", app.epoch());
    expect_error(poll(&app, "alice", &[]).await, 400, "bad_request").await;
    for bad in ["garbage", "42", ":3", "e1:-1"] {
        expect_error(poll(&app, "alice", &[("since", bad)]).await, 400, "bad_request").await;
    }
    for limit in ["0", "5001", "1000000", "-1", "abc"] {
        expect_error(poll(&app, "alice", &[("since", &since), ("limit", limit)]).await, 400, "bad_request")
            .await;
    }
    expect_error(poll(&app, "alice", &[("since", &since), ("topics", "nope")]).await, 400, "invalid_topic")
        .await;
    expect_error(poll(&app, "alice", &[("since", &since), ("where", "{nope")]).await, 400, "invalid_filter")
        .await;
    expect_error(
        poll(&app, "alice", &[("since", &since), ("topics", "orders"), ("where", r#"{"bogus":1}"#)]).await,
        400,
        "invalid_filter",
    )
    .await;

    let url = app.url("/v1/changes");
    let r = app.http.get(&url).query(&[("since", &since)]).send().await.unwrap();
    expect_error(r, 401, "unauthorized").await;
    let r = app.http.get(&url).query(&[("since", &since)]).bearer_auth("not-a-jwt").send().await.unwrap();
    expect_error(r, 401, "unauthorized").await;
    // A limit at the maximum is fine.
    assert_eq!(poll_ok(&app, "alice", 0, &[("limit", "5000")]).await.1, app.head("alice").await);
}

#[tokio::test]
async fn alice_polling_everything_never_sees_bobs_rows() {
    let app = spawn_app().await;
    place(&app, "bob", "same-id", "BTCUSDT").await;
    place(&app, "alice", "same-id", "BTCUSDT").await;
    let r =
        app.post("bob", "/v1/bots", json!({"name": "Bob's", "strategy": "grid", "symbol": "BTCUSDT"})).await;
    assert_eq!(r.status(), 201);
    let mut c = app.sql();
    for _ in 0..30 {
        insert_signal(&mut c, "bob", "secret");
    }
    c.execute("UPDATE portfolios SET balance = '1' WHERE user_id = 'u_bob'", &[]).unwrap();
    insert_signal(&mut c, "alice", "fence");
    let head = app.head("alice").await;

    let cases = [
        (None, head),
        (Some(r#"{"user_id":"u_bob"}"#), 0),
        (Some(r#"{"user_id":{"in":["u_bob","u_alice"]}}"#), head),
    ];
    for (filter, expected) in cases {
        let mut params = vec![("topics", "*"), ("limit", "5000")];
        if let Some(f) = filter {
            params.push(("where", f));
        }
        let (events, pos, more) = poll_ok(&app, "alice", 0, &params).await;
        for e in &events {
            for part in ["row", "old"] {
                if let Some(r) = e.get(part) {
                    assert_eq!(r["user_id"], "u_alice", "a row of bob's leaked ({filter:?}): {e}");
                }
            }
        }
        assert_eq!((pos, more), (head, false));
        assert_eq!(events.len() as u64, expected, "{filter:?}: {events:?}");
        if filter.is_none() {
            assert_eq!(seqs(&events), (1..=head).collect::<Vec<_>>(), "alice's whole stream, contiguous");
        }
    }
    // Bob's writes did happen: his own stream has them.
    let (bobs, _, _) = poll_ok(&app, "bob", 0, &[("topics", "signals"), ("limit", "5000")]).await;
    assert_eq!(bobs.len(), 30);
}
