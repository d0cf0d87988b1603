//! Topic names: private (per-user rows) and public (market data).

use std::fmt;
use std::str::FromStr;

/// The built-in private topics, one per captured trading table.
pub const PRIVATE_TOPICS: [&str; 9] =
    ["bots", "portfolios", "positions", "orders", "fills", "lifecycle", "signals", "risk", "pnl"];

/// A parsed topic. Private topic names are not checked against a list here: the server
/// knows which tables it captures (operator-configured tables add topics).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// `"*"`: every private topic.
    AllPrivate,
    /// A private topic such as `orders`.
    Private(String),
    /// A public market topic such as `ticker:BTCUSDT` or `kline:BTCUSDT:1m`.
    Market(MarketTopic),
}

/// A public topic: market data, or the server's own health.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MarketTopic {
    Ticker(String),
    Trades(String),
    Book(String),
    Kline(String, String),
    Mark(String),
    /// `system`: each component's state, pump lag and the market source, pushed when it
    /// changes and every few seconds (a dashboard's health badge, without polling).
    System,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid topic {0:?}")]
pub struct TopicError(pub String);

fn valid_symbol(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl FromStr for Topic {
    type Err = TopicError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || TopicError(s.chars().take(80).collect());
        if s == "*" {
            return Ok(Topic::AllPrivate);
        }
        if s == "system" {
            return Ok(Topic::Market(MarketTopic::System));
        }
        let mut parts = s.split(':');
        let head = parts.next().unwrap_or_default();
        let rest: Vec<&str> = parts.collect();
        let market = match (head, rest.as_slice()) {
            (_, []) if valid_name(head) => return Ok(Topic::Private(head.to_owned())),
            ("ticker", [sym]) => MarketTopic::Ticker(sym.to_string()),
            ("trades", [sym]) => MarketTopic::Trades(sym.to_string()),
            ("book", [sym]) => MarketTopic::Book(sym.to_string()),
            ("mark", [sym]) => MarketTopic::Mark(sym.to_string()),
            ("kline", [sym, iv]) if valid_name(iv) => MarketTopic::Kline(sym.to_string(), iv.to_string()),
            _ => return Err(err()),
        };
        if !valid_symbol(market.symbol()) {
            return Err(err());
        }
        Ok(Topic::Market(market))
    }
}

impl MarketTopic {
    /// The instrument of a market-data topic (empty for `system`).
    pub fn symbol(&self) -> &str {
        match self {
            MarketTopic::Ticker(s)
            | MarketTopic::Trades(s)
            | MarketTopic::Book(s)
            | MarketTopic::Mark(s)
            | MarketTopic::Kline(s, _) => s,
            MarketTopic::System => "",
        }
    }
}

impl fmt::Display for MarketTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MarketTopic::Ticker(s) => write!(f, "ticker:{s}"),
            MarketTopic::Trades(s) => write!(f, "trades:{s}"),
            MarketTopic::Book(s) => write!(f, "book:{s}"),
            MarketTopic::Mark(s) => write!(f, "mark:{s}"),
            MarketTopic::Kline(s, iv) => write!(f, "kline:{s}:{iv}"),
            MarketTopic::System => f.write_str("system"),
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::AllPrivate => f.write_str("*"),
            Topic::Private(name) => f.write_str(name),
            Topic::Market(m) => m.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        assert_eq!("*".parse(), Ok(Topic::AllPrivate));
        assert_eq!("orders".parse(), Ok(Topic::Private("orders".into())));
        for t in
            ["ticker:BTCUSDT", "trades:ETHUSDT", "book:SOLUSDT", "mark:BTCUSDT", "kline:BTCUSDT:1m", "system"]
        {
            let parsed: Topic = t.parse().unwrap();
            assert_eq!(parsed.to_string(), t);
        }
    }

    #[test]
    fn rejects_malformed() {
        for t in [
            "",
            "Orders",
            "ticker:",
            "ticker:btcusdt",
            "kline:BTCUSDT",
            "foo:BTC",
            "orders;drop",
            "a:b:c:d",
            "ticker:BTC:1m",
        ] {
            assert!(t.parse::<Topic>().is_err(), "{t:?} should be rejected");
        }
    }
}
