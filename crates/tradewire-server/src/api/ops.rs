//! Operational endpoints (`/healthz`, `/readyz`, `/metrics`) and market reference data.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::errors::ApiResult;
use crate::http::AuthUser;
use crate::state::AppState;

/// The process is up.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The server can serve: the database answers, the pump is running, and no supervised
/// background task is down (`down` names each with its cause).
pub async fn readyz(State(state): State<AppState>) -> Response {
    let db = state.db().ping().await.is_ok();
    let pump = state.pump_running();
    let down = state.health().down_components();
    let mut body = json!({"database": db, "pump": pump});
    let status = if db && pump && down.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    if !down.is_empty() {
        body["down"] = json!(down);
    }
    (status, Json(body)).into_response()
}

/// Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let hub = state.hub().stats();
    metrics::gauge!("tradewire_hub_sessions").set(hub.sessions as f64);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics().render())
        .into_response()
}

/// `GET /v1/market/symbols`: the instruments and their trading rules.
pub async fn symbols(State(state): State<AppState>, _user: AuthUser) -> ApiResult<Json<Value>> {
    let items = state
        .db()
        .read(|c| {
            let table = crate::db::catalog::instruments_table();
            let sql = format!(
                "SELECT {} FROM instruments ORDER BY symbol",
                crate::db::rows::json_row_expr(c.dialect(), &table, "")
            );
            Ok(c.query(&sql, &[])?
                .into_iter()
                .filter_map(|r| r.into_iter().next()?.into_text())
                .filter_map(|t| serde_json::from_str::<Value>(&t).ok())
                .collect::<Vec<_>>())
        })
        .await?;
    Ok(Json(json!({"items": items})))
}

/// `GET /v1/market/{symbol}/ticker|book|klines`: current market data from the running
/// market source.
pub async fn market_view(
    State(state): State<AppState>,
    _user: AuthUser,
    axum::extract::Path((symbol, view)): axum::extract::Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    use crate::errors::ApiError;
    use crate::market_source::{MarketView, SourceUnavailable};
    let view = match view.as_str() {
        "ticker" => MarketView::Ticker,
        "book" => MarketView::Book,
        "klines" => MarketView::Klines,
        _ => return Err(ApiError::not_found("market view")),
    };
    let source = state.market_source().ok_or(SourceUnavailable)?;
    match source.view(&symbol, view).await? {
        Some(Value::Array(items)) => Ok(Json(json!({"items": items}))),
        Some(v) => Ok(Json(v)),
        None => Err(ApiError::not_found("symbol")),
    }
}
