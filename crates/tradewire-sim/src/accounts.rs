//! Portfolio accounting: cash balance, realized P&L, and the margin ledger
//! (`margin_used` moves by exactly the amounts reserved, moved into positions, and
//! released), plus the derived equity and available margin.
//!
//! Knows nothing about orders or positions themselves; the engine tells it amounts.

use rust_decimal::Decimal;

use crate::model::Portfolio;

/// Money amounts are kept to 8 decimal places.
pub(crate) fn money(x: Decimal) -> Decimal {
    x.round_dp(8).normalize()
}

/// One portfolio's account.
#[derive(Debug, Clone)]
pub(crate) struct Account {
    pub row: Portfolio,
    /// The row as last handed out, to emit only real changes.
    emitted: Option<Portfolio>,
}

impl Account {
    /// Start from a stored row. The simulator starts flat: margin is reset to 0 and the
    /// derived columns are recomputed (and emitted on the first flush if they changed).
    pub fn new(row: Portfolio) -> Self {
        let emitted = Some(row.clone());
        let mut a = Account { row, emitted };
        a.row.margin_used = Decimal::ZERO;
        a.revalue(Decimal::ZERO);
        a
    }

    pub fn reserve(&mut self, amount: Decimal) {
        self.row.margin_used += amount;
    }

    pub fn release(&mut self, amount: Decimal) {
        self.row.margin_used -= amount;
    }

    /// Book realized P&L net of fees into cash.
    pub fn realize(&mut self, net: Decimal) {
        self.row.balance += net;
        self.row.realized_pnl += net;
    }

    /// Recompute the derived columns from the open positions' unrealized P&L.
    pub fn revalue(&mut self, unrealized: Decimal) {
        self.row.unrealized_pnl = unrealized;
        self.row.equity = self.row.balance + unrealized;
        self.row.margin_available = self.row.equity - self.row.margin_used;
    }

    /// The row, if it changed since it was last handed out (ignoring `updated_at`).
    pub fn take_update(&mut self, now_ms: i64) -> Option<Portfolio> {
        crate::model::take_changed(&mut self.row, &mut self.emitted, now_ms, |r| &mut r.updated_at)
    }
}
