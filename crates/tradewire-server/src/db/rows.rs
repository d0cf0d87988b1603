//! Rows as JSON objects, built by SQLite itself with the same expression the capture
//! triggers use, so a row in a snapshot, a REST answer and a change event has one shape.

use rusqlite::{Connection, OptionalExtension};
use tradewire_hub::Filter;
use tradewire_protocol::Row;

use super::Result;
use super::catalog::{Column, ColumnKind, TableInfo};

/// `json_object('col', <prefix>"col", …)` over `columns`. `prefix` is `NEW.`, `OLD.` or ``.
pub fn json_row_expr(columns: &[Column], prefix: &str) -> String {
    let fields: Vec<String> = columns
        .iter()
        .map(|c| {
            let v = format!("{prefix}\"{}\"", c.name);
            let value = match c.kind {
                ColumnKind::Plain => v,
                ColumnKind::Bool => format!(
                    "CASE WHEN {v} IS NULL THEN NULL WHEN {v} THEN json('true') ELSE json('false') END"
                ),
                ColumnKind::Json => format!("CASE WHEN json_valid({v}) THEN json({v}) ELSE {v} END"),
            };
            format!("'{}', {value}", c.name)
        })
        .collect();
    format!("json_object({})", fields.join(", "))
}

/// Rows of one owner, newest kept when cut.
#[derive(Debug, Default)]
pub struct Rows {
    /// In insertion (rowid) order.
    pub rows: Vec<Row>,
    /// More rows matched than `limit`; the oldest were left out.
    pub truncated: bool,
}

fn parse_row(text: &str) -> rusqlite::Result<Row> {
    serde_json::from_str(text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

/// The owner's rows of `table` that pass `filter`, at most `limit`, newest kept. The filter
/// is applied with [`Filter::matches`], the very function live changes are matched with.
pub fn scan_rows(
    conn: &Connection,
    table: &TableInfo,
    owner: &str,
    filter: &Filter,
    limit: usize,
) -> Result<Rows> {
    let sql = format!(
        "SELECT {} FROM \"{}\" WHERE \"{}\" = ?1 ORDER BY rowid DESC",
        json_row_expr(&table.columns, ""),
        table.spec.table,
        table.spec.owner
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut cursor = stmt.query([owner])?;
    let mut out = Rows::default();
    while let Some(r) = cursor.next()? {
        let row = parse_row(r.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?)?;
        if !filter.matches(&row) {
            continue;
        }
        if out.rows.len() == limit {
            out.truncated = true;
            break;
        }
        out.rows.push(row);
    }
    out.rows.reverse();
    Ok(out)
}

/// Every user's rows of `table`, by owner (in user id order) and then in insertion order:
/// one query, whatever the number of users. Rows whose owner is not a user are left out.
pub fn scan_all_rows(conn: &Connection, table: &TableInfo) -> Result<Vec<Row>> {
    let sql = format!(
        "SELECT {} FROM \"{}\" WHERE \"{owner}\" IN (SELECT id FROM users) ORDER BY \"{owner}\", rowid",
        json_row_expr(&table.columns, ""),
        table.spec.table,
        owner = table.spec.owner
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut cursor = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(r) = cursor.next()? {
        out.push(parse_row(r.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?)?);
    }
    Ok(out)
}

/// One row of the owner's by key, or `None` (also when it belongs to someone else).
pub fn get_row(conn: &Connection, table: &TableInfo, owner: &str, key: &str) -> Result<Option<Row>> {
    let sql = format!(
        "SELECT {} FROM \"{}\" WHERE \"{}\" = ?1 AND \"{}\" = ?2",
        json_row_expr(&table.columns, ""),
        table.spec.table,
        table.spec.owner,
        table.spec.key
    );
    let text: Option<String> = conn.prepare_cached(&sql)?.query_row([owner, key], |r| r.get(0)).optional()?;
    Ok(text.map(|t| parse_row(&t)).transpose()?)
}
