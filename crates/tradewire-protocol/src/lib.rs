//! Tradewire wire protocol, version 1.
//!
//! This crate owns every type that crosses the wire between a Tradewire server and its
//! clients: the client and server frames of `/v1/ws` (also used by SSE and polling), stream
//! positions, topic names, error codes and close codes. The server, the Rust client and the
//! bench tool all depend on it; the JavaScript client is tested against the same golden
//! fixtures (`fixtures/*.json`).
//!
//! It must stay free of IO: no tokio, no axum, no SQL. Only serde.

mod close;
mod error;
mod frames;
mod position;
mod token;
mod topic;

pub use close::{CloseCode, Reconnect, backoff_delay};
pub use error::ErrorCode;
pub use frames::{
    ChangeOp, ClientFrame, EVENT_FRAME_PREFIX, EventFrame, EventParts, From, Limits, Row, ServerFrame,
    encode_event_body, insert_subscription_id,
};
pub use position::{ParsePositionError, Position};
pub use token::TokenClaims;
pub use topic::{MarketTopic, PRIVATE_TOPICS, Topic, TopicError};

/// The protocol version this crate implements.
pub const PROTOCOL_VERSION: u32 = 1;
