//! The same seed and the same commands give byte-identical outputs; another seed does not.

use tradewire_sim::{Direction, InitialState, Simulator};

use crate::{d, demo_bots, demo_portfolios, small_config};

fn transcript(seed: u64) -> String {
    let initial = InitialState { portfolios: demo_portfolios(), bots: demo_bots(), risk: Vec::new() };
    let mut sim = Simulator::new(small_config(seed), initial).expect("simulator");
    let mut now = small_config(seed).start_ms;
    let mut out = Vec::new();
    for i in 0..400 {
        now += 100;
        out.push(serde_json::to_value(sim.step(now)).expect("json"));
        if i == 50 {
            let fx = sim.simulate_signal("u1", "b1", Direction::Long, d("0.9"), now).expect("signal");
            out.push(serde_json::to_value(fx).expect("json"));
        }
        if i == 120 {
            let order =
                tradewire_sim::NewOrder::market("u2", "p3", "ETHUSDT", tradewire_sim::Side::Sell, d("0.1"));
            out.push(
                serde_json::to_value(sim.place_order(order, now).map_err(|e| e.to_string())).expect("json"),
            );
        }
    }
    serde_json::to_string(&out).expect("json")
}

#[test]
fn same_seed_same_transcript() {
    let a = transcript(42);
    assert_eq!(a, transcript(42));
    assert_ne!(a, transcript(43));
    assert!(a.contains("\"fill") || a.contains("fill_created"), "the transcript has trading in it");
}
