//! One user, one bad row or one default must never hurt everyone: unreadable log rows,
//! password guessing, connection floods, made-up market topics, file modes, tokens in
//! logs, demo mode on a public address, and the `tradewire user` command.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tradewire_protocol::ServerFrame;
use tradewire_server::Server;

use crate::backend::{Backend, backend, shell};
use tradewire_server::db::Sql;

use crate::helpers::{Bystander, Closed, TestApp, Ws, eventually, spawn_app, spawn_app_with};

async fn login(app: &TestApp, username: &str, password: &str) -> reqwest::Response {
    app.http
        .post(app.url("/v1/auth/login"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap()
}

/// A change-log row the server cannot read (JSON that does not parse, as a writer that
/// bypasses the triggers, or an old trigger, could leave) keeps its place in its user's
/// stream: it arrives with `error`, the stream goes on without a gap, and nobody else's
/// stream stalls. (Logical capture writes its log rows itself, from typed WAL values, so
/// this is a triggers' matter: SQLite and the outbox.)
#[tokio::test]
async fn an_unreadable_change_log_row_is_delivered_in_its_place_and_nothing_stops() {
    if backend() == Backend::PgLogical {
        return;
    }
    let app = spawn_app().await;
    let mut alice = Bystander::new(&app, "alice").await;
    let mut bob = Bystander::new(&app, "bob").await;
    let mut c = app.sql();
    c.batch(
        "BEGIN;
         UPDATE tw_user_seq SET seq = seq + 1 WHERE user_id = 'u_alice';
         INSERT INTO tw_changes(user_id, seq, topic, op, row_json, old_json, commit_ts)
             SELECT 'u_alice', seq, 'signals', 'insert', '{\"id\":\"sig_x\",\"confidence\":Inf}', NULL, 0
             FROM tw_user_seq WHERE user_id = 'u_alice';
         COMMIT;",
    )
    .unwrap();
    let ev = alice.ws.event().await;
    assert_eq!(ev.seq, alice.seq + 1, "in its place");
    assert!(ev.row.is_none());
    let error = ev.error.expect("the event says it could not be read");
    assert!(error.contains("row"), "{error}");
    alice.seq = ev.seq;
    alice.still_served(&app).await;
    bob.still_served(&app).await;

    // A replay reads it the same way (and does not stop there either).
    let mut ws = app.ws("alice").await;
    let from = format!("{}:{}", app.epoch(), alice.seq - 2);
    ws.send_json(json!({"op": "subscribe", "id": "r", "topics": ["*"], "from": from})).await;
    assert!(matches!(ws.frame().await, ServerFrame::Subscribed { .. }));
    let replayed = [ws.event().await, ws.event().await];
    assert!(replayed[0].error.is_some() && replayed[1].error.is_none(), "{replayed:?}");
    assert_eq!(replayed[1].seq, alice.seq);

    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("tradewire_unreadable_changes_total"), "counted");
}

/// SQLite: an infinite REAL written by another process (`1e999` in an INTEGER column keeps
/// its REAL value) is captured as the string "Infinity", valid JSON, not as a bare `Inf`.
#[tokio::test]
async fn an_infinite_number_from_another_writer_is_captured_as_a_string() {
    if backend() != Backend::Sqlite {
        return;
    }
    let app = spawn_app().await;
    let created =
        app.post("alice", "/v1/bots", json!({"name": "b", "strategy": "grid", "symbol": "BTCUSDT"})).await;
    assert!(created.status().is_success());
    let bot: Value = created.json().await.unwrap();
    let mut alice = Bystander::new(&app, "alice").await;
    shell(
        &app.target(),
        &format!("UPDATE trading_bots SET updated_at = 1e999 WHERE id = '{}';", bot["id"].as_str().unwrap()),
    );
    let ev = alice.ws.event().await;
    assert_eq!(ev.seq, alice.seq + 1);
    assert!(ev.error.is_none(), "{:?}", ev.error);
    assert_eq!(ev.row.unwrap()["updated_at"], "Infinity");
    alice.seq += 1;
    alice.still_served(&app).await;
}

/// A value too large to carry (2 MiB of text, written by another process) is replaced in
/// the row by `{"$oversized": <bytes>}` in events and snapshots alike; on SQLite a BLOB,
/// which JSON cannot hold, arrives as `{"$hex": "…"}`. The stream goes on either way.
#[tokio::test]
async fn oversized_values_and_blobs_have_a_documented_encoding() {
    let app = spawn_app().await;
    let mut alice = Bystander::new(&app, "alice").await;
    let big = 2 * 1024 * 1024;
    let huge_text = match backend() {
        Backend::Sqlite => format!("replace(hex(zeroblob({big})), '00', 'x')"),
        _ => format!("repeat('x', {big})"),
    };
    shell(
        &app.target(),
        &format!(
            "INSERT INTO signals(id, user_id, symbol, direction, confidence, reason, ts)
             VALUES ('sig_big', 'u_alice', 'BTCUSDT', 'long', '0.5', {huge_text}, 0)"
        ),
    );
    let ev = alice.ws.event().await;
    assert_eq!(ev.seq, alice.seq + 1);
    assert!(ev.error.is_none(), "{:?}", ev.error);
    let reason = &ev.row.unwrap()["reason"];
    assert!(
        *reason == json!({"$oversized": big}),
        "{}",
        &reason.to_string()[..80.min(reason.to_string().len())]
    );
    alice.seq = ev.seq;
    let (_, rows) = app.ws("alice").await.subscribe_snapshot("s", json!(["signals"])).await;
    let row = rows["signals"].iter().find(|r| r["id"] == "sig_big").expect("in the snapshot");
    assert!(row["reason"] == json!({"$oversized": big}), "the snapshot carries the same encoding");

    if backend() == Backend::Sqlite {
        shell(&app.target(), "UPDATE signals SET reason = x'00ff10' WHERE id = 'sig_big'");
        let ev = alice.ws.event().await;
        assert_eq!(ev.row.unwrap()["reason"], json!({"$hex": "00FF10"}));
        alice.seq = ev.seq;
    }
    alice.still_served(&app).await;
}

#[tokio::test]
async fn password_guessing_is_throttled_per_user_name_and_per_address() {
    let app = spawn_app_with(|c| c.login_attempts_per_address = 15).await;
    for _ in 0..10 {
        assert_eq!(login(&app, "alice", "guess").await.status(), 401);
    }
    let refused = login(&app, "alice", "alice-pw").await;
    assert_eq!(refused.status(), 429, "even the right password waits out the window");
    let wait: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(login(&app, "bob", "bob-pw").await.status(), 200, "another user is not locked out");

    // One address trying many names: 15 attempts a minute. 11 were counted so far (the
    // refused one was turned away before it counted).
    for name in ["carol", "dave", "erin", "frank"] {
        assert_eq!(login(&app, name, "x").await.status(), 401);
    }
    assert_eq!(login(&app, "gina", "x").await.status(), 429);
}

async fn ws_status(url: &str, token: Option<&str>) -> Result<(), u16> {
    let mut req = url.into_client_request().unwrap();
    if let Some(t) = token {
        req.headers_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => Ok(()),
        Err(tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("unexpected {e}"),
    }
}

#[tokio::test]
async fn a_connection_flood_of_one_user_is_refused_past_the_cap_and_nobody_else_notices() {
    let app = spawn_app_with(|c| c.max_connections_per_user = 3).await;
    let mut alice = Bystander::new(&app, "alice").await;
    let mut more = vec![app.ws("alice").await, app.ws("alice").await];
    assert_eq!(ws_status(&app.ws_url(), Some(&app.token("alice"))).await, Err(429), "the 4th WebSocket");
    let sse =
        app.http.get(app.url("/v1/sse?topics=signals")).bearer_auth(app.token("alice")).send().await.unwrap();
    assert_eq!(sse.status(), 429, "an SSE stream counts too");
    // A socket that authenticates with its first frame is closed with 4029 instead.
    let mut late = Ws::connect_with_token(&app.ws_url(), None).await;
    late.send_json(json!({"op": "auth", "token": app.token("alice")})).await;
    assert_eq!(late.expect_close().await, Closed::Code(4029));

    alice.still_served(&app).await;
    let mut bob = Bystander::new(&app, "bob").await;
    bob.still_served(&app).await;

    // A closed connection gives its place back.
    more.pop();
    eventually("a place is free again", || async {
        ws_status(&app.ws_url(), Some(&app.token("alice"))).await.ok()
    })
    .await;
}

/// Made-up market topic names are refused, and the market bus holds nothing for them
/// afterwards: subscribing cannot grow the server.
#[tokio::test]
async fn made_up_market_topics_are_refused_and_leave_nothing_behind() {
    let app = spawn_app_with(|c| c.max_messages_per_second = 100_000).await;
    let bus = app.state.market_bus();
    bus.set_symbols(["BTCUSDT".to_owned()]);
    bus.set_kline_intervals(["1m".to_owned()]);
    // The server's own `system` topic is on the bus from its first report on.
    eventually("the system topic is published", || async { (bus.topic_count() == 1).then_some(()) }).await;
    let before = bus.topic_count();
    let mut clients = Vec::new();
    for c in 0..4 {
        let mut ws = app.ws(if c % 2 == 0 { "alice" } else { "bob" }).await;
        for n in 0..5000 {
            let topic = match n % 3 {
                0 => format!("kline:BTCUSDT:x{c}_{n}"),
                1 => format!("ticker:SYM{c}X{n}"),
                _ => format!("book:BTCUSDT:{n}"),
            };
            ws.send_json(json!({"op": "subscribe", "id": "s", "topics": [topic]})).await;
        }
        for _ in 0..5000 {
            match ws.frame().await {
                ServerFrame::Error { code, .. } => assert_eq!(code.as_str(), "invalid_topic"),
                other => panic!("expected an error frame, got {other:?}"),
            }
        }
        let held = if clients.is_empty() { 0 } else { 2 };
        assert_eq!(bus.topic_count(), before + held, "nothing is kept for a refused topic");
        // Valid topics that nothing publishes are dropped with their last subscriber.
        ws.send_json(json!({"op": "subscribe", "id": "k", "topics": ["kline:BTCUSDT:1m", "mark:BTCUSDT"]}))
            .await;
        assert!(matches!(ws.frame().await, ServerFrame::Subscribed { .. }));
        clients.push(ws);
    }
    assert_eq!(bus.topic_count(), before + 2);
    drop(clients);
    eventually("the bus is back to where it was", || async { (bus.topic_count() == before).then_some(()) })
        .await;
}

#[tokio::test]
async fn the_data_directory_and_its_files_are_the_owners_only_and_a_bad_secret_stops_the_start() {
    if backend() != Backend::Sqlite {
        return;
    }
    let app = spawn_app_with(|c| c.jwt_secret = None).await;
    let mode =
        |name: &str| std::fs::metadata(app.config.data_dir.join(name)).unwrap().permissions().mode() & 0o777;
    assert_eq!(std::fs::metadata(&app.config.data_dir).unwrap().permissions().mode() & 0o777, 0o700);
    for file in ["tradewire.db", "tradewire.db-wal", "jwt.secret"] {
        assert_eq!(mode(file), 0o600, "{file}");
    }
    // A secret that exists but cannot be used is an error, never silently replaced.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jwt.secret"), "").unwrap();
    let mut config = app.config.clone();
    config.data_dir = dir.path().to_owned();
    let err = Server::build(config).await.err().expect("an empty secret is refused").to_string();
    assert!(err.contains("jwt.secret") && err.contains("empty"), "{err}");
    assert_eq!(std::fs::read_to_string(dir.path().join("jwt.secret")).unwrap(), "", "left as it was");
}

/// A server process, killed when dropped (also when a test fails half-way).
struct Served(std::process::Child);

impl Served {
    fn stop(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `tradewire` binary on `listen`, in `dir`, with `args` and no simulator; its log (on
/// stdout) into `dir/server.log`.
fn binary(dir: &std::path::Path, listen: &str, args: &[&str], env: &[(&str, &str)]) -> Served {
    serve_binary(dir, &[&["--no-sim", "--listen", listen], args].concat(), env)
}

/// `tradewire serve` with `args`, in `dir`; its log (on stdout) into `dir/server.log`.
fn serve_binary(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Served {
    let log = std::fs::File::create(dir.join("server.log")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_tradewire"))
        .arg("serve")
        .args(args)
        .env("TRADEWIRE_DATA_DIR", dir.join("data"))
        .envs(env.iter().copied())
        .stdout(log)
        .stderr(Stdio::inherit())
        .spawn()
        .map(Served)
        .expect("the tradewire binary starts")
}

async fn ready(port: u16) {
    let url = format!("http://127.0.0.1:{port}/readyz");
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while !reqwest::get(&url).await.is_ok_and(|r| r.status().is_success()) {
        assert!(tokio::time::Instant::now() < until, "the server did not become ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn login_at(port: u16, username: &str, password: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/auth/login"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn status_at(port: u16, path: &str) -> u16 {
    reqwest::get(format!("http://127.0.0.1:{port}{path}")).await.unwrap().status().as_u16()
}

/// Demo mode (known passwords, testing endpoints) is the default on loopback only; on
/// another address it has to be asked for, and leaving it disables the demo logins. The
/// binary on SQLite: demo mode is about the product's defaults, not the backend.
#[tokio::test]
async fn demo_mode_is_the_default_only_on_loopback_and_leaving_it_disables_the_demo_logins() {
    if backend() != Backend::Sqlite {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = binary(tmp.path(), &format!("127.0.0.1:{port}"), &[], &[]);
    ready(port).await;
    assert_eq!(status_at(port, "/v1/demo").await, 200, "loopback: demo mode");
    assert_eq!(login_at(port, "alice", "alice-demo").await, 200);
    server.stop();

    // The same data on every address: no demo mode unless asked for.
    let port = free_port();
    let server = binary(tmp.path(), &format!("0.0.0.0:{port}"), &[], &[]);
    ready(port).await;
    assert_eq!(status_at(port, "/v1/demo").await, 404, "no demo logins are shown");
    assert_eq!(login_at(port, "alice", "alice-demo").await, 401, "the demo login is disabled");
    let simulate = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/testing/simulate-signal"))
        .json(&json!({"bot_id": "bot_alice_1", "direction": "long"}))
        .send()
        .await
        .unwrap();
    assert!(matches!(simulate.status().as_u16(), 401 | 404), "no testing endpoint for anyone");
    server.stop();

    let port = free_port();
    let server = binary(tmp.path(), &format!("0.0.0.0:{port}"), &["--demo"], &[]);
    ready(port).await;
    assert_eq!(status_at(port, "/v1/demo").await, 200, "asked for");
    assert_eq!(login_at(port, "alice", "alice-demo").await, 200, "the demo login is back");
    server.stop();
}

/// A token given in `?token=` (how browsers authenticate a WebSocket or an EventSource)
/// never reaches the log, even at debug level.
#[tokio::test]
async fn a_token_in_a_query_never_reaches_the_log() {
    if backend() != Backend::Sqlite {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = binary(
        tmp.path(),
        &format!("127.0.0.1:{port}"),
        &["--no-demo"],
        &[("RUST_LOG", "debug"), ("TRADEWIRE_JWT_SECRET", "log-test-secret")],
    );
    ready(port).await;
    let token = tradewire_server::credentials::Tokens::new(&"log-test-secret".to_owned().into(), 60)
        .issue("u_nobody", "nobody", None)
        .0;
    let secret_part = token.rsplit('.').next().unwrap().to_owned();
    let _ = reqwest::get(format!("http://127.0.0.1:{port}/v1/sse?topics=signals&token={token}")).await;
    let _ = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/v1/ws?token={token}")).await;
    let _ = reqwest::get(format!("http://127.0.0.1:{port}/healthz?apikey={token}")).await;
    let log_path = tmp.path().join("server.log");
    eventually("the requests are logged", || async {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        log.contains("token=[redacted]").then_some(())
    })
    .await;
    server.stop();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(!log.contains(&secret_part), "the token's signature is in the log");
    assert!(log.contains("/v1/sse?topics=signals&token=[redacted]"), "the rest of the request is kept");
}

/// `tradewire user add | list | passwd | remove`, against the database a running server
/// uses.
#[tokio::test]
async fn users_are_managed_with_the_user_command() {
    let app = spawn_app().await;
    let cli = |args: &[&str], stdin: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tradewire"));
        cmd.arg("user").args(args).env("TRADEWIRE_DATA_DIR", &app.config.data_dir);
        if let Some(url) = &app.config.database {
            cmd.env("TRADEWIRE_DATABASE", url).env("TRADEWIRE_SLOT", &app.config.slot);
        }
        let mut child =
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = cli(&["add", "carol"], "carol-password\n");
    assert!(ok, "{out}");
    assert_eq!(login(&app, "carol", "carol-password").await.status(), 200);
    let (ok, out) = cli(&["add", "carol"], "another-password\n");
    assert!(!ok && out.contains("exists"), "{out}");
    let (ok, out) = cli(&["add", "dave"], "short\n");
    assert!(!ok && out.contains("at least"), "{out}");
    let (ok, out) = cli(&["add", "bad name"], "long-enough-pw\n");
    assert!(!ok && out.contains("user name"), "{out}");
    let (ok, out) = cli(&["list"], "");
    assert!(ok && out.contains("carol") && out.contains("alice"), "{out}");
    let (ok, out) = cli(&["passwd", "carol"], "a-new-password\n");
    assert!(ok, "{out}");
    assert_eq!(login(&app, "carol", "carol-password").await.status(), 401);
    assert_eq!(login(&app, "carol", "a-new-password").await.status(), 200);
    let (ok, out) = cli(&["remove", "carol"], "");
    assert!(ok, "{out}");
    assert_eq!(login(&app, "carol", "a-new-password").await.status(), 401);
    let (ok, out) = cli(&["remove", "carol"], "");
    assert!(!ok && out.contains("no user"), "{out}");
}

/// A market order of alice's fills: the simulator trades.
async fn trades(app: &TestApp, what: &str) {
    let order = json!({"symbol": "ETHUSDT", "side": "buy", "type": "market", "quantity": "0.1"});
    let r = app.post("alice", "/v1/orders", order).await;
    assert_eq!(r.status(), 201, "{what}");
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "filled", "{what}");
}

async fn sim_app() -> TestApp {
    spawn_app_with(|c| {
        c.simulator = true;
        c.sim_ticks_per_second = 20;
    })
    .await
}

/// A quantity the simulator's arithmetic cannot hold is refused at the edge (it used to
/// kill the simulator task: every later order answered 503), and trading goes on.
#[tokio::test]
async fn an_order_too_large_to_compute_is_refused_and_the_simulator_keeps_trading() {
    let app = sim_app().await;
    for (field, value) in
        [("quantity", "79228162514264337593543950"), ("price", "1e30"), ("quantity", "0.0000000000001")]
    {
        let mut order = json!({"symbol": "BTCUSDT", "side": "buy", "type": "limit", "price": "27000", "quantity": "0.01"});
        order[field] = json!(value);
        let r = app.post("alice", "/v1/orders", order).await;
        assert_eq!(r.status(), 400, "{field} = {value}");
        let body: Value = r.json().await.unwrap();
        assert!(matches!(body["error"]["code"].as_str(), Some("out_of_range" | "bad_request")), "{body}");
    }
    let r = app
        .post("alice", "/v1/orders", json!({"symbol": "BTCUSDT", "side": "buy", "type": "limit", "price": "1000000000", "quantity": "1000000"}))
        .await;
    assert_eq!(r.status(), 400, "a notional over the bound");
    trades(&app, "the simulator still trades").await;
}

/// A simulator task that fails is restarted from the database; meanwhile `/readyz` answers
/// 503 and names it.
#[tokio::test]
async fn a_failed_simulator_is_restarted_and_readyz_names_it_meanwhile() {
    let app = sim_app().await;
    app.state.sim().expect("the simulator runs").inject_panic().await;
    let cause = eventually("/readyz names the simulator", || async {
        let r = app.http.get(app.url("/readyz")).send().await.ok()?;
        let status = r.status();
        let body: Value = r.json().await.ok()?;
        (status == 503).then(|| body["down"]["simulator"].as_str().map(str::to_owned)).flatten()
    })
    .await;
    assert!(cause.contains("panicked"), "{cause}");
    eventually("ready again", || async {
        app.http.get(app.url("/readyz")).send().await.ok()?.status().is_success().then_some(())
    })
    .await;
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("tradewire_task_restarts_total{task=\"simulator\"}"), "counted");
    trades(&app, "the restarted simulator takes orders").await;
}

/// The capture pump fails: it is restarted under supervision (counted, `/readyz` names it
/// while down), live sessions are cut off with 4008, and a client resuming from its
/// position gets every change, also those committed while the pump was down.
#[tokio::test]
async fn a_failed_pump_is_restarted_and_clients_resume_without_a_gap() {
    let app = spawn_app().await;
    let mut alice = Bystander::new(&app, "alice").await;
    alice.still_served(&app).await;
    app.state.inject_pump_failure();
    assert_eq!(alice.ws.expect_close().await, Closed::Code(4008), "cut off to resume from the log");
    app.insert_signals("alice", 3, "while the pump restarted");
    eventually("the restart is counted", || async {
        let metrics = app.http.get(app.url("/metrics")).send().await.ok()?.text().await.ok()?;
        metrics.contains("tradewire_task_restarts_total{task=\"pump\"}").then_some(())
    })
    .await;

    let mut ws = app.ws("alice").await;
    let from = format!("{}:{}", app.epoch(), alice.seq);
    ws.send_json(json!({"op": "subscribe", "id": "watch", "topics": ["*"], "from": from})).await;
    assert!(matches!(ws.frame().await, ServerFrame::Subscribed { .. }));
    for n in 1..=3 {
        let ev = ws.event().await;
        assert_eq!(ev.seq, alice.seq + n, "contiguous across the restart");
    }
    let mut alice = Bystander { ws, name: "alice", seq: alice.seq + 3 };
    alice.still_served(&app).await;
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert!(ready.status().is_success(), "ready again");
}

/// The public `system` topic pushes the server's health: `ok` with every component up;
/// at once when a supervised task fails (`degraded`, naming it and the cause, while it is
/// down: here only for the ~100 ms the restart takes, so the conflated topic may show only
/// the outcome); and the restart count with the last failure's cause once it is back.
#[tokio::test]
async fn the_system_topic_pushes_health_changes() {
    let app = sim_app().await;
    let mut ws = app.ws("alice").await;
    ws.send_json(json!({"op": "subscribe", "id": "health", "topics": ["system"]})).await;
    assert!(matches!(ws.frame().await, ServerFrame::Subscribed { .. }));
    let mut next_status = async || loop {
        if let ServerFrame::Market { topic, data, .. } = ws.frame().await {
            assert_eq!(topic, "system");
            return data;
        }
    };
    let first = next_status().await;
    assert_eq!(first["status"], "ok", "{first}");
    for component in ["database", "pump", "simulator", "market_source"] {
        assert_eq!(first["components"][component]["state"], "up", "{component}: {first}");
    }
    app.state.sim().expect("the simulator runs").inject_panic().await;
    let recovered = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let s = next_status().await;
            if s["status"] == "degraded" {
                assert_eq!(s["components"]["simulator"]["state"], "down", "{s}");
                assert!(s["components"]["simulator"]["cause"].as_str().unwrap().contains("panicked"), "{s}");
            } else if s["components"]["simulator"]["restarts"] == 1 {
                break s;
            }
        }
    })
    .await
    .expect("the restart is pushed within seconds");
    assert_eq!(recovered["status"], "ok", "{recovered}");
    let cause = recovered["components"]["simulator"]["last_failure"].as_str().unwrap();
    assert!(cause.contains("panicked"), "{recovered}");
}

/// Alice's risk row as the REST API shows it.
async fn risk_row(app: &TestApp) -> Value {
    let r: Value = app.get("alice", "/v1/risk").await.json().await.unwrap();
    r["items"][0].clone()
}

fn decimal(v: &Value) -> f64 {
    v.as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("a decimal string: {v}"))
}

/// "Today's P&L" and the drawdown peak are measured from baselines stored with the risk
/// row, so a restart keeps them (they used to restart from zero at the equity of the
/// moment, hiding the day's losses from the daily-loss breaker).
#[tokio::test]
async fn a_restart_keeps_todays_pnl_and_the_drawdown_peak() {
    let app = sim_app().await;
    trades(&app, "a fill pays a taker fee: the day's P&L goes below zero").await;
    let before = eventually("the risk row shows the loss", || async {
        let row = risk_row(&app).await;
        (decimal(&row["daily_pnl"]) < 0.0).then_some(row)
    })
    .await;
    assert_eq!(decimal(&before["day_start_equity"]), 10000.0, "{before}");
    assert!(decimal(&before["peak_equity"]) >= 10000.0, "{before}");

    let app = app.restart().await;
    trades(&app, "and another after the restart").await;
    let equity = |p: &Value| decimal(&p["items"][0]["equity"]);
    let (row, equity) = eventually("the risk row is measured after the restart", || async {
        let row = risk_row(&app).await;
        let portfolios: Value = app.get("alice", "/v1/portfolios").await.json().await.unwrap();
        let equity = equity(&portfolios);
        ((decimal(&row["daily_pnl"]) - (equity - 10000.0)).abs() < 1e-6).then_some((row, equity))
    })
    .await;
    // Measured from the stored baselines, not from the equity at the restart.
    assert_eq!(decimal(&row["day_start_equity"]), 10000.0, "kept: {row}");
    let peak = decimal(&row["peak_equity"]);
    assert!(peak >= decimal(&before["peak_equity"]), "kept: {row}");
    let drawdown = ((peak - equity) / peak).max(0.0);
    assert!((decimal(&row["drawdown"]) - drawdown).abs() < 1e-5, "measured from the kept peak: {row}");
}

/// The demo desk (the README's run command: demo data, simulator) is trading within
/// 5 seconds of the server's start (counted from when it answers `/readyz`, so the debug
/// build's first-start password hashing of the demo users is not counted).
#[tokio::test]
async fn the_demo_desk_trades_within_five_seconds_of_the_start() {
    if backend() != Backend::Sqlite {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = serve_binary(tmp.path(), &["--listen", &format!("127.0.0.1:{port}")], &[]);
    ready(port).await;
    let started = std::time::Instant::now();
    let http = reqwest::Client::new();
    let login: Value = http
        .post(format!("http://127.0.0.1:{port}/v1/auth/login"))
        .json(&json!({"username": "alice", "password": "alice-demo"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().expect("a token").to_owned();
    loop {
        let fills: Value = http
            .get(format!("http://127.0.0.1:{port}/v1/fills"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if fills["items"].as_array().is_some_and(|f| !f.is_empty()) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "no demo trade within 5 s of the start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SQLite: another process holds the write lock past the busy timeout while orders are
/// placed and the simulator trades. The simulator retries its writes; every order answered
/// 201 is in the database as answered, and nothing the simulator did is lost or left
/// half-written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_lock_held_by_another_process_loses_no_trade() {
    if backend() != Backend::Sqlite {
        return;
    }
    let app = sim_app().await;
    let target = app.target();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let mut c = crate::backend::TestSql::open(&target);
        c.batch("BEGIN IMMEDIATE").unwrap();
        locked_tx.send(()).unwrap();
        // Past the server's 5 s busy timeout: its first attempt fails, a retry succeeds.
        std::thread::sleep(Duration::from_millis(6500));
        c.batch("COMMIT").unwrap();
    });
    locked_rx.recv().unwrap();
    let place = |n: u32| {
        let app = &app;
        async move {
            let body = json!({"client_order_id": format!("lock-{n}"), "symbol": "ETHUSDT", "side": "buy",
                              "type": "market", "quantity": "0.1"});
            let r = app
                .http
                .post(app.url("/v1/orders"))
                .bearer_auth(app.token("alice"))
                .json(&body)
                .timeout(Duration::from_secs(30))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let answers = futures::future::join_all((0..3).map(place)).await;
    holder.join().unwrap();
    let mut c = app.sql();
    for (n, (status, body)) in answers.iter().enumerate() {
        let stored = c.int(
            "SELECT COUNT(*) FROM orders WHERE user_id = 'u_alice' AND client_order_id = ?1 AND status = 'filled'",
            tradewire_server::sql_params![format!("lock-{n}")],
        );
        match status {
            201 => {
                assert_eq!(body["status"], "filled");
                assert_eq!(stored, 1, "order {n} was answered as placed and is in the database");
                let fills = c.int(
                    "SELECT COUNT(*) FROM fills WHERE order_id = ?1",
                    tradewire_server::sql_params![body["id"].as_str().unwrap()],
                );
                assert!(fills >= 1, "its fill is there too");
            }
            503 => assert_eq!(stored, 0, "order {n} was refused and had no effect"),
            other => panic!("order {n}: {other} {body}"),
        }
    }
    assert!(answers.iter().any(|(s, _)| *s == 201), "the retries carried at least one order: {answers:?}");
    trades(&app, "trading goes on").await;
}

/// Make a CA and a server certificate it signs (for 127.0.0.1 and localhost) in `dir`, and
/// another CA that signed nothing; the server options that turn TLS on.
fn make_certificates(dir: &std::path::Path) -> String {
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    for ca in ["ca", "other-ca"] {
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=tradewire test {ca}"),
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.pem"),
        ]);
    }
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.crt",
    ]);
    std::fs::set_permissions(dir.join("server.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    format!(
        "-c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
        dir.join("server.crt").display(),
        dir.join("server.key").display()
    )
}

/// PostgreSQL over TLS: with `sslmode=verify-full` and the CA that signed the server's
/// certificate, every connection of the server (the pool, capture's own, the replication
/// stream) is encrypted and changes are captured as ever; a CA that did not sign it is
/// refused at start with a clear error.
#[tokio::test]
async fn postgres_over_tls_verifies_the_server_and_refuses_a_wrong_ca() {
    if backend() == Backend::Sqlite {
        return;
    }
    if std::env::var_os("TEST_LOG").is_some() {
        tradewire_server::telemetry::init_logs("info,tradewire_server=debug", Default::default());
    }
    let cluster = crate::backend::Cluster::start_private_with("logical", make_certificates);
    let db = cluster.create_database();
    let plain = cluster.url(&db);
    // verify-full compares the certificate with the host name it was asked for.
    let by_name = plain.replace("@127.0.0.1:", "@localhost:");
    let tmp = tempfile::tempdir().unwrap();
    let ca = |name: &str| cluster.dir().join(name).display().to_string();
    let mut config = tradewire_server::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: tmp.path().to_owned(),
        jwt_secret: Some("tls-test-secret".to_owned().into()),
        demo: Some(false),
        simulator: false,
        capture: match backend() {
            Backend::PgOutbox => tradewire_server::capture::CaptureMode::Outbox,
            _ => tradewire_server::capture::CaptureMode::Logical,
        },
        slot: db.clone(),
        log: "warn".into(),
        ..tradewire_server::Config::default()
    };

    config.database = Some(format!(
        "{by_name}?sslmode=verify-full&sslrootcert={}&application_name=tw-tls",
        ca("other-ca.pem")
    ));
    let refused =
        Server::build(config.clone()).await.err().expect("a server certificate from another CA is refused");
    let message = refused.to_string();
    assert!(message.to_lowercase().contains("certificate") || message.contains("UnknownIssuer"), "{message}");

    config.database =
        Some(format!("{by_name}?sslmode=verify-full&sslrootcert={}&application_name=tw-tls", ca("ca.pem")));
    let server = Server::build(config).await.expect("verify-full with the right CA");
    let state = server.state().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let serving = tokio::spawn(server.serve(listener, stop.clone()));
    let mut sql = crate::backend::TestSql::open(&crate::backend::Target::Postgres(plain.clone()));
    tradewire_server::db::seed::create_user(&mut sql, "tls", "tls-password", "1000").unwrap();
    let token = state.tokens().issue("u_tls", "tls", None).0;
    let mut ws = Ws::connect_with_token(&format!("ws://{addr}/v1/ws"), Some(&token)).await;
    assert!(matches!(ws.frame().await, ServerFrame::Welcome { .. }));
    ws.send_json(json!({"op": "subscribe", "id": "s", "topics": ["signals"], "from": "now"})).await;
    assert!(matches!(ws.frame().await, ServerFrame::Subscribed { .. }));
    crate::helpers::insert_signal(&mut sql, "tls", "over tls");
    let ev = ws.event().await;
    assert_eq!(ev.row.unwrap()["reason"], "over tls", "captured through encrypted connections");
    let encrypted = sql.int(
        "SELECT COUNT(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
         WHERE a.application_name IN ('tw-tls', 'tradewire') AND s.ssl",
        &[],
    );
    let plain_ones = sql.int(
        "SELECT COUNT(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
         WHERE a.application_name IN ('tw-tls', 'tradewire') AND NOT s.ssl",
        &[],
    );
    assert!(encrypted >= 2, "the server's connections are encrypted ({encrypted})");
    assert_eq!(plain_ones, 0, "none of them is plain");
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), serving).await.unwrap().unwrap().unwrap();
}
