//! Integration tests of the simulator through its public API only. One test binary.

mod mirror;

mod coverage;
mod determinism;
mod properties;
mod scale;
mod scenarios;
mod schema;

pub use mirror::{Mirror, d, demo_bots, demo_portfolios, small_config};
