//! The claims of a Tradewire access token (an HS256 JWT). Part of the contract so that
//! tools that mint tokens from the shared secret (the CLI, the bench) agree with the server.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    /// The user id.
    pub sub: String,
    /// The username, for logs and display.
    pub name: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    /// Issued at, seconds since the Unix epoch.
    pub iat: i64,
}

impl TokenClaims {
    pub fn expires_at_ms(&self) -> i64 {
        self.exp.saturating_mul(1000)
    }
}
