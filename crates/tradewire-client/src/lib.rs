//! Rust client for Tradewire: connect, subscribe, resume after any disconnect, detect gaps,
//! and follow the reconnect rule of each close code.
//!
//! [`Subscriber`] keeps one subscription alive across reconnects: it remembers the position
//! of the last change it handed out and resumes from it, so the caller sees every change
//! once, in order. It depends only on the protocol crate and a WebSocket client, never on
//! the server.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tradewire_protocol::{
    ClientFrame, CloseCode, EventFrame, From, Position, Reconnect, Row, ServerFrame, backoff_delay,
};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("websocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("the server closed with {code:?} ({code_num}); retrying cannot help")]
    Fatal { code: Option<CloseCode>, code_num: u16 },
    #[error("protocol: {0}")]
    Protocol(String),
    /// The server closed the connection (with this code) before it was established.
    #[error("closed by the server with {0}")]
    Closed(u16),
}

/// What a [`Subscriber`] hands its caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// Connected (or reconnected); the head of the user's stream.
    Connected { position: Position },
    /// Current rows, as of `position` (first subscription, or after `resync_required`).
    Snapshot { position: Position, rows: std::collections::BTreeMap<String, Vec<Row>> },
    /// One change, never seen before by this subscriber.
    Event(Box<EventFrame>),
    /// The connection dropped; the next call reconnects after `retry_in` and resumes.
    Disconnected { code: Option<u16>, retry_in: Duration },
}

/// What to subscribe to and how to reach the server.
#[derive(Debug, Clone)]
pub struct Options {
    /// `ws://host:port/v1/ws`
    pub url: String,
    pub token: String,
    pub topics: Vec<String>,
    pub filter: Option<Row>,
    /// Where to start: `None` means a snapshot.
    pub from: Option<Position>,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
}

impl Options {
    pub fn new(url: impl Into<String>, token: impl Into<String>, topics: Vec<String>) -> Self {
        Self {
            url: url.into(),
            token: token.into(),
            topics,
            filter: None,
            from: None,
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(30),
        }
    }
}

/// One subscription kept alive across reconnects.
pub struct Subscriber {
    opts: Options,
    socket: Option<Socket>,
    /// The last change handed out (or the snapshot's position).
    position: Option<Position>,
    attempt: u32,
    /// Wait this long before the next connect (set when a connection drops).
    retry_delay: Duration,
    /// Changes dropped because they were already handed out (at-least-once across reconnects).
    pub duplicates_dropped: u64,
    /// Gaps seen (a `seq` jump on an unfiltered subscription); each one triggers a resume.
    pub gaps_detected: u64,
}

const SUB_ID: &str = "s1";

impl Subscriber {
    pub fn new(opts: Options) -> Self {
        let position = opts.from.clone();
        Self {
            opts,
            socket: None,
            position,
            attempt: 0,
            retry_delay: Duration::ZERO,
            duplicates_dropped: 0,
            gaps_detected: 0,
        }
    }

    pub fn position(&self) -> Option<&Position> {
        self.position.as_ref()
    }

    /// Is every change of the user's stream expected (so `seq` must be contiguous)?
    fn sees_everything(&self) -> bool {
        self.opts.filter.is_none() && self.opts.topics.iter().any(|t| t == "*")
    }

    async fn connect(&mut self) -> Result<Position, ClientError> {
        let mut request = self.opts.url.as_str().into_client_request()?;
        let header = format!("Bearer {}", self.opts.token)
            .parse()
            .map_err(|_| ClientError::Protocol("token is not a valid header value".into()))?;
        request.headers_mut().insert("authorization", header);
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;
        let welcome = next_frame(&mut socket).await?;
        let ServerFrame::Welcome { position, .. } = welcome else {
            return Err(ClientError::Protocol(format!("expected welcome, got {welcome:?}")));
        };
        let from = match &self.position {
            Some(p) => From::Position(p.clone()),
            None => From::Snapshot,
        };
        let sub = ClientFrame::Subscribe {
            id: SUB_ID.into(),
            topics: self.opts.topics.clone(),
            filter: self.opts.filter.clone(),
            from: Some(from),
        };
        let text = serde_json::to_string(&sub).map_err(|e| ClientError::Protocol(e.to_string()))?;
        socket.send(Message::Text(text.into())).await?;
        self.socket = Some(socket);
        Ok(position)
    }

    /// The next update. Reconnects (with backoff and jitter) as the close codes say;
    /// returns an error only when retrying cannot help.
    pub async fn next(&mut self) -> Result<Update, ClientError> {
        loop {
            if self.socket.is_none() {
                tokio::time::sleep(std::mem::take(&mut self.retry_delay)).await;
                match self.connect().await {
                    Ok(position) => {
                        self.attempt = 0;
                        return Ok(Update::Connected { position });
                    }
                    // Closed before the welcome: the close code's rule applies as for any
                    // other close (4008 during a burst: at once; 4001: never).
                    Err(ClientError::Closed(code)) => return self.dropped(Some(code)),
                    Err(ClientError::Ws(e)) => {
                        tracing::debug!(error = %e, "connect failed");
                        let retry_in = self.backoff();
                        tokio::time::sleep(retry_in).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            let socket = self.socket.as_mut().expect("connected above");
            let msg = match tokio::time::timeout(Duration::from_secs(35), socket.next()).await {
                Ok(Some(Ok(m))) => m,
                Ok(Some(Err(_)) | None) | Err(_) => return self.dropped(None),
            };
            let text = match msg {
                Message::Text(t) => t,
                Message::Close(frame) => return self.dropped(frame.map(|f| u16::from(f.code))),
                _ => continue,
            };
            let frame: ServerFrame =
                serde_json::from_str(&text).map_err(|e| ClientError::Protocol(e.to_string()))?;
            match frame {
                ServerFrame::Snapshot { position, rows, .. } => {
                    self.position = Some(position.clone());
                    return Ok(Update::Snapshot { position, rows });
                }
                ServerFrame::ResyncRequired { .. } => {
                    // Start over with a snapshot on the same connection.
                    self.position = None;
                    let sub = ClientFrame::Subscribe {
                        id: SUB_ID.into(),
                        topics: self.opts.topics.clone(),
                        filter: self.opts.filter.clone(),
                        from: Some(From::Snapshot),
                    };
                    let text =
                        serde_json::to_string(&sub).map_err(|e| ClientError::Protocol(e.to_string()))?;
                    socket.send(Message::Text(text.into())).await?;
                }
                ServerFrame::Event(ev) => {
                    let last = self.position.as_ref().filter(|p| p.epoch == ev.epoch).map(|p| p.seq);
                    if let Some(last) = last {
                        if ev.seq <= last {
                            self.duplicates_dropped += 1;
                            continue;
                        }
                        if self.sees_everything() && ev.seq != last + 1 {
                            // Never hand out a gap: resume from what was applied.
                            self.gaps_detected += 1;
                            tracing::warn!(last, got = ev.seq, "gap detected; resuming");
                            self.socket = None;
                            continue;
                        }
                    }
                    self.position = Some(ev.position());
                    return Ok(Update::Event(Box::new(ev)));
                }
                ServerFrame::Heartbeat { position, .. } => {
                    // A filtered subscriber advances its resume point with heartbeats.
                    let advances = self
                        .position
                        .as_ref()
                        .is_some_and(|p| p.epoch == position.epoch && position.seq > p.seq);
                    if advances && !self.sees_everything() {
                        self.position = Some(position);
                    }
                }
                ServerFrame::Error { code, message, .. } => {
                    return Err(ClientError::Protocol(format!("{code}: {message}")));
                }
                _ => {}
            }
        }
    }

    fn backoff(&mut self) -> Duration {
        let d =
            backoff_delay(self.attempt, self.opts.backoff_base, self.opts.backoff_cap, rand::random::<f64>());
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    fn dropped(&mut self, code: Option<u16>) -> Result<Update, ClientError> {
        self.socket = None;
        let rule = code.and_then(CloseCode::from_code).map(CloseCode::reconnect);
        let retry_in = match (rule, code) {
            (Some(Reconnect::Never), Some(n)) => {
                return Err(ClientError::Fatal { code: CloseCode::from_code(n), code_num: n });
            }
            (Some(Reconnect::Immediately), _) => Duration::ZERO,
            (Some(Reconnect::AfterTokenRefresh), Some(n)) => {
                // The caller must supply a fresh token; this client has no credentials.
                return Err(ClientError::Fatal { code: CloseCode::from_code(n), code_num: n });
            }
            _ => self.backoff(),
        };
        self.retry_delay = retry_in;
        Ok(Update::Disconnected { code, retry_in })
    }
}

async fn next_frame(socket: &mut Socket) -> Result<ServerFrame, ClientError> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(t))) => {
                return serde_json::from_str(&t).map_err(|e| ClientError::Protocol(e.to_string()));
            }
            Some(Ok(Message::Close(f))) => {
                let n = f.map(|f| u16::from(f.code)).unwrap_or(u16::from(WsCloseCode::Abnormal));
                return Err(ClientError::Closed(n));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => return Err(ClientError::Protocol("connection closed before welcome".into())),
        }
    }
}
