//! Writing the simulator's effects: each effect is a full row of a trading table, upserted
//! by primary key. All effects of one step or command go in one transaction, in order, so
//! a client sees them as one commit, in the order the simulator produced them.

use serde_json::Value;
use tradewire_sim::Effect;

use crate::db::sql::Param;
use crate::db::{Catalog, CatalogError, Db, DbError, DecodeError, Sql};

fn sql_value(v: &Value) -> Param {
    match v {
        Value::Null => Param::Null,
        Value::Bool(b) => Param::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Param::Int(i),
            // Money is never a float; any other number is kept exactly as written.
            None => Param::Text(n.to_string()),
        },
        Value::String(s) => Param::Text(s.clone()),
        // JSON columns (`config`, `detail`) are stored as JSON text.
        other => Param::Text(other.to_string()),
    }
}

/// Upsert one row of `table`; its keys must be columns of the captured table.
fn upsert(tx: &mut dyn Sql, catalog: &Catalog, table: &str, row: &Value) -> Result<(), DbError> {
    let err = |problem| DbError::Catalog { table: table.into(), problem };
    let info = catalog.by_table(table).ok_or_else(|| err(CatalogError::NoSuchTable))?;
    let Value::Object(row) = row else {
        return Err(DbError::Decode(DecodeError::Shape {
            what: "a simulator effect",
            columns: info.columns.len(),
        }));
    };
    if let Some(bad) = row.keys().find(|k| !info.has_column(k)) {
        return Err(err(CatalogError::NoColumn { column: bad.clone() }));
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
    let values: Vec<Param> = row.values().map(sql_value).collect();
    tx.execute(&sql, &values)?;
    Ok(())
}

/// Attempts at one write when the database answers with a transient failure (SQLite busy
/// or locked past its busy timeout, a PostgreSQL deadlock or serialization failure).
const ATTEMPTS: u32 = 3;

/// Write `effects` in one transaction, retrying transient failures. Returns how many rows
/// were written.
pub async fn write(db: &Db, effects: Vec<Effect>) -> Result<usize, DbError> {
    if effects.is_empty() {
        return Ok(0);
    }
    let effects = std::sync::Arc::new(effects);
    let mut attempt = 1;
    loop {
        let (catalog, effects) = (db.catalog().clone(), effects.clone());
        let written: Result<usize, DbError> = db
            .write(move |tx| {
                for e in effects.iter() {
                    upsert(tx, &catalog, e.table(), &e.row_json())?;
                }
                Ok(effects.len())
            })
            .await;
        match written {
            Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                tracing::warn!(error = %e, attempt, "writing simulator effects failed; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}
