//! `tradewire-bench`: drives a running Tradewire server over loopback and measures it.
//!
//! It writes through the database file like any other writer (so the capture pipeline is
//! what is measured), mints tokens from the server's secret, and talks to the server only
//! over its public protocol. Each scenario prints a human table and one JSON summary line.
//!
//! Scenarios:
//! - `latency`: N clients, a writer committing R changes/s; commit-to-client latency.
//! - `idle`: N idle WebSocket connections; the server's resident memory per connection.
//! - `catchup`: replay after being offline.
//! - `fanout`: one public market topic to N clients (lean clients, `rawws`).
//! - `polling` (polling.rs): one dashboard workload served by 5 s REST polling and by push;
//!   requests, bytes and staleness per client.
//! - `soak` (soak.rs): N clients on their user streams for a long time; gaps, duplicates
//!   and resumes checked by every client, the server's memory sampled.
//! - `chaos` (chaos.rs): honest clients resuming every few seconds while hostile clients
//!   send garbage, flood, spam topics and guess logins from other loopback addresses;
//!   every honest client must see every change of its user exactly once.

mod chaos;
mod polling;
mod rawws;
mod soak;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Parser, Subcommand};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tradewire_protocol::{ServerFrame, TokenClaims};

#[derive(Debug, Parser)]
#[command(name = "tradewire-bench")]
struct Cli {
    /// Server base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080", global = true)]
    url: String,
    /// The server's data directory (database file and jwt.secret).
    #[arg(long, default_value = "./data", global = true)]
    data_dir: PathBuf,
    /// The server's PostgreSQL database (`latency` writes there instead of the SQLite file).
    #[arg(long, global = true)]
    database: Option<String>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Writer {
    Db,
    Api,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Commit-to-client latency with N subscribed clients and a steady write rate.
    Latency {
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Changes committed per second (spread over the clients' users).
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Who writes: `db` (another process's SQLite connection; the pump finds the
        /// commit at its next poll) or `api` (REST `POST /v1/orders`; the commit wakes the
        /// pump at once).
        #[arg(long, value_enum, default_value_t = Writer::Db)]
        writer: Writer,
        /// Changes per transaction (`db` writer).
        #[arg(long, default_value_t = 1)]
        batch: u64,
        /// PostgreSQL only: the writer's `synchronous_commit` (`on`, `off`).
        #[arg(long, default_value = "on")]
        synchronous_commit: String,
    },
    /// A client offline while N of its changes commit reconnects from its position: the
    /// time until it has them all (and is live again).
    Catchup {
        #[arg(long, default_value_t = 100_000)]
        changes: u64,
    },
    /// One public market topic to N clients: deliveries per second and latency.
    Fanout {
        #[arg(long, default_value_t = 10_000)]
        clients: usize,
        #[arg(long, default_value = "ticker:BTCUSDT")]
        topic: String,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// Long run: clients check their streams for gaps and duplicates (across reconnects),
    /// the server's memory is sampled. Exits with status 2 when a target is missed.
    Soak(soak::SoakArgs),
    /// The same dashboard by REST polling and by push: requests, bytes and staleness.
    Polling(polling::PollingArgs),
    /// Honest clients with resumes under hostile traffic: every change seen exactly once,
    /// the server's memory back after the attack. Exits with status 2 when an honest
    /// client did not see every change of its user exactly once (a gap, a duplicate, a
    /// change still missing at the end) or the writer failed.
    Chaos(chaos::ChaosArgs),
    /// Server memory with N idle WebSocket connections.
    Idle {
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// The server's process id (to read its resident memory).
        #[arg(long)]
        pid: u32,
        /// How long to hold the connections before measuring.
        #[arg(long, default_value_t = 5)]
        hold_seconds: u64,
    },
}

fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or_default()
}

/// Bench users `u_bench_<i>`, created directly in the database (they log in with tokens
/// minted from the secret, so they need no password).
fn ensure_users(db: &rusqlite::Connection, n: usize) -> anyhow::Result<()> {
    let tx = db.unchecked_transaction()?;
    for i in 0..n {
        tx.execute(
            "INSERT INTO users(id, username, password_hash, created_at)
             SELECT ?1, ?2, '!', 0 WHERE NOT EXISTS (SELECT 1 FROM users WHERE id = ?1)",
            rusqlite::params![format!("u_bench_{i}"), format!("bench_{i}")],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// The server's token secret, from its data directory.
fn jwt_secret(cli: &Cli) -> anyhow::Result<Vec<u8>> {
    let text = std::fs::read_to_string(cli.data_dir.join("jwt.secret")).context("reading jwt.secret")?;
    Ok(text.trim().as_bytes().to_vec())
}

fn mint(secret: &[u8], i: usize) -> anyhow::Result<String> {
    mint_for(secret, i, 6 * 3600)
}

/// A token of bench user `i` that expires `ttl_secs` from now (negative: expired already).
fn mint_for(secret: &[u8], i: usize, ttl_secs: i64) -> anyhow::Result<String> {
    let iat = (now_micros() / 1_000_000) as i64;
    let claims =
        TokenClaims { sub: format!("u_bench_{i}"), name: format!("bench_{i}"), exp: iat + ttl_secs, iat };
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )?)
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The clients' read buffer. tungstenite zero-fills the whole free part of its read buffer
/// before every read (128 KiB by default), which made `memset` half of the bench's CPU in
/// the fan-out profile; frames here are a few hundred bytes, and the buffer grows for a
/// larger one.
const CLIENT_READ_BUFFER: usize = 4096;

async fn open(req: tokio_tungstenite::tungstenite::handshake::client::Request) -> anyhow::Result<Socket> {
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(CLIENT_READ_BUFFER);
    let (ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(config), false).await?;
    Ok(ws)
}

async fn connect(ws_url: &str, token: &str, topics: serde_json::Value) -> anyhow::Result<Socket> {
    Ok(subscribe_from(ws_url, token, topics, json!("now")).await?.0)
}

/// Open a WebSocket with `token` and subscribe (id `b`) to `topics` from `from` (`"now"`,
/// `"snapshot"` or a position): the socket, after the `welcome`, and the server's answer
/// to the subscribe (`subscribed`, or `resync_required` / `error` in its place).
async fn subscribe_from(
    ws_url: &str,
    token: &str,
    topics: serde_json::Value,
    from: serde_json::Value,
) -> anyhow::Result<(Socket, String)> {
    let mut req = ws_url.into_client_request()?;
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse()?);
    let mut ws = open(req).await?;
    ws.send(Message::Text(
        json!({"op": "subscribe", "id": "b", "topics": topics, "from": from}).to_string().into(),
    ))
    .await?;
    // welcome, then the answer
    let mut answer = String::new();
    for _ in 0..2 {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => answer = t.to_string(),
            other => anyhow::bail!("unexpected answer while subscribing: {other:?}"),
        }
    }
    Ok((ws, answer))
}

/// Commit `total` signals at `rate` a second through a SQLite connection of our own.
/// The writer's connection: the SQLite file, or the server's PostgreSQL database.
enum Store {
    Lite(rusqlite::Connection),
    Pg(Box<postgres::Client>),
}

const INSERT_SIGNAL: &str = "INSERT INTO signals(id, user_id, symbol, direction, confidence, reason, ts)
     VALUES ($1, $2, 'BTCUSDT', 'long', '0.5', $3, 0)";

impl Store {
    fn open(cli: &Cli, synchronous_commit: &str) -> anyhow::Result<Store> {
        Ok(match &cli.database {
            Some(url) => {
                let mut c =
                    postgres::Client::connect(url, postgres::NoTls).context("connecting to PostgreSQL")?;
                c.batch_execute(&format!("SET synchronous_commit = {synchronous_commit}"))?;
                Store::Pg(Box::new(c))
            }
            None => {
                let db = rusqlite::Connection::open(cli.data_dir.join("tradewire.db"))?;
                db.busy_timeout(Duration::from_secs(5))?;
                Store::Lite(db)
            }
        })
    }

    fn ensure_users(&mut self, n: usize) -> anyhow::Result<()> {
        match self {
            Store::Lite(db) => ensure_users(db, n),
            Store::Pg(c) => {
                let mut tx = c.transaction()?;
                for i in 0..n {
                    tx.execute(
                        "INSERT INTO users(id, username, password_hash, created_at)
                         VALUES ($1, $2, '!', 0) ON CONFLICT DO NOTHING",
                        &[&format!("u_bench_{i}"), &format!("bench_{i}")],
                    )?;
                }
                tx.commit()?;
                Ok(())
            }
        }
    }

    /// Insert signals `(id, user, reason)` in one transaction.
    fn insert_signals(&mut self, rows: &[(String, String, String)]) -> anyhow::Result<()> {
        match self {
            Store::Lite(db) => {
                let tx = db.unchecked_transaction()?;
                {
                    let mut stmt = tx.prepare_cached(&INSERT_SIGNAL.replace('$', "?"))?;
                    for (id, user, reason) in rows {
                        stmt.execute(rusqlite::params![id, user, reason])?;
                    }
                }
                tx.commit()?;
            }
            Store::Pg(c) => {
                let stmt = c.prepare(INSERT_SIGNAL)?;
                let mut tx = c.transaction()?;
                for (id, user, reason) in rows {
                    tx.execute(&stmt, &[id, user, reason])?;
                }
                tx.commit()?;
            }
        }
        Ok(())
    }
}

fn db_writer(db: &mut Store, clients: usize, rate: u64, total: u64, batch: u64) -> anyhow::Result<u64> {
    let start = Instant::now();
    let mut n = 0;
    while n < total {
        // Keep the schedule: change n is due at n / rate seconds; a transaction carries
        // `batch` changes (a busy desk writes several rows per transaction).
        let due = start + Duration::from_micros(n * 1_000_000 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let mut rows = Vec::with_capacity(batch as usize);
        for _ in 0..batch.min(total - n) {
            let user = format!("u_bench_{}", n as usize % clients);
            rows.push((format!("sig_bench_{}_{n}", now_micros()), user, now_micros().to_string()));
            n += 1;
        }
        db.insert_signals(&rows)?;
    }
    Ok(total)
}

/// Place `total` orders at `rate` a second through the REST API, round-robin over users.
async fn api_writer(url: String, tokens: Vec<String>, rate: u64, total: u64) -> anyhow::Result<u64> {
    let http = reqwest::Client::new();
    let start = tokio::time::Instant::now();
    let mut inflight = tokio::task::JoinSet::new();
    for n in 0..total {
        tokio::time::sleep_until(start + Duration::from_micros(n * 1_000_000 / rate)).await;
        let token = tokens[n as usize % tokens.len()].clone();
        let body = json!({"client_order_id": format!("{}-{n}", now_micros()), "symbol": "BTCUSDT",
                          "side": "buy", "type": "limit", "price": "27000", "quantity": "0.001"});
        let req = http.post(&url).bearer_auth(token).json(&body);
        inflight.spawn(async move { req.send().await.map(|r| r.status().is_success()) });
    }
    let mut ok = 0;
    while let Some(r) = inflight.join_next().await {
        if matches!(r, Ok(Ok(true))) {
            ok += 1;
        }
    }
    Ok(ok)
}

/// Open `n` clients (users `u_bench_0..n`) with `open(token)`, 64 handshakes in flight at a
/// time.
async fn open_many<T, F, Fut>(secret: &[u8], n: usize, open: F) -> anyhow::Result<Vec<T>>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let started = Instant::now();
    let tokens = (0..n).map(|i| mint(secret, i)).collect::<Result<Vec<_>, _>>()?;
    let sockets = futures::stream::iter(tokens)
        .map(open)
        .buffered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<T>>>()?;
    eprintln!("{n} clients connected in {:.1} s", started.elapsed().as_secs_f64());
    Ok(sockets)
}

/// Connect `n` clients subscribed to `topics`.
async fn connect_many(
    ws_url: &str,
    secret: &[u8],
    n: usize,
    topics: serde_json::Value,
) -> anyhow::Result<Vec<Socket>> {
    open_many(secret, n, |token| {
        let topics = topics.clone();
        async move { connect(ws_url, &token, topics).await }
    })
    .await
}

/// Connect `n` lean clients subscribed to `topic`; each has had its `welcome` and
/// `subscribed`.
async fn connect_many_raw(
    ws_url: &str,
    secret: &[u8],
    n: usize,
    topic: &str,
) -> anyhow::Result<Vec<rawws::RawWs>> {
    let subscribe = json!({"op": "subscribe", "id": "b", "topics": [topic], "from": "now"}).to_string();
    open_many(secret, n, |token| {
        let subscribe = subscribe.as_bytes();
        async move {
            let mut ws = rawws::RawWs::connect(ws_url, &token).await?;
            ws.send(rawws::OP_TEXT, subscribe).await?;
            for _ in 0..2 {
                match ws.next().await? {
                    Some((rawws::OP_TEXT, _)) => {}
                    other => anyhow::bail!("unexpected answer while subscribing: {:?}", other.map(|f| f.0)),
                }
            }
            Ok(ws)
        }
    })
    .await
}

fn percentiles(h: &Histogram<u64>) -> serde_json::Value {
    let ms = |v: u64| v as f64 / 1000.0;
    json!({
        "count": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p90_ms": ms(h.value_at_quantile(0.90)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p99_9_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
    })
}

async fn latency(
    cli: &Cli,
    clients: usize,
    rate: u64,
    seconds: u64,
    writer_kind: Writer,
    batch: u64,
    synchronous_commit: &str,
) -> anyhow::Result<()> {
    let secret = jwt_secret(cli)?;
    let mut db = tokio::task::block_in_place(|| -> anyhow::Result<Store> {
        let mut db = Store::open(cli, synchronous_commit)?;
        db.ensure_users(clients)?;
        Ok(db)
    })?;
    let ws_url = format!("{}/v1/ws", cli.url.replacen("http", "ws", 1));

    let (tx, mut rx) = mpsc::unbounded_channel::<u64>();
    let received = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..clients {
        let ws = connect(&ws_url, &mint(&secret, i)?, json!(["signals", "orders"])).await?;
        let (tx, received) = (tx.clone(), received.clone());
        tasks.push(tokio::spawn(async move {
            let (_, mut read) = ws.split();
            while let Some(Ok(msg)) = read.next().await {
                let Message::Text(t) = msg else { continue };
                if let Ok(ServerFrame::Event(ev)) = serde_json::from_str(&t) {
                    // The writer's timestamp: a signal's reason, or an order's client id prefix.
                    let field = if ev.topic == "orders" { "client_order_id" } else { "reason" };
                    let stamp = ev
                        .row
                        .as_ref()
                        .and_then(|r| r.get(field))
                        .and_then(|v| v.as_str())
                        .and_then(|s| s.split('-').next())
                        .and_then(|s| s.parse::<u64>().ok());
                    if let Some(stamp) = stamp {
                        received.fetch_add(1, Ordering::Relaxed);
                        let _ = tx.send(now_micros().saturating_sub(stamp));
                    }
                }
            }
        }));
    }
    drop(tx);
    eprintln!("{clients} clients connected; writing {rate} changes/s for {seconds} s");

    let total = rate * seconds;
    let writer = match writer_kind {
        Writer::Db => tokio::task::spawn_blocking(move || db_writer(&mut db, clients, rate, total, batch)),
        Writer::Api => {
            let tokens = (0..clients).map(|i| mint(&secret, i)).collect::<Result<Vec<_>, _>>()?;
            let url = format!("{}/v1/orders", cli.url);
            tokio::spawn(api_writer(url, tokens, rate, total))
        }
    };
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    // Receive until everything written has arrived, or 10 s after the writer finished.
    let started = Instant::now();
    let mut drain_until: Option<tokio::time::Instant> = None;
    let mut writer = Some(writer);
    let mut written = 0;
    let mut write_secs = 0.0;
    loop {
        if let Some(w) = writer.take_if(|w| w.is_finished()) {
            written = w.await??;
            write_secs = started.elapsed().as_secs_f64();
            drain_until = Some(tokio::time::Instant::now() + Duration::from_secs(10));
        }
        if writer.is_none() && received.load(Ordering::Relaxed) >= written {
            break;
        }
        if drain_until.is_some_and(|d| tokio::time::Instant::now() >= d) {
            break;
        }
        tokio::select! {
            Some(v) = rx.recv() => { hist.record(v.max(1))?; }
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    while let Ok(v) = rx.try_recv() {
        hist.record(v.max(1))?;
    }
    for t in tasks {
        t.abort();
    }
    let p = percentiles(&hist);
    println!("latency: {clients} clients, {rate} changes/s, {seconds} s, writer {writer_kind:?}");
    println!(
        "  written {written} in {write_secs:.1} s ({:.0}/s achieved), received {}",
        written as f64 / write_secs.max(1e-9),
        hist.len()
    );
    println!(
        "  p50 {} ms | p90 {} ms | p99 {} ms | p99.9 {} ms | max {} ms",
        p["p50_ms"], p["p90_ms"], p["p99_ms"], p["p99_9_ms"], p["max_ms"]
    );
    println!(
        "{}",
        json!({"scenario": "latency", "writer": format!("{writer_kind:?}").to_lowercase(), "clients": clients, "rate": rate, "seconds": seconds,
               "written": written, "write_seconds": write_secs, "lost": written.saturating_sub(hist.len()), "latency": p})
    );
    Ok(())
}

async fn catchup(cli: &Cli, changes: u64) -> anyhow::Result<()> {
    let secret = jwt_secret(cli)?;
    let db = rusqlite::Connection::open(cli.data_dir.join("tradewire.db"))?;
    db.busy_timeout(Duration::from_secs(5))?;
    ensure_users(&db, 1)?;
    let ws_url = format!("{}/v1/ws", cli.url.replacen("http", "ws", 1));
    let token = mint(&secret, 0)?;

    // Where the client stands when it goes offline: the head of its stream.
    let head = |db: &rusqlite::Connection| -> anyhow::Result<u64> {
        Ok(db.query_row(
            "SELECT COALESCE((SELECT seq FROM tw_user_seq WHERE user_id = 'u_bench_0'), 0)",
            [],
            |r| r.get(0),
        )?)
    };
    let epoch: String = db.query_row("SELECT value FROM tw_meta WHERE key = 'epoch'", [], |r| r.get(0))?;
    let from = head(&db)?;
    {
        let tx = db.unchecked_transaction()?;
        let mut stmt = tx.prepare(
            "INSERT INTO signals(id, user_id, symbol, direction, confidence, reason, ts)
             VALUES (?1, 'u_bench_0', 'BTCUSDT', 'long', '0.5', 'offline', 0)",
        )?;
        for n in 0..changes {
            stmt.execute([format!("sig_catchup_{}_{n}", now_micros())])?;
        }
        drop(stmt);
        tx.commit()?;
    }
    let target = head(&db)?;
    eprintln!("{changes} changes committed while offline; reconnecting from {epoch}:{from}");

    let started = Instant::now();
    let mut req = ws_url.as_str().into_client_request()?;
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse()?);
    let mut ws = open(req).await?;
    let sub = json!({"op": "subscribe", "id": "c", "topics": ["*"], "from": {"epoch": epoch, "seq": from}});
    ws.send(Message::Text(sub.to_string().into())).await?;
    let mut last = from;
    let mut events = 0u64;
    while last < target {
        let Some(msg) = ws.next().await else { anyhow::bail!("connection closed at seq {last}") };
        let Message::Text(t) = msg? else { continue };
        if let Ok(ServerFrame::Event(ev)) = serde_json::from_str(&t) {
            anyhow::ensure!(ev.seq == last + 1, "gap or duplicate: {} after {last}", ev.seq);
            last = ev.seq;
            events += 1;
        }
    }
    let caught_up = started.elapsed();
    // Live again: a change committed now arrives.
    db.execute(
        "INSERT INTO signals(id, user_id, symbol, direction, confidence, reason, ts)
         VALUES (?1, 'u_bench_0', 'BTCUSDT', 'long', '0.5', 'live', 0)",
        [format!("sig_catchup_live_{}", now_micros())],
    )?;
    loop {
        let Some(msg) = ws.next().await else { anyhow::bail!("closed before the live change") };
        let Message::Text(t) = msg? else { continue };
        if matches!(serde_json::from_str(&t), Ok(ServerFrame::Event(ev)) if ev.seq == target + 1) {
            break;
        }
    }
    let live = started.elapsed();
    println!("catch-up: {events} missed changes replayed in order");
    println!(
        "  caught up in {:.3} s; live again (next change received) after {:.3} s",
        caught_up.as_secs_f64(),
        live.as_secs_f64()
    );
    println!(
        "{}",
        json!({"scenario": "catchup", "changes": events, "caught_up_s": caught_up.as_secs_f64(), "live_s": live.as_secs_f64()})
    );
    Ok(())
}

/// The `ts` of a market frame, found without parsing the whole message.
fn market_ts(text: &str) -> Option<u64> {
    let at = text.find("\"ts\":")? + 5;
    let digits: &str = &text[at..];
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// Latencies in whole milliseconds, counted in one atomic bucket per millisecond: 10,000
/// reader tasks record into it without a channel send per delivery.
struct MsBuckets(Vec<AtomicU64>);

impl MsBuckets {
    const MAX_MS: usize = 600_000;

    fn new() -> Self {
        Self((0..=Self::MAX_MS).map(|_| AtomicU64::new(0)).collect())
    }

    fn record(&self, ms: u64) {
        self.0[(ms as usize).min(Self::MAX_MS)].fetch_add(1, Ordering::Relaxed);
    }

    fn histogram(&self) -> anyhow::Result<Histogram<u64>> {
        let mut hist = Histogram::<u64>::new_with_bounds(1, Self::MAX_MS as u64, 3)?;
        for (ms, n) in self.0.iter().enumerate() {
            let n = n.load(Ordering::Relaxed);
            if n > 0 {
                hist.record_n((ms as u64).max(1), n)?;
            }
        }
        Ok(hist)
    }
}

async fn fanout(cli: &Cli, clients: usize, topic: &str, seconds: u64) -> anyhow::Result<()> {
    let secret = jwt_secret(cli)?;
    let db = rusqlite::Connection::open(cli.data_dir.join("tradewire.db"))?;
    ensure_users(&db, clients)?;
    let ws_url = format!("{}/v1/ws", cli.url.replacen("http", "ws", 1));
    let sockets = connect_many_raw(&ws_url, &secret, clients, topic).await?;
    let latencies = Arc::new(MsBuckets::new());
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| {
            let (latencies, measuring) = (latencies.clone(), measuring.clone());
            tokio::spawn(async move {
                while let Ok(Some((opcode, payload))) = ws.next().await {
                    match opcode {
                        rawws::OP_CLOSE => break,
                        rawws::OP_TEXT => {}
                        _ => continue,
                    }
                    if !measuring.load(Ordering::Relaxed) || !payload.starts_with(b"{\"op\":\"market\"") {
                        continue;
                    }
                    if let Some(ts) = std::str::from_utf8(payload).ok().and_then(market_ts) {
                        latencies.record((now_micros() / 1000).saturating_sub(ts));
                    }
                }
            })
        })
        .collect();
    // Let every client get its first (current) value, then measure a steady window.
    tokio::time::sleep(Duration::from_secs(2)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    for r in readers {
        r.abort();
    }
    let hist = latencies.histogram()?;
    let rate = hist.len() as f64 / elapsed;
    let p = |q: f64| hist.value_at_quantile(q);
    println!("fan-out: {clients} clients on {topic}, {seconds} s window");
    println!(
        "  {} deliveries, {rate:.0}/s | latency (ms, clock resolution 1 ms) p50 {} p99 {} max {}",
        hist.len(),
        p(0.5),
        p(0.99),
        hist.max()
    );
    println!(
        "{}",
        json!({"scenario": "fanout", "clients": clients, "topic": topic, "deliveries": hist.len(),
               "deliveries_per_s": rate.round(), "p50_ms": p(0.5), "p99_ms": p(0.99), "max_ms": hist.max()})
    );
    Ok(())
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS not found")
}

async fn idle(cli: &Cli, clients: usize, pid: u32, hold: u64) -> anyhow::Result<()> {
    let secret = jwt_secret(cli)?;
    let db = rusqlite::Connection::open(cli.data_dir.join("tradewire.db"))?;
    ensure_users(&db, clients)?;
    let ws_url = format!("{}/v1/ws", cli.url.replacen("http", "ws", 1));
    let before = rss_kib(pid)?;
    let held = connect_many(&ws_url, &secret, clients, json!(["*"])).await?;
    // Keep reading so heartbeats flow as they would to a live client.
    let readers: Vec<_> =
        held.into_iter().map(|ws| tokio::spawn(async move { ws.for_each(|_| async {}).await })).collect();
    tokio::time::sleep(Duration::from_secs(hold)).await;
    let after = rss_kib(pid)?;
    let per = (after.saturating_sub(before)) as f64 * 1024.0 / clients as f64;
    println!("idle: {clients} WebSocket connections, each subscribed to \"*\"");
    println!("  server RSS {before} KiB before, {after} KiB after: {:.0} bytes per connection", per);
    println!(
        "{}",
        json!({"scenario": "idle", "clients": clients, "rss_before_kib": before, "rss_after_kib": after,
               "bytes_per_connection": per.round()})
    );
    for r in readers {
        r.abort();
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.scenario {
        Scenario::Latency { clients, rate, seconds, writer, batch, ref synchronous_commit } => {
            latency(&cli, clients, rate, seconds, writer, batch.max(1), synchronous_commit).await
        }
        Scenario::Catchup { changes } => catchup(&cli, changes).await,
        Scenario::Fanout { clients, ref topic, seconds } => fanout(&cli, clients, topic, seconds).await,
        Scenario::Idle { clients, pid, hold_seconds } => idle(&cli, clients, pid, hold_seconds).await,
        Scenario::Polling(ref args) => polling::run(&cli, args.clone()).await,
        Scenario::Chaos(ref args) => {
            if !chaos::run(&cli, args.clone()).await? {
                std::process::exit(2);
            }
            Ok(())
        }
        Scenario::Soak(ref args) => {
            if !soak::run(&cli, args.clone()).await? {
                std::process::exit(2);
            }
            Ok(())
        }
    }
}
