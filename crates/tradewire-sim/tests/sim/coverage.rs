//! Guards the property tests against passing vacuously: over a fixed set of generated
//! command sequences, every feature they are meant to exercise actually happens.

use std::collections::BTreeMap;

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use rust_decimal::Decimal;
use tradewire_sim::{ChainRole, OrderStatus, PositionStatus, TimeInForce};

use crate::properties::{cmd, run};

#[test]
fn random_commands_reach_every_feature() {
    let mut runner = TestRunner::deterministic();
    let mut seen: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut hit = |k: &'static str| *seen.entry(k).or_default() += 1;
    for i in 0..40u64 {
        let cmds = proptest::collection::vec(cmd(), 60..120).new_tree(&mut runner).expect("tree").current();
        let (log, m) = run(i * 7919, &cmds, true);
        m.assert_clean();
        for line in &log {
            if line.starts_with("circuit_breaker_halted") {
                hit("halted denial");
            }
            if line.starts_with("fok_cannot_fill") {
                hit("fok denial");
            }
        }
        for o in m.orders.values() {
            let filled = o.filled_quantity > Decimal::ZERO;
            match (o.chain_role, o.status) {
                (Some(ChainRole::TakeProfit), OrderStatus::Filled) => hit("take-profit filled"),
                (Some(ChainRole::StopLoss), OrderStatus::Filled) => hit("stop-loss filled"),
                _ => {}
            }
            if o.post_only && filled {
                hit("post-only filled");
            }
            if o.reduce_only && filled {
                hit("reduce-only filled");
            }
            if o.time_in_force == TimeInForce::Fok && o.status == OrderStatus::Filled {
                hit("fok filled");
            }
            if o.time_in_force == TimeInForce::Ioc && o.status == OrderStatus::Expired {
                hit("ioc expired");
            }
            if o.status == OrderStatus::Canceled {
                hit("canceled");
            }
            if o.price.is_some() && o.stop_price.is_some() && filled {
                hit("stop-limit filled");
            }
        }
        for p in m.positions.values() {
            if p.status == PositionStatus::Liquidated {
                hit("liquidated");
            }
        }
    }
    for k in [
        "halted denial",
        "fok denial",
        "take-profit filled",
        "stop-loss filled",
        "post-only filled",
        "reduce-only filled",
        "fok filled",
        "ioc expired",
        "canceled",
        "stop-limit filled",
        "liquidated",
    ] {
        assert!(seen.get(k).copied().unwrap_or(0) > 0, "no {k:?} in the generated runs: {seen:?}");
    }
}
