//! Tradewire paper trading: a pure, seeded, deterministic simulator of a crypto derivatives
//! venue — market prices and books, order matching, margin accounts and positions, bots
//! running strategies, and a per-portfolio circuit breaker.
//!
//! It owns no IO at all: no clock (time is the `now_ms` argument of every call), no threads,
//! no async, no database, no global RNG (one ChaCha stream per symbol from the seed). The
//! server's driver calls [`Simulator::step`] on a timer and the command methods from the
//! API, and writes the returned [`Effect`]s (full rows of the trading tables) through the
//! database; it publishes the returned [`MarketEvent`]s on the public topics. The same seed
//! and the same sequence of calls always produce the same outputs.
//!
//! Layout, in data-flow order: `instrument` (specs, rounding) → `market` + `book` (price
//! process, public events) → `engine` + `fills` + `chains` (orders, matching) over
//! `orders`, `positions`, `accounts` → `strategy` + `bots` (signals to orders) → `risk`
//! (circuit breaker, P&L snapshots). `model` holds the rows and [`Effect`].

mod accounts;
mod book;
mod bots;
mod chains;
mod engine;
#[cfg(test)]
mod engine_tests;
mod fills;
mod ids;
mod instrument;
mod model;
mod orders;
mod positions;
mod price_model;
mod risk;
mod strategy;

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;

pub use book::{BookView, Level};
pub use bots::BotError;
pub use engine::{Engine, PositionKey};
pub use ids::Ids;
pub use instrument::{Instrument, SymbolConfig, default_instruments, default_symbols};
pub use model::{
    Bot, BotStatus, ChainRole, CircuitBreaker, Direction, Effect, Fill, Lifecycle, LifecycleEntity,
    Liquidity, Order, OrderStatus, OrderType, Pnl, Portfolio, Position, PositionSide, PositionStatus, Risk,
    Side, Signal, TimeInForce,
};
pub use orders::{ChainSpec, Denied, DenyReason, NewOrder, TransitionError, transition};
pub use price_model::{
    BookDelta, BookSnapshot, KLINE_INTERVALS, Kline, Mark, Market, MarketConfig, MarketEvent, Ticker, Trade,
};
pub use strategy::{BotConfig, Decision, Grid, Intent, MaCrossover, MeanReversion, STRATEGIES, Strategy};

use bots::BotRuntime;
use risk::RiskState;

/// How to build a simulator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimConfig {
    pub seed: u64,
    /// The market clock starts here; the first step should be later.
    pub start_ms: i64,
    pub symbols: Vec<SymbolConfig>,
    pub market: MarketConfig,
    /// One `pnl` row per portfolio (and a `risk` refresh) every this many milliseconds.
    pub pnl_interval_ms: i64,
    /// Put into every generated id (`ord_<prefix><n>`) so runs against one database differ.
    pub id_prefix: String,
}

impl SimConfig {
    /// The default ten symbols at realistic volatility, P&L snapshots every 5 s.
    pub fn new(seed: u64, start_ms: i64) -> Self {
        SimConfig {
            seed,
            start_ms,
            symbols: default_symbols(),
            market: MarketConfig::default(),
            pnl_interval_ms: 5_000,
            id_prefix: String::new(),
        }
    }
}

/// Rows the simulator starts from (as stored). It starts flat: no open orders or positions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InitialState {
    pub portfolios: Vec<Portfolio>,
    pub bots: Vec<Bot>,
    /// Existing `risk` rows; portfolios without one get a default (armed, no limits).
    pub risk: Vec<Risk>,
}

/// A command the simulator refused (besides order denials, which are [`Denied`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    #[error("unknown bot {0}")]
    UnknownBot(String),
    #[error("unknown portfolio {0}")]
    UnknownPortfolio(String),
    #[error("unknown symbol {0}")]
    UnknownSymbol(String),
    #[error("bot {bot_id}: {source}")]
    Bot {
        bot_id: String,
        #[source]
        source: BotError,
    },
    #[error("portfolio {0} is halted by its circuit breaker; reset it first")]
    Halted(String),
}

/// What one step produced: public market events and private row changes, in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepOutput {
    pub market: Vec<MarketEvent>,
    pub effects: Vec<Effect>,
}

/// The whole simulation. See the crate docs.
pub struct Simulator {
    market: Market,
    engine: Engine,
    bots: BTreeMap<String, BotRuntime>,
    risk: BTreeMap<String, RiskState>,
    pnl_interval_ms: i64,
    last_pnl_bucket: Option<i64>,
    /// Rows to hand out with the first step (recomputed portfolios, default risk rows).
    pending: Vec<Effect>,
}

impl Simulator {
    pub fn new(config: SimConfig, initial: InitialState) -> Result<Self, SimError> {
        let start = config.start_ms;
        let market = Market::new(config.seed, config.symbols.clone(), config.market, start);
        let instruments = config.symbols.into_iter().map(|s| s.instrument).collect();
        let mut engine = Engine::new(instruments, Ids::new(config.id_prefix));
        for p in initial.portfolios {
            engine.add_portfolio(p);
        }
        let mut pending = engine.on_market(&market.current_events());
        engine.touch_all();
        engine.flush(start, &mut pending);
        let mut sim = Simulator {
            market,
            engine,
            bots: BTreeMap::new(),
            risk: BTreeMap::new(),
            pnl_interval_ms: config.pnl_interval_ms.max(1),
            last_pnl_bucket: None,
            pending,
        };
        let mut stored: BTreeMap<String, Risk> =
            initial.risk.into_iter().map(|r| (r.portfolio_id.clone(), r)).collect();
        let pids: Vec<String> = sim.engine.portfolios().map(|p| p.id.clone()).collect();
        for pid in pids {
            let effects = sim.watch_portfolio(&pid, stored.remove(&pid), start);
            sim.pending.extend(effects);
        }
        for bot in initial.bots {
            sim.upsert_bot(bot)?;
        }
        Ok(sim)
    }

    // ----- the clock ---------------------------------------------------------------------

    /// Advance to `now_ms`: move the market, let the engine react (fills, triggers, marks,
    /// liquidations), let bots act, check circuit breakers, take P&L snapshots. A `now_ms`
    /// not later than the previous step moves nothing.
    pub fn step(&mut self, now_ms: i64) -> StepOutput {
        let mut effects = std::mem::take(&mut self.pending);
        let market = self.market.step(now_ms);
        if market.is_empty() {
            return StepOutput { market, effects };
        }
        effects.extend(self.engine.on_market(&market));
        self.run_bots(now_ms, &mut effects);
        self.run_risk(now_ms, &mut effects);
        StepOutput { market, effects }
    }

    fn run_bots(&mut self, now_ms: i64, out: &mut Vec<Effect>) {
        for bot in self.bots.values_mut() {
            let Some(price) = self.engine.last_price(&bot.row.symbol) else { continue };
            if let Some(decision) = bot.sample(price, now_ms) {
                bot.act(&mut self.engine, &decision, now_ms, out);
            }
        }
    }

    fn run_risk(&mut self, now_ms: i64, out: &mut Vec<Effect>) {
        let mut trips = Vec::new();
        for (pid, rs) in &mut self.risk {
            let Some(p) = self.engine.portfolio(pid) else { continue };
            if let Some(reason) = rs.evaluate(p.equity, now_ms) {
                trips.push((pid.clone(), reason));
            }
        }
        for (pid, reason) in trips {
            self.trip(&pid, reason, now_ms, out);
        }
        let bucket = now_ms.div_euclid(self.pnl_interval_ms);
        if self.last_pnl_bucket == Some(bucket) {
            return;
        }
        self.last_pnl_bucket = Some(bucket);
        let rows: Vec<Portfolio> = self.engine.portfolios().cloned().collect();
        for p in rows {
            out.push(Effect::PnlSnapshot(Pnl {
                id: self.engine.ids.next("pnl"),
                user_id: p.user_id.clone(),
                portfolio_id: p.id.clone(),
                equity: p.equity,
                balance: p.balance,
                realized_pnl: p.realized_pnl,
                unrealized_pnl: p.unrealized_pnl,
                ts: now_ms,
            }));
            if let Some(row) = self.risk.get_mut(&p.id).and_then(|r| r.take_update(now_ms)) {
                out.push(Effect::RiskUpdated(row));
            }
        }
    }

    /// Trip a portfolio's breaker: halt it, cancel its opening orders, pause its bots.
    fn trip(&mut self, pid: &str, reason: &str, now_ms: i64, out: &mut Vec<Effect>) {
        let Some(rs) = self.risk.get_mut(pid) else { return };
        let detail = json!({
            "reason": reason, "daily_pnl": rs.row.daily_pnl, "drawdown": rs.row.drawdown,
            "daily_loss_limit": rs.row.daily_loss_limit, "max_drawdown": rs.row.max_drawdown,
        });
        let user = rs.row.user_id.clone();
        if let Some(row) = rs.take_update(now_ms) {
            out.push(Effect::RiskUpdated(row));
        }
        self.engine.record(
            out,
            &user,
            LifecycleEntity::Portfolio,
            pid,
            "circuit_breaker_tripped",
            detail,
            now_ms,
        );
        self.engine.set_halted(pid, true);
        out.extend(self.engine.cancel_opening_orders(pid, "circuit_breaker", now_ms));
        let running: Vec<String> = self
            .bots
            .values()
            .filter(|b| b.row.portfolio_id.as_deref() == Some(pid) && b.row.status == BotStatus::Running)
            .map(|b| b.row.id.clone())
            .collect();
        for id in running {
            self.change_bot_status(&id, BotStatus::Paused, "circuit_breaker", now_ms, out);
        }
    }

    fn watch_portfolio(&mut self, pid: &str, stored: Option<Risk>, now_ms: i64) -> Vec<Effect> {
        let Some(p) = self.engine.portfolio(pid).cloned() else { return Vec::new() };
        let fresh = stored.is_none();
        let row =
            stored.unwrap_or_else(|| RiskState::default_row(format!("risk_{pid}"), &p.user_id, pid, now_ms));
        let tripped = row.circuit_breaker == CircuitBreaker::Tripped;
        let mut rs = RiskState::new(row, p.equity, now_ms, fresh);
        self.engine.set_halted(pid, tripped);
        let out: Vec<Effect> = rs.take_update(now_ms).map(Effect::RiskUpdated).into_iter().collect();
        self.risk.insert(pid.to_string(), rs);
        out
    }

    // ----- trading commands --------------------------------------------------------------

    /// Place an order (see [`NewOrder`] and [`Engine::place_order`]).
    pub fn place_order(&mut self, order: NewOrder, now_ms: i64) -> Result<Vec<Effect>, Denied> {
        self.engine.place_order(order, now_ms)
    }

    /// Cancel an open order of `user_id`.
    pub fn cancel_order(
        &mut self,
        user_id: &str,
        order_id: &str,
        now_ms: i64,
    ) -> Result<Vec<Effect>, Denied> {
        self.engine.cancel_order(user_id, order_id, now_ms)
    }

    /// Close an open position of `user_id` at market (reduce-only).
    pub fn close_position(
        &mut self,
        user_id: &str,
        position_id: &str,
        now_ms: i64,
    ) -> Result<Vec<Effect>, Denied> {
        self.engine.close_position(user_id, position_id, now_ms)
    }

    // ----- bots --------------------------------------------------------------------------

    /// Add a bot or replace its row (name, strategy, symbol, config, status). The strategy's
    /// state is kept if strategy, symbol and config are unchanged.
    pub fn upsert_bot(&mut self, bot: Bot) -> Result<(), SimError> {
        if let Some(pid) = &bot.portfolio_id
            && self.engine.portfolio(pid).is_none_or(|p| p.user_id != bot.user_id)
        {
            return Err(SimError::UnknownPortfolio(pid.clone()));
        }
        if self.engine.instrument(&bot.symbol).is_none() {
            return Err(SimError::UnknownSymbol(bot.symbol.clone()));
        }
        let id = bot.id.clone();
        let mut runtime =
            BotRuntime::new(bot).map_err(|source| SimError::Bot { bot_id: id.clone(), source })?;
        if let Some(old) = self.bots.get(&id)
            && old.row.strategy == runtime.row.strategy
            && old.row.symbol == runtime.row.symbol
            && old.row.config == runtime.row.config
        {
            runtime.strategy = old.strategy.clone();
            runtime.next_sample_ms = old.next_sample_ms;
        }
        self.engine.set_bot(&id, &runtime.row.user_id, runtime.row.status);
        self.bots.insert(id, runtime);
        Ok(())
    }

    /// Forget a bot (its open orders and positions stay).
    pub fn remove_bot(&mut self, bot_id: &str) {
        self.bots.remove(bot_id);
        self.engine.remove_bot(bot_id);
    }

    /// Change a bot's status now. Returns the bot row and a lifecycle record. Setting
    /// `running` is refused while the portfolio's circuit breaker is tripped.
    pub fn set_bot_status(
        &mut self,
        user_id: &str,
        bot_id: &str,
        status: BotStatus,
        now_ms: i64,
    ) -> Result<Vec<Effect>, SimError> {
        let Some(bot) = self.bots.get(bot_id).filter(|b| b.row.user_id == user_id) else {
            return Err(SimError::UnknownBot(bot_id.to_string()));
        };
        if status == BotStatus::Running
            && let Some(pid) = &bot.row.portfolio_id
            && self.engine.is_halted(pid)
        {
            return Err(SimError::Halted(pid.clone()));
        }
        let mut out = Vec::new();
        self.change_bot_status(bot_id, status, "user", now_ms, &mut out);
        Ok(out)
    }

    fn change_bot_status(
        &mut self,
        bot_id: &str,
        status: BotStatus,
        reason: &str,
        now_ms: i64,
        out: &mut Vec<Effect>,
    ) {
        let Some(bot) = self.bots.get_mut(bot_id) else { return };
        let from = bot.row.status;
        if from == status {
            return;
        }
        bot.row.status = status;
        bot.row.updated_at = now_ms;
        let row = bot.row.clone();
        self.engine.set_bot(bot_id, &row.user_id, status);
        out.push(Effect::BotUpdated(row.clone()));
        let detail = json!({"from": from, "to": status, "reason": reason});
        self.engine.record(out, &row.user_id, LifecycleEntity::Bot, bot_id, "status_changed", detail, now_ms);
    }

    /// Make a bot act now on a given signal, as if its strategy had produced it: the
    /// signal is recorded, then the bot moves its position towards `direction` (subject to
    /// its status and the engine's rules).
    pub fn simulate_signal(
        &mut self,
        user_id: &str,
        bot_id: &str,
        direction: Direction,
        confidence: Decimal,
        now_ms: i64,
    ) -> Result<Vec<Effect>, SimError> {
        let Some(bot) = self.bots.get(bot_id).filter(|b| b.row.user_id == user_id) else {
            return Err(SimError::UnknownBot(bot_id.to_string()));
        };
        let decision = Decision {
            direction,
            confidence: confidence.clamp(Decimal::ZERO, Decimal::ONE),
            reason: "simulated signal".to_string(),
            intent: Intent::Target,
        };
        let mut out = Vec::new();
        bot.act(&mut self.engine, &decision, now_ms, &mut out);
        Ok(out)
    }

    // ----- portfolios and risk -----------------------------------------------------------

    /// Start trading a new portfolio (as stored; it starts flat). Returns its risk row if
    /// one had to be created, and the portfolio row if its derived columns changed.
    pub fn add_portfolio(&mut self, portfolio: Portfolio, risk: Option<Risk>, now_ms: i64) -> Vec<Effect> {
        let pid = portfolio.id.clone();
        self.engine.add_portfolio(portfolio);
        self.engine.touched.insert(pid.clone());
        let mut out = Vec::new();
        self.engine.flush(now_ms, &mut out);
        out.extend(self.watch_portfolio(&pid, risk, now_ms));
        out
    }

    /// Set a portfolio's circuit-breaker limits (0 disables a limit).
    pub fn set_risk_limits(
        &mut self,
        user_id: &str,
        portfolio_id: &str,
        daily_loss_limit: Decimal,
        max_drawdown: Decimal,
        now_ms: i64,
    ) -> Result<Vec<Effect>, SimError> {
        let rs = self
            .risk
            .get_mut(portfolio_id)
            .filter(|r| r.row.user_id == user_id)
            .ok_or_else(|| SimError::UnknownPortfolio(portfolio_id.to_string()))?;
        rs.row.daily_loss_limit = daily_loss_limit.max(Decimal::ZERO);
        rs.row.max_drawdown = max_drawdown.max(Decimal::ZERO);
        Ok(rs.take_update(now_ms).map(Effect::RiskUpdated).into_iter().collect())
    }

    /// Re-arm (or, with `enabled = false`, disable) a portfolio's circuit breaker and lift
    /// the halt. Paused bots stay paused until their owner resumes them.
    pub fn reset_circuit_breaker(
        &mut self,
        user_id: &str,
        portfolio_id: &str,
        enabled: bool,
        now_ms: i64,
    ) -> Result<Vec<Effect>, SimError> {
        let equity = self.engine.portfolio(portfolio_id).map(|p| p.equity).unwrap_or_default();
        let rs = self
            .risk
            .get_mut(portfolio_id)
            .filter(|r| r.row.user_id == user_id)
            .ok_or_else(|| SimError::UnknownPortfolio(portfolio_id.to_string()))?;
        let state = if enabled { CircuitBreaker::Armed } else { CircuitBreaker::Disabled };
        rs.reset(state, equity, now_ms);
        let mut out: Vec<Effect> = rs.take_update(now_ms).map(Effect::RiskUpdated).into_iter().collect();
        let detail = json!({"state": state});
        self.engine.record(
            &mut out,
            user_id,
            LifecycleEntity::Portfolio,
            portfolio_id,
            "circuit_breaker_reset",
            detail,
            now_ms,
        );
        self.engine.set_halted(portfolio_id, false);
        Ok(out)
    }

    // ----- read access -------------------------------------------------------------------

    pub fn market(&self) -> &Market {
        &self.market
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn bot(&self, bot_id: &str) -> Option<&Bot> {
        self.bots.get(bot_id).map(|b| &b.row)
    }

    pub fn bots(&self) -> impl Iterator<Item = &Bot> {
        self.bots.values().map(|b| &b.row)
    }

    pub fn risk(&self, portfolio_id: &str) -> Option<&Risk> {
        self.risk.get(portfolio_id).map(|r| &r.row)
    }
}
