//! Authentication: login, the three ways a WebSocket presents its token, tokens that must
//! be refused (malformed, tampered, foreign, expired, unsigned), expiry with and without a
//! refresh, and a refresh that tries to become someone else. Each refusal is the documented
//! answer, and the server keeps serving everyone else with nothing lost.

use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use tradewire_protocol::ServerFrame;

use crate::helpers::{Bystander, Closed, TestApp, Ws, frames_until_close, spawn_app};

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// The connection is open and answering: a ping gets a pong with the same `ts`.
async fn assert_alive(ws: &mut Ws, ts: Value) {
    ws.send_json(json!({"op": "ping", "ts": ts})).await;
    assert_eq!(ws.frame().await, ServerFrame::Pong { ts: Some(ts) }, "the connection stays open");
}

/// How a WebSocket client presents its token.
#[derive(Debug, Clone, Copy)]
enum Via {
    Header,
    Query,
    FirstFrame,
}

const VIAS: [Via; 3] = [Via::Header, Via::Query, Via::FirstFrame];

/// Connect presenting `token` the way `via` says; nothing read yet.
async fn connect(app: &TestApp, via: Via, token: &str) -> Ws {
    match via {
        Via::Header => Ws::connect_with_token(&app.ws_url(), Some(token)).await,
        Via::Query => Ws::connect_with_token(&format!("{}?token={token}", app.ws_url()), None).await,
        Via::FirstFrame => {
            let mut ws = Ws::connect_with_token(&app.ws_url(), None).await;
            ws.send_json(json!({"op": "auth", "token": token})).await;
            ws
        }
    }
}

/// Connect with `token` and read the `welcome`, which must name `user_id`.
async fn welcomed(app: &TestApp, via: Via, token: &str, user_id: &str) -> Ws {
    let mut ws = connect(app, via, token).await;
    match ws.frame().await {
        ServerFrame::Welcome { user_id: u, .. } => assert_eq!(u, user_id, "via {via:?}"),
        other => panic!("expected welcome via {via:?}, got {other:?}"),
    }
    ws
}

/// Unpadded base64url, as JWT segments are written.
fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Claims that would make the bearer bob for an hour.
fn bob_claims() -> Value {
    let now = now_ms() / 1000;
    json!({"sub": "u_bob", "name": "bob", "exp": now + 3600, "iat": now})
}

fn sign(alg: Algorithm, secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

/// Tokens the server must refuse, each with what is wrong with it.
fn bad_tokens(app: &TestApp) -> Vec<(&'static str, String)> {
    let alice = app.token("alice");
    let parts: Vec<&str> = alice.split('.').collect();
    let bob = b64url(bob_claims().to_string().as_bytes());
    let now = now_ms() / 1000;
    vec![
        ("malformed", "not-a-jwt".to_owned()),
        ("malformed with three parts", "a.b.c".to_owned()),
        ("tampered: alice's signature on bob's claims", format!("{}.{bob}.{}", parts[0], parts[2])),
        ("signed with another secret", sign(Algorithm::HS256, "another-secret", &bob_claims())),
        ("expired", app.state.tokens().issue("u_alice", "alice", Some(-10)).0),
        ("alg none", format!("{}.{bob}.", b64url(br#"{"alg":"none","typ":"JWT"}"#))),
        (
            "another algorithm (HS512) with the right secret",
            sign(Algorithm::HS512, "integration-test-secret", &bob_claims()),
        ),
        (
            "no exp",
            sign(
                Algorithm::HS256,
                "integration-test-secret",
                &json!({"sub": "u_bob", "name": "bob", "iat": now}),
            ),
        ),
    ]
}

/// An HTTP error: its status, the `error.code` and `error.message` of its JSON body.
async fn http_error(r: reqwest::Response) -> (u16, String, String) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.expect("a JSON error body");
    let field =
        |k: &str| body["error"][k].as_str().unwrap_or_else(|| panic!("no error.{k} in {body}")).to_owned();
    (status, field("code"), field("message"))
}

#[tokio::test]
async fn without_a_token_or_an_auth_frame_the_connection_is_closed_with_4001_after_the_timeout() {
    let app = spawn_app().await;
    let mut watch = Bystander::new(&app, "alice").await;

    let started = Instant::now();
    let mut ws = Ws::connect_with_token(&app.ws_url(), None).await;
    let (frames, closed) = frames_until_close(&mut ws.socket).await;
    assert_eq!(closed, Closed::Code(4001));
    assert_eq!(frames, [], "nothing is sent to an unauthenticated client");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(app.config.auth_timeout_ms - 100),
        "closed after the auth timeout, not at once: {waited:?}"
    );

    watch.still_served(&app).await;
}

#[tokio::test]
async fn an_auth_first_frame_authenticates_and_any_other_first_frame_is_closed_with_4001() {
    let app = spawn_app().await;
    let mut watch = Bystander::new(&app, "alice").await;

    let mut ws = welcomed(&app, Via::FirstFrame, &app.token("alice"), "u_alice").await;
    ws.send_json(json!({"op": "subscribe", "id": "s", "topics": ["signals"], "from": "now"})).await;
    assert!(matches!(ws.frame().await, ServerFrame::Subscribed { .. }));

    let not_auth = [
        json!({"op": "ping", "ts": 1}),
        json!({"op": "subscribe", "id": "s", "topics": ["signals"]}),
        json!({"op": "authenticate", "token": app.token("alice")}),
        json!({"token": app.token("alice")}),
    ];
    for first in not_auth {
        let mut bad = Ws::connect_with_token(&app.ws_url(), None).await;
        bad.send_json(first.clone()).await;
        let (frames, closed) = frames_until_close(&mut bad.socket).await;
        assert_eq!((frames, closed), (vec![], Closed::Code(4001)), "first frame {first}");
    }

    watch.still_served(&app).await;
    let ev = ws.event().await;
    assert_eq!((ev.id.as_deref(), ev.seq), (Some("s"), watch.seq), "the first-frame client is served live");
}

#[tokio::test]
async fn a_token_in_the_query_string_authenticates() {
    let app = spawn_app().await;
    let mut alice = welcomed(&app, Via::Query, &app.token("alice"), "u_alice").await;
    let (pos, _) = alice.subscribe_snapshot("s", json!(["*"])).await;
    let _bob = welcomed(&app, Via::Query, &app.token("bob"), "u_bob").await;

    app.insert_signals("alice", 1, "for alice");
    let ev = alice.event().await;
    assert_eq!(ev.seq, pos.seq + 1);
    assert_eq!(ev.row.unwrap()["user_id"], "u_alice");
}

#[tokio::test]
async fn forged_foreign_expired_and_unsigned_tokens_are_refused_on_websocket_and_http() {
    let app = spawn_app().await;
    let mut watch = Bystander::new(&app, "alice").await;
    let mut bob = Bystander::new(&app, "bob").await;

    for (what, token) in bad_tokens(&app) {
        for via in VIAS {
            let mut ws = connect(&app, via, &token).await;
            let (frames, closed) = frames_until_close(&mut ws.socket).await;
            assert_eq!((frames, closed), (vec![], Closed::Code(4001)), "{what} token via {via:?}");
        }
        let r = app.http.get(app.url("/v1/bots")).bearer_auth(&token).send().await.unwrap();
        let (status, code, _) = http_error(r).await;
        assert_eq!((status, code.as_str()), (401, "unauthorized"), "{what} token on HTTP");
    }
    let r = app.http.get(app.url("/v1/bots")).send().await.unwrap();
    assert_eq!(http_error(r).await.0, 401, "no token at all");

    // The same requests with a good token succeed: the refusals were about the tokens.
    let r = app.http.get(app.url("/v1/bots")).bearer_auth(app.token("alice")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    for via in VIAS {
        welcomed(&app, via, &app.token("alice"), "u_alice").await;
    }

    watch.still_served(&app).await;
    bob.still_served(&app).await;
}

#[tokio::test]
async fn an_expiring_token_closes_the_connection_with_4009_unless_a_fresh_one_was_sent_in_time() {
    let app = spawn_app().await;
    // Expiry is in whole seconds: this token expires 1 to 2 s from now.
    let (short, claims) = app.state.tokens().issue("u_alice", "alice", Some(2));
    let expires_ms = claims.expires_at_ms();
    assert_eq!(app.http.get(app.url("/v1/bots")).bearer_auth(&short).send().await.unwrap().status(), 200);

    let mut expiring = welcomed(&app, Via::Header, &short, "u_alice").await;

    let mut badly_refreshed = welcomed(&app, Via::Header, &short, "u_alice").await;
    let expired = app.state.tokens().issue("u_alice", "alice", Some(-10)).0;
    badly_refreshed.send_json(json!({"op": "auth", "token": expired})).await;

    let mut refreshed = welcomed(&app, Via::Header, &short, "u_alice").await;
    let (pos, _) = refreshed.subscribe_snapshot("s", json!(["*"])).await;
    refreshed.send_json(json!({"op": "auth", "token": app.token("alice")})).await;
    // Frames are handled in order: once this pong is back, the refresh has been applied.
    assert_alive(&mut refreshed, json!("refreshed")).await;
    assert!(now_ms() < expires_ms, "the refresh was sent before expiry (test setup too slow)");

    let (_, closed) = frames_until_close(&mut expiring.socket).await;
    let at = now_ms();
    assert_eq!(closed, Closed::Code(4009));
    assert!(at >= expires_ms, "not closed before expiry ({} ms early)", expires_ms - at);
    assert!(at < expires_ms + 3000, "closed within a few seconds of expiry ({} ms late)", at - expires_ms);

    let (_, closed) = frames_until_close(&mut badly_refreshed.socket).await;
    assert_eq!(closed, Closed::Code(4009), "an expired token is not a fresh one");

    // Past the original expiry the refreshed connection answers and receives changes.
    assert!(now_ms() >= expires_ms);
    assert_alive(&mut refreshed, json!("after expiry")).await;
    app.insert_signals("alice", 1, "after expiry");
    let ev = refreshed.event().await;
    assert_eq!(ev.seq, pos.seq + 1);
    assert_eq!(ev.row.unwrap()["reason"], "after expiry");
}

#[tokio::test]
async fn a_token_is_refused_from_its_expiry_on_just_as_the_websocket_closes_for_it() {
    let app = spawn_app().await;
    let mut watch = Bystander::new(&app, "alice").await;
    let (short, claims) = app.state.tokens().issue("u_alice", "alice", Some(1));
    let expires_ms = claims.expires_at_ms();
    let mut ws = welcomed(&app, Via::Header, &short, "u_alice").await;
    // The server itself says when the token has expired.
    assert_eq!(frames_until_close(&mut ws.socket).await.1, Closed::Code(4009));
    assert!(now_ms() >= expires_ms);

    // From then on (RFC 7519: "on or after" `exp`) the token is no longer valid anywhere.
    let r = app.http.get(app.url("/v1/bots")).bearer_auth(&short).send().await.unwrap();
    let http = (r.status().as_u16(), now_ms() - expires_ms);
    let mut ws = Ws::connect_with_token(&app.ws_url(), Some(&short)).await;
    let (frames, closed) = frames_until_close(&mut ws.socket).await;
    let at = now_ms() - expires_ms;
    assert_eq!(http.0, 401, "GET /v1/bots {} ms after exp answered {}", http.1, http.0);
    assert_eq!((frames.as_slice(), &closed), (&[][..], &Closed::Code(4001)), "a WebSocket {at} ms after exp");

    watch.still_served(&app).await;
}

#[tokio::test]
async fn refreshing_with_another_users_token_is_closed_with_4003() {
    let app = spawn_app().await;
    let mut watch = Bystander::new(&app, "alice").await;
    let mut bob = Bystander::new(&app, "bob").await;

    let mut ws = app.ws("alice").await;
    ws.subscribe_snapshot("s", json!(["*"])).await;
    ws.send_json(json!({"op": "auth", "token": app.token("bob")})).await;
    app.insert_signals("bob", 1, "bob's, not for alice's connection");
    let (frames, closed) = frames_until_close(&mut ws.socket).await;
    assert_eq!(closed, Closed::Code(4003));
    assert!(
        !frames.iter().any(
            |f| matches!(f, ServerFrame::Event(e) if e.row.as_ref().is_some_and(|r| r["user_id"] == "u_bob"))
        ),
        "no row of bob's reached alice's connection: {frames:?}"
    );

    watch.still_served(&app).await;
    bob.seq += 1; // the signal inserted above
    let ev = bob.ws.event().await;
    assert_eq!(ev.seq, bob.seq);
    bob.still_served(&app).await;
}

#[tokio::test]
async fn login_returns_a_working_token_and_refuses_bad_credentials_alike() {
    let app = spawn_app().await;
    let login = |username: &str, password: &str| {
        app.http
            .post(app.url("/v1/auth/login"))
            .json(&json!({"username": username, "password": password}))
            .send()
    };

    let before = now_ms();
    let r = login("alice", "alice-pw").await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["user_id"], "u_alice");
    let expires_at = body["expires_at"].as_i64().expect("expires_at is an integer");
    let ttl_ms = app.config.token_ttl_secs as i64 * 1000;
    assert!(expires_at > before, "expires_at is in the future, in ms: {expires_at}");
    assert!(expires_at <= now_ms() + ttl_ms, "expires_at is the configured lifetime away: {expires_at}");
    let token = body["token"].as_str().expect("a token").to_owned();

    let r = app.http.get(app.url("/v1/bots")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut ws = welcomed(&app, Via::Header, &token, "u_alice").await;
    assert_alive(&mut ws, json!(1)).await;

    let r = login("bob", "bob-pw").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["user_id"], "u_bob");

    let mut messages = Vec::new();
    for (username, password) in
        [("alice", "wrong"), ("alice", "bob-pw"), ("alice", ""), ("nobody", "alice-pw"), ("nobody", "")]
    {
        let (status, code, message) = http_error(login(username, password).await.unwrap()).await;
        assert_eq!((status, code.as_str()), (401, "unauthorized"), "{username}/{password}");
        messages.push(message);
    }
    messages.dedup();
    assert_eq!(messages.len(), 1, "the same answer for a wrong password and an unknown user: {messages:?}");
}
