//! Orders: the one status transition table, the command that asks for an order
//! ([`NewOrder`]), the reasons an order is denied before it exists ([`Denied`]), and the
//! engine's private per-order bookkeeping (reserved margin, leverage).

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::model::{Order, OrderStatus, OrderType, Side, TimeInForce};

impl OrderStatus {
    /// The transition table. Every status change in the engine is checked against it:
    ///
    /// | from | to |
    /// |---|---|
    /// | new | partially_filled, filled, canceled, rejected, expired, triggered |
    /// | triggered | partially_filled, filled, canceled, rejected, expired |
    /// | partially_filled | partially_filled, filled, canceled, expired |
    /// | filled, canceled, rejected, expired | — (terminal) |
    pub fn can_become(self, to: OrderStatus) -> bool {
        use OrderStatus::*;
        matches!(
            (self, to),
            (New, PartiallyFilled | Filled | Canceled | Rejected | Expired | Triggered)
                | (Triggered, PartiallyFilled | Filled | Canceled | Rejected | Expired)
                | (PartiallyFilled, PartiallyFilled | Filled | Canceled | Expired)
        )
    }

    /// Filled, canceled, rejected and expired orders never change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            OrderStatus::Filled | OrderStatus::Canceled | OrderStatus::Rejected | OrderStatus::Expired
        )
    }
}

/// An order status change the table does not allow (a bug in the engine).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("order status cannot go from {from} to {to}")]
pub struct TransitionError {
    pub from: OrderStatus,
    pub to: OrderStatus,
}

/// Move `order` to `to` if the table allows it.
pub fn transition(order: &mut Order, to: OrderStatus) -> Result<(), TransitionError> {
    if order.status.can_become(to) {
        order.status = to;
        Ok(())
    } else {
        Err(TransitionError { from: order.status, to })
    }
}

/// Exits to attach to an entry order: a take-profit and/or a stop-loss trigger price.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainSpec {
    pub take_profit: Option<Decimal>,
    pub stop_loss: Option<Decimal>,
}

/// A request for an order.
///
/// `price` is the limit price (required for `limit`, optional for `stop`/`take_profit`,
/// which then become limit orders when triggered; without it they sweep the book like a
/// market order). `stop_price` is the trigger price of `stop`/`take_profit`. A `market`
/// order behaves as IOC unless `time_in_force` is FOK. `client_order_id` defaults to the
/// generated order id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewOrder {
    pub user_id: String,
    pub portfolio_id: String,
    #[serde(default)]
    pub bot_id: Option<String>,
    #[serde(default)]
    pub client_order_id: Option<String>,
    pub symbol: String,
    pub side: Side,
    #[serde(rename = "type")]
    pub order_type: OrderType,
    #[serde(default = "default_tif")]
    pub time_in_force: TimeInForce,
    #[serde(default)]
    pub post_only: bool,
    #[serde(default)]
    pub reduce_only: bool,
    #[serde(default)]
    pub price: Option<Decimal>,
    #[serde(default)]
    pub stop_price: Option<Decimal>,
    pub quantity: Decimal,
    #[serde(default = "default_leverage")]
    pub leverage: u32,
    #[serde(default)]
    pub chain: Option<ChainSpec>,
}

fn default_tif() -> TimeInForce {
    TimeInForce::Gtc
}

fn default_leverage() -> u32 {
    1
}

impl NewOrder {
    /// A market order at leverage 1.
    pub fn market(user_id: &str, portfolio_id: &str, symbol: &str, side: Side, quantity: Decimal) -> Self {
        NewOrder {
            user_id: user_id.to_string(),
            portfolio_id: portfolio_id.to_string(),
            bot_id: None,
            client_order_id: None,
            symbol: symbol.to_string(),
            side,
            order_type: OrderType::Market,
            time_in_force: TimeInForce::Gtc,
            post_only: false,
            reduce_only: false,
            price: None,
            stop_price: None,
            quantity,
            leverage: 1,
            chain: None,
        }
    }

    /// A GTC limit order at leverage 1.
    pub fn limit(
        user_id: &str,
        portfolio_id: &str,
        symbol: &str,
        side: Side,
        quantity: Decimal,
        price: Decimal,
    ) -> Self {
        NewOrder {
            order_type: OrderType::Limit,
            price: Some(price),
            ..Self::market(user_id, portfolio_id, symbol, side, quantity)
        }
    }

    /// A stop (`OrderType::Stop`) or take-profit trigger order without a limit price.
    pub fn trigger(
        user_id: &str,
        portfolio_id: &str,
        symbol: &str,
        side: Side,
        order_type: OrderType,
        quantity: Decimal,
        stop_price: Decimal,
    ) -> Self {
        NewOrder {
            order_type,
            stop_price: Some(stop_price),
            ..Self::market(user_id, portfolio_id, symbol, side, quantity)
        }
    }
}

/// Why an order (or a cancel/close) was refused. Serialized as snake_case strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    UnknownPortfolio,
    UnknownSymbol,
    UnknownBot,
    UnknownOrder,
    UnknownPosition,
    InvalidQuantity,
    LotSize,
    TickSize,
    MinNotional,
    InvalidLeverage,
    LeverageMismatch,
    MissingPrice,
    MissingStopPrice,
    InvalidOrder,
    WouldTriggerImmediately,
    InvalidChain,
    DuplicateClientOrderId,
    NoMarketData,
    InsufficientMargin,
    BotPaused,
    BotStopped,
    CircuitBreakerHalted,
    PostOnlyWouldCross,
    ReduceOnlyWouldIncrease,
    FokCannotFill,
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        use DenyReason::*;
        match self {
            UnknownPortfolio => "unknown_portfolio",
            UnknownSymbol => "unknown_symbol",
            UnknownBot => "unknown_bot",
            UnknownOrder => "unknown_order",
            UnknownPosition => "unknown_position",
            InvalidQuantity => "invalid_quantity",
            LotSize => "lot_size",
            TickSize => "tick_size",
            MinNotional => "min_notional",
            InvalidLeverage => "invalid_leverage",
            LeverageMismatch => "leverage_mismatch",
            MissingPrice => "missing_price",
            MissingStopPrice => "missing_stop_price",
            InvalidOrder => "invalid_order",
            WouldTriggerImmediately => "would_trigger_immediately",
            InvalidChain => "invalid_chain",
            DuplicateClientOrderId => "duplicate_client_order_id",
            NoMarketData => "no_market_data",
            InsufficientMargin => "insufficient_margin",
            BotPaused => "bot_paused",
            BotStopped => "bot_stopped",
            CircuitBreakerHalted => "circuit_breaker_halted",
            PostOnlyWouldCross => "post_only_would_cross",
            ReduceOnlyWouldIncrease => "reduce_only_would_increase",
            FokCannotFill => "fok_cannot_fill",
        }
    }
}

impl std::fmt::Display for DenyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused command: a stable reason and a human message. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{reason}: {message}")]
pub struct Denied {
    pub reason: DenyReason,
    pub message: String,
}

pub(crate) fn deny<T>(reason: DenyReason, message: impl Into<String>) -> Result<T, Denied> {
    Err(Denied { reason, message: message.into() })
}

/// The engine's state of one open order: the row plus what has no column.
#[derive(Debug, Clone)]
pub(crate) struct OrderState {
    pub row: Order,
    /// Margin held for the unfilled part (0 for reduce-only orders).
    pub reserved: Decimal,
    pub leverage: u32,
    /// Σ price × quantity of fills, for the average fill price.
    pub filled_notional: Decimal,
}

impl OrderState {
    /// A stop-market order that has triggered and still sweeps the book each update.
    pub fn is_sweeping(&self) -> bool {
        self.row.status != OrderStatus::New
            && matches!(self.row.order_type, OrderType::Stop | OrderType::TakeProfit)
            && self.row.price.is_none()
    }

    /// A limit order (or triggered stop-limit) resting in the book.
    pub fn is_resting_limit(&self) -> bool {
        match self.row.order_type {
            OrderType::Limit => true,
            OrderType::Stop | OrderType::TakeProfit => {
                self.row.status != OrderStatus::New && self.row.price.is_some()
            }
            OrderType::Market => false,
        }
    }

    /// An untriggered stop or take-profit order.
    pub fn is_waiting_trigger(&self) -> bool {
        self.row.status == OrderStatus::New
            && matches!(self.row.order_type, OrderType::Stop | OrderType::TakeProfit)
    }
}

/// Does a trigger order fire at `price`? Stops fire when the price moves against the
/// order's side past the trigger (buy stop: price ≥ trigger); take-profits when it moves in
/// favour (buy take-profit: price ≤ trigger).
pub(crate) fn triggers(order_type: OrderType, side: Side, stop_price: Decimal, price: Decimal) -> bool {
    match (order_type, side) {
        (OrderType::Stop, Side::Buy) | (OrderType::TakeProfit, Side::Sell) => price >= stop_price,
        (OrderType::Stop, Side::Sell) | (OrderType::TakeProfit, Side::Buy) => price <= stop_price,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use OrderStatus::*;

    const ALL: [OrderStatus; 7] = [New, PartiallyFilled, Filled, Canceled, Rejected, Expired, Triggered];

    #[test]
    fn transition_table() {
        let allowed = [
            (New, PartiallyFilled),
            (New, Filled),
            (New, Canceled),
            (New, Rejected),
            (New, Expired),
            (New, Triggered),
            (Triggered, PartiallyFilled),
            (Triggered, Filled),
            (Triggered, Canceled),
            (Triggered, Rejected),
            (Triggered, Expired),
            (PartiallyFilled, PartiallyFilled),
            (PartiallyFilled, Filled),
            (PartiallyFilled, Canceled),
            (PartiallyFilled, Expired),
        ];
        for from in ALL {
            for to in ALL {
                assert_eq!(from.can_become(to), allowed.contains(&(from, to)), "{from} -> {to}");
            }
            if from.is_terminal() {
                assert!(ALL.iter().all(|to| !from.can_become(*to)), "{from} is terminal");
            }
        }
        assert!(!New.is_terminal() && !Triggered.is_terminal() && !PartiallyFilled.is_terminal());
    }

    #[test]
    fn transition_refuses_leaving_a_terminal_status() {
        let mut o = Order {
            id: "o".into(),
            user_id: "u".into(),
            portfolio_id: "p".into(),
            bot_id: None,
            client_order_id: "c".into(),
            symbol: "BTCUSDT".into(),
            side: Side::Buy,
            order_type: OrderType::Limit,
            time_in_force: TimeInForce::Gtc,
            price: None,
            stop_price: None,
            quantity: Decimal::ONE,
            filled_quantity: Decimal::ZERO,
            avg_fill_price: None,
            status: New,
            reduce_only: false,
            post_only: false,
            reject_reason: None,
            chain_id: None,
            chain_role: None,
            created_at: 0,
            updated_at: 0,
        };
        assert!(transition(&mut o, Filled).is_ok());
        assert_eq!(transition(&mut o, Canceled), Err(TransitionError { from: Filled, to: Canceled }));
        assert_eq!(o.status, Filled);
    }

    #[test]
    fn trigger_directions() {
        let d = |x: i64| Decimal::from(x);
        assert!(triggers(OrderType::Stop, Side::Sell, d(90), d(89)));
        assert!(!triggers(OrderType::Stop, Side::Sell, d(90), d(91)));
        assert!(triggers(OrderType::Stop, Side::Buy, d(110), d(110)));
        assert!(triggers(OrderType::TakeProfit, Side::Sell, d(110), d(111)));
        assert!(!triggers(OrderType::TakeProfit, Side::Sell, d(110), d(109)));
        assert!(triggers(OrderType::TakeProfit, Side::Buy, d(90), d(90)));
        assert!(!triggers(OrderType::Limit, Side::Buy, d(90), d(90)));
    }
}
