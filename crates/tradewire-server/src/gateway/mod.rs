//! The gateway: the transports clients connect with. `ws` (WebSocket), `sse` (Server-Sent
//! Events) and `poll` (`/v1/changes`) all serve one [`session::Session`] model, so the
//! guarantees (order, no gap between snapshot and live, isolation) are written once.
//!
//! The gateway reads the change log through `changefeed` and receives live changes from
//! the hub; it never writes to the database.

pub mod limits;
pub mod poll;
pub mod session;
pub mod sse;
pub mod ws;

use tradewire_protocol::{From, Row};

use crate::error::ApiError;

/// Parse the `topics` (comma-separated) and `where` (JSON object) query parameters.
pub fn parse_query_plan(
    topics: Option<&str>,
    filter: Option<&str>,
) -> Result<(Vec<String>, Option<Row>), ApiError> {
    let topics: Vec<String> = topics
        .unwrap_or("*")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    let filter = filter
        .map(|w| {
            serde_json::from_str::<Row>(w)
                .map_err(|e| ApiError::invalid_filter(format!("`where` is a JSON object: {e}")))
        })
        .transpose()?;
    Ok((topics, filter))
}

/// Parse a `from` value: `snapshot`, `now`, or `<epoch>:<seq>`.
pub fn parse_from(text: &str) -> Result<From, ApiError> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| ApiError::bad_request("`from` is snapshot, now or <epoch>:<seq>"))
}
