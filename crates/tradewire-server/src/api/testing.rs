//! `/v1/testing/*`: endpoints for demos and tests, enabled in demo mode or by
//! `testing_endpoints = true` (see [`ApiSettings`]); otherwise they answer 404.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use rust_decimal::Decimal;
use serde::Deserialize;
use tradewire_protocol::Row;
use tradewire_sim::Direction;

use super::ApiSettings;
use super::trading::into_row;
use crate::errors::{ApiError, ApiResult};
use crate::http::ApiJson;
use crate::http::AuthUser;
use crate::sim::Refusal;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulateSignal {
    bot_id: String,
    direction: Direction,
    /// 0 to 1; default 0.9.
    confidence: Option<Decimal>,
}

/// `POST /v1/testing/simulate-signal`: make one of the caller's bots act on a signal now.
/// Answers with the recorded signal.
pub async fn simulate_signal(
    State(state): State<AppState>,
    State(settings): State<Arc<ApiSettings>>,
    user: AuthUser,
    ApiJson(req): ApiJson<SimulateSignal>,
) -> ApiResult<Json<Row>> {
    if !settings.testing_endpoints {
        return Err(ApiError::not_found("endpoint"));
    }
    let confidence = req.confidence.unwrap_or(Decimal::new(9, 1));
    if !(Decimal::ZERO..=Decimal::ONE).contains(&confidence) {
        return Err(ApiError::bad_request("`confidence` is from 0 to 1"));
    }
    let sim = state.sim().ok_or(Refusal::Unavailable)?;
    let row = sim.signal(&user.id, &req.bot_id, req.direction, confidence).await?;
    Ok(Json(into_row(row)))
}

/// `GET /v1/demo`: the demo logins, for the login page; 404 outside demo mode (the page then
/// shows no passwords).
pub async fn demo_logins(State(settings): State<Arc<ApiSettings>>) -> ApiResult<Json<serde_json::Value>> {
    if !settings.demo {
        return Err(ApiError::not_found("endpoint"));
    }
    let users: Vec<serde_json::Value> = crate::db::seed::DEMO_USERS
        .iter()
        .map(|(username, password)| serde_json::json!({"username": username, "password": password}))
        .collect();
    Ok(Json(serde_json::json!({"users": users})))
}
