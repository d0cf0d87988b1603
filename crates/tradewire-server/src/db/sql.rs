//! One small statement interface over both backends, so the API, the simulator's
//! persistence and the change log are written once.
//!
//! Statements use SQLite's numbered placeholders (`?1`, `?2`, …); on PostgreSQL they are
//! rewritten to `$1`, `$2`, …. The built-in schema keeps one column type per value on both
//! sides (text for money and ids, 64-bit integers for times and counts), and rows travel as
//! JSON text built by the database, so the few value kinds below are all the API needs.

use std::error::Error as StdError;

use bytes::{BufMut, BytesMut};
use postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

use super::{DbError, Result};

/// Which SQL the connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A statement parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Null,
    Int(i64),
    Bool(bool),
    Text(String),
}

impl From<&str> for Param {
    fn from(v: &str) -> Self {
        Param::Text(v.to_owned())
    }
}
impl From<String> for Param {
    fn from(v: String) -> Self {
        Param::Text(v)
    }
}
impl From<&String> for Param {
    fn from(v: &String) -> Self {
        Param::Text(v.clone())
    }
}
impl From<i64> for Param {
    fn from(v: i64) -> Self {
        Param::Int(v)
    }
}
impl From<u64> for Param {
    fn from(v: u64) -> Self {
        Param::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<bool> for Param {
    fn from(v: bool) -> Self {
        Param::Bool(v)
    }
}
impl<T: Into<Param>> From<Option<T>> for Param {
    fn from(v: Option<T>) -> Self {
        v.map_or(Param::Null, Into::into)
    }
}
impl From<&Option<String>> for Param {
    fn from(v: &Option<String>) -> Self {
        v.as_ref().map_or(Param::Null, |s| Param::Text(s.clone()))
    }
}

/// Build a parameter list: `params![a, b, c]`.
#[macro_export]
macro_rules! sql_params {
    ($($v:expr),* $(,)?) => { &[$($crate::db::sql::Param::from($v)),*][..] };
}

/// One value of a result row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Bool(bool),
    Text(String),
}

impl Cell {
    pub fn into_text(self) -> Option<String> {
        match self {
            Cell::Text(s) => Some(s),
            Cell::Int(i) => Some(i.to_string()),
            Cell::Bool(b) => Some(b.to_string()),
            Cell::Null => None,
        }
    }

    pub fn int(&self) -> i64 {
        match self {
            Cell::Int(i) => *i,
            Cell::Bool(b) => i64::from(*b),
            Cell::Text(s) => s.parse().unwrap_or_default(),
            Cell::Null => 0,
        }
    }

    pub fn truthy(&self) -> bool {
        match self {
            Cell::Bool(b) => *b,
            Cell::Int(i) => *i != 0,
            Cell::Text(s) => s == "t" || s == "true",
            Cell::Null => false,
        }
    }
}

/// A database connection or transaction of either backend.
pub trait Sql {
    fn dialect(&self) -> Dialect;
    /// Run one statement; the number of rows it changed.
    fn execute(&mut self, sql: &str, params: &[Param]) -> Result<u64>;
    /// Run one query; every row.
    fn query(&mut self, sql: &str, params: &[Param]) -> Result<Vec<Vec<Cell>>>;
    /// Run statements without parameters.
    fn batch(&mut self, sql: &str) -> Result<()>;

    /// Run one query, handing each row to `each` as it is read, until `each` says stop
    /// (`Ok(false)`): a large result is never all in memory. The default reads it whole.
    fn query_each(
        &mut self,
        sql: &str,
        params: &[Param],
        each: &mut dyn FnMut(Vec<Cell>) -> Result<bool>,
    ) -> Result<()> {
        for row in self.query(sql, params)? {
            if !each(row)? {
                break;
            }
        }
        Ok(())
    }

    /// The first row, if any.
    fn query_opt(&mut self, sql: &str, params: &[Param]) -> Result<Option<Vec<Cell>>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// The first column of the first row, if any.
    fn value(&mut self, sql: &str, params: &[Param]) -> Result<Option<Cell>> {
        Ok(self.query_opt(sql, params)?.and_then(|r| r.into_iter().next()))
    }

    /// The first column of the first row as text (`None` when there is no row or it is NULL).
    fn text(&mut self, sql: &str, params: &[Param]) -> Result<Option<String>> {
        Ok(self.value(sql, params)?.and_then(Cell::into_text))
    }
}

// ---- SQLite ---------------------------------------------------------------------------

/// A SQLite connection (or transaction, through `Deref`) as [`Sql`].
pub struct Lite<'a>(pub &'a rusqlite::Connection);

impl rusqlite::ToSql for Param {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            Param::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Param::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Param::Bool(b) => ToSqlOutput::Borrowed(ValueRef::Integer(i64::from(*b))),
            Param::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

fn lite_cell(v: rusqlite::types::ValueRef<'_>) -> Cell {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => Cell::Null,
        ValueRef::Integer(i) => Cell::Int(i),
        ValueRef::Real(f) => Cell::Text(f.to_string()),
        ValueRef::Text(t) | ValueRef::Blob(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
    }
}

impl Sql for Lite<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&mut self, sql: &str, params: &[Param]) -> Result<u64> {
        let n = self.0.prepare_cached(sql)?.execute(rusqlite::params_from_iter(params))?;
        Ok(n as u64)
    }

    fn query(&mut self, sql: &str, params: &[Param]) -> Result<Vec<Vec<Cell>>> {
        let mut out = Vec::new();
        self.query_each(sql, params, &mut |row| {
            out.push(row);
            Ok(true)
        })?;
        Ok(out)
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        Ok(self.0.execute_batch(sql)?)
    }

    fn query_each(
        &mut self,
        sql: &str,
        params: &[Param],
        each: &mut dyn FnMut(Vec<Cell>) -> Result<bool>,
    ) -> Result<()> {
        let mut stmt = self.0.prepare_cached(sql)?;
        let width = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
        while let Some(r) = rows.next()? {
            let row = (0..width).map(|i| r.get_ref(i).map(lite_cell)).collect::<rusqlite::Result<_>>()?;
            if !each(row)? {
                break;
            }
        }
        Ok(())
    }
}

// ---- PostgreSQL -----------------------------------------------------------------------

/// `?N` placeholders to `$N`, leaving quoted text alone.
pub fn to_pg_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted && chars.peek().is_some_and(char::is_ascii_digit) => out.push('$'),
            _ => out.push(c),
        }
    }
    out
}

type BoxError = Box<dyn StdError + Sync + Send>;

impl ToSql for Param {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> std::result::Result<IsNull, BoxError> {
        match self {
            Param::Null => Ok(IsNull::Yes),
            Param::Int(i) => match *ty {
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => i.to_string().to_sql(ty, out),
                _ => i.to_sql(ty, out),
            },
            Param::Bool(b) => match *ty {
                Type::INT2 | Type::INT4 | Type::INT8 => Param::Int(i64::from(*b)).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => b.to_string().to_sql(ty, out),
                _ => b.to_sql(ty, out),
            },
            Param::Text(s) => match *ty {
                Type::JSONB => {
                    out.put_u8(1);
                    out.put_slice(s.as_bytes());
                    Ok(IsNull::No)
                }
                Type::JSON => {
                    out.put_slice(s.as_bytes());
                    Ok(IsNull::No)
                }
                Type::INT2 | Type::INT4 | Type::INT8 => Param::Int(s.parse()?).to_sql(ty, out),
                _ => s.as_str().to_sql(ty, out),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Cell {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> std::result::Result<Self, BoxError> {
        Ok(match *ty {
            Type::INT2 => Cell::Int(i16::from_sql(ty, raw)?.into()),
            Type::INT4 => Cell::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT8 => Cell::Int(i64::from_sql(ty, raw)?),
            Type::BOOL => Cell::Bool(bool::from_sql(ty, raw)?),
            Type::JSONB => Cell::Text(String::from_utf8(raw.get(1..).unwrap_or_default().to_vec())?),
            _ => Cell::Text(String::from_utf8(raw.to_vec())?),
        })
    }

    fn from_sql_null(_: &Type) -> std::result::Result<Self, BoxError> {
        Ok(Cell::Null)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(
            *ty,
            Type::INT2
                | Type::INT4
                | Type::INT8
                | Type::BOOL
                | Type::TEXT
                | Type::VARCHAR
                | Type::BPCHAR
                | Type::NAME
                | Type::JSON
                | Type::JSONB
        )
    }
}

fn pg_params(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

fn pg_row(r: &postgres::Row) -> Result<Vec<Cell>> {
    (0..r.len()).map(|i| r.try_get::<_, Cell>(i).map_err(DbError::from)).collect()
}

fn pg_rows(rows: Vec<postgres::Row>) -> Result<Vec<Vec<Cell>>> {
    rows.iter().map(pg_row).collect()
}

macro_rules! pg_sql {
    ($t:ty) => {
        impl Sql for $t {
            fn dialect(&self) -> Dialect {
                Dialect::Postgres
            }

            fn execute(&mut self, sql: &str, params: &[Param]) -> Result<u64> {
                Ok(postgres::GenericClient::execute(
                    self,
                    to_pg_placeholders(sql).as_str(),
                    &pg_params(params),
                )?)
            }

            fn query(&mut self, sql: &str, params: &[Param]) -> Result<Vec<Vec<Cell>>> {
                pg_rows(postgres::GenericClient::query(
                    self,
                    to_pg_placeholders(sql).as_str(),
                    &pg_params(params),
                )?)
            }

            fn batch(&mut self, sql: &str) -> Result<()> {
                Ok(postgres::GenericClient::batch_execute(self, sql)?)
            }

            fn query_each(
                &mut self,
                sql: &str,
                params: &[Param],
                each: &mut dyn FnMut(Vec<Cell>) -> Result<bool>,
            ) -> Result<()> {
                use postgres::fallible_iterator::FallibleIterator;
                let mut rows = postgres::GenericClient::query_raw(
                    self,
                    to_pg_placeholders(sql).as_str(),
                    pg_params(params),
                )?;
                while let Some(r) = rows.next()? {
                    if !each(pg_row(&r)?)? {
                        break;
                    }
                }
                Ok(())
            }
        }
    };
}

pg_sql!(postgres::Client);
pg_sql!(postgres::Transaction<'_>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_rewritten_outside_quotes() {
        assert_eq!(
            to_pg_placeholders("SELECT ?1, '?2', ?10 WHERE a = '?' AND b = ?2"),
            "SELECT $1, '?2', $10 WHERE a = '?' AND b = $2"
        );
    }

    #[test]
    fn sqlite_round_trip() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let mut sql = Lite(&conn);
        sql.batch("CREATE TABLE t(a TEXT, b INTEGER, c BOOLEAN)").unwrap();
        assert_eq!(
            sql.execute("INSERT INTO t VALUES (?1, ?2, ?3)", sql_params!["x", 5i64, true]).unwrap(),
            1
        );
        let rows = sql.query("SELECT a, b, c, NULL FROM t", &[]).unwrap();
        assert_eq!(rows, vec![vec![Cell::Text("x".into()), Cell::Int(5), Cell::Int(1), Cell::Null]]);
        assert!(rows[0][2].truthy());
        assert_eq!(sql.text("SELECT a FROM t WHERE b = ?1", sql_params![6i64]).unwrap(), None);
    }
}
