//! Rows carry exactly the columns of the server's SQL schema, so the driver can write them
//! as they are.

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::Decimal;
use tradewire_sim::{Direction, Effect, InitialState, Simulator};

use crate::{Mirror, demo_bots, demo_portfolios, small_config};

/// Column names per table, read from the migration.
fn schema() -> BTreeMap<String, BTreeSet<String>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tradewire-server/migrations/0001_trading.sql");
    let sql = std::fs::read_to_string(path).expect("the server's trading schema");
    let mut tables = BTreeMap::new();
    let mut current: Option<(String, BTreeSet<String>)> = None;
    for line in sql.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("CREATE TABLE ") {
            current = Some((rest.trim_end_matches(" (").trim().to_string(), BTreeSet::new()));
        } else if line.starts_with(");") {
            if let Some((name, cols)) = current.take() {
                tables.insert(name, cols);
            }
        } else if let Some((_, cols)) = current.as_mut() {
            let first = line.split_whitespace().next().unwrap_or("");
            let is_column = !first.is_empty()
                && first.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                && !["UNIQUE", "PRIMARY", "CHECK"].contains(&first);
            if is_column && !line.starts_with("--") && !line.starts_with('(') {
                cols.insert(first.to_string());
            }
        }
    }
    tables
}

#[test]
fn every_effect_row_has_exactly_its_tables_columns() {
    let tables = schema();
    assert!(tables.contains_key("orders") && tables["orders"].contains("chain_role"), "{tables:?}");
    let initial = InitialState { portfolios: demo_portfolios(), bots: demo_bots(), risk: Vec::new() };
    let mut sim = Simulator::new(small_config(5), initial).expect("simulator");
    let mut now = small_config(5).start_ms;
    let mut effects =
        sim.set_risk_limits("u1", "p1", Decimal::new(1, 1), Decimal::ZERO, now).expect("limits");
    effects.extend(sim.simulate_signal("u1", "b1", Direction::Long, Decimal::ONE, now).expect("signal"));
    for _ in 0..300 {
        now += 200;
        effects.extend(sim.step(now).effects);
    }
    let mut seen = BTreeSet::new();
    for e in &effects {
        let table = e.table();
        seen.insert(table);
        let columns = tables.get(table).unwrap_or_else(|| panic!("no table {table}"));
        let serde_json::Value::Object(row) = e.row_json() else { panic!("row is an object") };
        let keys: BTreeSet<String> = row.keys().cloned().collect();
        assert_eq!(&keys, columns, "{table}");
        assert_eq!(row["user_id"], e.user_id());
    }
    for t in
        ["orders", "fills", "positions", "portfolios", "lifecycle", "signals", "risk", "pnl", "trading_bots"]
    {
        assert!(seen.contains(t), "no {t} row in this run: {seen:?}");
    }
    let mut m = Mirror::new(&demo_portfolios());
    m.apply(&effects);
    assert!(
        effects.iter().any(|e| matches!(e, Effect::BotUpdated(_))),
        "the tight breaker tripped and paused b1"
    );
}
