//! `where` filters: `{"col": value}` or `{"col": {"in": [v1, v2]}}`, columns ANDed.

use rust_decimal::Decimal;
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
/// A number's exact decimal value, when it has one `Decimal` can hold (28 digits).
fn exact(text: &str) -> Option<Decimal> {
    Decimal::from_str_exact(text.trim()).ok().or_else(|| Decimal::from_scientific(text.trim()).ok())
}

/// Numbers compare by exact decimal value (`1.5` equals `"1.50"`, and two values that only
/// round to the same `f64` differ); binary floating point decides only for values beyond
/// `Decimal`'s range.
fn number_eq(a: &str, b: &str) -> bool {
    match (exact(a), exact(b)) {
        (Some(x), Some(y)) => x == y,
        _ => matches!((a.trim().parse::<f64>(), b.trim().parse::<f64>()), (Ok(x), Ok(y)) if x == y),
    }
}

fn scalar_eq(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::String(a), Value::String(b)) => a == b,
        (Value::Number(a), Value::Number(b)) => match (a.as_i64(), b.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => number_eq(&a.to_string(), &b.to_string()),
        },
        (Value::String(s), Value::Number(n)) | (Value::Number(n), Value::String(s)) => {
            number_eq(s, &n.to_string())
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

    #[test]
    fn numbers_compare_by_exact_decimal_value() {
        let f = |want: Value| Filter::parse(&row(json!({"qty": want}))).unwrap();
        let r = |have: Value| row(json!({"qty": have}));
        assert!(f(json!(1.5)).matches(&r(json!("1.50"))));
        assert!(f(json!("1.50")).matches(&r(json!(1.5))), "a decimal string equals a number of its value");
        // Equal as f64, different as decimals: not a match.
        assert!(!f(json!(100000000000000000000u128 as f64)).matches(&r(json!("100000000000000000001"))));
        assert!(!f(json!(0.3)).matches(&r(json!("0.30000000000000004"))));
        assert!(f(json!(0.1)).matches(&r(json!("0.1"))));
    }

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
