//! The REST API of PROTOCOL.md: login, reads of every private table, commands on bots,
//! orders and positions, market reference data, and the operational endpoints.
//!
//! Handlers write through `Db::write` (one immediate transaction each); the capture
//! triggers turn those writes into changes like any other writer's. Nothing here talks to
//! the hub or to sessions.

pub mod bots;
pub mod login;
pub mod ops;
pub mod read;
pub mod testing;
pub mod throttle;
pub mod trading;

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use axum::routing::{get, post};
use tradewire_protocol::Row;

use self::throttle::{LoginThrottle, ThrottleLimits};
use crate::credentials::Passwords;
use crate::db::{Catalog, Sql};
use crate::errors::{ApiError, ApiResult};
use crate::http::AuthUser;
use crate::state::AppState;

/// What the REST API is told by the configuration.
#[derive(Debug, Clone, Default)]
pub struct ApiSettings {
    /// `/v1/testing/*` answers (demo mode turns it on); otherwise 404.
    pub testing_endpoints: bool,
    /// Login throttling.
    pub login: ThrottleLimits,
    /// Demo mode: `GET /v1/demo` lists the demo logins (404 otherwise).
    pub demo: bool,
}

/// The REST API's router state: the shared services plus its own settings.
#[derive(Clone)]
pub struct Api {
    app: AppState,
    settings: Arc<ApiSettings>,
    passwords: Arc<Passwords>,
    throttle: Arc<LoginThrottle>,
}

impl FromRef<Api> for AppState {
    fn from_ref(api: &Api) -> AppState {
        api.app.clone()
    }
}

impl FromRef<Api> for Arc<ApiSettings> {
    fn from_ref(api: &Api) -> Arc<ApiSettings> {
        api.settings.clone()
    }
}

impl FromRef<Api> for Arc<Passwords> {
    fn from_ref(api: &Api) -> Arc<Passwords> {
        api.passwords.clone()
    }
}

impl FromRef<Api> for Arc<LoginThrottle> {
    fn from_ref(api: &Api) -> Arc<LoginThrottle> {
        api.throttle.clone()
    }
}

pub fn router(app: AppState, settings: ApiSettings) -> Router {
    let throttle = Arc::new(LoginThrottle::new(settings.login));
    let state = Api { app, settings: Arc::new(settings), passwords: Arc::new(Passwords::new()), throttle };
    Router::new()
        .route("/v1/auth/login", post(login::login))
        .route("/v1/bots", get(read::list_bots).post(bots::create))
        .route("/v1/bots/{id}", get(read::get_bot).patch(bots::update).delete(bots::remove))
        .route("/v1/bots/{id}/{action}", post(bots::command))
        .route("/v1/portfolios", get(read::list_portfolios))
        .route("/v1/portfolios/{id}", get(read::get_portfolio))
        .route("/v1/positions", get(read::list_positions))
        .route("/v1/positions/{id}", get(read::get_position))
        .route("/v1/positions/{id}/close", post(trading::close_position))
        .route("/v1/orders", get(read::list_orders).post(trading::place_order))
        .route("/v1/orders/{id}", get(read::get_order).delete(trading::cancel_order))
        .route("/v1/fills", get(read::list_fills))
        .route("/v1/lifecycle", get(read::list_lifecycle))
        .route("/v1/signals", get(read::list_signals))
        .route("/v1/risk", get(read::list_risk))
        .route("/v1/pnl", get(read::list_pnl))
        .route("/v1/market/symbols", get(ops::symbols))
        .route("/v1/market/{symbol}/{view}", get(ops::market_view))
        .route("/v1/testing/simulate-signal", post(testing::simulate_signal))
        .route("/v1/demo", get(testing::demo_logins))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .with_state(state)
}

/// A new id: `<prefix>_<uuid v7>` (time-ordered, so rowid and id order agree).
pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// What one row of a topic is called in a "not found" answer.
fn noun(topic: &str) -> &'static str {
    match topic {
        "bots" => "bot",
        "portfolios" => "portfolio",
        "positions" => "position",
        "orders" => "order",
        "fills" => "fill",
        "signals" => "signal",
        _ => "row",
    }
}

/// One of `user`'s rows of `topic`, read inside a write transaction, or 404.
pub(crate) fn owned_row(
    conn: &mut dyn Sql,
    catalog: &Catalog,
    topic: &str,
    user: &str,
    id: &str,
) -> ApiResult<Row> {
    let table = catalog.topic(topic).ok_or_else(|| ApiError::not_found(topic))?;
    crate::db::rows::get_row(conn, table, user, id)?.ok_or_else(|| ApiError::not_found(noun(topic)))
}

/// Apply `change` to one of `user`'s rows of `topic` in one write transaction, and answer
/// with the row as it is afterwards. `change` sees the row as it was and may refuse (a
/// conflict) or do nothing; someone else's row is "not found".
pub(crate) async fn change_owned_row<F>(
    state: &AppState,
    user: AuthUser,
    topic: &'static str,
    id: String,
    mut change: F,
) -> ApiResult<axum::Json<Row>>
where
    F: FnMut(&mut dyn Sql, &Row, &str) -> ApiResult<()> + Send + 'static,
{
    let catalog = state.catalog().clone();
    state
        .db()
        .write(move |tx| {
            let before = owned_row(tx, &catalog, topic, &user.id, &id)?;
            change(tx, &before, &user.id)?;
            owned_row(tx, &catalog, topic, &user.id, &id)
        })
        .await
        .map(axum::Json)
}
