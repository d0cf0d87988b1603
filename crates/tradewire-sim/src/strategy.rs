//! Trading strategies: pure state machines fed one sampled price at a time, each returning
//! at most one [`Decision`] (a signal's direction, confidence and reason, and what the bot
//! should do about it). No orders, no accounts: `bots.rs` turns decisions into orders.
//!
//! - `ma_crossover`: long when the fast moving average crosses above the slow one, short
//!   when it crosses below.
//! - `mean_reversion`: short when the price is `entry_z` standard deviations above its
//!   rolling mean, long when as far below, flat when back within `exit_z`.
//! - `grid`: levels every `grid_step_pct` around the first price; buy one unit on each
//!   level crossed downwards, sell one on each crossed upwards.

use std::collections::VecDeque;

use rust_decimal::Decimal;
use rust_decimal::prelude::{FromPrimitive, ToPrimitive};
use serde::{Deserialize, Serialize};

use crate::model::{Direction, Side};

/// What a bot should do about a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// Hold a position in the signal's direction (flat: none), closing the opposite.
    Target,
    /// Trade one unit on this side (grid), reducing the opposite position first.
    Step(Side),
}

/// A strategy's output: the signal and the intent behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub direction: Direction,
    /// Between 0 and 1, four decimal places.
    pub confidence: Decimal,
    pub reason: String,
    pub intent: Intent,
}

/// Bot parameters, read from the bot row's `config` JSON. Every key is optional; unknown
/// keys are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BotConfig {
    /// Order size in base units; if absent, `notional / price` rounded down to the lot.
    pub quantity: Option<Decimal>,
    /// Order size in quote currency when `quantity` is absent.
    pub notional: Decimal,
    pub leverage: u32,
    /// Take-profit distance from the entry as a fraction (null: no take-profit).
    pub take_profit_pct: Option<Decimal>,
    /// Stop-loss distance from the entry as a fraction (null: no stop-loss).
    pub stop_loss_pct: Option<Decimal>,
    /// The strategy sees one price every `sample_ms`.
    pub sample_ms: i64,
    /// Signals below this confidence are recorded but not acted on.
    pub min_confidence: Decimal,
    /// `ma_crossover`: window lengths in samples.
    pub fast: usize,
    pub slow: usize,
    /// `mean_reversion`: window in samples and z-score thresholds.
    pub window: usize,
    pub entry_z: f64,
    pub exit_z: f64,
    /// `grid`: distance between levels as a fraction of the anchor price, and the most
    /// units the bot may hold.
    pub grid_step_pct: Decimal,
    pub grid_levels: u32,
}

impl Default for BotConfig {
    fn default() -> Self {
        BotConfig {
            quantity: None,
            notional: Decimal::from(500),
            leverage: 5,
            take_profit_pct: Some(Decimal::new(4, 3)),
            stop_loss_pct: Some(Decimal::new(3, 3)),
            sample_ms: 1000,
            min_confidence: Decimal::ZERO,
            fast: 5,
            slow: 20,
            window: 30,
            entry_z: 2.0,
            exit_z: 0.5,
            grid_step_pct: Decimal::new(1, 3),
            grid_levels: 5,
        }
    }
}

fn confidence(x: f64) -> Decimal {
    Decimal::from_f64(x.clamp(0.0, 1.0)).unwrap_or(Decimal::ZERO).round_dp(4).normalize()
}

/// Moving-average crossover.
#[derive(Debug, Clone)]
pub struct MaCrossover {
    fast: usize,
    slow: usize,
    prices: VecDeque<Decimal>,
    above: Option<bool>,
}

impl MaCrossover {
    pub fn new(fast: usize, slow: usize) -> Self {
        let fast = fast.max(1);
        MaCrossover { fast, slow: slow.max(fast + 1), prices: VecDeque::new(), above: None }
    }

    pub fn on_price(&mut self, price: Decimal) -> Option<Decision> {
        self.prices.push_back(price);
        if self.prices.len() > self.slow {
            self.prices.pop_front();
        }
        if self.prices.len() < self.slow {
            return None;
        }
        let avg = |n: usize| self.prices.iter().rev().take(n).sum::<Decimal>() / Decimal::from(n as u64);
        let (fast, slow) = (avg(self.fast), avg(self.slow));
        if fast == slow {
            return None;
        }
        let above = fast > slow;
        let crossed = self.above.is_some_and(|a| a != above);
        self.above = Some(above);
        if !crossed {
            return None;
        }
        let gap = ((fast - slow) / slow).abs().to_f64().unwrap_or(0.0);
        Some(Decision {
            direction: if above { Direction::Long } else { Direction::Short },
            confidence: confidence(0.5 + gap * 1000.0),
            reason: format!(
                "MA{} {} MA{} ({} vs {})",
                self.fast,
                if above { "crossed above" } else { "crossed below" },
                self.slow,
                fast.round_dp(8).normalize(),
                slow.round_dp(8).normalize()
            ),
            intent: Intent::Target,
        })
    }
}

/// Rolling z-score mean reversion.
#[derive(Debug, Clone)]
pub struct MeanReversion {
    window: usize,
    entry_z: f64,
    exit_z: f64,
    prices: VecDeque<f64>,
    stance: Direction,
}

impl MeanReversion {
    pub fn new(window: usize, entry_z: f64, exit_z: f64) -> Self {
        MeanReversion {
            window: window.max(2),
            entry_z,
            exit_z,
            prices: VecDeque::new(),
            stance: Direction::Flat,
        }
    }

    pub fn on_price(&mut self, price: Decimal) -> Option<Decision> {
        let p = price.to_f64()?;
        self.prices.push_back(p);
        if self.prices.len() > self.window {
            self.prices.pop_front();
        }
        if self.prices.len() < self.window {
            return None;
        }
        let n = self.prices.len() as f64;
        let mean = self.prices.iter().sum::<f64>() / n;
        let var = self.prices.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
        let sd = var.sqrt();
        if sd <= 0.0 {
            return None;
        }
        let z = (p - mean) / sd;
        let next = if z >= self.entry_z {
            Direction::Short
        } else if z <= -self.entry_z {
            Direction::Long
        } else if z.abs() <= self.exit_z {
            Direction::Flat
        } else {
            self.stance
        };
        if next == self.stance {
            return None;
        }
        self.stance = next;
        let conf = match next {
            Direction::Flat => 1.0 - z.abs() / self.exit_z.max(1e-9) * 0.5,
            _ => z.abs() / (2.0 * self.entry_z),
        };
        Some(Decision {
            direction: next,
            confidence: confidence(conf),
            reason: format!("z-score {:.2} over {} samples", z, self.window),
            intent: Intent::Target,
        })
    }
}

/// Grid trading around an anchor price.
#[derive(Debug, Clone)]
pub struct Grid {
    step_pct: Decimal,
    anchor: Option<Decimal>,
    level: i64,
}

impl Grid {
    pub fn new(step_pct: Decimal) -> Self {
        let step_pct = if step_pct > Decimal::ZERO { step_pct } else { Decimal::new(1, 3) };
        Grid { step_pct, anchor: None, level: 0 }
    }

    pub fn on_price(&mut self, price: Decimal) -> Option<Decision> {
        let Some(anchor) = self.anchor else {
            self.anchor = Some(price);
            return None;
        };
        let step = anchor * self.step_pct;
        let level = ((price - anchor) / step).floor().to_i64()?;
        if level == self.level {
            return None;
        }
        let down = level < self.level;
        self.level = level;
        Some(Decision {
            direction: if down { Direction::Long } else { Direction::Short },
            confidence: confidence(0.6),
            reason: format!("price {} crossed grid level {} (anchor {})", price, level, anchor),
            intent: Intent::Step(if down { Side::Buy } else { Side::Sell }),
        })
    }
}

/// One of the built-in strategies, chosen by the bot's `strategy` column.
#[derive(Debug, Clone)]
pub enum Strategy {
    MaCrossover(MaCrossover),
    MeanReversion(MeanReversion),
    Grid(Grid),
}

/// The names accepted in the `strategy` column.
pub const STRATEGIES: [&str; 3] = ["ma_crossover", "mean_reversion", "grid"];

impl Strategy {
    pub fn from_name(name: &str, config: &BotConfig) -> Option<Strategy> {
        match name {
            "ma_crossover" => Some(Strategy::MaCrossover(MaCrossover::new(config.fast, config.slow))),
            "mean_reversion" => Some(Strategy::MeanReversion(MeanReversion::new(
                config.window,
                config.entry_z,
                config.exit_z,
            ))),
            "grid" => Some(Strategy::Grid(Grid::new(config.grid_step_pct))),
            _ => None,
        }
    }

    pub fn on_price(&mut self, price: Decimal) -> Option<Decision> {
        match self {
            Strategy::MaCrossover(s) => s.on_price(price),
            Strategy::MeanReversion(s) => s.on_price(price),
            Strategy::Grid(s) => s.on_price(price),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(s: &mut Strategy, prices: &[i64]) -> Vec<Decision> {
        prices.iter().filter_map(|p| s.on_price(Decimal::from(*p))).collect()
    }

    #[test]
    fn ma_crossover_signals_each_cross_once() {
        let cfg = BotConfig { fast: 2, slow: 4, ..BotConfig::default() };
        let mut s = Strategy::from_name("ma_crossover", &cfg).expect("known");
        let d = feed(&mut s, &[100, 100, 100, 99, 98, 97, 99, 102, 105, 106, 104, 100, 96]);
        let dirs: Vec<Direction> = d.iter().map(|d| d.direction).collect();
        assert_eq!(dirs, vec![Direction::Long, Direction::Short]);
        assert!(d.iter().all(|d| d.confidence >= Decimal::new(5, 1) && d.confidence <= Decimal::ONE));
        assert!(d[0].reason.contains("crossed above"));
    }

    #[test]
    fn mean_reversion_fades_extremes_and_goes_flat() {
        let cfg = BotConfig { window: 10, entry_z: 2.0, exit_z: 0.5, ..BotConfig::default() };
        let mut s = Strategy::from_name("mean_reversion", &cfg).expect("known");
        let mut prices = vec![100, 101, 100, 99, 100, 101, 100, 99, 100, 101];
        prices.push(110); // spike: short
        prices.extend([100, 100, 100, 100, 100, 100, 100]); // back to the mean: flat
        prices.extend([100, 100, 100, 80]); // dump: long
        let dirs: Vec<Direction> = feed(&mut s, &prices).iter().map(|d| d.direction).collect();
        assert_eq!(dirs, vec![Direction::Short, Direction::Flat, Direction::Long]);
    }

    #[test]
    fn grid_buys_down_sells_up() {
        let cfg = BotConfig { grid_step_pct: Decimal::new(1, 2), ..BotConfig::default() };
        let mut s = Strategy::from_name("grid", &cfg).expect("known");
        let d = feed(&mut s, &[100, 100, 99, 99, 98, 99, 101, 101]);
        let intents: Vec<Intent> = d.iter().map(|d| d.intent).collect();
        assert_eq!(
            intents,
            vec![
                Intent::Step(Side::Buy),
                Intent::Step(Side::Buy),
                Intent::Step(Side::Sell),
                Intent::Step(Side::Sell)
            ]
        );
    }

    #[test]
    fn unknown_strategy_and_config_defaults() {
        assert!(Strategy::from_name("martingale", &BotConfig::default()).is_none());
        let cfg: BotConfig =
            serde_json::from_value(serde_json::json!({"fast": 3, "take_profit_pct": null, "extra": 1}))
                .expect("config");
        assert_eq!(cfg.fast, 3);
        assert_eq!(cfg.take_profit_pct, None);
        assert_eq!(cfg.slow, 20);
        assert_eq!(cfg.stop_loss_pct, Some(Decimal::new(3, 3)));
    }
}
