//! The pump: one loop for every capture backend. It waits for commits, reads what its
//! [`Source`] says is committed, publishes it to the hub in order, and keeps the log within
//! its retention window.
//!
//! What the backends share lives here, once:
//! - **cadence**: a source wakes the loop when it can tell (an in-process commit, a NOTIFY,
//!   a replication message) and otherwise after the poll interval; every millisecond while
//!   changes flow or some are held back, every `poll_interval` once the log has been quiet
//!   for a second;
//! - **retry**: any failure is counted, logged, and retried after a backoff (100 ms doubling
//!   to 5 s, back to 100 ms after 10 s of health); the source keeps its position across
//!   reconnects, so nothing is skipped or published twice;
//! - **pruning** of the log past retention, and the pump's metrics;
//! - **shutdown**: once `stop` is cancelled the loop reads and publishes what is committed,
//!   then returns.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tradewire_hub::{Change, Hub};

use super::{BUSY_FOR, BUSY_POLL, CaptureError, Result};
use crate::changefeed::ChangeLog;
use crate::clock::now_ms;
use crate::db::Db;

/// How the pump runs.
#[derive(Debug, Clone, Copy)]
pub struct PumpSettings {
    /// How often to look for commits by other processes when the log is quiet.
    pub poll_interval: Duration,
    /// How long changes stay replayable.
    pub retention: Duration,
    pub prune_every: Duration,
    /// Changes read per round; a full round is followed by another at once.
    pub batch: usize,
}

/// What the pump reports of itself: the lag of its last published change, and when.
#[derive(Debug, Default)]
pub struct PumpStatus {
    lag_ms: AtomicU64,
    published_at_ms: AtomicI64,
}

impl PumpStatus {
    /// A change committed at `commit_ts` was published now.
    pub fn published(&self, commit_ts: i64) {
        let now = now_ms();
        self.lag_ms.store((now - commit_ts).max(0) as u64, Ordering::Relaxed);
        self.published_at_ms.store(now, Ordering::Relaxed);
    }

    pub fn lag_ms(&self) -> u64 {
        self.lag_ms.load(Ordering::Relaxed)
    }

    /// When a change was last published (0: none yet).
    pub fn published_at_ms(&self) -> i64 {
        self.published_at_ms.load(Ordering::Relaxed)
    }
}

/// Most log rows pruned in one round.
const PRUNE_BATCH: i64 = 10_000;
/// While a round removes a full batch (the log is behind its retention), the next comes
/// this soon instead of after `prune_every`: up to 100,000 rows a second, above any ingest
/// the pump can capture, in short deletes that leave writers room in between.
const PRUNE_CATCH_UP: Duration = Duration::from_millis(100);

/// One capture backend's reader of committed changes.
pub trait Source: Send {
    /// (Re)open what reading needs. Called before the first read and after every failure;
    /// the source keeps its position across calls.
    fn connect(&mut self) -> impl Future<Output = Result<()>> + Send;

    /// Return once changes may be ready: at the latest after about `poll`, sooner when the
    /// backend signals a commit. Must be cancel-safe (the loop races it with shutdown).
    fn wait(&mut self, poll: Duration) -> impl Future<Output = Result<()>> + Send;

    /// The committed changes not returned yet, in publishing order: each user's `seq`
    /// ascending without gaps. About `max` of them; fewer means the source is drained.
    fn read(&mut self, max: usize) -> impl Future<Output = Result<Vec<Change>>> + Send;

    /// Everything the last `read` returned has been published.
    fn published(&mut self) {}

    /// Changes are held back waiting for an earlier one: poll fast.
    fn holding(&self) -> bool {
        false
    }

    /// The pump is stopping: release what the source holds.
    fn close(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Retry delays after failures.
struct Backoff {
    next: Duration,
    healthy_since: Instant,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);
    /// Health that resets the delay to [`Backoff::FIRST`].
    const RESET_AFTER: Duration = Duration::from_secs(10);

    fn new() -> Self {
        Self { next: Self::FIRST, healthy_since: Instant::now() }
    }

    /// The delay before the next attempt after a failure now.
    fn failed(&mut self) -> Duration {
        if self.healthy_since.elapsed() > Self::RESET_AFTER {
            self.next = Self::FIRST;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }

    fn connected(&mut self) {
        self.healthy_since = Instant::now();
    }
}

/// Run `source` until `stop` is cancelled; then publish what is committed and return.
pub async fn run<S: Source>(
    mut source: S,
    db: &Db,
    hub: &Hub,
    settings: &PumpSettings,
    stop: &CancellationToken,
    status: &PumpStatus,
) {
    let mut backoff = Backoff::new();
    let mut pruning = Pruning { last: Instant::now() - settings.prune_every, behind: false };
    let lag = metrics::histogram!("tradewire_pump_lag_seconds");
    let captured = metrics::counter!("tradewire_changes_captured_total");
    'connect: loop {
        if let Err(e) = source.connect().await {
            let delay = failed(&e, &mut backoff);
            if retry_after(delay, stop).await {
                continue;
            }
            break;
        }
        backoff.connected();
        let mut last_change = Instant::now() - BUSY_FOR;
        loop {
            let poll = if last_change.elapsed() < BUSY_FOR || source.holding() {
                BUSY_POLL.min(settings.poll_interval)
            } else {
                settings.poll_interval
            };
            let stopping = tokio::select! {
                r = source.wait(poll) => match r {
                    Ok(()) => false,
                    Err(e) => {
                        let delay = failed(&e, &mut backoff);
                        if retry_after(delay, stop).await {
                            continue 'connect;
                        }
                        true
                    }
                },
                () = stop.cancelled() => true,
            };
            // Drain: keep reading while full rounds come back.
            loop {
                let changes = match source.read(settings.batch).await {
                    Ok(changes) => changes,
                    Err(e) => {
                        let delay = failed(&e, &mut backoff);
                        if !stopping && retry_after(delay, stop).await {
                            continue 'connect;
                        }
                        break 'connect;
                    }
                };
                let n = changes.len();
                publish(hub, changes, settings.batch, &lag, status).await;
                source.published();
                if n > 0 {
                    last_change = Instant::now();
                    captured.increment(n as u64);
                    tracing::trace!(n, "published");
                }
                if n < settings.batch {
                    break;
                }
            }
            if stopping {
                break 'connect;
            }
            prune_if_due(db, settings, &mut pruning).await;
        }
    }
    source.close().await;
    tracing::info!("pump drained and stopped");
}

/// Count and log a failure; the delay before retrying.
fn failed(e: &CaptureError, backoff: &mut Backoff) -> Duration {
    let delay = backoff.failed();
    metrics::counter!("tradewire_pump_errors_total").increment(1);
    tracing::warn!(error = %e, retry_in = ?delay, "capture failed; retrying (nothing is skipped)");
    delay
}

/// Wait `delay` unless `stop` comes first; `true` to retry.
async fn retry_after(delay: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        () = stop.cancelled() => false,
    }
}

/// Publish changes in order, recording the pump lag. A large round is published in runs of
/// `run`, letting sessions work in between, so a session that is replaying drains its
/// queue instead of overflowing it.
async fn publish(hub: &Hub, changes: Vec<Change>, run: usize, lag: &metrics::Histogram, status: &PumpStatus) {
    let now = now_ms();
    for (i, change) in changes.into_iter().enumerate() {
        if i > 0 && i % run.max(1) == 0 {
            tokio::task::yield_now().await;
        }
        lag.record((now - change.commit_ts).max(0) as f64 / 1000.0);
        status.published(change.commit_ts);
        hub.publish(Arc::new(change));
    }
}

/// When the log was last pruned, and whether that round found it behind.
struct Pruning {
    last: Instant,
    behind: bool,
}

/// Drop log rows past the retention window when due: every `prune_every`, or every
/// [`PRUNE_CATCH_UP`] while the last round removed a full batch.
async fn prune_if_due(db: &Db, settings: &PumpSettings, pruning: &mut Pruning) {
    let every = if pruning.behind { PRUNE_CATCH_UP.min(settings.prune_every) } else { settings.prune_every };
    if pruning.last.elapsed() < every {
        return;
    }
    pruning.last = Instant::now();
    let cutoff = now_ms() - settings.retention.as_millis() as i64;
    match db.read(move |c| ChangeLog::prune_sync(c, cutoff, PRUNE_BATCH)).await {
        Ok(n) => {
            pruning.behind = n >= PRUNE_BATCH as u64;
            if n > 0 {
                metrics::counter!("tradewire_log_pruned_total").increment(n);
                tracing::debug!(n, behind = pruning.behind, "pruned change log past retention");
            }
        }
        Err(e) => tracing::warn!(error = %e, "pruning the change log failed; will retry"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets_after_health() {
        let mut b = Backoff::new();
        let delays: Vec<u64> = (0..8).map(|_| b.failed().as_millis() as u64).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        b.healthy_since = Instant::now() - Backoff::RESET_AFTER - Duration::from_secs(1);
        assert_eq!(b.failed(), Backoff::FIRST);
    }
}
