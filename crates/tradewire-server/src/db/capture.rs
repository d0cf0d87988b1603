//! Capture on SQLite: triggers that write every insert, update and delete of a captured
//! table into `tw_changes` inside the writing transaction, with the owner's next `seq`.
//!
//! SQLite has one writer at a time, so the order of `tw_changes.id` is commit order, and a
//! rolled-back transaction takes its log rows with it. Because the capture is in the
//! database, writes by any process (the API, the simulator, the `sqlite3` shell) are
//! captured alike.
//!
//! The trigger bodies avoid `INSERT OR …` and UPSERT on purpose: an outer statement's
//! conflict clause (`INSERT OR REPLACE INTO orders …`) would override theirs.

use rusqlite::Connection;

use super::catalog::TableInfo;
use super::rows::json_row_expr;
use super::{Catalog, Result};

/// The statement time in milliseconds, as SQLite computes it inside a trigger (julianday
/// works on every SQLite version, including old `sqlite3` shells writing to the file).
const NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

/// (Re)create the capture triggers of every table in the catalog, in one transaction.
pub fn install(conn: &mut Connection, catalog: &Catalog) -> Result<()> {
    let tx = conn.transaction()?;
    for table in catalog.tables() {
        tx.execute_batch(&triggers_sql(table))?;
    }
    tx.commit()?;
    Ok(())
}

/// Statements that append one change for `owner` (an expression over NEW/OLD). When the
/// owner is NULL they do nothing: `user_id = NULL` matches no row.
fn append(owner: &str, topic: &str, op: &str, row: &str, old: &str) -> String {
    format!(
        "INSERT INTO tw_user_seq(user_id, seq) SELECT {owner}, 0 \
             WHERE {owner} IS NOT NULL\n\
             AND NOT EXISTS (SELECT 1 FROM tw_user_seq WHERE user_id = {owner});\n\
         UPDATE tw_user_seq SET seq = seq + 1 WHERE user_id = {owner};\n\
         INSERT INTO tw_changes(user_id, seq, topic, op, row_json, old_json, commit_ts)\n\
             SELECT {owner}, seq, '{topic}', '{op}', {row}, {old}, {NOW_MS}\n\
             FROM tw_user_seq WHERE user_id = {owner};\n"
    )
}

/// The trigger DDL of one table. Names are checked identifiers (see the catalog).
pub fn triggers_sql(info: &TableInfo) -> String {
    let t = &info.spec.table;
    let topic = &info.spec.topic;
    let owner = &info.spec.owner;
    let new_row = json_row_expr(&info.columns, "NEW.");
    let old_row = json_row_expr(&info.columns, "OLD.");
    let (new_owner, old_owner) = (format!("NEW.\"{owner}\""), format!("OLD.\"{owner}\""));
    let mut sql = String::new();
    for suffix in ["insert", "update", "update_moved", "delete"] {
        sql += &format!("DROP TRIGGER IF EXISTS \"tw_capture_{t}_{suffix}\";\n");
    }
    sql += &format!(
        "CREATE TRIGGER \"tw_capture_{t}_insert\" AFTER INSERT ON \"{t}\" \
         WHEN {new_owner} IS NOT NULL BEGIN\n{}END;\n",
        append(&new_owner, topic, "insert", &new_row, "NULL")
    );
    sql += &format!(
        "CREATE TRIGGER \"tw_capture_{t}_update\" AFTER UPDATE ON \"{t}\" \
         WHEN {new_owner} IS NOT NULL AND {new_owner} IS {old_owner} BEGIN\n{}END;\n",
        append(&new_owner, topic, "update", &new_row, &old_row)
    );
    // A row that changes owner leaves the old owner's stream and enters the new one's;
    // neither sees the other's version of it.
    sql += &format!(
        "CREATE TRIGGER \"tw_capture_{t}_update_moved\" AFTER UPDATE ON \"{t}\" \
         WHEN {new_owner} IS NOT {old_owner} BEGIN\n{}{}END;\n",
        append(&old_owner, topic, "delete", "NULL", &old_row),
        append(&new_owner, topic, "insert", &new_row, "NULL"),
    );
    sql += &format!(
        "CREATE TRIGGER \"tw_capture_{t}_delete\" AFTER DELETE ON \"{t}\" \
         WHEN {old_owner} IS NOT NULL BEGIN\n{}END;\n",
        append(&old_owner, topic, "delete", "NULL", &old_row)
    );
    sql
}
