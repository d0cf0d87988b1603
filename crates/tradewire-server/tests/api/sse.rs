//! Server-Sent Events: a fresh stream starts with a snapshot, every change carries its
//! position as the event id, `Last-Event-ID` (or `?from=`) resumes with exactly what was
//! missed, a position that cannot be served is answered with `resync_required`, and a
//! stream never carries another user's rows.

use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::{Value, json};

use crate::helpers::{DEADLINE, TestApp, insert_signal, spawn_app};
#[allow(unused_imports)]
use tradewire_server::db::Sql;

/// Event names that are not row changes.
const CONTROL: [&str; 6] = ["snapshot", "subscribed", "heartbeat", "resync_required", "close", "error"];

/// One dispatched SSE event.
#[derive(Debug, Clone)]
struct SseEvent {
    id: Option<String>,
    event: String,
    data: String,
}

impl SseEvent {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {}", self.data))
    }

    fn is_change(&self) -> bool {
        !CONTROL.contains(&self.event.as_str())
    }

    /// The `seq` of the id (`<epoch>:<seq>`).
    fn id_seq(&self) -> u64 {
        let id = self.id.as_deref().unwrap_or_else(|| panic!("event without id: {self:?}"));
        id.rsplit_once(':').and_then(|(_, s)| s.parse().ok()).unwrap_or_else(|| panic!("bad id {id:?}"))
    }
}

/// A minimal SSE client over a streamed reqwest body: blank-line separated blocks, `id`,
/// `event` and `data` fields, `:` comments counted and skipped.
struct SseStream {
    body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: Vec<u8>,
    /// The last id seen, which an EventSource would send as `Last-Event-ID`.
    last_id: Option<String>,
    comments: usize,
}

impl SseStream {
    async fn open(req: reqwest::RequestBuilder) -> SseStream {
        let resp = tokio::time::timeout(DEADLINE, req.send()).await.expect("SSE response in time").unwrap();
        let status = resp.status();
        if status != 200 {
            panic!("SSE answered {status}: {}", resp.text().await.unwrap_or_default());
        }
        let ct = resp.headers()[reqwest::header::CONTENT_TYPE].to_str().unwrap().to_owned();
        assert!(ct.starts_with("text/event-stream"), "content type {ct}");
        SseStream { body: resp.bytes_stream().boxed(), buf: Vec::new(), last_id: None, comments: 0 }
    }

    /// The next complete block of lines, if buffered.
    fn take_block(&mut self) -> Option<String> {
        let end = self.buf.windows(2).position(|w| w == b"\n\n")?;
        let block: Vec<u8> = self.buf.drain(..end + 2).collect();
        Some(String::from_utf8(block).expect("SSE is UTF-8"))
    }

    fn parse_block(&mut self, block: &str) -> Option<SseEvent> {
        let (mut id, mut event, mut data) = (None, None, Vec::new());
        for line in block.lines() {
            if line.starts_with(':') {
                self.comments += 1;
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "id" => id = Some(value.to_owned()),
                "event" => event = Some(value.to_owned()),
                "data" => data.push(value),
                _ => {}
            }
        }
        if id.is_none() && event.is_none() && data.is_empty() {
            return None;
        }
        if id.is_some() {
            self.last_id.clone_from(&id);
        }
        Some(SseEvent { id, event: event.unwrap_or_else(|| "message".into()), data: data.join("\n") })
    }

    /// The next event of any kind, or `None` when the server ends the stream.
    async fn next_any(&mut self) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(block) = self.take_block() {
                match self.parse_block(&block) {
                    Some(ev) => return Some(ev),
                    None => continue,
                }
            }
            match tokio::time::timeout_at(deadline, self.body.next())
                .await
                .expect("an SSE event within the deadline")
            {
                Some(Ok(chunk)) => self.buf.extend(chunk.iter().filter(|b| **b != b'\r')),
                Some(Err(e)) => panic!("SSE read error: {e}"),
                None => return None,
            }
        }
    }

    /// The next event that is not a heartbeat (nor a `subscribed` acknowledgement, which the
    /// contract does not have; `a_fresh_stream_begins_with_the_snapshot_event` checks that).
    async fn next(&mut self) -> SseEvent {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let mut skipped = Vec::new();
        loop {
            let ev = self.next_any().await.expect("the stream stays open");
            if ev.event != "heartbeat" && ev.event != "subscribed" {
                return ev;
            }
            // Heartbeats alone never satisfy a wait: give up after the deadline, showing
            // the positions they carried.
            assert!(
                tokio::time::Instant::now() < deadline,
                "no event within the deadline; heartbeats seen: {:?}",
                skipped
            );
            skipped.push(ev.id);
        }
    }

    /// The snapshot event's data.
    async fn snapshot(&mut self) -> Value {
        let ev = self.next().await;
        assert_eq!(ev.event, "snapshot", "expected a snapshot, got {ev:?}");
        let data = ev.json();
        assert_eq!(data["op"], "snapshot");
        data
    }

    /// The next change, checked for the SSE framing of PROTOCOL.md: the id is
    /// `<epoch>:<seq>` of the data, the name is the main domain event (or the change), and
    /// the data is the event object without a subscription id.
    async fn change(&mut self) -> (SseEvent, Value) {
        let ev = self.next().await;
        assert!(ev.is_change(), "expected a change, got {ev:?}");
        let data = ev.json();
        assert_eq!(data["op"], "event", "{data}");
        assert!(data.get("id").is_none(), "SSE data carries no subscription id: {data}");
        let id = format!("{}:{}", data["epoch"].as_str().unwrap(), data["seq"].as_u64().unwrap());
        assert_eq!(ev.id.as_deref(), Some(id.as_str()), "the SSE id is the event's position");
        let main = data["events"].get(0).unwrap_or(&data["change"]);
        assert_eq!(ev.event, main.as_str().unwrap(), "the event name is the main domain event: {data}");
        (ev, data)
    }

    /// Read until the stream has reached `seq` (a change at or past it, or a heartbeat whose
    /// id is), returning the changes seen on the way.
    async fn read_to(&mut self, seq: u64) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let mut changes = Vec::new();
        loop {
            assert!(tokio::time::Instant::now() < deadline, "seq {seq} not reached within the deadline");
            let ev = self.next_any().await.expect("the stream stays open");
            if ev.is_change() {
                let data = ev.json();
                let s = data["seq"].as_u64().unwrap();
                changes.push(data);
                if s >= seq {
                    return changes;
                }
            } else if ev.event == "heartbeat" && ev.id_seq() >= seq {
                return changes;
            } else {
                assert!(
                    matches!(ev.event.as_str(), "heartbeat" | "subscribed" | "snapshot"),
                    "unexpected {ev:?}"
                );
            }
        }
    }
}

fn sse_req(app: &TestApp, params: &[(&str, &str)]) -> reqwest::RequestBuilder {
    app.http.get(app.url("/v1/sse")).query(params)
}

async fn sse(app: &TestApp, name: &str, params: &[(&str, &str)]) -> SseStream {
    SseStream::open(sse_req(app, params).bearer_auth(app.token(name))).await
}

async fn resume_with_header(
    app: &TestApp,
    name: &str,
    params: &[(&str, &str)],
    last_event_id: &str,
) -> SseStream {
    SseStream::open(sse_req(app, params).bearer_auth(app.token(name)).header("Last-Event-ID", last_event_id))
        .await
}

fn signal(app: &TestApp, name: &str, reason: &str) {
    insert_signal(&mut app.sql(), name, reason);
}

async fn place(app: &TestApp, name: &str, coid: &str, symbol: &str) -> Value {
    let r = app
        .post(
            name,
            "/v1/orders",
            json!({"client_order_id": coid, "symbol": symbol, "side": "buy", "type": "limit",
                   "price": "100.5", "quantity": "1"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

#[tokio::test]
async fn a_fresh_stream_begins_with_the_snapshot_event() {
    let app = spawn_app().await;
    let mut s = sse(&app, "alice", &[("topics", "orders")]).await;
    let first = s.next_any().await.expect("an event");
    assert_eq!(
        first.event, "snapshot",
        "PROTOCOL.md: without Last-Event-ID the stream begins with `event: snapshot`; got {first:?}"
    );
}

#[tokio::test]
async fn a_stream_starts_with_the_current_rows_then_carries_each_change_under_its_domain_event() {
    let app = spawn_app().await;
    signal(&app, "alice", "before");
    let order = place(&app, "alice", "before-1", "BTCUSDT").await;
    let head = app.head("alice").await;

    let mut s = sse(&app, "alice", &[("topics", "orders,signals")]).await;
    let snap = s.snapshot().await;
    assert_eq!(snap["position"], json!({"epoch": app.epoch(), "seq": head}));
    let orders = snap["rows"]["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0]["id"], order["id"]);
    let signals = snap["rows"]["signals"].as_array().unwrap();
    assert_eq!(signals.len(), 1);
    assert_eq!(signals[0]["reason"], "before");

    signal(&app, "alice", "after");
    let (ev, data) = s.change().await;
    assert_eq!(ev.event, "signal.generated");
    assert_eq!(ev.id, Some(format!("{}:{}", app.epoch(), head + 1)));
    assert_eq!(data["topic"], "signals");
    assert_eq!(data["change"], "insert");
    assert_eq!(data["events"], json!(["signal.generated"]));
    assert_eq!(data["row"]["reason"], "after");
    assert!(data.get("old").is_none(), "an insert has no old row");

    let order = place(&app, "alice", "after-1", "BTCUSDT").await;
    let (ev, data) = s.change().await;
    assert_eq!(ev.event, "order.accepted");
    assert_eq!(ev.id, Some(format!("{}:{}", app.epoch(), head + 2)));
    assert_eq!(data["row"]["id"], order["id"]);
    assert_eq!(data["row"]["status"], "new");

    // A change without a domain event is named by its change; text with line breaks stays
    // inside one data line.
    signal(&app, "alice", "two\nlines\r\n: not a comment");
    let (_, data) = s.change().await;
    assert_eq!(data["row"]["reason"], "two\nlines\r\n: not a comment");
    app.sql().execute("DELETE FROM signals WHERE reason = 'after'", &[]).unwrap();
    let (ev, data) = s.change().await;
    assert_eq!(ev.event, "delete");
    assert_eq!(data["events"], json!([]));
    assert_eq!(data["old"]["reason"], "after");
    assert!(data.get("row").is_none(), "a delete has no row");
}

#[derive(Clone, Copy)]
enum Resume {
    Header,
    FromParam,
}

/// Read some changes, drop the stream, let `missed` more happen, resume from the last id:
/// exactly the missed changes arrive, in order, then live ones.
async fn resume_replays_exactly_the_missed_changes(how: Resume) {
    let app = spawn_app().await;
    let mut s = sse(&app, "alice", &[("topics", "*")]).await;
    s.snapshot().await;
    for i in 0..3 {
        signal(&app, "alice", &format!("seen {i}"));
    }
    let mut last = None;
    for i in 0..3 {
        let (ev, data) = s.change().await;
        assert_eq!(data["row"]["reason"], format!("seen {i}"));
        last = ev.id;
    }
    let last = last.unwrap();
    assert_eq!(s.last_id.as_deref(), Some(last.as_str()));
    let last_seq: u64 = last.rsplit_once(':').unwrap().1.parse().unwrap();
    drop(s);

    // More than the server reads from the log at once, in one transaction.
    let missed = 1100;
    let mut c = app.sql();
    c.batch("BEGIN").unwrap();
    for i in 0..missed {
        insert_signal(&mut c, "alice", &format!("missed {i}"));
        insert_signal(&mut c, "bob", "not alice's");
    }
    c.batch("COMMIT").unwrap();

    let mut s = match how {
        Resume::Header => resume_with_header(&app, "alice", &[("topics", "*")], &last).await,
        Resume::FromParam => sse(&app, "alice", &[("topics", "*"), ("from", &last)]).await,
    };
    for i in 0..missed {
        let (_, data) = s.change().await;
        assert_eq!(data["seq"], last_seq + 1 + i, "replay is contiguous and in order");
        assert_eq!(data["row"]["reason"], format!("missed {i}"));
        assert_eq!(data["row"]["user_id"], "u_alice");
    }
    signal(&app, "alice", "live");
    let (ev, data) = s.change().await;
    assert_eq!(
        data["seq"],
        last_seq + missed + 1,
        "after the replay, live changes follow without a duplicate"
    );
    assert_eq!(data["row"]["reason"], "live");
    assert_eq!(ev.id, Some(format!("{}:{}", app.epoch(), last_seq + missed + 1)));
}

#[tokio::test]
async fn last_event_id_resumes_with_exactly_the_missed_changes_then_live() {
    resume_replays_exactly_the_missed_changes(Resume::Header).await;
}

#[tokio::test]
async fn the_from_parameter_resumes_like_last_event_id() {
    resume_replays_exactly_the_missed_changes(Resume::FromParam).await;
}

#[tokio::test]
async fn a_resumed_stream_does_not_start_with_a_snapshot() {
    let app = spawn_app().await;
    let head = app.head("alice").await;
    let mut s =
        resume_with_header(&app, "alice", &[("topics", "*")], &format!("{}:{head}", app.epoch())).await;
    signal(&app, "alice", "live");
    // `change()` fails on a snapshot event.
    let (_, data) = s.change().await;
    assert_eq!(data["seq"], head + 1);
}

/// The first meaningful event of a stream that cannot be served, and then the end of it.
async fn expect_resync(mut s: SseStream) -> String {
    let ev = s.next().await;
    assert_eq!(ev.event, "resync_required", "got {ev:?}");
    let data = ev.json();
    assert_eq!(data["op"], "resync_required");
    let reason = data["reason"].as_str().unwrap().to_owned();
    // The stream has nothing more to say: the server ends it.
    while let Some(ev) = s.next_any().await {
        assert!(!ev.is_change() && ev.event != "snapshot", "nothing follows resync_required: {ev:?}");
    }
    reason
}

#[tokio::test]
async fn a_position_that_cannot_be_served_gets_resync_required() {
    let app = spawn_app().await;
    app.insert_signals("alice", 10, "old");
    let p = [("topics", "*")];

    let s = resume_with_header(&app, "alice", &p, "e_other:3").await;
    assert_eq!(expect_resync(s).await, "epoch_changed");

    let ahead = format!("{}:{}", app.epoch(), app.head("alice").await + 100);
    let s = sse(&app, "alice", &[("topics", "*"), ("from", &ahead)]).await;
    assert_eq!(expect_resync(s).await, "position_ahead");

    let pruned =
        tradewire_server::changefeed::ChangeLog::prune_sync(&mut app.sql(), i64::MAX, 1_000_000).unwrap();
    assert!(pruned >= 10);
    let s = resume_with_header(&app, "alice", &p, &format!("{}:3", app.epoch())).await;
    assert_eq!(expect_resync(s).await, "history_expired");
}

#[tokio::test]
async fn alice_never_receives_bobs_rows_over_sse() {
    let app = spawn_app().await;
    let streams = [
        vec![("topics", "*")],
        vec![("topics", "*"), ("where", r#"{"user_id":"u_bob"}"#)],
        vec![("topics", "orders,signals,bots"), ("where", r#"{"user_id":{"in":["u_bob","u_alice"]}}"#)],
    ];
    let mut clients = Vec::new();
    for params in &streams {
        let mut s = sse(&app, "alice", params).await;
        let snap = s.snapshot().await;
        for (topic, rows) in snap["rows"].as_object().unwrap() {
            for r in rows.as_array().unwrap() {
                assert_eq!(r["user_id"], "u_alice", "{topic}: a row of bob's leaked into the snapshot: {r}");
            }
        }
        clients.push(s);
    }

    // Bob writes through the API and through a second connection.
    place(&app, "bob", "bob-1", "BTCUSDT").await;
    let r =
        app.post("bob", "/v1/bots", json!({"name": "Bob's", "strategy": "grid", "symbol": "ETHUSDT"})).await;
    assert_eq!(r.status(), 201);
    app.insert_signals("bob", 20, "secret");
    app.sql().execute("UPDATE portfolios SET balance = '1' WHERE user_id = 'u_bob'", &[]).unwrap();

    // The fence: alice's own write after all of bob's.
    signal(&app, "alice", "fence");
    let fence = app.head("alice").await;
    for (i, s) in clients.iter_mut().enumerate() {
        let changes = s.read_to(fence).await;
        for c in &changes {
            for part in ["row", "old"] {
                if let Some(r) = c.get(part) {
                    assert_eq!(r["user_id"], "u_alice", "stream {i}: a row of bob's leaked: {c}");
                }
            }
        }
        if i == 1 {
            assert!(
                changes.is_empty(),
                "alice's rows never match user_id = u_bob; bob's are never hers: {changes:?}"
            );
        } else {
            assert_eq!(changes.last().unwrap()["row"]["reason"], "fence", "stream {i} is live");
        }
    }
}

#[tokio::test]
async fn the_token_may_come_in_the_query_string() {
    let app = spawn_app().await;
    let token = app.token("alice");
    let mut s = SseStream::open(sse_req(&app, &[("topics", "orders"), ("token", &token)])).await;
    s.snapshot().await;
    place(&app, "alice", "q-1", "BTCUSDT").await;
    let (_, data) = s.change().await;
    assert_eq!(data["row"]["user_id"], "u_alice");
}

async fn expect_error(resp: reqwest::Response, status: u16, code: &str) {
    assert_eq!(resp.status(), status);
    let ct = resp.headers()[reqwest::header::CONTENT_TYPE].to_str().unwrap().to_owned();
    assert!(ct.starts_with("application/json"), "errors are JSON, got {ct}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

#[tokio::test]
async fn bad_sse_requests_get_json_errors() {
    let app = spawn_app().await;
    let send = |req: reqwest::RequestBuilder| async move {
        tokio::time::timeout(DEADLINE, req.send()).await.unwrap().unwrap()
    };

    expect_error(send(sse_req(&app, &[("topics", "*")])).await, 401, "unauthorized").await;
    expect_error(send(sse_req(&app, &[("topics", "*"), ("token", "not-a-jwt")])).await, 401, "unauthorized")
        .await;
    expect_error(send(sse_req(&app, &[("topics", "*")]).bearer_auth("not-a-jwt")).await, 401, "unauthorized")
        .await;

    let alice = app.token("alice");
    let authed = |params: &[(&str, &str)]| sse_req(&app, params).bearer_auth(&alice);
    expect_error(send(authed(&[("topics", "nope")])).await, 400, "invalid_topic").await;
    expect_error(send(authed(&[("topics", "orders,nope")])).await, 400, "invalid_topic").await;
    expect_error(send(authed(&[("topics", "orders"), ("where", "{not json")])).await, 400, "invalid_filter")
        .await;
    expect_error(send(authed(&[("topics", "orders"), ("where", "[1,2]")])).await, 400, "invalid_filter")
        .await;
    expect_error(
        send(authed(&[("topics", "orders"), ("where", r#"{"no_such_column":1}"#)])).await,
        400,
        "invalid_filter",
    )
    .await;
    expect_error(
        send(authed(&[("topics", "orders")]).header("Last-Event-ID", "garbage")).await,
        400,
        "bad_request",
    )
    .await;
}

#[tokio::test]
async fn a_where_filter_carries_only_matching_rows_and_heartbeats_advance_the_resume_point() {
    let app = spawn_app().await;
    let eth_before = place(&app, "alice", "eth-0", "ETHUSDT").await;
    place(&app, "alice", "btc-0", "BTCUSDT").await;
    let p = [("topics", "orders"), ("where", r#"{"symbol":"ETHUSDT"}"#)];

    let mut s = sse(&app, "alice", &p).await;
    let snap = s.snapshot().await;
    let rows = snap["rows"]["orders"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["id"], eth_before["id"]);

    place(&app, "alice", "btc-1", "BTCUSDT").await;
    let eth = place(&app, "alice", "eth-1", "ETHUSDT").await;
    place(&app, "alice", "btc-2", "BTCUSDT").await;
    signal(&app, "alice", "not an order");
    let eth_fence = place(&app, "alice", "eth-2", "ETHUSDT").await;
    let (_, data) = s.change().await;
    assert_eq!(data["row"]["id"], eth["id"], "the BTC order before it is filtered out");
    let (_, data) = s.change().await;
    assert_eq!(data["row"]["id"], eth_fence["id"], "non-matching changes in between are filtered out");

    // The stream ends on changes the filter drops; heartbeats carry the head as their id.
    place(&app, "alice", "btc-3", "BTCUSDT").await;
    signal(&app, "alice", "tail");
    let head = app.head("alice").await;
    let deadline = tokio::time::Instant::now() + crate::helpers::DEADLINE;
    let hb = loop {
        assert!(tokio::time::Instant::now() < deadline, "no heartbeat at the head {head} in time");
        let ev = s.next_any().await.expect("the stream stays open");
        assert!(!ev.is_change(), "only ETHUSDT orders match: {ev:?}");
        if ev.event == "heartbeat" && ev.id_seq() >= head {
            break ev;
        }
    };
    assert_eq!(hb.id, Some(format!("{}:{head}", app.epoch())), "the heartbeat id is the stream head");
    assert_eq!(hb.json()["position"], json!({"epoch": app.epoch(), "seq": head}));
    assert_eq!(s.last_id, hb.id, "an EventSource's Last-Event-ID has moved past the filtered changes");
    drop(s);

    // Resuming from there replays nothing that was already accounted for.
    let mut s = resume_with_header(&app, "alice", &p, hb.id.as_deref().unwrap()).await;
    place(&app, "alice", "btc-4", "BTCUSDT").await;
    let eth_live = place(&app, "alice", "eth-3", "ETHUSDT").await;
    let (_, data) = s.change().await;
    assert_eq!(data["row"]["id"], eth_live["id"]);
    assert_eq!(data["seq"], head + 2);
}
