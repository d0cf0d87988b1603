//! Bots: a bot row, its parsed config and its strategy, and how a decision becomes orders.
//!
//! `running` bots evaluate and trade; `paused` bots evaluate and only reduce or close
//! positions (opening is skipped and recorded); `stopped` bots keep their strategy's price
//! history warm but emit nothing and place nothing. Orders go through the engine like a
//! user's, so its gates (bot status, circuit breaker) are enforced there too; a denial is
//! recorded as a `lifecycle` row on the bot.

use rust_decimal::Decimal;
use serde_json::json;

use crate::engine::Engine;
use crate::model::{Bot, BotStatus, Direction, Effect, LifecycleEntity, PositionSide, Side, Signal};
use crate::orders::{ChainSpec, NewOrder};
use crate::strategy::{BotConfig, Decision, Intent, Strategy};

/// Why a bot row cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BotError {
    #[error("unknown strategy {0:?} (known: ma_crossover, mean_reversion, grid)")]
    UnknownStrategy(String),
    #[error("invalid bot config: {0}")]
    InvalidConfig(String),
}

/// A bot the simulator runs.
#[derive(Debug, Clone)]
pub(crate) struct BotRuntime {
    pub row: Bot,
    pub config: BotConfig,
    pub strategy: Strategy,
    pub next_sample_ms: i64,
}

impl BotRuntime {
    pub fn new(row: Bot) -> Result<Self, BotError> {
        let config: BotConfig =
            serde_json::from_value(row.config.clone()).map_err(|e| BotError::InvalidConfig(e.to_string()))?;
        if config.sample_ms <= 0 || config.leverage == 0 {
            return Err(BotError::InvalidConfig("sample_ms and leverage must be positive".into()));
        }
        let strategy = Strategy::from_name(&row.strategy, &config)
            .ok_or_else(|| BotError::UnknownStrategy(row.strategy.clone()))?;
        Ok(BotRuntime { row, config, strategy, next_sample_ms: i64::MIN })
    }

    /// Feed the strategy if a sample is due; returns its decision (never for stopped bots).
    pub fn sample(&mut self, price: Decimal, now_ms: i64) -> Option<Decision> {
        if now_ms < self.next_sample_ms {
            return None;
        }
        self.next_sample_ms = now_ms - now_ms.rem_euclid(self.config.sample_ms) + self.config.sample_ms;
        let d = self.strategy.on_price(price);
        if self.row.status == BotStatus::Stopped { None } else { d }
    }

    fn note(
        &self,
        engine: &mut Engine,
        out: &mut Vec<Effect>,
        event: &str,
        detail: serde_json::Value,
        now_ms: i64,
    ) {
        engine.record(out, &self.row.user_id, LifecycleEntity::Bot, &self.row.id, event, detail, now_ms);
    }

    /// Record the signal and act on it.
    pub fn act(&self, engine: &mut Engine, decision: &Decision, now_ms: i64, out: &mut Vec<Effect>) {
        let signal_id = engine.ids.next("sig");
        out.push(Effect::SignalCreated(Signal {
            id: signal_id.clone(),
            user_id: self.row.user_id.clone(),
            bot_id: Some(self.row.id.clone()),
            symbol: self.row.symbol.clone(),
            direction: decision.direction,
            confidence: decision.confidence,
            reason: decision.reason.clone(),
            ts: now_ms,
        }));
        let ignore = |why: &str| json!({"signal_id": signal_id, "reason": why});
        if self.row.status == BotStatus::Stopped {
            return self.note(engine, out, "signal_ignored", ignore("bot_stopped"), now_ms);
        }
        if decision.confidence < self.config.min_confidence {
            return self.note(engine, out, "signal_ignored", ignore("low_confidence"), now_ms);
        }
        let Some(pid) = self.row.portfolio_id.clone() else {
            return self.note(engine, out, "signal_ignored", ignore("no_portfolio"), now_ms);
        };
        let position =
            engine.position(&pid, &self.row.symbol, Some(&self.row.id)).map(|p| (p.side, p.quantity));
        match decision.intent {
            Intent::Target => {
                let want = match decision.direction {
                    Direction::Long => Some(PositionSide::Long),
                    Direction::Short => Some(PositionSide::Short),
                    Direction::Flat => None,
                };
                let mut holding = position.map(|p| p.0);
                if let Some((side, qty)) = position
                    && Some(side) != want
                {
                    let side = Side::opening(side).opposite();
                    if self.submit(engine, self.order(&pid, side, qty, true), &signal_id, now_ms, out) {
                        holding = engine.position(&pid, &self.row.symbol, Some(&self.row.id)).map(|p| p.side);
                    }
                }
                if let Some(want) = want
                    && holding.is_none()
                {
                    self.open(engine, &pid, Side::opening(want), true, &signal_id, now_ms, out);
                }
            }
            Intent::Step(side) => match position {
                Some((pos_side, qty)) if Side::opening(pos_side) != side => {
                    let unit = self.unit(engine).unwrap_or(qty).min(qty);
                    self.submit(engine, self.order(&pid, side, unit, true), &signal_id, now_ms, out);
                }
                _ => {
                    let held = position.map(|p| p.1).unwrap_or_default();
                    let max = self.unit(engine).unwrap_or_default() * Decimal::from(self.config.grid_levels);
                    if held >= max {
                        let detail = json!({"signal_id": signal_id, "reason": "max_inventory", "held": held});
                        self.note(engine, out, "open_skipped", detail, now_ms);
                    } else {
                        self.open(engine, &pid, side, false, &signal_id, now_ms, out);
                    }
                }
            },
        }
    }

    /// Open or add one unit on `side`, with take-profit/stop-loss exits if asked.
    #[allow(clippy::too_many_arguments)]
    fn open(
        &self,
        engine: &mut Engine,
        pid: &str,
        side: Side,
        with_exits: bool,
        signal_id: &str,
        now_ms: i64,
        out: &mut Vec<Effect>,
    ) {
        if self.row.status == BotStatus::Paused {
            let detail = json!({"signal_id": signal_id, "reason": "bot_paused"});
            return self.note(engine, out, "open_skipped", detail, now_ms);
        }
        let Some(qty) = self.unit(engine) else {
            let detail = json!({"signal_id": signal_id, "reason": "no_market_data"});
            return self.note(engine, out, "open_skipped", detail, now_ms);
        };
        let mut order = self.order(pid, side, qty, false);
        if with_exits {
            order.chain = self.exits(engine, side);
        }
        self.submit(engine, order, signal_id, now_ms, out);
    }

    fn order(&self, pid: &str, side: Side, qty: Decimal, reduce_only: bool) -> NewOrder {
        NewOrder {
            bot_id: Some(self.row.id.clone()),
            reduce_only,
            leverage: self.config.leverage,
            ..NewOrder::market(&self.row.user_id, pid, &self.row.symbol, side, qty)
        }
    }

    /// One order's size: the configured quantity, or `notional / price` on the lot, at
    /// least the instrument's minimum notional.
    fn unit(&self, engine: &Engine) -> Option<Decimal> {
        let inst = engine.instrument(&self.row.symbol)?;
        if let Some(q) = self.config.quantity {
            return Some(inst.floor_lot(q).max(inst.lot_size));
        }
        let price = engine.mark_price(&self.row.symbol)?;
        let notional = self.config.notional.max(inst.min_notional);
        let mut q = inst.floor_lot(notional / price).max(inst.lot_size);
        while q * price < inst.min_notional {
            q += inst.lot_size;
        }
        Some(q)
    }

    /// Take-profit and stop-loss prices around the touch price for an entry on `side`.
    fn exits(&self, engine: &Engine, side: Side) -> Option<ChainSpec> {
        let inst = engine.instrument(&self.row.symbol)?;
        let book = engine.book(&self.row.symbol)?;
        let entry = match side {
            Side::Buy => book.best_ask()?,
            Side::Sell => book.best_bid()?,
        };
        let s = side.sign();
        let tp = self
            .config
            .take_profit_pct
            .filter(|p| *p > Decimal::ZERO)
            .map(|p| entry * (Decimal::ONE + s * p));
        let sl =
            self.config.stop_loss_pct.filter(|p| *p > Decimal::ZERO).map(|p| entry * (Decimal::ONE - s * p));
        let (tp, sl) = match side {
            Side::Buy => (tp.map(|p| inst.ceil_tick(p)), sl.map(|p| inst.floor_tick(p))),
            Side::Sell => (tp.map(|p| inst.floor_tick(p)), sl.map(|p| inst.ceil_tick(p))),
        };
        (tp.is_some() || sl.is_some()).then_some(ChainSpec { take_profit: tp, stop_loss: sl })
    }

    /// Place an order; a denial becomes an `order_denied` lifecycle row. True if accepted.
    fn submit(
        &self,
        engine: &mut Engine,
        order: NewOrder,
        signal_id: &str,
        now_ms: i64,
        out: &mut Vec<Effect>,
    ) -> bool {
        match engine.place_order(order, now_ms) {
            Ok(effects) => {
                out.extend(effects);
                true
            }
            Err(denied) => {
                let detail =
                    json!({"signal_id": signal_id, "reason": denied.reason, "message": denied.message});
                self.note(engine, out, "order_denied", detail, now_ms);
                false
            }
        }
    }
}
