//! The simulated market: one seeded price process per symbol and everything public derived
//! from it — a synthetic 20-level book (snapshot, then deltas chained by update ids), trade
//! prints, live 1-minute klines and a once-a-second mark price.
//!
//! Owns only public market state. It knows nothing of users, orders or accounts, and it
//! never reads a clock: time comes in as `now_ms`. Each symbol has its own RNG stream derived
//! from the seed, so the price path does not depend on what traders do. Floating point is
//! used only for the price process, with basic IEEE operations and a home-made `exp`, so the
//! path is identical on every platform.

use std::collections::{BTreeMap, VecDeque};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};

use crate::book::{Level, diff};

/// The kline intervals the simulated market publishes (`kline:<SYMBOL>:<interval>`).
pub const KLINE_INTERVALS: &[&str] = &["1m"];
use crate::instrument::{Instrument, SymbolConfig};
use crate::model::Side;

const MS_PER_YEAR: f64 = 365.0 * 24.0 * 3600.0 * 1000.0;
const MINUTE_MS: i64 = 60_000;

/// Tunables of the market process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarketConfig {
    /// Multiplies every symbol's annual volatility (1.0 = realistic; a demo may speed up).
    pub volatility_scale: f64,
    /// Chance per symbol per step of printing a trade.
    pub trade_probability: f64,
    /// Levels per side of the synthetic book.
    pub book_levels: usize,
    /// Closed 1-minute klines kept per symbol for [`Market::klines`].
    pub kline_history: usize,
}

impl Default for MarketConfig {
    fn default() -> Self {
        MarketConfig { volatility_scale: 1.0, trade_probability: 0.6, book_levels: 20, kline_history: 500 }
    }
}

/// Best bid, best ask and last trade price of a symbol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticker {
    pub symbol: String,
    pub bid: Decimal,
    pub ask: Decimal,
    pub last: Decimal,
    pub ts: i64,
}

/// A public trade print; `side` is the aggressor's side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trade {
    pub symbol: String,
    pub id: u64,
    pub price: Decimal,
    pub qty: Decimal,
    pub side: Side,
    pub ts: i64,
}

/// The whole book: bids best (highest) first, asks best (lowest) first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookSnapshot {
    pub symbol: String,
    pub update_id: u64,
    pub bids: Vec<Level>,
    pub asks: Vec<Level>,
    pub ts: i64,
}

/// Changed levels since `prev_update_id` (quantity 0 removes a level), ascending by price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookDelta {
    pub symbol: String,
    pub update_id: u64,
    pub prev_update_id: u64,
    pub bids: Vec<Level>,
    pub asks: Vec<Level>,
    pub ts: i64,
}

/// A candle; `closed` is true once its minute has rolled over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kline {
    pub symbol: String,
    pub interval: String,
    pub open_time: i64,
    pub open: Decimal,
    pub high: Decimal,
    pub low: Decimal,
    pub close: Decimal,
    pub volume: Decimal,
    pub closed: bool,
}

/// Mark price (a smoothed mid), published once a second; positions are valued at it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    pub symbol: String,
    pub price: Decimal,
    pub ts: i64,
}

/// One public market message. Serialized with a `type` tag, decimals as strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MarketEvent {
    Ticker(Ticker),
    Trade(Trade),
    BookSnapshot(BookSnapshot),
    BookDelta(BookDelta),
    Kline(Kline),
    Mark(Mark),
}

impl MarketEvent {
    pub fn symbol(&self) -> &str {
        match self {
            MarketEvent::Ticker(e) => &e.symbol,
            MarketEvent::Trade(e) => &e.symbol,
            MarketEvent::BookSnapshot(e) => &e.symbol,
            MarketEvent::BookDelta(e) => &e.symbol,
            MarketEvent::Kline(e) => &e.symbol,
            MarketEvent::Mark(e) => &e.symbol,
        }
    }

    /// The public topic of PROTOCOL.md this event belongs to (`book:` for snapshot and delta).
    pub fn topic(&self) -> String {
        match self {
            MarketEvent::Ticker(e) => format!("ticker:{}", e.symbol),
            MarketEvent::Trade(e) => format!("trades:{}", e.symbol),
            MarketEvent::BookSnapshot(e) => format!("book:{}", e.symbol),
            MarketEvent::BookDelta(e) => format!("book:{}", e.symbol),
            MarketEvent::Kline(e) => format!("kline:{}:{}", e.symbol, e.interval),
            MarketEvent::Mark(e) => format!("mark:{}", e.symbol),
        }
    }
}

/// Deterministic `e^x`: range reduction by ln 2 and a Taylor series, exact powers of two.
pub(crate) fn exp_det(x: f64) -> f64 {
    let x = x.clamp(-700.0, 700.0);
    let ln2 = std::f64::consts::LN_2;
    let k = (x / ln2).round();
    let r = x - k * ln2;
    let mut term = 1.0;
    let mut sum = 1.0;
    for n in 1..=16 {
        term = term * r / f64::from(n);
        sum += term;
    }
    let two_k = f64::from_bits(((k as i64 + 1023) as u64) << 52);
    sum * two_k
}

/// A standard normal draw (Irwin–Hall: twelve uniforms minus six), arithmetic only.
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let mut s = 0.0;
    for _ in 0..12 {
        s += rng.random::<f64>();
    }
    s - 6.0
}

struct SymbolState {
    instrument: Instrument,
    rng: ChaCha8Rng,
    sigma: f64,
    price: f64,
    mark: f64,
    bids: BTreeMap<Decimal, Decimal>,
    asks: BTreeMap<Decimal, Decimal>,
    update_id: u64,
    snapshot_sent: bool,
    last: Decimal,
    trade_id: u64,
    level_step: Decimal,
    base_lots: i64,
    kline: Kline,
    history: VecDeque<Kline>,
}

impl SymbolState {
    fn new(cfg: SymbolConfig, index: u64, seed: u64, config: &MarketConfig, now_ms: i64) -> Self {
        let stream = 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(index + 1);
        let rng = ChaCha8Rng::seed_from_u64(seed ^ stream);
        let inst = cfg.instrument;
        let start = cfg.start_price.to_f64().unwrap_or(1.0);
        let tick = inst.tick_size.to_f64().unwrap_or(1.0);
        let lot = inst.lot_size.to_f64().unwrap_or(1.0);
        let step_ticks = ((start * 0.00005) / tick).round().max(1.0) as i64;
        let base_lots = ((15_000.0 / start) / lot).round().max(1.0) as i64;
        let last = inst.price_from_f64(start);
        let kline = Kline {
            symbol: inst.symbol.clone(),
            interval: KLINE_INTERVALS[0].to_string(),
            open_time: now_ms - now_ms.rem_euclid(MINUTE_MS),
            open: last,
            high: last,
            low: last,
            close: last,
            volume: Decimal::ZERO,
            closed: false,
        };
        let mut s = SymbolState {
            level_step: inst.tick_size * Decimal::from(step_ticks),
            instrument: inst,
            rng,
            sigma: cfg.annual_volatility * config.volatility_scale,
            price: start,
            mark: start,
            bids: BTreeMap::new(),
            asks: BTreeMap::new(),
            update_id: 0,
            snapshot_sent: false,
            last,
            trade_id: 0,
            base_lots,
            kline,
            history: VecDeque::new(),
        };
        s.rebuild_book(config.book_levels);
        s.update_id = 1;
        s
    }

    fn random_qty(&mut self) -> Decimal {
        let k = self.rng.random_range(1..=40i64);
        let lots = (self.base_lots * k / 10).max(1);
        self.instrument.lot_size * Decimal::from(lots)
    }

    /// Lay the ladder around the current price, keeping the size of levels that stay and
    /// refreshing a couple at random.
    fn rebuild_book(&mut self, levels: usize) {
        let tick = self.instrument.tick_size;
        let spread_ticks = if self.rng.random_bool(0.8) { 1 } else { 2 };
        let best_bid = self.instrument.price_from_f64(self.price);
        let best_ask = best_bid + tick * Decimal::from(spread_ticks);
        let mut bids = BTreeMap::new();
        let mut asks = BTreeMap::new();
        for i in 0..levels {
            let off = self.level_step * Decimal::from(i as u64);
            let bp = best_bid - off;
            if bp > Decimal::ZERO {
                let q = match self.bids.get(&bp) {
                    Some(q) => *q,
                    None => self.random_qty(),
                };
                bids.insert(bp, q);
            }
            let ap = best_ask + off;
            let q = match self.asks.get(&ap) {
                Some(q) => *q,
                None => self.random_qty(),
            };
            asks.insert(ap, q);
        }
        for _ in 0..2 {
            if !bids.is_empty() {
                let i = self.rng.random_range(0..bids.len());
                let p = *bids.keys().nth(i).expect("index in range");
                let q = self.random_qty();
                bids.insert(p, q);
            }
            if !asks.is_empty() {
                let i = self.rng.random_range(0..asks.len());
                let p = *asks.keys().nth(i).expect("index in range");
                let q = self.random_qty();
                asks.insert(p, q);
            }
        }
        self.bids = bids;
        self.asks = asks;
    }

    fn best_bid(&self) -> Decimal {
        self.bids.keys().next_back().copied().unwrap_or(self.instrument.tick_size)
    }

    fn best_ask(&self) -> Decimal {
        self.asks.keys().next().copied().unwrap_or(self.instrument.tick_size)
    }

    fn snapshot(&self, ts: i64) -> BookSnapshot {
        BookSnapshot {
            symbol: self.instrument.symbol.clone(),
            update_id: self.update_id,
            bids: self.bids.iter().rev().map(|(p, q)| Level(*p, *q)).collect(),
            asks: self.asks.iter().map(|(p, q)| Level(*p, *q)).collect(),
            ts,
        }
    }

    fn ticker(&self, ts: i64) -> Ticker {
        Ticker {
            symbol: self.instrument.symbol.clone(),
            bid: self.best_bid(),
            ask: self.best_ask(),
            last: self.last,
            ts,
        }
    }

    fn mark_event(&self, ts: i64) -> Mark {
        Mark { symbol: self.instrument.symbol.clone(), price: self.instrument.price_from_f64(self.mark), ts }
    }

    fn step(
        &mut self,
        dt_ms: i64,
        now_ms: i64,
        emit_mark: bool,
        config: &MarketConfig,
        out: &mut Vec<MarketEvent>,
    ) {
        // Price process.
        let dt = dt_ms as f64 / MS_PER_YEAR;
        let z = normal(&mut self.rng);
        let x = -0.5 * self.sigma * self.sigma * dt + self.sigma * dt.sqrt() * z;
        let floor = self.instrument.tick_size.to_f64().unwrap_or(0.0) * 10.0;
        self.price = (self.price * exp_det(x)).max(floor);

        // Book.
        let (old_bids, old_asks) = (self.bids.clone(), self.asks.clone());
        self.rebuild_book(config.book_levels);
        let prev = self.update_id;
        self.update_id += 1;
        if self.snapshot_sent {
            out.push(MarketEvent::BookDelta(BookDelta {
                symbol: self.instrument.symbol.clone(),
                update_id: self.update_id,
                prev_update_id: prev,
                bids: diff(&old_bids, &self.bids),
                asks: diff(&old_asks, &self.asks),
                ts: now_ms,
            }));
        } else {
            self.snapshot_sent = true;
            out.push(MarketEvent::BookSnapshot(self.snapshot(now_ms)));
        }

        // Kline roll-over before this step's trade.
        let minute = now_ms - now_ms.rem_euclid(MINUTE_MS);
        if minute > self.kline.open_time {
            let mut done = self.kline.clone();
            done.closed = true;
            out.push(MarketEvent::Kline(done.clone()));
            self.history.push_back(done);
            while self.history.len() > config.kline_history {
                self.history.pop_front();
            }
            let c = self.kline.close;
            self.kline = Kline {
                open_time: minute,
                open: c,
                high: c,
                low: c,
                close: c,
                volume: Decimal::ZERO,
                ..self.kline.clone()
            };
        }

        // Trade print at the touch.
        if self.rng.random_bool(config.trade_probability.clamp(0.0, 1.0)) {
            let side = if self.rng.random_bool(0.5) { Side::Buy } else { Side::Sell };
            let price = match side {
                Side::Buy => self.best_ask(),
                Side::Sell => self.best_bid(),
            };
            let lots = self.rng.random_range(1..=(self.base_lots / 2).max(1));
            let qty = self.instrument.lot_size * Decimal::from(lots);
            self.trade_id += 1;
            self.last = price;
            self.kline.high = self.kline.high.max(price);
            self.kline.low = self.kline.low.min(price);
            self.kline.close = price;
            self.kline.volume += qty;
            out.push(MarketEvent::Trade(Trade {
                symbol: self.instrument.symbol.clone(),
                id: self.trade_id,
                price,
                qty,
                side,
                ts: now_ms,
            }));
        }
        out.push(MarketEvent::Ticker(self.ticker(now_ms)));
        out.push(MarketEvent::Kline(self.kline.clone()));

        // Mark: exponential smoothing of the mid with a one-second time constant.
        let mid = ((self.best_bid() + self.best_ask()) / Decimal::TWO).to_f64().unwrap_or(self.price);
        let alpha = dt_ms as f64 / (dt_ms as f64 + 1000.0);
        self.mark += alpha * (mid - self.mark);
        if emit_mark {
            out.push(MarketEvent::Mark(self.mark_event(now_ms)));
        }
    }
}

/// The market: all symbols, advanced together by [`Market::step`].
pub struct Market {
    config: MarketConfig,
    symbols: Vec<SymbolState>,
    last_ms: i64,
    last_mark_sec: Option<i64>,
}

impl Market {
    /// A market whose clock starts at `start_ms`.
    pub fn new(seed: u64, symbols: Vec<SymbolConfig>, config: MarketConfig, start_ms: i64) -> Self {
        let symbols = symbols
            .into_iter()
            .enumerate()
            .map(|(i, s)| SymbolState::new(s, i as u64, seed, &config, start_ms))
            .collect();
        Market { config, symbols, last_ms: start_ms, last_mark_sec: None }
    }

    /// Advance every symbol by the time since the last step. A `now_ms` that is not later
    /// than the last step produces nothing. The first step of each symbol publishes a book
    /// snapshot; later ones publish deltas.
    pub fn step(&mut self, now_ms: i64) -> Vec<MarketEvent> {
        let dt = now_ms - self.last_ms;
        if dt <= 0 {
            return Vec::new();
        }
        self.last_ms = now_ms;
        let sec = now_ms.div_euclid(1000);
        let emit_mark = self.last_mark_sec.is_none_or(|s| sec > s);
        if emit_mark {
            self.last_mark_sec = Some(sec);
        }
        let mut out = Vec::with_capacity(self.symbols.len() * 6);
        for s in &mut self.symbols {
            s.step(dt, now_ms, emit_mark, &self.config, &mut out);
        }
        out
    }

    /// The time of the last step (or the start).
    pub fn now_ms(&self) -> i64 {
        self.last_ms
    }

    pub fn instruments(&self) -> impl Iterator<Item = &Instrument> {
        self.symbols.iter().map(|s| &s.instrument)
    }

    fn get(&self, symbol: &str) -> Option<&SymbolState> {
        self.symbols.iter().find(|s| s.instrument.symbol == symbol)
    }

    pub fn ticker(&self, symbol: &str) -> Option<Ticker> {
        self.get(symbol).map(|s| s.ticker(self.last_ms))
    }

    /// The current book with its update id; a new subscriber applies deltas after it.
    pub fn book_snapshot(&self, symbol: &str) -> Option<BookSnapshot> {
        self.get(symbol).map(|s| s.snapshot(self.last_ms))
    }

    pub fn mark(&self, symbol: &str) -> Option<Mark> {
        self.get(symbol).map(|s| s.mark_event(self.last_ms))
    }

    /// Closed 1-minute klines (oldest first) followed by the live one.
    pub fn klines(&self, symbol: &str) -> Option<Vec<Kline>> {
        self.get(symbol).map(|s| s.history.iter().cloned().chain(std::iter::once(s.kline.clone())).collect())
    }

    /// Snapshot, ticker and mark of every symbol: what a consumer needs before the first step.
    pub fn current_events(&self) -> Vec<MarketEvent> {
        let mut out = Vec::new();
        for s in &self.symbols {
            out.push(MarketEvent::BookSnapshot(s.snapshot(self.last_ms)));
            out.push(MarketEvent::Ticker(s.ticker(self.last_ms)));
            out.push(MarketEvent::Mark(s.mark_event(self.last_ms)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::BookView;
    use crate::instrument::default_symbols;

    #[test]
    fn exp_det_matches_std_closely() {
        for x in [-5.0, -1.0, -0.3, -1e-6, 0.0, 1e-6, 0.01, 0.5, 1.0, 3.0, 10.0] {
            let a = exp_det(x);
            let b = f64::exp(x);
            assert!(((a - b) / b).abs() < 1e-13, "{x}: {a} vs {b}");
        }
    }

    #[test]
    fn book_is_consistent_and_deltas_chain() {
        let mut m = Market::new(7, default_symbols(), MarketConfig::default(), 0);
        let mut views: BTreeMap<String, BookView> = BTreeMap::new();
        let mut closed_klines = 0;
        let mut marks = 0;
        for i in 1..=1300 {
            for e in m.step(i * 100) {
                match e {
                    MarketEvent::BookSnapshot(s) => {
                        assert_eq!(s.bids.len(), 20);
                        views.entry(s.symbol.clone()).or_default().apply_snapshot(
                            s.update_id,
                            &s.bids,
                            &s.asks,
                        );
                    }
                    MarketEvent::BookDelta(d) => {
                        let v = views.get_mut(&d.symbol).expect("snapshot first");
                        assert_eq!(d.prev_update_id, v.update_id);
                        assert!(v.apply_delta(d.update_id, d.prev_update_id, &d.bids, &d.asks));
                        assert_eq!(v.bids.len(), 20, "{}", d.symbol);
                        assert_eq!(v.asks.len(), 20);
                        assert!(v.best_bid() < v.best_ask());
                        let snap = m.book_snapshot(&d.symbol).expect("symbol");
                        assert_eq!(snap.update_id, d.update_id);
                    }
                    MarketEvent::Ticker(t) => assert!(t.bid < t.ask, "{t:?}"),
                    MarketEvent::Kline(k) => {
                        assert!(k.low <= k.open && k.open <= k.high && k.low <= k.close && k.close <= k.high);
                        if k.closed {
                            closed_klines += 1;
                        }
                    }
                    MarketEvent::Mark(_) => marks += 1,
                    MarketEvent::Trade(t) => assert!(t.qty > Decimal::ZERO),
                }
            }
        }
        assert_eq!(closed_klines, 2 * 10, "two minutes rolled for ten symbols");
        assert_eq!(marks, 131 * 10, "one mark per second per symbol (seconds 0..=130)");
        assert_eq!(m.klines("BTCUSDT").expect("btc").len(), 3);
    }

    #[test]
    fn same_seed_same_path_different_seed_different_path() {
        let run = |seed| {
            let mut m = Market::new(seed, default_symbols(), MarketConfig::default(), 0);
            let mut all = Vec::new();
            for i in 1..=50 {
                all.extend(m.step(i * 250));
            }
            serde_json::to_string(&all).expect("serialize")
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn volatility_is_roughly_realistic() {
        // One simulated day at one step per minute: BTC's daily log-return spread should be
        // near 0.55 / sqrt(365) ≈ 2.9 %; accept a wide band over many days of one seed.
        let mut sum_sq = 0.0;
        let days = 20;
        let mut m = Market::new(3, default_symbols()[..1].to_vec(), MarketConfig::default(), 0);
        let mut p0 = m.symbols[0].price;
        for d in 1..=days {
            for s in 1..=1440 {
                m.step((d - 1) * 86_400_000 + s * 60_000);
            }
            let p1 = m.symbols[0].price;
            sum_sq += (p1 / p0).ln().powi(2);
            p0 = p1;
        }
        let daily = (sum_sq / days as f64).sqrt();
        assert!(daily > 0.01 && daily < 0.06, "daily vol {daily}");
    }
}
