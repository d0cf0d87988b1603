//! Per-portfolio risk: the circuit breaker (daily loss limit and maximum drawdown) and the
//! figures it watches (P&L since the start of the UTC day, drawdown from peak equity).
//!
//! Decides only whether to trip; the simulator carries out what a trip means (halt the
//! portfolio in the engine, cancel its opening orders, pause its bots).

use rust_decimal::Decimal;

use crate::model::{CircuitBreaker, Risk};

const DAY_MS: i64 = 86_400_000;

/// One portfolio's circuit breaker.
#[derive(Debug, Clone)]
pub(crate) struct RiskState {
    pub row: Risk,
    day: i64,
    day_start_equity: Decimal,
    peak_equity: Decimal,
    emitted: Option<Risk>,
}

impl RiskState {
    /// Start watching from `equity` at `now_ms`. `fresh` rows have never been stored.
    pub fn new(row: Risk, equity: Decimal, now_ms: i64, fresh: bool) -> Self {
        let emitted = (!fresh).then(|| row.clone());
        RiskState {
            row,
            day: now_ms.div_euclid(DAY_MS),
            day_start_equity: equity,
            peak_equity: equity,
            emitted,
        }
    }

    /// A default row: armed, limits 0 (disabled).
    pub fn default_row(id: String, user_id: &str, portfolio_id: &str, now_ms: i64) -> Risk {
        Risk {
            id,
            user_id: user_id.to_string(),
            portfolio_id: portfolio_id.to_string(),
            circuit_breaker: CircuitBreaker::Armed,
            trip_reason: None,
            daily_loss_limit: Decimal::ZERO,
            max_drawdown: Decimal::ZERO,
            daily_pnl: Decimal::ZERO,
            drawdown: Decimal::ZERO,
            tripped_at: None,
            updated_at: now_ms,
        }
    }

    /// Update the figures at `equity`; returns the trip reason if the breaker trips now.
    pub fn evaluate(&mut self, equity: Decimal, now_ms: i64) -> Option<&'static str> {
        let day = now_ms.div_euclid(DAY_MS);
        if day != self.day {
            self.day = day;
            self.day_start_equity = equity;
        }
        self.peak_equity = self.peak_equity.max(equity);
        self.row.daily_pnl = equity - self.day_start_equity;
        self.row.drawdown = if self.peak_equity > Decimal::ZERO {
            ((self.peak_equity - equity) / self.peak_equity).round_dp(6).normalize()
        } else {
            Decimal::ZERO
        };
        if self.row.circuit_breaker != CircuitBreaker::Armed {
            return None;
        }
        let reason = if self.row.daily_loss_limit > Decimal::ZERO
            && self.row.daily_pnl <= -self.row.daily_loss_limit
        {
            Some("daily_loss_limit")
        } else if self.row.max_drawdown > Decimal::ZERO && self.row.drawdown >= self.row.max_drawdown {
            Some("max_drawdown")
        } else {
            None
        };
        if let Some(r) = reason {
            self.row.circuit_breaker = CircuitBreaker::Tripped;
            self.row.trip_reason = Some(r.to_string());
            self.row.tripped_at = Some(now_ms);
        }
        reason
    }

    /// Re-arm (or disable) the breaker; the baselines restart from `equity`.
    pub fn reset(&mut self, state: CircuitBreaker, equity: Decimal) {
        self.row.circuit_breaker = state;
        self.row.trip_reason = None;
        self.row.tripped_at = None;
        self.day_start_equity = equity;
        self.peak_equity = equity;
        self.row.daily_pnl = Decimal::ZERO;
        self.row.drawdown = Decimal::ZERO;
    }

    /// The row if it changed since last handed out (ignoring `updated_at`).
    pub fn take_update(&mut self, now_ms: i64) -> Option<Risk> {
        crate::model::take_changed(&mut self.row, &mut self.emitted, now_ms, |r| &mut r.updated_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(x: i64) -> Decimal {
        Decimal::from(x)
    }

    #[test]
    fn trips_on_daily_loss_then_stays_tripped_until_reset() {
        let mut row = RiskState::default_row("risk_p".into(), "u", "p", 0);
        row.daily_loss_limit = d(100);
        let mut r = RiskState::new(row, d(1000), 0, true);
        assert_eq!(r.evaluate(d(950), 1), None);
        assert_eq!(r.row.daily_pnl, d(-50));
        assert_eq!(r.evaluate(d(900), 2), Some("daily_loss_limit"));
        assert_eq!(r.row.circuit_breaker, CircuitBreaker::Tripped);
        assert_eq!(r.row.tripped_at, Some(2));
        assert_eq!(r.evaluate(d(800), 3), None, "already tripped");
        r.reset(CircuitBreaker::Armed, d(800));
        assert_eq!(r.evaluate(d(750), 4), None);
        // A new UTC day restarts the daily P&L.
        assert_eq!(r.evaluate(d(750), DAY_MS + 1), None);
        assert_eq!(r.row.daily_pnl, Decimal::ZERO);
    }

    #[test]
    fn trips_on_drawdown_from_peak() {
        let mut row = RiskState::default_row("risk_p".into(), "u", "p", 0);
        row.max_drawdown = Decimal::new(1, 1);
        let mut r = RiskState::new(row, d(1000), 0, true);
        assert_eq!(r.evaluate(d(1200), 1), None);
        assert_eq!(r.evaluate(d(1090), 2), None);
        assert_eq!(r.evaluate(d(1080), 3), Some("max_drawdown"));
        assert_eq!(r.row.drawdown, Decimal::new(1, 1));
        assert_eq!(r.row.trip_reason.as_deref(), Some("max_drawdown"));
    }

    #[test]
    fn disabled_never_trips_and_updates_are_deduplicated() {
        let mut row = RiskState::default_row("risk_p".into(), "u", "p", 0);
        row.daily_loss_limit = d(1);
        let mut r = RiskState::new(row, d(1000), 0, true);
        r.reset(CircuitBreaker::Disabled, d(1000));
        assert_eq!(r.evaluate(d(10), 1), None);
        assert!(r.take_update(5).is_some());
        assert!(r.take_update(6).is_none());
    }
}
