//! The catalog of captured tables: which table feeds which topic, its key, its owner
//! column, and its columns (read from the database, so operator tables work alike).

use std::collections::BTreeMap;

use rusqlite::Connection;

use super::{DbError, Result};

/// What configuration (or the built-in schema) says about a captured table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    pub table: String,
    pub topic: String,
    pub key: String,
    pub owner: String,
}

impl TableSpec {
    fn new(table: &str, topic: &str) -> Self {
        Self { table: table.into(), topic: topic.into(), key: "id".into(), owner: "user_id".into() }
    }
}

/// The built-in trading tables and their topics.
pub fn builtin_tables() -> Vec<TableSpec> {
    [
        ("trading_bots", "bots"),
        ("portfolios", "portfolios"),
        ("positions", "positions"),
        ("orders", "orders"),
        ("fills", "fills"),
        ("lifecycle", "lifecycle"),
        ("signals", "signals"),
        ("risk", "risk"),
        ("pnl", "pnl"),
    ]
    .into_iter()
    .map(|(t, topic)| TableSpec::new(t, topic))
    .collect()
}

/// How a column's value is written into the JSON row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// As SQLite holds it (text stays text, so decimals stay exact strings).
    Plain,
    /// Declared `BOOLEAN`: 0/1 become `false`/`true`.
    Bool,
    /// Declared `JSON`: embedded as JSON, not as a string.
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub kind: ColumnKind,
}

/// A captured table with its columns.
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub spec: TableSpec,
    pub columns: Vec<Column>,
}

impl TableInfo {
    pub fn has_column(&self, name: &str) -> bool {
        self.columns.iter().any(|c| c.name == name)
    }
}

/// Every captured table, by topic.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    by_topic: BTreeMap<String, TableInfo>,
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

impl Catalog {
    /// Read the columns of each table from the database and check the spec against them.
    pub fn load(conn: &Connection, specs: &[TableSpec]) -> Result<Self> {
        let mut by_topic = BTreeMap::new();
        for spec in specs {
            let err = |reason: String| DbError::Catalog { table: spec.table.clone(), reason };
            for name in [&spec.table, &spec.topic, &spec.key, &spec.owner] {
                if !is_identifier(name) {
                    return Err(err(format!("{name:?} is not a plain lower-case identifier")));
                }
            }
            let mut stmt = conn.prepare(&format!("PRAGMA table_info(\"{}\")", spec.table))?;
            let columns: Vec<Column> = stmt
                .query_map([], |r| {
                    let name: String = r.get(1)?;
                    let decl: String = r.get(2)?;
                    Ok((name, decl))
                })?
                .map(|c| {
                    c.map(|(name, decl)| Column {
                        kind: match decl.to_ascii_uppercase().as_str() {
                            "BOOLEAN" | "BOOL" => ColumnKind::Bool,
                            "JSON" | "JSONB" => ColumnKind::Json,
                            _ => ColumnKind::Plain,
                        },
                        name,
                    })
                })
                .collect::<rusqlite::Result<_>>()?;
            if columns.is_empty() {
                return Err(err("no such table".into()));
            }
            if let Some(bad) = columns.iter().find(|c| !is_identifier(&c.name)) {
                return Err(err(format!("column {:?} is not a plain identifier", bad.name)));
            }
            let info = TableInfo { spec: spec.clone(), columns };
            for col in [&spec.key, &spec.owner] {
                if !info.has_column(col) {
                    return Err(err(format!("has no column {col:?}")));
                }
            }
            if by_topic.insert(spec.topic.clone(), info).is_some() {
                return Err(err(format!("topic {:?} is used twice", spec.topic)));
            }
        }
        Ok(Self { by_topic })
    }

    pub fn topic(&self, topic: &str) -> Option<&TableInfo> {
        self.by_topic.get(topic)
    }

    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.by_topic.keys().map(String::as_str)
    }

    pub fn tables(&self) -> impl Iterator<Item = &TableInfo> {
        self.by_topic.values()
    }

    /// The table behind a table name (not a topic name).
    pub fn by_table(&self, table: &str) -> Option<&TableInfo> {
        self.by_topic.values().find(|t| t.spec.table == table)
    }
}
