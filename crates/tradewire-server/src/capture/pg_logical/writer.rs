//! The log writer of logical capture: numbers the row changes of committed transactions in
//! WAL order and appends them, the users' counters and the transaction's end LSN to the log
//! in one transaction of its own.

use std::collections::HashMap;

use serde_json::{Map, Value};
use tradewire_protocol::ChangeOp;

use super::pgoutput::{self, Datum, Message, Relation};
use super::spill::Spill;
use crate::capture::seq::Heads;
use crate::capture::{CaptureError, Result};
use crate::db::sql::{Param, Sql};
use crate::db::{Catalog, DbError, DropOffRuntime, TableInfo};
use crate::sql_params;

/// Rows per INSERT statement (7 parameters each, well under PostgreSQL's 65,535).
const INSERT_CHUNK: usize = 1_000;

/// A row change of an open transaction, as decoded.
pub struct RowChange {
    pub rel: u32,
    pub kind: ChangeOp,
    pub old: Option<Vec<Datum>>,
    pub new: Option<Vec<Datum>>,
}

impl RowChange {
    /// The row changes a pgoutput message carries (none for messages that change no row;
    /// one per table for a TRUNCATE, numbered at commit as a `truncate` in every stream).
    pub fn from_message(message: Message, mut out: impl FnMut(RowChange)) {
        match message {
            Message::Insert { rel, new } => {
                out(RowChange { rel, kind: ChangeOp::Insert, old: None, new: Some(new) })
            }
            Message::Update { rel, old, new } => {
                out(RowChange { rel, kind: ChangeOp::Update, old, new: Some(new) })
            }
            Message::Delete { rel, old } => {
                out(RowChange { rel, kind: ChangeOp::Delete, old: Some(old), new: None })
            }
            Message::Truncate { rels } => {
                for rel in rels {
                    out(RowChange { rel, kind: ChangeOp::Truncate, old: None, new: None });
                }
            }
            Message::Relation(_) | Message::Other(_) => {}
        }
    }
}

/// A committed upstream transaction waiting to be numbered: its first rows in memory, the
/// rest (if it is large) spilled to disk.
pub struct Txn {
    pub rows: Vec<RowChange>,
    pub spill: Option<Spill>,
    pub commit_ts: i64,
}

/// One change of a committed transaction, numbered and ready to persist and publish.
pub struct NumberedChange {
    pub user: String,
    pub seq: u64,
    pub topic: String,
    pub op: ChangeOp,
    pub row: Option<Map<String, Value>>,
    pub old: Option<Map<String, Value>>,
    pub commit_ts: i64,
}

/// One user's changes `first..=last`, in the log but not yet published: the pump reads
/// them back from the log in pages instead of holding them in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backlog {
    pub user: String,
    pub first: u64,
    pub last: u64,
}

/// What one append numbered: the changes to publish now, then (from the first spilled
/// transaction on) the ranges to publish from the log.
#[derive(Default)]
pub struct Appended {
    pub changes: Vec<NumberedChange>,
    pub backlog: Vec<Backlog>,
}

/// The writer's own connection and the users' counters as persisted.
pub struct LogWriter {
    pub client: DropOffRuntime<postgres::Client>,
    heads: Heads,
}

impl LogWriter {
    pub fn new(client: DropOffRuntime<postgres::Client>) -> Self {
        Self { client, heads: Heads::default() }
    }

    /// The last LSN whose transaction is in the log (0 before the first).
    pub fn persisted_lsn(&mut self) -> Result<u64, DbError> {
        Ok(self
            .client
            .text("SELECT value FROM tw_meta WHERE key = 'lsn'", &[])?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// Number the row changes of `txns` and append them, the users' counters and `lsn` in
    /// one transaction, written in chunks as they are numbered (so a transaction of
    /// millions of rows is never all in memory). Counters advance only when the write
    /// commits: on failure they are reloaded from the database next time.
    pub fn append(
        &mut self,
        relations: &HashMap<u32, Relation>,
        catalog: &Catalog,
        txns: Vec<Txn>,
        lsn: u64,
    ) -> Result<Appended> {
        let (heads, client) = (&mut self.heads, &mut *self.client);
        let result = (|| {
            let mut tx = client.transaction().map_err(DbError::from)?;
            let mut out = Batch::default();
            for txn in txns {
                let ts = txn.commit_ts;
                if txn.spill.is_some() && out.keep {
                    // From here on, publish from the log: keep what came before in order.
                    out.flush(&mut tx)?;
                    out.keep = false;
                }
                for rc in txn.rows {
                    number(heads, &mut tx, relations, catalog, rc, ts, &mut out)?;
                }
                if let Some(spill) = txn.spill {
                    for message in spill.read()? {
                        let mut rows = Vec::new();
                        RowChange::from_message(pgoutput::decode(&message?)?, |rc| rows.push(rc));
                        for rc in rows {
                            number(heads, &mut tx, relations, catalog, rc, ts, &mut out)?;
                        }
                    }
                }
            }
            out.flush(&mut tx)?;
            Heads::persist(&mut tx, &out.last.iter().map(|(u, s)| (u.as_str(), *s)).collect::<Vec<_>>())?;
            Sql::execute(
                &mut tx,
                "INSERT INTO tw_meta(key, value) VALUES ('lsn', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                sql_params![lsn.to_string()],
            )?;
            tx.commit().map_err(DbError::from)?;
            Ok(Appended { changes: out.changes, backlog: out.backlog })
        })();
        if result.is_err() {
            heads.clear();
        }
        result
    }
}

/// Numbered changes on their way into the log, written a chunk at a time.
struct Batch {
    /// Numbered, not yet written.
    pending: Vec<NumberedChange>,
    /// Written changes are kept to publish (until a spilled transaction turns this off).
    keep: bool,
    changes: Vec<NumberedChange>,
    /// Per user, the range written but not kept (in first-seen order of users), and where
    /// each user's range is.
    backlog: Vec<Backlog>,
    backlog_of: HashMap<String, usize>,
    /// Each user's last `seq` numbered.
    last: HashMap<String, u64>,
}

impl Default for Batch {
    fn default() -> Self {
        Self {
            pending: Vec::new(),
            keep: true,
            changes: Vec::new(),
            backlog: Vec::new(),
            backlog_of: HashMap::new(),
            last: HashMap::new(),
        }
    }
}

impl Batch {
    fn push(&mut self, tx: &mut dyn Sql, change: NumberedChange) -> Result<(), DbError> {
        self.last.insert(change.user.clone(), change.seq);
        if !self.keep {
            match self.backlog_of.get(&change.user) {
                Some(&i) => self.backlog[i].last = change.seq,
                None => {
                    self.backlog_of.insert(change.user.clone(), self.backlog.len());
                    self.backlog.push(Backlog {
                        user: change.user.clone(),
                        first: change.seq,
                        last: change.seq,
                    });
                }
            }
        }
        self.pending.push(change);
        if self.pending.len() >= INSERT_CHUNK { self.flush(tx) } else { Ok(()) }
    }

    /// Write what is pending.
    fn flush(&mut self, tx: &mut dyn Sql) -> Result<(), DbError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        insert_changes(tx, &self.pending)?;
        if self.keep {
            self.changes.append(&mut self.pending);
        } else {
            self.pending.clear();
        }
        Ok(())
    }
}

/// Turn one row change into numbered changes (none for tables we do not capture; two
/// when the row changed owner: a delete for the old owner, an insert for the new one; one
/// per user with a stream for a truncate).
fn number(
    heads: &mut Heads,
    tx: &mut dyn Sql,
    relations: &HashMap<u32, Relation>,
    catalog: &Catalog,
    rc: RowChange,
    commit_ts: i64,
    out: &mut Batch,
) -> Result<()> {
    let rel = relations.get(&rc.rel).ok_or(CaptureError::UnknownRelation(rc.rel))?;
    let Some(table): Option<&TableInfo> = catalog.by_table(&rel.name) else { return Ok(()) };
    let truncated = if rc.kind == ChangeOp::Truncate { heads.users(tx)? } else { Vec::new() };
    let mut push = |tx: &mut dyn Sql, user: String, op: ChangeOp, row, old| -> Result<()> {
        let seq = heads.next(tx, &user)?;
        let topic = table.spec.topic.clone();
        out.push(tx, NumberedChange { user, seq, topic, op, row, old, commit_ts })?;
        Ok(())
    };
    if rc.kind == ChangeOp::Truncate {
        // Every row is gone, whoever owned it: every stream gets a `truncate` change.
        for user in truncated {
            push(tx, user, ChangeOp::Truncate, None, None)?;
        }
        return Ok(());
    }
    let owner_col = &table.spec.owner;
    let old = rc.old.as_deref().map(|t| pgoutput::json_row(rel, t, None));
    let new = rc.new.as_deref().map(|t| pgoutput::json_row(rel, t, old.as_ref()));
    let old_owner = old.as_ref().and_then(|r| owner_of(r, owner_col));
    let new_owner = new.as_ref().and_then(|r| owner_of(r, owner_col));
    match (old, new) {
        (None, Some(new)) => {
            // An insert, or an update whose old row was not sent (it cannot have moved).
            if let Some(user) = new_owner {
                push(tx, user, rc.kind, Some(new), None)?;
            }
        }
        (Some(old), None) => {
            if let Some(user) = old_owner {
                push(tx, user, ChangeOp::Delete, None, Some(old))?;
            }
        }
        (Some(old), Some(new)) if old_owner == new_owner => {
            if let Some(user) = new_owner {
                push(tx, user, ChangeOp::Update, Some(new), Some(old))?;
            }
        }
        (Some(old), Some(new)) => {
            if let Some(user) = old_owner {
                push(tx, user, ChangeOp::Delete, None, Some(old))?;
            }
            if let Some(user) = new_owner {
                push(tx, user, ChangeOp::Insert, Some(new), None)?;
            }
        }
        (None, None) => {}
    }
    Ok(())
}

/// Append `changes` to the log, up to [`INSERT_CHUNK`] rows per statement.
fn insert_changes(tx: &mut dyn Sql, changes: &[NumberedChange]) -> Result<(), DbError> {
    for chunk in changes.chunks(INSERT_CHUNK) {
        let mut sql = String::from(
            "INSERT INTO tw_changes(user_id, seq, topic, op, row_json, old_json, commit_ts) VALUES ",
        );
        let mut params = Vec::with_capacity(chunk.len() * 7);
        for (i, c) in chunk.iter().enumerate() {
            let b = i * 7;
            if i > 0 {
                sql.push(',');
            }
            sql += &format!("(?{},?{},?{},?{},?{},?{},?{})", b + 1, b + 2, b + 3, b + 4, b + 5, b + 6, b + 7);
            params.extend([
                Param::from(c.user.as_str()),
                Param::from(c.seq),
                Param::from(c.topic.as_str()),
                Param::from(c.op.as_str()),
                Param::from(c.row.as_ref().map(json_text)),
                Param::from(c.old.as_ref().map(json_text)),
                Param::from(c.commit_ts),
            ]);
        }
        tx.execute(&sql, &params)?;
    }
    Ok(())
}

/// A row as JSON text, without copying it into a `Value` first.
fn json_text(row: &Map<String, Value>) -> String {
    serde_json::to_string(row).expect("a JSON map always serializes")
}

/// The owner of a row: its owner column as text (numbers are written out).
fn owner_of(row: &Map<String, Value>, owner: &str) -> Option<String> {
    match row.get(owner)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}
