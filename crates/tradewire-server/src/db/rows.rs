//! Rows as JSON objects, built by the database itself with the same expression the capture
//! triggers use, so a row in a snapshot, a REST answer and a change event has one shape.

use tradewire_hub::Filter;
use tradewire_protocol::Row;

use super::catalog::{Column, ColumnKind, TableInfo};
use super::sql::{Dialect, Sql};
use super::{DecodeError, Result};
use crate::sql_params;

/// A JSON-object expression over `columns`, as text. `prefix` is `NEW.`, `OLD.` or ``.
pub fn json_row_expr(dialect: Dialect, columns: &[Column], prefix: &str) -> String {
    let fields: Vec<String> = columns
        .iter()
        .map(|c| {
            let v = format!("{prefix}\"{}\"", c.name);
            let value = match (dialect, c.kind) {
                (Dialect::Sqlite, ColumnKind::Bool) => format!(
                    "CASE WHEN {v} IS NULL THEN NULL WHEN {v} THEN json('true') ELSE json('false') END"
                ),
                (Dialect::Sqlite, ColumnKind::Json) => {
                    format!("CASE WHEN json_valid({v}) THEN json({v}) ELSE {v} END")
                }
                (Dialect::Postgres, ColumnKind::Decimal) => format!("{v}::text"),
                // SQLite can hold an infinite REAL (`1e999`), which JSON cannot: it is
                // written as the string "Infinity" or "-Infinity", as PostgreSQL does. A
                // BLOB (JSON has no bytes) is written as {"$hex": "…"}.
                (Dialect::Sqlite, ColumnKind::Plain) => format!(
                    "CASE WHEN typeof({v}) = 'real' AND abs({v}) > 1.7976931348623157e308 \
                     THEN CASE WHEN {v} > 0 THEN 'Infinity' ELSE '-Infinity' END \
                     WHEN typeof({v}) = 'blob' THEN json_object('$hex', hex({v})) ELSE {v} END"
                ),
                _ => v.clone(),
            };
            // A value over MAX_VALUE_BYTES is left out of the row: {"$oversized": <bytes>}
            // stands in its place, so one huge value cannot make every frame of a stream huge.
            let value = match dialect {
                Dialect::Sqlite => format!(
                    "CASE WHEN length(CAST({v} AS BLOB)) > {MAX_VALUE_BYTES} \
                     THEN json_object('$oversized', length(CAST({v} AS BLOB))) ELSE {value} END"
                ),
                Dialect::Postgres => format!(
                    "CASE WHEN octet_length({v}::text) > {MAX_VALUE_BYTES} \
                     THEN json_build_object('$oversized', octet_length({v}::text)) ELSE to_json({value}) END"
                ),
            };
            format!("'{}', {value}", c.name)
        })
        .collect();
    match dialect {
        Dialect::Sqlite => format!("json_object({})", fields.join(", ")),
        Dialect::Postgres => format!("json_build_object({})::text", fields.join(", ")),
    }
}

/// The largest value a captured row carries as it is (1 MiB of its text form); a larger
/// one is replaced by `{"$oversized": <bytes>}` (see `docs/PROTOCOL.md`).
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// The order rows are listed in: insertion order on SQLite (rowid); on PostgreSQL, which
/// has no stable row order, the table's creation-time column when it has one, then its key.
fn order_by(dialect: Dialect, table: &TableInfo, desc: bool) -> String {
    let dir = if desc { "DESC" } else { "ASC" };
    match dialect {
        Dialect::Sqlite => format!("rowid {dir}"),
        Dialect::Postgres => {
            let key = &table.spec.key;
            match ["created_at", "opened_at", "ts"].into_iter().find(|c| table.has_column(c)) {
                Some(time) => format!("\"{time}\" {dir}, \"{key}\" {dir}"),
                None => format!("\"{key}\" {dir}"),
            }
        }
    }
}

/// Rows of one owner, newest kept when cut.
#[derive(Debug, Default)]
pub struct Rows {
    /// Oldest first.
    pub rows: Vec<Row>,
    /// More rows matched than `limit`; the oldest were left out.
    pub truncated: bool,
}

pub(crate) fn parse_row(text: &str) -> Result<Row> {
    Ok(serde_json::from_str(text).map_err(DecodeError::RowJson)?)
}

/// The owner's rows of `table` that pass `filter`, at most `limit`, newest kept. The filter
/// is applied with [`Filter::matches`], the very function live changes are matched with.
pub fn scan_rows(
    conn: &mut dyn Sql,
    table: &TableInfo,
    owner: &str,
    filter: &Filter,
    limit: usize,
) -> Result<Rows> {
    let dialect = conn.dialect();
    // Without a filter the database cuts; with one, rows are read as they come and the
    // read stops at the first match past the limit (a user with millions of rows costs a
    // scan, never memory).
    let cut = if filter.is_empty() { format!(" LIMIT {}", limit.saturating_add(1)) } else { String::new() };
    let sql = format!(
        "SELECT {} FROM \"{}\" WHERE \"{}\" = ?1 ORDER BY {}{cut}",
        json_row_expr(dialect, &table.columns, ""),
        table.spec.table,
        table.spec.owner,
        order_by(dialect, table, true),
    );
    let mut out = Rows::default();
    conn.query_each(&sql, sql_params![owner], &mut |r| {
        let Some(text) = r.into_iter().next().and_then(|c| c.into_text()) else { return Ok(true) };
        let row = parse_row(&text)?;
        if !filter.matches(&row) {
            return Ok(true);
        }
        if out.rows.len() == limit {
            out.truncated = true;
            return Ok(false);
        }
        out.rows.push(row);
        Ok(true)
    })?;
    out.rows.reverse();
    Ok(out)
}

/// Every user's rows of `table`, by owner (in user id order) and then in insertion order:
/// one query, whatever the number of users. Rows whose owner is not a user are left out.
pub fn scan_all_rows(conn: &mut dyn Sql, table: &TableInfo) -> Result<Vec<Row>> {
    let dialect = conn.dialect();
    let sql = format!(
        "SELECT {} FROM \"{}\" WHERE \"{owner}\" IN (SELECT id FROM users) ORDER BY \"{owner}\", {}",
        json_row_expr(dialect, &table.columns, ""),
        table.spec.table,
        order_by(dialect, table, false),
        owner = table.spec.owner
    );
    conn.query(&sql, &[])?
        .into_iter()
        .filter_map(|r| r.into_iter().next()?.into_text())
        .map(|t| parse_row(&t))
        .collect()
}

/// One row of the owner's by key, or `None` (also when it belongs to someone else).
pub fn get_row(conn: &mut dyn Sql, table: &TableInfo, owner: &str, key: &str) -> Result<Option<Row>> {
    let sql = format!(
        "SELECT {} FROM \"{}\" WHERE \"{}\" = ?1 AND \"{}\" = ?2",
        json_row_expr(conn.dialect(), &table.columns, ""),
        table.spec.table,
        table.spec.owner,
        table.spec.key
    );
    conn.text(&sql, sql_params![owner, key])?.map(|t| parse_row(&t)).transpose()
}
