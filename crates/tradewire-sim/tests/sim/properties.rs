//! Property tests: random seeds and random command sequences, with every invariant checked
//! after every call (see `mirror.rs`), and a final wind-down that must leave no margin used.

use proptest::prelude::*;
use rust_decimal::Decimal;
use tradewire_sim::{
    BotStatus, ChainSpec, Direction, Effect, InitialState, NewOrder, OrderStatus, OrderType, Side, Simulator,
    TimeInForce,
};

use crate::{Mirror, demo_bots, demo_portfolios, small_config};

#[derive(Debug, Clone)]
pub enum Cmd {
    Step(i64),
    Place(PlaceArgs),
    Cancel(usize),
    Close(usize),
    BotStatus(usize, BotStatus),
    Signal(usize, Direction),
}

#[derive(Debug, Clone)]
pub struct PlaceArgs {
    portfolio: usize,
    symbol: usize,
    side: Side,
    order_type: OrderType,
    tif: TimeInForce,
    post_only: bool,
    reduce_only: bool,
    /// Limit (or trigger) price offset from the touch, in basis points.
    offset_bp: i64,
    /// Limit price for stop orders too.
    stop_limit: bool,
    notional: i64,
    leverage: u32,
    chain: Option<(i64, i64)>,
    bot: Option<usize>,
    bad_lot: bool,
}

fn place_args() -> impl Strategy<Value = PlaceArgs> {
    (
        (
            0..3usize,
            0..3usize,
            any::<bool>(),
            0..4u8,
            0..3u8,
            prop::bool::weighted(0.15),
            prop::bool::weighted(0.2),
        ),
        (
            prop_oneof![-6..6i64, -60..60i64],
            any::<bool>(),
            prop::sample::select(vec![5i64, 60, 300, 1500, 8000, 60000]),
            1..60u32,
        ),
        (
            prop::option::weighted(0.3, (5..80i64, 5..80i64)),
            prop::option::weighted(0.15, 0..4usize),
            prop::bool::weighted(0.05),
        ),
    )
        .prop_map(
            |(
                (portfolio, symbol, buy, ty, tif, post_only, reduce_only),
                (offset_bp, stop_limit, notional, leverage),
                (chain, bot, bad_lot),
            )| {
                PlaceArgs {
                    portfolio,
                    symbol,
                    side: if buy { Side::Buy } else { Side::Sell },
                    order_type: [OrderType::Market, OrderType::Limit, OrderType::Stop, OrderType::TakeProfit]
                        [ty as usize],
                    tif: [TimeInForce::Gtc, TimeInForce::Ioc, TimeInForce::Fok][tif as usize],
                    post_only,
                    reduce_only,
                    offset_bp,
                    stop_limit,
                    notional,
                    leverage,
                    chain,
                    bot,
                    bad_lot,
                }
            },
        )
}

pub fn cmd() -> impl Strategy<Value = Cmd> {
    prop_oneof![
        5 => (50..3000i64).prop_map(Cmd::Step),
        5 => place_args().prop_map(Cmd::Place),
        1 => (0..8usize).prop_map(Cmd::Cancel),
        1 => (0..8usize).prop_map(Cmd::Close),
        1 => (0..4usize, prop::sample::select(vec![BotStatus::Running, BotStatus::Paused, BotStatus::Stopped]))
            .prop_map(|(b, s)| Cmd::BotStatus(b, s)),
        1 => (0..4usize, prop::sample::select(vec![Direction::Long, Direction::Short, Direction::Flat]))
            .prop_map(|(b, dir)| Cmd::Signal(b, dir)),
    ]
}

const USERS: [(&str, &str); 3] = [("u1", "p1"), ("u1", "p2"), ("u2", "p3")];
const SYMBOLS: [&str; 3] = ["BTCUSDT", "ETHUSDT", "DOGEUSDT"];

/// Turn arguments into an order around the current market.
fn build_order(sim: &Simulator, a: &PlaceArgs) -> Option<NewOrder> {
    let symbol = SYMBOLS[a.symbol];
    let (user, pid) = USERS[a.portfolio];
    let inst = sim.engine().instrument(symbol)?.clone();
    let t = sim.market().ticker(symbol)?;
    let touch = match a.side {
        Side::Buy => t.ask,
        Side::Sell => t.bid,
    };
    let at = |bp: i64| inst.round_tick(touch * (Decimal::ONE + Decimal::new(bp, 4)));
    let mut qty = inst.floor_lot(Decimal::from(a.notional) / touch).max(inst.lot_size);
    if a.bad_lot {
        qty += inst.lot_size / Decimal::TWO;
    }
    let bots = crate::demo_bots();
    let bot_id = a.bot.map(|i| bots[i].id.clone()).filter(|_| a.bot.is_some_and(|i| bots[i].user_id == user));
    let mut o = NewOrder {
        bot_id,
        time_in_force: a.tif,
        post_only: a.post_only,
        reduce_only: a.reduce_only,
        leverage: a.leverage,
        order_type: a.order_type,
        ..NewOrder::market(user, pid, symbol, a.side, qty)
    };
    match a.order_type {
        OrderType::Market => {}
        OrderType::Limit => o.price = Some(at(a.offset_bp)),
        OrderType::Stop | OrderType::TakeProfit => {
            // Put the trigger on the side where it does not fire at once, mostly.
            let away = a.offset_bp.abs() + 1;
            let towards_fire = match (a.order_type, a.side) {
                (OrderType::Stop, Side::Buy) | (OrderType::TakeProfit, Side::Sell) => away,
                _ => -away,
            };
            o.stop_price = Some(at(towards_fire));
            if a.stop_limit {
                o.price = Some(at(towards_fire + a.offset_bp / 3));
            }
            o.time_in_force = TimeInForce::Gtc;
            o.post_only = false;
        }
    }
    if let Some((tp_bp, sl_bp)) = a.chain {
        let s = a.side.sign();
        let entry = o.price.or(o.stop_price).unwrap_or(touch);
        let px = |bp: i64| inst.round_tick(entry * (Decimal::ONE + s * Decimal::new(bp, 4)));
        o.chain = Some(ChainSpec { take_profit: Some(px(tp_bp)), stop_loss: Some(px(-sl_bp)) });
    }
    Some(o)
}

/// Run the commands, checking invariants after every call. Returns the serialized outputs.
pub fn run(seed: u64, cmds: &[Cmd], check: bool) -> (Vec<String>, Mirror) {
    let portfolios = demo_portfolios();
    let initial = InitialState { portfolios: portfolios.clone(), bots: demo_bots(), risk: Vec::new() };
    let mut sim = Simulator::new(small_config(seed), initial).expect("simulator");
    // One portfolio with a tight breaker so trips happen.
    let start = small_config(seed).start_ms;
    let mut mirror = Mirror::new(&portfolios);
    let mut log = Vec::new();
    let fx = sim.set_risk_limits("u2", "p3", Decimal::from(40), Decimal::new(2, 2), start).expect("limits");
    mirror.apply(&fx);
    let mut now = start;
    let bots = demo_bots();
    for c in cmds {
        let result: Result<Vec<Effect>, String> = match c {
            Cmd::Step(dt) => {
                now += dt;
                let out = sim.step(now);
                mirror.apply_market(&out.market);
                log.push(serde_json::to_string(&out.market).expect("json"));
                Ok(out.effects)
            }
            Cmd::Place(a) => match build_order(&sim, a) {
                None => Ok(Vec::new()),
                Some(order) => {
                    let r = sim.place_order(order.clone(), now);
                    if let Ok(fx) = &r {
                        check_time_in_force(&mut mirror, &order, fx);
                    }
                    r.map_err(|e| e.to_string())
                }
            },
            Cmd::Cancel(i) => {
                let ids: Vec<(String, String)> =
                    sim.engine().open_orders().map(|o| (o.user_id.clone(), o.id.clone())).collect();
                match ids.get(i % ids.len().max(1)) {
                    Some((u, id)) => sim.cancel_order(u, id, now).map_err(|e| e.to_string()),
                    None => Ok(Vec::new()),
                }
            }
            Cmd::Close(i) => {
                let ids: Vec<(String, String)> =
                    sim.engine().open_positions().map(|p| (p.user_id.clone(), p.id.clone())).collect();
                match ids.get(i % ids.len().max(1)) {
                    Some((u, id)) => sim.close_position(u, id, now).map_err(|e| e.to_string()),
                    None => Ok(Vec::new()),
                }
            }
            Cmd::BotStatus(b, s) => {
                sim.set_bot_status(&bots[*b].user_id, &bots[*b].id, *s, now).map_err(|e| e.to_string())
            }
            Cmd::Signal(b, dir) => sim
                .simulate_signal(&bots[*b].user_id, &bots[*b].id, *dir, Decimal::new(8, 1), now)
                .map_err(|e| e.to_string()),
        };
        match result {
            Ok(fx) => {
                mirror.apply(&fx);
                log.push(serde_json::to_string(&fx).expect("json"));
            }
            Err(e) => log.push(e),
        }
        if check {
            mirror.check(sim.engine());
        }
    }
    if check {
        wind_down(&mut sim, &mut mirror, &mut now);
    }
    (log, mirror)
}

/// IOC, FOK and market orders never rest; an accepted FOK fills completely.
fn check_time_in_force(mirror: &mut Mirror, order: &NewOrder, fx: &[Effect]) {
    let Some(Effect::OrderUpserted(first)) = fx.first() else {
        mirror.violations.push("an accepted order's first effect is not its row".into());
        return;
    };
    let last = fx
        .iter()
        .rev()
        .find_map(|e| match e {
            Effect::OrderUpserted(o) if o.id == first.id => Some(o.clone()),
            _ => None,
        })
        .expect("row");
    let immediate = matches!(order.order_type, OrderType::Market | OrderType::Limit) && !order.post_only;
    if immediate
        && (order.order_type == OrderType::Market || order.time_in_force != TimeInForce::Gtc)
        && !last.status.is_terminal()
    {
        mirror.violations.push(format!("{} ({:?}) rests as {}", last.id, order.time_in_force, last.status));
    }
    if order.time_in_force == TimeInForce::Fok
        && immediate
        && (last.status != OrderStatus::Filled || last.filled_quantity != last.quantity)
    {
        mirror.violations.push(format!(
            "FOK {} ended {} with {} of {}",
            last.id, last.status, last.filled_quantity, last.quantity
        ));
    }
}

/// Stop the bots, cancel everything, close everything: margin used must return to zero.
fn wind_down(sim: &mut Simulator, mirror: &mut Mirror, now: &mut i64) {
    for b in demo_bots() {
        let fx = sim.set_bot_status(&b.user_id, &b.id, BotStatus::Stopped, *now).expect("stop bot");
        mirror.apply(&fx);
    }
    for _ in 0..20 {
        let orders: Vec<(String, String)> =
            sim.engine().open_orders().map(|o| (o.user_id.clone(), o.id.clone())).collect();
        for (u, id) in orders {
            if let Ok(fx) = sim.cancel_order(&u, &id, *now) {
                mirror.apply(&fx);
            }
        }
        let positions: Vec<(String, String)> =
            sim.engine().open_positions().map(|p| (p.user_id.clone(), p.id.clone())).collect();
        for (u, id) in positions {
            let fx = sim.close_position(&u, &id, *now).expect("close is always accepted");
            mirror.apply(&fx);
        }
        mirror.check(sim.engine());
        if sim.engine().open_positions().next().is_none() && sim.engine().open_orders().next().is_none() {
            break;
        }
        *now += 100;
        let out = sim.step(*now);
        mirror.apply_market(&out.market);
        mirror.apply(&out.effects);
    }
    assert!(sim.engine().open_positions().next().is_none(), "everything closed");
    for p in sim.engine().portfolios() {
        assert_eq!(p.margin_used, Decimal::ZERO, "{}: margin used returns to zero when flat", p.id);
        assert_eq!(p.unrealized_pnl, Decimal::ZERO);
        assert_eq!(p.equity, p.balance);
    }
    for p in mirror.portfolios.values() {
        assert_eq!(p.margin_used, Decimal::ZERO, "{}: the emitted row says so too", p.id);
    }
}

proptest! {
    // PROPTEST_CASES raises the count for a longer soak.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48),
        ..ProptestConfig::default()
    })]

    #[test]
    fn invariants_hold_for_random_commands(seed in any::<u64>(), cmds in prop::collection::vec(cmd(), 1..120)) {
        let (_, mirror) = run(seed, &cmds, true);
        mirror.assert_clean();
    }

    #[test]
    fn same_seed_and_commands_give_the_same_outputs(seed in any::<u64>(), cmds in prop::collection::vec(cmd(), 1..60)) {
        let (a, _) = run(seed, &cmds, false);
        let (b, _) = run(seed, &cmds, false);
        prop_assert_eq!(a, b);
    }
}
