//! A client session, independent of transport: what it is subscribed to, how a
//! subscription starts (snapshot, replay from a position, or now) without a gap or a
//! duplicate against the live stream, and how live changes are delivered.
//!
//! The session registers with the hub *before* it reads anything from the database, so
//! every change committed after a read is already in (or on its way to) its queue; changes
//! both read and queued are told apart by `seq` and delivered once.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;

use tradewire_hub::{
    Change, Filter, FilterError, Inbox, MarketBus, MarketMessage, MarketSubscription, QueueReceiver,
    Registration, Subscription, SubscriptionSet, TopicSet,
};
use tradewire_protocol::{ErrorCode, From, Position, Row, ServerFrame, Topic};

use crate::app::AppState;
use crate::changefeed::Resync;
use crate::db::{Catalog, DbError};

/// Replay reads the log in batches of this many changes.
const REPLAY_BATCH: usize = 1000;

/// What a session hands its transport. Lives for one call, so the size of a control
/// frame does not matter.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Out<'a> {
    Frame(ServerFrame),
    Event {
        sub: &'a str,
        change: &'a Arc<Change>,
    },
    /// A public market message, encoded once for everyone.
    Market(&'a MarketMessage),
}

/// The transport went away, or must close for the reason given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The peer is gone (or writing failed).
    Gone,
    /// The session's queue overflowed while writing: close as a slow consumer.
    SlowConsumer,
    /// The server is shutting down.
    Shutdown,
}

/// A transport's writing end.
pub trait Output: Send {
    fn send(&mut self, out: Out<'_>) -> impl Future<Output = Result<(), Stop>> + Send;
}

/// A request error, answered with an `error` frame (or an HTTP error) and no subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: ErrorCode,
    pub message: String,
}

impl Rejection {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    pub fn frame(self, id: Option<&str>) -> ServerFrame {
        ServerFrame::error(id, self.code, self.message)
    }
}

/// A validated choice of topics and filter.
#[derive(Debug, Clone)]
pub struct Plan {
    pub topics: TopicSet,
    /// The concrete topic names (for snapshots and the `subscribed` answer).
    pub names: Vec<String>,
    pub filter: Filter,
    /// Public market topics (`ticker:BTCUSDT`, …), conflated, outside the user's stream.
    pub market: Vec<String>,
}

impl Plan {
    /// Check topic names and the filter against the catalog, and market topics against the
    /// running market source (`None` where a transport serves no market data).
    pub fn new(
        catalog: &Catalog,
        market: Option<&MarketBus>,
        topics: &[String],
        filter: Option<&Row>,
    ) -> Result<Self, Rejection> {
        if topics.is_empty() || topics.len() > 32 {
            return Err(Rejection::new(ErrorCode::InvalidTopic, "give 1 to 32 topics"));
        }
        let mut all = false;
        let mut names: Vec<String> = Vec::new();
        let mut market_topics: Vec<String> = Vec::new();
        for t in topics {
            match t.parse::<Topic>() {
                Ok(Topic::AllPrivate) => all = true,
                Ok(Topic::Private(name)) if catalog.topic(&name).is_some() => {
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
                Ok(Topic::Market(m)) => match market {
                    Some(bus) if bus.serves(m.symbol()) => {
                        let name = m.to_string();
                        if !market_topics.contains(&name) {
                            market_topics.push(name);
                        }
                    }
                    Some(_) => {
                        return Err(Rejection::new(
                            ErrorCode::InvalidTopic,
                            format!(
                                "market topic \"{m}\" is not served (unknown symbol, or no market source runs)"
                            ),
                        ));
                    }
                    None => {
                        return Err(Rejection::new(
                            ErrorCode::InvalidTopic,
                            format!("market topic \"{m}\" is not served here; use the WebSocket"),
                        ));
                    }
                },
                Ok(Topic::Private(_)) | Err(_) => {
                    let known: Vec<&str> = catalog.topics().collect();
                    return Err(Rejection::new(
                        ErrorCode::InvalidTopic,
                        format!(
                            "unknown topic {:?}; private topics are {} or \"*\"",
                            t.chars().take(80).collect::<String>(),
                            known.join(", ")
                        ),
                    ));
                }
            }
        }
        if all {
            names = catalog.topics().map(str::to_owned).collect();
        }
        let filter = match filter {
            None => Filter::default(),
            Some(map) => {
                Filter::parse(map).map_err(|e| Rejection::new(ErrorCode::InvalidFilter, e.to_string()))?
            }
        };
        // A column must exist in at least one of the topics; rows of topics without it
        // never match.
        for col in filter.columns() {
            if !names.iter().any(|n| catalog.topic(n).is_some_and(|t| t.has_column(col))) {
                let e = FilterError::UnknownColumn {
                    column: col.chars().take(64).collect(),
                    topics: format!("[{}]", names.join(", ")),
                };
                return Err(Rejection::new(ErrorCode::InvalidFilter, e.to_string()));
            }
        }
        let topics = if all {
            TopicSet::All
        } else {
            TopicSet::Only(names.iter().map(|n| Arc::from(n.as_str())).collect())
        };
        Ok(Self { topics, names, filter, market: market_topics })
    }
}

/// One live session of one user.
pub struct Session {
    state: AppState,
    user_id: Arc<str>,
    rx: QueueReceiver,
    registration: Registration,
    subs: SubscriptionSet,
    /// Conflated public market data for this session.
    inbox: Arc<Inbox>,
    /// Market topics in use, with how many subscriptions use each.
    market: HashMap<Arc<str>, (usize, MarketSubscription)>,
    /// The market topics of each subscription id.
    market_of: HashMap<Arc<str>, Vec<Arc<str>>>,
    /// The highest `seq` of the user's stream this session has accounted for: every
    /// matching change at or below it has been delivered to every subscription.
    head: u64,
}

impl Session {
    /// Register with the hub, then read the head of the user's stream.
    pub async fn open(state: AppState, user_id: &str) -> Result<Self, DbError> {
        let (registration, rx) = state.hub.register(user_id);
        let head = state.log.head(user_id).await?;
        Ok(Self {
            state,
            user_id: user_id.into(),
            rx,
            registration,
            subs: SubscriptionSet::default(),
            inbox: Arc::new(Inbox::default()),
            market: HashMap::new(),
            market_of: HashMap::new(),
            head,
        })
    }

    pub fn id(&self) -> u64 {
        self.registration.session_id()
    }

    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    pub fn queue(&mut self) -> &mut QueueReceiver {
        &mut self.rx
    }

    pub fn subscriptions(&self) -> usize {
        self.subs.len()
    }

    /// The position every subscription of this session has reached.
    pub fn position(&self) -> Position {
        Position::new(self.state.log.epoch().to_string(), self.head)
    }

    /// Start subscription `id`. Request errors come back as `Ok(Err(rejection))`; the
    /// transport sends them. `Err(stop)` means the transport failed while answering.
    pub async fn subscribe<O: Output>(
        &mut self,
        id: &str,
        plan: Plan,
        from: From,
        out: &mut O,
    ) -> Result<Result<(), Rejection>, Stop> {
        let state = self.state.clone();
        let limits = &state.config;
        if id.is_empty() || id.len() > 64 {
            return Ok(Err(Rejection::new(
                ErrorCode::BadRequest,
                "a subscription id has 1 to 64 characters",
            )));
        }
        if !self.subs.contains(id) && self.subs.len() >= limits.max_subscriptions {
            return Ok(Err(Rejection::new(
                ErrorCode::TooManySubscriptions,
                format!("at most {} subscriptions per connection", limits.max_subscriptions),
            )));
        }
        let mut sub = Subscription {
            id: id.into(),
            topics: plan.topics.clone(),
            filter: plan.filter.clone(),
            after: 0,
        };
        // A subscription being replaced stops now, so nothing is delivered twice under its id.
        self.unsubscribe(id);
        let topics = plan.names.iter().chain(&plan.market).cloned().collect();
        let subscribed = ServerFrame::Subscribed { id: id.to_owned(), topics };
        let log = self.state.log.clone();
        // Market data is not part of the user's stream: a subscription to market topics only
        // has no snapshot rows and nothing to replay; its current values arrive as market
        // messages.
        let from = if plan.names.is_empty() { From::Now } else { from };
        match from {
            From::Now => {
                sub.after = log.head(&self.user_id).await.map_err(db_failed)?;
                out.send(Out::Frame(subscribed)).await?;
            }
            From::Snapshot => {
                let snap = log
                    .snapshot(
                        &self.user_id,
                        plan.names.clone(),
                        plan.filter.clone(),
                        limits.snapshot_max_rows,
                    )
                    .await
                    .map_err(db_failed)?;
                sub.after = snap.head;
                out.send(Out::Frame(subscribed)).await?;
                out.send(Out::Frame(ServerFrame::Snapshot {
                    id: id.to_owned(),
                    position: Position::new(log.epoch().to_string(), snap.head),
                    rows: snap.rows,
                    truncated: snap.truncated,
                }))
                .await?;
            }
            From::Position(pos) => {
                let resync = |reason: Resync| {
                    Out::Frame(ServerFrame::ResyncRequired {
                        id: id.to_owned(),
                        reason: reason.reason().to_owned(),
                    })
                };
                if let Err(reason) = log.check_from(&self.user_id, &pos).await.map_err(db_failed)? {
                    out.send(resync(reason)).await?;
                    return Ok(Ok(()));
                }
                out.send(Out::Frame(subscribed)).await?;
                sub.after = pos.seq;
                let user = self.user_id.clone();
                // Live changes taken off the queue while this subscription replays are
                // served to the session's other subscriptions at once, so a burst does not
                // overflow a replaying session. This subscription must still get each of
                // them: once the log is read to its end, those past it are handed over
                // from memory (or, if there were too many to keep, the log is read again).
                let mut taken = TakenOff::new();
                loop {
                    // Taken off before this read began, so committed before it: the read
                    // returns them unless they have expired.
                    let owed = taken.newest;
                    let read = log.read_after(&user, sub.after, REPLAY_BATCH);
                    tokio::pin!(read);
                    let batch = loop {
                        tokio::select! {
                            biased;
                            batch = &mut read => break batch.map_err(db_failed)?,
                            Some(change) = self.rx.recv() => {
                                taken.note(&change);
                                self.deliver(&change, out).await?;
                            }
                        }
                    };
                    if batch.first().map_or(owed > sub.after, |c| c.seq != sub.after + 1) {
                        // Pruned while we replayed: never skip silently.
                        out.send(resync(Resync::HistoryExpired)).await?;
                        return Ok(Ok(()));
                    }
                    let full = batch.len() == REPLAY_BATCH;
                    for change in &batch {
                        if sub.wants(change) {
                            out.send(Out::Event { sub: id, change }).await?;
                        }
                        sub.after = change.seq;
                        // Keep the queue moving between replayed events too.
                        while let Some(live) = self.rx.try_recv() {
                            taken.note(&live);
                            self.deliver(&live, out).await?;
                        }
                    }
                    if full {
                        continue;
                    }
                    // The log is read to its end: hand over what was taken off since, in
                    // order, when all of it was kept; otherwise read again.
                    for change in taken.after(sub.after) {
                        if sub.wants(&change) {
                            out.send(Out::Event { sub: id, change: &change }).await?;
                        }
                        sub.after = change.seq;
                    }
                    if sub.after >= taken.newest {
                        break;
                    }
                    taken.reset();
                }
            }
        }
        // `head` advances only as the queue is processed (see `deliver`), never from a
        // snapshot: older queued changes may still be owed to the other subscriptions.
        self.subs.insert(sub);
        let mut topics = Vec::with_capacity(plan.market.len());
        for name in &plan.market {
            let topic: Arc<str> = Arc::from(name.as_str());
            match self.market.get_mut(&topic) {
                Some((uses, _)) => *uses += 1,
                None => {
                    let guard = self.state.market.subscribe(&topic, &self.inbox);
                    self.market.insert(topic.clone(), (1, guard));
                }
            }
            topics.push(topic);
        }
        self.market_of.insert(Arc::from(id), topics);
        metrics::gauge!("tradewire_subscriptions").increment(1.0);
        Ok(Ok(()))
    }

    pub fn unsubscribe(&mut self, id: &str) -> bool {
        let removed = self.subs.remove(id).is_some();
        if removed {
            metrics::gauge!("tradewire_subscriptions").decrement(1.0);
        }
        for topic in self.market_of.remove(id).unwrap_or_default() {
            if let Some((uses, _)) = self.market.get_mut(&topic) {
                *uses -= 1;
                if *uses == 0 {
                    // Dropping the guard unsubscribes the inbox from the bus.
                    self.market.remove(&topic);
                }
            }
        }
        removed
    }

    /// The session's conflating market inbox (wait on `ready`, then `take`).
    pub fn market_inbox(&self) -> Arc<Inbox> {
        self.inbox.clone()
    }

    /// Deliver a live change to every subscription that wants it.
    pub async fn deliver<O: Output>(&mut self, change: &Arc<Change>, out: &mut O) -> Result<(), Stop> {
        self.head = self.head.max(change.seq);
        for id in self.subs.deliver(change) {
            out.send(Out::Event { sub: &id, change }).await?;
        }
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        metrics::gauge!("tradewire_subscriptions").decrement(self.subs.len() as f64);
        self.state.hub.record_peak(self.rx.peak_bytes());
    }
}

/// Live changes taken off a session's queue while one of its subscriptions replays
/// (see [`Session::subscribe`]): the newest `seq`, and the changes themselves up to a
/// bound.
struct TakenOff {
    newest: u64,
    kept: VecDeque<Arc<Change>>,
    /// Every change taken off since the last reset is in `kept`.
    complete: bool,
}

impl TakenOff {
    fn new() -> Self {
        Self { newest: 0, kept: VecDeque::new(), complete: true }
    }

    fn note(&mut self, change: &Arc<Change>) {
        self.newest = self.newest.max(change.seq);
        if self.complete && self.kept.len() < REPLAY_BATCH {
            self.kept.push_back(change.clone());
        } else {
            self.complete = false;
        }
    }

    /// The kept changes right after `after`, contiguous, when none was left out; they
    /// are handed over once. Otherwise nothing (the caller reads the log again).
    fn after(&mut self, after: u64) -> Vec<Arc<Change>> {
        while self.kept.front().is_some_and(|c| c.seq <= after) {
            self.kept.pop_front();
        }
        if !self.complete {
            return Vec::new();
        }
        let mut next = after + 1;
        let mut out = Vec::new();
        while let Some(c) = self.kept.pop_front() {
            if c.seq != next {
                break;
            }
            next += 1;
            out.push(c);
        }
        out
    }

    fn reset(&mut self) {
        self.kept.clear();
        self.complete = true;
    }
}

/// A database failure while serving a request: logged; the transport is told to stop
/// (the client reconnects and resumes; nothing is skipped).
fn db_failed(e: DbError) -> Stop {
    tracing::error!(error = %e, "database error while serving a subscription");
    Stop::Gone
}

#[cfg(test)]
mod tests {
    use tradewire_protocol::ChangeOp;

    use super::*;

    fn change(seq: u64) -> Arc<Change> {
        Arc::new(Change::new(
            "u1".into(),
            "e1".into(),
            seq,
            "signals".into(),
            ChangeOp::Insert,
            vec![],
            0,
            None,
            None,
        ))
    }

    fn seqs(v: Vec<Arc<Change>>) -> Vec<u64> {
        v.iter().map(|c| c.seq).collect()
    }

    #[test]
    fn changes_taken_off_during_a_replay_are_handed_over_past_what_the_log_gave() {
        let mut taken = TakenOff::new();
        for seq in 5..=9 {
            taken.note(&change(seq));
        }
        // The log reached 6: 7, 8 and 9 come from memory, once.
        assert_eq!(seqs(taken.after(6)), vec![7, 8, 9]);
        assert_eq!(taken.newest, 9);
        assert!(taken.after(9).is_empty());
    }

    #[test]
    fn too_many_to_keep_means_reading_the_log_again() {
        let mut taken = TakenOff::new();
        for seq in 1..=(REPLAY_BATCH as u64 + 1) {
            taken.note(&change(seq));
        }
        assert!(taken.after(0).is_empty(), "incomplete: nothing is handed over");
        taken.reset();
        taken.note(&change(REPLAY_BATCH as u64 + 2));
        assert_eq!(seqs(taken.after(REPLAY_BATCH as u64 + 1)), vec![REPLAY_BATCH as u64 + 2]);
    }
}
