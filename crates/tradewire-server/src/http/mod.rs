//! What every HTTP edge shares (the REST API and the streaming transports alike): the
//! authenticated caller, the token of a request, and request extractors whose rejections
//! are our JSON error body.
//!
//! It depends on credentials and the error mapping, never on `api/` or `gateway/`, so both
//! can use it without depending on each other.

mod caller;
mod extract;

pub use caller::{AuthUser, bearer_token, redacted_uri, request_token};
pub use extract::{ApiJson, ApiQuery};
