//! `GET /v1/changes`: the polling fallback. Returns the changes after `since` that match
//! `topics`/`where`, at most `limit`, and the position to ask from next time; 409 with
//! `resync_required` when `since` cannot be served. Event bodies are the shared encodings,
//! concatenated, never re-serialized.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tradewire_hub::Subscription;
use tradewire_protocol::{ChangeOp, Position};

use super::parse_selection_query;
use super::selection::Selection;
use crate::changefeed::Resync;
use crate::errors::{ApiError, ApiResult};
use crate::http::{ApiQuery, AuthUser};
use crate::state::AppState;

const DEFAULT_LIMIT: usize = 500;
const MAX_LIMIT: usize = 5000;
/// Raw log rows read per round while looking for matching ones.
const SCAN_BATCH: usize = 1000;

#[derive(Debug, Deserialize)]
pub struct PollQuery {
    since: Option<String>,
    topics: Option<String>,
    #[serde(rename = "where")]
    filter: Option<String>,
    limit: Option<usize>,
}

pub async fn handler(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<PollQuery>,
) -> ApiResult<Response> {
    let since: Position = q
        .since
        .as_deref()
        .ok_or_else(|| {
            ApiError::bad_request("`since=<epoch>:<seq>` is required (use <epoch>:0 for the start)")
        })?
        .parse()
        .map_err(|_| ApiError::bad_request("`since` is <epoch>:<seq>"))?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!("`limit` is 1 to {MAX_LIMIT}")));
    }
    let (topics, filter) = parse_selection_query(q.topics.as_deref(), q.filter.as_deref())?;
    let selection = Selection::new(state.catalog(), None, &topics, filter.as_ref())?;
    let log = state.log();
    let head = match log.check_from(&user.id, &since).await? {
        Ok(head) => head,
        Err(reason) => return Err(ApiError::resync(&since, reason)),
    };
    let mut sub = Subscription {
        id: "poll".into(),
        topics: selection.topics,
        filter: selection.filter,
        after: since.seq,
    };
    let mut body = Vec::with_capacity(4096);
    body.extend_from_slice(b"{\"events\":[");
    let mut count = 0;
    let mut scanned = since.seq;
    'scan: while scanned < head {
        let batch = log.read_after(&user.id, scanned, SCAN_BATCH).await?;
        if batch.is_empty() {
            break;
        }
        if batch[0].seq != scanned + 1 {
            // Pruned while we read: never answer with a gap.
            return Err(ApiError::resync(&since, Resync::HistoryExpired));
        }
        for change in &batch {
            if change.seq > head {
                break 'scan;
            }
            if sub.wants(change) {
                if change.op == ChangeOp::Truncate {
                    // The rows before it are gone: the client reads them again.
                    return Err(ApiError::resync(&since, Resync::Truncated));
                }
                if count == limit {
                    break 'scan;
                }
                if count > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(&change.body());
                count += 1;
            }
            scanned = change.seq;
            sub.after = scanned;
        }
    }
    let position = Position::new(log.epoch().to_string(), scanned);
    body.extend_from_slice(b"],\"position\":");
    serde_json::to_writer(&mut body, &position).expect("writing a position into a Vec cannot fail");
    body.extend_from_slice(format!(",\"more\":{}}}", scanned < head).as_bytes());
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}
