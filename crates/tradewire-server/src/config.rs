//! Typed, layered configuration: defaults → file → `TRADEWIRE_*` environment → flags.
//! Unknown keys are an error, never silently ignored. Nothing here is global: the value is
//! built once and passed in.
//!
//! Only `main` and the application assembly (`app`) read a [`Config`]: every other part gets
//! its own settings value from it (`db_settings`, `capture_settings`, `gateway_settings`,
//! …), whose type that part defines.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use tradewire_hub::QueueLimits;
use tradewire_protocol::Limits;

use crate::api::ApiSettings;
use crate::api::throttle::ThrottleLimits;
use crate::capture::{CaptureMode, CaptureSettings, PumpSettings};
use crate::db::{DbSettings, TableSpec};
use crate::gateway::GatewaySettings;
use crate::gateway::admission::AdmissionLimits;
use crate::gateway::origin::AllowedOrigins;
use crate::sim::SimSettings;
use crate::telemetry::LogFormat;

/// Everything the server can be told.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Directory of the embedded database (`tradewire.db`) and the generated JWT secret.
    pub data_dir: PathBuf,
    /// HS256 secret for tokens. When absent, one is generated and kept in `data_dir`.
    pub jwt_secret: Option<SecretString>,
    /// Lifetime of tokens minted by login, in seconds.
    pub token_ttl_secs: u64,
    /// How long changes stay replayable, in seconds.
    pub retention_secs: u64,
    /// How often the log is pruned past retention, in seconds (every 100 ms while a round
    /// finds it behind).
    pub prune_interval_secs: u64,
    /// Heartbeat interval of WebSocket and SSE streams.
    pub heartbeat_ms: u64,
    /// How long a WebSocket may take to send its `auth` frame.
    pub auth_timeout_ms: u64,
    /// Largest accepted client frame.
    pub max_frame_bytes: usize,
    /// Subscriptions per connection.
    pub max_subscriptions: usize,
    /// Client frames per second per connection (bursts of twice that are allowed).
    pub max_messages_per_second: u32,
    /// WebSocket and SSE connections of one user (0: no cap). Over it: HTTP 429 (or close
    /// 4029 for a WebSocket that authenticates with its first frame).
    pub max_connections_per_user: usize,
    /// WebSocket and SSE connections from one source address (0: no cap; set 0 behind a
    /// load balancer that does not pass client addresses through).
    pub max_connections_per_address: usize,
    /// SSE streams in all (0: no cap).
    pub max_sse_streams: usize,
    /// WebSockets that have not sent their `auth` frame yet (0: no cap).
    pub max_unauthenticated: usize,
    /// Browser pages (`https://host[:port]` origins) that may open a WebSocket or an SSE
    /// stream; a list, or one comma-separated string (`TRADEWIRE_ALLOWED_ORIGINS`). Empty:
    /// the server's own origin (the request's `Host`) and loopback pages; `*`: any page.
    /// Other pages get HTTP 403; clients that send no `Origin` (bots, curl) always pass.
    pub allowed_origins: AllowedOrigins,
    /// Failed logins of one user name per minute before logins of that name get 429.
    pub login_failures_per_user: u32,
    /// Login attempts from one address per minute before that address gets 429.
    pub login_attempts_per_address: u32,
    /// Bound of each session's outbound queue, in messages.
    pub queue_max_messages: usize,
    /// Bound of each session's outbound queue, in bytes.
    pub queue_max_bytes: usize,
    /// Most rows per topic in a snapshot (newest kept).
    pub snapshot_max_rows: usize,
    /// How often the pump looks for commits made by other processes.
    pub poll_interval_ms: u64,
    /// How long shutdown waits for sessions to close before giving up on them.
    pub shutdown_timeout_ms: u64,
    /// Demo mode: demo users (their passwords shown on the login page), portfolios, bots
    /// and the `/v1/testing/*` endpoints. Unset: on when listening on a loopback address
    /// only; on any other address it needs `demo = true` (`--demo`). Outside demo mode the
    /// demo users cannot log in.
    pub demo: Option<bool>,
    /// Enable `/v1/testing/*` endpoints (always on in demo mode).
    pub testing_endpoints: bool,
    /// Run the paper-trading simulator (market data, order matching, bots).
    pub simulator: bool,
    /// The simulator's seed: the same seed and commands give the same change log.
    pub sim_seed: u64,
    /// Simulator steps (market ticks per symbol) per second.
    pub sim_ticks_per_second: u32,
    /// Connections in the database pool.
    pub db_pool_size: u32,
    /// `postgres://user@host:port/db` to run on PostgreSQL; absent: the embedded SQLite
    /// database in `data_dir`.
    pub database: Option<String>,
    /// How changes are captured on PostgreSQL: `logical` (logical replication, the default)
    /// or `outbox` (triggers and an outbox table, where replication is not allowed).
    pub capture: CaptureMode,
    /// Replication slot and publication names (logical capture).
    pub slot: String,
    pub publication: String,
    /// Bound on the WAL the slot may hold back, in bytes; crossing it is logged and shown
    /// in `/metrics`.
    pub max_slot_lag_bytes: u64,
    /// Operator tables captured besides the built-in trading schema.
    pub tables: Vec<TableSpec>,
    pub log_format: LogFormat,
    /// `tracing` filter directive, e.g. `info,tradewire_server=debug`.
    pub log: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            jwt_secret: None,
            token_ttl_secs: 3600,
            retention_secs: 24 * 3600,
            prune_interval_secs: 60,
            heartbeat_ms: 15_000,
            auth_timeout_ms: 10_000,
            max_frame_bytes: 64 * 1024,
            max_subscriptions: 64,
            max_messages_per_second: 50,
            max_connections_per_user: 64,
            max_connections_per_address: 1024,
            max_sse_streams: 10_000,
            max_unauthenticated: 1024,
            allowed_origins: AllowedOrigins::Default,
            login_failures_per_user: 10,
            login_attempts_per_address: 30,
            queue_max_messages: 4096,
            queue_max_bytes: 4 << 20,
            snapshot_max_rows: 1000,
            poll_interval_ms: 5,
            shutdown_timeout_ms: 10_000,
            demo: None,
            testing_endpoints: false,
            simulator: true,
            sim_seed: 42,
            sim_ticks_per_second: 4,
            db_pool_size: 8,
            database: None,
            capture: CaptureMode::Logical,
            slot: "tradewire".into(),
            publication: "tradewire".into(),
            max_slot_lag_bytes: 256 << 20,
            tables: Vec::new(),
            log_format: LogFormat::Pretty,
            log: "info".into(),
        }
    }
}

/// Flag values that override the other layers when given.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub demo: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub simulator: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture: Option<CaptureMode>,
}

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(#[from] Box<figment::Error>);

impl Config {
    /// Layer the sources. `file` is read when given (it must exist then), else
    /// `tradewire.toml` in the working directory when present.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut fig = Figment::new();
        match file {
            Some(path) => fig = fig.merge(Toml::file_exact(path)),
            None => fig = fig.merge(Toml::file("tradewire.toml")),
        }
        // `TRADEWIRE_TOKEN` belongs to `tradewire tail` and `TRADEWIRE_BIN` to the browser
        // tests (the binary they start), not to the server's configuration.
        fig.merge(Env::prefixed("TRADEWIRE_").ignore(&["token", "bin"]))
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(|e| ConfigError(Box::new(e)))
    }

    /// Is demo mode on (see [`Config::demo`])?
    pub fn demo_mode(&self) -> bool {
        self.demo.unwrap_or_else(|| self.listen.ip().is_loopback())
    }

    pub fn queue_limits(&self) -> QueueLimits {
        QueueLimits { max_messages: self.queue_max_messages, max_bytes: self.queue_max_bytes }
    }

    pub fn capture_settings(&self) -> CaptureSettings {
        CaptureSettings {
            mode: self.capture,
            slot: self.slot.clone(),
            publication: self.publication.clone(),
            max_slot_lag_bytes: self.max_slot_lag_bytes,
            pump: PumpSettings {
                poll_interval: Duration::from_millis(self.poll_interval_ms.max(1)),
                retention: Duration::from_secs(self.retention_secs),
                prune_every: Duration::from_secs(self.prune_interval_secs.max(1)),
                batch: 1000,
            },
        }
    }

    pub fn sim_settings(&self) -> SimSettings {
        SimSettings { seed: self.sim_seed, ticks_per_second: self.sim_ticks_per_second.clamp(1, 100) }
    }

    pub fn db_settings(&self) -> DbSettings {
        DbSettings {
            data_dir: self.data_dir.clone(),
            database: self.database.clone().filter(|d| !d.is_empty()),
            pool_size: self.db_pool_size,
            tables: self.tables.clone(),
        }
    }

    pub fn gateway_settings(&self) -> GatewaySettings {
        GatewaySettings {
            heartbeat: Duration::from_millis(self.heartbeat_ms.max(100)),
            auth_timeout: Duration::from_millis(self.auth_timeout_ms),
            limits: Limits {
                max_frame_bytes: self.max_frame_bytes,
                max_subscriptions: self.max_subscriptions,
                max_messages_per_second: self.max_messages_per_second,
            },
            snapshot_max_rows: self.snapshot_max_rows,
            admission: AdmissionLimits {
                per_user: self.max_connections_per_user,
                per_address: self.max_connections_per_address,
                sse_streams: self.max_sse_streams,
                unauthenticated: self.max_unauthenticated,
            },
            origins: self.allowed_origins.clone(),
        }
    }

    pub fn api_settings(&self) -> ApiSettings {
        ApiSettings {
            testing_endpoints: self.testing_endpoints || self.demo_mode(),
            demo: self.demo_mode(),
            login: ThrottleLimits {
                failures_per_user: self.login_failures_per_user.max(1),
                attempts_per_address: self.login_attempts_per_address.max(1),
                window: Duration::from_secs(60),
                max_entries: 65_536,
            },
        }
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail closure returns figment::Error
    fn layers_override_in_order_and_unknown_keys_fail() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("tradewire.toml", "heartbeat_ms = 1000\nmax_subscriptions = 8\n")?;
            jail.set_env("TRADEWIRE_HEARTBEAT_MS", "2000");
            let overrides = Overrides { demo: Some(false), ..Overrides::default() };
            let c = Config::load(None, &overrides).map_err(|e| e.to_string())?;
            assert_eq!(c.max_subscriptions, 8, "file over default");
            assert_eq!(c.heartbeat_ms, 2000, "env over file");
            assert_eq!(c.demo, Some(false), "flag over everything");
            assert_eq!(c.retention_secs, 86_400, "default kept");

            jail.set_env("TRADEWIRE_TOKEN", "a token for `tradewire tail`");
            assert!(Config::load(None, &Overrides::default()).is_ok(), "TRADEWIRE_TOKEN is not a config key");

            // A cap that is not a count is refused by name, not read as "no cap".
            jail.set_env("TRADEWIRE_MAX_CONNECTIONS_PER_USER", "-1");
            let err = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(err.to_string().to_lowercase().contains("max_connections_per_user"), "{err}");
            jail.set_env("TRADEWIRE_MAX_CONNECTIONS_PER_USER", "64");

            // Origins: a comma-separated list from the environment; a malformed one is
            // refused by name.
            jail.set_env("TRADEWIRE_ALLOWED_ORIGINS", "https://app.example, http://localhost:3000");
            let c = Config::load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(
                c.allowed_origins,
                "https://app.example,http://localhost:3000".parse::<AllowedOrigins>().unwrap()
            );
            jail.set_env("TRADEWIRE_ALLOWED_ORIGINS", "*");
            let c = Config::load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(c.allowed_origins, AllowedOrigins::Any);
            jail.set_env("TRADEWIRE_ALLOWED_ORIGINS", "https://app.example/dashboard");
            let err = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(err.to_string().to_lowercase().contains("allowed_origins"), "{err}");
            assert!(err.to_string().contains("https://app.example/dashboard"), "{err}");
            jail.set_env("TRADEWIRE_ALLOWED_ORIGINS", "");

            jail.set_env("TRADEWIRE_HEARTBEAT_MSS", "1");
            let err = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("heartbeat_mss"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn allowed_origins_in_a_file_is_a_list() {
        let file = r#"allowed_origins = ["https://app.example", "HTTP://LOCALHOST:3000"]"#;
        let c: Config = Figment::from(Toml::string(file)).extract().unwrap();
        assert_eq!(c.allowed_origins, "https://app.example,http://localhost:3000".parse().unwrap());
    }
}
