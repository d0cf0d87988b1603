//! The REST API of PROTOCOL.md: login, reads of every private table, commands on bots,
//! orders and positions, market reference data, and the operational endpoints.
//!
//! Handlers write through `Db::write` (one immediate transaction each); the capture
//! triggers turn those writes into changes like any other writer's. Nothing here talks to
//! the hub or to sessions.

pub mod auth;
pub mod bots;
pub mod ops;
pub mod read;
pub mod testing;
pub mod trading;

use axum::Router;
use axum::routing::{get, post};

use crate::app::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/auth/login", post(auth::login))
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
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
}

/// A new id: `<prefix>_<uuid v7>` (time-ordered, so rowid and id order agree).
pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// One of `user`'s rows of `topic`, read inside a write transaction, or 404.
pub(crate) fn owned_row(
    conn: &mut dyn crate::db::Sql,
    state_catalog: &crate::db::Catalog,
    topic: &str,
    user: &str,
    id: &str,
) -> Result<tradewire_protocol::Row, crate::error::ApiError> {
    let table = state_catalog.topic(topic).ok_or_else(|| crate::error::ApiError::not_found(topic))?;
    crate::db::rows::get_row(conn, table, user, id)?
        .ok_or_else(|| crate::error::ApiError::not_found(topic.trim_end_matches('s')))
}

/// Apply `change` to one of `user`'s rows of `topic` in one write transaction, and answer
/// with the row as it is afterwards. `change` sees the row as it was and may refuse (a
/// conflict) or do nothing; someone else's row is "not found".
pub(crate) async fn change_owned_row<F>(
    state: &crate::app::AppState,
    user: auth::AuthUser,
    topic: &'static str,
    id: String,
    change: F,
) -> crate::error::ApiResult<axum::Json<tradewire_protocol::Row>>
where
    F: FnOnce(&mut dyn crate::db::Sql, &tradewire_protocol::Row, &str) -> crate::error::ApiResult<()>
        + Send
        + 'static,
{
    let catalog = state.db.catalog().clone();
    state
        .db
        .write(move |tx| {
            let before = owned_row(tx, &catalog, topic, &user.id, &id)?;
            change(tx, &before, &user.id)?;
            owned_row(tx, &catalog, topic, &user.id, &id)
        })
        .await
        .map(axum::Json)
}

/// `Json<T>` whose rejection is our JSON error body (400 `bad_request`, or 413
/// `payload_too_large`), not axum's plain-text one.
pub struct ApiJson<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = crate::error::ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        use axum::extract::rejection::JsonRejection;
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(JsonRejection::BytesRejection(e))
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(crate::error::ApiError::new(
                    axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                    tradewire_protocol::ErrorCode::PayloadTooLarge,
                    "request body too large",
                ))
            }
            Err(e) => Err(crate::error::ApiError::bad_request(e.body_text())),
        }
    }
}

/// `Query<T>` whose rejection is our JSON error body.
pub struct ApiQuery<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = crate::error::ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Self(v))
            .map_err(|e| crate::error::ApiError::bad_request(e.body_text()))
    }
}
