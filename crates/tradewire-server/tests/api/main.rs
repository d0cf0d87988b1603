//! Integration tests: a real server on a real port, a real database (SQLite, or PostgreSQL
//! with either capture: see `backend`), real clients.
//! All in one test binary (one compile, shared helpers).

mod backend;
mod helpers;

mod auth;
mod bad_input;
mod bulk;
mod client;
mod faults;
mod hardening;
mod isolation;
mod market;
mod ops;
mod orders;
mod origins;
mod polling;
mod resume;
mod shutdown;
mod simulator;
mod slow_consumer;
mod snapshot_race;
mod sse;
mod truncate;
mod writers;
