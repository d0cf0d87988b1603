//! `POST /v1/auth/login` and the `AuthUser` extractor every private endpoint uses.

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiJson;
use crate::app::AppState;
use crate::auth::{TokenError, verify_password};
use crate::error::{ApiError, ApiResult};

/// The token of an `Authorization: Bearer …` header.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: String,
    pub name: String,
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer_token(&parts.headers)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <token>"))?;
        let claims = state.tokens.verify(token).map_err(|e| match e {
            TokenError::Expired => ApiError::unauthorized("token expired"),
            TokenError::Invalid => ApiError::unauthorized("token invalid"),
        })?;
        Ok(Self { id: claims.sub, name: claims.name })
    }
}

#[derive(Debug, Deserialize)]
pub struct Login {
    username: String,
    password: String,
}

pub async fn login(State(state): State<AppState>, ApiJson(body): ApiJson<Login>) -> ApiResult<Json<Value>> {
    let username = body.username.clone();
    let found: Option<(String, String)> = state
        .db
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
    // is checked against a dummy hash, so it takes as long as a wrong password.
    let password = body.password;
    let dummy = state.dummy_password_hash.clone();
    let user = tokio::task::spawn_blocking(move || match found {
        Some((id, hash)) => verify_password(&hash, &password).then_some(id),
        None => {
            let _ = verify_password(&dummy, &password);
            None
        }
    })
    .await
    .map_err(|_| ApiError::from(crate::db::DbError::Join))?;
    let Some(user_id) = user else {
        return Err(ApiError::unauthorized("unknown username or wrong password"));
    };
    let (token, claims) = state.tokens.issue(&user_id, &body.username, None);
    Ok(Json(json!({"token": token, "user_id": user_id, "expires_at": claims.expires_at_ms()})))
}
