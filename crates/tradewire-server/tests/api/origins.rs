//! Which browser pages may open a stream (`allowed_origins`): a page of another site is
//! answered 403 `origin_not_allowed` before a WebSocket upgrade or an SSE stream starts;
//! the server's own pages, loopback pages and clients that send no `Origin` get in; a
//! configured list admits only what it names. And the dashboard is served with its
//! security headers.

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HOST, ORIGIN};
use serde_json::Value;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tradewire_protocol::ServerFrame;

use crate::helpers::{TestApp, Ws, spawn_app, spawn_app_with};

/// What a browser page at `origin` sends; `host` stands in for the name the server is
/// reached by (a real browser sends the address it connected to).
#[derive(Clone, Copy)]
struct Page<'a> {
    origin: Option<&'a str>,
    host: Option<&'a str>,
}

const NO_ORIGIN: Page<'static> = Page { origin: None, host: None };

/// How a refused page is answered: status and error code.
const REFUSED: (StatusCode, Option<&str>) = (StatusCode::FORBIDDEN, Some("origin_not_allowed"));

fn from(origin: &str) -> Page<'_> {
    Page { origin: Some(origin), host: None }
}

/// Open `/v1/ws` as `page`, token in the header: `Ok` once `welcome` arrived, or the HTTP
/// status the upgrade was refused with.
async fn ws_open(app: &TestApp, page: Page<'_>) -> Result<Ws, u16> {
    let mut req = app.ws_url().into_client_request().unwrap();
    let headers = req.headers_mut();
    headers.insert("authorization", format!("Bearer {}", app.token("alice")).parse().unwrap());
    if let Some(o) = page.origin {
        headers.insert(ORIGIN, o.parse().unwrap());
    }
    if let Some(h) = page.host {
        headers.insert(HOST, h.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((socket, _)) => {
            let mut ws = Ws { socket };
            let welcome = ws.frame().await;
            assert!(matches!(welcome, ServerFrame::Welcome { .. }), "expected welcome, got {welcome:?}");
            Ok(ws)
        }
        Err(tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("unexpected {e}"),
    }
}

/// The same upgrade request as plain HTTP, for a refusal's body: status and error code.
async fn ws_refusal(app: &TestApp, page: Page<'_>) -> (StatusCode, Value) {
    let req = app
        .http
        .get(app.url("/v1/ws"))
        .bearer_auth(app.token("alice"))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    let resp = with_page(req, page).send().await.unwrap();
    let status = resp.status();
    (status, resp.json::<Value>().await.unwrap_or_default()["error"]["code"].clone())
}

/// An SSE request as `page`: the status, and the error code when refused.
async fn sse(app: &TestApp, page: Page<'_>) -> (StatusCode, Value) {
    let req = app.http.get(app.url("/v1/sse?topics=signals")).bearer_auth(app.token("alice"));
    let resp = with_page(req, page).send().await.unwrap();
    let status = resp.status();
    if status == StatusCode::OK {
        let ct = resp.headers()[CONTENT_TYPE].to_str().unwrap();
        assert!(ct.starts_with("text/event-stream"), "content type {ct}");
        // Dropping the response ends the stream.
        return (status, Value::Null);
    }
    (status, resp.json::<Value>().await.unwrap()["error"]["code"].clone())
}

fn with_page(mut req: reqwest::RequestBuilder, page: Page<'_>) -> reqwest::RequestBuilder {
    if let Some(o) = page.origin {
        req = req.header(ORIGIN, o);
    }
    if let Some(h) = page.host {
        req = req.header(HOST, h);
    }
    req
}

#[tokio::test]
async fn a_page_of_another_site_is_refused_before_the_upgrade_with_403() {
    let app = spawn_app().await;
    for foreign in ["https://evil.example", "http://127.0.0.1.evil.example", "null", "http://localhost:80/x"]
    {
        assert_eq!(ws_open(&app, from(foreign)).await.err(), Some(403), "WebSocket from {foreign}");
        let (status, code) = ws_refusal(&app, from(foreign)).await;
        assert_eq!((status, code.as_str()), REFUSED, "{foreign}");
        let (status, code) = sse(&app, from(foreign)).await;
        assert_eq!((status, code.as_str()), REFUSED, "SSE {foreign}");
    }
    // Before anything else: a foreign page without a token learns nothing about tokens.
    let resp = app.http.get(app.url("/v1/sse")).header(ORIGIN, "https://evil.example").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_servers_own_pages_loopback_pages_and_clients_without_origin_get_in() {
    let app = spawn_app().await;
    let own = format!("http://{}", app.addr);
    let mut open = Vec::new();
    for page in [
        from(&own),
        from("http://localhost:5173"),
        from("http://[::1]:3000"),
        from("HTTP://LOCALHOST:5173"),
        NO_ORIGIN,
    ] {
        open.push(
            ws_open(&app, page).await.unwrap_or_else(|s| panic!("WebSocket from {:?}: {s}", page.origin)),
        );
        assert_eq!(sse(&app, page).await.0, StatusCode::OK, "SSE from {:?}", page.origin);
    }

    // The own origin is the name the server is reached by, under http or https (a proxy in
    // front may end TLS), on that port only.
    let host = Some("trade.example.com:8443");
    for origin in ["https://trade.example.com:8443", "http://Trade.Example.com:8443"] {
        let page = Page { origin: Some(origin), host };
        assert!(ws_open(&app, page).await.is_ok(), "WebSocket from {origin}");
        assert_eq!(sse(&app, page).await.0, StatusCode::OK, "SSE from {origin}");
    }
    let other_port = Page { origin: Some("https://trade.example.com"), host };
    assert_eq!(ws_open(&app, other_port).await.err(), Some(403));
    assert_eq!(sse(&app, other_port).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_configured_list_admits_only_the_origins_it_names() {
    let app = spawn_app_with(|c| {
        c.allowed_origins = "https://app.example, http://dev.example:3000".parse().unwrap();
    })
    .await;
    for admitted in [
        from("https://app.example"),
        from("https://APP.example:443"),
        from("http://dev.example:3000"),
        NO_ORIGIN,
    ] {
        assert!(ws_open(&app, admitted).await.is_ok(), "WebSocket from {:?}", admitted.origin);
        assert_eq!(sse(&app, admitted).await.0, StatusCode::OK, "SSE from {:?}", admitted.origin);
    }
    let own = format!("http://{}", app.addr);
    for refused in ["http://app.example", "http://dev.example:3001", "http://localhost:5173", own.as_str()] {
        assert_eq!(ws_open(&app, from(refused)).await.err(), Some(403), "WebSocket from {refused}");
        let (status, code) = sse(&app, from(refused)).await;
        assert_eq!((status, code.as_str()), REFUSED, "SSE {refused}");
    }
}

#[tokio::test]
async fn a_star_admits_every_page() {
    let app = spawn_app_with(|c| c.allowed_origins = "*".parse().unwrap()).await;
    assert!(ws_open(&app, from("https://evil.example")).await.is_ok());
    assert_eq!(sse(&app, from("https://evil.example")).await.0, StatusCode::OK);
}

#[tokio::test]
async fn the_dashboard_and_its_files_carry_the_security_headers() {
    let app = spawn_app().await;
    for path in ["/", "/app.js", "/app.css", "/vendor/lightweight-charts.LICENSE"] {
        let resp = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .unwrap_or_else(|| panic!("{path}: no {name}"))
                .to_str()
                .unwrap()
                .to_owned()
        };
        let csp = header("content-security-policy");
        let directive = |name: &str| {
            csp.split(';')
                .map(str::trim)
                .find(|d| d.split_whitespace().next() == Some(name))
                .unwrap_or_else(|| panic!("{path}: no {name} in {csp}"))
                .to_owned()
        };
        assert_eq!(directive("script-src"), "script-src 'self'", "no inline script");
        assert_eq!(directive("default-src"), "default-src 'self'");
        assert_eq!(directive("frame-ancestors"), "frame-ancestors 'none'");
        let connect = directive("connect-src");
        assert!(
            connect.contains("'self'") && connect.contains(" ws:") && connect.contains(" wss:"),
            "{connect}"
        );
        assert_eq!(header("x-content-type-options"), "nosniff");
        assert_eq!(header("referrer-policy"), "no-referrer");
        assert_eq!(header("x-frame-options"), "DENY");
    }
}
