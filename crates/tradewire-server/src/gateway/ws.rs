//! `GET /v1/ws`: authentication (header, query or first frame), `welcome`, the client ops,
//! heartbeats, token refresh and expiry, limits, and every close code of PROTOCOL.md.
//!
//! The connection loop is generic over the socket's `Stream`/`Sink` halves, so it can be
//! driven by any WebSocket implementation.

use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures::{Sink, SinkExt, Stream, StreamExt};
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;
use tracing::Instrument;

use tradewire_hub::{Change, Inbox};
use tradewire_protocol::{ClientFrame, CloseCode, ErrorCode, From, ServerFrame};

use super::Gateway;
use super::admission::{Refused, Ticket};
use super::limits::{RateLimiter, Verdict};
use super::selection::Selection;
use super::session::{Outgoing, Session, Transport};
use crate::clock::now_ms;
use crate::credentials::{Claims, TokenError};
use crate::errors::{ApiError, StreamEnd, read_error_close_code};
use crate::http::{ApiQuery, request_token};

/// How long a close frame may take to leave before the connection is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Bytes a batch of messages may gather before it is written to the socket.
const WRITE_BATCH_BYTES: usize = 16 * 1024;
/// At most this many queued changes are written as one batch before the loop looks at
/// its other work (client frames, heartbeats).
const WRITE_BATCH_MESSAGES: usize = 64;

/// Initial read buffer of a connection.
const READ_BUFFER: usize = 1024;

#[derive(Debug, Deserialize)]
pub struct WsQuery {
    token: Option<String>,
}

pub async fn handler(
    State(gateway): State<Gateway>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiQuery(q): ApiQuery<WsQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    gateway.check_origin(&headers)?;
    let token = request_token(&headers, q.token);
    // Caps are checked before the upgrade, so a refused client gets a plain 429. A token
    // that does not verify is refused after the upgrade, with 4001, as before.
    let admission = gateway.admission();
    let mut tickets = vec![admission.address(peer.ip()).map_err(refused)?];
    match token.as_deref().map(|t| gateway.app().tokens().verify(t)) {
        Some(Ok(claims)) => tickets.push(admission.user(&claims.sub).map_err(refused)?),
        Some(Err(_)) => {}
        None => tickets.push(admission.unauthenticated().map_err(refused)?),
    }
    let max = gateway.settings().limits.max_frame_bytes;
    let tracker = gateway.app().tracker().clone();
    // Buffers are sized for many idle connections: tungstenite's defaults (128 KiB each
    // way) would cost a quarter of a megabyte per connection. Reads start at 1 KiB and grow
    // when a frame needs it. The write buffer starts empty; it only fills while a batch of
    // messages is written (see `WsTransport::batch`), up to WRITE_BATCH_BYTES before it goes out.
    let ws = ws
        .max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BATCH_BYTES);
    Ok(ws.on_upgrade(move |socket: WebSocket| {
        let span = tracing::info_span!("ws", user = tracing::field::Empty, session = tracing::field::Empty);
        let (sink, stream) = socket.split();
        tracker.track_future(connection(gateway, sink, stream, token, tickets).instrument(span))
    }))
}

/// A cap refused the connection: 429 `rate_limited`.
pub(super) fn refused(r: Refused) -> ApiError {
    ApiError::rate_limited(r.to_string(), Duration::from_secs(1))
}

/// Why a frame from the client could not be used.
pub(crate) enum FrameError {
    /// Not JSON at all (or binary): a protocol violation, close 4400.
    Violation,
    /// JSON, but not a valid request: an error frame, the connection stays.
    Request(Option<String>, ErrorCode, String),
}

pub(crate) fn parse_frame(text: &str) -> Result<ClientFrame, FrameError> {
    let value: Value = serde_json::from_str(text).map_err(|_| FrameError::Violation)?;
    let Some(obj) = value.as_object() else {
        return Err(FrameError::Request(
            None,
            ErrorCode::BadRequest,
            "a frame is a JSON object with \"op\"".into(),
        ));
    };
    let id = obj.get("id").and_then(Value::as_str).map(|s| s.chars().take(64).collect::<String>());
    let Some(op) = obj.get("op").and_then(Value::as_str) else {
        return Err(FrameError::Request(id, ErrorCode::BadRequest, "a frame needs a string \"op\"".into()));
    };
    if !ClientFrame::OPS.contains(&op) {
        return Err(FrameError::Request(
            id,
            ErrorCode::UnknownOp,
            format!(
                "unknown op {:?}; ops are {}",
                op.chars().take(32).collect::<String>(),
                ClientFrame::OPS.join(", ")
            ),
        ));
    }
    serde_json::from_value(value).map_err(|e| FrameError::Request(id, ErrorCode::BadRequest, e.to_string()))
}

fn text(frame: &ServerFrame) -> Message {
    Message::Text(Utf8Bytes::from(frame.to_json()))
}

/// The writing half, with the session's overflow signal and the server's shutdown.
struct WsTransport<K> {
    sink: K,
    /// While set, messages are queued in the write buffer and go out at `flush` (one
    /// system call for many messages); otherwise each is flushed at once.
    batch: bool,
    overflowed: Pin<Box<WaitForCancellationFutureOwned>>,
    /// The server's shutdown, through a token of this connection's own: polling the
    /// server-wide token locks a mutex that every connection shares.
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Counted per message: resolved once, not looked up in the registry each time.
    market_delivered: metrics::Counter,
    events_delivered: metrics::Counter,
}

impl<K> WsTransport<K>
where
    K: Sink<Message> + Unpin + Send,
{
    async fn write(&mut self, msg: Message) -> Result<(), StreamEnd> {
        let batch = self.batch;
        let sink = &mut self.sink;
        let write = async move { if batch { sink.feed(msg).await } else { sink.send(msg).await } };
        Self::race(write, &mut self.overflowed, &mut self.shutdown).await
    }

    /// Write out what a batch gathered.
    async fn flush(&mut self) -> Result<(), StreamEnd> {
        Self::race(self.sink.flush(), &mut self.overflowed, &mut self.shutdown).await
    }

    /// Run a write. Most complete at once (the socket has room), and those take the fast
    /// path; one that has to wait races the overflow signal and shutdown, so a stalled
    /// client cannot hold the session.
    async fn race<E>(
        io: impl Future<Output = Result<(), E>>,
        overflowed: &mut Pin<Box<WaitForCancellationFutureOwned>>,
        shutdown: &mut Pin<Box<WaitForCancellationFutureOwned>>,
    ) -> Result<(), StreamEnd> {
        let mut io = pin!(io);
        if let Poll::Ready(r) = futures::poll!(io.as_mut()) {
            return r.map_err(|_| StreamEnd::Gone);
        }
        tokio::select! {
            r = io => r.map_err(|_| StreamEnd::Gone),
            () = overflowed => Err(StreamEnd::SlowConsumer),
            () = shutdown => Err(StreamEnd::Shutdown),
        }
    }

    /// Send a close frame (after whatever is already buffered) and give up after a grace.
    async fn close(mut self, code: CloseCode) {
        metrics::counter!("tradewire_disconnects_total", "code" => code.code().to_string()).increment(1);
        tracing::debug!(code = code.code(), "closing");
        let frame = CloseFrame { code: code.code(), reason: Utf8Bytes::from_static(code.reason()) };
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            let _ = self.sink.send(Message::Close(Some(frame))).await;
            let _ = self.sink.close().await;
        })
        .await;
    }
}

impl<K> Transport for WsTransport<K>
where
    K: Sink<Message> + Unpin + Send,
{
    /// A WebSocket tells only by reading, and the connection loop reads frames in order:
    /// a peer that left is noticed when a write fails or the loop reads again.
    fn peer_gone(&self) -> impl Future<Output = ()> + Send + 'static {
        std::future::pending()
    }

    async fn send(&mut self, out: Outgoing<'_>) -> Result<(), StreamEnd> {
        let msg = match out {
            Outgoing::Frame(frame) => text(&frame),
            Outgoing::Market(msg) => {
                self.market_delivered.increment(1);
                Message::Text(Utf8Bytes::try_from(msg.frame.clone()).map_err(|_| StreamEnd::Gone)?)
            }
            Outgoing::Event { sub, change } => {
                self.events_delivered.increment(1);
                let bytes = change.ws_frame(sub);
                // The frame is serde_json output plus an id that serde_json encoded: UTF-8.
                Message::Text(Utf8Bytes::try_from(bytes).map_err(|_| StreamEnd::Gone)?)
            }
        };
        self.write(msg).await
    }
}

/// Authenticate from the token given at upgrade, or from the first frame.
async fn authenticate<S>(
    gateway: &Gateway,
    stream: &mut S,
    token: Option<String>,
) -> Result<Claims, CloseCode>
where
    S: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    let token = match token {
        Some(t) => t,
        None => {
            let wait = gateway.settings().auth_timeout;
            let first = tokio::time::timeout(wait, async {
                loop {
                    match stream.next().await {
                        Some(Ok(Message::Text(t))) => return Some(t),
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                        _ => return None,
                    }
                }
            })
            .await
            .ok()
            .flatten()
            .ok_or(CloseCode::Unauthorized)?;
            match parse_frame(&first) {
                Ok(ClientFrame::Auth { token }) => token,
                _ => return Err(CloseCode::Unauthorized),
            }
        }
    };
    gateway.app().tokens().verify(&token).map_err(|_| CloseCode::Unauthorized)
}

fn expiry(claims: &Claims) -> Instant {
    let left = (claims.expires_at_ms() - now_ms()).max(0) as u64;
    Instant::now() + Duration::from_millis(left)
}

/// One WebSocket connection, from upgrade to close.
pub async fn connection<K, S>(
    gateway: Gateway,
    sink: K,
    mut stream: S,
    token: Option<String>,
    mut tickets: Vec<Ticket>,
) where
    K: Sink<Message> + Unpin + Send,
    S: Stream<Item = Result<Message, axum::Error>> + Unpin + Send,
{
    metrics::gauge!("tradewire_connections", "transport" => "ws").increment(1.0);
    let mut out = WsTransport {
        sink,
        batch: false,
        overflowed: Box::pin(tokio_util::sync::CancellationToken::new().cancelled_owned()),
        shutdown: Box::pin(gateway.app().sessions_close().child_token().cancelled_owned()),
        market_delivered: metrics::counter!("tradewire_market_delivered_total"),
        events_delivered: metrics::counter!("tradewire_events_delivered_total"),
    };
    let authenticated_at_upgrade = token.is_some();
    let code = match authenticate(&gateway, &mut stream, token).await {
        Err(code) => code,
        Ok(claims) => {
            // Authenticated by its first frame: the user's cap is checked now, and the
            // place among sockets waiting to authenticate is given back.
            let admitted = match authenticated_at_upgrade {
                true => Ok(()),
                false => gateway.admission().user(&claims.sub).map(|user| {
                    // [address, waiting to authenticate] becomes [address, user].
                    tickets.pop();
                    tickets.push(user);
                }),
            };
            match admitted {
                Ok(()) => run(&gateway, &mut out, &mut stream, claims).await,
                Err(_) => CloseCode::RateLimited,
            }
        }
    };
    if code != CloseCode::Normal {
        out.close(code).await;
        // Read on (and discard) until the client answers the close or the grace ends:
        // closing the socket with its frames unread would reset the connection and throw
        // away the close frame (and whatever came before it) on the client's side.
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            while let Some(Ok(msg)) = stream.next().await {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
    metrics::gauge!("tradewire_connections", "transport" => "ws").decrement(1.0);
}

async fn run<K, S>(
    gateway: &Gateway,
    out: &mut WsTransport<K>,
    stream: &mut S,
    mut claims: Claims,
) -> CloseCode
where
    K: Sink<Message> + Unpin + Send,
    S: Stream<Item = Result<Message, axum::Error>> + Unpin + Send,
{
    let span = tracing::Span::current();
    span.record("user", claims.name.as_str());
    let mut session = match Session::open(gateway.clone(), &claims.sub).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot open session");
            return CloseCode::GoingAway;
        }
    };
    span.record("session", session.id());
    out.overflowed = Box::pin(session.queue().overflowed());
    let cfg = gateway.settings();
    let welcome = ServerFrame::Welcome {
        session: format!("{}-{}", gateway.app().instance(), session.id()),
        user_id: claims.sub.clone(),
        position: session.position(),
        heartbeat_ms: cfg.heartbeat.as_millis() as u64,
        limits: cfg.limits.clone(),
    };
    if let Err(stop) = out.send(Outgoing::Frame(welcome)).await {
        return stop.close_code();
    }
    let mut heartbeat = tokio::time::interval_at(Instant::now() + cfg.heartbeat, cfg.heartbeat);
    let mut expires: Pin<Box<Sleep>> = Box::pin(tokio::time::sleep_until(expiry(&claims)));
    let mut limiter = RateLimiter::new(cfg.limits.max_messages_per_second);
    let market = session.market_inbox();
    loop {
        let step = tokio::select! {
            biased;
            () = &mut out.shutdown => Err(StreamEnd::Shutdown),
            () = &mut out.overflowed => Err(StreamEnd::SlowConsumer),
            () = &mut expires => return CloseCode::TokenExpired,
            _ = heartbeat.tick() => {
                let hb = ServerFrame::Heartbeat { position: session.position(), ts: now_ms() };
                match out.write(Message::Ping(Default::default())).await {
                    Ok(()) => out.send(Outgoing::Frame(hb)).await,
                    Err(e) => Err(e),
                }
            }
            change = session.queue().recv() => match change {
                Some(change) => deliver_batch(&mut session, change, out).await,
                None => Err(StreamEnd::Gone),
            },
            () = market.ready() => {
                out.batch = true;
                let sent = send_market(&market, out).await;
                out.batch = false;
                match sent {
                    Ok(()) => out.flush().await,
                    Err(stop) => Err(stop),
                }
            }
            msg = stream.next() => {
                let msg = match msg {
                    None => return CloseCode::Normal,
                    Some(Ok(Message::Close(_))) => {
                        // The WebSocket layer has queued the answering close frame (the
                        // client's code echoed): write it out before the socket goes.
                        let _ = tokio::time::timeout(CLOSE_GRACE, out.sink.flush()).await;
                        return CloseCode::Normal;
                    }
                    Some(Err(e)) => return read_error_close_code(&e),
                    Some(Ok(m)) => m,
                };
                let text = match msg {
                    Message::Text(t) => t,
                    Message::Binary(_) => return CloseCode::ProtocolViolation,
                    Message::Ping(_) | Message::Pong(_) | Message::Close(_) => continue,
                };
                match limiter.check() {
                    Verdict::Allow => {}
                    Verdict::Reject { first } => {
                        if first {
                            let f = ServerFrame::error(None, ErrorCode::RateLimited, format!("more than {} frames per second; frames are being dropped", cfg.limits.max_messages_per_second));
                            if let Err(end) = out.send(Outgoing::Frame(f)).await { return end.close_code(); }
                        }
                        continue;
                    }
                    Verdict::Close => return CloseCode::RateLimited,
                }
                let frame = match parse_frame(&text) {
                    Ok(f) => f,
                    Err(FrameError::Violation) => return CloseCode::ProtocolViolation,
                    Err(FrameError::Request(id, code, message)) => {
                        if let Err(stop) = out.send(Outgoing::Frame(ServerFrame::error(id.as_deref(), code, message))).await {
                            return stop.close_code();
                        }
                        continue;
                    }
                };
                match handle(gateway, &mut session, out, frame, &mut claims).await {
                    Ok(Some(code)) => return code,
                    Ok(None) => {
                        expires.as_mut().reset(expiry(&claims));
                        Ok(())
                    }
                    Err(stop) => Err(stop),
                }
            }
        };
        if let Err(stop) = step {
            return stop.close_code();
        }
    }
}

/// Deliver `first` and whatever else is already queued (up to a batch), then write them
/// out together.
async fn deliver_batch<K>(
    session: &mut Session,
    first: Arc<Change>,
    out: &mut WsTransport<K>,
) -> Result<(), StreamEnd>
where
    K: Sink<Message> + Unpin + Send,
{
    out.batch = true;
    let mut result = session.deliver(&first, out).await;
    for _ in 1..WRITE_BATCH_MESSAGES {
        let Some(next) = result.is_ok().then(|| session.queue().try_recv()).flatten() else { break };
        result = session.deliver(&next, out).await;
    }
    out.batch = false;
    result?;
    out.flush().await
}

/// Send what the market inbox holds: at most one message per subscribed topic.
async fn send_market<T: Transport>(inbox: &Inbox, out: &mut T) -> Result<(), StreamEnd> {
    for msg in inbox.take() {
        out.send(Outgoing::Market(&msg)).await?;
    }
    Ok(())
}

/// Handle one client op. `Ok(Some(code))` closes the connection.
async fn handle<K>(
    gateway: &Gateway,
    session: &mut Session,
    out: &mut WsTransport<K>,
    frame: ClientFrame,
    claims: &mut Claims,
) -> Result<Option<CloseCode>, StreamEnd>
where
    K: Sink<Message> + Unpin + Send,
{
    match frame {
        ClientFrame::Ping { ts } => out.send(Outgoing::Frame(ServerFrame::Pong { ts })).await?,
        ClientFrame::Auth { token } => match gateway.app().tokens().verify(&token) {
            Ok(fresh) if fresh.sub == claims.sub => *claims = fresh,
            Ok(_) => return Ok(Some(CloseCode::Forbidden)),
            Err(e) => {
                let msg = match e {
                    TokenError::Expired => "token expired; the connection keeps its current token",
                    TokenError::Invalid => "token invalid; the connection keeps its current token",
                };
                out.send(Outgoing::Frame(ServerFrame::error(None, ErrorCode::Unauthorized, msg))).await?;
            }
        },
        ClientFrame::Unsubscribe { id } => {
            let frame = if session.unsubscribe(&id) {
                ServerFrame::Unsubscribed { id }
            } else {
                ServerFrame::error(Some(&id), ErrorCode::BadRequest, format!("no subscription {id:?}"))
            };
            out.send(Outgoing::Frame(frame)).await?;
        }
        ClientFrame::Subscribe { id, topics, filter, from } => {
            let app = gateway.app();
            let result = match Selection::new(app.catalog(), Some(app.market_bus()), &topics, filter.as_ref())
            {
                Ok(selection) => {
                    session.subscribe(&id, selection, from.unwrap_or(From::Snapshot), out).await?
                }
                Err(rejection) => Err(rejection),
            };
            if let Err(rejection) = result {
                out.send(Outgoing::Frame(rejection.frame(Some(&id)))).await?;
            }
        }
    }
    Ok(None)
}
