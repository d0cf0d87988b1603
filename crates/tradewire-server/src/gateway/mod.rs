//! The gateway: the transports clients connect with. `ws` (WebSocket), `sse` (Server-Sent
//! Events) and `poll` (`/v1/changes`) all serve one [`session::Session`] model, so the
//! guarantees (order, no gap between snapshot and live, isolation) are written once; how a
//! subscription starts (snapshot, replay, now) is in [`start`].
//!
//! The gateway reads the change log through `changefeed` and receives live changes from
//! the hub; it never writes to the database, and it does not depend on the REST API.

pub mod admission;
pub mod limits;
pub mod origin;
pub mod poll;
pub mod selection;
pub mod session;
pub mod sse;
pub mod start;
pub mod ws;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::FromRef;
use axum::http::HeaderMap;
use axum::routing::get;
use tradewire_protocol::{From, Limits, Row};

use self::admission::{Admission, AdmissionLimits};
use self::origin::AllowedOrigins;
use crate::errors::ApiError;
use crate::state::AppState;

/// What the transports are told by the configuration.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// Heartbeat interval of WebSocket and SSE streams.
    pub heartbeat: Duration,
    /// How long a WebSocket may take to send its `auth` frame.
    pub auth_timeout: Duration,
    /// Largest client frame, subscriptions and client frames per second per connection.
    pub limits: Limits,
    /// Most rows per topic in a snapshot (newest kept).
    pub snapshot_max_rows: usize,
    /// Caps on connections per user and address, SSE streams, unauthenticated sockets.
    pub admission: AdmissionLimits,
    /// Browser pages that may open a WebSocket or an SSE stream (see [`origin`]).
    pub origins: AllowedOrigins,
}

/// The transports' router state: the shared services plus the gateway's settings.
#[derive(Clone)]
pub struct Gateway {
    app: AppState,
    settings: Arc<GatewaySettings>,
    admission: Arc<Admission>,
}

impl Gateway {
    pub fn app(&self) -> &AppState {
        &self.app
    }

    pub fn settings(&self) -> &GatewaySettings {
        &self.settings
    }

    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }

    /// The `Origin` check of a WebSocket upgrade or an SSE request: 403
    /// `origin_not_allowed` for a page the settings do not admit, before anything else.
    pub fn check_origin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        self.settings.origins.check(headers).map_err(|refused| {
            tracing::debug!(%refused, "origin refused");
            ApiError::origin_not_allowed(refused.to_string())
        })
    }
}

impl FromRef<Gateway> for AppState {
    fn from_ref(gateway: &Gateway) -> AppState {
        gateway.app.clone()
    }
}

pub fn router(app: AppState, settings: GatewaySettings) -> Router {
    Router::new()
        .route("/v1/ws", get(ws::handler))
        .route("/v1/sse", get(sse::handler))
        .route("/v1/changes", get(poll::handler))
        .with_state(Gateway {
            app,
            admission: Admission::new(settings.admission),
            settings: Arc::new(settings),
        })
}

/// Parse the `topics` (comma-separated) and `where` (JSON object) query parameters.
pub fn parse_selection_query(
    topics: Option<&str>,
    filter: Option<&str>,
) -> Result<(Vec<String>, Option<Row>), ApiError> {
    let topics: Vec<String> = topics
        .unwrap_or("*")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    let filter = filter
        .map(|w| {
            serde_json::from_str::<Row>(w)
                .map_err(|e| ApiError::invalid_filter(format!("`where` is a JSON object: {e}")))
        })
        .transpose()?;
    Ok((topics, filter))
}

/// Parse a `from` value: `snapshot`, `now`, or `<epoch>:<seq>`.
pub fn parse_from(text: &str) -> Result<From, ApiError> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| ApiError::bad_request("`from` is snapshot, now or <epoch>:<seq>"))
}
