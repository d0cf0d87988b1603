//! The changefeed: the ordered, durable log of committed changes as readers see it, and
//! what a change means.
//!
//! `log` reads the change log (heads, replay, snapshots fenced by position) and prunes it;
//! `events` derives domain events from a row change. Capture, which writes the log and
//! feeds the hub, is in `capture/`. Nothing here knows about sockets.

pub mod events;
pub mod log;

pub use log::{ChangeLog, Resync, SnapshotRows};
