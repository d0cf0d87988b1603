//! Public market data: one shared stream per topic (`ticker:BTCUSDT`, `book:ETHUSDT`, …),
//! conflated per session. A session never queues a backlog: each subscribed topic holds at
//! most one pending message, replaced by newer ones until the session takes it. Memory per
//! session is bounded by the number of topics it subscribes to.
//!
//! Order-book deltas cannot simply replace each other (a client applies them in a chain of
//! `update_id`s), so when a session would skip a delta, it is given the current full book
//! instead, and the chain restarts from there.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::Poll;

use bytes::Bytes;
use futures::task::AtomicWaker;
use tradewire_protocol::MarketTopic;

/// One encoded market message (`{"op":"market",…}`), shared by every recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarketMessage {
    pub topic: Arc<str>,
    pub frame: Bytes,
    pub kind: MarketKind,
}

impl MarketMessage {
    /// Encode `{"op":"market","topic":…,"ts":…,"data":…}` once.
    pub fn encode(topic: &str, kind: MarketKind, ts: i64, data: serde_json::Value) -> Self {
        let frame = tradewire_protocol::ServerFrame::Market { topic: topic.to_owned(), ts, data }.to_json();
        Self { topic: Arc::from(topic), frame: Bytes::from(frame), kind }
    }
}

/// How a message conflates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarketKind {
    /// The latest value replaces any older one (ticker, trades, klines, mark price).
    Latest,
    /// A full order book.
    BookSnapshot,
    /// An order-book delta: it may only be skipped by replacing it with a full book.
    BookDelta,
}

#[derive(Debug, Default)]
struct TopicState {
    /// The last message published (what a new subscriber gets first, unless a book).
    latest: Option<Arc<MarketMessage>>,
    /// The current full book, for book topics.
    book: Option<Arc<MarketMessage>>,
    subscribers: Vec<(u64, Arc<Inbox>)>,
}

/// The shared market-data streams. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct MarketBus {
    inner: Arc<BusInner>,
}

#[derive(Debug, Default)]
struct BusInner {
    topics: RwLock<HashMap<Arc<str>, TopicState>>,
    /// The symbols a market source serves; empty while none runs.
    symbols: RwLock<HashSet<String>>,
    /// The kline intervals it publishes (`1m`, …).
    kline_intervals: RwLock<HashSet<String>>,
    next: AtomicU64,
}

/// A session's conflating inbox of market messages.
///
/// One publish offers to every subscriber's inbox, so an offer is kept cheap: an
/// uncontended lock, a pointer comparison per pending topic, and a wake only when the
/// inbox turns non-empty (a session that is already due is not woken again).
#[derive(Debug, Default)]
pub struct Inbox {
    /// Topic → the one message waiting for the session, in arrival order of topics.
    pending: Mutex<Vec<Arc<MarketMessage>>>,
    /// `pending` is not empty (written under its lock, read without it by `ready`).
    due: AtomicBool,
    /// The session's task, waiting in `ready`.
    waker: AtomicWaker,
    /// Messages replaced before the session took them (tests check conflation with it).
    #[cfg(test)]
    conflated: AtomicU64,
}

impl Inbox {
    fn offer(&self, msg: Arc<MarketMessage>, book: Option<&Arc<MarketMessage>>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        // The bus hands out one `Arc<str>` per topic, so the pointer usually decides.
        match pending.iter_mut().find(|m| Arc::ptr_eq(&m.topic, &msg.topic) || m.topic == msg.topic) {
            Some(slot) => {
                #[cfg(test)]
                self.conflated.fetch_add(1, Ordering::Relaxed);
                *slot = match (msg.kind, book) {
                    // Skipping a delta breaks the chain: hand over the whole book instead.
                    (MarketKind::BookDelta, Some(book)) => book.clone(),
                    _ => msg,
                };
            }
            None => pending.push(msg),
        }
        let was_due = self.due.swap(true, Ordering::AcqRel);
        drop(pending);
        if !was_due {
            self.waker.wake();
        }
    }

    /// Wait until something is pending. Cancel-safe. One session waits on an inbox.
    pub async fn ready(&self) {
        std::future::poll_fn(|cx| {
            if self.due.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            // An offer between the check and the registration has woken the old waker.
            if self.due.load(Ordering::Acquire) { Poll::Ready(()) } else { Poll::Pending }
        })
        .await
    }

    /// Take everything pending (at most one message per subscribed topic).
    pub fn take(&self) -> Vec<Arc<MarketMessage>> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        self.due.store(false, Ordering::Release);
        std::mem::take(&mut *pending)
    }

    /// How many messages were replaced before they were taken.
    #[cfg(test)]
    fn conflated(&self) -> u64 {
        self.conflated.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    fn pending_len(&self) -> usize {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// A session's subscription to one market topic; dropping it unsubscribes.
#[derive(Debug)]
pub struct MarketSubscription {
    bus: MarketBus,
    topic: Arc<str>,
    id: u64,
}

impl Drop for MarketSubscription {
    fn drop(&mut self) {
        let mut topics = self.bus.inner.topics.write().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = topics.get_mut(&self.topic) {
            t.subscribers.retain(|(id, _)| *id != self.id);
            // A topic nothing was ever published on leaves with its last subscriber, so
            // subscribing cannot grow the bus; published topics are the source's (bounded)
            // and keep their latest value for the next subscriber.
            if t.subscribers.is_empty() && t.latest.is_none() && t.book.is_none() {
                topics.remove(&self.topic);
            }
        }
    }
}

impl MarketBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Subscribe `inbox` to `topic`. The current state (the full book, or the latest value)
    /// is offered at once, so a new subscriber starts from something whole.
    pub fn subscribe(&self, topic: &str, inbox: &Arc<Inbox>) -> MarketSubscription {
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let mut topics = self.inner.topics.write().unwrap_or_else(|p| p.into_inner());
        let (topic, state) = match topics.get_key_value(topic) {
            Some((k, _)) => {
                let k = k.clone();
                let state = topics.get_mut(&k).expect("just found");
                (k, state)
            }
            None => {
                let k: Arc<str> = Arc::from(topic);
                (k.clone(), topics.entry(k).or_default())
            }
        };
        if let Some(first) = state.book.as_ref().or(state.latest.as_ref()) {
            inbox.offer(first.clone(), None);
        }
        state.subscribers.push((id, inbox.clone()));
        MarketSubscription { bus: self.clone(), topic, id }
    }

    /// Publish a message to every subscriber of its topic. Never blocks on a session.
    pub fn publish(&self, msg: MarketMessage) {
        self.publish_with_book(msg, None)
    }

    /// Publish a book delta together with the full book it produces (kept as the topic's
    /// current book, and handed to sessions that would otherwise skip this delta).
    pub fn publish_book_delta(&self, delta: MarketMessage, book: MarketMessage) {
        debug_assert_eq!(delta.kind, MarketKind::BookDelta);
        debug_assert_eq!(book.kind, MarketKind::BookSnapshot);
        self.publish_with_book(delta, Some(book))
    }

    fn publish_with_book(&self, mut msg: MarketMessage, book: Option<MarketMessage>) {
        let mut topics = self.inner.topics.write().unwrap_or_else(|p| p.into_inner());
        // Share the topic's one name, so inboxes compare topics by pointer.
        if let Some((name, _)) = topics.get_key_value(&msg.topic) {
            msg.topic = name.clone();
        }
        let msg = Arc::new(msg);
        let state = topics.entry(msg.topic.clone()).or_default();
        match (msg.kind, book) {
            (MarketKind::BookSnapshot, _) => state.book = Some(msg.clone()),
            (_, Some(book)) => state.book = Some(Arc::new(book)),
            _ => {}
        }
        state.latest = Some(msg.clone());
        for (_, inbox) in &state.subscribers {
            inbox.offer(msg.clone(), state.book.as_ref());
        }
        metrics::counter!("tradewire_market_published_total").increment(1);
    }

    /// Declare the symbols the running market source serves (its topics are valid).
    pub fn set_symbols<I: IntoIterator<Item = String>>(&self, symbols: I) {
        *self.inner.symbols.write().unwrap_or_else(|p| p.into_inner()) = symbols.into_iter().collect();
    }

    /// Declare the kline intervals the running market source publishes.
    pub fn set_kline_intervals<I: IntoIterator<Item = String>>(&self, intervals: I) {
        *self.inner.kline_intervals.write().unwrap_or_else(|p| p.into_inner()) =
            intervals.into_iter().collect();
    }

    /// Is `symbol` served? (Always false while no market source runs.)
    pub fn serves(&self, symbol: &str) -> bool {
        self.inner.symbols.read().unwrap_or_else(|p| p.into_inner()).contains(symbol)
    }

    /// Is `topic` one the running source publishes: a served symbol, and for klines a
    /// published interval?
    pub fn serves_topic(&self, topic: &MarketTopic) -> bool {
        *topic == MarketTopic::System
            || self.serves(topic.symbol())
                && match topic {
                    MarketTopic::Kline(_, interval) => self
                        .inner
                        .kline_intervals
                        .read()
                        .unwrap_or_else(|p| p.into_inner())
                        .contains(interval),
                    _ => true,
                }
    }

    /// How many topics the bus holds (published or subscribed).
    pub fn topic_count(&self) -> usize {
        self.inner.topics.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn subscribers(&self, topic: &str) -> usize {
        let topics = self.inner.topics.read().unwrap_or_else(|p| p.into_inner());
        topics.get(topic).map_or(0, |t| t.subscribers.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(topic: &str, kind: MarketKind, n: u32) -> MarketMessage {
        MarketMessage { topic: topic.into(), frame: Bytes::from(format!("{topic}#{n}")), kind }
    }

    fn frames(inbox: &Inbox) -> Vec<String> {
        inbox.take().iter().map(|m| String::from_utf8(m.frame.to_vec()).unwrap()).collect()
    }

    #[test]
    fn a_slow_session_gets_the_latest_value_per_topic_never_a_backlog() {
        let bus = MarketBus::new();
        let inbox = Arc::new(Inbox::default());
        let _a = bus.subscribe("ticker:BTCUSDT", &inbox);
        let _b = bus.subscribe("ticker:ETHUSDT", &inbox);
        for n in 0..1000 {
            bus.publish(msg("ticker:BTCUSDT", MarketKind::Latest, n));
            bus.publish(msg("ticker:ETHUSDT", MarketKind::Latest, n));
            assert!(inbox.pending_len() <= 2, "at most one pending message per topic");
        }
        assert_eq!(frames(&inbox), ["ticker:BTCUSDT#999", "ticker:ETHUSDT#999"]);
        assert_eq!(inbox.conflated(), 1998);
        assert!(inbox.take().is_empty());
    }

    #[test]
    fn a_skipped_book_delta_becomes_the_full_book() {
        let bus = MarketBus::new();
        bus.publish(msg("book:BTCUSDT", MarketKind::BookSnapshot, 0));
        let inbox = Arc::new(Inbox::default());
        let _s = bus.subscribe("book:BTCUSDT", &inbox);
        assert_eq!(frames(&inbox), ["book:BTCUSDT#0"], "a new subscriber starts from the full book");

        bus.publish_book_delta(
            msg("book:BTCUSDT", MarketKind::BookDelta, 1),
            msg("book:BTCUSDT", MarketKind::BookSnapshot, 1),
        );
        assert_eq!(frames(&inbox), ["book:BTCUSDT#1"], "a session that keeps up gets the delta itself");

        bus.publish_book_delta(
            msg("book:BTCUSDT", MarketKind::BookDelta, 2),
            msg("book:BTCUSDT", MarketKind::BookSnapshot, 2),
        );
        bus.publish_book_delta(
            msg("book:BTCUSDT", MarketKind::BookDelta, 3),
            msg("book:BTCUSDT", MarketKind::BookSnapshot, 3),
        );
        let got = inbox.take();
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].kind,
            MarketKind::BookSnapshot,
            "skipping delta 2 turns the pending message into the book"
        );
        assert_eq!(got[0].frame, Bytes::from("book:BTCUSDT#3"));
    }

    #[test]
    fn a_topic_never_published_leaves_with_its_last_subscriber() {
        let bus = MarketBus::new();
        let inbox = Arc::new(Inbox::default());
        bus.publish(msg("mark:BTCUSDT", MarketKind::Latest, 1));
        for n in 0..1000 {
            drop(bus.subscribe(&format!("mark:X{n}"), &inbox));
        }
        let kept = bus.subscribe("mark:BTCUSDT", &inbox);
        drop(kept);
        assert_eq!(bus.topic_count(), 1, "only the published topic stays");
    }

    #[test]
    fn klines_are_served_only_for_declared_intervals() {
        let bus = MarketBus::new();
        bus.set_symbols(["BTCUSDT".to_owned()]);
        let kline = |iv: &str| MarketTopic::Kline("BTCUSDT".into(), iv.into());
        assert!(!bus.serves_topic(&kline("1m")), "no interval declared yet");
        bus.set_kline_intervals(["1m".to_owned()]);
        assert!(bus.serves_topic(&kline("1m")));
        assert!(!bus.serves_topic(&kline("anything")));
        assert!(bus.serves_topic(&MarketTopic::Ticker("BTCUSDT".into())));
        assert!(!bus.serves_topic(&MarketTopic::Ticker("NOPE".into())));
    }

    #[test]
    fn dropping_a_subscription_stops_delivery() {
        let bus = MarketBus::new();
        let inbox = Arc::new(Inbox::default());
        let sub = bus.subscribe("mark:BTCUSDT", &inbox);
        assert_eq!(bus.subscribers("mark:BTCUSDT"), 1);
        drop(sub);
        assert_eq!(bus.subscribers("mark:BTCUSDT"), 0);
        bus.publish(msg("mark:BTCUSDT", MarketKind::Latest, 1));
        assert!(inbox.take().is_empty());
    }
}
