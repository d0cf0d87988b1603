//! One way into the server for every integration test: `spawn_app()` starts the real
//! server on a real port with a fresh database of the suite's backend (see `backend`), and `TestApp` offers what a test needs
//! (users, tokens, WebSocket clients, SQL from a separate connection, restart).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::{SinkExt, Stream, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tradewire_protocol::{EventFrame, Position, ServerFrame};
use tradewire_server::config::Config;
use tradewire_server::db::Sql;
use tradewire_server::{AppState, Server};

pub use crate::backend::{Backend, Target, TestSql, backend, shell};

/// `0/16B3748` as a number.
fn parse_lsn(text: &str) -> u64 {
    let (hi, lo) = text.split_once('/').expect("an LSN is hi/lo");
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

/// Default deadline for anything a test waits on.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub struct TestApp {
    pub addr: std::net::SocketAddr,
    pub state: AppState,
    pub http: reqwest::Client,
    pub config: Config,
    dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

/// A test server with default test settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A test server whose configuration `tweak` adjusts.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().to_owned();
    let mut config = test_config(&dir);
    crate::backend::prepare(&mut config);
    tweak(&mut config);
    let mut app = start(config, dir).await;
    app._tmp = Some(tmp);
    app.create_user("alice");
    app.create_user("bob");
    app.settle().await;
    app
}

fn test_config(dir: &Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_owned(),
        jwt_secret: Some("integration-test-secret".to_owned().into()),
        demo: Some(false),
        simulator: false,
        heartbeat_ms: 1000,
        auth_timeout_ms: 1000,
        shutdown_timeout_ms: 3000,
        log: "warn".into(),
        ..Config::default()
    }
}

async fn start(config: Config, dir: PathBuf) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        tradewire_server::telemetry::init_logs("info,tradewire_server=debug", Default::default());
    }
    let listener = tokio::net::TcpListener::bind(config.listen).await.expect("bind");
    let addr = listener.local_addr().unwrap();
    let server = Server::build(config.clone()).await.expect("server builds");
    let state = server.state().clone();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(server.serve(listener, shutdown.clone()));
    let app = TestApp {
        addr,
        state,
        // No request waits forever: a read that stalls for the deadline fails the test
        // (SSE streams carry a heartbeat every second, so they never stall that long).
        http: reqwest::Client::builder().read_timeout(DEADLINE).connect_timeout(DEADLINE).build().unwrap(),
        config,
        dir,
        _tmp: None,
        shutdown,
        handle: Some(handle),
    };
    app.wait_ready().await;
    app
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    async fn wait_ready(&self) {
        eventually("server ready", || async {
            let r = self.http.get(self.url("/readyz")).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
    }

    /// A direct connection to the database: a second writer, as another process (or a
    /// person in `sqlite3` or `psql`) would be.
    pub fn sql(&self) -> TestSql {
        TestSql::open(&self.target())
    }

    /// What a second writer connects to.
    pub fn target(&self) -> Target {
        crate::backend::target(&self.config)
    }

    pub fn create_user(&self, name: &str) -> String {
        tradewire_server::db::seed::create_user(&mut self.sql(), name, &format!("{name}-pw"), "10000")
            .unwrap()
    }

    pub fn user_id(name: &str) -> String {
        format!("u_{name}")
    }

    pub fn token(&self, name: &str) -> String {
        self.state.tokens().issue(&Self::user_id(name), name, None).0
    }

    pub fn epoch(&self) -> String {
        self.state.log().epoch().to_string()
    }

    /// Wait until everything committed so far is in the change log. On SQLite and with the
    /// outbox, capture is part of the writing transaction: nothing to wait for. With logical
    /// replication the server numbers changes as it reads the WAL: emit a fence message and
    /// wait for its position to be persisted.
    pub async fn settle(&self) {
        if backend() != Backend::PgLogical {
            return;
        }
        let mut c = self.sql();
        let lsn =
            c.text("SELECT pg_logical_emit_message(true, 'tradewire.sync', '')::text", &[]).unwrap().unwrap();
        let target = parse_lsn(&lsn);
        eventually("capture caught up", || async {
            let done = self.sql().text("SELECT value FROM tw_meta WHERE key = 'lsn'", &[]).unwrap();
            (done.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) >= target).then_some(())
        })
        .await;
    }

    /// The head of a user's stream, read from the database (once capture has caught up).
    pub async fn head(&self, name: &str) -> u64 {
        self.settle().await;
        self.sql().int(
            "SELECT COALESCE((SELECT seq FROM tw_user_seq WHERE user_id = ?1), 0)",
            tradewire_server::sql_params![Self::user_id(name)],
        ) as u64
    }

    pub async fn get(&self, name: &str, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).bearer_auth(self.token(name)).send().await.unwrap()
    }

    pub async fn post(&self, name: &str, path: &str, body: Value) -> reqwest::Response {
        self.http.post(self.url(path)).bearer_auth(self.token(name)).json(&body).send().await.unwrap()
    }

    pub async fn place_order(&self, name: &str, client_order_id: &str) -> reqwest::Response {
        self.post(
            name,
            "/v1/orders",
            json!({"client_order_id": client_order_id, "symbol": "BTCUSDT", "side": "buy",
                   "type": "limit", "price": "27000.50", "quantity": "0.010"}),
        )
        .await
    }

    /// Insert `n` signals for `name` through a separate connection, one transaction each.
    pub fn insert_signals(&self, name: &str, n: usize, reason: &str) {
        let mut c = self.sql();
        for _ in 0..n {
            insert_signal(&mut c, name, reason);
        }
    }

    /// A WebSocket authenticated with the `Authorization` header, welcome read.
    /// (Once what was committed before is captured: with logical capture, a snapshot taken
    /// sooner may be followed by changes it already shows, applied again — correct, but not
    /// what a test stepping through its own writes expects.)
    pub async fn ws(&self, name: &str) -> Ws {
        self.settle().await;
        let mut ws = Ws::connect_with_token(&self.ws_url(), Some(&self.token(name))).await;
        let welcome = ws.frame().await;
        assert!(matches!(welcome, ServerFrame::Welcome { .. }), "expected welcome, got {welcome:?}");
        ws
    }

    /// Stop the server (clients get 1001) and wait for it to finish draining.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            tokio::time::timeout(DEADLINE, h).await.expect("shutdown in time").unwrap().unwrap();
        }
    }

    /// Start a new server on the same data directory and the same port.
    pub async fn restart(mut self) -> TestApp {
        self.stop().await;
        let tmp = self._tmp.take();
        let mut config = self.config.clone();
        config.listen = self.addr;
        let mut app = start(config, self.dir.clone()).await;
        app._tmp = tmp;
        app
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn insert_signal(c: &mut dyn Sql, name: &str, reason: &str) {
    let id = format!("sig_{}", uuid::Uuid::now_v7().simple());
    c.execute(
        "INSERT INTO signals(id, user_id, symbol, direction, confidence, reason, ts) VALUES (?1, ?2, 'BTCUSDT', 'long', '0.7', ?3, 0)",
        tradewire_server::sql_params![id, TestApp::user_id(name), reason],
    )
    .unwrap();
}

/// Poll `check` until it yields, or fail after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A healthy client of `name`, subscribed to everything with a snapshot: it must go on
/// receiving every change of its user, contiguously, whatever other clients do.
pub struct Bystander {
    pub ws: Ws,
    pub name: &'static str,
    pub seq: u64,
}

impl Bystander {
    pub async fn new(app: &TestApp, name: &'static str) -> Bystander {
        let mut ws = app.ws(name).await;
        let (pos, _) = ws.subscribe_snapshot("watch", json!(["*"])).await;
        Bystander { ws, name, seq: pos.seq }
    }

    /// A change committed now reaches the bystander with the next `seq`.
    pub async fn still_served(&mut self, app: &TestApp) {
        app.insert_signals(self.name, 1, "after the abuse");
        let ev = self.ws.event().await;
        assert_eq!(ev.id.as_deref(), Some("watch"));
        assert_eq!(ev.seq, self.seq + 1, "the next change, nothing lost or skipped");
        assert_eq!(ev.row.as_ref().unwrap()["reason"], "after the abuse");
        self.seq = ev.seq;
    }
}

/// Every frame until the connection ends (heartbeats left out), and how it ended.
pub async fn frames_until_close<S>(socket: &mut S) -> (Vec<ServerFrame>, Closed)
where
    S: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    let mut frames = Vec::new();
    loop {
        match tokio::time::timeout(DEADLINE, socket.next()).await.expect("close within the deadline") {
            Some(Ok(Message::Text(t))) => match serde_json::from_str(&t) {
                Ok(ServerFrame::Heartbeat { .. }) => {}
                Ok(f) => frames.push(f),
                Err(e) => panic!("bad frame {t}: {e}"),
            },
            Some(Ok(Message::Close(f))) => {
                return (frames, f.map(|f| Closed::Code(u16::from(f.code))).unwrap_or(Closed::Abrupt));
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return (frames, Closed::Abrupt),
        }
    }
}

/// A raw WebSocket client for tests.
pub struct Ws {
    pub socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How a connection ended.
#[derive(Debug, PartialEq)]
pub enum Closed {
    Code(u16),
    /// Dropped without a close frame.
    Abrupt,
}

impl Ws {
    pub async fn connect_with_token(url: &str, token: Option<&str>) -> Ws {
        let mut req = url.into_client_request().unwrap();
        if let Some(t) = token {
            req.headers_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        let (socket, _) = tokio_tungstenite::connect_async(req).await.expect("ws connect");
        Ws { socket }
    }

    /// Connect over a socket with a small receive buffer (to make a slow reader).
    pub async fn connect_small_buffer(addr: std::net::SocketAddr, url: &str, token: &str) -> Ws {
        let sock = TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let stream = sock.connect(addr).await.unwrap();
        let mut req = url.into_client_request().unwrap();
        req.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (socket, _) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream)).await.unwrap();
        Ws { socket }
    }

    pub async fn send_json(&mut self, v: Value) {
        self.socket.send(Message::Text(v.to_string().into())).await.unwrap();
    }

    pub async fn send_text(&mut self, t: &str) {
        self.socket.send(Message::Text(t.to_owned().into())).await.unwrap();
    }

    /// The next server frame (skipping heartbeats), or panic after the deadline.
    pub async fn frame(&mut self) -> ServerFrame {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let f = self.any_frame().await;
            if !matches!(f, ServerFrame::Heartbeat { .. }) {
                return f;
            }
            // Heartbeats alone never satisfy a wait.
            assert!(tokio::time::Instant::now() < deadline, "only heartbeats for {DEADLINE:?}; last {f:?}");
        }
    }

    /// The next server frame, heartbeats included.
    pub async fn any_frame(&mut self) -> ServerFrame {
        loop {
            let msg = tokio::time::timeout(DEADLINE, self.socket.next())
                .await
                .expect("a frame within the deadline")
                .expect("connection open")
                .expect("no read error");
            match msg {
                Message::Text(t) => {
                    return serde_json::from_str(&t).unwrap_or_else(|e| panic!("bad frame {t}: {e}"));
                }
                Message::Close(f) => panic!("closed while waiting for a frame: {f:?}"),
                _ => continue,
            }
        }
    }

    pub async fn event(&mut self) -> EventFrame {
        match self.frame().await {
            ServerFrame::Event(e) => e,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    /// Subscribe and return the snapshot (for `from: snapshot`).
    pub async fn subscribe_snapshot(
        &mut self,
        id: &str,
        topics: Value,
    ) -> (Position, BTreeMap<String, Vec<tradewire_protocol::Row>>) {
        self.send_json(json!({"op": "subscribe", "id": id, "topics": topics, "from": "snapshot"})).await;
        assert!(matches!(self.frame().await, ServerFrame::Subscribed { .. }));
        match self.frame().await {
            ServerFrame::Snapshot { position, rows, .. } => (position, rows),
            other => panic!("expected a snapshot, got {other:?}"),
        }
    }

    /// Read until the connection closes; returns the events seen before and how it ended.
    pub async fn drain_until_close(&mut self) -> (Vec<EventFrame>, Closed) {
        let (frames, closed) = frames_until_close(&mut self.socket).await;
        let events = frames
            .into_iter()
            .filter_map(|f| match f {
                ServerFrame::Event(e) => Some(e),
                _ => None,
            })
            .collect();
        (events, closed)
    }

    pub async fn expect_close(&mut self) -> Closed {
        self.drain_until_close().await.1
    }
}
