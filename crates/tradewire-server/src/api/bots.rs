//! Bot commands: create, edit, delete, start, pause, stop.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use tradewire_protocol::Row;

use super::{change_owned_row, new_id, owned_row};
use crate::clock::now_ms;
use crate::db::Sql;
use crate::errors::{ApiError, ApiResult};
use crate::http::ApiJson;
use crate::http::AuthUser;
use crate::sql_params as params;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewBot {
    name: String,
    strategy: String,
    symbol: String,
    portfolio_id: Option<String>,
    #[serde(default)]
    config: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotPatch {
    name: Option<String>,
    strategy: Option<String>,
    symbol: Option<String>,
    portfolio_id: Option<String>,
    config: Option<Value>,
}

/// Have the simulator take a bot change at once (it also re-reads bots every second,
/// which covers writers other than the API).
async fn sync_simulator(state: &AppState) {
    if let Some(Err(e)) = match state.sim() {
        Some(sim) => Some(sim.sync_bots().await),
        None => None,
    } {
        tracing::warn!(?e, "the simulator did not take the bot change");
    }
}

fn check_text(field: &str, v: &str) -> ApiResult<()> {
    if v.trim().is_empty() || v.len() > 100 {
        return Err(ApiError::bad_request(format!("`{field}` has 1 to 100 characters")));
    }
    Ok(())
}

fn check_config(config: &Option<Value>) -> ApiResult<String> {
    match config {
        None => Ok("{}".into()),
        Some(v @ Value::Object(_)) => Ok(v.to_string()),
        Some(_) => Err(ApiError::bad_request("`config` is a JSON object")),
    }
}

fn check_symbol(conn: &mut dyn Sql, symbol: &str) -> ApiResult<()> {
    let known = conn
        .value("SELECT EXISTS(SELECT 1 FROM instruments WHERE symbol = ?1)", params![symbol])?
        .is_some_and(|c| c.truthy());
    if known { Ok(()) } else { Err(ApiError::bad_request(format!("unknown symbol {symbol:?}"))) }
}

fn check_portfolio(conn: &mut dyn Sql, user: &str, id: &str) -> ApiResult<()> {
    let mine = conn
        .value("SELECT EXISTS(SELECT 1 FROM portfolios WHERE id = ?1 AND user_id = ?2)", params![id, user])?
        .is_some_and(|c| c.truthy());
    if mine { Ok(()) } else { Err(ApiError::bad_request(format!("no portfolio {id:?}"))) }
}

pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(bot): ApiJson<NewBot>,
) -> ApiResult<(StatusCode, Json<Row>)> {
    check_text("name", &bot.name)?;
    check_text("strategy", &bot.strategy)?;
    let config = check_config(&bot.config)?;
    let catalog = state.catalog().clone();
    let row = state
        .db()
        .write(move |tx| {
            check_symbol(tx, &bot.symbol)?;
            if let Some(p) = &bot.portfolio_id {
                check_portfolio(tx, &user.id, p)?;
            }
            let id = new_id("bot");
            let now = now_ms();
            tx.execute(
                "INSERT INTO trading_bots(id, user_id, portfolio_id, name, strategy, symbol, status, config, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'stopped', ?7, ?8, ?8)",
                params![&id, &user.id, &bot.portfolio_id, bot.name.trim(), bot.strategy.trim(), &bot.symbol, &config, now],
            )?;
            owned_row(tx, &catalog, "bots", &user.id, &id)
        })
        .await?;
    sync_simulator(&state).await;
    Ok((StatusCode::CREATED, Json(row)))
}

pub async fn update(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<BotPatch>,
) -> ApiResult<Json<Row>> {
    for (field, v) in [("name", &patch.name), ("strategy", &patch.strategy)] {
        if let Some(v) = v {
            check_text(field, v)?;
        }
    }
    let config = patch.config.as_ref().map(|_| check_config(&patch.config)).transpose()?;
    let catalog = state.catalog().clone();
    let row = state
        .db()
        .write(move |tx| {
            owned_row(tx, &catalog, "bots", &user.id, &id)?;
            if let Some(s) = &patch.symbol {
                check_symbol(tx, s)?;
            }
            if let Some(p) = &patch.portfolio_id {
                check_portfolio(tx, &user.id, p)?;
            }
            tx.execute(
                "UPDATE trading_bots SET name = COALESCE(?3, name), strategy = COALESCE(?4, strategy),
                     symbol = COALESCE(?5, symbol), portfolio_id = COALESCE(?6, portfolio_id),
                     config = COALESCE(?7, config), updated_at = ?8
                 WHERE id = ?1 AND user_id = ?2",
                params![
                    &id,
                    &user.id,
                    &patch.name,
                    &patch.strategy,
                    &patch.symbol,
                    &patch.portfolio_id,
                    config.clone(),
                    now_ms()
                ],
            )?;
            owned_row(tx, &catalog, "bots", &user.id, &id)
        })
        .await?;
    sync_simulator(&state).await;
    Ok(Json(row))
}

pub async fn remove(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let catalog = state.catalog().clone();
    state
        .db()
        .write(move |tx| {
            let bot = owned_row(tx, &catalog, "bots", &user.id, &id)?;
            if bot.get("status").and_then(Value::as_str) == Some("running") {
                return Err(ApiError::conflict("stop the bot before deleting it"));
            }
            tx.execute("DELETE FROM trading_bots WHERE id = ?1 AND user_id = ?2", params![&id, &user.id])?;
            Ok(StatusCode::NO_CONTENT)
        })
        .await?;
    sync_simulator(&state).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/bots/{id}/start|pause|stop`. Asking for the state a bot is already in changes
/// nothing and succeeds; pausing a stopped bot is a conflict.
pub async fn command(
    State(state): State<AppState>,
    user: AuthUser,
    Path((id, action)): Path<(String, String)>,
) -> ApiResult<Json<Row>> {
    let target = match action.as_str() {
        "start" => "running",
        "pause" => "paused",
        "stop" => "stopped",
        _ => return Err(ApiError::not_found("action")),
    };
    let row = change_owned_row(&state, user, "bots", id, move |tx, bot, user_id| {
        let current = bot.get("status").and_then(Value::as_str).unwrap_or_default();
        if current == target {
            return Ok(());
        }
        if target == "paused" && current != "running" {
            return Err(ApiError::conflict(format!("a {current} bot cannot be paused; start it")));
        }
        let id = bot["id"].as_str();
        tx.execute(
            "UPDATE trading_bots SET status = ?3, updated_at = ?4 WHERE id = ?1 AND user_id = ?2",
            params![id, user_id, target, now_ms()],
        )?;
        tx.execute(
            "INSERT INTO lifecycle(id, user_id, entity, entity_id, event, detail, ts)
             VALUES (?1, ?2, 'bot', ?3, ?4, ?5, ?6)",
            params![
                new_id("lc"),
                user_id,
                id,
                format!("bot.{action}"),
                serde_json::json!({"from": current, "to": target, "by": "api"}).to_string(),
                now_ms()
            ],
        )?;
        Ok(())
    })
    .await?;
    sync_simulator(&state).await;
    Ok(row)
}
