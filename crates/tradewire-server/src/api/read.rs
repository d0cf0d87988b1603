//! Reads of the private tables: lists with column filters from the query string, and single
//! rows by id. Rows have exactly the shape of stream events (see `db::rows`).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};
use tradewire_hub::Filter;
use tradewire_protocol::Row;

use super::owned_row;
use crate::db::rows::scan_rows;
use crate::errors::{ApiError, ApiResult};
use crate::http::ApiQuery;
use crate::http::AuthUser;
use crate::state::AppState;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// `GET /v1/<topic>?col=value&…&limit=N`: the caller's rows, newest `limit` kept.
async fn list(
    state: AppState,
    user: AuthUser,
    topic: &'static str,
    query: HashMap<String, String>,
) -> ApiResult<Json<Value>> {
    let catalog = state.catalog().clone();
    let table = catalog.topic(topic).ok_or_else(|| ApiError::not_found(topic))?.clone();
    let mut limit = DEFAULT_LIMIT;
    let mut clauses = Row::new();
    for (k, v) in query {
        if k == "limit" {
            limit = v
                .parse()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| ApiError::bad_request(format!("`limit` is 1 to {MAX_LIMIT}")))?;
            continue;
        }
        if !table.has_column(&k) {
            return Err(ApiError::invalid_filter(format!("unknown column {k:?} for {topic}")));
        }
        let value = match v.as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(v),
        };
        clauses.insert(k, value);
    }
    let filter = Filter::parse(&clauses).map_err(|e| ApiError::invalid_filter(e.to_string()))?;
    let rows = state.db().read(move |c| scan_rows(c, &table, &user.id, &filter, limit)).await?;
    Ok(Json(json!({"items": rows.rows, "truncated": rows.truncated})))
}

/// `GET /v1/<topic>/{id}`: one of the caller's rows; someone else's is "not found".
async fn one(state: AppState, user: AuthUser, topic: &'static str, id: String) -> ApiResult<Json<Row>> {
    let catalog = state.catalog().clone();
    state.db().read(move |c| Ok(owned_row(c, &catalog, topic, &user.id, &id))).await?.map(Json)
}

macro_rules! list_handlers {
    ($($name:ident => $topic:literal),* $(,)?) => {$(
        pub async fn $name(State(state): State<AppState>, user: AuthUser, ApiQuery(q): ApiQuery<HashMap<String, String>>) -> ApiResult<Json<Value>> {
            list(state, user, $topic, q).await
        }
    )*};
}

macro_rules! get_handlers {
    ($($name:ident => $topic:literal),* $(,)?) => {$(
        pub async fn $name(State(state): State<AppState>, user: AuthUser, Path(id): Path<String>) -> ApiResult<Json<Row>> {
            one(state, user, $topic, id).await
        }
    )*};
}

list_handlers! {
    list_bots => "bots",
    list_portfolios => "portfolios",
    list_positions => "positions",
    list_orders => "orders",
    list_fills => "fills",
    list_lifecycle => "lifecycle",
    list_signals => "signals",
    list_risk => "risk",
    list_pnl => "pnl",
}

get_handlers! {
    get_bot => "bots",
    get_portfolio => "portfolios",
    get_position => "positions",
    get_order => "orders",
}
