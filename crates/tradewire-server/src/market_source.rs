//! Market data sources: where public market data comes from. A source publishes public
//! market messages (`ticker:`, `trades:`, `book:`, `kline:`, `mark:`) to the hub's
//! `MarketBus` — declaring its symbols with `MarketBus::set_symbols` — and answers the REST
//! API's questions about current values through this trait. The simulator is one source (`sim::SimHandle`); a real exchange feed
//! would be another, with the sessions, conflation and REST endpoints unchanged.

use futures::future::BoxFuture;
use serde_json::Value;

/// What `GET /v1/market/{symbol}/…` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarketView {
    Ticker,
    Book,
    Klines,
}

/// The source is not running (stopped, or failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the market data source is not running")]
pub struct SourceUnavailable;

/// A running source of public market data.
pub trait MarketSource: Send + Sync {
    /// The current `view` of `symbol`, as JSON (`None`: the source does not list `symbol`).
    fn view<'a>(
        &'a self,
        symbol: &'a str,
        view: MarketView,
    ) -> BoxFuture<'a, Result<Option<Value>, SourceUnavailable>>;
}
