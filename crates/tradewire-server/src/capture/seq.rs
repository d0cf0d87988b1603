//! The per-user counter: one contract, written for each of the three capture writers.
//!
//! Every user has one row in `tw_user_seq` holding the last `seq` handed out in their
//! stream. A change to one of the user's rows takes the next number (1, 2, 3 … no gaps, no
//! reuse) and is appended to `tw_changes` **in the same transaction** that advances the
//! counter, so a rollback takes both back and the log and the counter never disagree.
//!
//! - SQLite triggers ([`sqlite_append`]): run inside the writer's transaction; SQLite has
//!   one writer, so numbers follow commit order.
//! - PL/pgSQL ([`PG_APPEND`], outbox capture): the counter row's lock, held to commit,
//!   orders one user's concurrent writers; within a transaction the count runs in a
//!   transaction-local setting and is written back to the row at commit.
//! - Logical capture ([`Heads`]): numbers committed transactions in WAL order in memory,
//!   then writes the changes and the new counters in one transaction of its own.
//!
//! The three are SQL of two dialects and a batch writer; they share this contract and the
//! tables, not code. A change to one is a change to all three.

use std::collections::HashMap;

use crate::changefeed::ChangeLog;
use crate::db::Result;
use crate::db::sql::{Param, Sql};

/// The statement time in milliseconds, as SQLite computes it inside a trigger (julianday
/// works on every SQLite version, including old `sqlite3` shells writing to the file).
const SQLITE_NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

/// SQLite trigger statements that append one change for `owner` (an expression over
/// NEW/OLD). When the owner is NULL they do nothing: `user_id = NULL` matches no row.
///
/// They avoid `INSERT OR …` and UPSERT on purpose: an outer statement's conflict clause
/// (`INSERT OR REPLACE INTO orders …`) would override theirs.
pub fn sqlite_append(owner: &str, topic: &str, op: &str, row: &str, old: &str) -> String {
    format!(
        "INSERT INTO tw_user_seq(user_id, seq) SELECT {owner}, 0 \
             WHERE {owner} IS NOT NULL\n\
             AND NOT EXISTS (SELECT 1 FROM tw_user_seq WHERE user_id = {owner});\n\
         UPDATE tw_user_seq SET seq = seq + 1 WHERE user_id = {owner};\n\
         INSERT INTO tw_changes(user_id, seq, topic, op, row_json, old_json, commit_ts)\n\
             SELECT {owner}, seq, '{topic}', '{op}', {row}, {old}, {SQLITE_NOW_MS}\n\
             FROM tw_user_seq WHERE user_id = {owner};\n"
    )
}

/// Outbox capture: append one change for a user and wake the pump.
///
/// The user's first change in a transaction locks their counter row (held to commit, which
/// orders one user's writers) and reads it; later changes count on in a transaction-local
/// setting, and the row is written back once, at commit, by a deferred trigger. (Updating
/// the row for every change made a bulk update quadratic: each update of one row inside
/// one transaction walks every version the transaction made before.) A rolled-back
/// savepoint takes its setting and its queued write-back with it.
pub const PG_APPEND: &str = r#"
CREATE OR REPLACE FUNCTION tw_append(p_user text, p_topic text, p_op text, p_row text, p_old text, p_ts bigint)
RETURNS void LANGUAGE plpgsql AS $f$
DECLARE
    k text := 'tw.seq_' || md5(p_user);
    s bigint := nullif(current_setting(k, true), '')::bigint;
BEGIN
    IF s IS NULL OR current_setting('tw.written_' || md5(p_user), true) = 'y' THEN
        -- The no-op update takes the row lock and queues the write-back for commit.
        INSERT INTO tw_user_seq(user_id, seq) VALUES (p_user, 0)
            ON CONFLICT (user_id) DO UPDATE SET seq = tw_user_seq.seq
            RETURNING seq INTO s;
        PERFORM set_config('tw.written_' || md5(p_user), 'n', true);
    END IF;
    s := s + 1;
    PERFORM set_config(k, s::text, true);
    INSERT INTO tw_changes(user_id, seq, topic, op, row_json, old_json, commit_ts)
        VALUES (p_user, s, p_topic, p_op, p_row, p_old, p_ts);
    -- Only a wake-up: identical notifications of one transaction are folded into one.
    PERFORM pg_notify('tw_changes', '');
END $f$;

-- At commit (or at SET CONSTRAINTS … IMMEDIATE): the counter row takes the last seq handed
-- out. Its own update queues one more event, which finds nothing to do.
CREATE OR REPLACE FUNCTION tw_user_seq_write_back() RETURNS trigger LANGUAGE plpgsql AS $f$
DECLARE
    v bigint := nullif(current_setting('tw.seq_' || md5(NEW.user_id), true), '')::bigint;
BEGIN
    IF v IS NOT NULL THEN
        UPDATE tw_user_seq SET seq = v WHERE user_id = NEW.user_id AND seq IS DISTINCT FROM v;
        PERFORM set_config('tw.written_' || md5(NEW.user_id), 'y', true);
    END IF;
    RETURN NULL;
END $f$;
-- Created once: DDL on tw_user_seq at every start would lock it against writers that
-- already hold a captured table's lock (a deadlock with the start-up's own DDL there).
DO $d$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                   WHERE tgname = 'tw_write_back' AND tgrelid = 'tw_user_seq'::regclass) THEN
        CREATE CONSTRAINT TRIGGER tw_write_back AFTER INSERT OR UPDATE ON tw_user_seq
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION tw_user_seq_write_back();
    END IF;
END $d$;
"#;

/// Logical capture: each user's last `seq`, as persisted plus what the current batch has
/// numbered. Loaded from `tw_user_seq` on first use; forgotten after a failed write, so
/// the next attempt starts again from what the database holds.
#[derive(Debug, Default)]
pub struct Heads {
    last: HashMap<String, u64>,
}

/// Rows per statement when writing counters.
const CHUNK: usize = 1_000;

impl Heads {
    /// The next `seq` of `user`, taken now.
    pub fn next(&mut self, conn: &mut dyn Sql, user: &str) -> Result<u64> {
        let last = match self.last.get(user) {
            Some(h) => *h,
            None => ChangeLog::head_sync(conn, user)?,
        };
        self.last.insert(user.to_owned(), last + 1);
        Ok(last + 1)
    }

    /// Every user with a stream: those in `tw_user_seq` and those numbered since, sorted.
    pub fn users(&self, conn: &mut dyn Sql) -> Result<Vec<String>> {
        let mut users: std::collections::BTreeSet<String> = self.last.keys().cloned().collect();
        for row in conn.query("SELECT user_id FROM tw_user_seq", &[])? {
            if let Some(user) = row.into_iter().next().and_then(|c| c.into_text()) {
                users.insert(user);
            }
        }
        Ok(users.into_iter().collect())
    }

    /// Forget everything (after a failed write).
    pub fn clear(&mut self) {
        self.last.clear();
    }

    /// Write the counters of `users` (their last `seq` numbered) inside the caller's
    /// transaction, next to the changes they number.
    pub fn persist(conn: &mut dyn Sql, users: &[(&str, u64)]) -> Result<()> {
        for chunk in users.chunks(CHUNK) {
            let mut sql = String::from("INSERT INTO tw_user_seq(user_id, seq) VALUES ");
            let mut params = Vec::with_capacity(chunk.len() * 2);
            for (i, (user, seq)) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(',');
                }
                sql += &format!("(?{},?{})", i * 2 + 1, i * 2 + 2);
                params.extend([Param::from(*user), Param::from(*seq)]);
            }
            sql += " ON CONFLICT (user_id) DO UPDATE SET seq = excluded.seq";
            conn.execute(&sql, &params)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::sql::Lite;
    use crate::sql_params;

    #[test]
    fn heads_number_from_the_stored_counter_and_forget_on_failure() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let sql = &mut Lite(&conn);
        sql.batch("CREATE TABLE tw_user_seq(user_id TEXT PRIMARY KEY, seq INTEGER NOT NULL)").unwrap();
        sql.execute("INSERT INTO tw_user_seq VALUES ('u1', 4)", sql_params![]).unwrap();
        let mut heads = Heads::default();
        assert_eq!(heads.next(sql, "u1").unwrap(), 5);
        assert_eq!(heads.next(sql, "u1").unwrap(), 6);
        assert_eq!(heads.next(sql, "u2").unwrap(), 1);
        heads.clear();
        assert_eq!(heads.next(sql, "u1").unwrap(), 5, "after a failed write: from the database again");
        Heads::persist(sql, &[("u1", 5), ("u2", 1)]).unwrap();
        assert_eq!(ChangeLog::head_sync(sql, "u2").unwrap(), 1);
    }
}
