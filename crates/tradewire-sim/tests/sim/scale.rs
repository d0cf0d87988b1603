//! The load of the benchmark: 10 symbols at 10 ticks/s with 20 running bots for 60
//! simulated seconds completes and keeps trading (no timing assertion here; the bench
//! crate measures CPU).

use serde_json::json;
use tradewire_sim::{Effect, InitialState, SimConfig, Simulator, default_symbols};

use crate::mirror::{bot, portfolio};

#[test]
fn ten_symbols_ten_ticks_twenty_bots_sixty_seconds() {
    let portfolios: Vec<_> = (0..4).map(|i| portfolio(&format!("p{i}"), &format!("u{i}"), "50000")).collect();
    let strategies = ["ma_crossover", "mean_reversion", "grid"];
    let symbols: Vec<String> = default_symbols().into_iter().map(|s| s.instrument.symbol).collect();
    let bots: Vec<_> = (0..20)
        .map(|i| {
            let config = json!({"sample_ms": 500, "fast": 3, "slow": 8, "window": 10, "entry_z": 1.5, "grid_step_pct": "0.0003"});
            bot(&format!("b{i}"), &format!("u{}", i % 4), &format!("p{}", i % 4), strategies[i % 3], &symbols[i % 10], config)
        })
        .collect();
    let config = SimConfig {
        market: tradewire_sim::MarketConfig { volatility_scale: 10.0, ..Default::default() },
        ..SimConfig::new(7, 0)
    };
    let mut sim =
        Simulator::new(config, InitialState { portfolios, bots, risk: Vec::new() }).expect("simulator");
    let (mut market, mut fills, mut signals) = (0, 0, 0);
    for tick in 1..=600 {
        let out = sim.step(tick * 100);
        market += out.market.len();
        fills += out.effects.iter().filter(|e| matches!(e, Effect::FillCreated(_))).count();
        signals += out.effects.iter().filter(|e| matches!(e, Effect::SignalCreated(_))).count();
    }
    assert!(market >= 600 * 10 * 3, "every symbol publishes book, ticker and kline each tick");
    assert!(signals > 20, "bots signal ({signals})");
    assert!(fills > 10, "bots trade ({fills})");
    assert_eq!(sim.engine().transition_errors(), 0);
}
