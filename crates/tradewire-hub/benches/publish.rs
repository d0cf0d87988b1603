//! Hub publish to N sessions of one user, and to one session among N users: the cost of
//! the fan-out step itself (no sockets). `cargo bench -p tradewire-hub`.

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use tradewire_hub::{Change, Hub, QueueLimits};
use tradewire_protocol::ChangeOp;

fn change(user: &str, seq: u64) -> Arc<Change> {
    let row =
        json!({"id": "ord_1", "user_id": user, "symbol": "BTCUSDT", "status": "new", "price": "27000.50"});
    Arc::new(Change::new(
        user.into(),
        "e1".into(),
        seq,
        "orders".into(),
        ChangeOp::Insert,
        vec!["order.accepted"],
        0,
        row.as_object().cloned(),
        None,
    ))
}

fn publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("hub_publish");
    for sessions in [1usize, 10, 100] {
        let hub = Hub::new(QueueLimits { max_messages: 1 << 20, max_bytes: 1 << 30 });
        let mut receivers: Vec<_> = (0..sessions).map(|_| hub.register("alice")).collect();
        let ch = change("alice", 1);
        group.throughput(Throughput::Elements(sessions as u64));
        group.bench_with_input(BenchmarkId::new("sessions_of_one_user", sessions), &sessions, |b, _| {
            b.iter(|| {
                hub.publish(ch.clone());
                for (_, rx) in receivers.iter_mut() {
                    let _ = rx.try_recv();
                }
            })
        });
    }
    // Many users connected, one change: routing cost must not grow with the user count.
    for users in [100usize, 10_000] {
        let hub = Hub::new(QueueLimits::default());
        let mut receivers: Vec<_> = (0..users).map(|i| hub.register(&format!("u{i}"))).collect();
        let ch = change("u0", 1);
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::new("one_session_among_users", users), &users, |b, _| {
            b.iter(|| {
                hub.publish(ch.clone());
                let _ = receivers[0].1.try_recv();
            })
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    c.bench_function("change_encode_once", |b| b.iter(|| change("alice", 1)));
    let ch = change("alice", 1);
    c.bench_function("ws_frame_splice_id", |b| b.iter(|| ch.ws_frame("s1")));
}

criterion_group!(benches, publish, encode);
criterion_main!(benches);
