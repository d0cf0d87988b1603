//! The database: opening it, migrations, the catalog of captured tables, capture triggers
//! and demo data.
//!
//! Owns every SQL statement that touches the trading tables' shape. It does not know about
//! sessions or HTTP: the changefeed reads the change log through [`Db`], the API writes
//! through it. Two backends: the embedded SQLite file (default) and PostgreSQL.

pub mod capture;
pub mod catalog;
pub mod rows;
pub mod schema;
pub mod seed;
pub mod sql;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use r2d2_postgres::PostgresConnectionManager;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use tokio::sync::Notify;

pub use catalog::{Catalog, ColumnKind, TableInfo, TableSpec};
pub use sql::{Dialect, Sql};

use crate::config::CaptureMode;

/// Errors of the database layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {}", pg_message(.0))]
    Postgres(#[from] postgres::Error),
    #[error("connection pool: {0}")]
    Pool(#[from] r2d2::Error),
    #[error("data directory {path}: {reason}")]
    DataDir { path: PathBuf, reason: String },
    #[error("migration {version}: {reason}")]
    Migration { version: usize, reason: String },
    #[error("captured table {table}: {reason}")]
    Catalog { table: String, reason: String },
    #[error("PostgreSQL set-up: {0}")]
    Setup(String),
    #[error("logical replication: {0}")]
    Replication(String),
    #[error("unreadable value: {0}")]
    Decode(String),
    #[error("database task panicked or was cancelled")]
    Join,
}

pub type Result<T, E = DbError> = std::result::Result<T, E>;

/// Where the data lives and how changes are captured.
#[derive(Debug, Clone)]
pub struct DbSettings {
    pub data_dir: PathBuf,
    /// A `postgres://` URL; `None` for the embedded SQLite file in `data_dir`.
    pub database: Option<String>,
    pub pool_size: u32,
    pub capture: CaptureMode,
    pub slot: String,
    pub publication: String,
    pub max_slot_lag_bytes: u64,
    /// Operator tables captured besides the built-in ones.
    pub tables: Vec<TableSpec>,
}

type PgPool = r2d2::Pool<PostgresConnectionManager<postgres::NoTls>>;

/// Holds a value whose drop blocks (a PostgreSQL client closes its connection with a
/// blocking call, which must not run on an async worker thread): dropped on a thread of
/// its own.
pub struct DropOffRuntime<T: Send + 'static>(Option<T>);

impl<T: Send + 'static> DropOffRuntime<T> {
    pub fn new(value: T) -> Self {
        Self(Some(value))
    }
}

impl<T: Send + 'static> std::ops::Deref for DropOffRuntime<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.0.as_ref().expect("present until dropped")
    }
}

impl<T: Send + 'static> std::ops::DerefMut for DropOffRuntime<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.0.as_mut().expect("present until dropped")
    }
}

impl<T: Send + 'static> Drop for DropOffRuntime<T> {
    fn drop(&mut self) {
        if let Some(v) = self.0.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                std::thread::spawn(move || drop(v));
            } else {
                drop(v);
            }
        }
    }
}

// One value per process, behind an `Arc`: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
enum Backend {
    Sqlite {
        pool: r2d2::Pool<SqliteConnectionManager>,
        path: Arc<Path>,
    },
    Postgres {
        pool: DropOffRuntime<PgPool>,
        config: postgres::Config,
        capture: CaptureMode,
        slot: String,
        publication: String,
        max_slot_lag_bytes: u64,
    },
}

/// How the open database captures changes (what runs the changefeed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capture {
    /// SQLite triggers; the pump polls the log.
    SqliteTriggers,
    /// PostgreSQL logical replication from `slot` over `publication`.
    Logical { slot: String, publication: String },
    /// PostgreSQL triggers into the outbox; the pump polls it, woken by NOTIFY.
    Outbox,
}

/// A handle to the database: a pool of connections, the catalog of captured tables, the
/// stream epoch, and the pump's wake-up. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    backend: Arc<Backend>,
    catalog: Arc<Catalog>,
    epoch: Arc<str>,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("capture", &self.capture()).finish()
    }
}

/// Settings every SQLite connection gets.
fn configure(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "wal")?;
    conn.pragma_update(None, "synchronous", "normal")?;
    conn.pragma_update(None, "foreign_keys", "on")?;
    Ok(())
}

fn check_names(settings: &DbSettings) -> Result<()> {
    Catalog::check_operator_tables(&settings.tables)?;
    for name in [&settings.slot, &settings.publication] {
        if !catalog::is_identifier(name) {
            return Err(DbError::Setup(format!("{name:?} is not a plain lower-case identifier")));
        }
    }
    Ok(())
}

impl Db {
    /// Open the database, apply migrations, load the catalog and install capture. A missing
    /// or unwritable directory, an unreachable server or a server not set up for the
    /// capture mode is a clear error.
    pub fn open(settings: &DbSettings) -> Result<Self> {
        check_names(settings)?;
        let mut specs = catalog::builtin_tables();
        specs.extend(settings.tables.iter().cloned());
        match &settings.database {
            None => Self::open_sqlite(settings, &specs),
            Some(url) => Self::open_postgres(settings, url, &specs),
        }
    }

    fn open_sqlite(settings: &DbSettings, specs: &[TableSpec]) -> Result<Self> {
        let data_dir = &settings.data_dir;
        check_data_dir(data_dir)?;
        let path: Arc<Path> = data_dir.join("tradewire.db").into();
        let mut conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        )?;
        configure(&mut conn)?;
        let sql = &mut sql::Lite(&conn);
        schema::migrate(sql)?;
        let epoch = schema::epoch(sql)?;
        let catalog = Catalog::load(sql, specs)?;
        capture::install_sqlite(sql, &catalog)?;
        drop(conn);

        let manager = SqliteConnectionManager::file(&path).with_init(configure);
        let pool = r2d2::Pool::builder()
            .max_size(settings.pool_size.max(2))
            .connection_timeout(Duration::from_secs(10))
            .build(manager)?;
        Ok(Self::assemble(Backend::Sqlite { pool, path }, catalog, epoch))
    }

    fn open_postgres(settings: &DbSettings, url: &str, specs: &[TableSpec]) -> Result<Self> {
        let config: postgres::Config = url.parse()?;
        let mut client = config.connect(postgres::NoTls)?;
        schema::migrate(&mut client)?;
        let epoch = schema::epoch(&mut client)?;
        let catalog = Catalog::load(&mut client, specs)?;
        match settings.capture {
            CaptureMode::Logical => {
                capture::install_logical(&mut client, &catalog, &settings.slot, &settings.publication)?
            }
            CaptureMode::Outbox => capture::install_outbox(&mut client, &catalog, &settings.slot)?,
        }
        drop(client);
        let pool = r2d2::Pool::builder()
            .max_size(settings.pool_size.max(2))
            .connection_timeout(Duration::from_secs(10))
            .build(PostgresConnectionManager::new(config.clone(), postgres::NoTls))?;
        let backend = Backend::Postgres {
            pool: DropOffRuntime::new(pool),
            config,
            capture: settings.capture,
            slot: settings.slot.clone(),
            publication: settings.publication.clone(),
            max_slot_lag_bytes: settings.max_slot_lag_bytes,
        };
        Ok(Self::assemble(backend, catalog, epoch))
    }

    fn assemble(backend: Backend, catalog: Catalog, epoch: String) -> Self {
        Self {
            backend: Arc::new(backend),
            catalog: Arc::new(catalog),
            epoch: epoch.into(),
            wake: Arc::new(Notify::new()),
        }
    }

    /// Apply migrations only (`tradewire migrate`); how many were applied.
    pub fn migrate_only(settings: &DbSettings) -> Result<usize> {
        match &settings.database {
            None => {
                check_data_dir(&settings.data_dir)?;
                let mut conn = Connection::open(settings.data_dir.join("tradewire.db"))?;
                configure(&mut conn)?;
                schema::migrate(&mut sql::Lite(&conn))
            }
            Some(url) => {
                let mut client = url.parse::<postgres::Config>()?.connect(postgres::NoTls)?;
                schema::migrate(&mut client)
            }
        }
    }

    pub fn dialect(&self) -> Dialect {
        match &*self.backend {
            Backend::Sqlite { .. } => Dialect::Sqlite,
            Backend::Postgres { .. } => Dialect::Postgres,
        }
    }

    pub fn capture(&self) -> Capture {
        match &*self.backend {
            Backend::Sqlite { .. } => Capture::SqliteTriggers,
            Backend::Postgres { capture: CaptureMode::Logical, slot, publication, .. } => {
                Capture::Logical { slot: slot.clone(), publication: publication.clone() }
            }
            Backend::Postgres { capture: CaptureMode::Outbox, .. } => Capture::Outbox,
        }
    }

    /// The SQLite file, when on SQLite.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match &*self.backend {
            Backend::Sqlite { path, .. } => Some(path),
            Backend::Postgres { .. } => None,
        }
    }

    /// The PostgreSQL connection settings, when on PostgreSQL.
    pub fn pg_config(&self) -> Option<&postgres::Config> {
        match &*self.backend {
            Backend::Sqlite { .. } => None,
            Backend::Postgres { config, .. } => Some(config),
        }
    }

    /// The bound on WAL held back by the replication slot (0 when not on PostgreSQL).
    pub fn max_slot_lag_bytes(&self) -> u64 {
        match &*self.backend {
            Backend::Postgres { max_slot_lag_bytes, .. } => *max_slot_lag_bytes,
            Backend::Sqlite { .. } => 0,
        }
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

    /// A fresh SQLite connection that is not from the pool, for the pump's own thread.
    pub fn sqlite_connection(&self) -> Result<Connection> {
        let path = self.sqlite_path().ok_or_else(|| DbError::Setup("not an SQLite database".into()))?;
        let mut conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        configure(&mut conn)?;
        Ok(conn)
    }

    /// A fresh PostgreSQL connection that is not from the pool.
    pub fn pg_client(&self) -> Result<postgres::Client> {
        let config = self.pg_config().ok_or_else(|| DbError::Setup("not a PostgreSQL database".into()))?;
        Ok(config.connect(postgres::NoTls)?)
    }

    /// Run a read on a pooled connection, off the async runtime.
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Sql) -> Result<T> + Send + 'static,
    {
        let backend = self.backend.clone();
        tokio::task::spawn_blocking(move || match &*backend {
            Backend::Sqlite { pool, .. } => f(&mut sql::Lite(&*pool.get()?)),
            Backend::Postgres { pool, .. } => f(&mut *pool.get()?),
        })
        .await
        .map_err(|_| DbError::Join)?
    }

    /// Run `f` in a write transaction, commit, and wake the pump. `E` lets the API return
    /// its own errors (a conflict, a validation failure) from inside `f`; any error rolls
    /// the transaction back. SQLite writes are serialized (`BEGIN IMMEDIATE`); PostgreSQL
    /// runs them at READ COMMITTED, with unique constraints as the guard against races.
    pub async fn write<T, E, F>(&self, f: F) -> std::result::Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
        F: FnOnce(&mut dyn Sql) -> std::result::Result<T, E> + Send + 'static,
    {
        let backend = self.backend.clone();
        let wake = self.wake.clone();
        let out = tokio::task::spawn_blocking(move || match &*backend {
            Backend::Sqlite { pool, .. } => {
                let mut conn = pool.get().map_err(DbError::from)?;
                let tx =
                    conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(DbError::from)?;
                let out = f(&mut sql::Lite(&tx))?;
                tx.commit().map_err(DbError::from)?;
                Ok(out)
            }
            Backend::Postgres { pool, .. } => {
                let mut conn = pool.get().map_err(DbError::from)?;
                let mut tx = conn.transaction().map_err(DbError::from)?;
                let out = f(&mut tx)?;
                tx.commit().map_err(DbError::from)?;
                Ok(out)
            }
        })
        .await
        .map_err(|_| E::from(DbError::Join))?;
        if out.is_ok() {
            wake.notify_one();
        }
        out
    }

    /// Is the database answering? (for `/readyz`)
    pub async fn ping(&self) -> Result<()> {
        self.read(|c| c.value("SELECT 1", &[]).map(drop)).await
    }
}

/// A PostgreSQL error with the server's message (the plain `Display` says only "db error").
fn pg_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut m = format!("{} ({})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                m += &format!("; {detail}");
            }
            if let Some(hint) = db.hint() {
                m += &format!("; hint: {hint}");
            }
            m
        }
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
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
