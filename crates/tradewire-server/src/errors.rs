//! Every error a client can see, and its wire form, in one place:
//!
//! - over HTTP, [`ApiError`]: a status and a stable [`ErrorCode`], converted from each
//!   lower layer's typed error;
//! - inside a stream, [`Rejection`]: an `error` frame with a stable code, the connection
//!   stays;
//! - the end of a stream, [`StreamEnd`]: its close code ([`StreamEnd::close_code`]), and the close code
//!   of a failed WebSocket read ([`read_error_close_code`]).
//!
//! Internals (database messages, paths) are logged, never sent. Nothing here matches error
//! text: every decision is made on a typed error.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tradewire_protocol::{CloseCode, ErrorCode, Position, ServerFrame};

use crate::changefeed::Resync;
use crate::credentials::TokenError;
use crate::db::DbError;
use crate::market_source::SourceUnavailable;
use crate::sim::Refusal;

/// The one error type at the HTTP edge.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// Seconds to wait before trying again (`Retry-After`), for 429 answers.
    pub retry_after: Option<u64>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None }
    }

    /// 429 `rate_limited`, with `Retry-After` (whole seconds, at least 1).
    pub fn rate_limited(message: impl Into<String>, retry_after: std::time::Duration) -> Self {
        let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        Self {
            retry_after: Some(secs.max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited, message)
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }

    /// 403 `origin_not_allowed`: a browser page the gateway does not admit.
    pub fn origin_not_allowed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::OriginNotAllowed, message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, format!("{what} not found"))
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, ErrorCode::Conflict, message)
    }

    pub fn invalid_filter(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidFilter, message)
    }

    pub fn payload_too_large() -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge, "request body too large")
    }

    /// A position that cannot be served (the polling endpoint's 409).
    pub fn resync(since: &Position, reason: Resync) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            ErrorCode::ResyncRequired,
            format!(
                "position {since} cannot be served ({}); subscribe again with a snapshot",
                reason.reason()
            ),
        )
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        if e.is_transient() {
            // Busy (another process holds SQLite's write lock past the busy timeout) or
            // aborted by PostgreSQL after every retry: nothing was written; try again.
            tracing::warn!(error = %e, "database busy");
            return Self {
                retry_after: Some(1),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::Unavailable,
                    "the database is busy; try again",
                )
            };
        }
        tracing::error!(error = %e, "database error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal, "internal error")
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> Self {
        DbError::from(e).into()
    }
}

impl From<postgres::Error> for ApiError {
    fn from(e: postgres::Error) -> Self {
        DbError::from(e).into()
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        Self::unauthorized(e.to_string())
    }
}

impl From<SourceUnavailable> for ApiError {
    fn from(e: SourceUnavailable) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, e.to_string())
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Denied { reason, message } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::OrderRejected,
                format!("{}: {message}", reason.as_str()),
            ),
            Refusal::NotFound(what) => Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, what),
            Refusal::Unavailable => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                "the simulator is not running",
            ),
        }
    }
}

/// A request refused before anything started answers 400 with the rejection's code.
impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, r.code, r.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

/// A request error inside a stream, answered with an `error` frame (or an HTTP error
/// before a stream starts); the connection stays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: ErrorCode,
    pub message: String,
}

impl Rejection {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    pub fn frame(self, id: Option<&str>) -> ServerFrame {
        ServerFrame::error(id, self.code, self.message)
    }
}

/// Why a stream ends before its client asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The peer is gone (or writing failed).
    Gone,
    /// The session's queue overflowed: close as a slow consumer.
    SlowConsumer,
    /// The server is shutting down.
    Shutdown,
}

impl StreamEnd {
    /// The WebSocket close code of this end.
    pub const fn close_code(self) -> CloseCode {
        match self {
            StreamEnd::Gone => CloseCode::Normal,
            StreamEnd::SlowConsumer => CloseCode::SlowConsumer,
            StreamEnd::Shutdown => CloseCode::GoingAway,
        }
    }

    /// The `code` of the SSE `close` event that ends the stream (none when the peer left).
    pub const fn sse_close(self) -> Option<&'static str> {
        match self {
            StreamEnd::Gone => None,
            StreamEnd::SlowConsumer => Some("slow_consumer"),
            StreamEnd::Shutdown => Some("going_away"),
        }
    }
}

/// A database failure while serving a stream: logged; the transport ends the stream as if
/// the peer were gone, and the client reconnects and resumes (nothing is skipped).
impl From<DbError> for StreamEnd {
    fn from(e: DbError) -> Self {
        tracing::error!(error = %e, "database error while serving a stream");
        StreamEnd::Gone
    }
}

/// The close code after a failed WebSocket read: a frame over the size limit is 1009;
/// anything else ends the connection quietly.
pub fn read_error_close_code(e: &axum::Error) -> CloseCode {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        match err.downcast_ref::<tungstenite::Error>() {
            Some(tungstenite::Error::Capacity(_)) => return CloseCode::MessageTooBig,
            Some(tungstenite::Error::Utf8(_)) => return CloseCode::InvalidPayload,
            Some(tungstenite::Error::Protocol(_)) => return CloseCode::WsProtocolError,
            _ => {}
        }
        source = err.source();
    }
    tracing::debug!(error = %e, "websocket read failed");
    CloseCode::Normal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversized_frame_is_1009_by_its_type_and_other_read_errors_close_quietly() {
        use tungstenite::error::{CapacityError, Error as WsError};
        let too_big =
            axum::Error::new(WsError::Capacity(CapacityError::MessageTooLong { size: 10, max_size: 5 }));
        assert_eq!(read_error_close_code(&too_big), CloseCode::MessageTooBig);
        let reset = axum::Error::new(WsError::ConnectionClosed);
        assert_eq!(read_error_close_code(&reset), CloseCode::Normal);
        // The words alone decide nothing.
        let text = axum::Error::new(std::io::Error::other("Space limit exceeded: too long"));
        assert_eq!(read_error_close_code(&text), CloseCode::Normal);
    }
}
