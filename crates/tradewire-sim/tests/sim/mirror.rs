//! A stand-in for the driver's database: applies effects row by row (as the driver would
//! upsert them) and checks, after every call, the invariants the simulator promises.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde_json::json;
use tradewire_sim::{
    BookView, Bot, BotStatus, ChainRole, Effect, Engine, Fill, MarketConfig, MarketEvent, Order, OrderStatus,
    OrderType, Portfolio, Position, PositionStatus, Side, SimConfig, default_symbols,
};

pub fn d(s: &str) -> Decimal {
    s.parse().expect("decimal")
}

/// Three symbols with fast prices, so stops, chains and liquidations happen in minutes.
pub fn small_config(seed: u64) -> SimConfig {
    let symbols = default_symbols()
        .into_iter()
        .filter(|s| ["BTCUSDT", "ETHUSDT", "DOGEUSDT"].contains(&s.instrument.symbol.as_str()))
        .collect();
    SimConfig {
        symbols,
        market: MarketConfig { volatility_scale: 40.0, ..MarketConfig::default() },
        pnl_interval_ms: 5_000,
        ..SimConfig::new(seed, 1_700_000_000_000)
    }
}

pub fn portfolio(id: &str, user: &str, balance: &str) -> Portfolio {
    Portfolio {
        id: id.into(),
        user_id: user.into(),
        name: format!("{id} portfolio"),
        currency: "USDT".into(),
        balance: d(balance),
        equity: d(balance),
        unrealized_pnl: Decimal::ZERO,
        realized_pnl: Decimal::ZERO,
        margin_used: Decimal::ZERO,
        margin_available: d(balance),
        created_at: 0,
        updated_at: 0,
    }
}

pub fn demo_portfolios() -> Vec<Portfolio> {
    vec![portfolio("p1", "u1", "5000"), portfolio("p2", "u1", "20000"), portfolio("p3", "u2", "5000")]
}

pub fn bot(id: &str, user: &str, pid: &str, strategy: &str, symbol: &str, config: serde_json::Value) -> Bot {
    Bot {
        id: id.into(),
        user_id: user.into(),
        portfolio_id: Some(pid.into()),
        name: format!("{strategy} on {symbol}"),
        strategy: strategy.into(),
        symbol: symbol.into(),
        status: BotStatus::Running,
        config,
        created_at: 0,
        updated_at: 0,
    }
}

/// Four fast-sampling bots over the three symbols of [`small_config`].
pub fn demo_bots() -> Vec<Bot> {
    vec![
        bot(
            "b1",
            "u1",
            "p1",
            "ma_crossover",
            "BTCUSDT",
            json!({"fast": 3, "slow": 8, "sample_ms": 250, "leverage": 10}),
        ),
        bot(
            "b2",
            "u1",
            "p2",
            "mean_reversion",
            "ETHUSDT",
            json!({"window": 12, "sample_ms": 250, "entry_z": 1.5}),
        ),
        bot("b3", "u2", "p3", "grid", "DOGEUSDT", json!({"grid_step_pct": "0.0005", "sample_ms": 250})),
        bot(
            "b4",
            "u1",
            "p2",
            "ma_crossover",
            "DOGEUSDT",
            json!({"fast": 2, "slow": 5, "sample_ms": 500, "leverage": 20, "take_profit_pct": null}),
        ),
    ]
}

type Key = (String, String, Option<String>);

/// The driver's view of the tables, rebuilt from effects.
#[derive(Default)]
pub struct Mirror {
    pub orders: BTreeMap<String, Order>,
    pub positions: BTreeMap<String, Position>,
    pub portfolios: BTreeMap<String, Portfolio>,
    pub bots: BTreeMap<String, Bot>,
    pub fills: Vec<Fill>,
    pub signed: BTreeMap<Key, Decimal>,
    pub books: BTreeMap<String, BookView>,
    pub violations: Vec<String>,
    pub counts: BTreeMap<&'static str, usize>,
}

impl Mirror {
    pub fn new(portfolios: &[Portfolio]) -> Self {
        let mut m = Mirror::default();
        for p in portfolios {
            m.portfolios.insert(p.id.clone(), p.clone());
        }
        m
    }

    fn bad(&mut self, msg: String) {
        if self.violations.len() < 20 {
            self.violations.push(msg);
        }
    }

    pub fn apply_market(&mut self, events: &[MarketEvent]) {
        for e in events {
            match e {
                MarketEvent::BookSnapshot(s) => {
                    let v = self.books.entry(s.symbol.clone()).or_default();
                    v.apply_snapshot(s.update_id, &s.bids, &s.asks);
                    self.check_book(&s.symbol);
                }
                MarketEvent::BookDelta(dl) => {
                    let Some(v) = self.books.get_mut(&dl.symbol) else {
                        self.bad(format!("delta before snapshot for {}", dl.symbol));
                        continue;
                    };
                    let chained = dl.prev_update_id == v.update_id && dl.update_id == dl.prev_update_id + 1;
                    let msg = format!(
                        "{}: delta {}<-{} after {}",
                        dl.symbol, dl.update_id, dl.prev_update_id, v.update_id
                    );
                    v.apply_delta(dl.update_id, dl.prev_update_id, &dl.bids, &dl.asks);
                    if !chained {
                        self.bad(msg);
                    }
                    self.check_book(&dl.symbol);
                }
                MarketEvent::Ticker(t) if t.bid >= t.ask => {
                    self.bad(format!("ticker bid {} >= ask {}", t.bid, t.ask));
                }
                _ => {}
            }
        }
    }

    fn check_book(&mut self, symbol: &str) {
        let v = &self.books[symbol];
        if let (Some(b), Some(a)) = (v.best_bid(), v.best_ask())
            && b >= a
        {
            self.bad(format!("{symbol}: book bid {b} >= ask {a}"));
        }
    }

    pub fn apply(&mut self, effects: &[Effect]) {
        for e in effects {
            *self.counts.entry(e.table()).or_default() += 1;
            let portfolio = match e {
                Effect::OrderUpserted(o) => Some(&o.portfolio_id),
                Effect::FillCreated(f) => Some(&f.portfolio_id),
                Effect::PositionUpserted(p) => Some(&p.portfolio_id),
                Effect::RiskUpdated(r) => Some(&r.portfolio_id),
                Effect::PnlSnapshot(p) => Some(&p.portfolio_id),
                Effect::BotUpdated(b) => b.portfolio_id.as_ref(),
                _ => None,
            };
            if let Some(owner) = portfolio.and_then(|p| self.portfolios.get(p)).map(|p| p.user_id.clone())
                && owner != e.user_id()
            {
                self.bad(format!(
                    "a {} row of {owner}'s portfolio is addressed to {}",
                    e.table(),
                    e.user_id()
                ));
            }
            match e {
                Effect::OrderUpserted(o) => self.apply_order(o),
                Effect::FillCreated(f) => self.apply_fill(f),
                Effect::PositionUpserted(p) => {
                    self.positions.insert(p.id.clone(), p.clone());
                }
                Effect::PortfolioUpdated(p) => {
                    self.portfolios.insert(p.id.clone(), p.clone());
                }
                Effect::BotUpdated(b) => {
                    self.bots.insert(b.id.clone(), b.clone());
                }
                _ => {}
            }
        }
    }

    fn apply_order(&mut self, o: &Order) {
        match self.orders.get(&o.id) {
            None if o.status != OrderStatus::New => self.bad(format!("{} first seen as {}", o.id, o.status)),
            Some(old) if old.status.is_terminal() => {
                self.bad(format!("{} changed after {}", o.id, old.status))
            }
            Some(old) if old.status != o.status && !old.status.can_become(o.status) => {
                self.bad(format!("{}: {} -> {} is not in the table", o.id, old.status, o.status))
            }
            _ => {}
        }
        if o.filled_quantity > o.quantity || o.filled_quantity < Decimal::ZERO {
            self.bad(format!("{}: filled {} of {}", o.id, o.filled_quantity, o.quantity));
        }
        self.orders.insert(o.id.clone(), o.clone());
    }

    fn apply_fill(&mut self, f: &Fill) {
        let Some(o) = self.orders.get(&f.order_id).cloned() else {
            return self.bad(format!("fill {} of unknown order {}", f.id, f.order_id));
        };
        if f.side != o.side || f.symbol != o.symbol {
            self.bad(format!("fill {} does not match its order", f.id));
        }
        let limit_applies =
            o.order_type == OrderType::Limit || (o.order_type != OrderType::Market && o.price.is_some());
        if let (true, Some(limit)) = (limit_applies, o.price) {
            let ok = match f.side {
                Side::Buy => f.price <= limit,
                Side::Sell => f.price >= limit,
            };
            if !ok {
                self.bad(format!("fill {} at {} breaks {} limit {}", f.id, f.price, f.side, limit));
            }
        }
        if o.post_only && f.liquidity != tradewire_sim::Liquidity::Maker {
            self.bad(format!("post-only order {} took liquidity", o.id));
        }
        let key = (o.portfolio_id.clone(), o.symbol.clone(), o.bot_id.clone());
        let before = self.signed.get(&key).copied().unwrap_or_default();
        let after = before + f.side.sign() * f.quantity;
        if o.reduce_only
            && (before.is_zero() || before * after < Decimal::ZERO || after.abs() >= before.abs())
        {
            self.bad(format!("reduce-only order {} moved the position from {before} to {after}", o.id));
        }
        self.signed.insert(key, after);
        self.fills.push(f.clone());
    }

    /// The invariants, checked against the mirror and the engine after every call.
    pub fn check(&mut self, engine: &Engine) {
        if engine.transition_errors() != 0 {
            self.bad(format!("{} refused transitions", engine.transition_errors()));
        }
        let open_positions: Vec<Position> =
            self.positions.values().filter(|p| p.status == PositionStatus::Open).cloned().collect();
        // Every position key has at most one open row and its size is Σ signed fills.
        let mut by_key: BTreeMap<Key, Decimal> = BTreeMap::new();
        for p in &open_positions {
            let key = (p.portfolio_id.clone(), p.symbol.clone(), p.bot_id.clone());
            if by_key.insert(key, p.side.sign() * p.quantity).is_some() {
                self.bad(format!("two open positions for {} {}", p.portfolio_id, p.symbol));
            }
        }
        for (key, signed) in self.signed.clone() {
            let pos = by_key.get(&key).copied().unwrap_or_default();
            if pos != signed {
                self.bad(format!("{key:?}: position {pos} but fills sum to {signed}"));
            }
        }
        let closed_with_size: Vec<String> = self
            .positions
            .values()
            .filter(|p| p.status != PositionStatus::Open && !p.quantity.is_zero())
            .map(|p| format!("{} is {} with quantity {}", p.id, p.status, p.quantity))
            .collect();
        for msg in closed_with_size {
            self.bad(msg);
        }
        // Portfolios: equity and margin identities; the mirror matches the engine.
        let open_orders: Vec<Order> =
            self.orders.values().filter(|o| !o.status.is_terminal()).cloned().collect();
        for (pid, p) in self.portfolios.clone() {
            let unrealized: Decimal =
                open_positions.iter().filter(|x| x.portfolio_id == pid).map(|x| x.unrealized_pnl).sum();
            if p.unrealized_pnl != unrealized || p.equity != p.balance + unrealized {
                self.bad(format!(
                    "{pid}: equity {} != balance {} + Σ unrealized {unrealized}",
                    p.equity, p.balance
                ));
            }
            if p.margin_available != p.equity - p.margin_used {
                self.bad(format!("{pid}: margin_available {} != equity - used", p.margin_available));
            }
            let position_margin: Decimal =
                open_positions.iter().filter(|x| x.portfolio_id == pid).map(|x| x.margin).sum();
            let reserved: Decimal = open_orders
                .iter()
                .filter(|o| o.portfolio_id == pid)
                .map(|o| engine.reserved_margin(&o.id).unwrap_or(Decimal::MIN))
                .sum();
            if p.margin_used != position_margin + reserved {
                self.bad(format!(
                    "{pid}: margin_used {} != Σ position margin {position_margin} + Σ reserved {reserved}",
                    p.margin_used
                ));
            }
            let mut live = engine.portfolio(&pid).cloned().expect("portfolio in engine");
            live.updated_at = p.updated_at;
            if live != p {
                self.bad(format!("{pid}: engine row differs from the last emitted row"));
            }
        }
        let engine_open: Vec<String> = engine.open_orders().map(|o| o.id.clone()).collect();
        let mirror_open: Vec<String> = {
            let mut v: Vec<String> = open_orders.iter().map(|o| o.id.clone()).collect();
            v.sort();
            v
        };
        let mut engine_sorted = engine_open.clone();
        engine_sorted.sort();
        if engine_sorted != mirror_open {
            self.bad(format!("open orders differ: engine {engine_sorted:?} mirror {mirror_open:?}"));
        }
        // Chains: never both exits filled, never more exit than entry.
        let mut chains: BTreeMap<String, Vec<Order>> = BTreeMap::new();
        for o in self.orders.values() {
            if let Some(c) = &o.chain_id {
                chains.entry(c.clone()).or_default().push(o.clone());
            }
        }
        for (cid, orders) in chains {
            let role = |r: ChainRole| orders.iter().find(|o| o.chain_role == Some(r));
            let entry_filled = role(ChainRole::Entry).map(|o| o.filled_quantity).unwrap_or_default();
            let tp = role(ChainRole::TakeProfit);
            let sl = role(ChainRole::StopLoss);
            if tp.is_some_and(|o| o.status == OrderStatus::Filled)
                && sl.is_some_and(|o| o.status == OrderStatus::Filled)
            {
                self.bad(format!("{cid}: take-profit and stop-loss both filled"));
            }
            let exit_filled = tp.map(|o| o.filled_quantity).unwrap_or_default()
                + sl.map(|o| o.filled_quantity).unwrap_or_default();
            if exit_filled > entry_filled {
                self.bad(format!("{cid}: exits filled {exit_filled} > entry {entry_filled}"));
            }
        }
    }

    pub fn assert_clean(&self) {
        assert!(self.violations.is_empty(), "invariant violations:\n{}", self.violations.join("\n"));
    }
}
