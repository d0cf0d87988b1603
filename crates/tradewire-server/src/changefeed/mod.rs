//! The changefeed: the ordered, durable log of committed changes, and the pump that moves
//! new changes from it into the hub.
//!
//! `log` reads the change log (replay, snapshots, the pump's cursor); `pump` publishes;
//! `events` derives domain events. Capture itself (the triggers that write the log) is in
//! `db::capture`. Nothing here knows about sockets.

pub mod events;
pub mod log;
pub mod logical;
pub mod outbox;
pub mod pgoutput;
pub mod pump;

pub use log::{ChangeLog, Resync, SnapshotRows};
