//! Client and server frames of `/v1/ws`. SSE and polling carry the same event objects.

use std::collections::BTreeMap;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{ErrorCode, Position};

/// A row as it travels on the wire: column name to JSON value (decimals are strings).
pub type Row = Map<String, Value>;

/// Frames a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// Authenticate, or refresh the token of a live connection.
    Auth { token: String },
    /// Start a subscription.
    Subscribe {
        id: String,
        topics: Vec<String>,
        #[serde(rename = "where", default, skip_serializing_if = "Option::is_none")]
        filter: Option<Row>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<From>,
    },
    /// Stop a subscription.
    Unsubscribe { id: String },
    /// Ask for a `pong` carrying the same `ts`.
    Ping {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ts: Option<Value>,
    },
}

impl ClientFrame {
    /// The `op` names a client may send.
    pub const OPS: [&'static str; 4] = ["auth", "subscribe", "unsubscribe", "ping"];
}

/// Where a subscription starts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum From {
    /// Current rows, then every change after the position they correspond to.
    #[default]
    Snapshot,
    /// Live changes only.
    Now,
    /// Every change after this position, then live.
    Position(Position),
}

impl Serialize for From {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            From::Snapshot => s.serialize_str("snapshot"),
            From::Now => s.serialize_str("now"),
            From::Position(p) => p.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for From {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Word(String),
            Position(Position),
        }
        match Repr::deserialize(d)? {
            Repr::Word(w) if w == "snapshot" => Ok(From::Snapshot),
            Repr::Word(w) if w == "now" => Ok(From::Now),
            // The text form `<epoch>:<seq>` is accepted too, as in URLs.
            Repr::Word(w) => w
                .parse()
                .map(From::Position)
                .map_err(|_| de::Error::custom("`from` is \"snapshot\", \"now\" or {\"epoch\",\"seq\"}")),
            Repr::Position(p) => Ok(From::Position(p)),
        }
    }
}

/// Limits the server announces in `welcome`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub max_frame_bytes: usize,
    pub max_subscriptions: usize,
    pub max_messages_per_second: u32,
}

/// The kind of row change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeOp {
    Insert,
    Update,
    Delete,
    /// The whole table was emptied (`TRUNCATE`). Kept in the log at its place in each
    /// user's stream, but never sent as an event: a subscription covering the table gets
    /// `resync_required` with reason `truncated` instead, since its rows are all gone.
    Truncate,
}

impl ChangeOp {
    pub const fn as_str(self) -> &'static str {
        match self {
            ChangeOp::Insert => "insert",
            ChangeOp::Update => "update",
            ChangeOp::Delete => "delete",
            ChangeOp::Truncate => "truncate",
        }
    }
}

/// One committed row change of one user's stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventFrame {
    /// The subscription this event answers. Present on WebSocket; absent in SSE and
    /// polling, which have no subscription ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub seq: u64,
    pub epoch: String,
    pub topic: String,
    pub change: ChangeOp,
    pub events: Vec<String>,
    pub commit_ts: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row: Option<Row>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<Row>,
    /// Present when the server could not read the change in full: what it could read is
    /// above (`row`/`old` may be missing), in its place in the stream. Take a snapshot to
    /// get the row's current state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl EventFrame {
    pub fn position(&self) -> Position {
        Position::new(self.epoch.clone(), self.seq)
    }
}

/// Frames the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ServerFrame {
    Welcome {
        session: String,
        user_id: String,
        position: Position,
        heartbeat_ms: u64,
        limits: Limits,
    },
    Subscribed {
        id: String,
        topics: Vec<String>,
    },
    Unsubscribed {
        id: String,
    },
    Snapshot {
        id: String,
        position: Position,
        rows: BTreeMap<String, Vec<Row>>,
        /// Topics whose rows were cut at the server's snapshot limit (newest rows kept).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        truncated: Vec<String>,
    },
    ResyncRequired {
        id: String,
        reason: String,
    },
    Event(EventFrame),
    Market {
        topic: String,
        ts: i64,
        data: Value,
    },
    Heartbeat {
        position: Position,
        ts: i64,
    },
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ts: Option<Value>,
    },
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        code: ErrorCode,
        message: String,
    },
}

impl ServerFrame {
    pub fn error(id: Option<&str>, code: ErrorCode, message: impl Into<String>) -> Self {
        ServerFrame::Error { id: id.map(str::to_owned), code, message: message.into() }
    }

    /// Compact JSON text of this frame.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server frames always serialize")
    }
}

/// Every encoded event begins with these bytes; the subscription id goes right after them.
pub const EVENT_FRAME_PREFIX: &[u8] = br#"{"op":"event","#;

/// The parts of an event, borrowed, for encoding it once on the server.
#[derive(Debug, Serialize)]
pub struct EventParts<'a, R: Serialize> {
    pub seq: u64,
    pub epoch: &'a str,
    pub topic: &'a str,
    pub change: ChangeOp,
    pub events: &'a [&'a str],
    pub commit_ts: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<&'a R>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<&'a R>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
}

/// Encode an event without a subscription id: the SSE and polling form, and the shared
/// body from which every WebSocket recipient's frame is cut (see [`insert_subscription_id`]).
pub fn encode_event_body<R: Serialize>(parts: &EventParts<'_, R>) -> Vec<u8> {
    #[derive(Serialize)]
    struct Tagged<'a, 'b, R: Serialize> {
        op: &'static str,
        #[serde(flatten)]
        parts: &'b EventParts<'a, R>,
    }
    let mut out = Vec::with_capacity(256);
    serde_json::to_writer(&mut out, &Tagged { op: "event", parts }).expect("events serialize");
    debug_assert!(out.starts_with(EVENT_FRAME_PREFIX));
    out
}

/// The WebSocket frame of an encoded event body for subscription `id`: a copy of the body
/// with `"id":"<id>",` spliced in after the `op`, with no re-encoding of the row.
pub fn insert_subscription_id(body: &[u8], id: &str) -> Vec<u8> {
    debug_assert!(body.starts_with(EVENT_FRAME_PREFIX));
    let (head, tail) = body.split_at(EVENT_FRAME_PREFIX.len());
    let mut out = Vec::with_capacity(body.len() + id.len() + 8);
    out.extend_from_slice(head);
    out.extend_from_slice(b"\"id\":");
    serde_json::to_writer(&mut out, id).expect("strings serialize");
    out.push(b',');
    out.extend_from_slice(tail);
    out
}
