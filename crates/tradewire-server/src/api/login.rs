//! `POST /v1/auth/login`: a username and password for a token.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::throttle::LoginThrottle;
use crate::credentials::Passwords;
use crate::errors::{ApiError, ApiResult};
use crate::http::ApiJson;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub struct Login {
    username: String,
    password: String,
}

pub async fn login(
    State(state): State<AppState>,
    State(passwords): State<Arc<Passwords>>,
    State(throttle): State<Arc<LoginThrottle>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(body): ApiJson<Login>,
) -> ApiResult<Json<Value>> {
    throttle
        .attempt(&body.username, peer.ip())
        .map_err(|wait| ApiError::rate_limited("too many login attempts; try again later", wait))?;
    let username = body.username.clone();
    let found: Option<(String, String)> = state
        .db()
        .read(move |c| {
            let row = c.query_opt(
                "SELECT id, password_hash FROM users WHERE username = ?1",
                crate::sql_params![&username],
            )?;
            Ok(row.map(|r| {
                let mut r = r.into_iter().map(|c| c.into_text().unwrap_or_default());
                (r.next().unwrap_or_default(), r.next().unwrap_or_default())
            }))
        })
        .await?;
    // An unknown username takes as long as a wrong password (see `Passwords`).
    let (id, hash) = found.unzip();
    let matched = passwords.check(hash, body.password).await;
    let Some(user_id) = id.filter(|_| matched) else {
        throttle.failed(&body.username);
        return Err(ApiError::unauthorized("unknown username or wrong password"));
    };
    throttle.succeeded(&body.username);
    let (token, claims) = state.tokens().issue(&user_id, &body.username, None);
    Ok(Json(json!({"token": token, "user_id": user_id, "expires_at": claims.expires_at_ms()})))
}
