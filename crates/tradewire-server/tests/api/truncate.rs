//! `TRUNCATE` of a captured table (PostgreSQL; SQLite has no TRUNCATE, and its
//! `DELETE FROM t` fires the row triggers like any delete): every stream gets a `truncate`
//! change in its place, and every subscription covering the table is told
//! `resync_required` (reason `truncated`) — live, on replay, over SSE and polling — while
//! subscriptions to other tables go on untouched.

use serde_json::{Value, json};
use tradewire_protocol::ServerFrame;

use crate::backend::{Backend, backend, shell};
use crate::helpers::{DEADLINE, spawn_app};

fn resync_reason(frame: ServerFrame, id: &str) -> String {
    match frame {
        ServerFrame::ResyncRequired { id: got, reason } => {
            assert_eq!(got, id);
            reason
        }
        other => panic!("expected resync_required for {id}, got {other:?}"),
    }
}

/// Read an SSE response until it ends; its text.
async fn sse_until_end(mut r: reqwest::Response) -> String {
    let mut text = String::new();
    let read = async {
        while let Some(chunk) = r.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(DEADLINE, read).await.expect("the stream ends after resync_required");
    text
}

#[tokio::test]
async fn truncating_a_captured_table_tells_every_covering_subscription_to_resync() {
    if backend() == Backend::Sqlite {
        return;
    }
    let app = spawn_app().await;
    app.insert_signals("alice", 2, "before");
    app.insert_signals("bob", 1, "before");
    app.settle().await;
    let before = app.head("alice").await;

    // Alice: one subscription to signals (filtered: a truncate concerns it all the same),
    // one to orders only; an SSE stream of signals. Bob: everything.
    let mut alice = app.ws("alice").await;
    alice
        .send_json(json!({"op": "subscribe", "id": "sig", "topics": ["signals"], "from": "snapshot",
                          "where": {"reason": "nothing matches this"}}))
        .await;
    assert!(matches!(alice.frame().await, ServerFrame::Subscribed { .. }));
    assert!(matches!(alice.frame().await, ServerFrame::Snapshot { .. }));
    let (orders_pos, _) = alice.subscribe_snapshot("ord", json!(["orders"])).await;
    let mut bob = app.ws("bob").await;
    bob.subscribe_snapshot("all", json!(["*"])).await;
    let sse = app
        .http
        .get(app.url("/v1/sse"))
        .query(&[("topics", "signals")])
        .bearer_auth(app.token("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);

    shell(&app.target(), "TRUNCATE signals");

    assert_eq!(resync_reason(alice.frame().await, "sig"), "truncated");
    assert_eq!(resync_reason(bob.frame().await, "all"), "truncated");
    let text = sse_until_end(sse).await;
    assert!(text.contains("event: resync_required") && text.contains("truncated"), "{text}");

    // The truncate took its place in each stream: one seq, no gap after it.
    let after = app.head("alice").await;
    assert_eq!(after, before + 1, "one truncate change in alice's stream");

    // Alice's orders subscription goes on, and sees the next change in order.
    let r = app.place_order("alice", "after-truncate").await;
    assert_eq!(r.status(), 201);
    let ev = alice.event().await;
    assert_eq!(ev.id.as_deref(), Some("ord"));
    assert!(ev.seq > orders_pos.seq.max(after));

    // A new snapshot is empty and live changes follow it contiguously.
    let (pos, rows) = alice.subscribe_snapshot("sig2", json!(["signals"])).await;
    assert!(rows.get("signals").is_none_or(|r| r.is_empty()), "{rows:?}");
    app.insert_signals("alice", 1, "after");
    let ev = alice.event().await;
    assert_eq!((ev.id.as_deref(), ev.seq), (Some("sig2"), pos.seq + 1));

    // Replaying across the truncate, and polling across it, ask for a resync too.
    let from = format!("{}:{before}", app.epoch());
    alice.send_json(json!({"op": "subscribe", "id": "old", "topics": ["signals"], "from": from})).await;
    assert!(matches!(alice.frame().await, ServerFrame::Subscribed { .. }));
    assert_eq!(resync_reason(alice.frame().await, "old"), "truncated");
    let polled = app
        .http
        .get(app.url("/v1/changes"))
        .query(&[("since", from.as_str()), ("topics", "signals")])
        .bearer_auth(app.token("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(polled.status(), 409);
    let body: Value = polled.json().await.unwrap();
    assert_eq!(body["error"]["code"], "resync_required", "{body}");
    assert!(body.to_string().contains("truncated"), "{body}");

    // Polling only orders across it is not disturbed.
    let polled = app
        .http
        .get(app.url("/v1/changes"))
        .query(&[("since", from.as_str()), ("topics", "orders")])
        .bearer_auth(app.token("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(polled.status(), 200);
}
