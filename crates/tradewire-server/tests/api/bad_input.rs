//! Bad input, on the WebSocket and over HTTP: each gets the answer PROTOCOL.md documents
//! (an error frame with its code, a close code, or a 4xx JSON error), and the server keeps
//! serving everyone else — including the same user's other connections — with nothing lost.

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tradewire_protocol::{ErrorCode, ServerFrame};

use crate::helpers::{
    Bystander, Closed, DEADLINE, TestApp, Ws, frames_until_close, spawn_app, spawn_app_with,
};

/// The next frame must be an `error`; returns its id and code.
async fn error(ws: &mut Ws) -> (Option<String>, ErrorCode) {
    match ws.frame().await {
        ServerFrame::Error { id, code, .. } => (id, code),
        other => panic!("expected an error frame, got {other:?}"),
    }
}

/// The connection is open and answering: a ping gets a pong with the same `ts`.
async fn assert_alive(ws: &mut Ws, ts: Value) {
    ws.send_json(json!({"op": "ping", "ts": ts})).await;
    assert_eq!(ws.frame().await, ServerFrame::Pong { ts: Some(ts) }, "the connection stays open");
}

#[tokio::test]
async fn a_frame_that_is_not_json_or_is_binary_is_a_protocol_violation_closed_with_4400() {
    let app = spawn_app().await;
    let mut watch = Bystander::new(&app, "alice").await;

    let mut ws = app.ws("alice").await;
    ws.send_text("{\"op\": \"ping\", this is not json").await;
    assert_eq!(ws.expect_close().await, Closed::Code(4400));

    let mut ws = app.ws("alice").await;
    ws.socket.send(Message::Binary(br#"{"op":"ping"}"#.to_vec().into())).await.unwrap();
    assert_eq!(ws.expect_close().await, Closed::Code(4400), "binary frames are not part of the protocol");

    watch.still_served(&app).await;
}

#[tokio::test]
async fn json_that_is_not_an_object_with_an_op_is_a_bad_request_and_the_connection_stays() {
    let app = spawn_app().await;
    let mut watch = Bystander::new(&app, "alice").await;
    let mut ws = app.ws("alice").await;

    for (i, bad) in
        ["[1, 2]", "\"ping\"", "42", "null", "{}", r#"{"id": "x"}"#, r#"{"op": 5}"#, r#"{"op": null}"#]
            .into_iter()
            .enumerate()
    {
        ws.send_text(bad).await;
        assert_eq!(error(&mut ws).await.1, ErrorCode::BadRequest, "for {bad}");
        assert_alive(&mut ws, json!(i)).await;
    }
    // A known op with missing or mistyped fields is a bad request too.
    for bad in [
        json!({"op": "subscribe"}),
        json!({"op": "subscribe", "id": "s", "topics": "orders"}),
        json!({"op": "unsubscribe"}),
    ] {
        ws.send_json(bad.clone()).await;
        assert_eq!(error(&mut ws).await.1, ErrorCode::BadRequest, "for {bad}");
    }
    assert_alive(&mut ws, json!("still here")).await;

    watch.still_served(&app).await;
}

#[tokio::test]
async fn an_unknown_op_is_answered_with_unknown_op_and_the_connection_stays() {
    let app = spawn_app().await;
    let mut watch = Bystander::new(&app, "alice").await;
    let mut ws = app.ws("alice").await;

    for op in ["fly", "PING", "Subscribe", ""] {
        ws.send_json(json!({"op": op, "id": "q1"})).await;
        assert_eq!(error(&mut ws).await.1, ErrorCode::UnknownOp, "for op {op:?}");
    }
    assert_alive(&mut ws, json!(1732230000123_i64)).await;

    watch.still_served(&app).await;
}

#[tokio::test]
async fn an_invalid_topic_is_answered_with_invalid_topic_for_that_subscription() {
    let app = spawn_app().await;
    let mut watch = Bystander::new(&app, "alice").await;
    let mut ws = app.ws("alice").await;

    let cases = [json!(["nope"]), json!(["ticker:btc"]), json!([""]), json!(["orders", "nope"])];
    for (i, topics) in cases.into_iter().enumerate() {
        let id = format!("t{i}");
        ws.send_json(json!({"op": "subscribe", "id": id, "topics": topics})).await;
        assert_eq!(error(&mut ws).await, (Some(id.clone()), ErrorCode::InvalidTopic), "for {topics}");
    }
    // None of the rejected subscriptions exists: nothing to unsubscribe, no events for them.
    ws.send_json(json!({"op": "unsubscribe", "id": "t3"})).await;
    assert_eq!(error(&mut ws).await, (Some("t3".into()), ErrorCode::BadRequest));
    ws.send_json(json!({"op": "subscribe", "id": "ok", "topics": ["signals"], "from": "now"})).await;
    assert!(matches!(ws.frame().await, ServerFrame::Subscribed { id, .. } if id == "ok"));

    watch.still_served(&app).await;
    let ev = ws.event().await;
    assert_eq!((ev.id.as_deref(), ev.seq), (Some("ok"), watch.seq));
    assert_alive(&mut ws, json!("no event for a rejected subscription")).await;
}

#[tokio::test]
async fn an_unknown_filter_column_or_a_malformed_filter_is_answered_with_invalid_filter() {
    let app = spawn_app().await;
    let mut watch = Bystander::new(&app, "alice").await;
    let mut ws = app.ws("alice").await;

    let cases = [
        json!({"colour": "red"}),
        json!({"symbol": "BTCUSDT", "colour": "red"}),
        json!({"a": [1]}),
        json!({"a": {"in": []}}),
        json!({"symbol": ["BTCUSDT"]}),
        json!({"symbol": {"in": []}}),
        json!({"symbol": {"in": [["BTCUSDT"]]}}),
        json!({"symbol": {"in": ["BTCUSDT"], "x": 1}}),
        json!({"symbol": {"eq": "BTCUSDT"}}),
    ];
    for (i, filter) in cases.into_iter().enumerate() {
        let id = format!("f{i}");
        ws.send_json(json!({"op": "subscribe", "id": id, "topics": ["orders"], "where": filter})).await;
        assert_eq!(error(&mut ws).await, (Some(id), ErrorCode::InvalidFilter), "for {filter}");
    }
    // The documented shapes are accepted.
    ws.send_json(json!({"op": "subscribe", "id": "ok", "topics": ["orders"],
                        "where": {"symbol": {"in": ["BTCUSDT", "ETHUSDT"]}, "side": "buy"}, "from": "now"}))
        .await;
    assert!(matches!(ws.frame().await, ServerFrame::Subscribed { id, .. } if id == "ok"));

    watch.still_served(&app).await;
}

#[tokio::test]
async fn a_frame_larger_than_max_frame_bytes_is_closed_with_1009() {
    let app = spawn_app().await;
    let mut watch = Bystander::new(&app, "alice").await;
    assert_eq!(app.config.max_frame_bytes, 65536);

    // Just under the limit is fine.
    let mut ws = app.ws("alice").await;
    assert_alive(&mut ws, json!("x".repeat(60_000))).await;

    // Over it is not.
    let big = json!({"op": "ping", "ts": "x".repeat(70_000)}).to_string();
    assert!(big.len() > 65536);
    ws.send_text(&big).await;
    assert_eq!(ws.expect_close().await, Closed::Code(1009));

    watch.still_served(&app).await;
}

#[tokio::test]
async fn at_most_max_subscriptions_per_connection_but_replacing_one_is_allowed() {
    let app = spawn_app().await;
    let mut watch = Bystander::new(&app, "alice").await;
    let mut ws = app.ws("alice").await;
    assert_eq!(app.config.max_subscriptions, 64);

    for i in 0..64 {
        ws.send_json(json!({"op": "subscribe", "id": format!("s{i}"), "topics": ["signals"], "from": "now"}))
            .await;
        assert!(matches!(ws.frame().await, ServerFrame::Subscribed { id, .. } if id == format!("s{i}")));
    }
    ws.send_json(json!({"op": "subscribe", "id": "s64", "topics": ["signals"], "from": "now"})).await;
    assert_eq!(error(&mut ws).await, (Some("s64".into()), ErrorCode::TooManySubscriptions));

    // Re-subscribing an existing id replaces it and is still allowed.
    ws.send_json(json!({"op": "subscribe", "id": "s0", "topics": ["signals"], "from": "now"})).await;
    assert!(matches!(ws.frame().await, ServerFrame::Subscribed { id, .. } if id == "s0"));
    // Freeing a slot makes room again.
    ws.send_json(json!({"op": "unsubscribe", "id": "s63"})).await;
    assert_eq!(ws.frame().await, ServerFrame::Unsubscribed { id: "s63".into() });
    ws.send_json(json!({"op": "subscribe", "id": "s64", "topics": ["signals"], "from": "now"})).await;
    assert!(matches!(ws.frame().await, ServerFrame::Subscribed { id, .. } if id == "s64"));

    watch.still_served(&app).await;
    // One change, one event per live subscription: s0..s62 and s64, each exactly once.
    let mut ids = Vec::new();
    for _ in 0..64 {
        let ev = ws.event().await;
        assert_eq!(ev.seq, watch.seq);
        ids.push(ev.id.unwrap());
    }
    ids.sort_by_key(|id| id[1..].parse::<u32>().unwrap());
    let expected: Vec<String> = (0..=64).filter(|&i| i != 63).map(|i| format!("s{i}")).collect();
    assert_eq!(ids, expected);
    assert_alive(&mut ws, json!("nothing more")).await;
}

#[tokio::test]
async fn a_message_flood_is_rate_limited_then_closed_with_4029() {
    // A low rate makes the flood unambiguous however slowly the test machine sends.
    let app = spawn_app_with(|c| c.max_messages_per_second = 10).await;
    let mut watch = Bystander::new(&app, "alice").await;
    let ws = app.ws("alice").await;

    // Far more than the rate (and its burst), as fast as the socket takes them, while
    // reading as any client does. The flood ends when the server closes.
    let (mut tx, mut rx) = ws.socket.split();
    let closed_seen = tokio_util::sync::CancellationToken::new();
    let flood = async {
        let mut sent = 0;
        while sent < 5000 && !closed_seen.is_cancelled() {
            let ping = Message::Text(json!({"op": "ping", "ts": sent}).to_string().into());
            if tx.send(ping).await.is_err() {
                break;
            }
            sent += 1;
            if sent % 50 == 0 {
                tokio::task::yield_now().await;
            }
        }
        sent
    };
    let read = async {
        let r = frames_until_close(&mut rx).await;
        closed_seen.cancel();
        r
    };
    let (sent, (frames, closed)) = tokio::join!(flood, read);

    // Everyone else is served, and the same user can connect again.
    watch.still_served(&app).await;
    let mut again = app.ws("alice").await;
    assert_alive(&mut again, json!("back")).await;

    let pongs = frames.iter().filter(|f| matches!(f, ServerFrame::Pong { .. })).count();
    let limited = frames
        .iter()
        .filter(|f| matches!(f, ServerFrame::Error { code: ErrorCode::RateLimited, .. }))
        .count();
    let seen = format!("{sent} pings sent; {pongs} pongs, {limited} rate_limited errors, then {closed:?}");
    assert!(limited >= 1, "the client is told it is rate limited: {seen}");
    assert_eq!(closed, Closed::Code(4029), "{seen}");
    assert!(pongs >= 10, "a burst within the rate is served: {seen}");
    assert!(pongs < sent, "the flood is not all served: {seen}");
}

#[tokio::test]
async fn a_frame_far_larger_than_max_frame_bytes_is_closed_with_1009_too() {
    let app = spawn_app().await;
    let mut watch = Bystander::new(&app, "alice").await;
    let mut ws = app.ws("alice").await;

    // The server may stop reading (and close) before the whole frame is sent.
    let huge = json!({"op": "ping", "ts": "x".repeat(1 << 20)}).to_string();
    let _ = ws.socket.send(Message::Text(huge.into())).await;
    let closed = frames_until_close(&mut ws.socket).await.1;

    watch.still_served(&app).await;
    assert_eq!(closed, Closed::Code(1009));
}

#[tokio::test]
async fn unsubscribing_an_unknown_id_is_a_bad_request_and_a_known_one_stops_its_events() {
    let app = spawn_app().await;
    let mut watch = Bystander::new(&app, "alice").await;
    let mut ws = app.ws("alice").await;

    ws.send_json(json!({"op": "unsubscribe", "id": "never"})).await;
    assert_eq!(error(&mut ws).await, (Some("never".into()), ErrorCode::BadRequest));

    for id in ["a", "b"] {
        ws.send_json(json!({"op": "subscribe", "id": id, "topics": ["signals"], "from": "now"})).await;
        assert!(matches!(ws.frame().await, ServerFrame::Subscribed { .. }));
    }
    watch.still_served(&app).await;
    let mut got: Vec<_> =
        [ws.event().await, ws.event().await].into_iter().map(|e| (e.id.unwrap(), e.seq)).collect();
    got.sort();
    assert_eq!(got, [("a".to_owned(), watch.seq), ("b".to_owned(), watch.seq)]);

    ws.send_json(json!({"op": "unsubscribe", "id": "a"})).await;
    assert_eq!(ws.frame().await, ServerFrame::Unsubscribed { id: "a".into() });
    watch.still_served(&app).await;
    let ev = ws.event().await;
    assert_eq!((ev.id.as_deref(), ev.seq), (Some("b"), watch.seq));
    assert_alive(&mut ws, json!("no event for a")).await;

    // Twice is once too many.
    ws.send_json(json!({"op": "unsubscribe", "id": "a"})).await;
    assert_eq!(error(&mut ws).await, (Some("a".into()), ErrorCode::BadRequest));
}

/// An HTTP error: its status and the `error.code` of its JSON body.
async fn http_error(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.expect("a JSON error body");
    let code = body["error"]["code"].as_str().unwrap_or_else(|| panic!("no error.code in {body}")).to_owned();
    assert!(body["error"]["message"].is_string(), "an error.message in {body}");
    (status, code)
}

#[tokio::test]
async fn bad_http_requests_get_400_with_a_json_error_and_write_nothing() {
    let app = spawn_app().await;
    let mut watch = Bystander::new(&app, "alice").await;
    let token = app.token("alice");
    let order = json!({"client_order_id": "c1", "symbol": "BTCUSDT", "side": "buy",
                       "type": "limit", "price": "27000.50", "quantity": "0.010"});

    for body in ["{\"symbol\": ", "not json", ""] {
        let r = app
            .http
            .post(app.url("/v1/orders"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(http_error(r).await, (400, "bad_request".into()), "for body {body:?}");
    }
    let bad_fields = [
        ("quantity", json!("abc")),
        ("quantity", json!("1.2.3")),
        ("quantity", json!("-1")),
        ("quantity", json!("0")),
        ("quantity", json!(0.01)),
        ("price", json!("27,000.50")),
        ("price", json!("-27000")),
        ("price", json!("")),
    ];
    for (field, value) in bad_fields {
        let mut body = order.clone();
        body[field] = value.clone();
        let r = app.post("alice", "/v1/orders", body).await;
        assert_eq!(http_error(r).await, (400, "bad_request".into()), "for {field} = {value}");
    }

    let r = app.get("alice", "/v1/orders?colour=red").await;
    assert_eq!(http_error(r).await, (400, "invalid_filter".into()));

    let epoch = app.epoch();
    for since in ["garbage", "", ":5", &format!("{epoch}:-1"), &format!("{epoch}:x")] {
        let r = app.get("alice", &format!("/v1/changes?since={since}")).await;
        assert_eq!(http_error(r).await, (400, "bad_request".into()), "for since={since:?}");
    }
    let r = app.get("alice", "/v1/changes").await;
    assert_eq!(http_error(r).await, (400, "bad_request".into()), "since is required");

    // Nothing was written: the next change of alice's stream is the valid order.
    let r = app.get("alice", "/v1/orders").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["items"], json!([]));
    assert_eq!(app.place_order("alice", "c1").await.status(), 201);
    let ev = watch.ws.event().await;
    assert_eq!((ev.topic.as_str(), ev.seq), ("orders", watch.seq + 1));
    assert_eq!(ev.row.unwrap()["client_order_id"], "c1");
    watch.seq += 1;
    watch.still_served(&app).await;
}

/// A raw WebSocket over TCP, upgraded with alice's token, for frames no client library
/// sends: the first bytes after the `101` answer are kept.
async fn raw_ws(app: &TestApp) -> (tokio::net::TcpStream, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let upgrade = format!(
        "GET /v1/ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {}\r\n\r\n",
        app.addr,
        app.token("alice")
    );
    stream.write_all(upgrade.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed during the upgrade");
        buf.extend_from_slice(&chunk[..n]);
    };
    assert!(buf.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&buf));
    (stream, buf.split_off(end))
}

/// Send one masked frame with `first_byte` (FIN and opcode) and `payload`.
async fn raw_send(stream: &mut tokio::net::TcpStream, first_byte: u8, payload: &[u8]) {
    use tokio::io::AsyncWriteExt;
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    assert!(payload.len() < 126);
    let mut frame = vec![first_byte, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    stream.write_all(&frame).await.unwrap();
}

/// Read server frames (unmasked) until a close frame: its code, or `None` when the
/// connection ends without one.
async fn raw_close_code(stream: &mut tokio::net::TcpStream, mut buf: Vec<u8>) -> Option<u16> {
    use tokio::io::AsyncReadExt;
    let read = async {
        loop {
            // A whole frame at the front of `buf`?
            if buf.len() >= 2 {
                let (opcode, len7) = (buf[0] & 0x0f, (buf[1] & 0x7f) as usize);
                let (len, head) = match len7 {
                    126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
                    127 if buf.len() >= 10 => {
                        (u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize, 10)
                    }
                    126 | 127 => (usize::MAX, 0),
                    n => (n, 2),
                };
                if len != usize::MAX && buf.len() >= head + len {
                    if opcode == 0x8 {
                        return (len >= 2).then(|| u16::from_be_bytes([buf[head], buf[head + 1]]));
                    }
                    buf.drain(..head + len);
                    continue;
                }
            }
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(DEADLINE, read).await.expect("an answer within the deadline")
}

/// What the WebSocket layer itself refuses is answered with the standard close codes, and a
/// client's own close is answered with a close frame (echoing its code), as RFC 6455 asks.
#[tokio::test]
async fn websocket_level_errors_get_their_close_codes_and_a_close_is_answered() {
    let app = spawn_app().await;
    let (mut s, buf) = raw_ws(&app).await;
    raw_send(&mut s, 0x88, &1000u16.to_be_bytes()).await;
    assert_eq!(raw_close_code(&mut s, buf).await, Some(1000), "the client's close is answered");

    let (mut s, buf) = raw_ws(&app).await;
    raw_send(&mut s, 0x81, &[b'{', 0xff, 0xfe, b'}']).await;
    assert_eq!(raw_close_code(&mut s, buf).await, Some(1007), "a text frame that is not UTF-8");

    let (mut s, buf) = raw_ws(&app).await;
    raw_send(&mut s, 0x83, b"reserved").await;
    assert_eq!(raw_close_code(&mut s, buf).await, Some(1002), "a reserved opcode");

    let mut bob = Bystander::new(&app, "bob").await;
    bob.still_served(&app).await;
}
