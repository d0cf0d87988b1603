//! Position math for isolated margin: weighted average entry on adds (kept on reduces),
//! realized P&L gross and net of fees, unrealized P&L at the mark price, maintenance
//! margin, liquidation price and the margin-call threshold (margin ratio 50 %).
//!
//! Pure arithmetic on one position; the engine decides when to call it.

use rust_decimal::Decimal;

use crate::accounts::money;
use crate::instrument::Instrument;
use crate::model::{Position, PositionSide};

/// The engine's state of one open position: the row plus what has no column.
#[derive(Debug, Clone)]
pub(crate) struct PositionState {
    pub row: Position,
    /// Σ gross realized P&L of the reducing fills.
    pub gross_realized: Decimal,
    /// Σ fees of this position's fills.
    pub fees: Decimal,
    /// A margin call has been recorded and not yet cleared.
    pub margin_call: bool,
}

impl PositionState {
    pub fn new(row: Position) -> Self {
        PositionState { row, gross_realized: Decimal::ZERO, fees: Decimal::ZERO, margin_call: false }
    }

    /// Add `qty` at `price` holding `margin` more; the entry becomes the weighted average.
    pub fn add(&mut self, qty: Decimal, price: Decimal, fee: Decimal, margin: Decimal) {
        let old = self.row.quantity;
        let new_qty = old + qty;
        self.row.entry_price = if old.is_zero() {
            price
        } else {
            ((self.row.entry_price * old + price * qty) / new_qty).round_dp(12).normalize()
        };
        self.row.quantity = new_qty;
        self.row.margin += margin;
        self.fees += fee;
        self.row.realized_pnl = self.gross_realized - self.fees;
    }

    /// Remove `qty` (≤ quantity) at `price`. Returns (gross realized P&L, margin released).
    /// The entry price is kept.
    pub fn reduce(&mut self, qty: Decimal, price: Decimal, fee: Decimal) -> (Decimal, Decimal) {
        let gross = money((price - self.row.entry_price) * qty * self.row.side.sign());
        let released = if qty >= self.row.quantity {
            self.row.margin
        } else {
            money(self.row.margin * qty / self.row.quantity)
        };
        self.row.quantity -= qty;
        self.row.margin -= released;
        self.gross_realized += gross;
        self.fees += fee;
        self.row.realized_pnl = self.gross_realized - self.fees;
        (gross, released)
    }

    /// Unrealized P&L at `mark`.
    pub fn unrealized_at(&self, mark: Decimal) -> Decimal {
        money((mark - self.row.entry_price) * self.row.quantity * self.row.side.sign())
    }

    /// Mark to `mark`: sets mark price, unrealized P&L and liquidation price.
    pub fn revalue(&mut self, mark: Decimal, inst: &Instrument) {
        self.row.mark_price = Some(mark);
        self.row.unrealized_pnl = self.unrealized_at(mark);
        self.row.liquidation_price = liquidation_price(&self.row, inst);
    }

    /// Maintenance margin at `mark`.
    pub fn maintenance(&self, mark: Decimal, inst: &Instrument) -> Decimal {
        money(inst.maintenance_margin_rate * self.row.quantity * mark)
    }

    /// Margin + unrealized P&L at `mark` has fallen to the maintenance margin.
    pub fn should_liquidate(&self, mark: Decimal, inst: &Instrument) -> bool {
        match self.row.liquidation_price {
            Some(l) => match self.row.side {
                PositionSide::Long => mark <= l,
                PositionSide::Short => mark >= l,
            },
            None => self.row.margin + self.unrealized_at(mark) <= self.maintenance(mark, inst),
        }
    }

    /// Margin ratio (maintenance / (margin + unrealized)) has reached 50 %.
    pub fn in_margin_call(&self, mark: Decimal, inst: &Instrument) -> bool {
        let cushion = self.row.margin + self.unrealized_at(mark);
        cushion <= self.maintenance(mark, inst) * Decimal::TWO
    }
}

/// The mark price at which margin + unrealized P&L equals the maintenance margin, rounded
/// one tick towards the entry (so liquidation comes no later than the exact price). None if
/// the position cannot be liquidated (e.g. a long at leverage 1).
pub(crate) fn liquidation_price(p: &Position, inst: &Instrument) -> Option<Decimal> {
    if p.quantity.is_zero() {
        return None;
    }
    let mmr = inst.maintenance_margin_rate;
    let notional = p.entry_price * p.quantity;
    let l = match p.side {
        PositionSide::Long => (notional - p.margin) / (p.quantity * (Decimal::ONE - mmr)),
        PositionSide::Short => (notional + p.margin) / (p.quantity * (Decimal::ONE + mmr)),
    };
    if l <= Decimal::ZERO {
        return None;
    }
    let rounded = match p.side {
        PositionSide::Long => inst.ceil_tick(l),
        PositionSide::Short => inst.floor_tick(l),
    };
    (rounded > Decimal::ZERO).then_some(rounded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instrument::default_instruments;
    use crate::model::PositionStatus;

    fn d(s: &str) -> Decimal {
        s.parse().expect("decimal")
    }

    fn pos(side: PositionSide, qty: &str, entry: &str, margin: &str) -> PositionState {
        PositionState::new(Position {
            id: "pos_1".into(),
            user_id: "u".into(),
            portfolio_id: "p".into(),
            bot_id: None,
            symbol: "BTCUSDT".into(),
            side,
            status: PositionStatus::Open,
            quantity: d(qty),
            entry_price: d(entry),
            mark_price: None,
            leverage: 10,
            margin: d(margin),
            unrealized_pnl: Decimal::ZERO,
            realized_pnl: Decimal::ZERO,
            liquidation_price: None,
            opened_at: 0,
            closed_at: None,
            updated_at: 0,
        })
    }

    #[test]
    fn entry_is_weighted_on_adds_and_kept_on_reduces() {
        let mut p = pos(PositionSide::Long, "1", "100", "10");
        p.add(d("3"), d("120"), d("0.5"), d("36"));
        assert_eq!(p.row.entry_price, d("115"));
        assert_eq!(p.row.margin, d("46"));
        let (gross, released) = p.reduce(d("2"), d("125"), d("0.25"));
        assert_eq!(gross, d("20"));
        assert_eq!(released, d("23"));
        assert_eq!(p.row.entry_price, d("115"));
        assert_eq!(p.row.quantity, d("2"));
        assert_eq!(p.row.realized_pnl, d("19.25"), "gross 20 minus fees 0.75");
        let (_, released) = p.reduce(d("2"), d("115"), Decimal::ZERO);
        assert_eq!(released, d("23"), "the last reduce releases all margin");
        assert!(p.row.margin.is_zero());
    }

    #[test]
    fn short_pnl_and_liquidation_prices() {
        let btc = default_instruments().remove(0);
        let mut s = pos(PositionSide::Short, "1", "100", "10");
        assert_eq!(s.unrealized_at(d("90")), d("10"));
        s.revalue(d("100"), &btc);
        // (100 + 10) / (1 * 1.004) = 109.56...
        assert_eq!(s.row.liquidation_price, Some(d("109.5")));
        assert!(!s.should_liquidate(d("109.4"), &btc));
        assert!(s.should_liquidate(d("109.5"), &btc));
        let mut l = pos(PositionSide::Long, "1", "100", "10");
        l.revalue(d("100"), &btc);
        // (100 - 10) / 0.996 = 90.36...
        assert_eq!(l.row.liquidation_price, Some(d("90.4")));
        assert!(l.should_liquidate(d("90.4"), &btc));
        assert!(!l.in_margin_call(d("99"), &btc));
        assert!(l.in_margin_call(d("90.6"), &btc));
        let unlevered = pos(PositionSide::Long, "1", "100", "100");
        assert_eq!(liquidation_price(&unlevered.row, &btc), None);
    }
}
