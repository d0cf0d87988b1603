//! The authenticated caller of a request, from its bearer token.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;

use crate::errors::ApiError;
use crate::state::AppState;

/// The token of an `Authorization: Bearer …` header.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

/// The token of a streaming request: the `Authorization` header, else `?token=` (browsers
/// cannot set headers on a WebSocket or an EventSource).
pub fn request_token(headers: &HeaderMap, query: Option<String>) -> Option<String> {
    bearer_token(headers).map(str::to_owned).or(query)
}

/// Query parameters that carry credentials; their values never reach a log.
const SECRET_PARAMS: &[&str] = &["token", "access_token", "apikey"];

/// `uri` for a log line: the path, and the query with every credential replaced by
/// `[redacted]`.
pub fn redacted_uri(uri: &axum::http::Uri) -> String {
    let Some(query) = uri.query() else { return uri.path().to_owned() };
    let parts: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if SECRET_PARAMS.iter().any(|s| s.eq_ignore_ascii_case(k)) => {
                format!("{k}=[redacted]")
            }
            _ => pair.to_owned(),
        })
        .collect();
    format!("{}?{}", uri.path(), parts.join("&"))
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: String,
    pub name: String,
}

impl<S> FromRequestParts<S> for AuthUser
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let token = bearer_token(&parts.headers)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <token>"))?;
        let claims = AppState::from_ref(state).tokens().verify(token)?;
        Ok(Self { id: claims.sub, name: claims.name })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_a_query_are_redacted_and_the_rest_is_kept() {
        let uri: axum::http::Uri =
            "/v1/sse?topics=orders&token=eyJ.secret.sig&TOKEN=x&apikey=k".parse().unwrap();
        assert_eq!(
            redacted_uri(&uri),
            "/v1/sse?topics=orders&token=[redacted]&TOKEN=[redacted]&apikey=[redacted]"
        );
        assert_eq!(redacted_uri(&"/v1/ws".parse().unwrap()), "/v1/ws");
    }
}
