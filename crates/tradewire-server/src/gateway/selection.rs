//! A subscription request checked against what the server serves: topic names against the
//! catalog and the market source, the `where` filter against the topics' columns.

use std::sync::Arc;

use tradewire_hub::{Filter, FilterError, MarketBus, TopicSet};
use tradewire_protocol::{ErrorCode, Row, Topic};

use crate::db::Catalog;
use crate::errors::Rejection;

/// A validated choice of topics and filter.
#[derive(Debug, Clone)]
pub struct Selection {
    pub topics: TopicSet,
    /// The concrete topic names (for snapshots and the `subscribed` answer).
    pub names: Vec<String>,
    pub filter: Filter,
    /// Public market topics (`ticker:BTCUSDT`, …), conflated, outside the user's stream.
    pub market: Vec<String>,
}

impl Selection {
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
                    Some(bus) if bus.serves_topic(&m) => {
                        let name = m.to_string();
                        if !market_topics.contains(&name) {
                            market_topics.push(name);
                        }
                    }
                    Some(_) => {
                        return Err(Rejection::new(
                            ErrorCode::InvalidTopic,
                            format!(
                                "market topic \"{m}\" is not served (unknown symbol or interval, or no market source runs)"
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
