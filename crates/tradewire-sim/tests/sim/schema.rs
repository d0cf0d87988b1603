//! Rows carry exactly the columns of the server's SQL schema, so the driver can write them
//! as they are.

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::Decimal;
use tradewire_sim::{Direction, Effect, InitialState, Simulator};

use crate::{Mirror, demo_bots, demo_portfolios, small_config};

/// Column names per table, read from the migrations: `CREATE TABLE` in the first,
/// `ALTER TABLE … ADD COLUMN` in later ones.
fn schema() -> BTreeMap<String, BTreeSet<String>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tradewire-server/migrations");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("the server's migrations")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    let mut tables = BTreeMap::new();
    let mut current: Option<(String, BTreeSet<String>)> = None;
    for line in files
        .iter()
        .flat_map(|f| std::fs::read_to_string(f).unwrap().lines().map(str::to_owned).collect::<Vec<_>>())
    {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("CREATE TABLE ") {
            current = Some((rest.trim_end_matches(" (").trim().to_string(), BTreeSet::new()));
        } else if let Some(rest) = line.strip_prefix("ALTER TABLE ") {
            let mut words = rest.split_whitespace();
            if let (Some(table), Some("ADD"), Some("COLUMN"), Some(column)) =
                (words.next(), words.next(), words.next(), words.next())
            {
                tables.entry(table.to_string()).or_insert_with(BTreeSet::new).insert(column.to_string());
            }
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
