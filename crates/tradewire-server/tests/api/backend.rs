//! The backend the whole suite runs against, chosen by `TW_TEST_BACKEND`:
//! `sqlite` (default), `pg-logical` or `pg-outbox`. The same tests run on each: the
//! conformance suite.
//!
//! On PostgreSQL the suite starts one throwaway cluster per test process with the
//! `initdb`/`pg_ctl` found on PATH (or under /usr/lib/postgresql), with `wal_level=logical`,
//! a free port and its own socket directory; each test gets its own database (and its own
//! replication slot). A watchdog process stops the cluster and removes its directory when
//! the test process exits, however it exits.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use tradewire_server::capture::CaptureMode;
use tradewire_server::config::Config;
use tradewire_server::db::Sql;
use tradewire_server::db::sql::{Cell, Dialect, Lite, Param};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    PgLogical,
    PgOutbox,
}

pub fn backend() -> Backend {
    match std::env::var("TW_TEST_BACKEND").as_deref() {
        Ok("pg-logical") => Backend::PgLogical,
        Ok("pg-outbox") => Backend::PgOutbox,
        Ok("sqlite") | Err(_) => Backend::Sqlite,
        Ok(other) => panic!("TW_TEST_BACKEND={other:?}: use sqlite, pg-logical or pg-outbox"),
    }
}

/// Where a test's data lives: what a second writer connects to.
#[derive(Debug, Clone)]
pub enum Target {
    Sqlite(PathBuf),
    Postgres(String),
}

/// Point `config` at a fresh database of the suite's backend.
pub fn prepare(config: &mut Config) {
    let capture = match backend() {
        Backend::Sqlite => return,
        Backend::PgLogical => CaptureMode::Logical,
        Backend::PgOutbox => CaptureMode::Outbox,
    };
    let db = cluster().create_database();
    config.database = Some(cluster().url(&db));
    config.capture = capture;
    config.slot = format!("s_{db}");
}

pub fn target(config: &Config) -> Target {
    match &config.database {
        Some(url) => Target::Postgres(url.clone()),
        None => Target::Sqlite(config.data_dir.join("tradewire.db")),
    }
}

/// A second writer: a plain connection of its own, usable from async tests (PostgreSQL
/// calls run on a short-lived thread, since the blocking client may not run on the
/// runtime's thread).
pub enum TestSql {
    Lite(rusqlite::Connection),
    Pg(tradewire_server::db::DropOffRuntime<postgres::Client>),
}

fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().expect("database call panicked"))
}

impl TestSql {
    pub fn open(target: &Target) -> Self {
        match target {
            Target::Sqlite(path) => {
                let c = rusqlite::Connection::open(path).unwrap();
                c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
                TestSql::Lite(c)
            }
            Target::Postgres(url) => {
                TestSql::Pg(tradewire_server::db::DropOffRuntime::new(off_runtime(|| {
                    postgres::Client::connect(url, postgres::NoTls).unwrap()
                })))
            }
        }
    }

    /// The first column of the first row as an integer (0 when absent).
    pub fn int(&mut self, sql: &str, params: &[Param]) -> i64 {
        self.value(sql, params).unwrap().map_or(0, |c| c.int())
    }
}

impl Sql for TestSql {
    fn dialect(&self) -> Dialect {
        match self {
            TestSql::Lite(_) => Dialect::Sqlite,
            TestSql::Pg(_) => Dialect::Postgres,
        }
    }

    fn execute(&mut self, sql: &str, params: &[Param]) -> tradewire_server::db::Result<u64> {
        match self {
            TestSql::Lite(c) => Lite(c).execute(sql, params),
            TestSql::Pg(c) => off_runtime(|| Sql::execute(&mut **c, sql, params)),
        }
    }

    fn query(&mut self, sql: &str, params: &[Param]) -> tradewire_server::db::Result<Vec<Vec<Cell>>> {
        match self {
            TestSql::Lite(c) => Lite(c).query(sql, params),
            TestSql::Pg(c) => off_runtime(|| Sql::query(&mut **c, sql, params)),
        }
    }

    fn batch(&mut self, sql: &str) -> tradewire_server::db::Result<()> {
        match self {
            TestSql::Lite(c) => Lite(c).batch(sql),
            TestSql::Pg(c) => off_runtime(|| Sql::batch(&mut **c, sql)),
        }
    }
}

/// Run `sql` with the command-line shell of the backend (`sqlite3` or `psql`): a writer
/// that is another program entirely.
pub fn shell(target: &Target, sql: &str) {
    let out = match target {
        Target::Sqlite(path) => Command::new("sqlite3")
            .arg(path)
            .arg(sql)
            .output()
            .expect("the sqlite3 shell is installed (apt-get install sqlite3; ./scripts/test does it)"),
        Target::Postgres(url) => Command::new("psql")
            .args(["-v", "ON_ERROR_STOP=1", "-q", url, "-c", sql])
            .output()
            .expect("psql is installed (apt-get install postgresql-client; ./scripts/test does it)"),
    };
    assert!(out.status.success(), "shell failed: {}", String::from_utf8_lossy(&out.stderr));
}

pub struct Cluster {
    port: u16,
    dir: PathBuf,
    counter: AtomicUsize,
    /// Stopped and removed on drop (the suite's shared cluster lives in a static and is
    /// left to its watchdog).
    private: bool,
}

fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| Cluster::start("logical", false, |_| String::new()))
}

/// `initdb` and `pg_ctl`: on PATH, else the newest under /usr/lib/postgresql.
fn pg_bin(name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.exists())
    {
        return p;
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin").join(name))
        .filter(|p| p.exists())
        .collect();
    versions.sort();
    versions.pop().unwrap_or_else(|| {
        panic!(
            "TW_TEST_BACKEND asks for PostgreSQL, but `{name}` is not on PATH nor under \
             /usr/lib/postgresql. Install PostgreSQL (apt-get install postgresql; ./scripts/test does it), \
             or run the suite on SQLite only (unset TW_TEST_BACKEND; ./scripts/test \
             honours TW_SKIP_PG=1)."
        )
    })
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

/// Run a PostgreSQL program, as the `postgres` OS user when we are root (it refuses root).
fn pg_command(bin: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Cluster {
    /// A cluster for one test (a restart, another `wal_level`), removed when dropped.
    pub fn start_private(wal_level: &str) -> Cluster {
        Cluster::start(wal_level, true, |_| String::new())
    }

    /// A private cluster whose directory `prepare` fills first (certificates, say); it
    /// answers more server options (`-c name=value …`).
    pub fn start_private_with(wal_level: &str, prepare: impl FnOnce(&Path) -> String) -> Cluster {
        Cluster::start(wal_level, true, prepare)
    }

    fn start(wal_level: &str, private: bool, prepare: impl FnOnce(&Path) -> String) -> Cluster {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tradewire-pg-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            let ok = Command::new("chown").args(["-R", "postgres"]).arg(&dir).status().unwrap().success();
            assert!(ok, "chown of the cluster directory to postgres failed");
        }
        let data = dir.join("data");
        let out = pg_command(&pg_bin("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .expect("initdb runs");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let extra = prepare(&dir);
        if is_root() {
            let ok = Command::new("chown").args(["-R", "postgres"]).arg(&dir).status().unwrap().success();
            assert!(ok, "chown of the cluster directory to postgres failed");
        }
        let port = free_port();
        let options = format!(
            "-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} \
             -c wal_level={wal_level} -c max_wal_senders=100 -c max_replication_slots=200 \
             -c max_connections=400 -c fsync=off -c full_page_writes=off {extra}",
            dir.display()
        );
        let out = pg_command(&pg_bin("pg_ctl"))
            .args(["-D"])
            .arg(&data)
            .args(["-o", &options, "-l"])
            .arg(dir.join("log"))
            .args(["-w", "-t", "60", "start"])
            .output()
            .expect("pg_ctl runs");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            std::fs::read_to_string(dir.join("log")).unwrap_or_default()
        );
        // The watchdog: when this process is gone, stop the cluster and remove it.
        let pg_ctl = pg_bin("pg_ctl");
        let stop = if is_root() {
            format!("runuser -u postgres -- {} -D {} -m immediate stop", pg_ctl.display(), data.display())
        } else {
            format!("{} -D {} -m immediate stop", pg_ctl.display(), data.display())
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            dir = dir.display()
        );
        // Detached on purpose: it outlives this process to clean up after it.
        #[allow(clippy::zombie_processes)]
        Command::new("setsid")
            .args(["sh", "-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the cluster watchdog starts");
        Cluster { port, dir, counter: AtomicUsize::new(0), private }
    }

    /// The cluster's directory (its data, log and socket).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn create_database(&self) -> String {
        let name = format!("t{}", self.counter.fetch_add(1, Ordering::Relaxed));
        let url = self.url("postgres");
        off_runtime(|| {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        });
        name
    }

    /// Restart the whole cluster (a PostgreSQL restart as the server sees it).
    pub fn restart(&self) {
        let data = self.dir.join("data");
        let out = pg_command(&pg_bin("pg_ctl"))
            .args(["-D"])
            .arg(&data)
            .args(["-m", "fast", "-w", "-t", "60", "-l"])
            .arg(self.dir.join("log"))
            .arg("restart")
            // The new postmaster must not hold our pipes open (output() would wait forever).
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("pg_ctl runs");
        assert!(out.success(), "pg_ctl restart failed; see {}", self.dir.join("log").display());
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.private {
            let _ = pg_command(&pg_bin("pg_ctl"))
                .args(["-D"])
                .arg(self.dir.join("data"))
                .args(["-m", "immediate", "stop"])
                .output();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
