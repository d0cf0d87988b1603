//! `GET /v1/sse`: one subscription as a Server-Sent Events stream. Each change is
//! `id: <epoch>:<seq>`, `event: <main domain event or change>`, `data: <event object>`;
//! `Last-Event-ID` (or `?from=`) resumes. Heartbeat events carry the stream position as
//! their id, so a filtered stream's resume point advances too.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::mpsc;
use tracing::Instrument;
use tradewire_protocol::{From, ServerFrame};

use super::session::{Out, Output, Plan, Session, Stop};
use super::{parse_from, parse_query_plan};
use crate::api::ApiQuery;
use crate::api::auth::bearer_token;
use crate::app::AppState;
use crate::db::now_ms;
use crate::error::{ApiError, ApiResult};

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

struct SseOut {
    tx: mpsc::Sender<Event>,
}

impl SseOut {
    async fn push(&self, event: Event) -> Result<(), Stop> {
        self.tx.send(event).await.map_err(|_| Stop::Gone)
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

impl Output for SseOut {
    async fn send(&mut self, out: Out<'_>) -> Result<(), Stop> {
        let event = match out {
            // SSE has no `subscribed`: the stream itself is the subscription.
            Out::Frame(ServerFrame::Subscribed { .. }) => return Ok(()),
            Out::Frame(frame) => frame_event(&frame),
            Out::Market(msg) => {
                metrics::counter!("tradewire_market_delivered_total").increment(1);
                Event::default()
                    .event("market")
                    .data(std::str::from_utf8(&msg.frame).map_err(|_| Stop::Gone)?)
            }
            Out::Event { change, .. } => {
                metrics::counter!("tradewire_events_delivered_total").increment(1);
                let body = change.body();
                let name = change.events.first().copied().unwrap_or(change.op.as_str());
                Event::default()
                    .id(format!("{}:{}", change.epoch, change.seq))
                    .event(name)
                    .data(std::str::from_utf8(&body).map_err(|_| Stop::Gone)?)
            }
        };
        self.push(event).await
    }
}

pub async fn handler(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<SseQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let token = bearer_token(&headers)
        .map(str::to_owned)
        .or(q.token)
        .ok_or_else(|| ApiError::unauthorized("missing token"))?;
    let claims = state.tokens.verify(&token).map_err(|e| ApiError::unauthorized(e.to_string()))?;
    let (topics, filter) = parse_query_plan(q.topics.as_deref(), q.filter.as_deref())?;
    let plan = Plan::new(state.db.catalog(), Some(&state.market), &topics, filter.as_ref())
        .map_err(|r| ApiError::new(axum::http::StatusCode::BAD_REQUEST, r.code, r.message))?;
    let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let from = match last_event_id.or(q.from.as_deref()) {
        Some(text) => parse_from(text)?,
        None => From::Snapshot,
    };
    let session = Session::open(state.clone(), &claims.sub).await?;
    let (tx, rx) = mpsc::channel::<Event>(256);
    let span = tracing::info_span!("sse", user = %claims.name, session = session.id());
    state.tracker.spawn(stream(state.clone(), session, plan, from, SseOut { tx }).instrument(span));
    let events =
        futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx)) },
        );
    let keep_alive = KeepAlive::new().interval(state.config.heartbeat());
    Ok(Sse::new(events).keep_alive(keep_alive).into_response())
}

async fn stream(state: AppState, mut session: Session, plan: Plan, from: From, mut out: SseOut) {
    metrics::gauge!("tradewire_connections", "transport" => "sse").increment(1.0);
    let end = serve(&state, &mut session, plan, from, &mut out).await;
    let code = match end {
        Stop::SlowConsumer => Some("slow_consumer"),
        Stop::Shutdown => Some("going_away"),
        Stop::Gone => None,
    };
    if let Some(code) = code {
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

async fn serve(state: &AppState, session: &mut Session, plan: Plan, from: From, out: &mut SseOut) -> Stop {
    let shutdown = state.sessions_close.clone();
    let overflowed = session.queue().overflowed();
    tokio::pin!(overflowed);
    let subscribe = async {
        match session.subscribe(SSE_SUB, plan, from, out).await {
            Ok(Ok(())) => None,
            Ok(Err(rejection)) => {
                let _ = out.send(Out::Frame(rejection.frame(Some(SSE_SUB)))).await;
                Some(Stop::Gone)
            }
            Err(stop) => Some(stop),
        }
    };
    tokio::select! {
        r = subscribe => if let Some(stop) = r { return stop },
        () = shutdown.cancelled() => return Stop::Shutdown,
        () = &mut overflowed => return Stop::SlowConsumer,
    }
    if session.subscriptions() == 0 {
        // resync_required was sent: the stream has nothing more to say.
        return Stop::Gone;
    }
    let market = session.market_inbox();
    let mut heartbeat = tokio::time::interval_at(
        tokio::time::Instant::now() + state.config.heartbeat(),
        state.config.heartbeat(),
    );
    loop {
        let step = tokio::select! {
            biased;
            () = shutdown.cancelled() => Err(Stop::Shutdown),
            () = &mut overflowed => Err(Stop::SlowConsumer),
            () = out.tx.closed() => Err(Stop::Gone),
            _ = heartbeat.tick() => {
                let position = session.position();
                let hb = ServerFrame::Heartbeat { position: position.clone(), ts: now_ms() };
                out.push(frame_event(&hb).id(position.to_string())).await
            }
            () = market.ready() => {
                let mut r = Ok(());
                for msg in market.take() {
                    r = out.send(Out::Market(&msg)).await;
                    if r.is_err() {
                        break;
                    }
                }
                r
            }
            change = session.queue().recv() => match change {
                Some(change) => {
                    tokio::select! {
                        r = session.deliver(&change, out) => r,
                        () = &mut overflowed => Err(Stop::SlowConsumer),
                    }
                }
                None => Err(Stop::Gone),
            },
        };
        if let Err(stop) = step {
            return stop;
        }
    }
}
