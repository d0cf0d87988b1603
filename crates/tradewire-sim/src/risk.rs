//! Per-portfolio risk: the circuit breaker (daily loss limit and maximum drawdown) and the
//! figures it watches (P&L since the start of the UTC day, drawdown from peak equity).
//!
//! Decides only whether to trip; the simulator carries out what a trip means (halt the
//! portfolio in the engine, cancel its opening orders, pause its bots).

use rust_decimal::Decimal;

use crate::model::{CircuitBreaker, Risk};

const DAY_MS: i64 = 86_400_000;

/// One portfolio's circuit breaker. Its baselines (the day's starting equity and the
/// peak) live in the row, so they are stored with it and survive a restart.
#[derive(Debug, Clone)]
pub(crate) struct RiskState {
    pub row: Risk,
    emitted: Option<Risk>,
}

/// UTC midnight of the day `now_ms` falls in.
fn day_start(now_ms: i64) -> i64 {
    now_ms.div_euclid(DAY_MS) * DAY_MS
}

impl RiskState {
    /// Start watching from `equity` at `now_ms`. `fresh` rows have never been stored.
    /// Stored baselines are kept: the day's starting equity when it is still that day,
    /// the peak whatever the day (it only resets with the breaker).
    pub fn new(mut row: Risk, equity: Decimal, now_ms: i64, fresh: bool) -> Self {
        let emitted = (!fresh).then(|| row.clone());
        let today = day_start(now_ms);
        if row.day_start_ms != Some(today) || row.day_start_equity.is_none() {
            row.day_start_ms = Some(today);
            row.day_start_equity = Some(equity);
        }
        row.peak_equity = Some(row.peak_equity.map_or(equity, |p| p.max(equity)));
        RiskState { row, emitted }
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
            day_start_ms: None,
            day_start_equity: None,
            peak_equity: None,
        }
    }

    /// Update the figures at `equity`; returns the trip reason if the breaker trips now.
    pub fn evaluate(&mut self, equity: Decimal, now_ms: i64) -> Option<&'static str> {
        let today = day_start(now_ms);
        if self.row.day_start_ms != Some(today) {
            self.row.day_start_ms = Some(today);
            self.row.day_start_equity = Some(equity);
        }
        let peak = self.row.peak_equity.map_or(equity, |p| p.max(equity));
        self.row.peak_equity = Some(peak);
        self.row.daily_pnl = equity - self.row.day_start_equity.unwrap_or(equity);
        self.row.drawdown = if peak > Decimal::ZERO {
            ((peak - equity) / peak).round_dp(6).normalize()
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
    pub fn reset(&mut self, state: CircuitBreaker, equity: Decimal, now_ms: i64) {
        self.row.circuit_breaker = state;
        self.row.trip_reason = None;
        self.row.tripped_at = None;
        self.row.day_start_ms = Some(day_start(now_ms));
        self.row.day_start_equity = Some(equity);
        self.row.peak_equity = Some(equity);
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
        r.reset(CircuitBreaker::Armed, d(800), 3);
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
        r.reset(CircuitBreaker::Disabled, d(1000), 0);
        assert_eq!(r.evaluate(d(10), 1), None);
        assert!(r.take_update(5).is_some());
        assert!(r.take_update(6).is_none());
    }

    #[test]
    fn stored_baselines_survive_a_restart_the_same_day_and_the_day_ones_reset_the_next() {
        let mut row = RiskState::default_row("risk_p".into(), "u", "p", 0);
        row.daily_loss_limit = d(300);
        row.max_drawdown = Decimal::new(2, 1);
        let mut r = RiskState::new(row, d(1000), 10, true);
        r.evaluate(d(1500), 20);
        r.evaluate(d(1300), 30);
        let stored = r.take_update(30).expect("changed");
        assert_eq!((stored.daily_pnl, stored.peak_equity), (d(300), Some(d(1500))));

        // Restarted later the same day at equity 1250 (positions closed at their marks):
        // today's P&L is still measured from 1000 and the drawdown from 1500.
        let mut again = RiskState::new(stored.clone(), d(1250), 40, false);
        assert_eq!(again.evaluate(d(1250), 41), None);
        assert_eq!(again.row.daily_pnl, d(250));
        assert_eq!(again.row.drawdown, Decimal::new(16666667, 8).round_dp(6));
        // ... so the breaker still trips where it would have without the restart.
        assert_eq!(again.evaluate(d(1199), 42), Some("max_drawdown"));

        // Restarted the next day: the day's P&L starts again; the peak stays.
        let mut next_day = RiskState::new(stored, d(1250), DAY_MS + 5, false);
        next_day.evaluate(d(1250), DAY_MS + 6);
        assert_eq!(next_day.row.daily_pnl, Decimal::ZERO);
        assert_eq!(next_day.row.day_start_ms, Some(DAY_MS));
        assert_eq!(next_day.row.peak_equity, Some(d(1500)));

        // A row stored before baselines were kept starts them now.
        let mut old = RiskState::default_row("risk_q".into(), "u", "q", 0);
        old.daily_pnl = d(-40);
        let mut r = RiskState::new(old, d(900), 50, false);
        r.evaluate(d(900), 51);
        assert_eq!((r.row.daily_pnl, r.row.peak_equity), (Decimal::ZERO, Some(d(900))));
    }
}
