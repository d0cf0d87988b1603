//! Per-user fan-out of committed changes to live sessions.
//!
//! The hub owns the path from "the changefeed has a new [`Change`]" to "each interested
//! session has it in its queue": the registry of sessions by user, the bounded per-session
//! queues and their slow-consumer policy, and the subscription and `where`-filter matching
//! that sessions apply. Each change is encoded once, when it is built; recipients share
//! the bytes.
//!
//! It must not touch sockets, HTTP or SQL: the gateway drives sessions, the changefeed feeds
//! the hub, and both are in the server crate.

mod change;
mod filter;
mod hub;
mod market_bus;
mod queue;
mod subscription;

pub use change::Change;
pub use filter::{Filter, FilterError};
pub use hub::{Hub, HubStats, Registration};
pub use market_bus::{Inbox, MarketBus, MarketKind, MarketMessage, MarketSubscription};
pub use queue::{Overflow, QueueLimits, QueueReceiver, QueueSender, queue};
pub use subscription::{Subscription, SubscriptionSet, TopicSet};
