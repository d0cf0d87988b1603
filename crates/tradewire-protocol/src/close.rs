//! WebSocket close codes and what a client should do after each.

use std::time::Duration;

/// Every close code the server uses. One enum, read by the server (to close) and by the
/// clients (to decide whether and how to reconnect).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1000: normal closure requested by the client.
    Normal,
    /// 1001: server going away (shutdown, deploy).
    GoingAway,
    /// 1002: a frame broke the WebSocket protocol (a reserved opcode or bit, a bad frame).
    WsProtocolError,
    /// 1007: a text frame that is not valid UTF-8.
    InvalidPayload,
    /// 1009: a frame was larger than `max_frame_bytes`.
    MessageTooBig,
    /// 4001: no valid token.
    Unauthorized,
    /// 4003: the token is valid but not allowed here.
    Forbidden,
    /// 4008: slow consumer: the outbound queue overflowed.
    SlowConsumer,
    /// 4009: the token expired and was not refreshed.
    TokenExpired,
    /// 4029: rate limited.
    RateLimited,
    /// 4400: protocol violation (e.g. not JSON).
    ProtocolViolation,
}

/// What a client does after a close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconnect {
    /// Reconnect at once and resume from the last applied position.
    Immediately,
    /// Reconnect with exponential backoff and jitter, then resume.
    WithBackoff,
    /// Get a fresh token first, then reconnect and resume.
    AfterTokenRefresh,
    /// Do not reconnect: retrying cannot help (bad credentials, forbidden, client bug).
    Never,
}

impl CloseCode {
    pub const ALL: [CloseCode; 11] = [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::WsProtocolError,
        CloseCode::InvalidPayload,
        CloseCode::MessageTooBig,
        CloseCode::Unauthorized,
        CloseCode::Forbidden,
        CloseCode::SlowConsumer,
        CloseCode::TokenExpired,
        CloseCode::RateLimited,
        CloseCode::ProtocolViolation,
    ];

    pub const fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::WsProtocolError => 1002,
            CloseCode::InvalidPayload => 1007,
            CloseCode::MessageTooBig => 1009,
            CloseCode::Unauthorized => 4001,
            CloseCode::Forbidden => 4003,
            CloseCode::SlowConsumer => 4008,
            CloseCode::TokenExpired => 4009,
            CloseCode::RateLimited => 4029,
            CloseCode::ProtocolViolation => 4400,
        }
    }

    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }

    /// A short machine-readable reason, sent as the close frame's reason text.
    pub const fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal",
            CloseCode::GoingAway => "going_away",
            CloseCode::WsProtocolError => "protocol_error",
            CloseCode::InvalidPayload => "invalid_payload",
            CloseCode::MessageTooBig => "payload_too_large",
            CloseCode::Unauthorized => "unauthorized",
            CloseCode::Forbidden => "forbidden",
            CloseCode::SlowConsumer => "slow_consumer",
            CloseCode::TokenExpired => "token_expired",
            CloseCode::RateLimited => "rate_limited",
            CloseCode::ProtocolViolation => "protocol_violation",
        }
    }

    /// The reconnect rule of PROTOCOL.md's close-code table.
    pub const fn reconnect(self) -> Reconnect {
        match self {
            CloseCode::GoingAway | CloseCode::RateLimited => Reconnect::WithBackoff,
            CloseCode::SlowConsumer => Reconnect::Immediately,
            CloseCode::TokenExpired => Reconnect::AfterTokenRefresh,
            CloseCode::Normal
            | CloseCode::WsProtocolError
            | CloseCode::InvalidPayload
            | CloseCode::MessageTooBig
            | CloseCode::Unauthorized
            | CloseCode::Forbidden
            | CloseCode::ProtocolViolation => Reconnect::Never,
        }
    }
}

/// Delay before reconnect attempt `attempt` (0-based) with full jitter: a uniform draw in
/// `[0, min(cap, base * 2^attempt)]`. `unit` is that draw's fraction, in `[0, 1)`, supplied by
/// the caller so this stays deterministic and free of a random-number dependency.
pub fn backoff_delay(attempt: u32, base: Duration, cap: Duration, unit: f64) -> Duration {
    let exp = base.saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX));
    exp.min(cap).mul_f64(unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        for c in CloseCode::ALL {
            assert_eq!(CloseCode::from_code(c.code()), Some(c));
        }
        assert_eq!(CloseCode::from_code(4242), None);
    }

    #[test]
    fn reconnect_rules_match_the_protocol_table() {
        assert_eq!(CloseCode::GoingAway.reconnect(), Reconnect::WithBackoff);
        assert_eq!(CloseCode::MessageTooBig.reconnect(), Reconnect::Never);
        assert_eq!(CloseCode::Unauthorized.reconnect(), Reconnect::Never);
        assert_eq!(CloseCode::Forbidden.reconnect(), Reconnect::Never);
        assert_eq!(CloseCode::SlowConsumer.reconnect(), Reconnect::Immediately);
        assert_eq!(CloseCode::TokenExpired.reconnect(), Reconnect::AfterTokenRefresh);
        assert_eq!(CloseCode::RateLimited.reconnect(), Reconnect::WithBackoff);
        assert_eq!(CloseCode::ProtocolViolation.reconnect(), Reconnect::Never);
    }

    #[test]
    fn backoff_grows_then_caps() {
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(30);
        assert_eq!(backoff_delay(0, base, cap, 0.999_999).as_secs(), 0);
        assert_eq!(backoff_delay(3, base, cap, 0.5), Duration::from_secs(4));
        assert_eq!(backoff_delay(40, base, cap, 1.0), cap);
        assert_eq!(backoff_delay(5, base, cap, 0.0), Duration::ZERO);
    }
}
