//! Unit tests of the engine against hand-made market events: every denial reason,
//! matching rules, margin reserve/release, chains, triggers and liquidation.

use rust_decimal::Decimal;

use crate::book::Level;
use crate::engine::Engine;
use crate::ids::Ids;
use crate::instrument::Instrument;
use crate::model::{
    BotStatus, ChainRole, Effect, LifecycleEntity, Liquidity, Order, OrderStatus, OrderType, Portfolio,
    PositionSide, PositionStatus, Side, TimeInForce,
};
use crate::orders::{ChainSpec, DenyReason, NewOrder};
use crate::price_model::{BookSnapshot, Mark, MarketEvent, Ticker, Trade};

fn d(s: &str) -> Decimal {
    s.parse().expect("decimal")
}

fn inst(maker: &str, taker: &str) -> Instrument {
    Instrument {
        symbol: "TESTUSDT".into(),
        base: "TEST".into(),
        quote: "USDT".into(),
        tick_size: d("0.1"),
        lot_size: d("0.1"),
        min_notional: d("20"),
        max_leverage: 20,
        maintenance_margin_rate: d("0.01"),
        maker_fee: d(maker),
        taker_fee: d(taker),
    }
}

fn portfolio(id: &str, user: &str, balance: &str) -> Portfolio {
    Portfolio {
        id: id.into(),
        user_id: user.into(),
        name: id.into(),
        currency: "USDT".into(),
        balance: d(balance),
        equity: d(balance),
        unrealized_pnl: Decimal::ZERO,
        realized_pnl: Decimal::ZERO,
        margin_used: Decimal::ZERO,
        margin_available: d(balance),
        created_at: 0,
        updated_at: 0,
    }
}

/// Book around 100: bids 99.9/99.8/99.7 with 1/2/3, asks 100.0/100.1/100.2 with 1/2/3.
fn book(mid_bid: &str) -> MarketEvent {
    let b = d(mid_bid);
    let t = d("0.1");
    MarketEvent::BookSnapshot(BookSnapshot {
        symbol: "TESTUSDT".into(),
        update_id: 1,
        bids: vec![Level(b, d("1")), Level(b - t, d("2")), Level(b - t - t, d("3"))],
        asks: vec![Level(b + t, d("1")), Level(b + t + t, d("2")), Level(b + t + t + t, d("3"))],
        ts: 1,
    })
}

fn ticker(last: &str) -> MarketEvent {
    MarketEvent::Ticker(Ticker {
        symbol: "TESTUSDT".into(),
        bid: d(last),
        ask: d(last),
        last: d(last),
        ts: 2,
    })
}

fn mark(price: &str) -> MarketEvent {
    MarketEvent::Mark(Mark { symbol: "TESTUSDT".into(), price: d(price), ts: 3 })
}

fn trade(side: Side, price: &str, qty: &str) -> MarketEvent {
    MarketEvent::Trade(Trade { symbol: "TESTUSDT".into(), id: 1, price: d(price), qty: d(qty), side, ts: 2 })
}

fn engine_with(maker: &str, taker: &str) -> Engine {
    let mut e = Engine::new(vec![inst(maker, taker)], Ids::new(""));
    e.add_portfolio(portfolio("p1", "u1", "10000"));
    e.add_portfolio(portfolio("p2", "u2", "10000"));
    e.on_market(&[book("99.9"), ticker("100"), mark("100")]);
    e
}

fn engine() -> Engine {
    engine_with("0.0002", "0.0005")
}

fn buy(qty: &str) -> NewOrder {
    NewOrder::market("u1", "p1", "TESTUSDT", Side::Buy, d(qty))
}

fn sell(qty: &str) -> NewOrder {
    NewOrder::market("u1", "p1", "TESTUSDT", Side::Sell, d(qty))
}

fn limit(side: Side, qty: &str, price: &str) -> NewOrder {
    NewOrder::limit("u1", "p1", "TESTUSDT", side, d(qty), d(price))
}

fn orders(effects: &[Effect]) -> Vec<&Order> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::OrderUpserted(o) => Some(o),
            _ => None,
        })
        .collect()
}

fn last_order<'a>(effects: &'a [Effect], id: &str) -> &'a Order {
    orders(effects).into_iter().rev().find(|o| o.id == id).expect("order in effects")
}

fn fills(effects: &[Effect]) -> Vec<(Decimal, Decimal, Liquidity)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::FillCreated(f) => Some((f.price, f.quantity, f.liquidity)),
            _ => None,
        })
        .collect()
}

fn margin_used(e: &Engine) -> Decimal {
    e.portfolio("p1").expect("p1").margin_used
}

#[test]
fn every_denial_reason() {
    use DenyReason::*;
    let mut e = engine();
    e.set_bot("b_paused", "u1", BotStatus::Paused);
    e.set_bot("b_stopped", "u1", BotStatus::Stopped);
    let chain = |tp: &str, sl: &str| Some(ChainSpec { take_profit: Some(d(tp)), stop_loss: Some(d(sl)) });
    let cases: Vec<(NewOrder, DenyReason)> = vec![
        (NewOrder { symbol: "NOPE".into(), ..buy("1") }, UnknownSymbol),
        (NewOrder { portfolio_id: "p2".into(), ..buy("1") }, UnknownPortfolio),
        (NewOrder { bot_id: Some("ghost".into()), ..buy("1") }, UnknownBot),
        (buy("0"), InvalidQuantity),
        (buy("0.15"), LotSize),
        (limit(Side::Buy, "1", "99.95"), TickSize),
        (buy("0.1"), MinNotional),
        (NewOrder { leverage: 21, ..buy("1") }, InvalidLeverage),
        (NewOrder { leverage: 0, ..buy("1") }, InvalidLeverage),
        (NewOrder { price: None, ..limit(Side::Buy, "1", "99") }, MissingPrice),
        (NewOrder { order_type: OrderType::Stop, ..buy("1") }, MissingStopPrice),
        (NewOrder { price: Some(d("100")), ..buy("1") }, InvalidOrder),
        (
            NewOrder { post_only: true, time_in_force: TimeInForce::Ioc, ..limit(Side::Buy, "1", "99") },
            InvalidOrder,
        ),
        (
            NewOrder::trigger("u1", "p1", "TESTUSDT", Side::Sell, OrderType::Stop, d("1"), d("101")),
            WouldTriggerImmediately,
        ),
        (NewOrder { chain: chain("99", "98"), ..buy("1") }, InvalidChain),
        (NewOrder { chain: chain("102", "101"), ..buy("1") }, InvalidChain),
        (NewOrder { reduce_only: true, chain: chain("102", "98"), ..buy("1") }, ReduceOnlyWouldIncrease),
        (buy("1000"), InsufficientMargin),
        (NewOrder { bot_id: Some("b_paused".into()), ..buy("1") }, BotPaused),
        (NewOrder { bot_id: Some("b_stopped".into()), reduce_only: true, ..sell("1") }, BotStopped),
        (NewOrder { post_only: true, ..limit(Side::Buy, "1", "100") }, PostOnlyWouldCross),
        (NewOrder { reduce_only: true, ..sell("1") }, ReduceOnlyWouldIncrease),
        (NewOrder { time_in_force: TimeInForce::Fok, ..limit(Side::Buy, "2", "100") }, FokCannotFill),
        (NewOrder { time_in_force: TimeInForce::Fok, ..buy("7") }, FokCannotFill),
    ];
    for (order, want) in cases {
        let got = e.place_order(order.clone(), 10).expect_err(&format!("{order:?} should be denied"));
        assert_eq!(got.reason, want, "{order:?}: {}", got.message);
    }
    assert!(e.open_orders().next().is_none(), "denials change nothing");
    assert!(margin_used(&e).is_zero());

    // Duplicate client order id, leverage mismatch, halted, no market data, unknown order/position.
    let rest = NewOrder { client_order_id: Some("c1".into()), ..limit(Side::Buy, "1", "90") };
    e.place_order(rest.clone(), 10).expect("accepted");
    assert_eq!(e.place_order(rest, 10).expect_err("dup").reason, DuplicateClientOrderId);
    e.place_order(NewOrder { leverage: 2, ..buy("1") }, 10).expect("opens a long at 2x");
    assert_eq!(
        e.place_order(NewOrder { leverage: 3, ..buy("1") }, 10).expect_err("lev").reason,
        LeverageMismatch
    );
    e.set_halted("p1", true);
    assert_eq!(
        e.place_order(NewOrder { leverage: 2, ..buy("1") }, 10).expect_err("halt").reason,
        CircuitBreakerHalted
    );
    e.place_order(NewOrder { reduce_only: true, ..sell("0.5") }, 10).expect("reduce-only passes the breaker");
    let mut cold = Engine::new(vec![inst("0", "0")], Ids::new(""));
    cold.add_portfolio(portfolio("p1", "u1", "100"));
    assert_eq!(cold.place_order(buy("1"), 1).expect_err("no book").reason, NoMarketData);
    assert_eq!(e.cancel_order("u1", "ord_999", 1).expect_err("x").reason, UnknownOrder);
    assert_eq!(e.cancel_order("u2", "ord_1", 1).expect_err("not theirs").reason, UnknownOrder);
    assert_eq!(e.close_position("u1", "pos_999", 1).expect_err("x").reason, UnknownPosition);
}

#[test]
fn market_order_walks_the_book_and_emits_in_order() {
    let mut e = engine();
    let fx = e.place_order(buy("2.5"), 10).expect("accepted");
    assert_eq!(
        fills(&fx),
        vec![(d("100"), d("1"), Liquidity::Taker), (d("100.1"), d("1.5"), Liquidity::Taker)]
    );
    let kinds: Vec<&str> = fx
        .iter()
        .map(|e| match e {
            Effect::OrderUpserted(o) => o.status.as_str(),
            Effect::FillCreated(_) => "fill",
            Effect::PositionUpserted(_) => "position",
            Effect::PortfolioUpdated(_) => "portfolio",
            Effect::Lifecycle(_) => "lc",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        ["new", "lc", "portfolio", "fill", "fill", "filled", "lc", "position", "lc", "portfolio"]
    );
    let o = last_order(&fx, "ord_1");
    assert_eq!(o.filled_quantity, d("2.5"));
    assert_eq!(o.avg_fill_price, Some(d("100.06")));
    let p = e.position("p1", "TESTUSDT", None).expect("position");
    assert_eq!((p.side, p.quantity, p.entry_price), (PositionSide::Long, d("2.5"), d("100.06")));
    assert_eq!(p.margin, d("250.15"), "notional / leverage 1");
    let fees = d("100") * d("0.0005") + d("150.15") * d("0.0005");
    let pf = e.portfolio("p1").expect("p1");
    assert_eq!(pf.balance, d("10000") - fees);
    assert_eq!(pf.margin_used, d("250.15"));
    assert_eq!(pf.equity, pf.balance + p.unrealized_pnl);
    assert_eq!(p.unrealized_pnl, (d("100") - d("100.06")) * d("2.5"), "marked at the mark price");
}

#[test]
fn ioc_expires_the_rest_and_fok_fills_all() {
    let mut e = engine();
    let fx = e
        .place_order(NewOrder { time_in_force: TimeInForce::Ioc, ..limit(Side::Buy, "2", "100") }, 10)
        .expect("ok");
    let o = last_order(&fx, "ord_1");
    assert_eq!((o.status, o.filled_quantity), (OrderStatus::Expired, d("1")));
    assert_eq!(e.open_orders().count(), 0);
    let fx = e
        .place_order(NewOrder { time_in_force: TimeInForce::Fok, ..limit(Side::Buy, "3", "100.1") }, 10)
        .expect("ok");
    assert_eq!(last_order(&fx, "ord_2").status, OrderStatus::Filled);
    assert_eq!(fills(&fx).iter().map(|f| f.1).sum::<Decimal>(), d("3"));
    // A market order larger than the book fills what is shown and expires the rest.
    let fx = e.place_order(buy("7"), 10).expect("ok");
    let o = last_order(&fx, "ord_3");
    assert_eq!((o.status, o.filled_quantity), (OrderStatus::Expired, d("6")));
}

#[test]
fn resting_limit_reserves_margin_fills_as_maker_at_its_price_and_releases() {
    let mut e = engine();
    let fx = e.place_order(NewOrder { leverage: 4, ..limit(Side::Buy, "2", "99.5") }, 10).expect("ok");
    assert!(fills(&fx).is_empty());
    let reserve = d("199") / d("4") + d("199") * d("0.0005");
    assert_eq!(margin_used(&e), reserve);
    assert_eq!(e.reserved_margin("ord_1"), Some(reserve));
    // A trade print at the limit fills part of it, as maker, at the limit.
    let fx = e.on_market(&[trade(Side::Sell, "99.5", "0.5")]);
    assert_eq!(fills(&fx), vec![(d("99.5"), d("0.5"), Liquidity::Maker)]);
    assert_eq!(last_order(&fx, "ord_1").status, OrderStatus::PartiallyFilled);
    let pos_margin = d("49.75") / d("4");
    assert_eq!(margin_used(&e), pos_margin + e.reserved_margin("ord_1").expect("open"));
    // The book moving through the limit fills the rest at the limit, not at the better ask.
    let fx = e.on_market(&[book("99.2")]);
    assert_eq!(fills(&fx), vec![(d("99.5"), d("1.5"), Liquidity::Maker)]);
    assert_eq!(last_order(&fx, "ord_1").status, OrderStatus::Filled);
    assert_eq!(margin_used(&e), d("199") / d("4"));
    // Cancel of a resting order releases exactly its reserve.
    e.place_order(limit(Side::Sell, "1", "105"), 11).expect("ok");
    let before = margin_used(&e);
    assert!(before > d("199") / d("4"));
    e.cancel_order("u1", "ord_2", 12).expect("canceled");
    assert_eq!(margin_used(&e), d("199") / d("4"));
}

#[test]
fn post_only_rests_and_only_makes() {
    let mut e = engine();
    e.place_order(NewOrder { post_only: true, ..limit(Side::Sell, "1", "100.1") }, 10).expect("ok");
    let fx = e.on_market(&[trade(Side::Buy, "100.1", "3")]);
    assert_eq!(fills(&fx), vec![(d("100.1"), d("1"), Liquidity::Maker)]);
    let p = e.position("p1", "TESTUSDT", None).expect("short");
    assert_eq!(p.side, PositionSide::Short);
}

#[test]
fn reduce_only_is_clamped_and_never_flips_and_round_trip_nets_zero_without_fees() {
    let mut e = engine_with("0", "0");
    e.place_order(buy("1"), 10).expect("long 1 @ 100");
    // A resting reduce-only sell bigger than the position fills only the position.
    e.place_order(NewOrder { reduce_only: true, ..limit(Side::Sell, "3", "100") }, 11).expect("ok");
    let fx = e.on_market(&[trade(Side::Buy, "100", "5")]);
    assert_eq!(fills(&fx), vec![(d("100"), d("1"), Liquidity::Maker)]);
    assert!(e.position("p1", "TESTUSDT", None).is_none(), "flat, not short");
    let o = last_order(&fx, "ord_2");
    assert_eq!((o.status, o.filled_quantity), (OrderStatus::Canceled, d("1")), "the rest is canceled");
    let pf = e.portfolio("p1").expect("p1");
    assert_eq!(pf.realized_pnl, Decimal::ZERO, "round trip at one price, no fees");
    assert_eq!(pf.balance, d("10000"));
    assert_eq!(pf.margin_used, Decimal::ZERO);
}

#[test]
fn flip_closes_one_position_and_opens_another() {
    let mut e = engine_with("0", "0");
    e.place_order(buy("1"), 10).expect("long");
    let fx = e.place_order(sell("1.5"), 11).expect("flip");
    let positions: Vec<_> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::PositionUpserted(p) => Some((p.id.clone(), p.status, p.side, p.quantity)),
            _ => None,
        })
        .collect();
    assert_eq!(
        positions,
        vec![
            ("pos_1".into(), PositionStatus::Closed, PositionSide::Long, Decimal::ZERO),
            ("pos_2".into(), PositionStatus::Open, PositionSide::Short, d("0.5")),
        ]
    );
    let realized: Decimal = fx
        .iter()
        .filter_map(|e| match e {
            Effect::FillCreated(f) => Some(f.realized_pnl),
            _ => None,
        })
        .sum();
    // Bought 1 @ 100.0, sold 1 @ 99.9 (the rest 0.5 @ 99.8 opens the short).
    assert_eq!(realized, d("-0.1"));
    assert_eq!(e.portfolio("p1").expect("p1").margin_used, d("49.9"));
}

#[test]
fn stop_triggers_then_fills() {
    let mut e = engine();
    e.place_order(buy("1"), 10).expect("long");
    let stop = NewOrder::trigger("u1", "p1", "TESTUSDT", Side::Sell, OrderType::Stop, d("1"), d("99"));
    e.place_order(NewOrder { reduce_only: true, ..stop }, 11).expect("ok");
    let fx = e.on_market(&[ticker("99.5")]);
    assert!(orders(&fx).is_empty(), "not yet");
    let fx = e.on_market(&[book("98.9"), ticker("98.9")]);
    let statuses: Vec<OrderStatus> =
        orders(&fx).iter().filter(|o| o.id == "ord_2").map(|o| o.status).collect();
    assert_eq!(statuses, vec![OrderStatus::Triggered, OrderStatus::Filled]);
    assert_eq!(fills(&fx), vec![(d("98.9"), d("1"), Liquidity::Taker)]);
    assert!(e.position("p1", "TESTUSDT", None).is_none());
}

#[test]
fn chain_take_profit_fills_and_cancels_the_stop_loss() {
    let mut e = engine();
    let chain = ChainSpec { take_profit: Some(d("101")), stop_loss: Some(d("99")) };
    let fx = e.place_order(NewOrder { chain: Some(chain), leverage: 5, ..buy("1") }, 10).expect("ok");
    let exits: Vec<&Order> =
        orders(&fx).into_iter().filter(|o| o.chain_role != Some(ChainRole::Entry)).collect();
    assert_eq!(exits.len(), 2);
    assert!(exits.iter().all(|o| o.reduce_only && o.quantity == d("1") && o.side == Side::Sell));
    let (tp, sl) = (exits[0].id.clone(), exits[1].id.clone());
    assert_eq!(exits[0].order_type, OrderType::TakeProfit);
    assert_eq!(exits[1].order_type, OrderType::Stop);
    let fx = e.on_market(&[book("101"), ticker("101")]);
    assert_eq!(last_order(&fx, &tp).status, OrderStatus::Filled);
    let sl_row = last_order(&fx, &sl);
    assert_eq!(sl_row.status, OrderStatus::Canceled);
    let chain_events: Vec<String> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::Lifecycle(l) if l.entity == LifecycleEntity::Chain => Some(l.event.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(chain_events, ["take_profit_filled", "exit_ended", "completed"]);
    assert!(e.position("p1", "TESTUSDT", None).is_none());
    assert_eq!(margin_used(&e), Decimal::ZERO);
    // The stop can no longer fill.
    let fx = e.on_market(&[book("98"), ticker("98")]);
    assert!(fills(&fx).is_empty());
}

#[test]
fn chain_partial_exit_shrinks_the_other() {
    let mut e = engine();
    let chain = ChainSpec { take_profit: Some(d("101")), stop_loss: Some(d("99")) };
    e.place_order(NewOrder { chain: Some(chain), ..buy("2.5") }, 10).expect("ok");
    // A thin book: the take-profit sweep finds only 1 on the bid.
    let thin = MarketEvent::BookSnapshot(BookSnapshot {
        symbol: "TESTUSDT".into(),
        update_id: 2,
        bids: vec![Level(d("101"), d("1"))],
        asks: vec![Level(d("101.1"), d("1"))],
        ts: 5,
    });
    let fx = e.on_market(&[thin, ticker("101")]);
    let tp =
        orders(&fx).into_iter().rfind(|o| o.chain_role == Some(ChainRole::TakeProfit)).expect("tp").clone();
    let sl =
        orders(&fx).into_iter().rfind(|o| o.chain_role == Some(ChainRole::StopLoss)).expect("sl").clone();
    assert_eq!((tp.status, tp.filled_quantity), (OrderStatus::PartiallyFilled, d("1")));
    assert_eq!((sl.status, sl.quantity), (OrderStatus::New, d("1.5")), "shrunk by the partial fill");
    // The take-profit keeps sweeping; when it completes the stop-loss is canceled.
    let fx = e.on_market(&[book("101"), ticker("101")]);
    assert_eq!(last_order(&fx, &tp.id).status, OrderStatus::Filled);
    assert_eq!(last_order(&fx, &sl.id).status, OrderStatus::Canceled);
}

#[test]
fn liquidation_loses_exactly_the_margin() {
    let mut e = engine();
    e.place_order(NewOrder { leverage: 20, ..buy("6") }, 10).expect("long 6 @ ~100 at 20x");
    let p = e.position("p1", "TESTUSDT", None).expect("open").clone();
    let liq = p.liquidation_price.expect("liquidation price");
    assert!(liq > d("95") && liq < p.entry_price, "{liq}");
    let balance_before = e.portfolio("p1").expect("p1").balance;
    let fx = e.on_market(&[mark(&(liq + d("0.2")).to_string())]);
    assert!(fx.iter().any(|x| matches!(x, Effect::Lifecycle(l) if l.event == "margin_call")));
    assert!(e.position("p1", "TESTUSDT", None).is_some());
    let fx = e.on_market(&[book("94"), mark(&(liq - d("0.1")).to_string())]);
    let closed = fx
        .iter()
        .rev()
        .find_map(|x| match x {
            Effect::PositionUpserted(p) => Some(p.clone()),
            _ => None,
        })
        .expect("position row");
    assert_eq!(closed.status, PositionStatus::Liquidated);
    assert_eq!(fills(&fx), vec![(liq, d("6"), Liquidity::Taker)]);
    let pf = e.portfolio("p1").expect("p1");
    assert_eq!(pf.balance, balance_before - p.margin, "the isolated margin is lost, nothing more");
    assert_eq!(pf.margin_used, Decimal::ZERO);
    assert_eq!(pf.equity, pf.balance);
}

#[test]
fn paused_bot_may_only_reduce_and_close_position_ignores_bot_status() {
    let mut e = engine();
    e.set_bot("b1", "u1", BotStatus::Running);
    e.place_order(NewOrder { bot_id: Some("b1".into()), ..buy("1") }, 10).expect("bot opens");
    assert!(e.position("p1", "TESTUSDT", None).is_none(), "bot positions are separate");
    let pos = e.position("p1", "TESTUSDT", Some("b1")).expect("bot position").id.clone();
    e.set_bot("b1", "u1", BotStatus::Stopped);
    let fx = e.close_position("u1", &pos, 11).expect("the owner may close a stopped bot's position");
    assert!(
        fx.iter().any(|x| matches!(x, Effect::PositionUpserted(p) if p.status == PositionStatus::Closed))
    );
    assert_eq!(e.close_position("u2", &pos, 12).expect_err("gone").reason, DenyReason::UnknownPosition);
    // Even a removed bot's position can be closed by its owner.
    e.place_order(NewOrder { bot_id: Some("b1".into()), ..sell("1") }, 13).expect_err("stopped bot");
    e.set_bot("b1", "u1", BotStatus::Running);
    e.place_order(NewOrder { bot_id: Some("b1".into()), ..sell("1") }, 14).expect("bot opens a short");
    e.remove_bot("b1");
    let pos = e.position("p1", "TESTUSDT", Some("b1")).expect("short").id.clone();
    e.close_position("u1", &pos, 15).expect("closed without its bot");
    assert!(e.position("p1", "TESTUSDT", Some("b1")).is_none());
}

#[test]
fn terminal_orders_never_change_and_transitions_are_checked() {
    let mut e = engine();
    e.place_order(limit(Side::Buy, "1", "90"), 10).expect("ok");
    e.cancel_order("u1", "ord_1", 11).expect("canceled");
    assert_eq!(e.cancel_order("u1", "ord_1", 12).expect_err("gone").reason, DenyReason::UnknownOrder);
    assert_eq!(e.transition_errors(), 0);
}

fn around(price: Decimal) -> MarketEvent {
    let t = d("0.1");
    MarketEvent::BookSnapshot(BookSnapshot {
        symbol: "TESTUSDT".into(),
        update_id: 1,
        bids: vec![Level(price - t, d("50"))],
        asks: vec![Level(price + t, d("50"))],
        ts: 1,
    })
}

proptest::proptest! {
    /// Opening in one set of chunks and closing in another, all at one price and without
    /// fees, realizes exactly zero and leaves no margin behind, whatever the leverage.
    #[test]
    fn round_trip_at_one_price_nets_zero(
        ticks in 200..2000i64,
        entry in proptest::collection::vec(1..10i64, 1..6),
        exit_split in proptest::collection::vec(1..10i64, 1..6),
        leverage in 2..20u32,
        short in proptest::bool::ANY,
    ) {
        let price = Decimal::new(ticks, 1);
        let mut e = engine_with("0", "0");
        e.on_market(&[around(price), ticker(&price.to_string()), mark(&price.to_string())]);
        let (open, close) = if short { (Side::Sell, Side::Buy) } else { (Side::Buy, Side::Sell) };
        let total: i64 = entry.iter().sum();
        for lots in &entry {
            let qty = Decimal::from(*lots);
            let o = NewOrder { leverage, ..limit(open, "1", &price.to_string()) };
            e.place_order(NewOrder { quantity: qty, ..o }, 10).expect("rests");
            e.on_market(&[trade(close, &price.to_string(), "1000")]);
        }
        let p = e.position("p1", "TESTUSDT", None).expect("open").clone();
        proptest::prop_assert_eq!(p.quantity, Decimal::from(total));
        proptest::prop_assert_eq!(p.entry_price, price);
        // Close in a different split; the last chunk takes what is left.
        let mut left = total;
        for lots in exit_split {
            let lots = lots.min(left);
            if lots == 0 {
                break;
            }
            left -= lots;
            let o = NewOrder { reduce_only: true, ..limit(close, "1", &price.to_string()) };
            e.place_order(NewOrder { quantity: Decimal::from(lots), ..o }, 11).expect("rests");
            e.on_market(&[trade(open, &price.to_string(), "1000")]);
        }
        if left > 0 {
            let id = e.position("p1", "TESTUSDT", None).expect("open").id.clone();
            // Closing at market would cross the spread; close at the one price instead.
            let o = NewOrder { reduce_only: true, ..limit(close, "1", &price.to_string()) };
            e.place_order(NewOrder { quantity: Decimal::from(left), ..o }, 12).expect("rests");
            e.on_market(&[trade(open, &price.to_string(), "1000")]);
            proptest::prop_assert!(e.close_position("u1", &id, 13).is_err(), "already closed");
        }
        let pf = e.portfolio("p1").expect("p1");
        proptest::prop_assert!(e.open_positions().next().is_none());
        proptest::prop_assert_eq!(pf.realized_pnl, Decimal::ZERO);
        proptest::prop_assert_eq!(pf.balance, d("10000"));
        proptest::prop_assert_eq!(pf.margin_used, Decimal::ZERO);
        proptest::prop_assert_eq!(pf.equity, d("10000"));
    }
}
