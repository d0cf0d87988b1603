//! `GET /v1/sse`: one subscription as a Server-Sent Events stream. Each change is
//! `id: <epoch>:<seq>`, `event: <main domain event or change>`, `data: <event object>`;
//! `Last-Event-ID` (or `?from=`) resumes. Heartbeat events carry the stream position as
//! their id, so a filtered stream's resume point advances too.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::mpsc;
use tracing::Instrument;
use tradewire_protocol::{From, ServerFrame};

use super::selection::Selection;
use super::session::{Outgoing, Session, Transport};
use super::ws::refused;
use super::{Gateway, parse_from, parse_selection_query};
use crate::clock::now_ms;
use crate::errors::{ApiError, ApiResult, StreamEnd};
use crate::http::{ApiQuery, request_token};

/// The subscription id SSE frames carry.
const SSE_SUB: &str = "sse";

#[derive(Debug, Deserialize)]
pub struct SseQuery {
    topics: Option<String>,
    #[serde(rename = "where")]
    filter: Option<String>,
    from: Option<String>,
    /// EventSource cannot set headers, so the token may come here.
    token: Option<String>,
}

/// The writing end of an SSE stream: the response body reads from `tx`'s receiver.
struct SseTransport {
    tx: mpsc::Sender<Event>,
}

impl SseTransport {
    async fn push(&self, event: Event) -> Result<(), StreamEnd> {
        self.tx.send(event).await.map_err(|_| StreamEnd::Gone)
    }
}

fn frame_event(frame: &ServerFrame) -> Event {
    let name = match frame {
        ServerFrame::Snapshot { .. } => "snapshot",
        ServerFrame::ResyncRequired { .. } => "resync_required",
        ServerFrame::Heartbeat { .. } => "heartbeat",
        ServerFrame::Error { .. } => "error",
        _ => "message",
    };
    Event::default().event(name).data(frame.to_json())
}

impl Transport for SseTransport {
    fn peer_gone(&self) -> impl Future<Output = ()> + Send + 'static {
        // The response body was dropped: the client is gone.
        let tx = self.tx.clone();
        async move { tx.closed().await }
    }

    async fn send(&mut self, out: Outgoing<'_>) -> Result<(), StreamEnd> {
        let event = match out {
            // SSE has no `subscribed`: the stream itself is the subscription.
            Outgoing::Frame(ServerFrame::Subscribed { .. }) => return Ok(()),
            Outgoing::Frame(frame) => frame_event(&frame),
            Outgoing::Market(msg) => {
                metrics::counter!("tradewire_market_delivered_total").increment(1);
                Event::default()
                    .event("market")
                    .data(std::str::from_utf8(&msg.frame).map_err(|_| StreamEnd::Gone)?)
            }
            Outgoing::Event { change, .. } => {
                metrics::counter!("tradewire_events_delivered_total").increment(1);
                let body = change.body();
                let name = change.events.first().copied().unwrap_or(change.op.as_str());
                Event::default()
                    .id(format!("{}:{}", change.epoch, change.seq))
                    .event(name)
                    .data(std::str::from_utf8(&body).map_err(|_| StreamEnd::Gone)?)
            }
        };
        self.push(event).await
    }
}

pub async fn handler(
    State(gateway): State<Gateway>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiQuery(q): ApiQuery<SseQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    gateway.check_origin(&headers)?;
    let app = gateway.app().clone();
    let token = request_token(&headers, q.token).ok_or_else(|| ApiError::unauthorized("missing token"))?;
    let claims = app.tokens().verify(&token)?;
    let admission = gateway.admission();
    let tickets = [
        admission.address(peer.ip()).map_err(refused)?,
        admission.user(&claims.sub).map_err(refused)?,
        admission.sse().map_err(refused)?,
    ];
    let (topics, filter) = parse_selection_query(q.topics.as_deref(), q.filter.as_deref())?;
    let selection = Selection::new(app.catalog(), Some(app.market_bus()), &topics, filter.as_ref())?;
    let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let from = match last_event_id.or(q.from.as_deref()) {
        Some(text) => parse_from(text)?,
        None => From::Snapshot,
    };
    let session = Session::open(gateway.clone(), &claims.sub).await?;
    let (tx, rx) = mpsc::channel::<Event>(256);
    let span = tracing::info_span!("sse", user = %claims.name, session = session.id());
    let heartbeat = gateway.settings().heartbeat;
    let stream = stream(gateway, session, selection, from, SseTransport { tx });
    app.tracker().spawn(
        async move {
            stream.await;
            drop(tickets);
        }
        .instrument(span),
    );
    let events =
        futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx)) },
        );
    let keep_alive = KeepAlive::new().interval(heartbeat);
    Ok(Sse::new(events).keep_alive(keep_alive).into_response())
}

async fn stream(
    gateway: Gateway,
    mut session: Session,
    selection: Selection,
    from: From,
    mut out: SseTransport,
) {
    metrics::gauge!("tradewire_connections", "transport" => "sse").increment(1.0);
    let end = serve(&gateway, &mut session, selection, from, &mut out).await;
    if let Some(code) = end.sse_close() {
        // Tell the client why the stream ends; it resumes with Last-Event-ID.
        let data = serde_json::json!({"op": "close", "code": code}).to_string();
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            out.push(Event::default().event("close").data(data)),
        )
        .await;
    }
    metrics::gauge!("tradewire_connections", "transport" => "sse").decrement(1.0);
}

async fn serve(
    gateway: &Gateway,
    session: &mut Session,
    selection: Selection,
    from: From,
    out: &mut SseTransport,
) -> StreamEnd {
    let shutdown = gateway.app().sessions_close().clone();
    let overflowed = session.queue().overflowed();
    tokio::pin!(overflowed);
    let subscribe = async {
        match session.subscribe(SSE_SUB, selection, from, out).await {
            Ok(Ok(())) => None,
            Ok(Err(rejection)) => {
                let _ = out.send(Outgoing::Frame(rejection.frame(Some(SSE_SUB)))).await;
                Some(StreamEnd::Gone)
            }
            Err(stop) => Some(stop),
        }
    };
    tokio::select! {
        r = subscribe => if let Some(stop) = r { return stop },
        () = shutdown.cancelled() => return StreamEnd::Shutdown,
        () = &mut overflowed => return StreamEnd::SlowConsumer,
    }
    if session.subscriptions() == 0 {
        // resync_required was sent: the stream has nothing more to say.
        return StreamEnd::Gone;
    }
    let market = session.market_inbox();
    let every = gateway.settings().heartbeat;
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        let step = tokio::select! {
            biased;
            () = shutdown.cancelled() => Err(StreamEnd::Shutdown),
            () = &mut overflowed => Err(StreamEnd::SlowConsumer),
            () = out.tx.closed() => Err(StreamEnd::Gone),
            _ = heartbeat.tick() => {
                let position = session.position();
                let hb = ServerFrame::Heartbeat { position: position.clone(), ts: now_ms() };
                out.push(frame_event(&hb).id(position.to_string())).await
            }
            () = market.ready() => {
                let mut r = Ok(());
                for msg in market.take() {
                    r = out.send(Outgoing::Market(&msg)).await;
                    if r.is_err() {
                        break;
                    }
                }
                r
            }
            change = session.queue().recv() => match change {
                Some(change) => {
                    tokio::select! {
                        r = session.deliver(&change, out) => r.and_then(|()| match session.subscriptions() {
                            // A truncate ended the stream's subscription (`resync_required`
                            // was sent): the stream has nothing more to say.
                            0 => Err(StreamEnd::Gone),
                            _ => Ok(()),
                        }),
                        () = &mut overflowed => Err(StreamEnd::SlowConsumer),
                    }
                }
                None => Err(StreamEnd::Gone),
            },
        };
        if let Err(stop) = step {
            return stop;
        }
    }
}
