//! The database: opening it, migrations, the catalog of captured tables, rows as JSON, and
//! demo data.
//!
//! Owns every SQL statement that touches the trading tables' shape. It does not know about
//! capture, sessions or HTTP: capture installs itself through [`Db`], the changefeed reads
//! the change log through it, the API writes through it. Two backends: the embedded SQLite
//! file (default) and PostgreSQL.

pub mod catalog;
pub mod rows;
pub mod schema;
pub mod seed;
pub mod sql;
pub mod tls;
pub mod users;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use r2d2_postgres::PostgresConnectionManager;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use tokio::sync::Notify;

pub use catalog::{Catalog, CatalogError, ColumnKind, TableInfo, TableSpec};
pub use sql::{Dialect, Sql};
pub use tls::{PgTls, TlsError};

/// Errors of the database layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {}", pg_message(.0))]
    Postgres(#[from] postgres::Error),
    #[error("connection pool: {0}")]
    Pool(#[from] r2d2::Error),
    #[error("data directory {path}: {problem}{}", source.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    DataDir {
        path: PathBuf,
        problem: &'static str,
        #[source]
        source: Option<std::io::Error>,
    },
    #[error("migration {version}: {source}")]
    Migration { version: usize, source: Box<DbError> },
    #[error("captured table {table}: {problem}")]
    Catalog { table: String, problem: CatalogError },
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("PostgreSQL TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("this needs {wanted}; the database is another backend")]
    WrongBackend { wanted: &'static str },
    #[error("database task panicked or was cancelled")]
    Join,
}

impl DbError {
    /// Would the same write succeed if tried again: SQLite busy or locked (another process
    /// held the write lock past the busy timeout), a PostgreSQL deadlock or serialization
    /// failure?
    /// PostgreSQL aborted the transaction so that another could go on (a deadlock victim,
    /// a serialization failure): running it again from the start is the remedy.
    pub fn is_retryable(&self) -> bool {
        use postgres::error::SqlState;
        matches!(self, DbError::Postgres(e)
            if matches!(e.code(), Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE))
    }

    pub fn is_transient(&self) -> bool {
        use postgres::error::SqlState;
        match self {
            DbError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            }
            DbError::Postgres(e) => {
                matches!(e.code(), Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE)
            }
            _ => false,
        }
    }
}

/// A value read from the database that does not have the shape it must have.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("a row read from {what} does not have {columns} column(s)")]
    Shape { what: &'static str, columns: usize },
    #[error("row JSON: {0}")]
    RowJson(#[from] serde_json::Error),
    #[error("tw_meta has no epoch")]
    NoEpoch,
}

pub type Result<T, E = DbError> = std::result::Result<T, E>;

/// Where the data lives.
#[derive(Debug, Clone)]
pub struct DbSettings {
    pub data_dir: PathBuf,
    /// A `postgres://` URL; `None` for the embedded SQLite file in `data_dir`.
    pub database: Option<String>,
    pub pool_size: u32,
    /// Operator tables captured besides the built-in ones.
    pub tables: Vec<TableSpec>,
}

type PgPool = r2d2::Pool<PostgresConnectionManager<tls::MakeRustlsConnect>>;

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
    Sqlite { pool: r2d2::Pool<SqliteConnectionManager>, path: Arc<Path> },
    Postgres { pool: DropOffRuntime<PgPool>, config: postgres::Config, tls: PgTls },
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
        f.debug_struct("Db").field("dialect", &self.dialect()).finish()
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

impl Db {
    /// Open the database, apply migrations and load the catalog. A missing or unwritable
    /// directory or an unreachable server is a clear error. Capture is installed next, by
    /// the capture module.
    pub fn open(settings: &DbSettings) -> Result<Self> {
        Catalog::check_operator_tables(&settings.tables)?;
        let mut specs = catalog::builtin_tables();
        specs.extend(settings.tables.iter().cloned());
        match &settings.database {
            None => Self::open_sqlite(settings, &specs),
            Some(url) => Self::open_postgres(settings, url, &specs),
        }
    }

    fn open_sqlite(settings: &DbSettings, specs: &[TableSpec]) -> Result<Self> {
        let path: Arc<Path> = sqlite_file(&settings.data_dir)?.into();
        let mut conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        )?;
        configure(&mut conn)?;
        let sql = &mut sql::Lite(&conn);
        schema::migrate(sql)?;
        let epoch = schema::epoch(sql)?;
        let catalog = Catalog::load(sql, specs)?;
        drop(conn);

        let manager = SqliteConnectionManager::file(&path).with_init(configure);
        let pool = r2d2::Pool::builder()
            .max_size(settings.pool_size.max(2))
            .connection_timeout(Duration::from_secs(10))
            .build(manager)?;
        Ok(Self::assemble(Backend::Sqlite { pool, path }, catalog, epoch))
    }

    fn open_postgres(settings: &DbSettings, url: &str, specs: &[TableSpec]) -> Result<Self> {
        let (config, tls) = PgTls::from_url(url)?;
        let mut client = config.connect(tls.connector())?;
        schema::migrate(&mut client)?;
        let epoch = schema::epoch(&mut client)?;
        let catalog = Catalog::load(&mut client, specs)?;
        drop(client);
        let pool = r2d2::Pool::builder()
            .max_size(settings.pool_size.max(2))
            .connection_timeout(Duration::from_secs(10))
            .build(PostgresConnectionManager::new(config.clone(), tls.connector()))?;
        let backend = Backend::Postgres { pool: DropOffRuntime::new(pool), config, tls };
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
                let mut conn = Connection::open(sqlite_file(&settings.data_dir)?)?;
                configure(&mut conn)?;
                schema::migrate(&mut sql::Lite(&conn))
            }
            Some(url) => {
                let (config, tls) = PgTls::from_url(url)?;
                let mut client = config.connect(tls.connector())?;
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

    /// How PostgreSQL connections use TLS, when on PostgreSQL.
    pub fn pg_tls(&self) -> Option<&PgTls> {
        match &*self.backend {
            Backend::Sqlite { .. } => None,
            Backend::Postgres { tls, .. } => Some(tls),
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
        let path = self.sqlite_path().ok_or(DbError::WrongBackend { wanted: "SQLite" })?;
        let mut conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        configure(&mut conn)?;
        Ok(conn)
    }

    /// A fresh PostgreSQL connection that is not from the pool. Its drop blocks, so it is
    /// dropped off the async runtime.
    pub fn pg_client(&self) -> Result<DropOffRuntime<postgres::Client>> {
        let config = self.pg_config().ok_or(DbError::WrongBackend { wanted: "PostgreSQL" })?;
        let tls = self.pg_tls().ok_or(DbError::WrongBackend { wanted: "PostgreSQL" })?;
        Ok(DropOffRuntime::new(config.connect(tls.connector())?))
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
    ///
    /// A transaction PostgreSQL aborted as a deadlock victim or a serialization failure is
    /// run again from the start, up to [`WRITE_ATTEMPTS`] times in all, after a short
    /// random pause: `f` is `FnMut` for that, and must not keep what an earlier attempt did
    /// outside the transaction. (SQLite's busy lock is already waited for by its busy
    /// timeout, so it is not retried here.)
    pub async fn write<T, E, F>(&self, mut f: F) -> std::result::Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
        F: FnMut(&mut dyn Sql) -> std::result::Result<T, E> + Send + 'static,
    {
        let backend = self.backend.clone();
        let wake = self.wake.clone();
        let out = tokio::task::spawn_blocking(move || {
            let mut attempt = 1;
            loop {
                let mut aborted = false;
                let out = match &*backend {
                    Backend::Sqlite { pool, .. } => {
                        let mut conn = pool.get().map_err(DbError::from)?;
                        let tx = conn
                            .transaction_with_behavior(TransactionBehavior::Immediate)
                            .map_err(DbError::from)?;
                        let out = f(&mut sql::Lite(&tx))?;
                        tx.commit().map_err(DbError::from)?;
                        Ok(out)
                    }
                    Backend::Postgres { pool, .. } => {
                        let mut conn = pool.get().map_err(DbError::from)?;
                        let mut tx = conn.transaction().map_err(DbError::from)?;
                        match f(&mut Watched { inner: &mut tx, aborted: &mut aborted }) {
                            Ok(out) => match tx.commit().map_err(DbError::from) {
                                Ok(()) => Ok(out),
                                Err(e) => {
                                    aborted = e.is_retryable();
                                    Err(E::from(e))
                                }
                            },
                            Err(e) => Err(e),
                        }
                    }
                };
                if out.is_err() && aborted && attempt < WRITE_ATTEMPTS {
                    metrics::counter!("tradewire_write_retries_total").increment(1);
                    tracing::debug!(
                        attempt,
                        "write transaction aborted by PostgreSQL (deadlock or serialization); retrying"
                    );
                    std::thread::sleep(Duration::from_millis(
                        rand::random_range(5..=20) * u64::from(attempt),
                    ));
                    attempt += 1;
                    continue;
                }
                return out;
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

/// How many times in all a write transaction runs when PostgreSQL keeps aborting it.
pub const WRITE_ATTEMPTS: u32 = 4;

/// A transaction as [`Sql`] that notes whether a statement failed because PostgreSQL
/// aborted the transaction (the caller's error type may no longer say so).
struct Watched<'a, 'b> {
    inner: &'a mut postgres::Transaction<'b>,
    aborted: &'a mut bool,
}

impl Watched<'_, '_> {
    fn note<T>(&mut self, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            *self.aborted |= e.is_retryable();
        }
        r
    }
}

impl Sql for Watched<'_, '_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&mut self, sql: &str, params: &[sql::Param]) -> Result<u64> {
        let r = Sql::execute(self.inner, sql, params);
        self.note(r)
    }

    fn query(&mut self, sql: &str, params: &[sql::Param]) -> Result<Vec<Vec<sql::Cell>>> {
        let r = Sql::query(self.inner, sql, params);
        self.note(r)
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        let r = Sql::batch(self.inner, sql);
        self.note(r)
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

/// The SQLite database file in `data_dir`, the directory checked and every file of the
/// database restricted to its owner (0600, set before SQLite opens it: its `-wal` and
/// `-shm` files take the database file's mode).
fn sqlite_file(data_dir: &Path) -> Result<PathBuf> {
    check_data_dir(data_dir)?;
    let path = data_dir.join("tradewire.db");
    let private = |source| DbError::DataDir {
        path: data_dir.to_owned(),
        problem: "cannot restrict the database to its owner",
        source: Some(source),
    };
    crate::private_files::touch_private(&path).map_err(private)?;
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        crate::private_files::tighten(Path::new(&side), 0o600).map_err(private)?;
    }
    Ok(path)
}

fn check_data_dir(dir: &Path) -> Result<()> {
    let err = |problem: &'static str, source: Option<std::io::Error>| DbError::DataDir {
        path: dir.to_owned(),
        problem,
        source,
    };
    if dir.exists() && !dir.is_dir() {
        return Err(err("exists but is not a directory", None));
    }
    crate::private_files::private_dir(dir)
        .map_err(|e| err("cannot create it or restrict it to its owner", Some(e)))?;
    let probe = dir.join(".tradewire-write-test");
    std::fs::write(&probe, b"ok").map_err(|e| err("is not writable", Some(e)))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}
