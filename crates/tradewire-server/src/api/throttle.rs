//! Login throttling: password guessing costs the guesser, not the server.
//!
//! Two fixed windows: failed logins per user name (a slow guess at one account from many
//! addresses) and attempts per source address (one address trying many names). Over
//! either limit the login is answered 429 `rate_limited` with `Retry-After`, before any
//! password is hashed. The tables are bounded: expired windows are dropped, and when a
//! table is full the oldest windows go first.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Limits of [`LoginThrottle`].
#[derive(Debug, Clone, Copy)]
pub struct ThrottleLimits {
    /// Failed logins per user name per window.
    pub failures_per_user: u32,
    /// Login attempts per source address per window.
    pub attempts_per_address: u32,
    pub window: Duration,
    /// Most user names and addresses remembered at once (each).
    pub max_entries: usize,
}

impl Default for ThrottleLimits {
    fn default() -> Self {
        Self {
            failures_per_user: 10,
            attempts_per_address: 30,
            window: Duration::from_secs(60),
            max_entries: 65_536,
        }
    }
}

/// One key's count in its current window.
#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    count: u32,
}

#[derive(Debug)]
struct Table<K> {
    windows: HashMap<K, Window>,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new() -> Self {
        Self { windows: HashMap::new() }
    }

    /// The count of `key` in its live window (0 when none).
    fn count(&self, key: &K, now: Instant, window: Duration) -> (u32, Duration) {
        match self.windows.get(key) {
            Some(w) if now.duration_since(w.started) < window => {
                (w.count, window - now.duration_since(w.started))
            }
            _ => (0, Duration::ZERO),
        }
    }

    fn add(&mut self, key: &K, now: Instant, window: Duration, max_entries: usize) {
        if !self.windows.contains_key(key) && self.windows.len() >= max_entries {
            self.windows.retain(|_, w| now.duration_since(w.started) < window);
            if self.windows.len() >= max_entries {
                // Still full of live windows: forget the oldest half.
                let mut starts: Vec<Instant> = self.windows.values().map(|w| w.started).collect();
                starts.sort_unstable();
                let cut = starts[starts.len() / 2];
                self.windows.retain(|_, w| w.started > cut);
            }
        }
        let w = self.windows.entry(key.clone()).or_insert(Window { started: now, count: 0 });
        if now.duration_since(w.started) >= window {
            *w = Window { started: now, count: 0 };
        }
        w.count += 1;
    }

    fn clear(&mut self, key: &K) {
        self.windows.remove(key);
    }

    fn len(&self) -> usize {
        self.windows.len()
    }
}

/// The table key of a user name: its first 64 characters, so a name of a megabyte costs
/// the table no more than any other.
fn key(user: &str) -> String {
    user.chars().take(64).collect()
}

/// Counts login attempts and failures.
#[derive(Debug)]
pub struct LoginThrottle {
    limits: ThrottleLimits,
    users: Mutex<Table<String>>,
    addresses: Mutex<Table<IpAddr>>,
}

impl LoginThrottle {
    pub fn new(limits: ThrottleLimits) -> Self {
        Self { limits, users: Mutex::new(Table::new()), addresses: Mutex::new(Table::new()) }
    }

    /// Count an attempt from `address` for `user`; `Err(retry_after)` when it must wait.
    pub fn attempt(&self, user: &str, address: IpAddr) -> Result<(), Duration> {
        self.attempt_at(user, address, Instant::now())
    }

    fn attempt_at(&self, user: &str, address: IpAddr, now: Instant) -> Result<(), Duration> {
        let l = self.limits;
        let user = key(user);
        let (failures, user_wait) =
            self.users.lock().unwrap_or_else(|p| p.into_inner()).count(&user, now, l.window);
        if failures >= l.failures_per_user {
            return Err(user_wait);
        }
        let mut addresses = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
        let (attempts, address_wait) = addresses.count(&address, now, l.window);
        if attempts >= l.attempts_per_address {
            return Err(address_wait);
        }
        addresses.add(&address, now, l.window, l.max_entries);
        Ok(())
    }

    /// A failed login for `user`.
    pub fn failed(&self, user: &str) {
        let l = self.limits;
        self.users.lock().unwrap_or_else(|p| p.into_inner()).add(
            &key(user),
            Instant::now(),
            l.window,
            l.max_entries,
        );
    }

    /// A successful login: the user's failures are forgotten.
    pub fn succeeded(&self, user: &str) {
        self.users.lock().unwrap_or_else(|p| p.into_inner()).clear(&key(user));
    }

    /// How many user names and addresses are remembered.
    pub fn remembered(&self) -> (usize, usize) {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner()).len();
        (users, self.addresses.lock().unwrap_or_else(|p| p.into_inner()).len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> LoginThrottle {
        LoginThrottle::new(ThrottleLimits {
            failures_per_user: 3,
            attempts_per_address: 5,
            window: Duration::from_secs(60),
            max_entries: 100,
        })
    }

    #[test]
    fn failures_of_one_user_and_attempts_of_one_address_are_limited_per_window() {
        let t = throttle();
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(t.attempt_at("alice", a, t0).is_ok());
            t.failed("alice");
        }
        let wait = t.attempt_at("alice", b, t0).unwrap_err();
        assert!(wait > Duration::from_secs(50), "alice waits out the window from any address: {wait:?}");
        assert!(t.attempt_at("bob", a, t0).is_ok(), "another user from the same address still may");
        assert!(t.attempt_at("carol", a, t0).is_ok());
        assert!(t.attempt_at("dave", a, t0).is_err(), "the address has used its 5 attempts");
        assert!(t.attempt_at("alice", b, t0 + Duration::from_secs(61)).is_ok(), "a new window");
    }

    #[test]
    fn a_long_user_name_is_kept_short() {
        let t = throttle();
        let long = "x".repeat(1 << 20);
        t.failed(&long);
        let users = t.users.lock().unwrap();
        assert!(users.windows.keys().all(|k| k.len() <= 64));
    }

    #[test]
    fn the_tables_stay_bounded() {
        let t = throttle();
        let t0 = Instant::now();
        for n in 0..1000u32 {
            let addr = IpAddr::from(n.to_be_bytes());
            let _ = t.attempt_at(&format!("user{n}"), addr, t0);
            t.failed(&format!("user{n}"));
        }
        let (users, addresses) = t.remembered();
        assert!(users <= 100 && addresses <= 100, "{users} users, {addresses} addresses");
    }
}
