//! A client session, independent of transport: what it is subscribed to, and how live
//! changes are delivered. How a subscription starts (snapshot, replay from a position, or
//! now) without a gap or a duplicate against the live stream is in `start`.
//!
//! The session registers with the hub *before* it reads anything from the database, so
//! every change committed after a read is already in (or on its way to) its queue; changes
//! both read and queued are told apart by `seq` and delivered once.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use tradewire_hub::{
    Change, Inbox, MarketMessage, MarketSubscription, QueueReceiver, Registration, Subscription,
    SubscriptionSet,
};
use tradewire_protocol::{ChangeOp, ErrorCode, From, Position, ServerFrame};

use super::Gateway;
use super::selection::Selection;
use crate::changefeed::Resync;
use crate::db::DbError;
use crate::errors::{Rejection, StreamEnd};

/// What a session hands its transport. Lives for one call, so the size of a control
/// frame does not matter.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Outgoing<'a> {
    Frame(ServerFrame),
    Event {
        sub: &'a str,
        change: &'a Arc<Change>,
    },
    /// A public market message, encoded once for everyone.
    Market(&'a MarketMessage),
}

/// A transport's writing end.
pub trait Transport: Send {
    fn send(&mut self, out: Outgoing<'_>) -> impl Future<Output = Result<(), StreamEnd>> + Send;

    /// Resolves when the peer is known to be gone (where the transport can tell without
    /// reading from it), so a database read started for it can be abandoned.
    fn peer_gone(&self) -> impl Future<Output = ()> + Send + 'static;
}

/// One live session of one user.
pub struct Session {
    pub(super) gateway: Gateway,
    user_id: Arc<str>,
    pub(super) rx: QueueReceiver,
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
    pub async fn open(gateway: Gateway, user_id: &str) -> Result<Self, DbError> {
        let (registration, rx) = gateway.app().hub().register(user_id);
        let head = gateway.app().log().head(user_id).await?;
        Ok(Self {
            gateway,
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

    pub(super) fn user(&self) -> &Arc<str> {
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
        Position::new(self.gateway.app().log().epoch().to_string(), self.head)
    }

    /// Start subscription `id`. Request errors come back as `Ok(Err(rejection))`; the
    /// transport sends them. `Err(end)` means the stream ended while starting.
    pub async fn subscribe<T: Transport>(
        &mut self,
        id: &str,
        selection: Selection,
        from: From,
        out: &mut T,
    ) -> Result<Result<(), Rejection>, StreamEnd> {
        let limits = &self.gateway.settings().limits;
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
            topics: selection.topics.clone(),
            filter: selection.filter.clone(),
            after: 0,
        };
        // A subscription being replaced stops now, so nothing is delivered twice under its id.
        self.unsubscribe(id);
        // Market data is not part of the user's stream: a subscription to market topics only
        // has no snapshot rows and nothing to replay; its current values arrive as market
        // messages.
        let from = if selection.names.is_empty() { From::Now } else { from };
        let live = match from {
            From::Now => self.start_now(&mut sub, &selection, out).await?,
            From::Snapshot => self.start_snapshot(&mut sub, &selection, out).await?,
            From::Position(pos) => self.start_replay(&mut sub, &selection, pos, out).await?,
        };
        if !live {
            // `resync_required` was sent: the subscription does not start.
            return Ok(Ok(()));
        }
        // `head` advances only as the queue is processed (see `deliver`), never from a
        // snapshot: older queued changes may still be owed to the other subscriptions.
        self.subs.insert(sub);
        let mut topics = Vec::with_capacity(selection.market.len());
        for name in &selection.market {
            let topic: Arc<str> = Arc::from(name.as_str());
            match self.market.get_mut(&topic) {
                Some((uses, _)) => *uses += 1,
                None => {
                    let guard = self.gateway.app().market_bus().subscribe(&topic, &self.inbox);
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
    pub async fn deliver<T: Transport>(
        &mut self,
        change: &Arc<Change>,
        out: &mut T,
    ) -> Result<(), StreamEnd> {
        self.head = self.head.max(change.seq);
        if change.op == ChangeOp::Truncate {
            // The table's rows are all gone: each subscription covering it ends and is told
            // to read them again.
            let ended: Vec<Arc<str>> = self.subs.deliver(change).collect();
            for id in ended {
                self.unsubscribe(&id);
                out.send(Outgoing::Frame(resync_frame(&id, Resync::Truncated))).await?;
            }
            return Ok(());
        }
        for id in self.subs.deliver(change) {
            out.send(Outgoing::Event { sub: &id, change }).await?;
        }
        Ok(())
    }
}

/// The `resync_required` frame of subscription `id`.
pub(super) fn resync_frame(id: &str, reason: Resync) -> ServerFrame {
    ServerFrame::ResyncRequired { id: id.to_owned(), reason: reason.reason().to_owned() }
}

impl Drop for Session {
    fn drop(&mut self) {
        metrics::gauge!("tradewire_subscriptions").decrement(self.subs.len() as f64);
        self.gateway.app().hub().record_peak(self.rx.peak_bytes());
    }
}
