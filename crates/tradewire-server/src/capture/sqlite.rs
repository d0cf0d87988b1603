//! SQLite capture: triggers that write every insert, update and delete of a captured table
//! into `tw_changes` inside the writing transaction, with the owner's next `seq`
//! (see [`super::seq`]), and the reader that follows the log.
//!
//! SQLite has one writer at a time, so the order of `tw_changes.id` is commit order, and a
//! rolled-back transaction takes its log rows with it. Because the capture is in the
//! database, writes by any process (the API, the simulator, the `sqlite3` shell) are
//! captured alike. Writes through [`Db::write`] wake the reader at once; others are seen at
//! the pump's next poll.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;
use tradewire_hub::Change;

use super::pump::Source;
use super::seq::sqlite_append as append;
use crate::changefeed::log::{LOG_COLUMNS, log_row, note_unreadable, to_change};
use crate::db::catalog::TableInfo;
use crate::db::rows::json_row_expr;
use crate::db::sql::{Dialect, Lite, Sql};
use crate::db::{Catalog, Db, DbError};
use crate::sql_params;

/// (Re)create the capture triggers of every table in the catalog, in one transaction.
pub fn install(conn: &mut Connection, catalog: &Catalog) -> Result<(), DbError> {
    let mut sql = String::from("BEGIN;\n");
    for table in catalog.tables() {
        sql += &triggers_sql(table);
    }
    sql += "COMMIT;";
    Lite(conn).batch(&sql)
}

/// The trigger DDL of one table. Names are checked identifiers (see the catalog).
fn triggers_sql(info: &TableInfo) -> String {
    let t = &info.spec.table;
    let topic = &info.spec.topic;
    let owner = &info.spec.owner;
    let new_row = json_row_expr(Dialect::Sqlite, &info.columns, "NEW.");
    let old_row = json_row_expr(Dialect::Sqlite, &info.columns, "OLD.");
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

/// Follows the log by id: every row above the cursor, in id order (commit order).
pub struct Reader {
    db: Db,
    /// The newest log id read.
    cursor: i64,
    /// The reader's own connection, not the pool's (opened by `connect`).
    conn: Option<Arc<Mutex<Connection>>>,
}

impl Reader {
    /// Start after the newest change in the log now.
    pub async fn start(db: &Db) -> super::Result<Self> {
        let cursor = db.read(|c| c.value("SELECT COALESCE(MAX(id), 0) FROM tw_changes", &[])).await?;
        let cursor = cursor.map_or(0, |c| c.int());
        tracing::info!(cursor, "SQLite capture starts");
        Ok(Self { db: db.clone(), cursor, conn: None })
    }
}

impl Source for Reader {
    async fn connect(&mut self) -> super::Result<()> {
        let db = self.db.clone();
        let conn = tokio::task::spawn_blocking(move || db.sqlite_connection())
            .await
            .map_err(|_| DbError::Join)??;
        self.conn = Some(Arc::new(Mutex::new(conn)));
        Ok(())
    }

    async fn wait(&mut self, poll: Duration) -> super::Result<()> {
        tokio::select! {
            () = self.db.wake().notified() => {}
            () = tokio::time::sleep(poll) => {}
        }
        Ok(())
    }

    async fn read(&mut self, max: usize) -> super::Result<Vec<Change>> {
        let conn = self.conn.clone().ok_or(super::CaptureError::NotConnected)?;
        let (epoch, after) = (self.db.epoch().clone(), self.cursor);
        let read = tokio::task::spawn_blocking(move || {
            let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            let rows = Lite(&conn).query(
                &format!("SELECT {LOG_COLUMNS} FROM tw_changes WHERE id > ?1 ORDER BY id LIMIT ?2"),
                sql_params![after, max as i64],
            )?;
            let mut out = Vec::with_capacity(rows.len());
            let mut last = after;
            for r in rows {
                let r = log_row(r)?;
                last = r.id;
                let change = to_change(&epoch, r);
                note_unreadable(&change);
                out.push(change);
            }
            Ok::<_, DbError>((last, out))
        })
        .await
        .map_err(|_| DbError::Join)??;
        // The cursor moves only when the whole round was read: a failure retries it.
        self.cursor = read.0;
        Ok(read.1)
    }
}
