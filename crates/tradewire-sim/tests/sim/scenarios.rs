//! What a user of the product would notice, end to end through the simulator's API.

use rust_decimal::Decimal;
use tradewire_sim::{
    BotStatus, CircuitBreaker, DenyReason, Direction, Effect, InitialState, NewOrder, OrderStatus,
    PositionStatus, Side, SimError, Simulator,
};

use crate::{Mirror, d, demo_bots, demo_portfolios, small_config};

fn sim(seed: u64) -> (Simulator, i64) {
    let initial = InitialState { portfolios: demo_portfolios(), bots: demo_bots(), risk: Vec::new() };
    let s = Simulator::new(small_config(seed), initial).expect("simulator");
    (s, small_config(seed).start_ms)
}

fn name(e: &Effect) -> String {
    match e {
        Effect::OrderUpserted(o) => format!("order.{}", o.status),
        Effect::FillCreated(_) => "fill".into(),
        Effect::PositionUpserted(p) => format!("position.{}", p.status),
        Effect::PortfolioUpdated(_) => "portfolio".into(),
        Effect::BotUpdated(b) => format!("bot.{}", b.status),
        Effect::Lifecycle(l) => format!("lc.{}.{}", l.entity, l.event),
        Effect::SignalCreated(_) => "signal".into(),
        Effect::RiskUpdated(_) => "risk".into(),
        Effect::PnlSnapshot(_) => "pnl".into(),
    }
}

fn position_of(e: &[Effect]) -> Option<usize> {
    e.iter().position(|x| matches!(x, Effect::PositionUpserted(p) if p.status == PositionStatus::Open))
}

#[test]
fn simulated_signal_opens_a_position_in_the_order_a_dashboard_expects() {
    let (mut s, start) = sim(1);
    s.step(start + 100);
    let fx = s.simulate_signal("u1", "b2", Direction::Long, d("0.75"), start + 150).expect("signal");
    let names: Vec<String> = fx.iter().map(name).collect();
    let at =
        |n: &str| names.iter().position(|x| x == n).unwrap_or_else(|| panic!("{n} missing in {names:?}"));
    let reserved = names.iter().position(|x| x == "portfolio").expect("margin reserved");
    assert!(at("signal") < at("order.new"));
    assert!(at("order.new") < reserved);
    assert!(reserved < at("fill"));
    assert!(at("fill") < at("order.filled"));
    assert!(at("order.filled") < position_of(&fx).expect("opened"));
    let Effect::PortfolioUpdated(p) = &fx[reserved] else { unreachable!() };
    assert!(p.margin_used > Decimal::ZERO, "the first portfolio row is the reservation");
    assert!(fx.iter().all(|e| e.user_id() == "u1"), "nothing for another user");
    let Effect::SignalCreated(sig) = &fx[0] else { panic!("signal first") };
    assert_eq!(
        (sig.direction, sig.confidence, sig.bot_id.as_deref()),
        (Direction::Long, d("0.75"), Some("b2"))
    );
    // Take-profit and stop-loss exits were attached.
    let exits = fx
        .iter()
        .filter(|e| matches!(e, Effect::OrderUpserted(o) if o.reduce_only && o.status == OrderStatus::New))
        .count();
    assert_eq!(exits, 2);
    // A flat signal closes it and cancels the exits.
    let fx = s.simulate_signal("u1", "b2", Direction::Flat, d("0.5"), start + 200).expect("signal");
    assert!(
        fx.iter().any(|e| matches!(e, Effect::PositionUpserted(p) if p.status == PositionStatus::Closed))
    );
    let canceled = fx
        .iter()
        .filter(|e| matches!(e, Effect::OrderUpserted(o) if o.status == OrderStatus::Canceled))
        .count();
    assert_eq!(canceled, 2);
    assert!(s.engine().position("p2", "ETHUSDT", Some("b2")).is_none());
}

#[test]
fn bot_status_running_paused_stopped() {
    let (mut s, start) = sim(2);
    s.step(start + 100);
    let fx = s.set_bot_status("u1", "b2", BotStatus::Paused, start + 110).expect("pause");
    assert_eq!(fx.iter().map(name).collect::<Vec<_>>(), ["bot.paused", "lc.bot.status_changed"]);
    assert_eq!(s.bot("b2").expect("b2").status, BotStatus::Paused);
    // Paused: signals are recorded but nothing opens.
    let fx = s.simulate_signal("u1", "b2", Direction::Short, d("0.9"), start + 120).expect("signal");
    assert_eq!(fx.iter().map(name).collect::<Vec<_>>(), ["signal", "lc.bot.open_skipped"]);
    // A paused bot may still reduce: open while running, pause, then signal flat.
    s.set_bot_status("u1", "b2", BotStatus::Running, start + 130).expect("run");
    s.simulate_signal("u1", "b2", Direction::Short, d("0.9"), start + 140).expect("signal");
    assert!(s.engine().position("p2", "ETHUSDT", Some("b2")).is_some());
    s.set_bot_status("u1", "b2", BotStatus::Paused, start + 150).expect("pause");
    let denied = s.place_order(
        NewOrder {
            bot_id: Some("b2".into()),
            ..NewOrder::market("u1", "p2", "ETHUSDT", Side::Sell, d("0.1"))
        },
        start + 155,
    );
    assert_eq!(denied.expect_err("paused").reason, DenyReason::BotPaused);
    s.simulate_signal("u1", "b2", Direction::Flat, d("0.9"), start + 160).expect("signal");
    assert!(s.engine().position("p2", "ETHUSDT", Some("b2")).is_none(), "paused bots manage positions");
    // Stopped: signals are recorded as ignored; the strategy emits nothing on its own.
    s.set_bot_status("u1", "b2", BotStatus::Stopped, start + 170).expect("stop");
    let fx = s.simulate_signal("u1", "b2", Direction::Long, d("0.9"), start + 180).expect("signal");
    assert_eq!(fx.iter().map(name).collect::<Vec<_>>(), ["signal", "lc.bot.signal_ignored"]);
    let mut now = start + 200;
    for _ in 0..300 {
        now += 100;
        let out = s.step(now);
        assert!(
            !out.effects
                .iter()
                .any(|e| matches!(e, Effect::SignalCreated(x) if x.bot_id.as_deref() == Some("b2"))),
            "a stopped bot does nothing"
        );
    }
    // Unknown or foreign bots are refused.
    assert_eq!(s.set_bot_status("u2", "b2", BotStatus::Running, now), Err(SimError::UnknownBot("b2".into())));
    assert!(s.simulate_signal("u1", "nope", Direction::Long, Decimal::ONE, now).is_err());
}

#[test]
fn circuit_breaker_halts_the_portfolio_and_pauses_its_bots() {
    let (mut s, start) = sim(3);
    s.step(start + 100);
    s.set_risk_limits("u1", "p2", d("0.5"), Decimal::ZERO, start + 100).expect("limits");
    // A resting opening order that the trip must cancel.
    let eth_bid = s.market().ticker("ETHUSDT").expect("eth").bid;
    let resting = s
        .place_order(
            NewOrder::limit("u1", "p2", "ETHUSDT", Side::Buy, d("0.1"), eth_bid - d("50")),
            start + 101,
        )
        .expect("rests");
    let Effect::OrderUpserted(resting) = &resting[0] else { panic!("order row first") };
    // Open enough through b2 that fees alone exceed the limit.
    s.simulate_signal("u1", "b2", Direction::Long, Decimal::ONE, start + 110).expect("opens");
    let mut now = start + 110;
    let mut effects = Vec::new();
    while !s.engine().is_halted("p2") && now < start + 60_000 {
        now += 100;
        effects.extend(s.step(now).effects);
    }
    let risk = s.risk("p2").expect("risk row");
    assert_eq!(risk.circuit_breaker, CircuitBreaker::Tripped);
    assert_eq!(risk.trip_reason.as_deref(), Some("daily_loss_limit"));
    assert!(risk.daily_pnl <= d("-0.5"));
    let names: Vec<String> = effects.iter().map(name).collect();
    assert!(names.contains(&"lc.portfolio.circuit_breaker_tripped".to_string()));
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::RiskUpdated(r) if r.circuit_breaker == CircuitBreaker::Tripped))
    );
    for b in ["b2", "b4"] {
        assert_eq!(s.bot(b).expect("bot").status, BotStatus::Paused, "{b} paused by the breaker");
        assert!(
            effects
                .iter()
                .any(|e| matches!(e, Effect::BotUpdated(x) if x.id == b && x.status == BotStatus::Paused))
        );
    }
    assert_eq!(s.bot("b1").expect("b1").status, BotStatus::Running, "other portfolios are untouched");
    assert!(s.engine().order(&resting.id).is_none(), "opening orders canceled");
    let denied = s.place_order(NewOrder::market("u1", "p2", "ETHUSDT", Side::Buy, d("0.1")), now);
    assert_eq!(denied.expect_err("halted").reason, DenyReason::CircuitBreakerHalted);
    assert_eq!(s.set_bot_status("u1", "b2", BotStatus::Running, now), Err(SimError::Halted("p2".into())));
    // Closing is still allowed; a reset lifts the halt.
    if let Some(p) = s.engine().position("p2", "ETHUSDT", Some("b2")).map(|p| p.id.clone()) {
        s.close_position("u1", &p, now).expect("close while halted");
    }
    let fx = s.reset_circuit_breaker("u1", "p2", true, now).expect("reset");
    assert!(
        fx.iter().any(|e| matches!(e, Effect::RiskUpdated(r) if r.circuit_breaker == CircuitBreaker::Armed))
    );
    s.place_order(NewOrder::market("u1", "p2", "ETHUSDT", Side::Buy, d("0.1")), now).expect("trading again");
    s.set_bot_status("u1", "b2", BotStatus::Running, now).expect("resume");
}

#[test]
fn pnl_snapshots_every_five_seconds_and_first_step_emits_risk_rows() {
    let (mut s, start) = sim(4);
    let first = s.step(start + 100);
    let risk_rows = first.effects.iter().filter(|e| matches!(e, Effect::RiskUpdated(_))).count();
    assert_eq!(risk_rows, 3, "a default risk row per portfolio");
    let mut pnl = first.effects.iter().filter(|e| matches!(e, Effect::PnlSnapshot(_))).count();
    let mut now = start + 100;
    while now < start + 20_100 {
        now += 250;
        pnl += s.step(now).effects.iter().filter(|e| matches!(e, Effect::PnlSnapshot(_))).count();
    }
    // Buckets of 5 s between start+0.1 s and start+20.1 s: 5 (the start is on a bucket edge or not).
    assert!((4 * 3..=5 * 3).contains(&pnl), "{pnl} pnl rows");
}

#[test]
fn live_market_accessors_follow_the_steps() {
    let (mut s, start) = sim(5);
    let mut m = Mirror::new(&demo_portfolios());
    let mut now = start;
    for _ in 0..1300 {
        now += 100;
        let out = s.step(now);
        m.apply_market(&out.market);
    }
    m.assert_clean();
    let snap = s.market().book_snapshot("BTCUSDT").expect("btc");
    assert_eq!(snap.bids.len(), 20);
    assert_eq!(snap.update_id, m.books["BTCUSDT"].update_id, "the accessor's update id is the last delta's");
    let klines = s.market().klines("BTCUSDT").expect("btc");
    assert!(
        klines.len() >= 2
            && klines.iter().rev().skip(1).all(|k| k.closed)
            && !klines.last().expect("live").closed
    );
    assert!(s.market().mark("ETHUSDT").is_some() && s.market().ticker("DOGEUSDT").is_some());
}
