//! Per-connection rate limit on client frames: a token bucket holding two seconds' worth,
//! refilled at the configured rate. Frames over the limit are dropped with one
//! `rate_limited` error per burst; a client that keeps flooding for a full second's worth
//! of rejected frames is closed with 4029.

use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Drop the frame; `first` is true for the first rejection of a burst.
    Reject {
        first: bool,
    },
    Close,
}

#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
    rejected_in_row: u32,
}

impl RateLimiter {
    pub fn new(per_second: u32) -> Self {
        let rate = f64::from(per_second.max(1));
        Self { rate, capacity: rate * 2.0, tokens: rate * 2.0, last: Instant::now(), rejected_in_row: 0 }
    }

    pub fn check(&mut self) -> Verdict {
        self.check_at(Instant::now())
    }

    fn check_at(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.rejected_in_row = 0;
            return Verdict::Allow;
        }
        self.rejected_in_row += 1;
        if f64::from(self.rejected_in_row) > self.rate {
            Verdict::Close
        } else {
            Verdict::Reject { first: self.rejected_in_row == 1 }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bursts_pass_floods_are_dropped_then_closed() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(10);
        for _ in 0..20 {
            assert_eq!(l.check_at(t0), Verdict::Allow);
        }
        assert_eq!(l.check_at(t0), Verdict::Reject { first: true });
        for _ in 0..9 {
            assert_eq!(l.check_at(t0), Verdict::Reject { first: false });
        }
        assert_eq!(l.check_at(t0), Verdict::Close);
    }

    #[test]
    fn a_client_within_the_rate_is_never_limited() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(10);
        for i in 0..1000 {
            assert_eq!(l.check_at(t0 + Duration::from_millis(100 * i)), Verdict::Allow);
        }
    }
}
