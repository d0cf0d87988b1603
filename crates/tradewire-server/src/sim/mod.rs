//! The simulator driver: runs the seeded paper-trading simulator (`tradewire-sim`) on a
//! timer, writes every effect it produces through the database like any other writer (so
//! the capture pipeline carries it to clients), and publishes its market data on the
//! public topics of the market bus.
//!
//! The simulator lives in one task; the API talks to it through [`SimHandle`] (a bounded
//! command channel with a reply per command), so there are no locks around its state. The
//! database stays the source of truth for bots: the driver re-reads them every second (and
//! at once when the API changes one), so a bot paused from `sqlite3` stops trading too.

mod driver;
mod persist;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tradewire_sim::{Denied, DenyReason, Direction, NewOrder};

use crate::market_source::{MarketSource, MarketView, SourceUnavailable};

pub use driver::{Commands, SimSettings, run};

/// What the API may ask of the simulator.
#[derive(Debug)]
pub enum Command {
    /// Place an order unless the user already used its `client_order_id`; the answer says
    /// which (`true`: created now).
    PlaceOrder(Box<NewOrder>, oneshot::Sender<Result<(Value, bool), Refusal>>),
    CancelOrder {
        user_id: String,
        order_id: String,
        reply: oneshot::Sender<Result<Value, Refusal>>,
    },
    ClosePosition {
        user_id: String,
        position_id: String,
        reply: oneshot::Sender<Result<Value, Refusal>>,
    },
    Signal {
        user_id: String,
        bot_id: String,
        direction: Direction,
        confidence: rust_decimal::Decimal,
        reply: oneshot::Sender<Result<Value, Refusal>>,
    },
    /// Re-read the bots from the database now (after the API changed one).
    SyncBots(oneshot::Sender<()>),
    /// Current market data of a symbol, for the REST API.
    Market {
        symbol: String,
        view: MarketView,
        reply: oneshot::Sender<Option<Value>>,
    },
    /// Make the simulator's task panic: the seam tests use to show supervision.
    Panic,
}

/// Why the simulator did not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A pre-trade check failed.
    Denied { reason: DenyReason, message: String },
    /// No such bot, order or position of this user.
    NotFound(String),
    /// The simulator is not running (shut down or failed).
    Unavailable,
}

impl From<Denied> for Refusal {
    fn from(d: Denied) -> Self {
        use tradewire_sim::DenyReason::*;
        match d.reason {
            UnknownPortfolio | UnknownSymbol | UnknownBot | UnknownOrder | UnknownPosition => {
                Refusal::NotFound(d.message)
            }
            reason => Refusal::Denied { reason, message: d.message },
        }
    }
}

/// The API's handle on the running simulator. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SimHandle {
    tx: mpsc::Sender<Command>,
}

impl SimHandle {
    pub(crate) fn channel() -> (SimHandle, mpsc::Receiver<Command>) {
        let (tx, rx) = mpsc::channel(256);
        (SimHandle { tx }, rx)
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Refusal> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| Refusal::Unavailable)?;
        answer.await.map_err(|_| Refusal::Unavailable)
    }

    /// Place an order; on success, the order row as persisted and whether it was created
    /// now (`false`: its `client_order_id` was used before, nothing was applied again).
    pub async fn place_order(&self, order: NewOrder) -> Result<(Value, bool), Refusal> {
        self.ask(|r| Command::PlaceOrder(Box::new(order), r)).await?
    }

    pub async fn cancel_order(&self, user_id: &str, order_id: &str) -> Result<Value, Refusal> {
        let (user_id, order_id) = (user_id.to_owned(), order_id.to_owned());
        self.ask(|reply| Command::CancelOrder { user_id, order_id, reply }).await?
    }

    pub async fn close_position(&self, user_id: &str, position_id: &str) -> Result<Value, Refusal> {
        let (user_id, position_id) = (user_id.to_owned(), position_id.to_owned());
        self.ask(|reply| Command::ClosePosition { user_id, position_id, reply }).await?
    }

    /// Make a bot act on a signal now (demo and tests).
    pub async fn signal(
        &self,
        user_id: &str,
        bot_id: &str,
        direction: Direction,
        confidence: rust_decimal::Decimal,
    ) -> Result<Value, Refusal> {
        let (user_id, bot_id) = (user_id.to_owned(), bot_id.to_owned());
        self.ask(|reply| Command::Signal { user_id, bot_id, direction, confidence, reply }).await?
    }

    /// Make the simulator's task panic (tests of supervision; not reachable over HTTP).
    #[doc(hidden)]
    pub async fn inject_panic(&self) {
        let _ = self.tx.send(Command::Panic).await;
    }

    /// Have the simulator pick up bot changes from the database before returning.
    pub async fn sync_bots(&self) -> Result<(), Refusal> {
        self.ask(Command::SyncBots).await
    }
}

/// The simulator is the product's market data source.
impl MarketSource for SimHandle {
    fn view<'a>(
        &'a self,
        symbol: &'a str,
        view: MarketView,
    ) -> futures::future::BoxFuture<'a, Result<Option<Value>, SourceUnavailable>> {
        Box::pin(async move {
            let symbol = symbol.to_owned();
            self.ask(|reply| Command::Market { symbol, view, reply }).await.map_err(|_| SourceUnavailable)
        })
    }
}
