//! Tradewire server: turns committed changes of a trading database into live, per-user,
//! gap-free streams for dashboards and bots.
//!
//! One write, end to end, through these modules in order:
//! `api` (or any other writer) → `db` (the transaction) → `capture` (triggers or the WAL
//! number the change into the log; the pump publishes it) → the hub crate (per-user
//! fan-out) → `gateway` (`start`: snapshot, replay or now; `ws`, `sse`, `poll`: encode once,
//! send) → the client. `changefeed` reads the log (replay, snapshots) and derives domain
//! events; `sim` drives the paper-trading simulator, one more writer and the market-data
//! source (`market_source`).
//!
//! Around them: `app` assembles everything and owns start-up and shutdown (with `config`,
//! the only readers of the configuration); `state` holds the shared services; `http` is
//! what every HTTP edge shares; `errors` maps every error to its wire form; `credentials`
//! are tokens and passwords; `clock`, `telemetry` and `web` (the embedded dashboard).
//! No module imports one that imports it back (checked by `layout_tests`).

pub mod api;
pub mod app;
pub mod capture;
pub mod changefeed;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod db;
pub mod errors;
pub mod gateway;
pub mod http;
pub mod market_source;
pub mod private_files;
pub mod sim;
pub mod state;
pub mod supervisor;
pub mod system;
pub mod telemetry;
pub mod web;

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod layout_tests;

pub use app::{Server, run};
pub use config::Config;
pub use state::AppState;
