//! `/v1/testing/*`: endpoints for demos and tests, enabled in demo mode or by
//! `testing_endpoints = true`; otherwise they answer 404.

use axum::Json;
use axum::extract::State;
use rust_decimal::Decimal;
use serde::Deserialize;
use tradewire_protocol::Row;
use tradewire_sim::Direction;

use super::ApiJson;
use super::auth::AuthUser;
use super::trading::{into_row, refusal};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::sim::Refusal;

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
    user: AuthUser,
    ApiJson(req): ApiJson<SimulateSignal>,
) -> ApiResult<Json<Row>> {
    if !(state.config.testing_endpoints || state.config.demo) {
        return Err(ApiError::not_found("endpoint"));
    }
    let confidence = req.confidence.unwrap_or(Decimal::new(9, 1));
    if !(Decimal::ZERO..=Decimal::ONE).contains(&confidence) {
        return Err(ApiError::bad_request("`confidence` is from 0 to 1"));
    }
    let sim = state.sim.as_ref().ok_or_else(|| refusal(Refusal::Unavailable))?;
    let row = sim.signal(&user.id, &req.bot_id, req.direction, confidence).await.map_err(refusal)?;
    Ok(Json(into_row(row)))
}
