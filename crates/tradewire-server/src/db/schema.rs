//! Embedded migrations, applied at start-up (or by `tradewire migrate`), and the change-log
//! epoch.

use super::sql::{Dialect, Sql};
use super::{DbError, Result};
use crate::sql_params;

/// SQLite migrations in order; `PRAGMA user_version` records how many are applied.
const SQLITE: &[&str] = &[
    include_str!("../../migrations/0001_trading.sql"),
    include_str!("../../migrations/0002_changelog.sql"),
    include_str!("../../migrations/0003_risk_baselines.sql"),
];

/// PostgreSQL migrations in order; `tw_meta.schema_version` records how many are applied.
const POSTGRES: &[&str] = &[
    include_str!("../../migrations/pg/0001_trading.sql"),
    include_str!("../../migrations/pg/0002_changelog.sql"),
    include_str!("../../migrations/pg/0003_truncate.sql"),
    include_str!("../../migrations/pg/0004_risk_baselines.sql"),
];

/// An arbitrary constant: the advisory lock that serializes migrations of several servers
/// starting against one PostgreSQL database.
const PG_MIGRATION_LOCK: i64 = 0x7477_6d69_6772;

fn applied(conn: &mut dyn Sql) -> Result<usize> {
    let v = match conn.dialect() {
        Dialect::Sqlite => conn.value("PRAGMA user_version", &[])?.map(|c| c.int()),
        Dialect::Postgres => conn
            .text("SELECT value FROM tw_meta WHERE key = 'schema_version'", &[])?
            .and_then(|v| v.parse().ok()),
    };
    Ok(v.unwrap_or(0) as usize)
}

/// Apply every migration not yet applied, each in its own transaction. Returns how many
/// were applied now.
pub fn migrate(conn: &mut dyn Sql) -> Result<usize> {
    let dialect = conn.dialect();
    let list = match dialect {
        Dialect::Sqlite => SQLITE,
        Dialect::Postgres => {
            conn.batch(
                "SET client_min_messages TO warning;
                 CREATE TABLE IF NOT EXISTS tw_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            )?;
            conn.execute("SELECT pg_advisory_lock(?1)", sql_params![PG_MIGRATION_LOCK])?;
            POSTGRES
        }
    };
    let result = apply(conn, dialect, list);
    if dialect == Dialect::Postgres {
        conn.execute("SELECT pg_advisory_unlock(?1)", sql_params![PG_MIGRATION_LOCK])?;
    }
    result
}

fn apply(conn: &mut dyn Sql, dialect: Dialect, list: &[&str]) -> Result<usize> {
    let done = applied(conn)?;
    for (i, sql) in list.iter().enumerate().skip(done) {
        let version = i + 1;
        let record = match dialect {
            Dialect::Sqlite => format!("PRAGMA user_version = {version};"),
            Dialect::Postgres => format!(
                "INSERT INTO tw_meta(key, value) VALUES ('schema_version', '{version}')
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value;"
            ),
        };
        conn.batch(&format!("BEGIN;\n{sql}\n{record}\nCOMMIT;")).map_err(|e| {
            let _ = conn.batch("ROLLBACK");
            DbError::Migration { version, source: Box::new(e) }
        })?;
        tracing::info!(version, "applied migration");
    }
    Ok(list.len().saturating_sub(done))
}

/// The change log's epoch, created once with the log. A new database (or a reset log) gets
/// a new epoch, so a client's old position is answered with `resync_required`.
pub fn epoch(conn: &mut dyn Sql) -> Result<String> {
    if let Some(e) = conn.text("SELECT value FROM tw_meta WHERE key = 'epoch'", &[])? {
        return Ok(e);
    }
    let epoch = format!("e{:08x}", rand::random::<u32>());
    conn.execute(
        "INSERT INTO tw_meta(key, value) VALUES ('epoch', ?1) ON CONFLICT(key) DO NOTHING",
        sql_params![epoch],
    )?;
    // Another process may have won the race: read back what is stored.
    conn.text("SELECT value FROM tw_meta WHERE key = 'epoch'", &[])?
        .ok_or(DbError::Decode(super::DecodeError::NoEpoch))
}
