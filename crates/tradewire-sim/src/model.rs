//! The rows the simulator produces and the [`Effect`]s that carry them to the driver.
//!
//! Every row struct has exactly the columns of its table in
//! `tradewire-server/migrations/0001_trading.sql` (serialized names equal column names; the
//! Rust field `order_type` is the column `type`). Enums serialize to the strings of the
//! CHECK constraints; decimals serialize as strings; times are milliseconds since the epoch.
//! Internal bookkeeping that has no column (reserved margin, fees paid) lives in the engine,
//! not here.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $s)] $variant),+
        }

        impl $name {
            /// The string stored in the database.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $s),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// Order and fill side.
    Side { Buy = "buy", Sell = "sell" }
);
string_enum!(OrderType { Market = "market", Limit = "limit", Stop = "stop", TakeProfit = "take_profit" });
string_enum!(TimeInForce { Gtc = "gtc", Ioc = "ioc", Fok = "fok" });
string_enum!(
    /// Order status; the allowed changes are in [`OrderStatus::can_become`](crate::OrderStatus::can_become).
    OrderStatus {
        New = "new",
        PartiallyFilled = "partially_filled",
        Filled = "filled",
        Canceled = "canceled",
        Rejected = "rejected",
        Expired = "expired",
        Triggered = "triggered",
    }
);
string_enum!(ChainRole { Entry = "entry", TakeProfit = "take_profit", StopLoss = "stop_loss" });
string_enum!(PositionSide { Long = "long", Short = "short" });
string_enum!(PositionStatus { Open = "open", Closed = "closed", Liquidated = "liquidated" });
string_enum!(Liquidity { Maker = "maker", Taker = "taker" });
string_enum!(BotStatus { Running = "running", Paused = "paused", Stopped = "stopped" });
string_enum!(Direction { Long = "long", Short = "short", Flat = "flat" });
string_enum!(CircuitBreaker { Armed = "armed", Tripped = "tripped", Disabled = "disabled" });
string_enum!(LifecycleEntity {
    Order = "order",
    Position = "position",
    Bot = "bot",
    Chain = "chain",
    Portfolio = "portfolio",
});

impl Side {
    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }

    /// +1 for buy, -1 for sell.
    pub fn sign(self) -> Decimal {
        match self {
            Side::Buy => Decimal::ONE,
            Side::Sell => Decimal::NEGATIVE_ONE,
        }
    }

    /// The side that opens or adds to a position of `side`.
    pub fn opening(side: PositionSide) -> Side {
        match side {
            PositionSide::Long => Side::Buy,
            PositionSide::Short => Side::Sell,
        }
    }
}

impl PositionSide {
    /// +1 for long, -1 for short.
    pub fn sign(self) -> Decimal {
        match self {
            PositionSide::Long => Decimal::ONE,
            PositionSide::Short => Decimal::NEGATIVE_ONE,
        }
    }
}

/// A row of `portfolios`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Portfolio {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub currency: String,
    /// Cash: initial deposit plus realized P&L net of fees.
    pub balance: Decimal,
    /// `balance + unrealized_pnl`.
    pub equity: Decimal,
    /// Σ unrealized P&L of the open positions, at the mark price.
    pub unrealized_pnl: Decimal,
    /// Σ realized P&L net of fees since the simulator started.
    pub realized_pnl: Decimal,
    /// Σ position margin + Σ margin reserved by open orders.
    pub margin_used: Decimal,
    /// `equity - margin_used` (may be negative: a margin call).
    pub margin_available: Decimal,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A row of `trading_bots`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bot {
    pub id: String,
    pub user_id: String,
    pub portfolio_id: Option<String>,
    pub name: String,
    /// `ma_crossover`, `mean_reversion` or `grid`.
    pub strategy: String,
    pub symbol: String,
    pub status: BotStatus,
    /// Strategy parameters; see [`BotConfig`](crate::BotConfig).
    pub config: serde_json::Value,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A row of `positions`. One open position per (portfolio, symbol, bot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub id: String,
    pub user_id: String,
    pub portfolio_id: String,
    pub bot_id: Option<String>,
    pub symbol: String,
    pub side: PositionSide,
    pub status: PositionStatus,
    /// Open size (positive); 0 once closed or liquidated.
    pub quantity: Decimal,
    /// Average entry: weighted on adds, kept on reduces.
    pub entry_price: Decimal,
    pub mark_price: Option<Decimal>,
    pub leverage: u32,
    /// Isolated margin held by the position.
    pub margin: Decimal,
    pub unrealized_pnl: Decimal,
    /// Realized P&L net of the fees of this position's fills.
    pub realized_pnl: Decimal,
    pub liquidation_price: Option<Decimal>,
    pub opened_at: i64,
    pub closed_at: Option<i64>,
    pub updated_at: i64,
}

/// A row of `orders`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub user_id: String,
    pub portfolio_id: String,
    pub bot_id: Option<String>,
    pub client_order_id: String,
    pub symbol: String,
    pub side: Side,
    #[serde(rename = "type")]
    pub order_type: OrderType,
    pub time_in_force: TimeInForce,
    pub price: Option<Decimal>,
    pub stop_price: Option<Decimal>,
    pub quantity: Decimal,
    pub filled_quantity: Decimal,
    pub avg_fill_price: Option<Decimal>,
    pub status: OrderStatus,
    pub reduce_only: bool,
    pub post_only: bool,
    pub reject_reason: Option<String>,
    pub chain_id: Option<String>,
    pub chain_role: Option<ChainRole>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Order {
    pub fn remaining(&self) -> Decimal {
        self.quantity - self.filled_quantity
    }
}

/// A row of `fills`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fill {
    pub id: String,
    pub user_id: String,
    pub order_id: String,
    pub portfolio_id: String,
    pub symbol: String,
    pub side: Side,
    pub price: Decimal,
    pub quantity: Decimal,
    pub fee: Decimal,
    pub fee_asset: String,
    pub liquidity: Liquidity,
    /// Gross realized P&L of the part of this fill that reduced a position (fee not deducted).
    pub realized_pnl: Decimal,
    pub ts: i64,
}

/// A row of `lifecycle`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    pub id: String,
    pub user_id: String,
    pub entity: LifecycleEntity,
    pub entity_id: String,
    pub event: String,
    pub detail: serde_json::Value,
    pub ts: i64,
}

/// A row of `signals`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    pub id: String,
    pub user_id: String,
    pub bot_id: Option<String>,
    pub symbol: String,
    pub direction: Direction,
    /// Between 0 and 1.
    pub confidence: Decimal,
    pub reason: String,
    pub ts: i64,
}

/// A row of `risk` (one per portfolio).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Risk {
    pub id: String,
    pub user_id: String,
    pub portfolio_id: String,
    pub circuit_breaker: CircuitBreaker,
    /// `daily_loss_limit` or `max_drawdown` while tripped.
    pub trip_reason: Option<String>,
    /// Quote currency; 0 disables the check.
    pub daily_loss_limit: Decimal,
    /// Fraction of peak equity (0.1 = 10 %); 0 disables the check.
    pub max_drawdown: Decimal,
    /// Equity now minus equity at the start of the UTC day.
    pub daily_pnl: Decimal,
    /// `(peak equity - equity) / peak equity`.
    pub drawdown: Decimal,
    pub tripped_at: Option<i64>,
    pub updated_at: i64,
    /// The start (UTC midnight, ms) of the day `day_start_equity` belongs to. Stored with
    /// the baselines so a restart keeps today's P&L and the drawdown peak; absent in rows
    /// written before they were kept.
    #[serde(default)]
    pub day_start_ms: Option<i64>,
    /// Equity at the start of that day: `daily_pnl` is measured from it.
    #[serde(default)]
    pub day_start_equity: Option<Decimal>,
    /// The highest equity since the breaker was last reset: `drawdown` is measured from it.
    #[serde(default)]
    pub peak_equity: Option<Decimal>,
}

/// A row of `pnl`: one point of a portfolio's equity curve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pnl {
    pub id: String,
    pub user_id: String,
    pub portfolio_id: String,
    pub equity: Decimal,
    pub balance: Decimal,
    pub realized_pnl: Decimal,
    pub unrealized_pnl: Decimal,
    pub ts: i64,
}

/// A state change for the driver to persist, carrying the full new row. Upserts replace the
/// row with that id; `*Created` and `PnlSnapshot`/`Lifecycle` are inserts. Apply them in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "row", rename_all = "snake_case")]
pub enum Effect {
    OrderUpserted(Order),
    FillCreated(Fill),
    PositionUpserted(Position),
    PortfolioUpdated(Portfolio),
    BotUpdated(Bot),
    Lifecycle(Lifecycle),
    SignalCreated(Signal),
    RiskUpdated(Risk),
    PnlSnapshot(Pnl),
}

impl Effect {
    /// The table the row belongs to.
    pub fn table(&self) -> &'static str {
        match self {
            Effect::OrderUpserted(_) => "orders",
            Effect::FillCreated(_) => "fills",
            Effect::PositionUpserted(_) => "positions",
            Effect::PortfolioUpdated(_) => "portfolios",
            Effect::BotUpdated(_) => "trading_bots",
            Effect::Lifecycle(_) => "lifecycle",
            Effect::SignalCreated(_) => "signals",
            Effect::RiskUpdated(_) => "risk",
            Effect::PnlSnapshot(_) => "pnl",
        }
    }

    /// The owner of the row.
    pub fn user_id(&self) -> &str {
        match self {
            Effect::OrderUpserted(r) => &r.user_id,
            Effect::FillCreated(r) => &r.user_id,
            Effect::PositionUpserted(r) => &r.user_id,
            Effect::PortfolioUpdated(r) => &r.user_id,
            Effect::BotUpdated(r) => &r.user_id,
            Effect::Lifecycle(r) => &r.user_id,
            Effect::SignalCreated(r) => &r.user_id,
            Effect::RiskUpdated(r) => &r.user_id,
            Effect::PnlSnapshot(r) => &r.user_id,
        }
    }

    /// The row as a JSON object whose keys are the table's columns.
    pub fn row_json(&self) -> serde_json::Value {
        let v = match self {
            Effect::OrderUpserted(r) => serde_json::to_value(r),
            Effect::FillCreated(r) => serde_json::to_value(r),
            Effect::PositionUpserted(r) => serde_json::to_value(r),
            Effect::PortfolioUpdated(r) => serde_json::to_value(r),
            Effect::BotUpdated(r) => serde_json::to_value(r),
            Effect::Lifecycle(r) => serde_json::to_value(r),
            Effect::SignalCreated(r) => serde_json::to_value(r),
            Effect::RiskUpdated(r) => serde_json::to_value(r),
            Effect::PnlSnapshot(r) => serde_json::to_value(r),
        };
        v.unwrap_or(serde_json::Value::Null)
    }
}

/// `row` if it changed since it was last handed out (`emitted`), ignoring its `updated_at`
/// column; then it is stamped `now_ms` and recorded as handed out. Rows are emitted only
/// when something real changed.
pub(crate) fn take_changed<T: Clone + PartialEq>(
    row: &mut T,
    emitted: &mut Option<T>,
    now_ms: i64,
    updated_at: fn(&mut T) -> &mut i64,
) -> Option<T> {
    if let Some(prev) = emitted.as_mut() {
        let mut candidate = row.clone();
        *updated_at(&mut candidate) = *updated_at(prev);
        if *prev == candidate {
            return None;
        }
    }
    *updated_at(row) = now_ms;
    *emitted = Some(row.clone());
    Some(row.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_serialize_with_column_names_and_check_strings() {
        let o = Order {
            id: "ord_1".into(),
            user_id: "u1".into(),
            portfolio_id: "p1".into(),
            bot_id: None,
            client_order_id: "c1".into(),
            symbol: "BTCUSDT".into(),
            side: Side::Buy,
            order_type: OrderType::TakeProfit,
            time_in_force: TimeInForce::Gtc,
            price: None,
            stop_price: Some("65000.1".parse().expect("dec")),
            quantity: "0.001".parse().expect("dec"),
            filled_quantity: Decimal::ZERO,
            avg_fill_price: None,
            status: OrderStatus::PartiallyFilled,
            reduce_only: true,
            post_only: false,
            reject_reason: None,
            chain_id: Some("chn_1".into()),
            chain_role: Some(ChainRole::StopLoss),
            created_at: 1,
            updated_at: 2,
        };
        let e = Effect::OrderUpserted(o);
        let v = e.row_json();
        assert_eq!(v["type"], "take_profit");
        assert_eq!(v["status"], "partially_filled");
        assert_eq!(v["stop_price"], "65000.1");
        assert_eq!(v["chain_role"], "stop_loss");
        assert_eq!(v["price"], serde_json::Value::Null);
        assert_eq!(e.table(), "orders");
        let wire = serde_json::to_value(&e).expect("serialize");
        assert_eq!(wire["kind"], "order_upserted");
        assert_eq!(wire["row"]["id"], "ord_1");
    }
}
