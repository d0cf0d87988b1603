//! A session's outbound queue: bounded in messages and in bytes, never blocking the
//! publisher. A push that would pass either bound trips the queue's overflow signal; the
//! session that owns the queue then closes with 4008 (slow consumer) and the client resumes
//! from its last position. Nothing is dropped silently: the overflow is the policy.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::Change;

/// The bounds of one session queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    pub max_messages: usize,
    pub max_bytes: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self { max_messages: 4096, max_bytes: 4 << 20 }
    }
}

/// Why a push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Overflow {
    #[error("queue full: message bound reached")]
    Messages,
    #[error("queue full: byte bound reached")]
    Bytes,
    #[error("queue already overflowed")]
    AlreadyOverflowed,
    #[error("session gone")]
    Closed,
}

#[derive(Debug)]
struct Shared {
    limits: QueueLimits,
    bytes: AtomicUsize,
    peak_bytes: AtomicUsize,
    overflow: CancellationToken,
}

/// Create a queue with the given bounds.
pub fn queue(limits: QueueLimits) -> (QueueSender, QueueReceiver) {
    let (tx, rx) = mpsc::channel(limits.max_messages.max(1));
    let shared = Arc::new(Shared {
        limits,
        bytes: AtomicUsize::new(0),
        peak_bytes: AtomicUsize::new(0),
        overflow: CancellationToken::new(),
    });
    (QueueSender { tx, shared: shared.clone() }, QueueReceiver { rx, shared })
}

/// The publishing end; cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct QueueSender {
    tx: mpsc::Sender<Arc<Change>>,
    shared: Arc<Shared>,
}

impl QueueSender {
    /// Cut the session off as if its queue had overflowed: it closes with 4008 and its
    /// client resumes from its last position.
    pub fn cut_off(&self) {
        self.shared.overflow.cancel();
    }

    pub fn push(&self, change: Arc<Change>) -> Result<(), Overflow> {
        let s = &self.shared;
        if s.overflow.is_cancelled() {
            return Err(Overflow::AlreadyOverflowed);
        }
        let weight = change.weight();
        let queued = s.bytes.fetch_add(weight, Ordering::AcqRel) + weight;
        if queued > s.limits.max_bytes {
            s.bytes.fetch_sub(weight, Ordering::AcqRel);
            s.overflow.cancel();
            return Err(Overflow::Bytes);
        }
        match self.tx.try_send(change) {
            Ok(()) => {
                s.peak_bytes.fetch_max(queued, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                s.bytes.fetch_sub(weight, Ordering::AcqRel);
                match e {
                    mpsc::error::TrySendError::Full(_) => {
                        s.overflow.cancel();
                        Err(Overflow::Messages)
                    }
                    mpsc::error::TrySendError::Closed(_) => Err(Overflow::Closed),
                }
            }
        }
    }
}

/// The session's end.
#[derive(Debug)]
pub struct QueueReceiver {
    rx: mpsc::Receiver<Arc<Change>>,
    shared: Arc<Shared>,
}

impl QueueReceiver {
    /// The next queued change. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Arc<Change>> {
        let change = self.rx.recv().await?;
        self.shared.bytes.fetch_sub(change.weight(), Ordering::AcqRel);
        Some(change)
    }

    /// The next queued change, if one is waiting.
    pub fn try_recv(&mut self) -> Option<Arc<Change>> {
        let change = self.rx.try_recv().ok()?;
        self.shared.bytes.fetch_sub(change.weight(), Ordering::AcqRel);
        Some(change)
    }

    /// Resolves when a push has overflowed this queue.
    pub fn overflowed(&self) -> WaitForCancellationFutureOwned {
        self.shared.overflow.clone().cancelled_owned()
    }

    pub fn is_overflowed(&self) -> bool {
        self.shared.overflow.is_cancelled()
    }

    /// Bytes queued now.
    pub fn queued_bytes(&self) -> usize {
        self.shared.bytes.load(Ordering::Acquire)
    }

    /// The most bytes this queue has held at once.
    pub fn peak_bytes(&self) -> usize {
        self.shared.peak_bytes.load(Ordering::Relaxed)
    }

    pub fn limits(&self) -> QueueLimits {
        self.shared.limits
    }
}
