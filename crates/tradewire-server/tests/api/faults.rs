//! Faults: the server killed with SIGKILL in the middle of a write burst, PostgreSQL
//! restarted under a running server, and start-up refusals that name their fix; and
//! operator tables captured like the built-in ones.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tradewire_client::{Options, Subscriber, Update};
use tradewire_server::capture::CaptureMode;
use tradewire_server::config::Config;
use tradewire_server::db::{Sql, TableSpec};
use tradewire_server::sql_params;

use crate::backend::{self, Backend, Cluster, Target, TestSql};
use crate::helpers::{DEADLINE, TestApp, spawn_app_with};

/// The `tradewire` binary serving on `port`, configured through the environment.
struct Process {
    child: Child,
    port: u16,
}

fn serve(config: &Config, port: u16) -> Process {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tradewire"));
    cmd.args(["serve", "--no-demo", "--no-sim", "--listen", &format!("127.0.0.1:{port}")])
        .env("TRADEWIRE_DATA_DIR", &config.data_dir)
        .env("TRADEWIRE_JWT_SECRET", "integration-test-secret")
        .env("TRADEWIRE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(url) = &config.database {
        cmd.env("TRADEWIRE_DATABASE", url).env("TRADEWIRE_SLOT", &config.slot).env(
            "TRADEWIRE_CAPTURE",
            match config.capture {
                CaptureMode::Logical => "logical",
                CaptureMode::Outbox => "outbox",
            },
        );
    }
    Process { child: cmd.spawn().expect("the tradewire binary starts"), port }
}

impl Process {
    async fn ready(&self) {
        let url = format!("http://127.0.0.1:{}/readyz", self.port);
        let until = Instant::now() + Duration::from_secs(30);
        while !reqwest::get(&url).await.is_ok_and(|r| r.status().is_success()) {
            assert!(Instant::now() < until, "the server process did not become ready in 30 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().unwrap();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn token(name: &str) -> String {
    let secret = "integration-test-secret".to_owned().into();
    tradewire_server::credentials::Tokens::new(&secret, 3600).issue(&TestApp::user_id(name), name, None).0
}

/// Every event of `sub` until it has seen `ids` (signal ids) or the deadline passes.
async fn collect(sub: &mut Subscriber, want: usize, deadline: Duration) -> Vec<(u64, String)> {
    let mut seen = Vec::new();
    let until = Instant::now() + deadline;
    while seen.len() < want {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, sub.next()).await {
            Err(_) => break,
            Ok(Err(e)) => panic!("the client gave up: {e}"),
            Ok(Ok(Update::Event(ev))) => {
                let id =
                    ev.row.as_ref().and_then(|r| r.get("id")).and_then(|v| v.as_str()).unwrap_or_default();
                seen.push((ev.seq, id.to_owned()));
            }
            Ok(Ok(_)) => {}
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_burst_restarts_and_every_client_resumes_with_nothing_lost_or_doubled() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = Config { data_dir: tmp.path().to_owned(), ..Config::default() };
    backend::prepare(&mut config);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = serve(&config, port);
    server.ready().await;
    let target = backend::target(&config);
    tradewire_server::db::seed::create_user(&mut TestSql::open(&target), "alice", "pw", "10000").unwrap();

    let url = format!("ws://127.0.0.1:{port}/v1/ws");
    let mut opts = Options::new(url, token("alice"), vec!["signals".into()]);
    opts.backoff_base = Duration::from_millis(50);
    opts.backoff_cap = Duration::from_millis(500);
    let mut sub = Subscriber::new(opts);
    loop {
        if let Update::Snapshot { .. } = tokio::time::timeout(DEADLINE, sub.next()).await.unwrap().unwrap() {
            break;
        }
    }

    // A writer commits 3,000 signals, one per transaction, while the server is killed and
    // started again underneath it.
    const N: usize = 3000;
    let writer = {
        let target = target.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = TestSql::open(&target);
            for i in 0..N {
                c.execute(
                    "INSERT INTO signals(id, user_id, symbol, direction, confidence, reason, ts)
                     VALUES (?1, 'u_alice', 'BTCUSDT', 'long', '0.5', 'burst', 0)",
                    sql_params![format!("sig_k{i:05}")],
                )
                .unwrap();
                if i % 100 == 0 {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        })
    };
    let mut seen = collect(&mut sub, 300, DEADLINE).await;
    assert!(seen.len() >= 300, "the burst reaches the client before the kill");
    server.kill9();
    let server = serve(&config, port);
    server.ready().await;
    writer.await.unwrap();
    seen.extend(collect(&mut sub, N - seen.len(), Duration::from_secs(30)).await);

    let mut by_id: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, id) in &seen {
        *by_id.entry(id.as_str()).or_default() += 1;
    }
    assert_eq!(by_id.len(), N, "every committed signal arrived");
    assert!(by_id.values().all(|n| *n == 1), "none arrived twice");
    let first = seen[0].0;
    for (i, (seq, _)) in seen.iter().enumerate() {
        assert_eq!(*seq, first + i as u64, "one gap-free sequence across the crash");
    }
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_restart_is_survived_and_capture_resumes_by_itself() {
    if backend::backend() == Backend::Sqlite {
        return;
    }
    // A cluster of its own: restarting the shared one would disturb the other tests.
    let cluster = Cluster::start_private("logical");
    let app = spawn_app_with(|c| {
        c.database = Some(cluster.url(&cluster.create_database()));
    })
    .await;
    let mut ws = app.ws("alice").await;
    let (pos, _) = ws.subscribe_snapshot("s", json!(["signals"])).await;
    app.insert_signals("alice", 5, "before");
    for i in 1..=5 {
        assert_eq!(ws.event().await.seq, pos.seq + i);
    }

    // (Blocking: the server keeps running on the other worker meanwhile.)
    tokio::task::block_in_place(|| cluster.restart());
    // The first writes after the restart may find the server's connections broken: it
    // reconnects by itself; the writer here simply retries a failed insert.
    let target = app.target();
    let mut written = 0;
    let until = Instant::now() + Duration::from_secs(30);
    while written < 5 && Instant::now() < until {
        let id = format!("sig_after_{written}");
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            TestSql::open(&target)
                .execute(
                    "INSERT INTO signals(id, user_id, symbol, direction, confidence, reason, ts)
                     VALUES (?1, 'u_alice', 'BTCUSDT', 'long', '0.5', 'after', 0)",
                    sql_params![id],
                )
                .is_ok()
        }))
        .unwrap_or(false);
        if ok {
            written += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(written, 5, "PostgreSQL came back");
    for i in 6..=10 {
        let ev = tokio::time::timeout(Duration::from_secs(30), ws.event()).await.expect("capture resumed");
        assert_eq!(ev.seq, pos.seq + i, "nothing lost or doubled across the restart");
        assert_eq!(ev.row.unwrap()["reason"], "after");
    }
    // The REST API works again too.
    assert_eq!(app.get("alice", "/v1/signals").await.status(), 200);
}

#[tokio::test]
async fn logical_capture_refuses_to_start_without_wal_level_logical_and_names_the_fix() {
    if backend::backend() != Backend::PgLogical {
        return;
    }
    let cluster = Cluster::start_private("replica");
    let tmp = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: tmp.path().to_owned(),
        database: Some(cluster.url(&cluster.create_database())),
        demo: Some(false),
        simulator: false,
        ..Config::default()
    };
    let err = tradewire_server::Server::build(config).await.err().expect("refused").to_string();
    assert!(err.contains("wal_level") && err.contains("ALTER SYSTEM SET wal_level = logical"), "{err}");
    assert!(err.contains("--capture outbox"), "the fallback is named: {err}");
}

#[tokio::test]
async fn logical_capture_refuses_a_role_without_replication_and_names_the_fix() {
    if backend::backend() != Backend::PgLogical {
        return;
    }
    let mut config = Config::default();
    backend::prepare(&mut config);
    let url = config.database.clone().unwrap();
    let role = format!("norepl_{}", config.slot);
    let mut admin = TestSql::open(&Target::Postgres(url.clone()));
    admin.batch(&format!("CREATE ROLE {role} LOGIN NOREPLICATION NOSUPERUSER")).unwrap();
    let db = url.rsplit('/').next().unwrap().to_owned();
    admin
        .batch(&format!("ALTER DATABASE {db} OWNER TO {role}; GRANT ALL ON SCHEMA public TO {role}"))
        .unwrap();
    drop(admin);
    let tmp = tempfile::tempdir().unwrap();
    config.data_dir = tmp.path().to_owned();
    config.demo = Some(false);
    config.simulator = false;
    config.database = Some(url.replace("postgres://postgres@", &format!("postgres://{role}@")));
    let err = tradewire_server::Server::build(config).await.err().expect("refused").to_string();
    assert!(
        err.contains("REPLICATION") && err.contains(&format!("ALTER ROLE \"{role}\" REPLICATION")),
        "{err}"
    );
}

/// An operator table, created before the server starts.
fn create_alerts(config: &Config, replica_identity_full: bool) {
    let mut c = TestSql::open(&backend::target(config));
    c.batch("CREATE TABLE alerts (id TEXT PRIMARY KEY, owner TEXT, message TEXT NOT NULL, level INTEGER NOT NULL)")
        .unwrap();
    if replica_identity_full && c.dialect() == tradewire_server::db::Dialect::Postgres {
        c.batch("ALTER TABLE alerts REPLICA IDENTITY FULL").unwrap();
    }
}

fn alerts_spec() -> TableSpec {
    TableSpec { table: "alerts".into(), topic: "alerts".into(), key: "id".into(), owner: "owner".into() }
}

#[tokio::test]
async fn an_operator_table_is_captured_and_isolated_like_the_built_in_ones() {
    let app = spawn_app_with(|c| {
        create_alerts(c, true);
        c.tables = vec![alerts_spec()];
    })
    .await;
    let mut alice = app.ws("alice").await;
    let (pos, snap) = alice.subscribe_snapshot("a", json!(["alerts"])).await;
    assert_eq!(snap.get("alerts").map(Vec::len), Some(0));
    let mut bob = app.ws("bob").await;
    bob.subscribe_snapshot("b", json!(["alerts"])).await;

    let target = app.target();
    crate::helpers::shell(
        &target,
        "INSERT INTO alerts VALUES ('al_1', 'u_bob', 'bob''s margin', 2);
         INSERT INTO alerts VALUES ('al_2', 'u_alice', 'margin call', 3);
         UPDATE alerts SET level = 4 WHERE id = 'al_2';
         DELETE FROM alerts WHERE id = 'al_2';",
    );
    let ins = alice.event().await;
    assert_eq!((ins.seq, ins.topic.as_str(), ins.change.as_str()), (pos.seq + 1, "alerts", "insert"));
    assert_eq!(ins.row.as_ref().unwrap()["message"], "margin call");
    assert_eq!(ins.row.as_ref().unwrap()["level"], 3, "integers stay numbers");
    let upd = alice.event().await;
    assert_eq!((upd.change.as_str(), upd.old.as_ref().unwrap()["level"].clone()), ("update", json!(3)));
    let del = alice.event().await;
    assert_eq!(del.change.as_str(), "delete");
    assert_eq!(del.old.as_ref().unwrap()["id"], "al_2", "a delete carries the old row");
    let theirs = bob.event().await;
    assert_eq!(theirs.row.as_ref().unwrap()["id"], "al_1", "bob sees only his");
    // REST reads of operator topics are not routed; the stream is the interface. Snapshots
    // include them.
    let mut again = app.ws("bob").await;
    let (_, snap) = again.subscribe_snapshot("b", json!(["alerts"])).await;
    assert_eq!(snap["alerts"].len(), 1);
}

#[tokio::test]
async fn logical_capture_refuses_an_operator_table_whose_deletes_would_lose_the_owner() {
    if backend::backend() != Backend::PgLogical {
        return;
    }
    let mut config = Config::default();
    backend::prepare(&mut config);
    let tmp = tempfile::tempdir().unwrap();
    config.data_dir = tmp.path().to_owned();
    config.demo = Some(false);
    config.simulator = false;
    create_alerts(&config, false);
    config.tables = vec![alerts_spec()];
    let err = tradewire_server::Server::build(config).await.err().expect("refused").to_string();
    assert!(err.contains("alerts") && err.contains("REPLICA IDENTITY FULL"), "{err}");
}

#[tokio::test]
async fn tradewire_migrate_applies_the_schema_once() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = Config { data_dir: tmp.path().to_owned(), ..Config::default() };
    backend::prepare(&mut config);
    let migrate = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tradewire"));
        cmd.args(["migrate"]).env("TRADEWIRE_DATA_DIR", &config.data_dir).env("TRADEWIRE_LOG", "warn");
        if let Some(url) = &config.database {
            cmd.env("TRADEWIRE_DATABASE", url);
        }
        let out = cmd.output().expect("tradewire migrate runs");
        assert!(out.status.success(), "migrate failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let all = if backend::backend() == backend::Backend::Sqlite { 3 } else { 4 };
    assert_eq!(migrate().trim(), format!("applied {all} migration(s)"));
    assert_eq!(migrate().trim(), "applied 0 migration(s)", "a second run has nothing to do");
    let mut c = TestSql::open(&backend::target(&config));
    assert_eq!(c.int("SELECT COUNT(*) FROM tw_changes", &[]), 0, "the change log exists");
}

#[tokio::test]
async fn slot_lag_and_retained_wal_are_exported_as_metrics() {
    if backend::backend() != Backend::PgLogical {
        return;
    }
    let app = crate::helpers::spawn_app().await;
    let metrics = crate::helpers::eventually("slot metrics exported", || async {
        let body = app.http.get(app.url("/metrics")).send().await.ok()?.text().await.ok()?;
        (body.contains("tradewire_slot_lag_bytes") && body.contains("tradewire_slot_retained_wal_bytes"))
            .then_some(body)
    })
    .await;
    assert!(metrics.contains("tradewire_log_persist_seconds"), "capture metrics too");
}
