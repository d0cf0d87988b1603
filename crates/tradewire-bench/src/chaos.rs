//! `chaos`: honest clients on their user streams while hostile clients attack the server.
//!
//! Honest clients (one bench user each, from 127.0.0.1) subscribe to `"*"` with a
//! snapshot, drop their connection every few seconds and resume from their last position,
//! checking `seq == last + 1` for every event; a writer commits changes for their users
//! through the SQLite file all along (`writer::Mix::Soak`: signal inserts and deletes,
//! position and order updates, some transactions with two changes; with the simulator on,
//! its P&L snapshots of the bench portfolios are changes of those users too).
//!
//! After a warm-up, hostile tasks run for the middle of the run, each as a bench user of
//! its own and bound to one of 127.0.0.2 … 127.0.0.9, so that caps per address never
//! touch the honest clients' address: random bytes and random JSON as frames, floods over
//! the rate limit, bad and expired tokens, oversized frames and REST bodies, made-up
//! topics, reconnect storms, login guessing. Every answer of the server is counted by
//! kind of action and by what it was (close code, HTTP status, error code).
//!
//! Then an idle period (honest traffic only), the writer stops and the clients settle:
//! each must have received every seq of its user after its first snapshot, up to the head
//! in the database (`tw_user_seq`), exactly once. The server's resident memory is compared
//! between the end of the warm-up and the end of the idle period.
//!
//! Timeline, in seconds from the moment every honest client holds its snapshot:
//! `[0, warmup)` honest only, `[warmup, seconds - settle - idle)` hostile,
//! `[…, seconds - settle)` idle, then the writer stops and `[…, seconds]` settle.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tradewire_protocol::ServerFrame;

use crate::rawws::{self, RawWs, Upgrade};
use crate::soak::Ending;
use crate::writer::{self, Mix};
use crate::{Cli, mint, mint_for, rss_kib, soak};

#[derive(Debug, Clone, clap::Args)]
pub struct ChaosArgs {
    /// Honest clients, one bench user each (`u_bench_0` …).
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Hostile tasks running at once, one bench user each (after the honest users).
    #[arg(long, default_value_t = 50)]
    pub hostile: usize,
    /// Length of the whole run, settle included.
    #[arg(long, default_value_t = 600)]
    pub seconds: u64,
    /// Honest traffic only before the hostile phase; the server's memory is taken at its end.
    #[arg(long, default_value_t = 60)]
    pub warmup_secs: u64,
    /// Honest traffic only after the hostile phase; the server's memory is taken at its end.
    #[arg(long, default_value_t = 60)]
    pub idle_secs: u64,
    /// After the writer stops: the longest wait for every honest client to reach its head.
    #[arg(long, default_value_t = 30)]
    pub settle_secs: u64,
    /// Transactions a second the writer commits for the honest users (about 1.14 changes
    /// each: 175 is about 200 changes a second).
    #[arg(long, default_value_t = 175.0)]
    pub rate: f64,
    /// Each honest client drops its connection and resumes about this often (randomly
    /// between half and one and a half times it).
    #[arg(long, default_value_t = 4.0)]
    pub reconnect_secs: f64,
    /// Source addresses of the hostile clients: 127.0.0.2 and the next ones (at most 8).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(1..=8))]
    pub hostile_addresses: u8,
    /// The server's process id (its resident memory is sampled).
    #[arg(long)]
    pub pid: u32,
    /// The server's log: lines with "panicked" are counted.
    #[arg(long)]
    pub server_log: Option<PathBuf>,
    /// Memory after the idle period above the level before the attack that still passes,
    /// in percent.
    #[arg(long, default_value_t = 10.0)]
    pub max_rss_growth_pct: f64,
}

// ---------------------------------------------------------------------------------------
// Honest clients

#[derive(Default)]
struct HonestCounters {
    events: AtomicU64,
    duplicates: AtomicU64,
    gaps: AtomicU64,
    missing: AtomicU64,
    resumes: AtomicU64,
    resyncs: AtomicU64,
    snapshots: AtomicU64,
    heartbeat_ahead: AtomicU64,
    epoch_mismatch: AtomicU64,
    error_frames: AtomicU64,
    connect_failures: AtomicU64,
    lost: AtomicU64,
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

fn bump(c: &AtomicU64) -> u64 {
    c.fetch_add(1, Ordering::Relaxed)
}

struct HonestShared {
    c: HonestCounters,
    /// The last seq each client has applied.
    last: Vec<AtomicU64>,
    /// Close codes the server sent to honest clients.
    closes: Mutex<BTreeMap<u16, u64>>,
    stop: AtomicBool,
    no_more_drops: AtomicBool,
}

/// What one honest client received: how often each seq after its first snapshot arrived.
#[derive(Debug, Default)]
struct Log {
    epoch: Option<String>,
    last: u64,
    /// The position of the first snapshot.
    start: Option<u64>,
    /// `counts[k]`: deliveries of seq `start + 1 + k`.
    counts: Vec<u8>,
    /// Events at or below the first snapshot's position (sent again).
    before_start: u64,
}

impl Log {
    fn record(&mut self, seq: u64) {
        let Some(start) = self.start else { return };
        if seq <= start {
            self.before_start += 1;
            return;
        }
        let at = (seq - start - 1) as usize;
        if at >= self.counts.len() {
            self.counts.resize(at + 1, 0);
        }
        self.counts[at] = self.counts[at].saturating_add(1);
    }
}

/// The check of one client against its head: seqs `start + 1 ..= head` each exactly once.
#[derive(Debug, Default, Clone, Copy)]
struct Exactness {
    expected: u64,
    once: u64,
    missing: u64,
    /// Deliveries beyond the first, plus events at or below the first snapshot.
    extra: u64,
    /// Seqs above the head (never committed when the head was read).
    beyond: u64,
}

impl Exactness {
    fn of(log: &Log, head: u64) -> Option<Self> {
        let start = log.start?;
        let expected = head.saturating_sub(start);
        let mut e = Exactness { expected, extra: log.before_start, ..Default::default() };
        for k in 0..expected as usize {
            match log.counts.get(k).copied().unwrap_or(0) {
                0 => e.missing += 1,
                1 => e.once += 1,
                n => {
                    e.once += 1;
                    e.extra += u64::from(n) - 1;
                }
            }
        }
        e.beyond = log.counts.iter().skip(expected as usize).map(|&n| u64::from(n)).sum();
        Some(e)
    }

    fn exact(&self) -> bool {
        self.missing == 0 && self.extra == 0 && self.beyond == 0
    }
}

enum Ended {
    Planned,
    Lost,
    Resync,
    Stop,
}

impl From<soak::Ended> for Ended {
    fn from(e: soak::Ended) -> Self {
        match e {
            soak::Ended::Planned => Ended::Planned,
            soak::Ended::Lost => Ended::Lost,
            soak::Ended::Stop => Ended::Stop,
        }
    }
}

async fn honest(i: usize, ws_url: String, token: String, reconnect_secs: f64, sh: Arc<HonestShared>) -> Log {
    let mut log = Log::default();
    let next_drop = || {
        let secs = reconnect_secs * rand::rng().random_range(0.5..1.5);
        (reconnect_secs > 0.0).then(|| tokio::time::Instant::now() + Duration::from_secs_f64(secs))
    };
    let mut drop_at = next_drop();
    while !sh.stop.load(Ordering::Relaxed) {
        match honest_session(i, &ws_url, &token, &mut log, drop_at, &sh).await {
            Ok(Ended::Stop) => break,
            Ok(Ended::Resync) => {}
            Ok(Ended::Planned) => {
                drop_at = next_drop();
                let offline = rand::rng().random_range(50..500);
                tokio::time::sleep(Duration::from_millis(offline)).await;
            }
            Ok(Ended::Lost) => {
                bump(&sh.c.lost);
                drop_at = next_drop();
                let backoff = rand::rng().random_range(100..500);
                tokio::time::sleep(Duration::from_millis(backoff)).await;
            }
            Err(e) => {
                if bump(&sh.c.connect_failures) < 5 {
                    eprintln!("honest client {i}: {e:#}");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    log
}

/// One connection of an honest client: subscribe from its position (a snapshot the first
/// time), then apply events until the planned drop, a loss, or the end.
async fn honest_session(
    i: usize,
    ws_url: &str,
    token: &str,
    log: &mut Log,
    drop_at: Option<tokio::time::Instant>,
    sh: &HonestShared,
) -> anyhow::Result<Ended> {
    let c = &sh.c;
    let resuming = log.epoch.is_some();
    let from = match &log.epoch {
        Some(epoch) => json!({"epoch": epoch, "seq": log.last}),
        None => json!("snapshot"),
    };
    let (mut ws, answer) =
        crate::subscribe_from(ws_url, token, json!(["*"]), from).await.context("connecting")?;
    match serde_json::from_str::<ServerFrame>(&answer) {
        Ok(ServerFrame::Subscribed { .. }) => {}
        Ok(ServerFrame::ResyncRequired { reason, .. }) => {
            if bump(&c.resyncs) < 5 {
                eprintln!("honest client {i}: resync_required ({reason}) at seq {}", log.last);
            }
            log.epoch = None;
            let _ = ws.close(None).await;
            return Ok(Ended::Resync);
        }
        _ => anyhow::bail!("answer to the subscribe: {answer}"),
    }
    if resuming {
        bump(&c.resumes);
    }
    let mut ending = Ending::new(drop_at);
    loop {
        let text = match ending.next_text(&mut ws, &sh.stop, &sh.no_more_drops, &sh.closes).await {
            Ok(text) => text,
            Err(ended) => return Ok(ended.into()),
        };
        match serde_json::from_str::<ServerFrame>(&text) {
            Ok(ServerFrame::Event(ev)) if ev.id.as_deref() == Some("b") => {
                if log.epoch.as_deref() != Some(ev.epoch.as_str()) {
                    bump(&c.epoch_mismatch);
                    continue;
                }
                log.record(ev.seq);
                if ev.seq == log.last + 1 {
                    bump(&c.events);
                } else if ev.seq <= log.last {
                    if bump(&c.duplicates) < 5 {
                        eprintln!("honest client {i}: duplicate, seq {} after {}", ev.seq, log.last);
                    }
                    continue;
                } else {
                    c.missing.fetch_add(ev.seq - log.last - 1, Ordering::Relaxed);
                    if bump(&c.gaps) < 5 {
                        eprintln!("honest client {i}: gap, seq {} after {}", ev.seq, log.last);
                    }
                }
                log.last = ev.seq;
                sh.last[i].store(ev.seq, Ordering::Relaxed);
            }
            Ok(ServerFrame::Snapshot { id, position, .. }) if id == "b" => {
                bump(&c.snapshots);
                log.start.get_or_insert(position.seq);
                log.epoch = Some(position.epoch);
                log.last = position.seq;
                sh.last[i].store(position.seq, Ordering::Relaxed);
            }
            Ok(ServerFrame::ResyncRequired { id, reason }) if id == "b" => {
                if bump(&c.resyncs) < 5 {
                    eprintln!("honest client {i}: resync_required ({reason}) during replay");
                }
                log.epoch = None;
                let _ = ws.close(None).await;
                return Ok(Ended::Resync);
            }
            // Every change at or below a heartbeat's position has been sent: one not seen by
            // now was lost.
            Ok(ServerFrame::Heartbeat { position, .. })
                if log.epoch.as_deref() == Some(position.epoch.as_str()) && position.seq > log.last =>
            {
                bump(&c.heartbeat_ahead);
            }
            Ok(ServerFrame::Error { .. }) => {
                let before = bump(&c.error_frames);
                if before < 5 {
                    eprintln!("honest client {i}: {text}");
                }
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------
// Hostile clients

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    RandomBytes,
    RandomJson,
    Flood,
    BadToken,
    Oversized,
    TopicSpam,
    ReconnectStorm,
    LoginGuess,
}

impl Kind {
    const ALL: [Kind; 8] = [
        Kind::RandomBytes,
        Kind::RandomJson,
        Kind::Flood,
        Kind::BadToken,
        Kind::Oversized,
        Kind::TopicSpam,
        Kind::ReconnectStorm,
        Kind::LoginGuess,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::RandomBytes => "random_bytes",
            Kind::RandomJson => "random_json",
            Kind::Flood => "flood",
            Kind::BadToken => "bad_token",
            Kind::Oversized => "oversized",
            Kind::TopicSpam => "topic_spam",
            Kind::ReconnectStorm => "reconnect_storm",
            Kind::LoginGuess => "login_guess",
        }
    }

    /// What `sent` counts.
    fn unit(self) -> &'static str {
        match self {
            Kind::RandomBytes => "junk frames or TCP writes",
            Kind::RandomJson => "frames",
            Kind::Flood => "ping frames",
            Kind::BadToken => "attempts",
            Kind::Oversized => "oversized frames or bodies",
            Kind::TopicSpam => "made-up topic names",
            Kind::ReconnectStorm => "sockets opened",
            Kind::LoginGuess => "login attempts",
        }
    }
}

#[derive(Debug, Default)]
struct KindTally {
    actions: u64,
    sent: u64,
    answers: BTreeMap<String, u64>,
}

/// One action's findings, merged into the tally when it ends.
#[derive(Debug, Default)]
struct Seen {
    sent: u64,
    answers: BTreeMap<String, u64>,
}

impl Seen {
    fn note(&mut self, what: impl Into<String>) {
        *self.answers.entry(what.into()).or_default() += 1;
    }
}

/// A token `alg: none` for an honest user: it must be refused like any other bad token.
const ALG_NONE_TOKEN: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.\
    eyJzdWIiOiJ1X2JlbmNoXzAiLCJuYW1lIjoiYmVuY2hfMCIsImV4cCI6NDEwMjQ0NDgwMCwiaWF0IjowfQ.";

/// Largest REST body the server reads (axum's default limit is 2 MiB): these go beyond it.
const OVERSIZED_BODY: usize = 3 << 20;
/// Largest WebSocket frame the server reads (`max_frame_bytes`, 64 KiB by default).
const MAX_FRAME: usize = 64 << 10;

struct Hostile {
    ws_url: String,
    base: String,
    server: SocketAddr,
    secret: Vec<u8>,
    epoch: String,
    honest_users: usize,
    addrs: Vec<IpAddr>,
    /// One HTTP client per source address.
    http: Vec<reqwest::Client>,
    first_user: usize,
    tally: Mutex<BTreeMap<Kind, KindTally>>,
}

/// One hostile task's identity.
struct Task {
    addr: IpAddr,
    http: reqwest::Client,
    user: usize,
    token: String,
}

impl Hostile {
    fn record(&self, kind: Kind, seen: Seen) {
        let mut tally = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        let t = tally.entry(kind).or_default();
        t.actions += 1;
        t.sent += seen.sent;
        for (what, n) in seen.answers {
            *t.answers.entry(what).or_default() += n;
        }
    }

    fn actions(&self) -> u64 {
        self.tally.lock().unwrap_or_else(|e| e.into_inner()).values().map(|t| t.actions).sum()
    }

    /// Open a WebSocket from the task's address; a refused upgrade is noted.
    async fn ws(
        &self,
        task: &Task,
        token: Option<&str>,
        seen: &mut Seen,
        prefix: &str,
    ) -> anyhow::Result<Option<RawWs>> {
        match RawWs::upgrade(&self.ws_url, token, Some(task.addr)).await? {
            Upgrade::Open(ws) => Ok(Some(ws)),
            Upgrade::Refused { status, .. } => {
                seen.note(format!("{prefix}upgrade refused, http {status}"));
                Ok(None)
            }
        }
    }

    async fn act(&self, kind: Kind, task: &Task, rng: &mut StdRng, seen: &mut Seen) -> anyhow::Result<()> {
        match kind {
            Kind::RandomBytes => self.random_bytes(task, rng, seen).await,
            Kind::RandomJson => self.random_json(task, rng, seen).await,
            Kind::Flood => self.flood(task, rng, seen).await,
            Kind::BadToken => self.bad_token(task, rng, seen).await,
            Kind::Oversized => self.oversized(task, rng, seen).await,
            Kind::TopicSpam => self.topic_spam(task, rng, seen).await,
            Kind::ReconnectStorm => self.reconnect_storm(task, rng, seen).await,
            Kind::LoginGuess => self.login_guess(task, rng, seen).await,
        }
    }

    /// Junk: bytes that are not HTTP at all, or WebSocket frames of random bytes (text,
    /// binary, or a reserved opcode).
    async fn random_bytes(&self, task: &Task, rng: &mut StdRng, seen: &mut Seen) -> anyhow::Result<()> {
        let variant = rng.random_range(0..4);
        if variant == 0 {
            let mut junk = vec![0u8; rng.random_range(1..4096)];
            rng.fill(junk.as_mut_slice());
            let mut tcp = rawws::tcp_from(Some(task.addr), self.server).await?;
            seen.sent += 1;
            let answer = match tcp.write_all(&junk).await {
                Err(e) => io_label(&e),
                Ok(()) => {
                    let mut buf = vec![0u8; 512];
                    match tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await {
                        Err(_) => "no answer in 5 s".to_string(),
                        Ok(Err(e)) => io_label(&e),
                        Ok(Ok(0)) => "closed without an answer".to_string(),
                        Ok(Ok(n)) => match std::str::from_utf8(&buf[..n]).ok().and_then(http_status) {
                            Some(status) => format!("http {status}"),
                            None => "answer that is not HTTP".to_string(),
                        },
                    }
                }
            };
            seen.note(format!("TCP junk instead of HTTP: {answer}"));
            return Ok(());
        }
        const RESERVED: [u8; 10] = [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF];
        let (opcode, prefix) = match variant {
            1 => (rawws::OP_TEXT, "text frames of random bytes: "),
            2 => (rawws::OP_BINARY, "binary frames: "),
            _ => (RESERVED[rng.random_range(0..RESERVED.len())], "frames with a reserved opcode: "),
        };
        let Some(mut ws) = self.ws(task, Some(&task.token), seen, prefix).await? else { return Ok(()) };
        for _ in 0..rng.random_range(1..=3) {
            let mut junk = vec![0u8; rng.random_range(1..2048)];
            rng.fill(junk.as_mut_slice());
            seen.sent += 1;
            if ws.send(opcode, &junk).await.is_err() {
                break;
            }
        }
        drain_end(&mut ws, Duration::from_secs(5), seen, prefix).await;
        Ok(())
    }

    /// JSON of every shape, most of it objects with an `op` (known or not) and random fields.
    async fn random_json(&self, task: &Task, rng: &mut StdRng, seen: &mut Seen) -> anyhow::Result<()> {
        let Some(mut ws) = self.ws(task, Some(&task.token), seen, "").await? else { return Ok(()) };
        for _ in 0..rng.random_range(5..=40) {
            let frame = random_frame(rng).to_string();
            seen.sent += 1;
            if ws.send(rawws::OP_TEXT, frame.as_bytes()).await.is_err() {
                break;
            }
        }
        close_and_drain(&mut ws, Duration::from_secs(5), seen, "").await;
        Ok(())
    }

    /// Pings as fast as the socket takes them: far above the rate limit (50 a second, bursts
    /// of 100).
    async fn flood(&self, task: &Task, rng: &mut StdRng, seen: &mut Seen) -> anyhow::Result<()> {
        let Some(mut ws) = self.ws(task, Some(&task.token), seen, "").await? else { return Ok(()) };
        for _ in 0..rng.random_range(300..=600) {
            seen.sent += 1;
            if ws.send(rawws::OP_TEXT, br#"{"op":"ping"}"#).await.is_err() {
                break;
            }
        }
        drain_end(&mut ws, Duration::from_secs(5), seen, "").await;
        Ok(())
    }

    /// Tokens that must not pass: garbage, expired, signed with another secret, `alg: none`,
    /// over WebSocket (header or first frame), REST and SSE.
    async fn bad_token(&self, task: &Task, rng: &mut StdRng, seen: &mut Seen) -> anyhow::Result<()> {
        let garbage = garbage_token(rng);
        let expired = mint_for(&self.secret, task.user, -rng.random_range(1..86_400))?;
        seen.sent += 1;
        let variant = rng.random_range(0..8);
        if variant >= 5 {
            let (prefix, req) = match variant {
                5 => (
                    "REST, expired token: ",
                    task.http.get(format!("{}/v1/orders", self.base)).bearer_auth(&expired),
                ),
                6 => (
                    "REST, garbage token: ",
                    task.http.get(format!("{}/v1/orders", self.base)).bearer_auth(&garbage),
                ),
                _ => (
                    "SSE, garbage token: ",
                    task.http.get(format!("{}/v1/sse", self.base)).query(&[("token", garbage.as_str())]),
                ),
            };
            seen.note(format!("{prefix}{}", rest(req).await));
            return Ok(());
        }
        let (prefix, token) = match variant {
            0 => ("WS, garbage token: ", Some(garbage.clone())),
            1 => ("WS, expired token: ", Some(expired)),
            2 => (
                "WS, token signed with another secret: ",
                Some(mint_for(b"not the server's secret", task.user, 3600)?),
            ),
            3 => ("WS, alg none token for an honest user: ", Some(ALG_NONE_TOKEN.to_string())),
            _ => ("WS, auth frame with a garbage token: ", None),
        };
        let Some(mut ws) = self.ws(task, token.as_deref(), seen, prefix).await? else { return Ok(()) };
        if token.is_none() {
            let auth = json!({"op": "auth", "token": garbage}).to_string();
            let _ = ws.send(rawws::OP_TEXT, auth.as_bytes()).await;
        }
        drain_end(&mut ws, Duration::from_secs(12), seen, prefix).await;
        Ok(())
    }

    /// Frames above `max_frame_bytes`, REST bodies above the body limit.
    async fn oversized(&self, task: &Task, rng: &mut StdRng, seen: &mut Seen) -> anyhow::Result<()> {
        seen.sent += 1;
        match rng.random_range(0..4) {
            v @ (0 | 1) => {
                let size = rng.random_range(MAX_FRAME + 1..=300_000);
                let (opcode, prefix) = match v {
                    0 => (rawws::OP_TEXT, "WS text frame over 64 KiB: "),
                    _ => (rawws::OP_BINARY, "WS binary frame over 64 KiB: "),
                };
                let Some(mut ws) = self.ws(task, Some(&task.token), seen, prefix).await? else {
                    return Ok(());
                };
                let mut payload = format!(r#"{{"op":"ping","ts":"{}"}}"#, "x".repeat(size)).into_bytes();
                payload.truncate(size);
                if let Err(e) = ws.send(opcode, &payload).await {
                    seen.note(format!("{prefix}sending: {}", io_label(&e)));
                }
                drain_end(&mut ws, Duration::from_secs(5), seen, prefix).await;
            }
            v => {
                let (prefix, url, req) = match v {
                    2 => ("REST body of 3 MiB (POST /v1/orders): ", "/v1/orders", true),
                    _ => ("REST body of 3 MiB (POST /v1/auth/login): ", "/v1/auth/login", false),
                };
                let body =
                    format!(r#"{{"client_order_id":"{}","symbol":"BTCUSDT"}}"#, "x".repeat(OVERSIZED_BODY));
                let mut r = task
                    .http
                    .post(format!("{}{url}", self.base))
                    .header("content-type", "application/json")
                    .body(body);
                if req {
                    r = r.bearer_auth(&task.token);
                }
                seen.note(format!("{prefix}{}", rest(r).await));
            }
        }
        Ok(())
    }

    /// Thousands of made-up topic names over WebSocket (32 per subscribe, under the rate
    /// limit), and some over SSE and polling.
    async fn topic_spam(&self, task: &Task, rng: &mut StdRng, seen: &mut Seen) -> anyhow::Result<()> {
        match rng.random_range(0..6) {
            0..=3 => {
                let Some(mut ws) = self.ws(task, Some(&task.token), seen, "WS: ").await? else {
                    return Ok(());
                };
                for f in 0..rng.random_range(50..=100) {
                    let topics: Vec<String> = (0..32).map(|_| made_up_topic(rng)).collect();
                    let frame =
                        json!({"op": "subscribe", "id": format!("spam{f}"), "topics": topics}).to_string();
                    if ws.send(rawws::OP_TEXT, frame.as_bytes()).await.is_err() {
                        break;
                    }
                    seen.sent += 32;
                    // 40 frames a second: under the rate limit, so each is answered.
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                close_and_drain(&mut ws, Duration::from_secs(10), seen, "WS: ").await;
            }
            4 => {
                let topics: Vec<String> = (0..3).map(|_| made_up_topic(rng)).collect();
                seen.sent += 3;
                let req = task
                    .http
                    .get(format!("{}/v1/sse", self.base))
                    .bearer_auth(&task.token)
                    .query(&[("topics", topics.join(",")), ("from", "now".into())]);
                seen.note(format!("SSE: {}", rest(req).await));
            }
            _ => {
                let topics: Vec<String> = (0..3).map(|_| made_up_topic(rng)).collect();
                seen.sent += 3;
                let req = task
                    .http
                    .get(format!("{}/v1/changes", self.base))
                    .bearer_auth(&task.token)
                    .query(&[("since", format!("{}:0", self.epoch)), ("topics", topics.join(","))]);
                seen.note(format!("polling: {}", rest(req).await));
            }
        }
        Ok(())
    }

    /// 80 WebSockets at once (the per-user cap is 64), with the task's token or none, then
    /// all closed: half with a close frame, half dropped.
    async fn reconnect_storm(&self, task: &Task, rng: &mut StdRng, seen: &mut Seen) -> anyhow::Result<()> {
        const STORM: usize = 80;
        let (token, prefix) = match rng.random_bool(0.3) {
            true => (None, "without a token: "),
            false => (Some(task.token.as_str()), "one user's token, 80 at once: "),
        };
        let opened = futures::future::join_all(
            (0..STORM).map(|_| RawWs::upgrade(&self.ws_url, token, Some(task.addr))),
        )
        .await;
        seen.sent += STORM as u64;
        let mut open = Vec::new();
        for r in opened {
            match r {
                Ok(Upgrade::Open(ws)) => {
                    seen.note(format!("{prefix}http 101"));
                    open.push(ws);
                }
                Ok(Upgrade::Refused { status, .. }) => seen.note(format!("{prefix}http {status}")),
                Err(e) => seen.note(format!("{prefix}{}", error_label(e.as_ref()))),
            }
        }
        for (k, mut ws) in open.into_iter().enumerate() {
            if k % 2 == 0 {
                let _ = ws.send(rawws::OP_CLOSE, &1000u16.to_be_bytes()).await;
            }
        }
        // Let the server give the places back before this user's next action.
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(())
    }

    /// Password guessing against one name (a bench user's or a made-up one).
    async fn login_guess(&self, task: &Task, rng: &mut StdRng, seen: &mut Seen) -> anyhow::Result<()> {
        let name = match rng.random_bool(0.5) {
            true => format!("bench_{}", rng.random_range(0..self.honest_users.max(1))),
            false => format!("guess_{}", random_string(rng, 3..12)),
        };
        for _ in 0..15 {
            seen.sent += 1;
            let body = json!({"username": name, "password": random_string(rng, 4..24)});
            let req = task.http.post(format!("{}/v1/auth/login", self.base)).json(&body);
            seen.note(rest(req).await);
        }
        Ok(())
    }
}

async fn hostile_task(h: Arc<Hostile>, t: usize, end: tokio::time::Instant) -> anyhow::Result<()> {
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let slot = t % h.addrs.len();
    let user = h.first_user + t;
    let task = Task { addr: h.addrs[slot], http: h.http[slot].clone(), user, token: mint(&h.secret, user)? };
    while tokio::time::Instant::now() < end {
        let kind = Kind::ALL[rng.random_range(0..Kind::ALL.len())];
        let mut seen = Seen::default();
        // No action outlives the hostile phase by more than 2 s.
        let deadline =
            (tokio::time::Instant::now() + Duration::from_secs(15)).min(end + Duration::from_secs(2));
        match tokio::time::timeout_at(deadline, h.act(kind, &task, &mut rng, &mut seen)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => seen.note(format!("bench side: {}", error_label(e.as_ref()))),
            Err(_) => seen.note("cut off at its time limit"),
        }
        h.record(kind, seen);
        let pause = rng.random_range(0..100);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    Ok(())
}

/// Read what the server sends until it closes (or `wait` passes), noting each frame: how
/// the connection ended.
async fn drain(ws: &mut RawWs, wait: Duration, seen: &mut Seen, prefix: &str) -> String {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => break format!("still open after {} s", wait.as_secs()),
            Ok(Err(e)) => break error_label(e.as_ref()),
            Ok(Ok(None)) => break "closed without a close frame".to_string(),
            Ok(Ok(Some((rawws::OP_CLOSE, payload)))) => break close_label(payload),
            Ok(Ok(Some((rawws::OP_TEXT, payload)))) => {
                if let Some(label) = frame_label(payload) {
                    seen.note(format!("{prefix}{label}"));
                }
            }
            Ok(Ok(Some(_))) => {}
        }
    }
}

/// Note how the connection ended after [`drain`].
async fn drain_end(ws: &mut RawWs, wait: Duration, seen: &mut Seen, prefix: &str) {
    let end = drain(ws, wait, seen, prefix).await;
    seen.note(format!("{prefix}{end}"));
}

/// Send a close frame (1000) and note how the server answered it.
async fn close_and_drain(ws: &mut RawWs, wait: Duration, seen: &mut Seen, prefix: &str) {
    let _ = ws.send(rawws::OP_CLOSE, &1000u16.to_be_bytes()).await;
    let end = drain(ws, wait, seen, prefix).await;
    seen.note(format!("{prefix}after the client's close 1000: {end}"));
}

fn close_label(payload: &[u8]) -> String {
    match payload {
        [a, b, ..] => format!("close {}", u16::from_be_bytes([*a, *b])),
        _ => "close without a code".to_string(),
    }
}

/// `error <code>` for an error frame, the op of any other frame (`welcome` and heartbeats
/// are not noted).
fn frame_label(payload: &[u8]) -> Option<String> {
    let Ok(v) = serde_json::from_slice::<Value>(payload) else {
        return Some("frame that is not JSON".into());
    };
    match v.get("op").and_then(Value::as_str) {
        Some("error") => Some(format!("error {}", v.get("code").and_then(Value::as_str).unwrap_or("?"))),
        Some("welcome" | "heartbeat") => None,
        Some(op) => Some(op.to_string()),
        None => Some("frame without an op".into()),
    }
}

fn http_status(head: &str) -> Option<u16> {
    head.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()
}

/// `http <status> [<error code>]`, or what went wrong on the way.
async fn rest(req: reqwest::RequestBuilder) -> String {
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            if status == 200 {
                return "http 200".into();
            }
            let code = resp.json::<Value>().await.ok().and_then(|v| {
                v.get("error").and_then(|e| e.get("code")).and_then(Value::as_str).map(str::to_owned)
            });
            match code {
                Some(code) => format!("http {status} {code}"),
                None => format!("http {status}"),
            }
        }
        Err(e) => {
            let what = if e.is_timeout() { "timeout".to_string() } else { error_label(&e) };
            format!("no answer: {what}")
        }
    }
}

fn io_label(e: &std::io::Error) -> String {
    format!("io error {:?}", e.kind())
}

/// An error's I/O kind if it has one, else its innermost message (short).
fn error_label(e: &(dyn std::error::Error + 'static)) -> String {
    let mut source = Some(e);
    let mut innermost = e;
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return io_label(io);
        }
        innermost = err;
        source = err.source();
    }
    innermost.to_string().chars().take(80).collect()
}

fn random_string(rng: &mut StdRng, len: std::ops::Range<usize>) -> String {
    const ODD: [char; 8] = ['é', 'ß', '😀', '\u{0}', '\u{7f}', '"', '\\', '\u{202e}'];
    (0..rng.random_range(len))
        .map(|_| match rng.random_range(0..10) {
            0 => ODD[rng.random_range(0..ODD.len())],
            _ => rng.random_range(b'!'..=b'~') as char,
        })
        .collect()
}

/// Junk where a token goes, in characters a header may carry: JWT-shaped or not.
fn garbage_token(rng: &mut StdRng) -> String {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    if rng.random_bool(0.5) {
        let mut segment =
            |n: usize| -> String { (0..n).map(|_| B64[rng.random_range(0..B64.len())] as char).collect() };
        let (a, b, c) = (segment(36), segment(80), segment(43));
        format!("{a}.{b}.{c}")
    } else {
        (0..rng.random_range(1..200)).map(|_| rng.random_range(b'!'..=b'~') as char).collect()
    }
}

fn random_json(rng: &mut StdRng, depth: u32) -> Value {
    match rng.random_range(0..if depth >= 3 { 5 } else { 8 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.random_bool(0.5)),
        2 => json!(rng.random::<i64>()),
        3 => json!(rng.random_range(-1e12..1e12)),
        4 => Value::String(random_string(rng, 0..40)),
        5 => Value::Array((0..rng.random_range(0..6)).map(|_| random_json(rng, depth + 1)).collect()),
        _ => Value::Object(
            (0..rng.random_range(0..6))
                .map(|_| (random_string(rng, 1..12), random_json(rng, depth + 1)))
                .collect(),
        ),
    }
}

/// A client frame a fuzzer would send: any JSON, or (mostly) an object with an `op` the
/// server knows or not and fields it expects or not.
fn random_frame(rng: &mut StdRng) -> Value {
    if rng.random_range(0..4) == 0 {
        return random_json(rng, 0);
    }
    const OPS: [&str; 7] = ["subscribe", "unsubscribe", "ping", "auth", "welcome", "event", "SUBSCRIBE"];
    const FIELDS: [&str; 7] = ["id", "topics", "where", "from", "token", "ts", "extra"];
    let mut obj = Map::new();
    let op = match rng.random_range(0..10) {
        0 => random_json(rng, 2),
        1 => Value::String(random_string(rng, 1..16)),
        _ => Value::String(OPS[rng.random_range(0..OPS.len())].into()),
    };
    obj.insert("op".into(), op);
    for _ in 0..rng.random_range(0..4) {
        let field = FIELDS[rng.random_range(0..FIELDS.len())];
        let value = match (field, rng.random_bool(0.5)) {
            ("topics", true) => {
                json!((0..rng.random_range(0..40)).map(|_| made_up_topic(rng)).collect::<Vec<_>>())
            }
            ("from", true) => json!(format!("{}:{}", random_string(rng, 0..8), rng.random::<u64>())),
            ("id", true) => json!(random_string(rng, 0..80)),
            _ => random_json(rng, 1),
        };
        obj.insert(field.into(), value);
    }
    Value::Object(obj)
}

/// A topic name the server does not serve (market topics of unknown symbols or intervals,
/// private topics that do not exist, junk).
fn made_up_topic(rng: &mut StdRng) -> String {
    let n: u32 = rng.random_range(0..1_000_000);
    match rng.random_range(0..8) {
        0 => format!("kline:BTCUSDT:x{n}"),
        1 => format!("kline:ZZ{n}USDT:1m"),
        2 => format!("ticker:FAKE{n}"),
        3 => format!("trades:BTCUSDT{n}"),
        4 => format!("book:X{n}"),
        5 => format!("mark:{n}"),
        6 => format!("orders_{n}"),
        _ => random_string(rng, 1..40),
    }
}

// ---------------------------------------------------------------------------------------
// The run

/// The server's threads (from /proc) and its allocator's figures (from `/metrics`).
async fn server_figures(http: &reqwest::Client, base: &str, pid: u32) -> Value {
    let threads = std::fs::read_to_string(format!("/proc/{pid}/status")).ok().and_then(|s| {
        s.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|v| v.trim().parse::<u64>().ok())
    });
    let metrics = match http.get(format!("{base}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let metric = |name: &str| {
        metrics.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
    };
    json!({"threads": threads,
           "allocator_allocated_bytes": metric("tradewire_allocator_allocated_bytes"),
           "allocator_resident_bytes": metric("tradewire_allocator_resident_bytes")})
}

fn mean_between(samples: &[(f64, u64)], from: f64, to: f64) -> Option<f64> {
    let v: Vec<u64> = samples.iter().filter(|s| s.0 >= from && s.0 <= to).map(|s| s.1).collect();
    (!v.is_empty()).then(|| v.iter().sum::<u64>() as f64 / v.len() as f64)
}

pub async fn run(cli: &Cli, a: ChaosArgs) -> anyhow::Result<bool> {
    let hostile_to = a.seconds.saturating_sub(a.settle_secs + a.idle_secs);
    anyhow::ensure!(
        hostile_to > a.warmup_secs,
        "--seconds must leave room for the hostile phase after --warmup-secs, --idle-secs and --settle-secs"
    );
    anyhow::ensure!(a.clients > 0 && a.rate > 0.0, "--clients and --rate must be above 0");
    let writer_to = a.seconds - a.settle_secs;
    // Loopback only.
    let url = reqwest::Url::parse(&cli.url).context("--url")?;
    let host = url.host_str().context("--url has no host")?.to_owned();
    let port = url.port_or_known_default().context("--url has no port")?;
    let server = tokio::net::lookup_host((host.as_str(), port)).await?.next().context("resolving --url")?;
    anyhow::ensure!(server.ip().is_loopback(), "chaos runs against a server on loopback only ({server})");

    let secret = crate::jwt_secret(cli)?;
    let db = rusqlite::Connection::open(cli.data_dir.join("tradewire.db"))?;
    db.busy_timeout(Duration::from_secs(10))?;
    crate::ensure_users(&db, a.clients + a.hostile)?;
    writer::seed(&db, a.clients, false)?;
    let epoch: String = db.query_row("SELECT value FROM tw_meta WHERE key = 'epoch'", [], |r| r.get(0))?;
    let ws_url = format!("{}/v1/ws", cli.url.replacen("http", "ws", 1));
    let rss_start = rss_kib(a.pid).context("reading the server's memory (--pid)")?;

    // Honest clients.
    let sh = Arc::new(HonestShared {
        c: HonestCounters::default(),
        last: (0..a.clients).map(|_| AtomicU64::new(0)).collect(),
        closes: Default::default(),
        stop: AtomicBool::new(false),
        no_more_drops: AtomicBool::new(false),
    });
    let connecting = Instant::now();
    let mut honest_tasks = Vec::with_capacity(a.clients);
    for i in 0..a.clients {
        let token = mint(&secret, i)?;
        honest_tasks.push(tokio::spawn(honest(i, ws_url.clone(), token, a.reconnect_secs, sh.clone())));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let ready_by = Instant::now() + Duration::from_secs(60);
    while get(&sh.c.snapshots) < a.clients as u64 && Instant::now() < ready_by {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let hostile_secs = hostile_to - a.warmup_secs;
    eprintln!(
        "chaos: {} of {} honest clients hold their snapshot after {:.1} s; writer {} tx/s; \
         warm-up {} s, hostile {} s ({} tasks), idle {} s, settle up to {} s",
        get(&sh.c.snapshots),
        a.clients,
        connecting.elapsed().as_secs_f64(),
        a.rate,
        a.warmup_secs,
        hostile_secs,
        a.hostile,
        a.idle_secs,
        a.settle_secs
    );

    // The writer, until the settle period.
    let started = Instant::now();
    let stop_writer = Arc::new(AtomicBool::new(false));
    let writer = {
        let (clients, rate, stop) = (a.clients, a.rate, stop_writer.clone());
        let until = started + Duration::from_secs(writer_to);
        tokio::task::spawn_blocking(move || writer::run(&db, clients, rate, until, &stop, Mix::Soak, None))
    };

    // Hostile clients, set up now and started after the warm-up.
    let addrs: Vec<IpAddr> =
        (0..a.hostile_addresses).map(|k| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + k))).collect();
    let http = addrs
        .iter()
        .map(|&ip| reqwest::Client::builder().local_address(ip).timeout(Duration::from_secs(15)).build())
        .collect::<Result<Vec<_>, _>>()?;
    let hostile = Arc::new(Hostile {
        ws_url: ws_url.clone(),
        base: cli.url.trim_end_matches('/').to_string(),
        server,
        secret: secret.clone(),
        epoch,
        honest_users: a.clients,
        addrs: addrs.clone(),
        http,
        first_user: a.clients,
        tally: Mutex::new(BTreeMap::new()),
    });
    let mut hostile_tasks = Vec::new();
    let plain = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let mut figures_before = Value::Null;

    // Sample the server's memory every second until the writer stops.
    let mut samples: Vec<(f64, u64)> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_report = Instant::now();
    let mut rss_before = None;
    loop {
        tick.tick().await;
        let t = started.elapsed().as_secs_f64();
        let rss = rss_kib(a.pid).context("reading the server's memory (is it still running?)")?;
        samples.push((t, rss));
        if hostile_tasks.is_empty() && t >= a.warmup_secs as f64 {
            let w = a.warmup_secs as f64;
            rss_before = mean_between(&samples, w - 10.0, w);
            figures_before = server_figures(&plain, &hostile.base, a.pid).await;
            eprintln!(
                "{t:6.1} s  warm-up over: server RSS {:.0} KiB; hostile phase starts",
                rss_before.unwrap_or(0.0)
            );
            let end = tokio::time::Instant::now() + Duration::from_secs(hostile_secs);
            for k in 0..a.hostile {
                hostile_tasks.push(tokio::spawn(hostile_task(hostile.clone(), k, end)));
            }
        }
        if last_report.elapsed() >= Duration::from_secs(30) {
            last_report = Instant::now();
            let c = &sh.c;
            eprintln!(
                "{t:6.1} s  rss {rss} KiB  honest events {}  gaps {}  dups {}  resumes {}  resyncs {}  lost {}  | hostile actions {}",
                get(&c.events),
                get(&c.gaps),
                get(&c.duplicates),
                get(&c.resumes),
                get(&c.resyncs),
                get(&c.lost),
                hostile.actions()
            );
        }
        if t >= writer_to as f64 {
            break;
        }
    }
    let rss_after = mean_between(&samples, writer_to as f64 - 10.0, writer_to as f64);
    let figures_after = server_figures(&plain, &hostile.base, a.pid).await;
    let hostile_window = (a.warmup_secs as f64, hostile_to as f64 + 2.0);
    let rss_peak =
        samples.iter().filter(|s| s.0 >= hostile_window.0 && s.0 <= hostile_window.1).map(|s| s.1).max();
    let mut hostile_failures = 0;
    for t in hostile_tasks {
        match tokio::time::timeout(Duration::from_secs(10), t).await {
            Ok(Ok(Ok(()))) => {}
            other => {
                hostile_failures += 1;
                if hostile_failures <= 3 {
                    eprintln!("hostile task ended badly: {other:?}");
                }
            }
        }
    }
    stop_writer.store(true, Ordering::Relaxed);
    let (written, writer_error) = match writer.await {
        Ok(Ok(w)) => (w, None),
        Ok(Err(e)) => (writer::Written::default(), Some(format!("{e:#}"))),
        Err(e) => (writer::Written::default(), Some(e.to_string())),
    };
    if let Some(e) = &writer_error {
        eprintln!("the writer failed: {e}");
    }

    // Settle: no more planned drops; every client must reach the head of its stream.
    sh.no_more_drops.store(true, Ordering::Relaxed);
    let db = rusqlite::Connection::open(cli.data_dir.join("tradewire.db"))?;
    db.busy_timeout(Duration::from_secs(10))?;
    let settle_started = Instant::now();
    let settle_by = settle_started + Duration::from_secs(a.settle_secs);
    let (heads, behind) = loop {
        let heads = soak::heads(&db, a.clients)?;
        let behind: Vec<usize> =
            (0..a.clients).filter(|&i| sh.last[i].load(Ordering::Relaxed) != heads[i]).collect();
        if behind.is_empty() || Instant::now() >= settle_by {
            break (heads, behind);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let settled_in = settle_started.elapsed().as_secs_f64();
    sh.stop.store(true, Ordering::Relaxed);
    let mut logs = Vec::with_capacity(a.clients);
    for t in honest_tasks {
        logs.push(tokio::time::timeout(Duration::from_secs(10), t).await.ok().and_then(Result::ok));
    }
    let heads_moved =
        soak::heads(&db, a.clients)?.iter().zip(&heads).filter(|(now, then)| now != then).count();

    // Every seq of each user, from the client's first snapshot to the head: exactly once.
    let mut total = Exactness::default();
    let (mut exact_clients, mut unchecked, mut inexact) = (0usize, 0usize, 0usize);
    for (i, log) in logs.iter().enumerate() {
        match log.as_ref().and_then(|l| Exactness::of(l, heads[i])) {
            Some(e) => {
                if e.exact() {
                    exact_clients += 1;
                } else {
                    inexact += 1;
                    if inexact <= 5 {
                        eprintln!("honest client {i}: not exact against head {}: {e:?}", heads[i]);
                    }
                }
                total.expected += e.expected;
                total.once += e.once;
                total.missing += e.missing;
                total.extra += e.extra;
                total.beyond += e.beyond;
            }
            None => unchecked += 1,
        }
    }

    let panics = match &a.server_log {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?
                .lines()
                .filter(|l| l.contains("panicked"))
                .count(),
        ),
        None => None,
    };
    let readyz = match plain.get(format!("{}/readyz", hostile.base)).send().await {
        Ok(r) => r.status().as_u16().to_string(),
        Err(e) => format!("no answer: {}", error_label(&e)),
    };

    let c = &sh.c;
    let gaps = get(&c.gaps);
    let duplicates = get(&c.duplicates);
    let honest_passed = gaps == 0
        && duplicates == 0
        && total.missing == 0
        && total.extra == 0
        && total.beyond == 0
        && exact_clients == a.clients
        && get(&c.resyncs) == 0
        && get(&c.epoch_mismatch) == 0
        && get(&c.heartbeat_ahead) == 0
        && writer_error.is_none();
    let (before, after) = (rss_before.unwrap_or(f64::NAN), rss_after.unwrap_or(f64::NAN));
    let ratio = after / before;
    let rss_met = ratio.is_finite() && ratio <= 1.0 + a.max_rss_growth_pct / 100.0;
    let closes = sh.closes.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let tally = std::mem::take(&mut *hostile.tally.lock().unwrap_or_else(|e| e.into_inner()));

    println!(
        "chaos: {} honest clients, {} hostile tasks from {} to {}, {:.0} s (warm-up {} s, hostile {} s, idle {} s, settle {:.1} s)",
        a.clients,
        a.hostile,
        addrs.first().map(ToString::to_string).unwrap_or_default(),
        addrs.last().map(ToString::to_string).unwrap_or_default(),
        started.elapsed().as_secs_f64(),
        a.warmup_secs,
        hostile_secs,
        a.idle_secs,
        settled_in
    );
    println!(
        "  writer                 {} changes in {} transactions ({:.0} changes/s){}",
        written.changes,
        written.transactions,
        written.changes as f64 / written.seconds.max(1e-9),
        writer_error.as_deref().map(|e| format!(", FAILED: {e}")).unwrap_or_default()
    );
    println!("  honest events          {} (each seq == last + 1)", get(&c.events));
    println!(
        "  exactly once           {} of {} seqs from the first snapshot to the head ({} missing, {} extra, {} above the head); {} of {} clients exact",
        total.once, total.expected, total.missing, total.extra, total.beyond, exact_clients, a.clients
    );
    println!("  gaps / duplicates      {gaps} ({} seqs) / {duplicates}", get(&c.missing));
    println!(
        "  resumes                {} from a position, {} resync_required, {} connections lost (server closes {:?}), {} connect failures",
        get(&c.resumes),
        get(&c.resyncs),
        get(&c.lost),
        closes,
        get(&c.connect_failures)
    );
    println!(
        "  at the end             {} of {} clients at their head after {settled_in:.1} s; heads moved after the check: {heads_moved}",
        a.clients - behind.len(),
        a.clients
    );
    println!(
        "  heartbeat ahead / epoch mismatch / error frames: {} / {} / {}",
        get(&c.heartbeat_ahead),
        get(&c.epoch_mismatch),
        get(&c.error_frames)
    );
    println!(
        "  hostile actions        {} in all ({hostile_failures} tasks ended badly)",
        tally.values().map(|t| t.actions).sum::<u64>()
    );
    for (kind, t) in &tally {
        println!("    {:<16} {:>6} actions, {} {}", kind.name(), t.actions, t.sent, kind.unit());
        for (what, n) in &t.answers {
            println!("      {n:>8}  {what}");
        }
    }
    println!(
        "  server                 panics in its log: {}; /readyz {readyz}",
        panics.map_or("not read (no --server-log)".to_string(), |n| n.to_string())
    );
    println!(
        "  server RSS             {rss_start} KiB at the start, {before:.0} KiB after warm-up, peak {} KiB in the hostile phase, {after:.0} KiB after {} s idle: x{ratio:.3}  [target ≤ +{}%: {}]",
        rss_peak.unwrap_or(0),
        a.idle_secs,
        a.max_rss_growth_pct,
        if rss_met { "met" } else { "MISSED" }
    );
    println!("  server before / after  {figures_before} / {figures_after}");
    println!("  honest clients         {}", if honest_passed { "PASS" } else { "FAIL" });

    let by_kind: Map<String, Value> = tally
        .iter()
        .map(|(kind, t)| {
            (
                kind.name().to_string(),
                json!({"actions": t.actions, "sent": t.sent, "unit": kind.unit(), "answers": t.answers}),
            )
        })
        .collect();
    let round = |x: f64| if x.is_finite() { json!(x.round()) } else { Value::Null };
    println!(
        "{}",
        json!({
            "scenario": "chaos", "seconds": a.seconds, "warmup_secs": a.warmup_secs, "hostile_secs": hostile_secs,
            "idle_secs": a.idle_secs, "settle_secs": settled_in,
            "honest": {
                "clients": a.clients, "writer_rate_tx": a.rate, "written_changes": written.changes,
                "written_transactions": written.transactions, "writer_error": writer_error,
                "events": get(&c.events), "expected_seqs": total.expected, "seen_exactly_once": total.once,
                "missing_at_end": total.missing, "extra_deliveries": total.extra, "above_head": total.beyond,
                "clients_exact": exact_clients, "clients_unchecked": unchecked, "clients_behind_at_end": behind.len(),
                "gaps": gaps, "gap_seqs": get(&c.missing), "duplicates": duplicates,
                "resumes": get(&c.resumes), "resyncs": get(&c.resyncs), "snapshots": get(&c.snapshots),
                "connections_lost": get(&c.lost), "server_closes": closes, "connect_failures": get(&c.connect_failures),
                "heartbeat_ahead": get(&c.heartbeat_ahead), "epoch_mismatch": get(&c.epoch_mismatch),
                "error_frames": get(&c.error_frames), "heads_moved_after_check": heads_moved,
                "passed": honest_passed,
            },
            "hostile": {
                "tasks": a.hostile, "addresses": addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "actions": tally.values().map(|t| t.actions).sum::<u64>(), "tasks_ended_badly": hostile_failures,
                "by_kind": by_kind,
            },
            "server": {"panics": panics, "readyz": readyz},
            "rss": {
                "start_kib": rss_start, "before_kib": round(before), "peak_hostile_kib": rss_peak,
                "after_kib": round(after), "ratio": if ratio.is_finite() { json!((ratio * 1000.0).round() / 1000.0) } else { Value::Null },
                "target_pct": a.max_rss_growth_pct, "target_met": rss_met,
                "server_before": figures_before, "server_after": figures_after,
            },
            "passed": honest_passed,
        })
    );
    Ok(honest_passed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(start: u64, seqs: &[u64]) -> Log {
        let mut log = Log { start: Some(start), ..Default::default() };
        for &s in seqs {
            log.record(s);
        }
        log
    }

    #[test]
    fn every_seq_from_the_snapshot_to_the_head_once_is_exact() {
        let e = Exactness::of(&log_of(10, &[11, 12, 13]), 13).unwrap();
        assert!(e.exact());
        assert_eq!((e.expected, e.once), (3, 3));
        // Nothing after the snapshot, and nothing committed: exact too.
        assert!(Exactness::of(&log_of(10, &[]), 10).unwrap().exact());
    }

    #[test]
    fn missing_repeated_and_foreign_seqs_are_found() {
        let e = Exactness::of(&log_of(10, &[11, 13, 13, 9]), 14).unwrap();
        assert_eq!((e.expected, e.once, e.missing, e.extra, e.beyond), (4, 2, 2, 2, 0));
        let e = Exactness::of(&log_of(0, &[1, 2, 3]), 2).unwrap();
        assert_eq!((e.once, e.beyond), (2, 1));
        assert!(!e.exact());
        // A client that never held a snapshot cannot be checked.
        assert!(Exactness::of(&Log::default(), 5).is_none());
    }

    #[test]
    fn answers_are_labelled_by_close_code_and_error_code() {
        assert_eq!(close_label(&[0x0f, 0xbd, b'x']), "close 4029");
        assert_eq!(close_label(&[]), "close without a code");
        assert_eq!(
            frame_label(br#"{"op":"error","code":"invalid_topic","message":"m"}"#).unwrap(),
            "error invalid_topic"
        );
        assert_eq!(frame_label(br#"{"op":"welcome"}"#), None);
        assert_eq!(frame_label(b"\xff").unwrap(), "frame that is not JSON");
        assert_eq!(http_status("HTTP/1.1 400 Bad Request\r\n"), Some(400));
        assert_eq!(http_status("SSH-2.0"), None);
    }
}
