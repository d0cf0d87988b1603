//! The outbox pump (PostgreSQL without logical replication).
//!
//! Triggers write each change into `tw_changes` inside the writer's transaction, numbered
//! by the owner's counter row (see `db::capture`). Unlike SQLite, PostgreSQL runs writers
//! concurrently, so log ids are not commit order. The pump therefore reads by transaction
//! id behind a fence: `pg_snapshot_xmin` of the current snapshot is the oldest transaction
//! still running, so every transaction below it has ended and no new row can ever appear
//! there. Each round reads the window between the previous fence and the new one.
//!
//! Within one user, `seq` follows commit order (the counter row's lock), but transaction
//! ids need not: a user's `seq` 6 may land in an earlier window than `seq` 5. The pump holds
//! such a change back until the ones before it are published, so each user's stream is
//! published in `seq` order without gaps.
//!
//! NOTIFY is only a wake-up; the pump also polls, so a lost notification delays nothing
//! for long. A transaction left open anywhere in the database holds the fence back, and
//! with it delivery: keep `idle_in_transaction_session_timeout` short, or use logical
//! capture.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;
use tokio_util::sync::CancellationToken;
use tradewire_hub::{Change, Hub};

use super::log::{LOG_COLUMNS, log_row, to_change};
use super::pump::{PumpSettings, prune, publish};
use crate::db::sql::{Cell, Sql};
use crate::db::{Db, DbError, Result, now_ms};
use crate::sql_params;

/// The poll interval while changes flow (or some are held back).
const BUSY_POLL: Duration = Duration::from_millis(1);
const BUSY_FOR: Duration = Duration::from_secs(1);

/// Where the pump is: taken before the server accepts connections and kept across
/// reconnects, so neither a late start nor a broken connection skips anything.
pub struct Cursor {
    /// The fence the next window starts at.
    from: String,
    order: Order,
}

impl Cursor {
    /// The first fence, and each user's counter in the same snapshot: every change up to
    /// that counter was committed before the pump started (its subscribers read it from the
    /// log); every later one is published, in `seq` order. (Taking a user's first change
    /// seen as the next one would drop an earlier `seq` that lands in a later window.)
    pub async fn start(db: &Db) -> Result<Self> {
        let db = db.clone();
        tokio::task::spawn_blocking(move || {
            let mut client = db.pg_client()?;
            client.batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
            let mut order = Order::default();
            let result = (|| -> Result<String> {
                let from = fence(&mut client)?;
                for r in Sql::query(&mut client, "SELECT user_id, seq FROM tw_user_seq", &[])? {
                    let [user, seq]: [Cell; 2] =
                        r.try_into().map_err(|_| DbError::Decode("a counter row has 2 columns".into()))?;
                    let user: Arc<str> = Arc::from(user.into_text().unwrap_or_default());
                    order.published.insert(user, seq.int().max(0) as u64);
                }
                Ok(from)
            })();
            client.batch("COMMIT")?;
            let from = result?;
            tracing::info!(fence = %from, users = order.published.len(), "outbox pump starts");
            Ok(Self { from, order })
        })
        .await
        .map_err(|_| DbError::Join)?
    }
}

/// Per-user ordering state.
#[derive(Default)]
struct Order {
    /// The last `seq` published, per user seen since start.
    published: HashMap<Arc<str>, u64>,
    /// Changes that arrived before an earlier `seq` of the same user.
    held: HashMap<Arc<str>, BTreeMap<u64, Change>>,
}

impl Order {
    /// Publish `change` if it is the user's next, then whatever it unblocks; else hold it.
    /// Returns how many were published.
    fn offer(&mut self, hub: &Hub, change: Change, now: i64) -> usize {
        let user = change.user_id.clone();
        // A user without a counter when the pump started begins at 1 (see `start`).
        let last = *self.published.entry(user.clone()).or_insert(0);
        if change.seq <= last {
            return 0;
        }
        if change.seq > last + 1 {
            self.held.entry(user).or_default().insert(change.seq, change);
            return 0;
        }
        let mut next = change.seq;
        publish(hub, change, now);
        let mut n = 1;
        if let Some(held) = self.held.get_mut(&user) {
            while let Some(c) = held.remove(&(next + 1)) {
                next = c.seq;
                publish(hub, c, now);
                n += 1;
            }
            if held.is_empty() {
                self.held.remove(&user);
            }
        }
        self.published.insert(user, next);
        n
    }

    fn holding(&self) -> usize {
        self.held.values().map(BTreeMap::len).sum()
    }
}

fn fence(client: &mut postgres::Client) -> Result<String> {
    client
        .text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text", &[])?
        .ok_or_else(|| DbError::Decode("no snapshot xmin".into()))
}

/// Run the outbox pump until `stop`; then publish what is committed and return.
///
/// The pump blocks on its connection (waiting for notifications), so it runs on a thread of
/// its own, not on the blocking pool: a runtime shutting down does not wait for it. It also
/// ends by itself when this future is dropped.
pub async fn run(
    mut cursor: Cursor,
    db: Db,
    hub: Hub,
    settings: PumpSettings,
    stop: CancellationToken,
) -> Result<()> {
    let alive = std::sync::Arc::new(());
    loop {
        let (db2, hub2, stop2, owner) =
            (db.clone(), hub.clone(), stop.clone(), std::sync::Arc::downgrade(&alive));
        let (done, ended) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("tw-outbox-pump".into())
            .spawn(move || {
                let result = pump(&db2, &hub2, &settings, &stop2, &owner, &mut cursor);
                let _ = done.send((result, cursor));
            })
            .map_err(|e| DbError::Setup(format!("cannot start the outbox pump thread: {e}")))?;
        let result;
        (result, cursor) = ended.await.map_err(|_| DbError::Join)?;
        match result {
            Ok(()) => return Ok(()),
            Err(e) => {
                metrics::counter!("tradewire_pump_errors_total").increment(1);
                tracing::warn!(error = %e, "outbox pump failed; reconnecting");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            () = stop.cancelled() => return Ok(()),
        }
    }
}

/// The pump's own connection and loop (blocking). Pruning runs from here too.
fn pump(
    db: &Db,
    hub: &Hub,
    settings: &PumpSettings,
    stop: &CancellationToken,
    owner: &std::sync::Weak<()>,
    cursor: &mut Cursor,
) -> Result<()> {
    let poll = settings.poll_interval;
    let mut last_prune = Instant::now();
    let mut client = db.pg_client()?;
    client.batch_execute("LISTEN tw_changes")?;
    let epoch = db.epoch().clone();
    let mut from = cursor.from.clone();
    let order = &mut cursor.order;
    let mut last_change = Instant::now() - BUSY_FOR;
    tracing::info!(fence = %from, "outbox pump connected");
    loop {
        if owner.strong_count() == 0 {
            return Ok(());
        }
        let stopping = stop.is_cancelled();
        if !stopping {
            let wait = if last_change.elapsed() < BUSY_FOR || order.holding() > 0 { BUSY_POLL } else { poll };
            let mut notes = client.notifications();
            let _ = notes.timeout_iter(wait).next()?;
            while notes.iter().next()?.is_some() {}
        }
        let to = fence(&mut client)?;
        if to != from {
            let rows = Sql::query(
                &mut client,
                &format!(
                    "SELECT {LOG_COLUMNS} FROM tw_changes
                     WHERE xid >= ?1::text::xid8 AND xid < ?2::text::xid8 ORDER BY user_id, seq"
                ),
                sql_params![from.as_str(), to.as_str()],
            )?;
            let now = now_ms();
            let (seen, mut n) = (rows.len(), 0);
            for r in rows {
                n += order.offer(hub, to_change(&epoch, log_row(r)?)?, now);
            }
            tracing::debug!(%from, %to, seen, published = n, held = order.holding(), "outbox window");
            if n > 0 {
                last_change = Instant::now();
                metrics::counter!("tradewire_changes_captured_total").increment(n as u64);
            }
            from = to;
            cursor.from.clone_from(&from);
        }
        metrics::gauge!("tradewire_outbox_held_changes").set(order.holding() as f64);
        if stopping {
            tracing::info!("outbox pump drained and stopped");
            return Ok(());
        }
        if last_prune.elapsed() >= settings.prune_every {
            last_prune = Instant::now();
            prune(&mut client, settings);
        }
    }
}

#[cfg(test)]
mod tests {
    use tradewire_hub::QueueLimits;
    use tradewire_protocol::ChangeOp;

    use super::*;

    fn change(user: &str, seq: u64) -> Change {
        Change::new(user.into(), "e1".into(), seq, "signals".into(), ChangeOp::Insert, vec![], 0, None, None)
    }

    fn received(rx: &mut tradewire_hub::QueueReceiver) -> Vec<u64> {
        std::iter::from_fn(|| rx.try_recv()).map(|c| c.seq).collect()
    }

    #[test]
    fn a_change_ahead_of_its_user_is_held_until_the_gap_fills() {
        let hub = Hub::new(QueueLimits::default());
        let (_reg, mut rx) = hub.register("u1");
        let mut order = Order::default();
        assert_eq!(order.offer(&hub, change("u1", 1), 0), 1);
        assert_eq!(order.offer(&hub, change("u1", 3), 0), 0, "2 is not published yet");
        assert_eq!(order.holding(), 1);
        assert_eq!(order.offer(&hub, change("u1", 2), 0), 2, "2 releases 3");
        assert_eq!(order.offer(&hub, change("u1", 2), 0), 0, "seen twice: published once");
        assert_eq!((received(&mut rx), order.holding()), (vec![1, 2, 3], 0));
    }

    #[test]
    fn the_counter_at_start_decides_what_comes_next_not_the_first_change_seen() {
        let hub = Hub::new(QueueLimits::default());
        let (_reg, mut rx) = hub.register("u1");
        let mut order = Order::default();
        // At the pump's start u1's counter stood at 4; 6 arrives in an earlier window than 5.
        order.published.insert("u1".into(), 4);
        assert_eq!(order.offer(&hub, change("u1", 6), 0), 0);
        assert_eq!(order.offer(&hub, change("u1", 5), 0), 2);
        // Changes committed before the start are the log's to serve.
        assert_eq!(order.offer(&hub, change("u1", 3), 0), 0);
        assert_eq!(received(&mut rx), vec![5, 6]);
    }
}
