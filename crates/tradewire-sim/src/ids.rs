//! Deterministic row ids: one counter per kind, never a random UUID.
//!
//! Every id is `<kind>_<prefix><n>` (`ord_1`, `fil_7`, or `ord_r42-7` with prefix `r42-`).
//! The prefix lets a driver keep ids unique across runs against one database; the counters
//! make the same seed and commands produce the same ids.

use std::collections::BTreeMap;

/// Generator of deterministic ids, one counter per kind.
#[derive(Debug, Clone, Default)]
pub struct Ids {
    prefix: String,
    next: BTreeMap<&'static str, u64>,
}

impl Ids {
    /// A generator whose ids look like `<kind>_<prefix><n>`, counting from 1.
    pub fn new(prefix: impl Into<String>) -> Self {
        Ids { prefix: prefix.into(), next: BTreeMap::new() }
    }

    /// The next id of `kind`.
    pub fn next(&mut self, kind: &'static str) -> String {
        let n = self.next.entry(kind).or_insert(0);
        *n += 1;
        format!("{kind}_{}{n}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_per_kind_and_prefixed() {
        let mut ids = Ids::new("");
        assert_eq!(ids.next("ord"), "ord_1");
        assert_eq!(ids.next("ord"), "ord_2");
        assert_eq!(ids.next("fil"), "fil_1");
        let mut ids = Ids::new("r9-");
        assert_eq!(ids.next("pos"), "pos_r9-1");
    }
}
