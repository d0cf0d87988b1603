//! The paper exchange: accepts, denies, matches and cancels orders for every portfolio,
//! keeps positions and the margin ledger, and turns market events into fills, triggers,
//! marks, margin calls and liquidations. Every change comes out as an [`Effect`] carrying
//! the full new row.
//!
//! This file holds the state and the commands (`place_order`, `cancel_order`,
//! `close_position`); `fills.rs` applies fills and market events; `chains.rs` runs order
//! chains (entry + take-profit + stop-loss). Knows nothing of bots' strategies or the
//! circuit breaker's rules: it only obeys the gates they set (`set_bot`, `set_halted`).
//!
//! Matching model: an order walks the book as last published; displayed liquidity is not
//! consumed (it replenishes with every book update). Resting limit orders fill, as maker at
//! their own price, when the book or a trade print moves through them. Stop/take-profit
//! orders trigger on the last trade price; without a limit price they then sweep the book
//! each update until filled.

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::Decimal;
use serde_json::json;

use crate::accounts::{Account, money};
use crate::book::BookView;
use crate::ids::Ids;
use crate::instrument::Instrument;
use crate::model::{
    BotStatus, ChainRole, Effect, Lifecycle, LifecycleEntity, Order, OrderStatus, OrderType, Portfolio,
    Position, Side, TimeInForce,
};
use crate::orders::{Denied, DenyReason, NewOrder, OrderState, deny, triggers};
use crate::positions::PositionState;

/// One open position per (portfolio id, symbol, bot id); manual trading has no bot id.
pub type PositionKey = (String, String, Option<String>);

/// What the engine knows of one symbol's public market.
#[derive(Debug, Clone)]
pub(crate) struct SymbolView {
    pub inst: Instrument,
    pub book: BookView,
    pub has_book: bool,
    pub last: Option<Decimal>,
    pub mark: Option<Decimal>,
}

impl SymbolView {
    /// The price positions are valued at: mark, else last, else mid.
    pub fn valuation(&self) -> Option<Decimal> {
        self.mark.or(self.last).or_else(|| match (self.book.best_bid(), self.book.best_ask()) {
            (Some(b), Some(a)) => Some((b + a) / Decimal::TWO),
            _ => None,
        })
    }
}

/// An order chain: an entry with a take-profit and/or a stop-loss exit.
#[derive(Debug, Clone)]
pub(crate) struct Chain {
    pub user_id: String,
    pub entry_side: Side,
    pub take_profit: Option<Decimal>,
    pub stop_loss: Option<Decimal>,
    pub tp_order: Option<String>,
    pub sl_order: Option<String>,
    pub entry_open: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct BotGate {
    pub user_id: String,
    pub status: BotStatus,
}

/// The paper exchange. See the module docs.
#[derive(Debug, Clone)]
pub struct Engine {
    pub(crate) ids: Ids,
    pub(crate) symbols: BTreeMap<String, SymbolView>,
    pub(crate) accounts: BTreeMap<String, Account>,
    /// Open orders by acceptance sequence (time priority). Terminal orders are dropped.
    pub(crate) orders: BTreeMap<u64, OrderState>,
    pub(crate) order_index: BTreeMap<String, u64>,
    pub(crate) next_seq: u64,
    /// (user id, client order id) of open orders.
    pub(crate) client_ids: BTreeSet<(String, String)>,
    /// Open positions.
    pub(crate) positions: BTreeMap<PositionKey, PositionState>,
    pub(crate) chains: BTreeMap<String, Chain>,
    pub(crate) bots: BTreeMap<String, BotGate>,
    pub(crate) halted: BTreeSet<String>,
    /// Portfolios changed since the last flush.
    pub(crate) touched: BTreeSet<String>,
    pub(crate) transition_errors: u64,
}

/// Walk one side of `book` for `qty`, not past `limit`: the (price, quantity) taken per level.
pub(crate) fn walk(
    book: &BookView,
    side: Side,
    limit: Option<Decimal>,
    qty: Decimal,
) -> Vec<(Decimal, Decimal)> {
    let mut left = qty;
    let mut out = Vec::new();
    let mut take = |p: Decimal, q: Decimal| -> bool {
        if left <= Decimal::ZERO {
            return false;
        }
        let ok = match (side, limit) {
            (_, None) => true,
            (Side::Buy, Some(l)) => p <= l,
            (Side::Sell, Some(l)) => p >= l,
        };
        if !ok {
            return false;
        }
        let t = q.min(left);
        out.push((p, t));
        left -= t;
        true
    };
    match side {
        Side::Buy => {
            for (p, q) in book.asks_asc() {
                if !take(p, q) {
                    break;
                }
            }
        }
        Side::Sell => {
            for (p, q) in book.bids_desc() {
                if !take(p, q) {
                    break;
                }
            }
        }
    }
    out
}

pub(crate) fn total_qty(fills: &[(Decimal, Decimal)]) -> Decimal {
    fills.iter().map(|f| f.1).sum()
}

/// What validation decided about an order it accepts.
struct Plan {
    key: PositionKey,
    reserve: Decimal,
}

impl Engine {
    /// An engine trading `instruments`, naming rows with `ids`.
    pub fn new(instruments: Vec<Instrument>, ids: Ids) -> Self {
        let symbols = instruments
            .into_iter()
            .map(|inst| {
                let v =
                    SymbolView { inst, book: BookView::default(), has_book: false, last: None, mark: None };
                (v.inst.symbol.clone(), v)
            })
            .collect();
        Engine {
            ids,
            symbols,
            accounts: BTreeMap::new(),
            orders: BTreeMap::new(),
            order_index: BTreeMap::new(),
            next_seq: 0,
            client_ids: BTreeSet::new(),
            positions: BTreeMap::new(),
            chains: BTreeMap::new(),
            bots: BTreeMap::new(),
            halted: BTreeSet::new(),
            touched: BTreeSet::new(),
            transition_errors: 0,
        }
    }

    /// Add (or replace) a portfolio. It starts flat; see `Account::new`.
    pub fn add_portfolio(&mut self, row: Portfolio) {
        self.accounts.insert(row.id.clone(), Account::new(row));
    }

    /// Register a bot's owner and status; orders with its `bot_id` obey the status.
    pub fn set_bot(&mut self, bot_id: &str, user_id: &str, status: BotStatus) {
        self.bots.insert(bot_id.to_string(), BotGate { user_id: user_id.to_string(), status });
    }

    pub fn remove_bot(&mut self, bot_id: &str) {
        self.bots.remove(bot_id);
    }

    /// Halt (circuit breaker) or resume opening orders for a portfolio.
    pub fn set_halted(&mut self, portfolio_id: &str, halted: bool) {
        if halted {
            self.halted.insert(portfolio_id.to_string());
        } else {
            self.halted.remove(portfolio_id);
        }
    }

    pub fn is_halted(&self, portfolio_id: &str) -> bool {
        self.halted.contains(portfolio_id)
    }

    // ----- read access -------------------------------------------------------------------

    pub fn instrument(&self, symbol: &str) -> Option<&Instrument> {
        self.symbols.get(symbol).map(|v| &v.inst)
    }

    pub fn portfolio(&self, id: &str) -> Option<&Portfolio> {
        self.accounts.get(id).map(|a| &a.row)
    }

    pub fn portfolios(&self) -> impl Iterator<Item = &Portfolio> {
        self.accounts.values().map(|a| &a.row)
    }

    /// Open orders (not terminal), oldest first.
    pub fn open_orders(&self) -> impl Iterator<Item = &Order> {
        self.orders.values().map(|o| &o.row)
    }

    pub fn order(&self, id: &str) -> Option<&Order> {
        self.order_index.get(id).and_then(|s| self.orders.get(s)).map(|o| &o.row)
    }

    /// Margin currently reserved by an open order.
    pub fn reserved_margin(&self, order_id: &str) -> Option<Decimal> {
        self.order_index.get(order_id).and_then(|s| self.orders.get(s)).map(|o| o.reserved)
    }

    pub fn open_positions(&self) -> impl Iterator<Item = &Position> {
        self.positions.values().map(|p| &p.row)
    }

    pub fn position(&self, portfolio_id: &str, symbol: &str, bot_id: Option<&str>) -> Option<&Position> {
        let key = (portfolio_id.to_string(), symbol.to_string(), bot_id.map(str::to_string));
        self.positions.get(&key).map(|p| &p.row)
    }

    pub fn last_price(&self, symbol: &str) -> Option<Decimal> {
        self.symbols.get(symbol).and_then(|v| v.last)
    }

    pub fn mark_price(&self, symbol: &str) -> Option<Decimal> {
        self.symbols.get(symbol).and_then(|v| v.valuation())
    }

    pub fn book(&self, symbol: &str) -> Option<&BookView> {
        self.symbols.get(symbol).filter(|v| v.has_book).map(|v| &v.book)
    }

    /// Status changes the transition table refused (always 0 unless the engine has a bug).
    pub fn transition_errors(&self) -> u64 {
        self.transition_errors
    }

    // ----- commands ----------------------------------------------------------------------

    /// Validate and accept an order, then execute what can execute now.
    pub fn place_order(&mut self, new: NewOrder, now_ms: i64) -> Result<Vec<Effect>, Denied> {
        self.place(new, now_ms, false)
    }

    /// Cancel an open order of `user_id`.
    pub fn cancel_order(
        &mut self,
        user_id: &str,
        order_id: &str,
        now_ms: i64,
    ) -> Result<Vec<Effect>, Denied> {
        let seq = match self.order_index.get(order_id) {
            Some(s) if self.orders.get(s).is_some_and(|o| o.row.user_id == user_id) => *s,
            _ => return deny(DenyReason::UnknownOrder, format!("no open order {order_id}")),
        };
        let mut out = Vec::new();
        self.end_order(seq, OrderStatus::Canceled, "user", now_ms, &mut out);
        self.flush(now_ms, &mut out);
        Ok(out)
    }

    /// Close an open position of `user_id` with a reduce-only market order. Allowed while
    /// the portfolio is halted and whatever its bot's status (it is the user acting).
    pub fn close_position(
        &mut self,
        user_id: &str,
        position_id: &str,
        now_ms: i64,
    ) -> Result<Vec<Effect>, Denied> {
        let Some(p) = self.positions.values().find(|p| p.row.id == position_id && p.row.user_id == user_id)
        else {
            return deny(DenyReason::UnknownPosition, format!("no open position {position_id}"));
        };
        let row = &p.row;
        let new = NewOrder {
            bot_id: row.bot_id.clone(),
            reduce_only: true,
            leverage: row.leverage,
            ..NewOrder::market(
                user_id,
                &row.portfolio_id,
                &row.symbol,
                Side::opening(row.side).opposite(),
                row.quantity,
            )
        };
        self.place(new, now_ms, true)
    }

    /// Cancel every open order of a portfolio that is not reduce-only (circuit breaker).
    pub fn cancel_opening_orders(&mut self, portfolio_id: &str, reason: &str, now_ms: i64) -> Vec<Effect> {
        let seqs: Vec<u64> = self
            .orders
            .iter()
            .filter(|(_, o)| o.row.portfolio_id == portfolio_id && !o.row.reduce_only)
            .map(|(s, _)| *s)
            .collect();
        let mut out = Vec::new();
        for s in seqs {
            self.end_order(s, OrderStatus::Canceled, reason, now_ms, &mut out);
        }
        self.flush(now_ms, &mut out);
        out
    }

    pub(crate) fn place(
        &mut self,
        new: NewOrder,
        now_ms: i64,
        user_close: bool,
    ) -> Result<Vec<Effect>, Denied> {
        let plan = self.validate(&new, user_close)?;
        let mut out = Vec::new();
        let seq = self.accept(new, plan, now_ms, &mut out);
        self.execute_new(seq, now_ms, &mut out);
        self.flush(now_ms, &mut out);
        Ok(out)
    }

    fn validate(&self, new: &NewOrder, user_close: bool) -> Result<Plan, Denied> {
        use DenyReason::*;
        let Some(view) = self.symbols.get(&new.symbol) else {
            return deny(UnknownSymbol, format!("unknown symbol {}", new.symbol));
        };
        let inst = &view.inst;
        let Some(acct) = self.accounts.get(&new.portfolio_id).filter(|a| a.row.user_id == new.user_id) else {
            return deny(UnknownPortfolio, format!("no portfolio {} for this user", new.portfolio_id));
        };
        // A user closing a position bypasses the gate of the bot that opened it (even a
        // stopped or removed bot).
        if let Some(bot_id) = new.bot_id.as_ref().filter(|_| !user_close) {
            let Some(gate) = self.bots.get(bot_id).filter(|g| g.user_id == new.user_id) else {
                return deny(UnknownBot, format!("no bot {bot_id} for this user"));
            };
            match gate.status {
                BotStatus::Stopped => return deny(BotStopped, format!("bot {bot_id} is stopped")),
                BotStatus::Paused if !new.reduce_only => {
                    return deny(BotPaused, format!("bot {bot_id} is paused: it may only reduce positions"));
                }
                _ => {}
            }
        }
        if self.halted.contains(&new.portfolio_id) && !new.reduce_only {
            return deny(
                CircuitBreakerHalted,
                "the circuit breaker halted this portfolio: only reduce-only orders",
            );
        }
        if new.quantity <= Decimal::ZERO {
            return deny(InvalidQuantity, "quantity must be positive");
        }
        if !inst.is_on_lot(new.quantity) {
            return deny(LotSize, format!("quantity must be a multiple of {}", inst.lot_size));
        }
        if !new.reduce_only && (new.leverage == 0 || new.leverage > inst.max_leverage) {
            return deny(InvalidLeverage, format!("leverage must be 1..={}", inst.max_leverage));
        }
        match new.order_type {
            OrderType::Market => {
                if new.price.is_some() || new.stop_price.is_some() || new.post_only {
                    return deny(InvalidOrder, "a market order has no price, stop price or post-only");
                }
            }
            OrderType::Limit => {
                if new.price.is_none() {
                    return deny(MissingPrice, "a limit order needs a price");
                }
                if new.stop_price.is_some() {
                    return deny(InvalidOrder, "a limit order has no stop price");
                }
            }
            OrderType::Stop | OrderType::TakeProfit => {
                if new.stop_price.is_none() {
                    return deny(MissingStopPrice, "a stop or take-profit order needs a stop price");
                }
                if new.time_in_force != TimeInForce::Gtc || new.post_only {
                    return deny(InvalidOrder, "stop and take-profit orders are GTC and not post-only");
                }
            }
        }
        if new.post_only && (new.order_type != OrderType::Limit || new.time_in_force != TimeInForce::Gtc) {
            return deny(InvalidOrder, "post-only needs a GTC limit order");
        }
        for p in [new.price, new.stop_price].into_iter().flatten() {
            if !inst.is_on_tick(p) {
                return deny(TickSize, format!("prices must be positive multiples of {}", inst.tick_size));
            }
        }
        let (Some(bid), Some(ask)) = (view.book.best_bid(), view.book.best_ask()) else {
            return deny(NoMarketData, format!("no book yet for {}", new.symbol));
        };
        let last = view.last.unwrap_or((bid + ask) / Decimal::TWO);
        if let Some(c) = &new.client_order_id
            && self.client_ids.contains(&(new.user_id.clone(), c.clone()))
        {
            return deny(DuplicateClientOrderId, format!("client order id {c} is in use"));
        }
        let key: PositionKey = (new.portfolio_id.clone(), new.symbol.clone(), new.bot_id.clone());
        let pos = self.positions.get(&key);
        if new.reduce_only {
            let reduces = pos.is_some_and(|p| Side::opening(p.row.side) != new.side);
            if !reduces {
                return deny(ReduceOnlyWouldIncrease, "reduce-only order would open or increase a position");
            }
        } else if let Some(p) = pos
            && Side::opening(p.row.side) == new.side
            && p.row.leverage != new.leverage
        {
            return deny(LeverageMismatch, format!("the open position uses leverage {}", p.row.leverage));
        }
        if let Some(stop) = new.stop_price
            && triggers(new.order_type, new.side, stop, last)
        {
            return deny(
                WouldTriggerImmediately,
                format!("last price {last} is already past the stop price"),
            );
        }
        let touch = match new.side {
            Side::Buy => ask,
            Side::Sell => bid,
        };
        if let Some(chain) = &new.chain {
            if new.reduce_only || (chain.take_profit.is_none() && chain.stop_loss.is_none()) {
                return deny(InvalidChain, "a chain needs an opening entry and a take-profit or stop-loss");
            }
            let entry = new.price.or(new.stop_price).unwrap_or(touch);
            let s = new.side.sign();
            for (p, is_tp) in [(chain.take_profit, true), (chain.stop_loss, false)] {
                let Some(p) = p else { continue };
                if !inst.is_on_tick(p) {
                    return deny(TickSize, format!("chain prices must be multiples of {}", inst.tick_size));
                }
                let profit_side = (p - entry) * s > Decimal::ZERO;
                if profit_side != is_tp || p == entry {
                    return deny(
                        InvalidChain,
                        "take-profit must be beyond the entry price, stop-loss before it",
                    );
                }
            }
        }
        if new.post_only {
            let limit = new.price.unwrap_or_default();
            let crosses = match new.side {
                Side::Buy => limit >= ask,
                Side::Sell => limit <= bid,
            };
            if crosses {
                return deny(PostOnlyWouldCross, "post-only order would take liquidity");
            }
        }
        let exec_qty = match pos {
            Some(p) if new.reduce_only => new.quantity.min(p.row.quantity),
            _ => new.quantity,
        };
        let crossing = matches!(new.order_type, OrderType::Market | OrderType::Limit) && !new.post_only;
        let fills = if crossing { walk(&view.book, new.side, new.price, exec_qty) } else { Vec::new() };
        if new.time_in_force == TimeInForce::Fok && (total_qty(&fills) < new.quantity || !crossing) {
            return deny(FokCannotFill, "fill-or-kill order cannot fill completely now");
        }
        let reference = match new.order_type {
            OrderType::Market => fills.last().map(|f| f.0).unwrap_or(touch),
            _ => new.price.or(new.stop_price).unwrap_or(touch),
        };
        if !new.reduce_only && new.quantity * reference < inst.min_notional {
            return deny(MinNotional, format!("notional must be at least {}", inst.min_notional));
        }
        let reserve = if new.reduce_only {
            Decimal::ZERO
        } else {
            let notional = new.quantity * reference;
            money(notional / Decimal::from(new.leverage) + notional * inst.taker_fee)
        };
        if reserve > Decimal::ZERO && reserve > acct.row.margin_available {
            return deny(
                InsufficientMargin,
                format!("needs {reserve} margin, {} available", acct.row.margin_available),
            );
        }
        Ok(Plan { key, reserve })
    }

    fn accept(&mut self, new: NewOrder, plan: Plan, now_ms: i64, out: &mut Vec<Effect>) -> u64 {
        let id = self.ids.next("ord");
        let chain_id = new.chain.as_ref().map(|_| self.ids.next("chn"));
        let row = Order {
            client_order_id: new.client_order_id.clone().unwrap_or_else(|| id.clone()),
            id: id.clone(),
            user_id: new.user_id.clone(),
            portfolio_id: new.portfolio_id.clone(),
            bot_id: new.bot_id.clone(),
            symbol: new.symbol.clone(),
            side: new.side,
            order_type: new.order_type,
            time_in_force: new.time_in_force,
            price: new.price,
            stop_price: new.stop_price,
            quantity: new.quantity,
            filled_quantity: Decimal::ZERO,
            avg_fill_price: None,
            status: OrderStatus::New,
            reduce_only: new.reduce_only,
            post_only: new.post_only,
            reject_reason: None,
            chain_id: chain_id.clone(),
            chain_role: chain_id.as_ref().map(|_| ChainRole::Entry),
            created_at: now_ms,
            updated_at: now_ms,
        };
        let leverage = if new.reduce_only { new.leverage.max(1) } else { new.leverage };
        let seq = self.insert_order(OrderState {
            row,
            reserved: plan.reserve,
            leverage,
            filled_notional: Decimal::ZERO,
        });
        let o = &self.orders[&seq].row;
        out.push(Effect::OrderUpserted(o.clone()));
        let detail = json!({
            "type": o.order_type, "side": o.side, "quantity": o.quantity, "price": o.price,
            "stop_price": o.stop_price, "reserved_margin": plan.reserve, "leverage": leverage,
            "position_key": {"symbol": plan.key.1, "bot_id": plan.key.2},
        });
        let user = o.user_id.clone();
        self.record(out, &user, LifecycleEntity::Order, &id, "accepted", detail, now_ms);
        if let Some(acct) = self.accounts.get_mut(&new.portfolio_id) {
            acct.reserve(plan.reserve);
        }
        self.touched.insert(new.portfolio_id.clone());
        self.flush(now_ms, out);
        if let (Some(cid), Some(spec)) = (chain_id, new.chain) {
            let chain = Chain {
                user_id: user.clone(),
                entry_side: new.side,
                take_profit: spec.take_profit,
                stop_loss: spec.stop_loss,
                tp_order: None,
                sl_order: None,
                entry_open: true,
            };
            self.chains.insert(cid.clone(), chain);
            let detail =
                json!({"entry_order_id": id, "take_profit": spec.take_profit, "stop_loss": spec.stop_loss});
            self.record(out, &user, LifecycleEntity::Chain, &cid, "created", detail, now_ms);
        }
        seq
    }

    pub(crate) fn insert_order(&mut self, state: OrderState) -> u64 {
        self.next_seq += 1;
        let seq = self.next_seq;
        self.order_index.insert(state.row.id.clone(), seq);
        self.client_ids.insert((state.row.user_id.clone(), state.row.client_order_id.clone()));
        self.orders.insert(seq, state);
        seq
    }

    /// Run a just-accepted order: cross the book, rest, or wait for its trigger.
    fn execute_new(&mut self, seq: u64, now_ms: i64, out: &mut Vec<Effect>) {
        let Some(o) = self.orders.get(&seq) else { return };
        let row = &o.row;
        match row.order_type {
            OrderType::Stop | OrderType::TakeProfit => {}
            OrderType::Limit if row.post_only => {}
            OrderType::Market | OrderType::Limit => {
                let (ty, tif) = (row.order_type, row.time_in_force);
                self.take_liquidity(seq, now_ms, out);
                let rests = ty == OrderType::Limit && tif == TimeInForce::Gtc;
                if !rests && self.orders.contains_key(&seq) {
                    self.end_order(seq, OrderStatus::Expired, "unfilled_remainder", now_ms, out);
                }
            }
        }
    }

    /// Append a lifecycle record.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record(
        &mut self,
        out: &mut Vec<Effect>,
        user_id: &str,
        entity: LifecycleEntity,
        entity_id: &str,
        event: &str,
        detail: serde_json::Value,
        ts: i64,
    ) {
        out.push(Effect::Lifecycle(Lifecycle {
            id: self.ids.next("lc"),
            user_id: user_id.to_string(),
            entity,
            entity_id: entity_id.to_string(),
            event: event.to_string(),
            detail,
            ts,
        }));
    }

    /// Emit the rows of touched portfolios that changed, after revaluing them.
    pub(crate) fn flush(&mut self, now_ms: i64, out: &mut Vec<Effect>) {
        let touched = std::mem::take(&mut self.touched);
        for pid in touched {
            let unrealized: Decimal = self
                .positions
                .values()
                .filter(|p| p.row.portfolio_id == pid)
                .map(|p| p.row.unrealized_pnl)
                .sum();
            if let Some(acct) = self.accounts.get_mut(&pid) {
                acct.revalue(unrealized);
                if let Some(row) = acct.take_update(now_ms) {
                    out.push(Effect::PortfolioUpdated(row));
                }
            }
        }
    }

    /// Mark every portfolio as touched (e.g. to emit rows recomputed at start).
    pub(crate) fn touch_all(&mut self) {
        self.touched.extend(self.accounts.keys().cloned());
    }
}
