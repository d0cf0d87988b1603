//! Tradewire server: turns committed changes of a trading database into live, per-user,
//! gap-free streams for dashboards and bots.
//!
//! One write, end to end, through these modules in order:
//! `api` (or any other writer) → `db::capture` (triggers write the change log in the same
//! transaction) → `changefeed::pump` (reads the log in commit order) → the hub crate
//! (per-user fan-out) → `gateway::{ws, sse, poll}` (encode once, send) → the client.
//! `sim` drives the paper-trading simulator, one more writer (and the market-data source).
//! `app` wires them together and owns start-up and shutdown; `config` is the typed
//! configuration; `telemetry` sets up logs and metrics.

pub mod api;
pub mod app;
pub mod auth;
pub mod changefeed;
pub mod config;
pub mod db;
pub mod error;
pub mod gateway;
pub mod market;
pub mod sim;
pub mod telemetry;
pub mod web;

pub use app::{AppState, Server, run};
pub use config::Config;
