//! The `tradewire` command: `serve`, `migrate`, `token`, `tail`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tradewire_client::{Options, Subscriber, Update};
use tradewire_server::capture::CaptureMode;
use tradewire_server::config::{Config, Overrides};
use tradewire_server::telemetry::{self, LogFormat};
use tradewire_server::{Server, db};

/// jemalloc rather than glibc malloc: database work runs on tokio's blocking pool, and glibc
/// kept what those threads freed in per-thread arenas, so a long run's resident memory crept
/// up while the live heap stayed flat (heaptrack); jemalloc returns freed pages to the OS.
/// The soak and idle figures are in docs/BENCHMARKS.md.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's bytes allocated and resident, for `/metrics`.
fn jemalloc_stats() -> Option<(u64, u64)> {
    use tikv_jemalloc_ctl::{epoch, stats};
    epoch::advance().ok()?;
    Some((stats::allocated::read().ok()? as u64, stats::resident::read().ok()? as u64))
}

#[derive(Debug, Parser)]
#[command(name = "tradewire", version, about = "Live, gap-free streams of a trading database")]
struct Cli {
    /// Configuration file (TOML). Default: ./tradewire.toml when present.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Data directory (database, generated JWT secret). Default: ./data
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// PostgreSQL instead of the embedded SQLite: postgres://user[:password]@host:port/db
    #[arg(long, global = true, env = "TRADEWIRE_DATABASE")]
    database: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: embedded SQLite, demo data, dashboard.
    Serve {
        /// Address to listen on, e.g. 127.0.0.1:8080
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Demo mode (demo users with known passwords, bots, testing endpoints). The default
        /// on a loopback address; anywhere else it has to be asked for.
        #[arg(long, conflicts_with = "no_demo")]
        demo: bool,
        /// No demo mode: no demo data, and the demo users (if an earlier run seeded them)
        /// cannot log in.
        #[arg(long)]
        no_demo: bool,
        /// Do not run the paper-trading simulator (no market data, orders rest as placed).
        #[arg(long)]
        no_sim: bool,
        /// Log as JSON lines.
        #[arg(long)]
        json_logs: bool,
        /// How PostgreSQL changes are captured: logical (replication) or outbox (triggers).
        #[arg(long, value_enum)]
        capture: Option<CaptureMode>,
    },
    /// Apply the schema migrations and exit (they are also applied by `serve`).
    Migrate,
    /// Mint a token for a user (for scripts and `tail`).
    Token {
        #[arg(long)]
        user: String,
        /// Lifetime in seconds (default: the configured token lifetime).
        #[arg(long)]
        ttl: Option<i64>,
    },
    /// Manage user accounts (works while the server runs).
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Print a user's events live; resumes after reconnects without gaps.
    Tail {
        /// Server base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Token (default: minted locally for --user from the data directory's secret).
        #[arg(long, env = "TRADEWIRE_TOKEN")]
        token: Option<String>,
        #[arg(long)]
        user: Option<String>,
        /// Comma-separated topics, or * for all private topics.
        #[arg(long, default_value = "*")]
        topics: String,
        /// A `where` filter as JSON, e.g. '{"symbol":"BTCUSDT"}'.
        #[arg(long = "where")]
        filter: Option<String>,
        /// Start after this position (<epoch>:<seq>); default: a snapshot.
        #[arg(long)]
        from: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum UserAction {
    /// Add a user (with a portfolio and a risk row); the password is read from stdin.
    Add {
        name: String,
        /// The portfolio's starting balance.
        #[arg(long, default_value = "10000")]
        balance: String,
    },
    /// List the users.
    List,
    /// Set a user's password, read from stdin.
    Passwd { name: String },
    /// Remove a user and every row they own.
    Remove { name: String },
}

/// The password on stdin: its first line, without the line break.
fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).context("reading the password from stdin")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

async fn user(config: &Config, action: &UserAction) -> anyhow::Result<()> {
    use db::users;
    let settings = config.db_settings();
    let db = tokio::task::spawn_blocking(move || db::Db::open(&settings)).await??;
    match action {
        UserAction::Add { name, balance } => {
            let (name, balance, password) = (name.clone(), balance.clone(), read_password()?);
            let id = db.write(move |tx| users::add(tx, &name, &password, &balance)).await??;
            println!("added {id}");
        }
        UserAction::List => {
            for (id, name) in db.read(|c| users::list(c)).await? {
                println!("{name}\t{id}");
            }
        }
        UserAction::Passwd { name } => {
            let (name, password) = (name.clone(), read_password()?);
            db.write(move |tx| users::set_password(tx, &name, &password)).await??;
            println!("password changed");
        }
        UserAction::Remove { name } => {
            let (name, catalog) = (name.clone(), db.catalog().clone());
            db.write(move |tx| users::remove(tx, &catalog, &name)).await??;
            println!("removed");
        }
    }
    Ok(())
}

fn config(cli: &Cli, overrides: Overrides) -> anyhow::Result<Config> {
    Ok(Config::load(
        cli.config.as_deref(),
        &Overrides { data_dir: cli.data_dir.clone(), database: cli.database.clone(), ..overrides },
    )?)
}

/// Most threads tokio's blocking pool may hold (its default is 512). Blocking work is
/// database calls (bounded by the pool, 8 connections by default, plus as many waiting for
/// one), Argon2 (one per core) and the capture reader; past this they queue. The pool's idle
/// threads are woken in turn by the pump's frequent reads, so once grown it never shrinks:
/// a burst of hostile requests grew it to 220 threads, and the server's memory with it.
const MAX_BLOCKING_THREADS: usize = 32;

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::set_allocator_stats(jemalloc_stats);
    match &cli.command {
        Command::Serve { listen, demo, no_demo, no_sim, json_logs, capture } => {
            let overrides = Overrides {
                capture: *capture,
                listen: *listen,
                demo: if *demo { Some(true) } else { no_demo.then_some(false) },
                simulator: no_sim.then_some(false),
                log_format: json_logs.then_some(LogFormat::Json),
                ..Overrides::default()
            };
            let config = config(&cli, overrides)?;
            telemetry::init_logs(&config.log, config.log_format);
            serve(config).await
        }
        Command::Migrate => {
            let config = config(&cli, Overrides::default())?;
            telemetry::init_logs(&config.log, config.log_format);
            let settings = config.db_settings();
            let n = tokio::task::spawn_blocking(move || db::Db::migrate_only(&settings)).await??;
            println!("applied {n} migration(s)");
            Ok(())
        }
        Command::User { action } => {
            let config = config(&cli, Overrides::default())?;
            telemetry::init_logs("warn", LogFormat::Pretty);
            user(&config, action).await
        }
        Command::Token { user, ttl } => {
            let config = config(&cli, Overrides::default())?;
            println!("{}", tokio::task::block_in_place(|| mint(&config, user, *ttl))?);
            Ok(())
        }
        Command::Tail { url, token, user, topics, filter, from } => {
            telemetry::init_logs("warn", LogFormat::Pretty);
            let token = match (token, user) {
                (Some(t), _) => t.clone(),
                (None, Some(u)) => {
                    let config = config(&cli, Overrides::default())?;
                    tokio::task::block_in_place(|| mint(&config, u, None))?
                }
                (None, None) => anyhow::bail!("give --token (or TRADEWIRE_TOKEN) or --user"),
            };
            tail(url, token, topics, filter.as_deref(), from.as_deref()).await
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let demo = config.demo_mode();
    let server = Server::build(config).await.context("cannot start")?;
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler");
            tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        signal.cancel();
    });
    println!("Tradewire is running. Dashboard: http://{addr}/");
    if demo {
        let logins: Vec<String> = db::seed::DEMO_USERS.iter().map(|(u, p)| format!("{u} / {p}")).collect();
        println!("Demo mode. Logins: {}", logins.join(", "));
    }
    server.serve(listener, shutdown).await
}

/// Mint a token from the data directory's secret, for a username.
fn mint(config: &Config, username: &str, ttl: Option<i64>) -> anyhow::Result<String> {
    use tradewire_server::db::Sql;
    use tradewire_server::db::sql::Lite;
    let query = "SELECT id FROM users WHERE username = ?1";
    let user_id = match config.database.as_deref().filter(|d| !d.is_empty()) {
        Some(url) => {
            let (pg, tls) = db::PgTls::from_url(url)?;
            let mut client = pg.connect(tls.connector()).context("connecting to PostgreSQL")?;
            client.text(query, tradewire_server::sql_params![username])?
        }
        None => {
            let path = config.data_dir.join("tradewire.db");
            anyhow::ensure!(path.exists(), "no database at {} (run `tradewire serve` first)", path.display());
            let conn =
                rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            Lite(&conn).text(query, tradewire_server::sql_params![username])?
        }
    }
    .with_context(|| format!("no user {username:?}"))?;
    let secret =
        tradewire_server::credentials::load_or_create_secret(config.jwt_secret.as_ref(), &config.data_dir)?;
    let tokens = tradewire_server::credentials::Tokens::new(&secret, config.token_ttl_secs);
    Ok(tokens.issue(&user_id, username, ttl).0)
}

async fn tail(
    url: &str,
    token: String,
    topics: &str,
    filter: Option<&str>,
    from: Option<&str>,
) -> anyhow::Result<()> {
    let ws_url = format!("{}/v1/ws", url.trim_end_matches('/').replacen("http", "ws", 1));
    let mut opts = Options::new(ws_url, token, topics.split(',').map(|t| t.trim().to_owned()).collect());
    opts.filter = filter.map(serde_json::from_str).transpose().context("--where is a JSON object")?;
    opts.from = from.map(str::parse).transpose().map_err(|_| anyhow::anyhow!("--from is <epoch>:<seq>"))?;
    let mut sub = Subscriber::new(opts);
    loop {
        match sub.next().await? {
            Update::Connected { position } => eprintln!("# connected; stream head {position}"),
            Update::Snapshot { position, rows } => {
                let counts: Vec<String> = rows.iter().map(|(t, r)| format!("{t}={}", r.len())).collect();
                eprintln!("# snapshot at {position}: {}", counts.join(" "));
            }
            Update::Event(ev) => println!("{}", serde_json::to_string(&ev)?),
            Update::Disconnected { code, retry_in } => {
                eprintln!(
                    "# disconnected ({code:?}); resuming from {:?} in {retry_in:?}",
                    sub.position().map(ToString::to_string)
                );
            }
        }
    }
}
