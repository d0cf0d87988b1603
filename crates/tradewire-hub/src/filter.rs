//! `where` filters: `{"col": value}` or `{"col": {"in": [v1, v2]}}`, columns ANDed.

use serde_json::Value;
use tradewire_protocol::Row;

/// At most this many columns in one filter.
pub const MAX_CLAUSES: usize = 16;
/// At most this many values in one `in` list.
pub const MAX_IN_VALUES: usize = 256;

/// A parsed, shape-checked filter. Which columns exist is checked by the caller, which
/// knows the topics' tables (see [`Filter::columns`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Filter {
    clauses: Vec<Clause>,
}

#[derive(Debug, Clone, PartialEq)]
struct Clause {
    column: String,
    values: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("a filter has at most {MAX_CLAUSES} columns")]
    TooManyColumns,
    #[error("column {0:?}: a value is a string, number, boolean or null, or {{\"in\": [values]}}")]
    BadValue(String),
    #[error("column {0:?}: an \"in\" list has 1 to {MAX_IN_VALUES} values")]
    BadInList(String),
    #[error("unknown column {column:?} for topics {topics}")]
    UnknownColumn { column: String, topics: String },
}

fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Array(_) | Value::Object(_))
}

impl Filter {
    pub fn parse(map: &Row) -> Result<Self, FilterError> {
        if map.len() > MAX_CLAUSES {
            return Err(FilterError::TooManyColumns);
        }
        let clauses = map
            .iter()
            .map(|(column, v)| {
                let values = match v {
                    Value::Object(o) => match (o.len(), o.get("in")) {
                        (1, Some(Value::Array(list))) => {
                            if list.is_empty() || list.len() > MAX_IN_VALUES || !list.iter().all(is_scalar) {
                                return Err(FilterError::BadInList(column.clone()));
                            }
                            list.clone()
                        }
                        _ => return Err(FilterError::BadValue(column.clone())),
                    },
                    Value::Array(_) => return Err(FilterError::BadValue(column.clone())),
                    scalar => vec![scalar.clone()],
                };
                Ok(Clause { column: column.clone(), values })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { clauses })
    }

    pub fn is_empty(&self) -> bool {
        self.clauses.is_empty()
    }

    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.clauses.iter().map(|c| c.column.as_str())
    }

    /// Does `row` pass? A row without one of the filter's columns does not.
    pub fn matches(&self, row: &Row) -> bool {
        self.clauses
            .iter()
            .all(|c| row.get(&c.column).is_some_and(|v| c.values.iter().any(|want| scalar_eq(v, want))))
    }
}

/// Equality as a trader means it: `"1.50"` equals `1.5`, strings compare exactly.
fn scalar_eq(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::String(a), Value::String(b)) => a == b,
        (Value::Number(a), Value::Number(b)) => match (a.as_i64(), b.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => a.as_f64() == b.as_f64(),
        },
        (Value::String(s), Value::Number(n)) | (Value::Number(n), Value::String(s)) => {
            s.trim().parse::<f64>().ok() == n.as_f64()
        }
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::Null, Value::Null) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn row(v: Value) -> Row {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn equality_and_in_lists_are_anded() {
        let f =
            Filter::parse(&row(json!({"symbol": "BTCUSDT", "status": {"in": ["new", "partially_filled"]}})))
                .unwrap();
        assert!(f.matches(&row(json!({"symbol": "BTCUSDT", "status": "new"}))));
        assert!(f.matches(&row(json!({"symbol": "BTCUSDT", "status": "partially_filled"}))));
        assert!(!f.matches(&row(json!({"symbol": "BTCUSDT", "status": "filled"}))));
        assert!(!f.matches(&row(json!({"symbol": "ETHUSDT", "status": "new"}))));
        assert!(!f.matches(&row(json!({"status": "new"}))), "missing column never matches");
    }

    #[test]
    fn numbers_and_decimal_strings_compare_by_value() {
        let f = Filter::parse(&row(json!({"price": 1.5, "n": 3}))).unwrap();
        assert!(f.matches(&row(json!({"price": "1.50", "n": 3}))));
        assert!(!f.matches(&row(json!({"price": "1.51", "n": 3}))));
        assert!(!f.matches(&row(json!({"price": "1.5", "n": "x"}))));
    }

    #[test]
    fn malformed_filters_are_rejected() {
        for bad in [
            json!({"a": [1]}),
            json!({"a": {"in": []}}),
            json!({"a": {"in": [[1]]}}),
            json!({"a": {"eq": 1}}),
            json!({"a": {"in": [1], "x": 2}}),
        ] {
            assert!(Filter::parse(&row(bad.clone())).is_err(), "{bad}");
        }
        let many: Row = (0..=MAX_CLAUSES).map(|i| (format!("c{i}"), json!(1))).collect();
        assert_eq!(Filter::parse(&many), Err(FilterError::TooManyColumns));
    }
}
