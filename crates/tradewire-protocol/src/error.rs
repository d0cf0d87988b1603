//! Stable error codes carried by `error` frames and by HTTP error bodies.

use serde::{Deserialize, Serialize};

/// The stable, machine-readable code of an error. New codes may be added; existing ones
/// keep their meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    UnknownOp,
    InvalidTopic,
    InvalidFilter,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    TooManySubscriptions,
    RateLimited,
    /// A browser page of an origin the server does not admit opened a WebSocket or an SSE
    /// stream (HTTP 403, before the upgrade); the message names the origin.
    OriginNotAllowed,
    PayloadTooLarge,
    ResyncRequired,
    /// A number outside what the server accepts (a price, a quantity, a notional); the
    /// message names the field and the bound.
    OutOfRange,
    /// A trading command the venue refused (pre-trade check); the message names the reason.
    OrderRejected,
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::InvalidTopic => "invalid_topic",
            ErrorCode::InvalidFilter => "invalid_filter",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::OriginNotAllowed => "origin_not_allowed",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::ResyncRequired => "resync_required",
            ErrorCode::OutOfRange => "out_of_range",
            ErrorCode::OrderRejected => "order_rejected",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
