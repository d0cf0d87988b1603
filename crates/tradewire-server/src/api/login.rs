//! `POST /v1/auth/login`: a username and password for a token.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::credentials::Passwords;
use crate::db::DbError;
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
    ApiJson(body): ApiJson<Login>,
) -> ApiResult<Json<Value>> {
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
    // Hashing runs on the blocking pool: Argon2 is deliberately slow. An unknown username
    // takes as long as a wrong password (see `Passwords`).
    let password = body.password;
    let user = tokio::task::spawn_blocking(move || {
        let (id, hash) = found.unzip();
        passwords.verify(hash.as_deref(), &password).then_some(id).flatten()
    })
    .await
    .map_err(|_| ApiError::from(DbError::Join))?;
    let Some(user_id) = user else {
        return Err(ApiError::unauthorized("unknown username or wrong password"));
    };
    let (token, claims) = state.tokens().issue(&user_id, &body.username, None);
    Ok(Json(json!({"token": token, "user_id": user_id, "expires_at": claims.expires_at_ms()})))
}
