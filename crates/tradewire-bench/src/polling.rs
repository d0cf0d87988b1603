//! `polling`: the same dashboard served by REST polling and by push.
//!
//! Every client is one bench user whose dashboard shows its orders, open positions,
//! portfolios and bots. A writer in this process changes those rows at a steady rate
//! through its own SQLite connection, stamping each change with its clock
//! (`writer::Mix::Dashboard`). A polling client GETs the four REST lists every interval
//! (5 s, the usual dashboard refresh) over one keep-alive HTTP/1.1 connection; a push
//! client holds one WebSocket with one subscription (snapshot, then changes). Both count
//! every byte that crosses their socket, both ways, and take the staleness of each commit:
//! the time from the writer's stamp to the moment the client holds a view that contains
//! it (a poll that shows the row with that stamp or a newer one; the pushed event).
//!
//! The two transports run one after the other against the same server, each with a fresh
//! set of pending commits.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use rand::Rng;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tradewire_protocol::ServerFrame;

use crate::writer::{self, Mix, Pending};
use crate::{Cli, mint, now_micros};

/// What a polling dashboard reads every interval.
const PATHS: [&str; 4] = ["/v1/orders", "/v1/positions?status=open", "/v1/portfolios", "/v1/bots"];
/// What a push dashboard subscribes to.
const TOPICS: [&str; 4] = ["orders", "positions", "portfolios", "bots"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    Poll,
    Push,
    Both,
}

#[derive(Debug, Clone, clap::Args)]
pub struct PollingArgs {
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Length of each transport's measured window (the writer runs this long).
    #[arg(long, default_value_t = 120)]
    pub seconds: u64,
    /// Changes the writer commits per user per minute.
    #[arg(long, default_value_t = 6.0)]
    pub changes_per_user_minute: f64,
    /// Polling interval.
    #[arg(long, default_value_t = 5.0)]
    pub interval_secs: f64,
    #[arg(long, value_enum, default_value_t = Transport::Both)]
    pub transport: Transport,
    /// The server's process id, to report its CPU time during each window.
    #[arg(long)]
    pub pid: Option<u32>,
}

/// Bytes that cross one side of a socket, added to shared counters.
struct Counted<S> {
    inner: S,
    rx: Arc<AtomicU64>,
    tx: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut me.inner).poll_read(cx, buf);
        me.rx.fetch_add((buf.filled().len() - before) as u64, Ordering::Relaxed);
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            me.tx.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[derive(Default)]
struct Tally {
    rx: Arc<AtomicU64>,
    tx: Arc<AtomicU64>,
    /// HTTP requests (polling: GETs; push: the WebSocket upgrade).
    requests: AtomicU64,
    /// WebSocket text messages received.
    messages: AtomicU64,
    polls: AtomicU64,
    /// Polls that showed at least one change not seen before.
    useful_polls: AtomicU64,
    errors: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Reading {
    rx: u64,
    tx: u64,
    requests: u64,
    messages: u64,
    polls: u64,
    useful_polls: u64,
}

impl Tally {
    fn read(&self) -> Reading {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Reading {
            rx: l(&self.rx),
            tx: l(&self.tx),
            requests: l(&self.requests),
            messages: l(&self.messages),
            polls: l(&self.polls),
            useful_polls: l(&self.useful_polls),
        }
    }
    async fn tcp(&self, addr: &str) -> anyhow::Result<Counted<TcpStream>> {
        let inner = TcpStream::connect(addr).await?;
        inner.set_nodelay(true)?;
        Ok(Counted { inner, rx: self.rx.clone(), tx: self.tx.clone() })
    }
}

/// The (row id, stamp) of each row in a list answer or an event.
fn observe(row: &Value, user: usize, pending: &Pending, now: u64, out: &mut Vec<u64>) {
    if let (Some(id), Some(stamp)) =
        (row.get("id").and_then(Value::as_str), row.get("updated_at").and_then(Value::as_u64))
    {
        pending.seen(user, id, stamp, now, out);
    }
}

/// A minimal HTTP/1.1 client on one keep-alive connection, so that every byte on the wire
/// is counted (request line and headers included).
struct Http {
    addr: String,
    conn: Option<BufReader<Counted<TcpStream>>>,
}

impl Http {
    async fn get(&mut self, tally: &Tally, path: &str, token: &str) -> anyhow::Result<Vec<u8>> {
        for attempt in 0..2 {
            if self.conn.is_none() {
                self.conn = Some(BufReader::new(tally.tcp(&self.addr).await?));
            }
            match self.exchange(path, token).await {
                Ok(body) => return Ok(body),
                // A keep-alive connection the server closed: once more on a new one.
                Err(_) if attempt == 0 => self.conn = None,
                Err(e) => return Err(e),
            }
        }
        unreachable!("the loop returns")
    }

    async fn exchange(&mut self, path: &str, token: &str) -> anyhow::Result<Vec<u8>> {
        let conn = self.conn.as_mut().context("no connection")?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {token}\r\naccept: application/json\r\n\r\n",
            self.addr
        );
        conn.get_mut().write_all(req.as_bytes()).await?;
        let mut line = String::new();
        anyhow::ensure!(conn.read_line(&mut line).await? > 0, "connection closed");
        let status: u16 =
            line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("status line")?;
        let mut length = 0usize;
        let mut close = false;
        loop {
            line.clear();
            anyhow::ensure!(conn.read_line(&mut line).await? > 0, "connection closed in headers");
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').context("header line")?;
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse()?,
                "connection" => close = value.trim().eq_ignore_ascii_case("close"),
                "transfer-encoding" => {
                    anyhow::bail!("chunked answers are not expected from the list endpoints")
                }
                _ => {}
            }
        }
        let mut body = vec![0; length];
        conn.read_exact(&mut body).await?;
        if close {
            self.conn = None;
        }
        anyhow::ensure!(status == 200, "GET {path}: HTTP {status}");
        Ok(body)
    }
}

struct Phase {
    clients: usize,
    addr: String,
    ws_url: String,
    tokens: Vec<String>,
    pending: Arc<Pending>,
    tally: Arc<Tally>,
    hist: Arc<Mutex<Histogram<u64>>>,
    /// How long one poll (the four GETs, one after the other) takes, in µs.
    poll_time: Arc<Mutex<Histogram<u64>>>,
    stop: Arc<AtomicBool>,
}

impl Phase {
    fn record(&self, stale: &[u64]) {
        let mut h = self.hist.lock().unwrap_or_else(|e| e.into_inner());
        for &v in stale {
            let _ = h.record(v.max(1));
        }
    }
}

async fn poll_client(ph: Arc<Phase>, user: usize, interval: Duration, offset: Duration) {
    let mut http = Http { addr: ph.addr.clone(), conn: None };
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stale = Vec::new();
    while !ph.stop.load(Ordering::Relaxed) {
        tick.tick().await;
        if ph.stop.load(Ordering::Relaxed) {
            break;
        }
        stale.clear();
        let began = Instant::now();
        for path in PATHS {
            ph.tally.requests.fetch_add(1, Ordering::Relaxed);
            let body = match http.get(&ph.tally, path, &ph.tokens[user]).await {
                Ok(b) => b,
                Err(e) => {
                    if ph.tally.errors.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("poll client {user}: {e:#}");
                    }
                    continue;
                }
            };
            let now = now_micros();
            let answer: Value = serde_json::from_slice(&body).unwrap_or_default();
            for row in answer.get("items").and_then(Value::as_array).into_iter().flatten() {
                observe(row, user, &ph.pending, now, &mut stale);
            }
        }
        let took = began.elapsed().as_micros() as u64;
        let _ = ph.poll_time.lock().unwrap_or_else(|e| e.into_inner()).record(took.max(1));
        ph.tally.polls.fetch_add(1, Ordering::Relaxed);
        if !stale.is_empty() {
            ph.tally.useful_polls.fetch_add(1, Ordering::Relaxed);
            ph.record(&stale);
        }
    }
}

type CountedSocket = tokio_tungstenite::WebSocketStream<Counted<TcpStream>>;

async fn push_connect(ph: &Phase, user: usize) -> anyhow::Result<CountedSocket> {
    let mut req = ph.ws_url.as_str().into_client_request()?;
    req.headers_mut().insert("authorization", format!("Bearer {}", ph.tokens[user]).parse()?);
    ph.tally.requests.fetch_add(1, Ordering::Relaxed);
    let (mut ws, _) = tokio_tungstenite::client_async(req, ph.tally.tcp(&ph.addr).await?).await?;
    let sub = json!({"op": "subscribe", "id": "d", "topics": TOPICS, "from": "snapshot"});
    ws.send(Message::Text(sub.to_string().into())).await?;
    // welcome, subscribed, snapshot
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                ph.tally.messages.fetch_add(1, Ordering::Relaxed);
                if t.starts_with("{\"op\":\"snapshot\"") {
                    return Ok(ws);
                }
                anyhow::ensure!(!t.starts_with("{\"op\":\"error\""), "subscribing: {t}");
            }
            Some(Ok(_)) => {}
            other => anyhow::bail!("closed while subscribing: {other:?}"),
        }
    }
}

async fn push_client(ph: Arc<Phase>, user: usize, ws: CountedSocket) {
    let (_write, mut read) = ws.split();
    let mut stale = Vec::new();
    while let Some(Ok(msg)) = read.next().await {
        let Message::Text(t) = msg else { continue };
        ph.tally.messages.fetch_add(1, Ordering::Relaxed);
        if let Ok(ServerFrame::Event(ev)) = serde_json::from_str(&t) {
            let now = now_micros();
            stale.clear();
            if let Some(row) = ev.row {
                observe(&Value::Object(row), user, &ph.pending, now, &mut stale);
            }
            ph.record(&stale);
        }
    }
}

/// Server CPU time (user + system), in clock ticks of 10 ms (Linux's USER_HZ is 100).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

async fn run_phase(cli: &Cli, a: &PollingArgs, transport: Transport, secret: &[u8]) -> anyhow::Result<Value> {
    let addr = cli.url.trim_start_matches("http://").trim_end_matches('/').to_string();
    let ph = Arc::new(Phase {
        clients: a.clients,
        ws_url: format!("ws://{addr}/v1/ws"),
        addr,
        tokens: (0..a.clients).map(|i| mint(secret, i)).collect::<Result<_, _>>()?,
        pending: Arc::new(Pending::new(a.clients)),
        tally: Arc::new(Tally::default()),
        hist: Arc::new(Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3)?)),
        poll_time: Arc::new(Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3)?)),
        stop: Arc::new(AtomicBool::new(false)),
    });
    let interval = Duration::from_secs_f64(a.interval_secs);
    let mut tasks = Vec::new();
    let mut setup_bytes = 0.0;
    match transport {
        Transport::Poll => {
            let mut rng = rand::rng();
            for user in 0..ph.clients {
                let offset = interval.mul_f64(rng.random_range(0.0..1.0));
                tasks.push(tokio::spawn(poll_client(ph.clone(), user, interval, offset)));
            }
            // Every client has made its first poll: the steady state.
            tokio::time::sleep(interval + Duration::from_millis(500)).await;
        }
        Transport::Push => {
            let started = Instant::now();
            let sockets: Vec<CountedSocket> = futures::stream::iter(0..ph.clients)
                .map(|u| {
                    let ph = ph.clone();
                    async move { push_connect(&ph, u).await }
                })
                .buffered(64)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<anyhow::Result<_>>()?;
            let r = ph.tally.read();
            setup_bytes = (r.rx + r.tx) as f64 / ph.clients as f64;
            eprintln!("{} push clients subscribed in {:.1} s", ph.clients, started.elapsed().as_secs_f64());
            for (user, ws) in sockets.into_iter().enumerate() {
                tasks.push(tokio::spawn(push_client(ph.clone(), user, ws)));
            }
        }
        Transport::Both => unreachable!("one transport per phase"),
    }

    let rate = a.clients as f64 * a.changes_per_user_minute / 60.0;
    eprintln!("{transport:?}: {} clients; writing {rate:.1} changes/s for {} s", a.clients, a.seconds);
    let db = rusqlite::Connection::open(cli.data_dir.join("tradewire.db"))?;
    db.busy_timeout(Duration::from_secs(10))?;
    let base = ph.tally.read();
    let cpu0 = a.pid.and_then(cpu_ticks);
    let t0 = Instant::now();
    let writer = {
        let (ph, users, until) = (ph.clone(), a.clients, t0 + Duration::from_secs(a.seconds));
        tokio::task::spawn_blocking(move || {
            writer::run(&db, users, rate, until, &AtomicBool::new(false), Mix::Dashboard, Some(&ph.pending))
        })
    };
    let written = writer.await??;
    // The window ends with the writer's last due change.
    tokio::time::sleep_until(tokio::time::Instant::from_std(t0 + Duration::from_secs(a.seconds))).await;
    let window = t0.elapsed().as_secs_f64();
    let end = ph.tally.read();
    let cpu1 = a.pid.and_then(cpu_ticks);
    // Let the last commits be seen (one more poll for polling clients).
    let drain_by = Instant::now() + interval + Duration::from_secs(3);
    while ph.pending.unseen() > 0 && Instant::now() < drain_by {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let unseen = ph.pending.unseen();
    ph.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }

    let per_hour = |v: u64| v as f64 / ph.clients as f64 * 3600.0 / window;
    let hist = ph.hist.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let poll_time = ph.poll_time.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let pt = |q: f64| poll_time.value_at_quantile(q) as f64 / 1000.0;
    let cpu = match (cpu0, cpu1) {
        // 100 ticks a second: ticks per second is the percentage of one core.
        (Some(a), Some(b)) => json!(((b - a) as f64 / window * 10.0).round() / 10.0),
        _ => Value::Null,
    };
    Ok(json!({
        "transport": format!("{transport:?}").to_lowercase(),
        "window_s": (window * 10.0).round() / 10.0,
        "changes_written": written.changes,
        "changes_seen": hist.len(),
        "changes_unseen": unseen,
        "requests_per_client_hour": per_hour(end.requests - base.requests).round(),
        "messages_in_per_client_hour": per_hour(end.messages - base.messages).round(),
        "bytes_in_per_client_hour": per_hour(end.rx - base.rx).round(),
        "bytes_out_per_client_hour": per_hour(end.tx - base.tx).round(),
        "polls": end.polls - base.polls,
        "bytes_in_per_poll": if end.polls > base.polls { json!(((end.rx - base.rx) / (end.polls - base.polls)) as f64) } else { Value::Null },
        "poll_time": if transport == Transport::Poll { json!({"p50_ms": pt(0.5), "p99_ms": pt(0.99)}) } else { Value::Null },
        "polls_with_news": end.useful_polls - base.useful_polls,
        "setup_bytes_per_client": setup_bytes.round(),
        "errors": ph.tally.errors.load(Ordering::Relaxed),
        "server_cpu_pct": cpu,
        "staleness": {"p50_ms": ms(0.5), "p90_ms": ms(0.9), "p99_ms": ms(0.99), "max_ms": hist.max() as f64 / 1000.0},
    }))
}

fn human_bytes(b: f64) -> String {
    if b >= 1e6 { format!("{:.2} MB", b / 1e6) } else { format!("{:.1} kB", b / 1e3) }
}

pub async fn run(cli: &Cli, a: PollingArgs) -> anyhow::Result<()> {
    let secret = crate::jwt_secret(cli)?;
    let secret = secret.as_slice();
    {
        let db = rusqlite::Connection::open(cli.data_dir.join("tradewire.db"))?;
        db.busy_timeout(Duration::from_secs(10))?;
        crate::ensure_users(&db, a.clients)?;
        writer::seed(&db, a.clients, true)?;
    }
    let transports = match a.transport {
        Transport::Both => vec![Transport::Poll, Transport::Push],
        t => vec![t],
    };
    let mut results = Vec::new();
    for t in transports {
        results.push(run_phase(cli, &a, t, secret).await?);
    }
    println!(
        "against polling: {} clients, dashboard = orders + open positions + portfolios + bots, \
         {} changes/user/min, poll every {} s; {} s window per transport, per client-hour \
         figures extrapolated from it",
        a.clients, a.changes_per_user_minute, a.interval_secs, a.seconds
    );
    println!(
        "  {:<6} {:>9} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>13} {:>6}",
        "", "req/c-h", "msgs/c-h", "in/c-h", "out/c-h", "stale p50", "p99", "max", "seen/written", "CPU %"
    );
    let num = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let dur = |v: &Value| {
        let ms = num(v);
        if ms >= 100.0 { format!("{ms:.0} ms") } else { format!("{ms:.1} ms") }
    };
    for r in &results {
        let s = &r["staleness"];
        println!(
            "  {:<6} {:>9.0} {:>9.0} {:>10} {:>10} {:>10} {:>10} {:>10} {:>13} {:>6}",
            r["transport"].as_str().unwrap_or(""),
            num(&r["requests_per_client_hour"]),
            num(&r["messages_in_per_client_hour"]),
            human_bytes(num(&r["bytes_in_per_client_hour"])),
            human_bytes(num(&r["bytes_out_per_client_hour"])),
            dur(&s["p50_ms"]),
            dur(&s["p99_ms"]),
            dur(&s["max_ms"]),
            format!("{}/{}", r["changes_seen"], r["changes_written"]),
            r["server_cpu_pct"],
        );
    }
    println!(
        "{}",
        json!({"scenario": "polling", "clients": a.clients, "seconds": a.seconds,
               "changes_per_user_minute": a.changes_per_user_minute, "interval_s": a.interval_secs,
               "endpoints": PATHS, "topics": TOPICS, "results": results})
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// Read one request head (up to the blank line) and answer with `answer`.
    async fn serve_one(sock: &mut TcpStream, answer: &str) -> usize {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            sock.read_exact(&mut b).await.expect("request");
            head.push(b[0]);
        }
        sock.write_all(answer.as_bytes()).await.expect("answer");
        head.len()
    }

    #[tokio::test]
    async fn every_byte_of_a_keep_alive_exchange_is_counted() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let a1 =
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n{\"items\":[]}";
        let a2 = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}";
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.expect("accept");
            serve_one(&mut sock, a1).await + serve_one(&mut sock, a2).await
        });
        let tally = Tally::default();
        let mut http = Http { addr, conn: None };
        assert_eq!(http.get(&tally, "/v1/orders", "t").await.expect("first"), b"{\"items\":[]}");
        assert_eq!(http.get(&tally, "/v1/bots", "t").await.expect("second"), b"{}");
        assert!(http.conn.is_none(), "`connection: close` drops the connection");
        let sent = server.await.expect("server");
        let r = tally.read();
        assert_eq!(r.tx, sent as u64);
        assert_eq!(r.rx, (a1.len() + a2.len()) as u64);
    }
}
