//! Writing the simulator's effects: each effect is a full row of a trading table, upserted
//! by primary key. All effects of one step or command go in one transaction, in order, so
//! a client sees them as one commit, in the order the simulator produced them.

use rusqlite::types::Value as SqlValue;
use serde_json::Value;
use tradewire_sim::Effect;

use crate::db::{Catalog, Db, DbError};

fn sql_value(v: &Value) -> SqlValue {
    match v {
        Value::Null => SqlValue::Null,
        Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => SqlValue::Integer(i),
            None => SqlValue::Real(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => SqlValue::Text(s.clone()),
        // JSON columns (`config`, `detail`) are stored as JSON text.
        other => SqlValue::Text(other.to_string()),
    }
}

/// Upsert one row of `table`; its keys must be columns of the captured table.
fn upsert(
    tx: &rusqlite::Transaction<'_>,
    catalog: &Catalog,
    table: &str,
    row: &Value,
) -> Result<(), DbError> {
    let info = catalog.by_table(table).ok_or_else(|| DbError::Catalog {
        table: table.into(),
        reason: "the simulator wrote a table that is not captured".into(),
    })?;
    let Value::Object(row) = row else {
        return Err(DbError::Catalog {
            table: table.into(),
            reason: "an effect row is not an object".into(),
        });
    };
    if let Some(bad) = row.keys().find(|k| !info.has_column(k)) {
        return Err(DbError::Catalog { table: table.into(), reason: format!("no column {bad:?}") });
    }
    let cols: Vec<&str> = row.keys().map(String::as_str).collect();
    let quoted: Vec<String> = cols.iter().map(|c| format!("\"{c}\"")).collect();
    let params: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
    let updates: Vec<String> =
        cols.iter().filter(|c| **c != info.spec.key).map(|c| format!("\"{c}\" = excluded.\"{c}\"")).collect();
    let sql = format!(
        "INSERT INTO \"{table}\" ({}) VALUES ({}) ON CONFLICT(\"{}\") DO UPDATE SET {}",
        quoted.join(", "),
        params.join(", "),
        info.spec.key,
        updates.join(", ")
    );
    let values: Vec<SqlValue> = row.values().map(sql_value).collect();
    tx.prepare_cached(&sql)?.execute(rusqlite::params_from_iter(values))?;
    Ok(())
}

/// Write `effects` in one transaction. Returns how many rows were written.
pub async fn write(db: &Db, effects: Vec<Effect>) -> Result<usize, DbError> {
    if effects.is_empty() {
        return Ok(0);
    }
    let catalog = db.catalog().clone();
    db.write(move |tx| {
        for e in &effects {
            upsert(tx, &catalog, e.table(), &e.row_json())?;
        }
        Ok(effects.len())
    })
    .await
}
