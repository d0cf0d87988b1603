//! Tradable symbols: contract specs (tick, lot, minimum notional, leverage, fees) and the
//! rounding rules every price and quantity in the simulator obeys.
//!
//! An [`Instrument`] has exactly the columns of the `instruments` table. [`SymbolConfig`] adds
//! what only the market process needs (start price, volatility).

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};

/// One tradable symbol (a row of the `instruments` table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instrument {
    pub symbol: String,
    pub base: String,
    pub quote: String,
    /// Every price is a multiple of this.
    pub tick_size: Decimal,
    /// Every quantity is a multiple of this.
    pub lot_size: Decimal,
    /// Smallest `price * quantity` of an order that opens or adds to a position.
    pub min_notional: Decimal,
    pub max_leverage: u32,
    /// Maintenance margin as a fraction of position notional (isolated margin).
    pub maintenance_margin_rate: Decimal,
    /// Fee rate for liquidity that rested in the book.
    pub maker_fee: Decimal,
    /// Fee rate for liquidity that crossed the book.
    pub taker_fee: Decimal,
}

impl Instrument {
    /// True if `price` is a positive multiple of the tick size.
    pub fn is_on_tick(&self, price: Decimal) -> bool {
        price > Decimal::ZERO && (price % self.tick_size).is_zero()
    }

    /// True if `qty` is a positive multiple of the lot size.
    pub fn is_on_lot(&self, qty: Decimal) -> bool {
        qty > Decimal::ZERO && (qty % self.lot_size).is_zero()
    }

    /// `price` rounded down to a multiple of the tick size.
    pub fn floor_tick(&self, price: Decimal) -> Decimal {
        floor_to(price, self.tick_size)
    }

    /// `price` rounded up to a multiple of the tick size.
    pub fn ceil_tick(&self, price: Decimal) -> Decimal {
        let down = floor_to(price, self.tick_size);
        if down == price { down } else { down + self.tick_size }
    }

    /// `price` rounded to the nearest multiple of the tick size (half away from zero), never
    /// below one tick.
    pub fn round_tick(&self, price: Decimal) -> Decimal {
        let ticks = (price / self.tick_size).round();
        (ticks * self.tick_size).max(self.tick_size).normalize()
    }

    /// `qty` rounded down to a multiple of the lot size.
    pub fn floor_lot(&self, qty: Decimal) -> Decimal {
        floor_to(qty, self.lot_size)
    }

    /// A float price rounded to the nearest tick (at least one tick).
    pub fn price_from_f64(&self, price: f64) -> Decimal {
        let tick = self.tick_size.to_f64().unwrap_or(1.0);
        let ticks = (price / tick).round().max(1.0);
        (Decimal::from(ticks as i64) * self.tick_size).normalize()
    }
}

/// `x` rounded down to a multiple of `step` (step > 0).
fn floor_to(x: Decimal, step: Decimal) -> Decimal {
    ((x / step).floor() * step).normalize()
}

/// An instrument plus the parameters of its simulated price process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SymbolConfig {
    pub instrument: Instrument,
    /// Price at the start of the simulation (a multiple of the tick size).
    pub start_price: Decimal,
    /// Annualized volatility of the geometric Brownian motion, e.g. 0.6 for 60 %.
    pub annual_volatility: f64,
}

fn dec(s: &str) -> Decimal {
    s.parse().expect("valid decimal literal")
}

#[allow(clippy::too_many_arguments)]
fn spec(
    symbol: &str,
    start: &str,
    tick: &str,
    lot: &str,
    min_notional: &str,
    max_leverage: u32,
    mmr: &str,
    vol: f64,
) -> SymbolConfig {
    let base = symbol.trim_end_matches("USDT").to_string();
    SymbolConfig {
        instrument: Instrument {
            symbol: symbol.to_string(),
            base,
            quote: "USDT".to_string(),
            tick_size: dec(tick),
            lot_size: dec(lot),
            min_notional: dec(min_notional),
            max_leverage,
            maintenance_margin_rate: dec(mmr),
            maker_fee: dec("0.0002"),
            taker_fee: dec("0.0005"),
        },
        start_price: dec(start),
        annual_volatility: vol,
    }
}

/// The default ten USDT-margined perpetuals with realistic specs and start prices.
pub fn default_symbols() -> Vec<SymbolConfig> {
    vec![
        spec("BTCUSDT", "65000", "0.1", "0.001", "100", 125, "0.004", 0.55),
        spec("ETHUSDT", "3200", "0.01", "0.001", "20", 100, "0.005", 0.70),
        spec("SOLUSDT", "150", "0.01", "0.01", "5", 75, "0.01", 0.95),
        spec("BNBUSDT", "580", "0.01", "0.01", "5", 75, "0.01", 0.60),
        spec("XRPUSDT", "0.52", "0.0001", "0.1", "5", 75, "0.01", 0.85),
        spec("DOGEUSDT", "0.15", "0.00001", "1", "5", 50, "0.01", 1.00),
        spec("ADAUSDT", "0.45", "0.0001", "1", "5", 75, "0.01", 0.85),
        spec("AVAXUSDT", "35", "0.001", "0.1", "5", 50, "0.01", 0.95),
        spec("LINKUSDT", "14.5", "0.001", "0.01", "5", 50, "0.01", 0.85),
        spec("LTCUSDT", "80", "0.01", "0.001", "5", 75, "0.01", 0.75),
    ]
}

/// The instruments of [`default_symbols`].
pub fn default_instruments() -> Vec<Instrument> {
    default_symbols().into_iter().map(|s| s.instrument).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn btc() -> Instrument {
        default_instruments().remove(0)
    }

    #[test]
    fn defaults_are_ten_consistent_symbols() {
        let symbols = default_symbols();
        assert_eq!(symbols.len(), 10);
        for s in &symbols {
            assert!(s.instrument.is_on_tick(s.start_price), "{}", s.instrument.symbol);
            assert!(s.instrument.max_leverage >= 1);
            assert!(
                s.instrument.maintenance_margin_rate
                    < Decimal::ONE / Decimal::from(s.instrument.max_leverage)
            );
            assert!(s.annual_volatility > 0.0);
        }
    }

    #[test]
    fn tick_and_lot_rounding() {
        let i = btc();
        assert_eq!(i.floor_tick(dec("65000.17")), dec("65000.1"));
        assert_eq!(i.ceil_tick(dec("65000.11")), dec("65000.2"));
        assert_eq!(i.ceil_tick(dec("65000.1")), dec("65000.1"));
        assert_eq!(i.round_tick(dec("65000.15")), dec("65000.2"));
        assert_eq!(i.round_tick(dec("0.01")), dec("0.1"));
        assert_eq!(i.floor_lot(dec("0.0019")), dec("0.001"));
        assert!(i.is_on_tick(dec("65000.1")));
        assert!(!i.is_on_tick(dec("65000.15")));
        assert!(!i.is_on_tick(Decimal::ZERO));
        assert!(i.is_on_lot(dec("0.002")));
        assert!(!i.is_on_lot(dec("0.0025")));
        assert_eq!(i.price_from_f64(65000.149), dec("65000.1"));
        assert_eq!(i.price_from_f64(-3.0), dec("0.1"));
    }
}
