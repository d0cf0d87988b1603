//! The pump: reads new rows of the change log in commit order and publishes them to the
//! hub. An in-process commit wakes it at once; a commit by another process is seen at the
//! next poll: every millisecond while changes are flowing, every `poll_interval` (5 ms)
//! once the log has been quiet for a second. It also prunes the log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tradewire_hub::Hub;

use super::ChangeLog;
use crate::db::sql::{Lite, Sql};
use crate::db::{Capture, Db, Result, now_ms};

/// The poll interval while changes are flowing.
const BUSY_POLL: Duration = Duration::from_millis(1);
/// How long after the last change the pump keeps polling at [`BUSY_POLL`].
const BUSY_FOR: Duration = Duration::from_secs(1);

/// How the pump runs.
#[derive(Debug, Clone, Copy)]
pub struct PumpSettings {
    pub poll_interval: Duration,
    pub retention: Duration,
    pub prune_every: Duration,
    pub batch: usize,
}

/// Where the pump starts publishing. It is fixed before the server accepts its first
/// connection: a session registers with the hub and then reads the database, so every
/// change committed after that read must come from the pump. A starting point taken later
/// (when the pump's task first runs, or after its first connection failed) would leave
/// the changes committed in between to no one.
pub enum Start {
    /// The newest change-log id: later rows are published.
    Sqlite { last_id: i64 },
    /// The first fence and every user's counter (see `outbox`).
    Outbox(super::outbox::Cursor),
    /// Logical capture starts from its slot's persisted position, which is durable.
    Logical,
}

/// Fix the pump's starting point (see [`Start`]).
pub async fn start(db: &Db) -> Result<Start> {
    Ok(match db.capture() {
        Capture::SqliteTriggers => Start::Sqlite { last_id: db.read(ChangeLog::last_id_sync).await? },
        Capture::Outbox => Start::Outbox(super::outbox::Cursor::start(db).await?),
        Capture::Logical { .. } => Start::Logical,
    })
}

/// Run the changefeed of the database's capture mode from `start` until `stop` is
/// cancelled; then publish what is already committed and return (the "let the pump finish
/// its batch" step of shutdown).
pub async fn run(
    start: Start,
    db: Db,
    hub: Hub,
    settings: PumpSettings,
    stop: CancellationToken,
) -> Result<()> {
    match start {
        Start::Sqlite { last_id } => run_sqlite(last_id, db, hub, settings, stop).await,
        Start::Outbox(cursor) => super::outbox::run(cursor, db, hub, settings, stop).await,
        Start::Logical => super::logical::run(db, hub, settings, stop).await,
    }
}

/// Publish one change, recording the pump lag.
pub(crate) fn publish(hub: &Hub, change: tradewire_hub::Change, now: i64) {
    metrics::histogram!("tradewire_pump_lag_seconds").record((now - change.commit_ts).max(0) as f64 / 1000.0);
    hub.publish(Arc::new(change));
}

/// Drop log rows past the retention window (at most 50,000 a round), logging the outcome.
pub(crate) fn prune(conn: &mut dyn Sql, settings: &PumpSettings) {
    let cutoff = now_ms() - settings.retention.as_millis() as i64;
    match ChangeLog::prune_sync(conn, cutoff, 50_000) {
        Ok(0) => {}
        Ok(n) => tracing::info!(n, "pruned change log past retention"),
        Err(e) => tracing::warn!(error = %e, "pruning the change log failed; will retry"),
    }
}

/// [`prune`] on a pooled connection when `prune_every` has passed since `last`.
pub(crate) async fn prune_if_due(db: &Db, settings: &PumpSettings, last: &mut Instant) {
    if last.elapsed() < settings.prune_every {
        return;
    }
    *last = Instant::now();
    let settings = *settings;
    let pruned = db
        .read(move |c| {
            prune(c, &settings);
            Ok(())
        })
        .await;
    if let Err(e) = pruned {
        tracing::warn!(error = %e, "pruning the change log failed; will retry");
    }
}

async fn run_sqlite(
    mut cursor: i64,
    db: Db,
    hub: Hub,
    settings: PumpSettings,
    stop: CancellationToken,
) -> Result<()> {
    let conn = Arc::new(std::sync::Mutex::new(db.sqlite_connection()?));
    let epoch = db.epoch().clone();
    tracing::info!(cursor, "pump started");
    let mut last_prune = Instant::now() - settings.prune_every;
    let mut last_change = Instant::now() - BUSY_FOR;
    loop {
        let poll = if last_change.elapsed() < BUSY_FOR {
            BUSY_POLL.min(settings.poll_interval)
        } else {
            settings.poll_interval
        };
        let stopping = tokio::select! {
            () = db.wake().notified() => false,
            () = tokio::time::sleep(poll) => false,
            () = stop.cancelled() => true,
        };
        // Drain: keep reading while full batches come back.
        loop {
            let conn = conn.clone();
            let epoch = epoch.clone();
            let batch = settings.batch;
            let changes = tokio::task::spawn_blocking(move || {
                ChangeLog::read_global_sync(
                    &mut Lite(&conn.lock().unwrap_or_else(|p| p.into_inner())),
                    &epoch,
                    cursor,
                    batch,
                )
            })
            .await
            .map_err(|_| crate::db::DbError::Join)
            .and_then(|r| r);
            let changes = match changes {
                Ok(c) => c,
                Err(e) => {
                    // The cursor has not moved: nothing is skipped, the next round retries.
                    metrics::counter!("tradewire_pump_errors_total").increment(1);
                    tracing::warn!(error = %e, cursor, "reading the change log failed; retrying");
                    break;
                }
            };
            let n = changes.len();
            let now = now_ms();
            for (id, change) in changes {
                cursor = id;
                publish(&hub, change, now);
            }
            if n > 0 {
                last_change = Instant::now();
                metrics::counter!("tradewire_changes_captured_total").increment(n as u64);
                tracing::trace!(n, cursor, "published");
            }
            if n < settings.batch {
                break;
            }
        }
        if stopping {
            tracing::info!(cursor, "pump drained and stopped");
            return Ok(());
        }
        prune_if_due(&db, &settings, &mut last_prune).await;
    }
}
