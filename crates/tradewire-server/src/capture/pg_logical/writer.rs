//! The log writer of logical capture: numbers the row changes of committed transactions in
//! WAL order and appends them, the users' counters and the transaction's end LSN to the log
//! in one transaction of its own.

use std::collections::HashMap;

use serde_json::{Map, Value};
use tradewire_protocol::ChangeOp;

use super::pgoutput::{self, Datum, Relation};
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

    /// Number the row changes of `txns` (each with its commit time) and append them with
    /// `lsn` in one transaction. Counters advance only when the write commits: on failure
    /// they are reloaded from the database next time.
    pub fn append(
        &mut self,
        relations: &HashMap<u32, Relation>,
        catalog: &Catalog,
        txns: Vec<(Vec<RowChange>, i64)>,
        lsn: u64,
    ) -> Result<Vec<NumberedChange>> {
        let mut out = Vec::new();
        let result = (|| {
            for (changes, ts) in txns {
                for rc in changes {
                    self.number(relations, catalog, rc, ts, &mut out)?;
                }
            }
            self.persist(&out, lsn).map_err(CaptureError::from)
        })();
        if result.is_err() {
            self.heads.clear();
        }
        result.map(|()| out)
    }

    /// Turn one row change into numbered changes (none for tables we do not capture; two
    /// when the row changed owner: a delete for the old owner, an insert for the new one).
    fn number(
        &mut self,
        relations: &HashMap<u32, Relation>,
        catalog: &Catalog,
        rc: RowChange,
        commit_ts: i64,
        out: &mut Vec<NumberedChange>,
    ) -> Result<()> {
        let rel = relations.get(&rc.rel).ok_or(CaptureError::UnknownRelation(rc.rel))?;
        let Some(table): Option<&TableInfo> = catalog.by_table(&rel.name) else { return Ok(()) };
        if rc.kind == ChangeOp::Truncate {
            // Every row is gone, whoever owned it: every stream gets a `truncate` change.
            for user in self.heads.users(&mut *self.client)? {
                let seq = self.heads.next(&mut *self.client, &user)?;
                let topic = table.spec.topic.clone();
                out.push(NumberedChange {
                    user,
                    seq,
                    topic,
                    op: ChangeOp::Truncate,
                    row: None,
                    old: None,
                    commit_ts,
                });
            }
            return Ok(());
        }
        let owner_col = &table.spec.owner;
        let old = rc.old.as_deref().map(|t| pgoutput::json_row(rel, t, None));
        let new = rc.new.as_deref().map(|t| pgoutput::json_row(rel, t, old.as_ref()));
        let old_owner = old.as_ref().and_then(|r| owner_of(r, owner_col));
        let new_owner = new.as_ref().and_then(|r| owner_of(r, owner_col));
        let (heads, client) = (&mut self.heads, &mut *self.client);
        let mut push = |user: String, op: ChangeOp, row, old| -> Result<()> {
            let seq = heads.next(client, &user)?;
            out.push(NumberedChange { user, seq, topic: table.spec.topic.clone(), op, row, old, commit_ts });
            Ok(())
        };
        match (old, new) {
            (None, Some(new)) => {
                // An insert, or an update whose old row was not sent (it cannot have moved).
                if let Some(user) = new_owner {
                    push(user, rc.kind, Some(new), None)?;
                }
            }
            (Some(old), None) => {
                if let Some(user) = old_owner {
                    push(user, ChangeOp::Delete, None, Some(old))?;
                }
            }
            (Some(old), Some(new)) if old_owner == new_owner => {
                if let Some(user) = new_owner {
                    push(user, ChangeOp::Update, Some(new), Some(old))?;
                }
            }
            (Some(old), Some(new)) => {
                if let Some(user) = old_owner {
                    push(user, ChangeOp::Delete, None, Some(old))?;
                }
                if let Some(user) = new_owner {
                    push(user, ChangeOp::Insert, Some(new), None)?;
                }
            }
            (None, None) => {}
        }
        Ok(())
    }

    /// Append `changes`, the new counters and `lsn` in one transaction.
    fn persist(&mut self, changes: &[NumberedChange], lsn: u64) -> Result<(), DbError> {
        let mut tx = self.client.transaction()?;
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
                sql += &format!(
                    "(?{},?{},?{},?{},?{},?{},?{})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6,
                    b + 7
                );
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
            Sql::execute(&mut tx, &sql, &params)?;
        }
        let mut last: HashMap<&str, u64> = HashMap::new();
        for c in changes {
            last.insert(&c.user, c.seq);
        }
        Heads::persist(&mut tx, &last.into_iter().collect::<Vec<_>>())?;
        Sql::execute(
            &mut tx,
            "INSERT INTO tw_meta(key, value) VALUES ('lsn', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            sql_params![lsn.to_string()],
        )?;
        tx.commit()?;
        Ok(())
    }
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
