//! The registry of live sessions by user, and the publish path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use crate::queue::{QueueLimits, QueueReceiver, QueueSender, queue};
use crate::{Change, Overflow};

/// Routes each change to the queues of its owner's sessions. Cloning is cheap; all clones
/// share one registry.
#[derive(Debug, Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    limits: QueueLimits,
    users: RwLock<HashMap<Arc<str>, Vec<SessionEntry>>>,
    next_session: AtomicU64,
    stats: Counters,
}

/// A registered session: its id and the publishing end of its queue.
type SessionEntry = (u64, QueueSender);

#[derive(Debug, Default)]
struct Counters {
    sessions: AtomicUsize,
    published: AtomicU64,
    enqueued: AtomicU64,
    overflows: AtomicU64,
    peak_queue_bytes: AtomicUsize,
}

/// A point-in-time copy of the hub's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HubStats {
    pub sessions: usize,
    pub published: u64,
    pub enqueued: u64,
    pub overflows: u64,
    /// The most bytes any session queue has held at once.
    pub peak_queue_bytes: usize,
}

/// A session's place in the hub; dropping it unregisters the session.
#[derive(Debug)]
pub struct Registration {
    hub: Hub,
    user_id: Arc<str>,
    session: u64,
}

impl Registration {
    pub fn session_id(&self) -> u64 {
        self.session
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let inner = &self.hub.inner;
        let mut users = inner.users.write().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = users.get_mut(&self.user_id) {
            list.retain(|(id, _)| *id != self.session);
            if list.is_empty() {
                users.remove(&self.user_id);
            }
        }
        inner.stats.sessions.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("tradewire_sessions").decrement(1.0);
    }
}

impl Hub {
    pub fn new(limits: QueueLimits) -> Self {
        Self {
            inner: Arc::new(Inner {
                limits,
                users: RwLock::default(),
                next_session: AtomicU64::new(1),
                stats: Counters::default(),
            }),
        }
    }

    pub fn limits(&self) -> QueueLimits {
        self.inner.limits
    }

    /// Register a session of `user_id`. From now on every change of that user published
    /// to the hub lands in the returned queue, until the registration is dropped.
    pub fn register(&self, user_id: &str) -> (Registration, QueueReceiver) {
        let (tx, rx) = queue(self.inner.limits);
        let session = self.inner.next_session.fetch_add(1, Ordering::Relaxed);
        let user_id: Arc<str> = Arc::from(user_id);
        self.inner
            .users
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(user_id.clone())
            .or_default()
            .push((session, tx));
        self.inner.stats.sessions.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("tradewire_sessions").increment(1.0);
        let reg = Registration { hub: self.clone(), user_id, session };
        (reg, rx)
    }

    /// Hand `change` to every session of its owner. Never blocks: a session whose queue
    /// is full is marked overflowed (it will close with 4008) and the others go on.
    pub fn publish(&self, change: Arc<Change>) {
        let stats = &self.inner.stats;
        stats.published.fetch_add(1, Ordering::Relaxed);
        let users = self.inner.users.read().unwrap_or_else(|p| p.into_inner());
        let Some(sessions) = users.get(&change.user_id) else {
            return;
        };
        for (_, tx) in sessions {
            match tx.push(change.clone()) {
                Ok(()) => {
                    stats.enqueued.fetch_add(1, Ordering::Relaxed);
                }
                Err(Overflow::Messages | Overflow::Bytes) => {
                    stats.overflows.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("tradewire_queue_overflows_total").increment(1);
                }
                Err(Overflow::AlreadyOverflowed | Overflow::Closed) => {}
            }
        }
    }

    /// Cut every session off (each closes with 4008 and its client resumes from its last
    /// position, reading what it missed from the log). For when the live stream may have
    /// lost changes: the capture pump was restarted after a failure.
    pub fn cut_off_all(&self) {
        let users = self.inner.users.read().unwrap_or_else(|p| p.into_inner());
        for (_, tx) in users.values().flatten() {
            tx.cut_off();
        }
    }

    /// Record a queue's peak (sessions report theirs as they end).
    pub fn record_peak(&self, bytes: usize) {
        self.inner.stats.peak_queue_bytes.fetch_max(bytes, Ordering::Relaxed);
    }

    pub fn stats(&self) -> HubStats {
        let s = &self.inner.stats;
        HubStats {
            sessions: s.sessions.load(Ordering::Relaxed),
            published: s.published.load(Ordering::Relaxed),
            enqueued: s.enqueued.load(Ordering::Relaxed),
            overflows: s.overflows.load(Ordering::Relaxed),
            peak_queue_bytes: s.peak_queue_bytes.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use tradewire_protocol::ChangeOp;

    use super::*;

    fn change(user: &str, seq: u64) -> Arc<Change> {
        Arc::new(Change::new(
            user.into(),
            "e1".into(),
            seq,
            "orders".into(),
            ChangeOp::Insert,
            vec![],
            0,
            None,
            None,
        ))
    }

    #[tokio::test]
    async fn a_full_queue_overflows_that_session_only() {
        let hub = Hub::new(QueueLimits { max_messages: 3, max_bytes: 1 << 20 });
        let (_slow_reg, slow) = hub.register("alice");
        let (_fast_reg, mut fast) = hub.register("alice");
        let (_bob_reg, mut bob) = hub.register("bob");
        for seq in 1..=10 {
            hub.publish(change("alice", seq));
            assert_eq!(fast.recv().await.unwrap().seq, seq, "the fast session keeps up");
        }
        assert!(slow.is_overflowed(), "the session that never read overflowed");
        assert!(slow.queued_bytes() <= slow.limits().max_bytes);
        assert_eq!(hub.stats().overflows, 1, "an overflow is counted once per session");
        assert!(bob.try_recv().is_none(), "bob never sees alice's changes");
    }

    #[test]
    fn the_byte_bound_holds_too() {
        let one = change("alice", 1).weight();
        let hub = Hub::new(QueueLimits { max_messages: 100, max_bytes: one * 2 });
        let (_reg, rx) = hub.register("alice");
        for seq in 1..=3 {
            hub.publish(change("alice", seq));
        }
        assert!(rx.is_overflowed());
        assert_eq!(rx.queued_bytes(), one * 2);
    }

    #[test]
    fn dropping_a_registration_unregisters() {
        let hub = Hub::new(QueueLimits::default());
        let (reg, _rx) = hub.register("alice");
        assert_eq!(hub.stats().sessions, 1);
        drop(reg);
        assert_eq!(hub.stats().sessions, 0);
        hub.publish(change("alice", 1));
        assert_eq!(hub.stats().enqueued, 0);
    }
}
