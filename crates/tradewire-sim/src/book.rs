//! Order book levels: the synthetic ladder the market publishes, the diff between two
//! ladders (a delta), and [`BookView`], the copy a consumer (the engine) keeps by applying
//! a snapshot and then deltas.
//!
//! Quantities here are displayed liquidity only; the engine never consumes it (each order
//! walks the book as published, see `engine`).

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// One price level: `[price, quantity]` on the wire. Quantity 0 in a delta removes the level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Level(pub Decimal, pub Decimal);

impl Level {
    pub fn price(&self) -> Decimal {
        self.0
    }
    pub fn qty(&self) -> Decimal {
        self.1
    }
}

/// The levels of one side whose quantity differs between `old` and `new` (0 = removed),
/// in ascending price order.
pub(crate) fn diff(old: &BTreeMap<Decimal, Decimal>, new: &BTreeMap<Decimal, Decimal>) -> Vec<Level> {
    let mut out = Vec::new();
    for p in old.keys() {
        if !new.contains_key(p) {
            out.push(Level(*p, Decimal::ZERO));
        }
    }
    for (p, q) in new {
        if old.get(p) != Some(q) {
            out.push(Level(*p, *q));
        }
    }
    out.sort_by_key(|a| a.0);
    out
}

/// A consumer's copy of one symbol's book, kept by applying a snapshot then deltas.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BookView {
    pub update_id: u64,
    pub bids: BTreeMap<Decimal, Decimal>,
    pub asks: BTreeMap<Decimal, Decimal>,
}

impl BookView {
    /// Replace the whole book.
    pub fn apply_snapshot(&mut self, update_id: u64, bids: &[Level], asks: &[Level]) {
        self.update_id = update_id;
        self.bids = bids.iter().map(|l| (l.0, l.1)).collect();
        self.asks = asks.iter().map(|l| (l.0, l.1)).collect();
    }

    /// Apply changed levels. Returns false (and applies nothing) if `prev_update_id` does not
    /// match the last applied update: the consumer must then wait for a snapshot.
    pub fn apply_delta(
        &mut self,
        update_id: u64,
        prev_update_id: u64,
        bids: &[Level],
        asks: &[Level],
    ) -> bool {
        if prev_update_id != self.update_id {
            return false;
        }
        for l in bids {
            set_level(&mut self.bids, *l);
        }
        for l in asks {
            set_level(&mut self.asks, *l);
        }
        self.update_id = update_id;
        true
    }

    pub fn best_bid(&self) -> Option<Decimal> {
        self.bids.keys().next_back().copied()
    }

    pub fn best_ask(&self) -> Option<Decimal> {
        self.asks.keys().next().copied()
    }

    /// Bids from the best (highest) down.
    pub fn bids_desc(&self) -> impl Iterator<Item = (Decimal, Decimal)> + '_ {
        self.bids.iter().rev().map(|(p, q)| (*p, *q))
    }

    /// Asks from the best (lowest) up.
    pub fn asks_asc(&self) -> impl Iterator<Item = (Decimal, Decimal)> + '_ {
        self.asks.iter().map(|(p, q)| (*p, *q))
    }
}

fn set_level(side: &mut BTreeMap<Decimal, Decimal>, l: Level) {
    if l.1.is_zero() {
        side.remove(&l.0);
    } else {
        side.insert(l.0, l.1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(levels: &[(i64, i64)]) -> BTreeMap<Decimal, Decimal> {
        levels.iter().map(|(p, q)| (Decimal::from(*p), Decimal::from(*q))).collect()
    }

    #[test]
    fn diff_then_apply_reproduces_the_new_side() {
        let old = m(&[(10, 1), (11, 2), (12, 3)]);
        let new = m(&[(11, 2), (12, 4), (13, 5)]);
        let d = diff(&old, &new);
        assert_eq!(d.len(), 3);
        let mut view = BookView::default();
        let old_levels: Vec<Level> = old.iter().map(|(p, q)| Level(*p, *q)).collect();
        view.apply_snapshot(1, &old_levels, &[]);
        assert!(view.apply_delta(2, 1, &d, &[]));
        assert_eq!(view.bids, new);
        assert!(!view.apply_delta(4, 3, &[], &[]), "a gap is refused");
        assert_eq!(view.update_id, 2);
    }
}
