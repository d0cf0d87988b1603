//! A bulk `UPDATE` of 2,000,000 rows in one transaction through `psql` (a nightly re-mark):
//! delivered to the owner's client complete and in order, while the server process (the
//! `tradewire` binary, measured from `/proc`) stays within a stated memory bound. Logical
//! capture spills the open transaction to disk and publishes it from the log a page at a
//! time; the outbox reads its window through a cursor. (`TW_BULK_ROWS` changes the size.)

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use secrecy::SecretString;
use tradewire_client::{Options, Subscriber, Update};
use tradewire_server::config::Config;

use crate::backend::{self, Backend, backend, shell};

/// Peak RSS the server may reach, in KiB, whatever the size of the transaction. (Holding
/// the transaction in memory cost about a kilobyte per row: 2 GB for 2,000,000 rows.)
const RSS_BOUND_KIB: u64 = 256 * 1024;
/// How long the whole delivery may take (a debug build on two cores).
const DELIVERY_DEADLINE: Duration = Duration::from_secs(900);

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or(0)
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_update_of_two_million_rows_is_delivered_in_order_in_bounded_memory() {
    if backend() == Backend::Sqlite {
        return; // SQLite's pump reads its log by id, a page at a time, whatever the transaction
    }
    let rows: u64 = std::env::var("TW_BULK_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000_000);
    let tmp = tempfile::tempdir().unwrap();
    let mut config = Config { data_dir: tmp.path().join("data"), ..Config::default() };
    backend::prepare(&mut config);
    let url = config.database.clone().unwrap();
    let capture = if backend() == Backend::PgLogical { "logical" } else { "outbox" };
    let tradewire = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tradewire"));
        cmd.args(args)
            .env("TRADEWIRE_DATA_DIR", &config.data_dir)
            .env("TRADEWIRE_DATABASE", &url)
            .env("TRADEWIRE_CAPTURE", capture)
            .env("TRADEWIRE_SLOT", &config.slot)
            .env("TRADEWIRE_JWT_SECRET", "bulk-test-secret")
            .env("TRADEWIRE_LOG", "warn");
        cmd
    };
    // The rows exist before capture does: only the update is captured.
    assert!(tradewire(&["migrate"]).status().unwrap().success());
    let mut add =
        tradewire(&["user", "add", "alice"]).stdin(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    std::io::Write::write_all(add.stdin.as_mut().unwrap(), b"alice-password-1\nalice-password-1\n").unwrap();
    drop(add.stdin.take());
    assert!(add.wait().unwrap().success());
    shell(
        &backend::target(&config),
        &format!(
            "INSERT INTO signals(id, user_id, symbol, direction, confidence, reason, ts)
             SELECT 'sig_' || lpad(i::text, 8, '0'), 'u_alice', 'BTCUSDT', 'long', '0.5', 'first mark', 0
             FROM generate_series(1, {rows}) AS i"
        ),
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = Killed(
        tradewire(&["serve", "--no-sim", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = server.0.id();
    let until = Instant::now() + Duration::from_secs(60);
    let ready = format!("http://127.0.0.1:{port}/readyz");
    while !reqwest::get(&ready).await.is_ok_and(|r| r.status().is_success()) {
        assert!(Instant::now() < until, "the server did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let secret = SecretString::from("bulk-test-secret".to_owned());
    let token = tradewire_server::credentials::Tokens::new(&secret, 3600).issue("u_alice", "alice", None).0;
    let mut opts = Options::new(format!("ws://127.0.0.1:{port}/v1/ws"), token, vec!["signals".into()]);
    opts.backoff_base = Duration::from_millis(20);
    let mut sub = Subscriber::new(opts);
    let start = loop {
        match tokio::time::timeout(Duration::from_secs(30), sub.next()).await.unwrap().unwrap() {
            Update::Snapshot { position, .. } => break position.seq,
            _ => continue,
        }
    };
    let before = status_kib(pid, "VmRSS:");

    let target = backend::target(&config);
    let update = tokio::task::spawn_blocking(move || {
        shell(&target, "UPDATE signals SET reason = 'remarked' WHERE user_id = 'u_alice'");
    });
    let began = Instant::now();
    let mut first_at = None;
    let mut peak = before;
    let mut n = 0u64;
    while n < rows {
        // The first change comes after the whole transaction is committed, decoded and
        // written to the log; later ones follow each other.
        let wait = if n == 0 { DELIVERY_DEADLINE } else { Duration::from_secs(60) };
        let next = tokio::time::timeout(wait, sub.next()).await;
        let update = next
            .unwrap_or_else(|_| panic!("the stream stalled after {n} of {rows}"))
            .expect("the subscriber runs");
        match update {
            Update::Event(ev) => {
                n += 1;
                first_at.get_or_insert_with(|| began.elapsed());
                assert_eq!(ev.seq, start + n, "complete and in order");
                if n.is_multiple_of(100_000) {
                    peak = peak.max(status_kib(pid, "VmRSS:"));
                }
                if n == 1 || n == rows {
                    let row = ev.row.expect("an update carries its row");
                    assert_eq!(row["reason"], "remarked");
                    assert_eq!(row["id"], format!("sig_{:08}", if n == 1 { 1 } else { rows }));
                }
            }
            Update::Disconnected { code, .. } => assert_eq!(code, Some(4008), "only ever cut off as slow"),
            Update::Connected { .. } => {}
            Update::Snapshot { .. } => panic!("a resume never needs a new snapshot here"),
        }
        assert!(began.elapsed() < DELIVERY_DEADLINE, "{n} of {rows} delivered in {DELIVERY_DEADLINE:?}");
    }
    update.await.unwrap();
    assert_eq!(sub.gaps_detected, 0);
    let hwm = status_kib(pid, "VmHWM:");
    eprintln!(
        "bulk {rows} rows ({capture}): first change after {:.1} s, all delivered in {:.1} s; server RSS {before} KiB before, \
         {peak} KiB sampled peak, {hwm} KiB high-water mark (bound {RSS_BOUND_KIB} KiB)",
        first_at.unwrap_or_default().as_secs_f64(),
        began.elapsed().as_secs_f64()
    );
    assert!(hwm < RSS_BOUND_KIB, "server peak RSS {hwm} KiB over the bound {RSS_BOUND_KIB} KiB");
}
