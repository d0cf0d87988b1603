//! A session's subscriptions and the matching of changes against them.

use std::sync::Arc;

use tradewire_protocol::ChangeOp;

use crate::{Change, Filter};

/// Which private topics a subscription covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicSet {
    /// `"*"`: every private topic.
    All,
    Only(Vec<Arc<str>>),
}

impl TopicSet {
    pub fn contains(&self, topic: &str) -> bool {
        match self {
            TopicSet::All => true,
            TopicSet::Only(list) => list.iter().any(|t| &**t == topic),
        }
    }
}

/// One subscription of one session. The owner filter is not here: a session only ever
/// receives its own user's changes (the hub routes by user), so no subscription can widen it.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub id: Arc<str>,
    pub topics: TopicSet,
    pub filter: Filter,
    /// Deliver only changes with `seq` above this: the position the subscription's
    /// snapshot or replay reached. Advances as changes are delivered.
    pub after: u64,
}

impl Subscription {
    /// Does this subscription want `change`? An update matches if the row matched the
    /// filter before or after it, so a client sees a row leave its filtered view. A
    /// truncate concerns every subscription to its table, whatever the filter.
    pub fn wants(&self, change: &Change) -> bool {
        change.seq > self.after
            && self.topics.contains(&change.topic)
            && (self.filter.is_empty()
                || change.op == ChangeOp::Truncate
                || change.rows().any(|r| self.filter.matches(r)))
    }
}

/// The subscriptions of one session, in the order they were made.
#[derive(Debug, Default)]
pub struct SubscriptionSet {
    subs: Vec<Subscription>,
}

impl SubscriptionSet {
    pub fn len(&self) -> usize {
        self.subs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.subs.iter().any(|s| &*s.id == id)
    }

    /// Add or replace the subscription with this id.
    pub fn insert(&mut self, sub: Subscription) {
        self.remove(&sub.id);
        self.subs.push(sub);
    }

    pub fn remove(&mut self, id: &str) -> Option<Subscription> {
        let i = self.subs.iter().position(|s| &*s.id == id)?;
        Some(self.subs.remove(i))
    }

    /// The ids of the subscriptions that want `change`, each advanced past it.
    pub fn deliver<'a>(&'a mut self, change: &'a Change) -> impl Iterator<Item = Arc<str>> + 'a {
        self.subs.iter_mut().filter_map(move |s| {
            if s.wants(change) {
                s.after = change.seq;
                Some(s.id.clone())
            } else {
                None
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn change(seq: u64, topic: &str, row: serde_json::Value, old: Option<serde_json::Value>) -> Change {
        let obj = |v: serde_json::Value| v.as_object().unwrap().clone();
        Change::new(
            "u1".into(),
            "e1".into(),
            seq,
            topic.into(),
            if old.is_some() { ChangeOp::Update } else { ChangeOp::Insert },
            vec![],
            0,
            Some(obj(row)),
            old.map(obj),
        )
    }

    #[test]
    fn topics_filters_and_positions_select_changes() {
        let mut set = SubscriptionSet::default();
        let f = Filter::parse(json!({"status": "new"}).as_object().unwrap()).unwrap();
        set.insert(Subscription {
            id: "a".into(),
            topics: TopicSet::All,
            filter: Filter::default(),
            after: 0,
        });
        set.insert(Subscription {
            id: "b".into(),
            topics: TopicSet::Only(vec!["orders".into()]),
            filter: f,
            after: 5,
        });

        let ids =
            |set: &mut SubscriptionSet, c: &Change| set.deliver(c).map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(ids(&mut set, &change(3, "orders", json!({"status": "new"}), None)), ["a"]);
        assert_eq!(ids(&mut set, &change(6, "orders", json!({"status": "new"}), None)), ["a", "b"]);
        assert_eq!(ids(&mut set, &change(7, "positions", json!({"status": "new"}), None)), ["a"]);
        // Leaving the filtered view is seen: the old row matched.
        assert_eq!(
            ids(&mut set, &change(8, "orders", json!({"status": "filled"}), Some(json!({"status": "new"})))),
            ["a", "b"]
        );
        assert_eq!(
            ids(
                &mut set,
                &change(9, "orders", json!({"status": "filled"}), Some(json!({"status": "filled"})))
            ),
            ["a"]
        );
        // A change at or below a subscription's position is never delivered twice.
        assert!(ids(&mut set, &change(9, "orders", json!({}), None)).is_empty());
    }

    #[test]
    fn a_truncate_reaches_every_subscription_to_its_table_whatever_the_filter() {
        let mut set = SubscriptionSet::default();
        let f = Filter::parse(json!({"status": "new"}).as_object().unwrap()).unwrap();
        set.insert(Subscription {
            id: "filtered".into(),
            topics: TopicSet::Only(vec!["orders".into()]),
            filter: f,
            after: 0,
        });
        set.insert(Subscription {
            id: "other".into(),
            topics: TopicSet::Only(vec!["positions".into()]),
            filter: Filter::default(),
            after: 0,
        });
        let truncate = Change::new(
            "u1".into(),
            "e1".into(),
            1,
            "orders".into(),
            ChangeOp::Truncate,
            vec![],
            0,
            None,
            None,
        );
        assert_eq!(set.deliver(&truncate).map(|s| s.to_string()).collect::<Vec<_>>(), ["filtered"]);
    }
}
