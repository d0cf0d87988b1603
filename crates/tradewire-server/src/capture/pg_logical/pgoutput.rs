//! Decoding the row messages of PostgreSQL's `pgoutput` plugin (protocol version 1).
//!
//! The replication client hands over Begin and Commit already decoded; the rest of each
//! transaction arrives here as raw messages: Relation (a table's columns and their types),
//! Insert, Update, Delete, Truncate, and Type and Origin, which we do not need. Column
//! values arrive as text and become JSON values the way the database's own JSON rows
//! write them (see `db::rows::json_row_expr`): integers and floats as numbers, booleans as
//! booleans, `json`/`jsonb` embedded, `numeric` and everything else as strings.

use serde_json::{Map, Value};

/// A table as the stream describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub id: u32,
    pub namespace: String,
    pub name: String,
    pub columns: Vec<(String, u32)>,
}

/// One column value of a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datum {
    Null,
    /// A TOASTed value that did not change (not sent).
    Unchanged,
    Text(String),
}

/// A decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Relation(Relation),
    Insert {
        rel: u32,
        new: Vec<Datum>,
    },
    Update {
        rel: u32,
        old: Option<Vec<Datum>>,
        new: Vec<Datum>,
    },
    Delete {
        rel: u32,
        old: Vec<Datum>,
    },
    Truncate {
        rels: Vec<u32>,
    },
    /// Type, Origin, and anything else not needed for capture.
    Other(u8),
}

#[derive(Debug, thiserror::Error)]
#[error("pgoutput: {0}")]
pub struct DecodeError(String);

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError(format!("truncated message: wanted {n} bytes, {} left", self.0.len())));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn cstr(&mut self) -> Result<String, DecodeError> {
        let end =
            self.0.iter().position(|b| *b == 0).ok_or_else(|| DecodeError("unterminated string".into()))?;
        let s = String::from_utf8_lossy(&self.0[..end]).into_owned();
        self.0 = &self.0[end + 1..];
        Ok(s)
    }
    fn tuple(&mut self) -> Result<Vec<Datum>, DecodeError> {
        let n = self.u16()?;
        (0..n)
            .map(|_| match self.u8()? {
                b'n' => Ok(Datum::Null),
                b'u' => Ok(Datum::Unchanged),
                b't' | b'b' => {
                    let len = self.u32()? as usize;
                    Ok(Datum::Text(String::from_utf8_lossy(self.take(len)?).into_owned()))
                }
                k => Err(DecodeError(format!("unknown tuple value kind {:?}", k as char))),
            })
            .collect()
    }
}

/// Decode one `pgoutput` message (the payload of an XLogData).
pub fn decode(data: &[u8]) -> Result<Message, DecodeError> {
    let mut r = Reader(data);
    let tag = r.u8()?;
    Ok(match tag {
        b'R' => {
            let id = r.u32()?;
            let namespace = r.cstr()?;
            let name = r.cstr()?;
            let _replica_identity = r.u8()?;
            let n = r.u16()?;
            let columns = (0..n)
                .map(|_| {
                    let _flags = r.u8()?;
                    let name = r.cstr()?;
                    let ty = r.u32()?;
                    let _typmod = r.u32()?;
                    Ok((name, ty))
                })
                .collect::<Result<_, DecodeError>>()?;
            Message::Relation(Relation { id, namespace, name, columns })
        }
        b'I' => {
            let rel = r.u32()?;
            expect(r.u8()?, b'N')?;
            Message::Insert { rel, new: r.tuple()? }
        }
        b'U' => {
            let rel = r.u32()?;
            let mut kind = r.u8()?;
            let mut old = None;
            if kind == b'K' || kind == b'O' {
                old = Some(r.tuple()?);
                kind = r.u8()?;
            }
            expect(kind, b'N')?;
            Message::Update { rel, old, new: r.tuple()? }
        }
        b'D' => {
            let rel = r.u32()?;
            let kind = r.u8()?;
            if kind != b'K' && kind != b'O' {
                return Err(DecodeError(format!("delete without old tuple ({:?})", kind as char)));
            }
            Message::Delete { rel, old: r.tuple()? }
        }
        b'T' => {
            let n = r.u32()?;
            let _options = r.u8()?;
            Message::Truncate { rels: (0..n).map(|_| r.u32()).collect::<Result<_, _>>()? }
        }
        other => Message::Other(other),
    })
}

fn expect(got: u8, want: u8) -> Result<(), DecodeError> {
    if got == want {
        Ok(())
    } else {
        Err(DecodeError(format!("expected {:?}, got {:?}", want as char, got as char)))
    }
}

// Type OIDs of the built-in types with a JSON form other than a string.
const BOOL: u32 = 16;
const INT8: u32 = 20;
const INT2: u32 = 21;
const INT4: u32 = 23;
const OID: u32 = 26;
const JSON: u32 = 114;
const FLOAT4: u32 = 700;
const FLOAT8: u32 = 701;
const JSONB: u32 = 3802;

/// A text value of type `ty` as JSON.
pub fn json_value(ty: u32, text: &str) -> Value {
    match ty {
        BOOL => Value::Bool(text == "t"),
        INT2 | INT4 | INT8 | OID => {
            text.parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::String(text.into()))
        }
        FLOAT4 | FLOAT8 => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or_else(|| Value::String(text.into()), Value::Number),
        JSON | JSONB => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.into())),
        _ => Value::String(text.into()),
    }
}

/// A tuple as a JSON row. An unchanged TOASTed value is taken from `fallback` (the old row
/// of an update) when it has it.
pub fn json_row(
    rel: &Relation,
    tuple: &[Datum],
    fallback: Option<&Map<String, Value>>,
) -> Map<String, Value> {
    rel.columns
        .iter()
        .zip(tuple)
        .map(|((name, ty), datum)| {
            let value = match datum {
                Datum::Null => Value::Null,
                Datum::Text(t) if t.len() > crate::db::rows::MAX_VALUE_BYTES => {
                    serde_json::json!({"$oversized": t.len()})
                }
                Datum::Text(t) => json_value(*ty, t),
                Datum::Unchanged => fallback.and_then(|f| f.get(name)).cloned().unwrap_or(Value::Null),
            };
            (name.clone(), value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cstr(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }

    fn tuple(out: &mut Vec<u8>, values: &[Option<&str>]) {
        out.extend_from_slice(&(values.len() as u16).to_be_bytes());
        for v in values {
            match v {
                None => out.push(b'n'),
                Some(t) => {
                    out.push(b't');
                    out.extend_from_slice(&(t.len() as u32).to_be_bytes());
                    out.extend_from_slice(t.as_bytes());
                }
            }
        }
    }

    fn relation() -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend_from_slice(&16385u32.to_be_bytes());
        cstr(&mut m, "public");
        cstr(&mut m, "orders");
        m.push(b'f');
        m.extend_from_slice(&4u16.to_be_bytes());
        for (name, ty) in [("id", 25u32), ("qty", 1700), ("n", 20), ("flag", 16)] {
            m.push(0);
            cstr(&mut m, name);
            m.extend_from_slice(&ty.to_be_bytes());
            m.extend_from_slice(&u32::MAX.to_be_bytes());
        }
        m
    }

    #[test]
    fn relation_and_rows_decode_to_json_like_the_database_writes_them() {
        let Message::Relation(rel) = decode(&relation()).unwrap() else { panic!("relation") };
        assert_eq!(rel.name, "orders");
        assert_eq!(rel.columns.len(), 4);

        let mut ins = vec![b'I'];
        ins.extend_from_slice(&16385u32.to_be_bytes());
        ins.push(b'N');
        tuple(&mut ins, &[Some("o1"), Some("1.50"), Some("7"), Some("t")]);
        let Message::Insert { rel: id, new } = decode(&ins).unwrap() else { panic!("insert") };
        assert_eq!(id, 16385);
        let row = json_row(&rel, &new, None);
        assert_eq!(
            Value::Object(row),
            serde_json::json!({"id": "o1", "qty": "1.50", "n": 7, "flag": true}),
            "numeric stays an exact string, integers are numbers"
        );

        let mut upd = vec![b'U'];
        upd.extend_from_slice(&16385u32.to_be_bytes());
        upd.push(b'O');
        tuple(&mut upd, &[Some("o1"), Some("1.50"), None, Some("f")]);
        upd.push(b'N');
        tuple(&mut upd, &[Some("o1"), Some("2"), None, Some("f")]);
        let Message::Update { old: Some(old), new, .. } = decode(&upd).unwrap() else { panic!("update") };
        assert_eq!(json_row(&rel, &old, None)["qty"], "1.50");
        assert_eq!(json_row(&rel, &new, None)["n"], Value::Null);
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let full = relation();
        for cut in 0..full.len() {
            assert!(decode(&full[..cut]).is_err(), "cut at {cut}");
        }
    }
}
