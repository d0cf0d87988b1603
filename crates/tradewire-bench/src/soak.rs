//! `soak`: many clients on their user streams for a long time, the simulator running and a
//! steady writer changing the bench users' rows. Every client checks that its stream's
//! `seq` goes up by exactly one — across reconnects too: each client drops its connection
//! now and then and resumes from its last position — and at the end that it has reached
//! the head of its stream in the database. The server's resident memory is sampled all
//! along; the figure that matters is its growth after the warm-up.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tradewire_protocol::ServerFrame;

use crate::writer::{self, Mix};
use crate::{Cli, mint, rss_kib};

#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    #[arg(long, default_value_t = 30.0)]
    pub minutes: f64,
    /// Memory before this point is warm-up (caches, allocator arenas, connection set-up).
    #[arg(long, default_value_t = 5.0)]
    pub warmup_minutes: f64,
    /// Changes a second the bench commits for its users (besides what the simulator writes).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Each client drops its connection and resumes from its position about this often
    /// (randomly between half and one and a half times it); 0 never.
    #[arg(long, default_value_t = 300.0)]
    pub reconnect_secs: f64,
    /// One client in this many also subscribes to market topics.
    #[arg(long, default_value_t = 10)]
    pub market_every: usize,
    /// Market topics of those clients.
    #[arg(long, default_value = "ticker:BTCUSDT,trades:BTCUSDT")]
    pub market_topics: String,
    /// The server's process id (its resident memory is sampled).
    #[arg(long)]
    pub pid: u32,
    #[arg(long, default_value_t = 10)]
    pub sample_secs: u64,
    /// Memory growth after the warm-up that still passes, in percent.
    #[arg(long, default_value_t = 5.0)]
    pub max_growth_pct: f64,
}

#[derive(Default)]
struct Counters {
    events: AtomicU64,
    duplicates: AtomicU64,
    gaps: AtomicU64,
    missing: AtomicU64,
    heartbeat_ahead: AtomicU64,
    epoch_mismatch: AtomicU64,
    resumes: AtomicU64,
    resyncs: AtomicU64,
    snapshots: AtomicU64,
    market: AtomicU64,
    error_frames: AtomicU64,
    connect_failures: AtomicU64,
    connection_lost: AtomicU64,
}

impl Counters {
    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// What a client knows of its stream.
#[derive(Default)]
struct Stream {
    epoch: Option<String>,
    last: u64,
}

struct Shared {
    counters: Counters,
    /// The last `seq` each client has applied (for the check against the database).
    last: Vec<AtomicU64>,
    /// Close codes sent by the server, by code.
    closes: std::sync::Mutex<BTreeMap<u16, u64>>,
    stop: AtomicBool,
    no_more_drops: AtomicBool,
}

pub(crate) enum Ended {
    Planned,
    Lost,
    Stop,
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How a bench client's connection ends while it waits for frames: at its planned drop
/// time, when the run stops, or when the server closes it (the close code is counted).
/// Shared by the soak's and the chaos run's honest clients.
pub(crate) struct Ending {
    drop_at: std::pin::Pin<Box<tokio::time::Sleep>>,
    stop_check: tokio::time::Interval,
}

impl Ending {
    pub(crate) fn new(drop_at: Option<tokio::time::Instant>) -> Self {
        let far = tokio::time::Instant::now() + Duration::from_secs(365 * 86_400);
        Self {
            drop_at: Box::pin(tokio::time::sleep_until(drop_at.unwrap_or(far))),
            stop_check: tokio::time::interval(Duration::from_millis(250)),
        }
    }

    /// The next text frame, or how the connection ended (closed by us where we end it).
    pub(crate) async fn next_text(
        &mut self,
        ws: &mut Ws,
        stop: &AtomicBool,
        no_more_drops: &AtomicBool,
        closes: &std::sync::Mutex<BTreeMap<u16, u64>>,
    ) -> Result<tokio_tungstenite::tungstenite::Utf8Bytes, Ended> {
        loop {
            let msg = tokio::select! {
                m = ws.next() => m,
                () = &mut self.drop_at, if !no_more_drops.load(Ordering::Relaxed) => {
                    let _ = ws.close(None).await;
                    return Err(Ended::Planned);
                }
                _ = self.stop_check.tick() => {
                    if stop.load(Ordering::Relaxed) {
                        let _ = ws.close(None).await;
                        return Err(Ended::Stop);
                    }
                    continue;
                }
            };
            match msg {
                Some(Ok(Message::Text(t))) => return Ok(t),
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map(|f| u16::from(f.code)).unwrap_or(1005);
                    *closes.lock().unwrap_or_else(|e| e.into_inner()).entry(code).or_default() += 1;
                    return Err(Ended::Lost);
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(Ended::Lost),
            }
        }
    }
}

async fn client(
    i: usize,
    ws_url: String,
    token: String,
    market: Option<Vec<String>>,
    reconnect_secs: f64,
    sh: Arc<Shared>,
) {
    let mut stream = Stream::default();
    let next_drop = || {
        let secs = reconnect_secs * rand::rng().random_range(0.5..1.5);
        (reconnect_secs > 0.0).then(|| tokio::time::Instant::now() + Duration::from_secs_f64(secs))
    };
    let mut drop_at = next_drop();
    while !sh.stop.load(Ordering::Relaxed) {
        let ended = session(i, &ws_url, &token, market.as_deref(), &mut stream, drop_at, &sh).await;
        match ended {
            Ok(Ended::Stop) => return,
            Ok(Ended::Planned) => {
                drop_at = next_drop();
                let offline = rand::rng().random_range(200..2000);
                tokio::time::sleep(Duration::from_millis(offline)).await;
            }
            Ok(Ended::Lost) => {
                sh.counters.connection_lost.fetch_add(1, Ordering::Relaxed);
                let backoff = rand::rng().random_range(100..1000);
                tokio::time::sleep(Duration::from_millis(backoff)).await;
            }
            Err(e) => {
                if sh.counters.connect_failures.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!("client {i}: {e:#}");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

fn subscribe_user(stream: &Stream) -> Message {
    let from = match &stream.epoch {
        Some(epoch) => json!({"epoch": epoch, "seq": stream.last}),
        None => json!("snapshot"),
    };
    Message::Text(json!({"op": "subscribe", "id": "u", "topics": ["*"], "from": from}).to_string().into())
}

/// One connection, until it is dropped on purpose, lost, or the soak ends.
async fn session(
    i: usize,
    ws_url: &str,
    token: &str,
    market: Option<&[String]>,
    stream: &mut Stream,
    drop_at: Option<tokio::time::Instant>,
    sh: &Shared,
) -> anyhow::Result<Ended> {
    let mut req = ws_url.into_client_request()?;
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.context("connecting")?;
    if stream.epoch.is_some() {
        sh.counters.resumes.fetch_add(1, Ordering::Relaxed);
    }
    ws.send(subscribe_user(stream)).await?;
    if let Some(topics) = market {
        ws.send(Message::Text(
            json!({"op": "subscribe", "id": "m", "topics": topics, "from": "now"}).to_string().into(),
        ))
        .await?;
    }
    let c = &sh.counters;
    let mut ending = Ending::new(drop_at);
    loop {
        let text = match ending.next_text(&mut ws, &sh.stop, &sh.no_more_drops, &sh.closes).await {
            Ok(text) => text,
            Err(ended) => return Ok(ended),
        };
        match serde_json::from_str::<ServerFrame>(&text) {
            Ok(ServerFrame::Event(ev)) if ev.id.as_deref() == Some("u") => {
                if stream.epoch.as_deref() != Some(ev.epoch.as_str()) {
                    c.epoch_mismatch.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if ev.seq == stream.last + 1 {
                    c.events.fetch_add(1, Ordering::Relaxed);
                } else if ev.seq <= stream.last {
                    c.duplicates.fetch_add(1, Ordering::Relaxed);
                    continue;
                } else {
                    c.gaps.fetch_add(1, Ordering::Relaxed);
                    c.missing.fetch_add(ev.seq - stream.last - 1, Ordering::Relaxed);
                    if Counters::get(&c.gaps) <= 5 {
                        eprintln!("client {i}: gap, seq {} after {}", ev.seq, stream.last);
                    }
                }
                stream.last = ev.seq;
                sh.last[i].store(ev.seq, Ordering::Relaxed);
            }
            Ok(ServerFrame::Snapshot { id, position, .. }) if id == "u" => {
                c.snapshots.fetch_add(1, Ordering::Relaxed);
                stream.epoch = Some(position.epoch);
                stream.last = position.seq;
                sh.last[i].store(position.seq, Ordering::Relaxed);
            }
            Ok(ServerFrame::ResyncRequired { id, reason }) if id == "u" => {
                // The position could not be served: start again from a snapshot (counted;
                // the soak expects none within the retention window).
                if c.resyncs.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!("client {i}: resync_required ({reason})");
                }
                *stream = Stream::default();
                ws.send(subscribe_user(stream)).await?;
            }
            // Every change at or below a heartbeat's position has been sent: one we have
            // not seen by now was lost.
            Ok(ServerFrame::Heartbeat { position, .. })
                if stream.epoch.as_deref() == Some(position.epoch.as_str()) && position.seq > stream.last =>
            {
                c.heartbeat_ahead.fetch_add(1, Ordering::Relaxed);
            }
            Ok(ServerFrame::Market { .. }) => {
                c.market.fetch_add(1, Ordering::Relaxed);
            }
            Ok(ServerFrame::Error { .. }) => {
                let before = c.error_frames.fetch_add(1, Ordering::Relaxed);
                if before < 5 {
                    eprintln!("client {i}: {text}");
                }
            }
            _ => {}
        }
    }
}

/// Heads of the bench users' streams in the database.
pub(crate) fn heads(db: &rusqlite::Connection, clients: usize) -> anyhow::Result<Vec<u64>> {
    let mut out = vec![0; clients];
    let mut stmt = db.prepare("SELECT user_id, seq FROM tw_user_seq WHERE user_id LIKE 'u_bench_%'")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))?;
    for row in rows {
        let (user, seq) = row?;
        if let Some(i) = user.strip_prefix("u_bench_").and_then(|s| s.parse::<usize>().ok())
            && i < clients
        {
            out[i] = seq;
        }
    }
    Ok(out)
}

fn mean(v: &[u64]) -> f64 {
    v.iter().sum::<u64>() as f64 / v.len().max(1) as f64
}

pub async fn run(cli: &Cli, a: SoakArgs) -> anyhow::Result<bool> {
    let secret = crate::jwt_secret(cli)?;
    let secret = secret.as_slice();
    let db = rusqlite::Connection::open(cli.data_dir.join("tradewire.db"))?;
    db.busy_timeout(Duration::from_secs(10))?;
    crate::ensure_users(&db, a.clients)?;
    writer::seed(&db, a.clients, false)?;
    let ws_url = format!("{}/v1/ws", cli.url.replacen("http", "ws", 1));
    let market: Vec<String> = a.market_topics.split(',').map(str::to_string).collect();

    let sh = Arc::new(Shared {
        counters: Counters::default(),
        last: (0..a.clients).map(|_| AtomicU64::new(0)).collect(),
        closes: Default::default(),
        stop: AtomicBool::new(false),
        no_more_drops: AtomicBool::new(false),
    });
    let started = Instant::now();
    let total = Duration::from_secs_f64(a.minutes * 60.0);
    let mut clients = Vec::with_capacity(a.clients);
    for i in 0..a.clients {
        let token = mint(secret, i)?;
        let m = (a.market_every > 0 && i % a.market_every == 0).then(|| market.clone());
        clients.push(tokio::spawn(client(i, ws_url.clone(), token, m, a.reconnect_secs, sh.clone())));
        // Spread the first handshakes (and so the later planned reconnects).
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Wait until every client holds its snapshot before writing.
    let ready_by = Instant::now() + Duration::from_secs(60);
    while Counters::get(&sh.counters.snapshots) < a.clients as u64 && Instant::now() < ready_by {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "soak: {} of {} clients subscribed in {:.1} s; writing {} changes/s for {} min",
        Counters::get(&sh.counters.snapshots),
        a.clients,
        started.elapsed().as_secs_f64(),
        a.rate,
        a.minutes
    );

    let stop_writer = Arc::new(AtomicBool::new(false));
    let writer = {
        let (clients, rate, stop) = (a.clients, a.rate, stop_writer.clone());
        let until = started + total;
        tokio::task::spawn_blocking(move || writer::run(&db, clients, rate, until, &stop, Mix::Soak, None))
    };

    // Sample memory until the end.
    let mut samples: Vec<(f64, u64)> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(a.sample_secs));
    let mut last_report = Instant::now();
    while started.elapsed() < total {
        tick.tick().await;
        let t = started.elapsed().as_secs_f64();
        let rss = rss_kib(a.pid).context("reading the server's memory (is it still running?)")?;
        samples.push((t, rss));
        if last_report.elapsed() >= Duration::from_secs(60) {
            last_report = Instant::now();
            let c = &sh.counters;
            eprintln!(
                "{:6.1} min  rss {rss} KiB  events {}  gaps {}  dups {}  resumes {}  resyncs {}  lost {}  market {}",
                t / 60.0,
                Counters::get(&c.events),
                Counters::get(&c.gaps),
                Counters::get(&c.duplicates),
                Counters::get(&c.resumes),
                Counters::get(&c.resyncs),
                Counters::get(&c.connection_lost),
                Counters::get(&c.market),
            );
        }
    }
    stop_writer.store(true, Ordering::Relaxed);
    let written = writer.await??;
    // No more planned drops; clients still offline come back and catch up.
    sh.no_more_drops.store(true, Ordering::Relaxed);

    // Every client must reach the head of its stream.
    let db = rusqlite::Connection::open(cli.data_dir.join("tradewire.db"))?;
    let heads = heads(&db, a.clients)?;
    let settle_by = Instant::now() + Duration::from_secs(30);
    let behind = loop {
        let behind: Vec<usize> =
            (0..a.clients).filter(|&i| sh.last[i].load(Ordering::Relaxed) < heads[i]).collect();
        if behind.is_empty() || Instant::now() >= settle_by {
            break behind;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let missing_at_end: u64 = behind.iter().map(|&i| heads[i] - sh.last[i].load(Ordering::Relaxed)).sum();
    sh.stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = tokio::time::timeout(Duration::from_secs(5), c).await;
    }

    // Memory after the warm-up: the first minute's mean against the last minute's.
    let warm = a.warmup_minutes * 60.0;
    let end = samples.last().map_or(0.0, |s| s.0);
    let after: Vec<u64> = samples.iter().filter(|s| s.0 >= warm && s.0 < warm + 60.0).map(|s| s.1).collect();
    let last: Vec<u64> = samples.iter().filter(|s| s.0 > end - 60.0).map(|s| s.1).collect();
    let peak = samples.iter().filter(|s| s.0 >= warm).map(|s| s.1).max().unwrap_or(0);
    let (baseline, final_) = (mean(&after), mean(&last));
    let growth = if baseline > 0.0 { (final_ - baseline) / baseline * 100.0 } else { f64::NAN };

    let c = &sh.counters;
    let closes = sh.closes.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let faults = Counters::get(&c.gaps)
        + Counters::get(&c.duplicates)
        + Counters::get(&c.heartbeat_ahead)
        + Counters::get(&c.epoch_mismatch)
        + Counters::get(&c.resyncs)
        + behind.len() as u64;
    let passed = faults == 0 && growth.is_finite() && growth < a.max_growth_pct;
    println!(
        "soak: {} clients, {:.1} min, bench writer {:.0} changes/s + simulator, warm-up {} min",
        a.clients,
        started.elapsed().as_secs_f64() / 60.0,
        a.rate,
        a.warmup_minutes
    );
    println!("  written by the bench   {} changes in {} transactions", written.changes, written.transactions);
    println!("  events received        {} (contiguous)", Counters::get(&c.events));
    println!(
        "  gaps / duplicates      {} ({} seqs missing) / {}",
        Counters::get(&c.gaps),
        Counters::get(&c.missing),
        Counters::get(&c.duplicates)
    );
    println!(
        "  resumes                {} planned reconnects from a position, {} resync_required, {} connections lost, server closes {:?}",
        Counters::get(&c.resumes),
        Counters::get(&c.resyncs),
        Counters::get(&c.connection_lost),
        closes
    );
    println!(
        "  at the end             {} of {} clients at the head of their stream ({} seqs behind)",
        a.clients - behind.len(),
        a.clients,
        missing_at_end
    );
    println!(
        "  heartbeat ahead / epoch mismatch / error frames: {} / {} / {}",
        Counters::get(&c.heartbeat_ahead),
        Counters::get(&c.epoch_mismatch),
        Counters::get(&c.error_frames)
    );
    println!("  market messages        {}", Counters::get(&c.market));
    println!(
        "  server RSS             {:.0} KiB after warm-up -> {:.0} KiB at the end (peak {peak} KiB): {growth:+.2} %  [{}]",
        baseline,
        final_,
        if passed { "PASS" } else { "FAIL" }
    );
    let rss: Vec<Value> = samples.iter().map(|(t, k)| json!([t.round() as u64, k])).collect();
    println!(
        "{}",
        json!({"scenario": "soak", "clients": a.clients, "minutes": a.minutes, "warmup_minutes": a.warmup_minutes,
               "writer_rate": a.rate, "written_changes": written.changes, "written_transactions": written.transactions,
               "events": Counters::get(&c.events), "gaps": Counters::get(&c.gaps), "missing": Counters::get(&c.missing),
               "duplicates": Counters::get(&c.duplicates), "heartbeat_ahead": Counters::get(&c.heartbeat_ahead),
               "epoch_mismatch": Counters::get(&c.epoch_mismatch), "resumes": Counters::get(&c.resumes),
               "resyncs": Counters::get(&c.resyncs), "connections_lost": Counters::get(&c.connection_lost),
               "connect_failures": Counters::get(&c.connect_failures), "server_closes": closes,
               "error_frames": Counters::get(&c.error_frames), "market_messages": Counters::get(&c.market),
               "clients_behind_at_end": behind.len(), "seqs_behind_at_end": missing_at_end,
               "rss_baseline_kib": baseline.round(), "rss_final_kib": final_.round(), "rss_peak_kib": peak,
               "rss_growth_pct": (growth * 100.0).round() / 100.0, "rss_samples": rss, "passed": passed})
    );
    Ok(passed)
}
