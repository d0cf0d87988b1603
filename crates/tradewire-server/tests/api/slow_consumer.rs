//! Slow consumers: a client that stops reading is closed with 4008 while its queue stays
//! within its bound; everyone else keeps getting changes promptly; the slow one resumes
//! without loss.

use std::time::{Duration, Instant};

use serde_json::json;
use tradewire_protocol::ServerFrame;

use crate::helpers::TestSql;
use crate::helpers::{Closed, Ws, eventually, insert_signal, spawn_app_with};
#[allow(unused_imports)]
use tradewire_server::db::Sql;

// Room for about 128 of the 8 KB rows: the healthy client of the same user may fall that far
// behind on a busy machine without being taken for a slow one.
const QUEUE_BYTES: usize = 1024 * 1024;
const ROUNDS: usize = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_and_others_are_unaffected() {
    let app = spawn_app_with(|c| {
        c.queue_max_messages = 256;
        c.queue_max_bytes = QUEUE_BYTES;
    })
    .await;

    // The slow client: a tiny receive buffer, and it stops reading after subscribing.
    let mut slow = Ws::connect_small_buffer(app.addr, &app.ws_url(), &app.token("alice")).await;
    assert!(matches!(slow.frame().await, ServerFrame::Welcome { .. }));
    let (start, _) = slow.subscribe_snapshot("s", json!(["*"])).await;

    // A healthy client of the same user, and one of another user.
    let mut fast = app.ws("alice").await;
    fast.subscribe_snapshot("s", json!(["signals"])).await;
    let mut bob = app.ws("bob").await;
    bob.subscribe_snapshot("s", json!(["signals"])).await;

    // Big rows fill the slow client's socket buffers and then its queue.
    let big = "x".repeat(8000);
    let writer = {
        let db = app.target();
        tokio::task::spawn_blocking(move || {
            let mut c = TestSql::open(&db);
            // Paced at about 1,000 rounds a second: a busy desk, not a benchmark.
            for _ in 0..ROUNDS {
                insert_signal(&mut c, "alice", &big);
                insert_signal(&mut c, "bob", "small");
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    // As soon as the slow session has overflowed, the slow client reads again (within the
    // server's close grace): it finds what was buffered, then 4008.
    let state = app.state.clone();
    let slow_reader = tokio::spawn(async move {
        eventually("the slow session overflows", || async {
            (state.hub().stats().overflows >= 1).then_some(())
        })
        .await;
        slow.drain_until_close().await
    });
    // Both healthy clients keep up while the slow one is stuck.
    let mut worst = Duration::ZERO;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        assert_eq!(fast.event().await.topic, "signals");
        assert_eq!(bob.event().await.topic, "signals");
        worst = worst.max(t.elapsed());
    }
    writer.await.unwrap();
    assert!(worst < Duration::from_secs(2), "a healthy client waited {worst:?} for one change");

    // The slow session is gone from the hub; its queue never passed the bound.
    let stats = eventually("the slow session is dropped", || async {
        let s = app.state.hub().stats();
        (s.overflows >= 1 && s.sessions == 2).then_some(s)
    })
    .await;
    assert!(stats.peak_queue_bytes <= QUEUE_BYTES, "queue peaked at {} bytes", stats.peak_queue_bytes);

    let (seen, closed) = slow_reader.await.unwrap();
    assert_eq!(closed, Closed::Code(4008));
    let mut last = start.seq;
    for ev in &seen {
        assert_eq!(ev.seq, last + 1, "what it did get is contiguous");
        last = ev.seq;
    }
    assert!(last < app.head("alice").await, "it really fell behind");

    // It resumes from its last position and loses nothing.
    let mut again = app.ws("alice").await;
    again
        .send_json(json!({"op": "subscribe", "id": "s", "topics": ["*"], "from": {"epoch": app.epoch(), "seq": last}}))
        .await;
    assert!(matches!(again.frame().await, ServerFrame::Subscribed { .. }));
    let head = app.head("alice").await;
    while last < head {
        let ev = again.event().await;
        assert_eq!(ev.seq, last + 1);
        last = ev.seq;
    }
}
