//! Trading commands: place an order (idempotent by `client_order_id`), cancel it, close a
//! position. Until a matching engine runs (the simulator), orders rest as `new`.

use std::str::FromStr;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use rust_decimal::Decimal;
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
use tradewire_protocol::ErrorCode;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOrder {
    client_order_id: Option<String>,
    symbol: String,
    side: String,
    #[serde(rename = "type")]
    kind: String,
    quantity: String,
    price: Option<String>,
    stop_price: Option<String>,
    time_in_force: Option<String>,
    portfolio_id: Option<String>,
    bot_id: Option<String>,
    #[serde(default)]
    reduce_only: bool,
    #[serde(default)]
    post_only: bool,
    /// Isolated leverage of the position this order opens (simulator).
    leverage: Option<u32>,
    /// Attach a take-profit and/or stop-loss exit to this entry (an order chain; simulator).
    take_profit: Option<String>,
    stop_loss: Option<String>,
}

/// A strictly positive decimal, normalized to its canonical text.
/// The largest price and quantity an order may carry, and the most decimal places: far
/// beyond any instrument, and far inside what the simulator's `Decimal` arithmetic (28
/// significant digits) can multiply without overflow — price × quantity × leverage, fees
/// and margin stay below 10^20. The instrument's own rules (tick, lot, minimum notional,
/// leverage) are checked by the simulator and answered 422 `order_rejected`.
const MAX_PRICE: Decimal = Decimal::from_parts(1_000_000_000, 0, 0, false, 0);
const MAX_QUANTITY: Decimal = Decimal::from_parts(1_000_000_000, 0, 0, false, 0);
/// The most a limit order may be worth (price × quantity).
const MAX_NOTIONAL: Decimal = Decimal::from_parts(3_567_587_328, 232, 0, false, 0); // 10^12
const MAX_DECIMALS: u32 = 12;

/// A decimal string that is greater than zero, at most `max`, with at most
/// [`MAX_DECIMALS`] places: 400 `bad_request` when it is not a positive decimal, 400
/// `out_of_range` when it is one beyond those bounds.
fn bounded(field: &str, text: &str, max: Decimal) -> ApiResult<Decimal> {
    let d = Decimal::from_str(text.trim())
        .map_err(|_| ApiError::bad_request(format!("`{field}` is a decimal string, e.g. \"0.01\"")))?;
    let out_of_range = |why: String| ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::OutOfRange, why);
    if d <= Decimal::ZERO {
        return Err(ApiError::bad_request(format!("`{field}` must be greater than zero")));
    }
    if d > max {
        return Err(out_of_range(format!("`{field}` is at most {max}")));
    }
    if d.normalize().scale() > MAX_DECIMALS {
        return Err(out_of_range(format!("`{field}` has at most {MAX_DECIMALS} decimal places")));
    }
    Ok(d.normalize())
}

pub(crate) fn positive(field: &str, text: &str) -> ApiResult<String> {
    let max = if field == "quantity" { MAX_QUANTITY } else { MAX_PRICE };
    Ok(bounded(field, text, max)?.to_string())
}

fn one_of<'a>(field: &str, v: &'a str, allowed: &[&str]) -> ApiResult<&'a str> {
    if allowed.contains(&v) {
        Ok(v)
    } else {
        Err(ApiError::bad_request(format!("`{field}` is one of {}", allowed.join(", "))))
    }
}

/// `POST /v1/orders`: 201 with the new order, or 200 with the existing one when this
/// `client_order_id` was already used (the request is then not applied again).
pub async fn place_order(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(o): ApiJson<NewOrder>,
) -> ApiResult<(StatusCode, Json<Row>)> {
    let side = one_of("side", &o.side, &["buy", "sell"])?.to_owned();
    let kind = one_of("type", &o.kind, &["market", "limit", "stop", "take_profit"])?.to_owned();
    let tif = one_of("time_in_force", o.time_in_force.as_deref().unwrap_or("gtc"), &["gtc", "ioc", "fok"])?
        .to_owned();
    let quantity = positive("quantity", &o.quantity)?;
    let price = o.price.as_deref().map(|p| positive("price", p)).transpose()?;
    let stop_price = o.stop_price.as_deref().map(|p| positive("stop_price", p)).transpose()?;
    if kind == "limit" && price.is_none() {
        return Err(ApiError::bad_request("a limit order needs `price`"));
    }
    if let Some(p) = price.as_deref().or(stop_price.as_deref()) {
        let notional =
            Decimal::from_str(p).unwrap_or_default() * Decimal::from_str(&quantity).unwrap_or_default();
        if notional > MAX_NOTIONAL {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::OutOfRange,
                format!("an order is worth at most {MAX_NOTIONAL} (price × quantity)"),
            ));
        }
    }
    if matches!(kind.as_str(), "stop" | "take_profit") && stop_price.is_none() {
        return Err(ApiError::bad_request(format!("a {kind} order needs `stop_price`")));
    }
    let client_order_id = match o.client_order_id {
        Some(c) if c.is_empty() || c.len() > 64 => {
            return Err(ApiError::bad_request("`client_order_id` has 1 to 64 characters"));
        }
        Some(c) => c,
        None => new_id("cli"),
    };
    let take_profit = o.take_profit.as_deref().map(|p| positive("take_profit", p)).transpose()?;
    let stop_loss = o.stop_loss.as_deref().map(|p| positive("stop_loss", p)).transpose()?;
    if let Some(sim) = state.sim() {
        let portfolio = resolve_portfolio(&state, &user.id, o.portfolio_id.clone()).await?;
        let request = serde_json::json!({
            "user_id": user.id, "portfolio_id": portfolio, "bot_id": o.bot_id,
            "client_order_id": client_order_id, "symbol": o.symbol, "side": side, "type": kind,
            "time_in_force": tif, "post_only": o.post_only, "reduce_only": o.reduce_only,
            "price": price, "stop_price": stop_price, "quantity": quantity,
            "leverage": o.leverage.unwrap_or(1),
            "chain": (take_profit.is_some() || stop_loss.is_some())
                .then(|| serde_json::json!({"take_profit": take_profit, "stop_loss": stop_loss})),
        });
        let order: tradewire_sim::NewOrder =
            serde_json::from_value(request).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let (row, created) = sim.place_order(order).await.map_err(ApiError::from)?;
        let status = if created { StatusCode::CREATED } else { StatusCode::OK };
        return Ok((status, Json(into_row(row))));
    }
    if o.leverage.is_some() || take_profit.is_some() || stop_loss.is_some() {
        return Err(ApiError::bad_request("leverage and order chains need the simulator (it is off)"));
    }
    let catalog = state.catalog().clone();
    state
        .db()
        .write(move |tx| {
            // On SQLite writes are serialized (BEGIN IMMEDIATE); on PostgreSQL the insert
            // below settles a race on the unique (user_id, client_order_id).
            let existing = tx.text(
                "SELECT id FROM orders WHERE user_id = ?1 AND client_order_id = ?2",
                params![&user.id, &client_order_id],
            )?;
            if let Some(id) = existing {
                return Ok((StatusCode::OK, Json(owned_row(tx, &catalog, "orders", &user.id, &id)?)));
            }
            let known = tx
                .value("SELECT EXISTS(SELECT 1 FROM instruments WHERE symbol = ?1)", params![&o.symbol])?
                .is_some_and(|c| c.truthy());
            if !known {
                return Err(ApiError::bad_request(format!("unknown symbol {:?}", o.symbol)));
            }
            let portfolio = portfolio_of(tx, &user.id, o.portfolio_id.as_deref())?;
            if let Some(b) = &o.bot_id {
                owned_row(tx, &catalog, "bots", &user.id, b).map_err(|_| ApiError::bad_request(format!("no bot {b:?}")))?;
            }
            let id = new_id("ord");
            let now = now_ms();
            let inserted = tx.execute(
                "INSERT INTO orders(id, user_id, portfolio_id, bot_id, client_order_id, symbol, side, type, time_in_force,
                     price, stop_price, quantity, status, reduce_only, post_only, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 'new', ?13, ?14, ?15, ?15)
                 ON CONFLICT (user_id, client_order_id) DO NOTHING",
                params![&id, &user.id, portfolio, &o.bot_id, &client_order_id, &o.symbol, &side, &kind, &tif, price.clone(), stop_price.clone(), &quantity,
                    o.reduce_only, o.post_only, now],
            )?;
            if inserted == 0 {
                // A concurrent request with this client_order_id won (PostgreSQL runs writers
                // concurrently; the unique key decides): answer with its order.
                let id = tx
                    .text(
                        "SELECT id FROM orders WHERE user_id = ?1 AND client_order_id = ?2",
                        params![&user.id, &client_order_id],
                    )?
                    .ok_or_else(|| ApiError::conflict("client_order_id is taken"))?;
                return Ok((StatusCode::OK, Json(owned_row(tx, &catalog, "orders", &user.id, &id)?)));
            }
            Ok((StatusCode::CREATED, Json(owned_row(tx, &catalog, "orders", &user.id, &id)?)))
        })
        .await
}

/// The portfolio an order goes to: the one named (it must be the user's), else the user's
/// first.
fn portfolio_of(conn: &mut dyn Sql, user: &str, requested: Option<&str>) -> ApiResult<Option<String>> {
    Ok(match requested {
        Some(p) => Some(
            conn.text("SELECT id FROM portfolios WHERE id = ?1 AND user_id = ?2", params![p, user])?
                .ok_or_else(|| ApiError::bad_request(format!("no portfolio {p:?}")))?,
        ),
        None => conn.text(
            "SELECT id FROM portfolios WHERE user_id = ?1 ORDER BY created_at, id LIMIT 1",
            params![user],
        )?,
    })
}

async fn resolve_portfolio(state: &AppState, user: &str, requested: Option<String>) -> ApiResult<String> {
    let user = user.to_owned();
    let found = state.db().read(move |c| Ok(portfolio_of(c, &user, requested.as_deref()))).await??;
    found.ok_or_else(|| ApiError::bad_request("no portfolio to trade in"))
}

pub(crate) fn into_row(v: Value) -> Row {
    match v {
        Value::Object(row) => row,
        _ => Row::new(),
    }
}

/// `DELETE /v1/orders/{id}`: cancel an open order.
pub async fn cancel_order(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Row>> {
    if let Some(sim) = state.sim() {
        return sim.cancel_order(&user.id, &id).await.map(|r| Json(into_row(r))).map_err(ApiError::from);
    }
    change_owned_row(&state, user, "orders", id, |tx, order, user_id| {
        let status = order.get("status").and_then(Value::as_str).unwrap_or_default();
        if !matches!(status, "new" | "partially_filled" | "triggered") {
            return Err(ApiError::conflict(format!("a {status} order cannot be canceled")));
        }
        tx.execute(
            "UPDATE orders SET status = 'canceled', updated_at = ?3 WHERE id = ?1 AND user_id = ?2",
            params![order["id"].as_str(), user_id, now_ms()],
        )?;
        Ok(())
    })
    .await
}

/// `POST /v1/positions/{id}/close`: close an open position at its last mark.
pub async fn close_position(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Row>> {
    if let Some(sim) = state.sim() {
        // Closing is a reduce-only market order; the answer is that order.
        return sim.close_position(&user.id, &id).await.map(|r| Json(into_row(r))).map_err(ApiError::from);
    }
    change_owned_row(&state, user, "positions", id, |tx, pos, user_id| {
        if pos.get("status").and_then(Value::as_str) != Some("open") {
            return Err(ApiError::conflict("the position is not open"));
        }
        tx.execute(
            "UPDATE positions SET status = 'closed', closed_at = ?3, updated_at = ?3 WHERE id = ?1 AND user_id = ?2",
            params![pos["id"].as_str(), user_id, now_ms()],
        )?;
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bounds_are_what_they_say() {
        assert_eq!(MAX_PRICE.to_string(), "1000000000");
        assert_eq!(MAX_NOTIONAL.to_string(), "1000000000000");
        // The largest order's arithmetic does not overflow: price × quantity × leverage.
        let worst = MAX_PRICE.checked_mul(MAX_QUANTITY).and_then(|n| n.checked_mul(Decimal::from(125)));
        assert!(worst.is_some());
    }

    #[test]
    fn numbers_outside_the_bounds_are_out_of_range() {
        for (text, code) in [
            ("79228162514264337593543950", ErrorCode::OutOfRange),
            ("1000000000.5", ErrorCode::OutOfRange),
            ("0", ErrorCode::BadRequest),
            ("-1", ErrorCode::BadRequest),
            ("0.0000000000001", ErrorCode::OutOfRange),
            ("abc", ErrorCode::BadRequest),
        ] {
            assert_eq!(positive("quantity", text).unwrap_err().code, code, "{text}");
        }
        assert_eq!(positive("quantity", "0.010").unwrap(), "0.01");
        assert_eq!(positive("price", "27000.50").unwrap(), "27000.5");
    }
}
