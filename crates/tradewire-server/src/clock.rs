//! Wall-clock time as the rest of the server uses it: milliseconds since the Unix epoch.
//! One function, so a test seam for time has one place to go.

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}
