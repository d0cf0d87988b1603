//! The catalog of captured tables: which table feeds which topic, its key, its owner
//! column, and its columns (read from the database, so operator tables work alike).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::sql::{Dialect, Sql};
use super::{DbError, Result};

/// What configuration (or the built-in schema) says about a captured table: in
/// `tradewire.toml`, `[[tables]]` with `table`, `topic`, `key` and `owner`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// As the database holds it (text stays text, so decimals stay exact strings; integers
    /// are numbers).
    Plain,
    /// A PostgreSQL `numeric`: written as an exact decimal string.
    Decimal,
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

/// What is wrong with a captured table's description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("{name:?} is not a plain lower-case identifier")]
    NotIdentifier { name: String },
    #[error("no such table")]
    NoSuchTable,
    #[error("has no column {column:?}")]
    NoColumn { column: String },
    #[error("topic {topic:?} is used twice")]
    TopicTwice { topic: String },
    #[error("table or topic {topic:?} is built in")]
    BuiltIn { topic: String },
}

/// Every captured table, by topic.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    by_topic: BTreeMap<String, TableInfo>,
}

pub(crate) fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

impl Catalog {
    /// Read the columns of each table from the database and check the spec against them.
    pub fn load(conn: &mut dyn Sql, specs: &[TableSpec]) -> Result<Self> {
        let mut by_topic = BTreeMap::new();
        for spec in specs {
            let err = |problem: CatalogError| DbError::Catalog { table: spec.table.clone(), problem };
            for name in [&spec.table, &spec.topic, &spec.key, &spec.owner] {
                if !is_identifier(name) {
                    return Err(err(CatalogError::NotIdentifier { name: name.clone() }));
                }
            }
            if spec.topic == "system" {
                // A public topic of the server's own (see `MarketTopic::System`).
                return Err(err(CatalogError::BuiltIn { topic: spec.topic.clone() }));
            }
            let columns = columns_of(conn, &spec.table)?;
            if columns.is_empty() {
                return Err(err(CatalogError::NoSuchTable));
            }
            if let Some(bad) = columns.iter().find(|c| !is_identifier(&c.name)) {
                return Err(err(CatalogError::NotIdentifier { name: bad.name.clone() }));
            }
            let info = TableInfo { spec: spec.clone(), columns };
            for col in [&spec.key, &spec.owner] {
                if !info.has_column(col) {
                    return Err(err(CatalogError::NoColumn { column: col.clone() }));
                }
            }
            if by_topic.insert(spec.topic.clone(), info).is_some() {
                return Err(err(CatalogError::TopicTwice { topic: spec.topic.clone() }));
            }
        }
        Ok(Self { by_topic })
    }

    /// The operator's tables must not take a built-in topic or table.
    pub fn check_operator_tables(specs: &[TableSpec]) -> Result<()> {
        let builtin = builtin_tables();
        for spec in specs {
            if builtin.iter().any(|b| b.table == spec.table || b.topic == spec.topic) {
                return Err(DbError::Catalog {
                    table: spec.table.clone(),
                    problem: CatalogError::BuiltIn { topic: spec.topic.clone() },
                });
            }
        }
        Ok(())
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

/// The columns of `table`, in table order, with how each is written into JSON rows.
fn columns_of(conn: &mut dyn Sql, table: &str) -> Result<Vec<Column>> {
    let rows = match conn.dialect() {
        Dialect::Sqlite => {
            conn.query(&format!("SELECT name, type FROM pragma_table_info('{table}')"), &[])?
        }
        Dialect::Postgres => conn.query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name::text = ?1 ORDER BY ordinal_position",
            crate::sql_params![table],
        )?,
    };
    Ok(rows
        .into_iter()
        .map(|r| {
            let mut r = r.into_iter().map(|c| c.into_text().unwrap_or_default());
            let (name, decl) = (r.next().unwrap_or_default(), r.next().unwrap_or_default());
            let kind = match decl.to_ascii_uppercase().as_str() {
                "BOOLEAN" | "BOOL" => ColumnKind::Bool,
                "JSON" | "JSONB" => ColumnKind::Json,
                "NUMERIC" | "DECIMAL" => ColumnKind::Decimal,
                _ => ColumnKind::Plain,
            };
            Column { name, kind }
        })
        .collect())
}

/// The reference table of instruments (not captured: it has no owner).
pub fn instruments_table() -> Vec<Column> {
    [
        "symbol",
        "base",
        "quote",
        "tick_size",
        "lot_size",
        "min_notional",
        "max_leverage",
        "maintenance_margin_rate",
        "maker_fee",
        "taker_fee",
    ]
    .into_iter()
    .map(|name| Column { name: name.into(), kind: ColumnKind::Plain })
    .collect()
}
