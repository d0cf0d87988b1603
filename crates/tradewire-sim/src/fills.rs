//! How the engine executes: applying fills to orders, positions and accounts; ending
//! orders; and reacting to market events (resting limits filled by the book or a trade
//! print, stop/take-profit triggers, marking positions, margin calls, liquidations).

use rust_decimal::Decimal;
use serde_json::json;

use crate::accounts::money;
use crate::engine::{Engine, PositionKey, walk};
use crate::model::{
    Effect, Fill, LifecycleEntity, Liquidity, Order, OrderStatus, OrderType, Position, PositionSide,
    PositionStatus, Side, TimeInForce,
};
use crate::orders::{OrderState, transition, triggers};
use crate::positions::PositionState;
use crate::price_model::{MarketEvent, Trade};

/// How a batch of fills is priced and what a position that goes flat becomes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FillMode {
    pub liquidity: Liquidity,
    /// A fixed fee for each fill instead of the instrument's rate (liquidations).
    pub fee: Option<Decimal>,
    pub close_status: PositionStatus,
}

impl FillMode {
    pub fn taker() -> Self {
        FillMode { liquidity: Liquidity::Taker, fee: None, close_status: PositionStatus::Closed }
    }
    pub fn maker() -> Self {
        FillMode { liquidity: Liquidity::Maker, ..Self::taker() }
    }
}

/// One position's change within a batch of fills.
struct PosChange {
    before: Option<Position>,
    after: Position,
    gross: Decimal,
    fees: Decimal,
}

pub(crate) fn order_key(o: &Order) -> PositionKey {
    (o.portfolio_id.clone(), o.symbol.clone(), o.bot_id.clone())
}

impl Engine {
    /// The quantity an order may still fill: its remainder, and for a reduce-only order no
    /// more than the opposite position (0 if there is none).
    pub(crate) fn executable_qty(&self, o: &OrderState) -> Decimal {
        let rem = o.row.remaining();
        if !o.row.reduce_only {
            return rem;
        }
        match self.positions.get(&order_key(&o.row)) {
            Some(p) if Side::opening(p.row.side) != o.row.side => rem.min(p.row.quantity),
            _ => Decimal::ZERO,
        }
    }

    /// Cross the book as taker (up to the order's limit price, if any).
    pub(crate) fn take_liquidity(&mut self, seq: u64, now_ms: i64, out: &mut Vec<Effect>) {
        let Some(o) = self.orders.get(&seq) else { return };
        let qty = self.executable_qty(o);
        let Some(view) = self.symbols.get(&o.row.symbol) else { return };
        if qty.is_zero() || !view.has_book {
            return;
        }
        let fills = walk(&view.book, o.row.side, o.row.price, qty);
        self.execute_fills(seq, &fills, FillMode::taker(), now_ms, out);
    }

    /// Apply `fills` (price, quantity) to order `seq`, then emit, in this order: the fills,
    /// the order row, the position rows, chain steps, cancellations of reduce-only orders
    /// that no longer reduce. The portfolio row follows at the next flush.
    pub(crate) fn execute_fills(
        &mut self,
        seq: u64,
        fills: &[(Decimal, Decimal)],
        mode: FillMode,
        now_ms: i64,
        out: &mut Vec<Effect>,
    ) {
        let Some(o) = self.orders.get(&seq) else { return };
        let status_before = o.row.status;
        let filled_before = o.row.filled_quantity;
        let key = order_key(&o.row);
        let mut changes: Vec<PosChange> = Vec::new();
        let mut n = 0;
        for &(price, qty) in fills {
            let Some(o) = self.orders.get(&seq) else { break };
            let qty = qty.min(self.executable_qty(o));
            if qty <= Decimal::ZERO {
                break;
            }
            n += 1;
            for c in self.apply_fill(seq, price, qty, mode, now_ms, out) {
                match changes.iter_mut().find(|x| x.after.id == c.after.id) {
                    Some(x) => {
                        x.after = c.after;
                        x.gross = c.gross;
                        x.fees = c.fees;
                    }
                    None => changes.push(c),
                }
            }
        }
        if n == 0 {
            return;
        }
        // The order row.
        let Some(o) = self.orders.get_mut(&seq) else { return };
        let to = if o.row.remaining().is_zero() { OrderStatus::Filled } else { OrderStatus::PartiallyFilled };
        if transition(&mut o.row, to).is_err() {
            self.transition_errors += 1;
        }
        o.row.updated_at = now_ms;
        let row = o.row.clone();
        out.push(Effect::OrderUpserted(row.clone()));
        let detail = json!({
            "from": status_before, "to": row.status, "filled_quantity": row.filled_quantity,
            "avg_fill_price": row.avg_fill_price, "fills": n,
        });
        self.record(out, &row.user_id, LifecycleEntity::Order, &row.id, row.status.as_str(), detail, now_ms);
        // The position rows.
        for c in changes {
            let event = match (c.after.status, &c.before) {
                (PositionStatus::Liquidated, _) => "liquidated",
                (PositionStatus::Closed, _) => "closed",
                (_, None) => "opened",
                (_, Some(b)) if c.after.quantity > b.quantity => "increased",
                _ => "reduced",
            };
            let detail = json!({
                "order_id": row.id, "side": c.after.side,
                "quantity_before": c.before.as_ref().map(|b| b.quantity).unwrap_or_default(),
                "quantity": c.after.quantity, "entry_price": c.after.entry_price,
                "leverage": c.after.leverage, "margin": c.after.margin,
                "realized_pnl_gross": c.gross, "fees": c.fees, "realized_pnl": c.after.realized_pnl,
                "liquidation_price": c.after.liquidation_price,
            });
            out.push(Effect::PositionUpserted(c.after.clone()));
            self.record(out, &c.after.user_id, LifecycleEntity::Position, &c.after.id, event, detail, now_ms);
        }
        if row.status == OrderStatus::Filled {
            self.forget_order(seq);
        }
        self.on_chain_fill(&row, row.filled_quantity - filled_before, now_ms, out);
        self.cancel_stale_reduce_only(&key, now_ms, out);
    }

    /// Apply one fill. Returns the positions it changed.
    fn apply_fill(
        &mut self,
        seq: u64,
        price: Decimal,
        qty: Decimal,
        mode: FillMode,
        now_ms: i64,
        out: &mut Vec<Effect>,
    ) -> Vec<PosChange> {
        let Some(o) = self.orders.get_mut(&seq) else { return Vec::new() };
        let Some(view) = self.symbols.get(&o.row.symbol) else { return Vec::new() };
        let inst = &view.inst;
        let valuation = view.mark.unwrap_or(price);
        // Order: fill quantity, average price, release the reserve share.
        let remaining = o.row.remaining();
        let release = if qty >= remaining { o.reserved } else { money(o.reserved * qty / remaining) };
        o.reserved -= release;
        o.row.filled_quantity += qty;
        o.filled_notional += price * qty;
        o.row.avg_fill_price = Some((o.filled_notional / o.row.filled_quantity).round_dp(8).normalize());
        let row = o.row.clone();
        let leverage = o.leverage;
        let rate = match mode.liquidity {
            Liquidity::Maker => inst.maker_fee,
            Liquidity::Taker => inst.taker_fee,
        };
        let fee = mode.fee.unwrap_or_else(|| money(price * qty * rate));
        let Some(acct) = self.accounts.get_mut(&row.portfolio_id) else { return Vec::new() };
        acct.release(release);
        self.touched.insert(row.portfolio_id.clone());

        // Position: reduce the opposite side first, open or add with the rest.
        let key = order_key(&row);
        let mut changes = Vec::new();
        let close_qty = match self.positions.get(&key) {
            Some(p) if Side::opening(p.row.side) != row.side => qty.min(p.row.quantity),
            _ => Decimal::ZERO,
        };
        let open_qty = qty - close_qty;
        let fee_close = if open_qty.is_zero() { fee } else { money(fee * close_qty / qty) };
        let fee_open = fee - fee_close;
        let mut gross = Decimal::ZERO;
        if let Some(p) = self.positions.get_mut(&key).filter(|_| close_qty > Decimal::ZERO) {
            let before = p.row.clone();
            let (g, released) = p.reduce(close_qty, price, fee_close);
            gross = g;
            acct.release(released);
            acct.realize(g - fee_close);
            p.row.updated_at = now_ms;
            if p.row.quantity.is_zero() {
                p.row.status = mode.close_status;
                p.row.closed_at = Some(now_ms);
                p.row.unrealized_pnl = Decimal::ZERO;
                p.row.liquidation_price = None;
                p.row.mark_price = Some(valuation);
                let closed = self.positions.remove(&key).expect("position present");
                changes.push(PosChange {
                    before: Some(before),
                    after: closed.row,
                    gross: closed.gross_realized,
                    fees: closed.fees,
                });
            } else {
                p.revalue(valuation, inst);
                changes.push(PosChange {
                    before: Some(before),
                    after: p.row.clone(),
                    gross: p.gross_realized,
                    fees: p.fees,
                });
            }
        }
        if open_qty > Decimal::ZERO {
            let p = self.positions.entry(key.clone()).or_insert_with(|| {
                PositionState::new(Position {
                    id: self.ids.next("pos"),
                    user_id: row.user_id.clone(),
                    portfolio_id: row.portfolio_id.clone(),
                    bot_id: row.bot_id.clone(),
                    symbol: row.symbol.clone(),
                    side: match row.side {
                        Side::Buy => PositionSide::Long,
                        Side::Sell => PositionSide::Short,
                    },
                    status: PositionStatus::Open,
                    quantity: Decimal::ZERO,
                    entry_price: price,
                    mark_price: None,
                    leverage,
                    margin: Decimal::ZERO,
                    unrealized_pnl: Decimal::ZERO,
                    realized_pnl: Decimal::ZERO,
                    liquidation_price: None,
                    opened_at: now_ms,
                    closed_at: None,
                    updated_at: now_ms,
                })
            });
            let before = (!p.row.quantity.is_zero()).then(|| p.row.clone());
            let margin = money(open_qty * price / Decimal::from(p.row.leverage));
            p.add(open_qty, price, fee_open, margin);
            acct.reserve(margin);
            acct.realize(-fee_open);
            p.revalue(valuation, inst);
            p.row.updated_at = now_ms;
            changes.push(PosChange { before, after: p.row.clone(), gross: p.gross_realized, fees: p.fees });
        }

        out.push(Effect::FillCreated(Fill {
            id: self.ids.next("fil"),
            user_id: row.user_id.clone(),
            order_id: row.id.clone(),
            portfolio_id: row.portfolio_id.clone(),
            symbol: row.symbol.clone(),
            side: row.side,
            price,
            quantity: qty,
            fee,
            fee_asset: "USDT".to_string(),
            liquidity: mode.liquidity,
            realized_pnl: gross,
            ts: now_ms,
        }));
        changes
    }

    /// Drop a terminal order from the open-order maps, releasing any reserve left.
    fn forget_order(&mut self, seq: u64) -> Option<OrderState> {
        let mut o = self.orders.remove(&seq)?;
        self.order_index.remove(&o.row.id);
        self.client_ids.remove(&(o.row.user_id.clone(), o.row.client_order_id.clone()));
        if !o.reserved.is_zero()
            && let Some(acct) = self.accounts.get_mut(&o.row.portfolio_id)
        {
            acct.release(o.reserved);
            o.reserved = Decimal::ZERO;
            self.touched.insert(o.row.portfolio_id.clone());
        }
        Some(o)
    }

    /// End an open order as canceled, expired or rejected, releasing its reserve.
    pub(crate) fn end_order(
        &mut self,
        seq: u64,
        to: OrderStatus,
        reason: &str,
        now_ms: i64,
        out: &mut Vec<Effect>,
    ) {
        let Some(o) = self.orders.get(&seq) else { return };
        if !o.row.status.can_become(to) {
            self.transition_errors += 1;
            return;
        }
        let Some(mut o) = self.forget_order(seq) else { return };
        let from = o.row.status;
        o.row.status = to;
        if to == OrderStatus::Rejected {
            o.row.reject_reason = Some(reason.to_string());
        }
        o.row.updated_at = now_ms;
        out.push(Effect::OrderUpserted(o.row.clone()));
        let detail =
            json!({"from": from, "to": to, "reason": reason, "filled_quantity": o.row.filled_quantity});
        self.record(out, &o.row.user_id, LifecycleEntity::Order, &o.row.id, to.as_str(), detail, now_ms);
        self.touched.insert(o.row.portfolio_id.clone());
        self.on_chain_order_ended(&o.row, reason, now_ms, out);
    }

    /// Cancel reduce-only orders on `key` that would no longer reduce (no position, or the
    /// position flipped to their side).
    fn cancel_stale_reduce_only(&mut self, key: &PositionKey, now_ms: i64, out: &mut Vec<Effect>) {
        let open_side = self.positions.get(key).map(|p| Side::opening(p.row.side));
        let stale: Vec<u64> = self
            .orders
            .iter()
            .filter(|(_, o)| {
                o.row.reduce_only && order_key(&o.row) == *key && open_side.is_none_or(|s| s == o.row.side)
            })
            .map(|(s, _)| *s)
            .collect();
        for s in stale {
            self.end_order(s, OrderStatus::Canceled, "position_closed", now_ms, out);
        }
    }

    // ----- market events -----------------------------------------------------------------

    /// Apply public market events in order: fill resting orders, trigger stops, mark
    /// positions, margin calls and liquidations. Returns the resulting effects.
    pub fn on_market(&mut self, events: &[MarketEvent]) -> Vec<Effect> {
        let mut out = Vec::new();
        for e in events {
            let symbol = e.symbol().to_string();
            let Some(view) = self.symbols.get_mut(&symbol) else { continue };
            let now = match e {
                MarketEvent::BookSnapshot(s) => {
                    view.book.apply_snapshot(s.update_id, &s.bids, &s.asks);
                    view.has_book = true;
                    self.fill_resting_by_book(&symbol, s.ts, &mut out);
                    s.ts
                }
                MarketEvent::BookDelta(d) => {
                    view.has_book = view.has_book
                        && view.book.apply_delta(d.update_id, d.prev_update_id, &d.bids, &d.asks);
                    self.fill_resting_by_book(&symbol, d.ts, &mut out);
                    d.ts
                }
                MarketEvent::Trade(t) => {
                    view.last = Some(t.price);
                    self.fill_resting_by_trade(t, &mut out);
                    t.ts
                }
                MarketEvent::Ticker(t) => {
                    view.last = Some(t.last);
                    self.trigger_orders(&symbol, t.last, t.ts, &mut out);
                    self.sweep(&symbol, t.ts, &mut out);
                    t.ts
                }
                MarketEvent::Mark(m) => {
                    view.mark = Some(m.price);
                    self.mark_positions(&symbol, m.price, m.ts, &mut out);
                    m.ts
                }
                MarketEvent::Kline(k) => k.open_time,
            };
            self.flush(now, &mut out);
        }
        out
    }

    fn seqs_on(&self, symbol: &str, pred: impl Fn(&OrderState) -> bool) -> Vec<u64> {
        self.orders.iter().filter(|(_, o)| o.row.symbol == symbol && pred(o)).map(|(s, _)| *s).collect()
    }

    /// Resting limits the book has moved through fill as maker at their limit price.
    fn fill_resting_by_book(&mut self, symbol: &str, now_ms: i64, out: &mut Vec<Effect>) {
        for seq in self.seqs_on(symbol, OrderState::is_resting_limit) {
            let Some(o) = self.orders.get(&seq) else { continue };
            let Some(view) = self.symbols.get(symbol).filter(|v| v.has_book) else { return };
            let Some(limit) = o.row.price else { continue };
            let available: Decimal = match o.row.side {
                Side::Buy => view.book.asks_asc().take_while(|(p, _)| *p <= limit).map(|l| l.1).sum(),
                Side::Sell => view.book.bids_desc().take_while(|(p, _)| *p >= limit).map(|l| l.1).sum(),
            };
            let qty = available.min(self.executable_qty(o));
            if qty > Decimal::ZERO {
                self.execute_fills(seq, &[(limit, qty)], FillMode::maker(), now_ms, out);
            }
        }
    }

    /// A trade print through a resting limit fills it (as maker, at its limit price) up to
    /// the printed quantity.
    fn fill_resting_by_trade(&mut self, t: &Trade, out: &mut Vec<Effect>) {
        for seq in self.seqs_on(&t.symbol, OrderState::is_resting_limit) {
            let Some(o) = self.orders.get(&seq) else { continue };
            let Some(limit) = o.row.price else { continue };
            let through = match o.row.side {
                Side::Buy => t.side == Side::Sell && t.price <= limit,
                Side::Sell => t.side == Side::Buy && t.price >= limit,
            };
            let qty = t.qty.min(self.executable_qty(o));
            if through && qty > Decimal::ZERO {
                self.execute_fills(seq, &[(limit, qty)], FillMode::maker(), t.ts, out);
            }
        }
    }

    /// Stop and take-profit orders whose trigger the last price has reached become
    /// `triggered`; stop-limits then cross what they can and rest.
    fn trigger_orders(&mut self, symbol: &str, last: Decimal, now_ms: i64, out: &mut Vec<Effect>) {
        for seq in self.seqs_on(symbol, OrderState::is_waiting_trigger) {
            let Some(o) = self.orders.get_mut(&seq) else { continue };
            let Some(stop) = o.row.stop_price else { continue };
            if !triggers(o.row.order_type, o.row.side, stop, last) {
                continue;
            }
            if transition(&mut o.row, OrderStatus::Triggered).is_err() {
                self.transition_errors += 1;
                continue;
            }
            o.row.updated_at = now_ms;
            let row = o.row.clone();
            out.push(Effect::OrderUpserted(row.clone()));
            let detail = json!({"from": OrderStatus::New, "to": OrderStatus::Triggered, "stop_price": stop, "last": last});
            self.record(out, &row.user_id, LifecycleEntity::Order, &row.id, "triggered", detail, now_ms);
            let Some(o) = self.orders.get(&seq) else { continue };
            if row.reduce_only && self.executable_qty(o).is_zero() {
                self.end_order(seq, OrderStatus::Rejected, "reduce_only_would_increase", now_ms, out);
            } else if row.price.is_some() {
                self.take_liquidity(seq, now_ms, out);
            }
        }
    }

    /// Triggered stop-market orders take liquidity until filled.
    fn sweep(&mut self, symbol: &str, now_ms: i64, out: &mut Vec<Effect>) {
        for seq in self.seqs_on(symbol, OrderState::is_sweeping) {
            self.take_liquidity(seq, now_ms, out);
        }
    }

    /// Value open positions at the new mark; liquidate those at their liquidation price;
    /// record margin calls.
    fn mark_positions(&mut self, symbol: &str, mark: Decimal, now_ms: i64, out: &mut Vec<Effect>) {
        let keys: Vec<PositionKey> = self.positions.keys().filter(|k| k.1 == symbol).cloned().collect();
        let Some(inst) = self.symbols.get(symbol).map(|v| v.inst.clone()) else { return };
        for key in keys {
            let Some(p) = self.positions.get_mut(&key) else { continue };
            if p.should_liquidate(mark, &inst) {
                self.liquidate(&key, mark, now_ms, out);
                continue;
            }
            let before = p.row.clone();
            p.revalue(mark, &inst);
            let call = p.in_margin_call(mark, &inst);
            let event = match (call, p.margin_call) {
                (true, false) => Some("margin_call"),
                (false, true) => Some("margin_call_cleared"),
                _ => None,
            };
            p.margin_call = call;
            if p.row != before {
                p.row.updated_at = now_ms;
                let row = p.row.clone();
                out.push(Effect::PositionUpserted(row.clone()));
                self.touched.insert(row.portfolio_id.clone());
                if let Some(event) = event {
                    let maintenance =
                        self.positions.get(&key).map(|p| p.maintenance(mark, &inst)).unwrap_or_default();
                    let detail = json!({
                        "mark_price": mark, "margin": row.margin, "unrealized_pnl": row.unrealized_pnl,
                        "maintenance_margin": maintenance, "liquidation_price": row.liquidation_price,
                    });
                    self.record(out, &row.user_id, LifecycleEntity::Position, &row.id, event, detail, now_ms);
                }
            }
        }
    }

    /// Close a position at its liquidation price with a reduce-only market order. The fee
    /// is whatever margin is left, so the trader loses exactly the position's margin.
    fn liquidate(&mut self, key: &PositionKey, mark: Decimal, now_ms: i64, out: &mut Vec<Effect>) {
        let Some(p) = self.positions.get(key) else { return };
        let price = p.row.liquidation_price.unwrap_or(mark);
        let gross = p.unrealized_at(price);
        let fee = (p.row.margin + gross).max(Decimal::ZERO);
        let pos = p.row.clone();
        let id = self.ids.next("ord");
        let row = Order {
            client_order_id: id.clone(),
            id: id.clone(),
            user_id: pos.user_id.clone(),
            portfolio_id: pos.portfolio_id.clone(),
            bot_id: pos.bot_id.clone(),
            symbol: pos.symbol.clone(),
            side: Side::opening(pos.side).opposite(),
            order_type: OrderType::Market,
            time_in_force: TimeInForce::Ioc,
            price: None,
            stop_price: None,
            quantity: pos.quantity,
            filled_quantity: Decimal::ZERO,
            avg_fill_price: None,
            status: OrderStatus::New,
            reduce_only: true,
            post_only: false,
            reject_reason: None,
            chain_id: None,
            chain_role: None,
            created_at: now_ms,
            updated_at: now_ms,
        };
        out.push(Effect::OrderUpserted(row.clone()));
        let detail =
            json!({"reason": "liquidation", "position_id": pos.id, "mark_price": mark, "price": price});
        self.record(out, &pos.user_id, LifecycleEntity::Order, &id, "accepted", detail, now_ms);
        let seq = self.insert_order(OrderState {
            row,
            reserved: Decimal::ZERO,
            leverage: pos.leverage,
            filled_notional: Decimal::ZERO,
        });
        let mode = FillMode {
            liquidity: Liquidity::Taker,
            fee: Some(fee),
            close_status: PositionStatus::Liquidated,
        };
        self.execute_fills(seq, &[(price, pos.quantity)], mode, now_ms, out);
    }
}
