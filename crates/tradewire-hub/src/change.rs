//! One committed row change, encoded once and shared by every recipient.

use std::sync::Arc;

use bytes::Bytes;
use tradewire_protocol::{ChangeOp, EventParts, Position, Row, encode_event_body, insert_subscription_id};

/// A committed change of one user's row, with its place in that user's stream.
#[derive(Debug)]
pub struct Change {
    pub user_id: Arc<str>,
    pub epoch: Arc<str>,
    pub seq: u64,
    pub topic: Arc<str>,
    pub op: ChangeOp,
    /// Canonical domain events, main one first.
    pub events: Vec<&'static str>,
    pub commit_ts: i64,
    pub row: Option<Row>,
    pub old: Option<Row>,
    /// Why the change could not be read in full (see [`Change::with_error`]).
    pub error: Option<Box<str>>,
    /// The event frame without a subscription id (SSE and polling form), encoded once.
    body: Bytes,
}

impl Change {
    #[allow(clippy::too_many_arguments)] // a plain constructor of a plain record
    pub fn new(
        user_id: Arc<str>,
        epoch: Arc<str>,
        seq: u64,
        topic: Arc<str>,
        op: ChangeOp,
        events: Vec<&'static str>,
        commit_ts: i64,
        row: Option<Row>,
        old: Option<Row>,
    ) -> Self {
        let mut change = Self {
            user_id,
            epoch,
            seq,
            topic,
            op,
            events,
            commit_ts,
            row,
            old,
            error: None,
            body: Bytes::new(),
        };
        change.encode();
        change
    }

    /// The same change, marked as read only in part: its frame carries `error` (the row
    /// that could not be read is left out), so it keeps its place in the stream.
    pub fn with_error(mut self, error: impl Into<Box<str>>) -> Self {
        self.error = Some(error.into());
        self.encode();
        self
    }

    fn encode(&mut self) {
        let body = encode_event_body(&EventParts {
            seq: self.seq,
            epoch: &self.epoch,
            topic: &self.topic,
            change: self.op,
            events: &self.events,
            commit_ts: self.commit_ts,
            row: self.row.as_ref(),
            old: self.old.as_ref(),
            error: self.error.as_deref(),
        });
        self.body = Bytes::from(body);
    }

    /// The encoded event without a subscription id, shared (a cheap clone of `Bytes`).
    pub fn body(&self) -> Bytes {
        self.body.clone()
    }

    /// The WebSocket frame for subscription `id`: the shared body with the id spliced in.
    /// This copies bytes; it does not re-encode the row.
    pub fn ws_frame(&self, id: &str) -> Bytes {
        Bytes::from(insert_subscription_id(&self.body, id))
    }

    /// What this change costs in a queue: its encoded size.
    pub fn weight(&self) -> usize {
        self.body.len()
    }

    pub fn position(&self) -> Position {
        Position::new(self.epoch.to_string(), self.seq)
    }

    /// The row a filter is checked against: the new row, or the old one on delete.
    pub fn rows(&self) -> impl Iterator<Item = &Row> {
        self.row.iter().chain(self.old.iter())
    }
}
