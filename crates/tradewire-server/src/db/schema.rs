//! Embedded migrations, applied at start-up, and the change-log epoch.

use rusqlite::{Connection, OptionalExtension};

use super::{DbError, Result};

/// Migrations in order; `PRAGMA user_version` records how many are applied.
const MIGRATIONS: &[&str] =
    &[include_str!("../../migrations/0001_trading.sql"), include_str!("../../migrations/0002_changelog.sql")];

/// Apply every migration not yet applied, each in its own transaction.
pub fn migrate(conn: &mut Connection) -> Result<()> {
    let applied: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let version = i + 1;
        let tx = conn.transaction()?;
        tx.execute_batch(sql)
            .and_then(|()| tx.pragma_update(None, "user_version", version))
            .map_err(|source| DbError::Migration { version, source })?;
        tx.commit()?;
        tracing::info!(version, "applied migration");
    }
    Ok(())
}

/// The change log's epoch, created once with the log. A new database (or a reset log) gets
/// a new epoch, so a client's old position is answered with `resync_required`.
pub fn epoch(conn: &Connection) -> Result<String> {
    let existing: Option<String> =
        conn.query_row("SELECT value FROM tw_meta WHERE key = 'epoch'", [], |r| r.get(0)).optional()?;
    if let Some(e) = existing {
        return Ok(e);
    }
    let epoch = format!("e{:08x}", rand::random::<u32>());
    conn.execute(
        "INSERT INTO tw_meta(key, value) VALUES ('epoch', ?1) ON CONFLICT(key) DO NOTHING",
        [&epoch],
    )?;
    // Another process may have won the race: read back what is stored.
    Ok(conn.query_row("SELECT value FROM tw_meta WHERE key = 'epoch'", [], |r| r.get(0))?)
}
