//! The bench users' dashboard rows, and a steady writer that changes them through a SQLite
//! connection of its own (the "any writer" path: the server's pump finds the commits).
//!
//! Every change the writer makes carries the writer's microsecond clock, taken just before
//! the commit: `updated_at` of a dashboard row (bench rows only; the server does not read
//! it), `reason` of a signal. A client that sees the row knows how old that state is.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::params;

use crate::now_micros;

/// Rows of each bench user's dashboard.
pub const POSITIONS: usize = 3;
pub const ORDERS: usize = 5;
pub const BOTS: usize = 2;

/// Give bench users `0..users` a portfolio, open positions, resting orders and (when `bots`)
/// stopped bots. Rows that exist already are kept.
pub fn seed(db: &rusqlite::Connection, users: usize, bots: bool) -> anyhow::Result<()> {
    const SYMBOLS: [&str; 3] = ["BTCUSDT", "ETHUSDT", "SOLUSDT"];
    let tx = db.unchecked_transaction()?;
    for i in 0..users {
        let (user, pf) = (format!("u_bench_{i}"), format!("pf_bench_{i}"));
        tx.execute(
            "INSERT OR IGNORE INTO portfolios(id, user_id, name, balance, equity, margin_available,
                                              created_at, updated_at)
             VALUES (?1, ?2, 'Bench', '10000', '10000', '10000', 0, 0)",
            params![pf, user],
        )?;
        if bots {
            for b in 0..BOTS {
                tx.execute(
                    "INSERT OR IGNORE INTO trading_bots(id, user_id, portfolio_id, name, strategy, symbol,
                                                        status, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, 'grid', 'BTCUSDT', 'stopped', 0, 0)",
                    params![format!("bot_bench_{i}_{b}"), user, pf, format!("Bench bot {b}")],
                )?;
            }
        }
        for p in 0..POSITIONS {
            tx.execute(
                "INSERT OR IGNORE INTO positions(id, user_id, portfolio_id, symbol, side, quantity,
                                                 entry_price, mark_price, opened_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, 'long', '0.010', '65000.0', '65000.0', 0, 0)",
                params![format!("pos_bench_{i}_{p}"), user, pf, SYMBOLS[p % SYMBOLS.len()]],
            )?;
        }
        for o in 0..ORDERS {
            tx.execute(
                "INSERT OR IGNORE INTO orders(id, user_id, portfolio_id, client_order_id, symbol, side,
                                              type, price, quantity, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, 'BTCUSDT', 'buy', 'limit', '60000.0', '0.010', 0, 0)",
                params![format!("ord_bench_{i}_{o}"), user, pf, format!("bench-{i}-{o}")],
            )?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// What the writer changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// Updates of the dashboard rows: positions (mark price) 4 in 10, orders (price) 3 in
    /// 10, portfolios (equity) 2 in 10, bots (status paused <-> stopped) 1 in 10.
    Dashboard,
    /// Signal inserts 5 in 10, position updates 2, order updates 2, a signal delete 1; every
    /// 7th transaction carries a second change (a signal insert).
    Soak,
}

/// Commits the clients have not seen yet, per user and row id (writer's stamps, oldest
/// first). The writer adds a stamp before committing; a client that sees the row with a
/// stamp at least as new takes every older one off.
pub struct Pending(Vec<Mutex<HashMap<String, VecDeque<u64>>>>);

impl Pending {
    pub fn new(users: usize) -> Self {
        Self((0..users).map(|_| Mutex::new(HashMap::new())).collect())
    }

    fn add(&self, user: usize, row: &str, stamp: u64) {
        let mut map = self.0[user].lock().unwrap_or_else(|e| e.into_inner());
        map.entry(row.to_string()).or_default().push_back(stamp);
    }

    /// The client of `user` sees `row` as of `stamp` at `now`: the staleness (µs) of every
    /// commit that this view reveals for the first time.
    pub fn seen(&self, user: usize, row: &str, stamp: u64, now: u64, out: &mut Vec<u64>) {
        let mut map = self.0[user].lock().unwrap_or_else(|e| e.into_inner());
        if let Some(q) = map.get_mut(row) {
            while q.front().is_some_and(|&s| s <= stamp) {
                out.push(now.saturating_sub(q.pop_front().unwrap_or(now)));
            }
        }
    }

    /// Commits nobody has seen yet.
    pub fn unseen(&self) -> u64 {
        self.0
            .iter()
            .map(|m| {
                m.lock().unwrap_or_else(|e| e.into_inner()).values().map(|q| q.len() as u64).sum::<u64>()
            })
            .sum()
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Written {
    pub changes: u64,
    pub transactions: u64,
    pub seconds: f64,
}

/// Commit changes at `rate` a second (none when 0), round-robin over users `0..users`,
/// until `until` or until `stop` is set.
pub fn run(
    db: &rusqlite::Connection,
    users: usize,
    rate: f64,
    until: Instant,
    stop: &std::sync::atomic::AtomicBool,
    mix: Mix,
    pending: Option<&Pending>,
) -> anyhow::Result<Written> {
    let start = Instant::now();
    let mut w = Written::default();
    if rate <= 0.0 {
        // No writes: just hold until the end.
        while Instant::now() < until && !stop.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
        w.seconds = start.elapsed().as_secs_f64();
        return Ok(w);
    }
    let mut n: u64 = 0;
    loop {
        let due = start + Duration::from_secs_f64(n as f64 / rate);
        if due >= until || stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let u = (n % users as u64) as usize;
        let k = n / users as u64;
        let tx = db.unchecked_transaction()?;
        let stamp = now_micros();
        let user = format!("u_bench_{u}");
        let changed = match mix {
            Mix::Dashboard => {
                let price = format!("{}.{}", 60_000 + stamp % 5_000, stamp % 10);
                let small = format!("{}.{:02}", stamp % 200, stamp % 100);
                let (sql, row) = match k % 10 {
                    0..=3 => (
                        "UPDATE positions SET mark_price = ?1, unrealized_pnl = ?2, updated_at = ?3 WHERE id = ?4",
                        format!("pos_bench_{u}_{}", k % POSITIONS as u64),
                    ),
                    4..=6 => (
                        "UPDATE orders SET price = ?1, quantity = ?2, updated_at = ?3 WHERE id = ?4",
                        format!("ord_bench_{u}_{}", k % ORDERS as u64),
                    ),
                    7 | 8 => (
                        "UPDATE portfolios SET equity = ?1, unrealized_pnl = ?2, updated_at = ?3 WHERE id = ?4",
                        format!("pf_bench_{u}"),
                    ),
                    _ => (
                        "UPDATE trading_bots SET updated_at = ?3,
                                status = CASE status WHEN 'paused' THEN 'stopped' ELSE 'paused' END
                         WHERE id = ?4 AND ?1 IS NOT NULL AND ?2 IS NOT NULL",
                        format!("bot_bench_{u}_{}", (k / 10) % BOTS as u64),
                    ),
                };
                if let Some(p) = pending {
                    p.add(u, &row, stamp);
                }
                tx.prepare_cached(sql)?.execute(params![price, small, stamp as i64, row])?
            }
            Mix::Soak => {
                let mut c = match k % 10 {
                    0..=4 => insert_signal(&tx, &user, n, stamp)?,
                    5 | 6 => tx
                        .prepare_cached(
                            "UPDATE positions SET mark_price = ?1, updated_at = ?2 WHERE id = ?3",
                        )?
                        .execute(params![
                            format!("{}.{}", 60_000 + stamp % 5_000, stamp % 10),
                            stamp as i64,
                            format!("pos_bench_{u}_{}", k % POSITIONS as u64)
                        ])?,
                    7 | 8 => tx
                        .prepare_cached("UPDATE orders SET price = ?1, updated_at = ?2 WHERE id = ?3")?
                        .execute(params![
                            format!("{}.{}", 55_000 + stamp % 5_000, stamp % 10),
                            stamp as i64,
                            format!("ord_bench_{u}_{}", k % ORDERS as u64)
                        ])?,
                    _ => tx
                        .prepare_cached(
                            "DELETE FROM signals WHERE id = (SELECT id FROM signals WHERE user_id = ?1
                             AND id LIKE 'sig_soak_%' ORDER BY ts LIMIT 1)",
                        )?
                        .execute([&user])?,
                };
                if w.transactions % 7 == 3 {
                    c += insert_signal(&tx, &user, n, stamp + 1)?;
                }
                c
            }
        };
        tx.commit()?;
        w.changes += changed as u64;
        w.transactions += 1;
        n += 1;
    }
    w.seconds = start.elapsed().as_secs_f64();
    Ok(w)
}

fn insert_signal(tx: &rusqlite::Transaction<'_>, user: &str, n: u64, stamp: u64) -> anyhow::Result<usize> {
    Ok(tx
        .prepare_cached(
            "INSERT INTO signals(id, user_id, symbol, direction, confidence, reason, ts)
             VALUES (?1, ?2, 'BTCUSDT', 'long', '0.5', ?3, ?4)",
        )?
        .execute(params![format!("sig_soak_{n}_{stamp}"), user, stamp.to_string(), (stamp / 1000) as i64])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_reveals_every_commit_up_to_its_stamp_once() {
        let p = Pending::new(2);
        p.add(0, "pos_1", 100);
        p.add(0, "pos_1", 200);
        p.add(0, "pos_1", 300);
        p.add(1, "pos_1", 150);
        let mut out = Vec::new();
        // A poll shows pos_1 as of the second commit: both commits so far are seen now.
        p.seen(0, "pos_1", 200, 1_000, &mut out);
        assert_eq!(out, [900, 800]);
        // The same view again reveals nothing new; another user's commit is untouched.
        out.clear();
        p.seen(0, "pos_1", 200, 2_000, &mut out);
        assert!(out.is_empty());
        assert_eq!(p.unseen(), 2);
        p.seen(0, "pos_1", 300, 2_000, &mut out);
        assert_eq!(out, [1_700]);
        assert_eq!(p.unseen(), 1);
    }
}
