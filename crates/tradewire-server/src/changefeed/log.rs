//! Reading the change log: heads, replay after a position, snapshots fenced by position,
//! the pump's global cursor, and retention.

use std::collections::BTreeMap;
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};
use tradewire_hub::{Change, Filter};
use tradewire_protocol::{ChangeOp, Position, Row};

use super::events::domain_events;
use crate::db::rows::scan_rows;
use crate::db::{Db, DbError, Result};

/// Why a position cannot be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resync {
    /// The changes after the position were pruned (older than the retention window).
    HistoryExpired,
    /// The position belongs to another life of the log.
    EpochChanged,
    /// The position is past the head of the stream: it was never handed out.
    PositionAhead,
}

impl Resync {
    pub const fn reason(self) -> &'static str {
        match self {
            Resync::HistoryExpired => "history_expired",
            Resync::EpochChanged => "epoch_changed",
            Resync::PositionAhead => "position_ahead",
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

struct LogRow {
    id: i64,
    user_id: String,
    seq: u64,
    topic: String,
    op: String,
    row: Option<String>,
    old: Option<String>,
    commit_ts: i64,
}

const LOG_COLUMNS: &str = "id, user_id, seq, topic, op, row_json, old_json, commit_ts";

fn log_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LogRow> {
    Ok(LogRow {
        id: r.get(0)?,
        user_id: r.get(1)?,
        seq: r.get(2)?,
        topic: r.get(3)?,
        op: r.get(4)?,
        row: r.get(5)?,
        old: r.get(6)?,
        commit_ts: r.get(7)?,
    })
}

fn parse_json(text: Option<String>) -> Result<Option<Row>> {
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| {
            DbError::Sqlite(rusqlite::Error::FromSqlConversionFailure(
                0,
                rusqlite::types::Type::Text,
                Box::new(e),
            ))
        })
    })
    .transpose()
}

/// Build the shared, encoded change of a log row.
fn to_change(epoch: &Arc<str>, r: LogRow) -> Result<Change> {
    let op = match r.op.as_str() {
        "insert" => ChangeOp::Insert,
        "update" => ChangeOp::Update,
        _ => ChangeOp::Delete,
    };
    let row = parse_json(r.row)?;
    let old = parse_json(r.old)?;
    let events = domain_events(&r.topic, old.as_ref(), row.as_ref());
    Ok(Change::new(r.user_id.into(), epoch.clone(), r.seq, r.topic.into(), op, events, r.commit_ts, row, old))
}

impl ChangeLog {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn epoch(&self) -> &Arc<str> {
        self.db.epoch()
    }

    /// The last `seq` handed out to `user` (0 before the first change).
    pub fn head_sync(conn: &Connection, user: &str) -> Result<u64> {
        Ok(conn
            .prepare_cached("SELECT seq FROM tw_user_seq WHERE user_id = ?1")?
            .query_row([user], |r| r.get(0))
            .optional()?
            .unwrap_or(0))
    }

    pub async fn head(&self, user: &str) -> Result<u64> {
        let user = user.to_owned();
        self.db.read(move |c| Self::head_sync(c, &user)).await
    }

    /// Can the changes after `from` be served? On success, the head at the time of asking.
    pub fn check_from_sync(
        conn: &Connection,
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
            let next_retained: bool = conn
                .prepare_cached("SELECT EXISTS(SELECT 1 FROM tw_changes WHERE user_id = ?1 AND seq = ?2)")?
                .query_row(params![user, from.seq + 1], |r| r.get(0))?;
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
        let (user, epoch) = (user.to_owned(), self.epoch().clone());
        self.db
            .read(move |c| {
                let mut stmt = c.prepare_cached(&format!(
                    "SELECT {LOG_COLUMNS} FROM tw_changes WHERE user_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
                ))?;
                let rows = stmt.query_map(params![user, after, limit as i64], log_row)?;
                rows.map(|r| Ok(Arc::new(to_change(&epoch, r?)?))).collect()
            })
            .await
    }

    /// The current rows of `topics` for `user` that pass `filter`, and the head of the
    /// user's stream, read in one transaction: the rows are exactly the state after `head`.
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
                // A read transaction in WAL mode sees one consistent state of the database.
                c.execute_batch("BEGIN DEFERRED")?;
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
                c.execute_batch("COMMIT")?;
                result
            })
            .await
    }

    /// The pump's view: every change with log id above `after_id`, in commit order.
    pub fn read_global_sync(
        conn: &Connection,
        epoch: &Arc<str>,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Change)>> {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {LOG_COLUMNS} FROM tw_changes WHERE id > ?1 ORDER BY id LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![after_id, limit as i64], log_row)?;
        rows.map(|r| {
            let r = r?;
            let id = r.id;
            Ok((id, to_change(epoch, r)?))
        })
        .collect()
    }

    /// The id of the newest log row (0 when empty).
    pub fn last_id_sync(conn: &Connection) -> Result<i64> {
        Ok(conn.query_row("SELECT COALESCE(MAX(id), 0) FROM tw_changes", [], |r| r.get(0))?)
    }

    /// Drop log rows committed before `cutoff_ms`, oldest first and at most `batch` of them.
    /// The log stays a contiguous suffix, so every position inside the window stays servable.
    pub fn prune_sync(conn: &Connection, cutoff_ms: i64, batch: i64) -> Result<usize> {
        Ok(conn.execute(
            "DELETE FROM tw_changes WHERE id < MIN(
                 COALESCE((SELECT MIN(id) FROM tw_changes WHERE commit_ts >= ?1),
                          (SELECT COALESCE(MAX(id), 0) + 1 FROM tw_changes)),
                 (SELECT COALESCE(MIN(id), 0) FROM tw_changes) + ?2)",
            params![cutoff_ms, batch],
        )?)
    }
}
