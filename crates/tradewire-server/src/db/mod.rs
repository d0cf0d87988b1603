//! The database: opening it, migrations, the catalog of captured tables, capture triggers
//! and demo data.
//!
//! Owns every SQL statement that touches the trading tables' shape. It does not know about
//! sessions or HTTP: the changefeed reads the change log through [`Db`], the API writes
//! through it.

pub mod capture;
pub mod catalog;
pub mod rows;
pub mod schema;
pub mod seed;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use tokio::sync::Notify;

pub use catalog::{Catalog, ColumnKind, TableInfo};

/// Errors of the database layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("connection pool: {0}")]
    Pool(#[from] r2d2::Error),
    #[error("data directory {path}: {reason}")]
    DataDir { path: PathBuf, reason: String },
    #[error("migration {version}: {source}")]
    Migration { version: usize, source: rusqlite::Error },
    #[error("captured table {table}: {reason}")]
    Catalog { table: String, reason: String },
    #[error("database task panicked or was cancelled")]
    Join,
}

pub type Result<T, E = DbError> = std::result::Result<T, E>;

/// A handle to the SQLite database: a pool of connections, the catalog of captured
/// tables, the stream epoch, and the pump's wake-up. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: r2d2::Pool<SqliteConnectionManager>,
    path: Arc<Path>,
    catalog: Arc<Catalog>,
    epoch: Arc<str>,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("path", &self.path).finish()
    }
}

/// Settings every connection gets.
fn configure(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "wal")?;
    conn.pragma_update(None, "synchronous", "normal")?;
    conn.pragma_update(None, "foreign_keys", "on")?;
    Ok(())
}

impl Db {
    /// Open (creating if needed) the database file in `data_dir`, apply migrations and
    /// install capture triggers. A missing or unwritable directory is a clear error.
    pub fn open(data_dir: &Path, pool_size: u32) -> Result<Self> {
        check_data_dir(data_dir)?;
        let path: Arc<Path> = data_dir.join("tradewire.db").into();
        let mut conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        )?;
        configure(&mut conn)?;
        schema::migrate(&mut conn)?;
        let epoch = schema::epoch(&conn)?;
        let catalog = Catalog::load(&conn, &catalog::builtin_tables())?;
        capture::install(&mut conn, &catalog)?;
        drop(conn);

        let manager = SqliteConnectionManager::file(&path).with_init(configure);
        let pool = r2d2::Pool::builder()
            .max_size(pool_size.max(2))
            .connection_timeout(Duration::from_secs(10))
            .build(manager)?;
        Ok(Self {
            pool,
            path,
            catalog: Arc::new(catalog),
            epoch: epoch.into(),
            wake: Arc::new(Notify::new()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The epoch of the change log: changes when the log is reset.
    pub fn epoch(&self) -> &Arc<str> {
        &self.epoch
    }

    /// Notified after every commit made through [`Db::write`], so the pump reads at once.
    pub fn wake(&self) -> &Arc<Notify> {
        &self.wake
    }

    /// A fresh connection that is not from the pool, for the pump's dedicated thread.
    pub fn dedicated_connection(&self) -> Result<Connection> {
        let mut conn = Connection::open_with_flags(&self.path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        configure(&mut conn)?;
        Ok(conn)
    }

    /// Run a read on a pooled connection, off the async runtime.
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.get()?;
            f(&conn)
        })
        .await
        .map_err(|_| DbError::Join)?
    }

    /// Run `f` in an immediate write transaction, commit, and wake the pump. `E` lets the
    /// API return its own errors (a conflict, a validation failure) from inside `f`; any
    /// error rolls the transaction back.
    pub async fn write<T, E, F>(&self, f: F) -> std::result::Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> std::result::Result<T, E> + Send + 'static,
    {
        let pool = self.pool.clone();
        let wake = self.wake.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.get().map_err(DbError::from)?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(DbError::from)?;
            let out = f(&tx)?;
            tx.commit().map_err(DbError::from)?;
            wake.notify_one();
            Ok(out)
        })
        .await
        .map_err(|_| E::from(DbError::Join))?
    }

    /// Is the database answering? (for `/readyz`)
    pub async fn ping(&self) -> Result<()> {
        self.read(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?)).await
    }
}

fn check_data_dir(dir: &Path) -> Result<()> {
    let err = |reason: String| DbError::DataDir { path: dir.to_owned(), reason };
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create it: {e}")))?;
    }
    if !dir.is_dir() {
        return Err(err("exists but is not a directory".into()));
    }
    let probe = dir.join(".tradewire-write-test");
    std::fs::write(&probe, b"ok").map_err(|e| err(format!("is not writable: {e}")))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}
