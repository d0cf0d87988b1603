//! Reading the change log: heads, replay after a position, snapshots fenced by position,
//! and retention. Capture writes the log (`capture/`); this module only reads and prunes it.

use std::collections::BTreeMap;
use std::sync::Arc;

use tradewire_hub::{Change, Filter};
use tradewire_protocol::{ChangeOp, Position, Row};

use super::events::domain_events;
use crate::db::rows::{parse_row, scan_rows};
use crate::db::sql::{Cell, Dialect, Sql};
use crate::db::{Db, DecodeError, Result};
use crate::sql_params;

/// Why a position cannot be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resync {
    /// The changes after the position were pruned (older than the retention window).
    HistoryExpired,
    /// The position belongs to another life of the log.
    EpochChanged,
    /// The position is past the head of the stream: it was never handed out.
    PositionAhead,
    /// A table of the subscription was emptied (`TRUNCATE`): its rows must be read again.
    Truncated,
}

impl Resync {
    pub const fn reason(self) -> &'static str {
        match self {
            Resync::HistoryExpired => "history_expired",
            Resync::EpochChanged => "epoch_changed",
            Resync::PositionAhead => "position_ahead",
            Resync::Truncated => "truncated",
        }
    }
}

/// Current rows and the stream position they correspond to.
#[derive(Debug, Default)]
pub struct SnapshotRows {
    pub head: u64,
    pub rows: BTreeMap<String, Vec<Row>>,
    pub truncated: Vec<String>,
}

/// Read access to the change log. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ChangeLog {
    db: Db,
}

/// One row of `tw_changes`.
pub(crate) struct LogRow {
    pub id: i64,
    pub user_id: String,
    pub seq: u64,
    pub topic: String,
    pub op: String,
    pub row: Option<String>,
    pub old: Option<String>,
    pub commit_ts: i64,
}

pub(crate) const LOG_COLUMNS: &str = "id, user_id, seq, topic, op, row_json, old_json, commit_ts";

pub(crate) fn log_row(r: Vec<Cell>) -> Result<LogRow> {
    let [id, user_id, seq, topic, op, row, old, commit_ts]: [Cell; 8] =
        r.try_into().map_err(|_| DecodeError::Shape { what: "tw_changes", columns: 8 })?;
    Ok(LogRow {
        id: id.int(),
        user_id: user_id.into_text().unwrap_or_default(),
        seq: seq.int().max(0) as u64,
        topic: topic.into_text().unwrap_or_default(),
        op: op.into_text().unwrap_or_default(),
        row: row.into_text(),
        old: old.into_text(),
        commit_ts: commit_ts.int(),
    })
}

/// Build the shared, encoded change of a log row. A row that cannot be read (JSON that
/// does not parse, an unknown op: a writer bypassing the triggers, or a value an old
/// `sqlite3` shell wrote as bare `Inf`) still keeps its place in the user's stream: the
/// change carries `error` and whatever could be read, so no one's stream stops or gaps.
pub(crate) fn to_change(epoch: &Arc<str>, r: LogRow) -> Change {
    let mut errors: Vec<String> = Vec::new();
    let op = match r.op.as_str() {
        "insert" => ChangeOp::Insert,
        "update" => ChangeOp::Update,
        "delete" => ChangeOp::Delete,
        "truncate" => ChangeOp::Truncate,
        other => {
            errors.push(format!("unknown change op {:?}", other.chars().take(32).collect::<String>()));
            ChangeOp::Update
        }
    };
    let mut read = |name: &str, text: Option<&str>| match text.map(parse_row).transpose() {
        Ok(row) => row,
        Err(e) => {
            errors.push(format!("{name}: {e}"));
            None
        }
    };
    let row = read("row", r.row.as_deref());
    let old = read("old", r.old.as_deref());
    let change = make_change(epoch, r.user_id, r.seq, r.topic, op, r.commit_ts, row, old);
    if errors.is_empty() { change } else { change.with_error(errors.join("; ")) }
}

/// Count and log (once: where capture publishes it) a change that could not be read.
pub(crate) fn note_unreadable(change: &Change) {
    if let Some(error) = &change.error {
        metrics::counter!("tradewire_unreadable_changes_total").increment(1);
        tracing::warn!(user = %change.user_id, seq = change.seq, topic = %change.topic, %error,
            "a change-log row could not be read; it is delivered with `error` in its place");
    }
}

/// The shared, encoded change, with its domain events.
#[allow(clippy::too_many_arguments)]
pub(crate) fn make_change(
    epoch: &Arc<str>,
    user: String,
    seq: u64,
    topic: String,
    op: ChangeOp,
    commit_ts: i64,
    row: Option<Row>,
    old: Option<Row>,
) -> Change {
    let events = domain_events(&topic, old.as_ref(), row.as_ref());
    Change::new(user.into(), epoch.clone(), seq, topic.into(), op, events, commit_ts, row, old)
}

impl ChangeLog {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    pub fn epoch(&self) -> &Arc<str> {
        self.db.epoch()
    }

    /// The last `seq` handed out to `user` (0 before the first change).
    pub fn head_sync(conn: &mut dyn Sql, user: &str) -> Result<u64> {
        Ok(conn
            .value("SELECT seq FROM tw_user_seq WHERE user_id = ?1", sql_params![user])?
            .map_or(0, |c| c.int().max(0) as u64))
    }

    pub async fn head(&self, user: &str) -> Result<u64> {
        let user = user.to_owned();
        self.db.read(move |c| Self::head_sync(c, &user)).await
    }

    /// Can the changes after `from` be served? On success, the head at the time of asking.
    pub fn check_from_sync(
        conn: &mut dyn Sql,
        epoch: &str,
        user: &str,
        from: &Position,
    ) -> Result<Result<u64, Resync>> {
        if from.epoch != epoch {
            return Ok(Err(Resync::EpochChanged));
        }
        let head = Self::head_sync(conn, user)?;
        if from.seq > head {
            return Ok(Err(Resync::PositionAhead));
        }
        if from.seq < head {
            let next_retained = conn
                .value(
                    "SELECT EXISTS(SELECT 1 FROM tw_changes WHERE user_id = ?1 AND seq = ?2)",
                    sql_params![user, from.seq + 1],
                )?
                .is_some_and(|c| c.truthy());
            if !next_retained {
                return Ok(Err(Resync::HistoryExpired));
            }
        }
        Ok(Ok(head))
    }

    pub async fn check_from(&self, user: &str, from: &Position) -> Result<Result<u64, Resync>> {
        let (user, from, epoch) = (user.to_owned(), from.clone(), self.epoch().clone());
        self.db.read(move |c| Self::check_from_sync(c, &epoch, &user, &from)).await
    }

    /// Up to `limit` of `user`'s changes with `seq > after`, in order. The caller checks
    /// contiguity: a first `seq` other than `after + 1` means history was pruned meanwhile.
    pub async fn read_after(&self, user: &str, after: u64, limit: usize) -> Result<Vec<Arc<Change>>> {
        Ok(self.changes_after(user, after, limit).await?.into_iter().map(Arc::new).collect())
    }

    /// As [`ChangeLog::read_after`], not yet shared (for the pump to publish).
    pub(crate) async fn changes_after(&self, user: &str, after: u64, limit: usize) -> Result<Vec<Change>> {
        let (user, epoch) = (user.to_owned(), self.epoch().clone());
        self.db
            .read(move |c| {
                let rows = c.query(
                    &format!(
                        "SELECT {LOG_COLUMNS} FROM tw_changes WHERE user_id = ?1 AND seq > ?2 \
                         ORDER BY seq LIMIT ?3"
                    ),
                    sql_params![user, after, limit as i64],
                )?;
                rows.into_iter().map(|r| Ok(to_change(&epoch, log_row(r)?))).collect()
            })
            .await
    }

    /// The current rows of `topics` for `user` that pass `filter`, and the head of the
    /// user's stream, read in one transaction: on SQLite and with the outbox the rows are
    /// exactly the state after `head`. With logical capture the rows may already hold
    /// changes numbered after `head` (committed to the tables, not yet to the log); those
    /// changes are then delivered after the snapshot, and applying a change is idempotent
    /// (an upsert or delete of the whole row), so the client ends in the same state.
    pub async fn snapshot(
        &self,
        user: &str,
        topics: Vec<String>,
        filter: Filter,
        limit: usize,
    ) -> Result<SnapshotRows> {
        let user = user.to_owned();
        let catalog = self.db.catalog().clone();
        self.db
            .read(move |c| {
                c.batch(match c.dialect() {
                    // A read transaction in WAL mode sees one consistent state of the database.
                    Dialect::Sqlite => "BEGIN DEFERRED",
                    Dialect::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                })?;
                let result = (|| {
                    let mut out =
                        SnapshotRows { head: Self::head_sync(c, &user)?, ..SnapshotRows::default() };
                    for topic in topics {
                        let Some(table) = catalog.topic(&topic) else { continue };
                        let rows = scan_rows(c, table, &user, &filter, limit)?;
                        if rows.truncated {
                            out.truncated.push(topic.clone());
                        }
                        out.rows.insert(topic, rows.rows);
                    }
                    Ok(out)
                })();
                c.batch("COMMIT")?;
                result
            })
            .await
    }

    /// Drop log rows committed before `cutoff_ms`, oldest first and at most `batch` of them.
    /// The log stays a contiguous suffix per user, so every position inside the window stays
    /// servable.
    pub fn prune_sync(conn: &mut dyn Sql, cutoff_ms: i64, batch: i64) -> Result<u64> {
        let least = match conn.dialect() {
            Dialect::Sqlite => "MIN",
            Dialect::Postgres => "LEAST",
        };
        conn.execute(
            &format!(
                "DELETE FROM tw_changes WHERE id < {least}(
                     COALESCE((SELECT MIN(id) FROM tw_changes WHERE commit_ts >= ?1),
                              (SELECT COALESCE(MAX(id), 0) + 1 FROM tw_changes)),
                     (SELECT COALESCE(MIN(id), 0) FROM tw_changes) + ?2)"
            ),
            sql_params![cutoff_ms, batch],
        )
    }
}
