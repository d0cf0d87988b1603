//! Capture: how a committed write becomes a numbered change, per backend, and the one pump
//! loop that moves those changes into the hub.
//!
//! Each backend has its own folder entry, owning its set-up in the database and its reader:
//!
//! - [`sqlite`]: triggers append to the change log inside the writer's transaction; the
//!   reader follows the log by id (SQLite has one writer, so id order is commit order);
//! - [`pg_outbox`]: PL/pgSQL triggers do the same on PostgreSQL; the reader follows the log
//!   behind a transaction-id fence and releases each user's changes in `seq` order;
//! - [`pg_logical`]: a publication and a replication slot; the reader decodes the WAL,
//!   numbers each committed transaction's changes, and appends them to the log itself.
//!
//! All three number changes with the same per-user counter ([`seq`]), and every reader is a
//! [`pump::Source`]: the loop in [`pump`] owns what they share (polling cadence, retry with
//! backoff, pruning, metrics, draining at shutdown). [`Capture::pump`] is the one place that
//! decides which reader runs; the application calls it once.
//!
//! Capture writes the log and publishes to the hub; it never reads sessions or HTTP.

pub mod pg_logical;
pub mod pg_outbox;
pub mod pump;
pub mod seq;
pub mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tradewire_hub::Hub;

use crate::db::{Db, DbError, catalog};

pub use pump::{PumpSettings, PumpStatus};

/// How changes are captured on PostgreSQL (SQLite always captures with triggers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CaptureMode {
    /// Logical replication from a slot (the default).
    #[default]
    Logical,
    /// Triggers into the change log, where replication is not allowed.
    Outbox,
}

/// What capture is told by the configuration.
#[derive(Debug, Clone)]
pub struct CaptureSettings {
    pub mode: CaptureMode,
    /// Replication slot and publication names (logical capture).
    pub slot: String,
    pub publication: String,
    /// Bound on the WAL the slot may hold back; crossing it is logged and shown in metrics.
    pub max_slot_lag_bytes: u64,
    pub pump: PumpSettings,
}

/// Errors of capture: setting it up, and reading.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{name:?} is not a plain lower-case identifier (slot and publication names)")]
    BadName { name: String },
    #[error(
        "wal_level is '{found}', logical capture needs 'logical'. Fix: ALTER SYSTEM SET \
         wal_level = logical; then restart PostgreSQL. Or run with --capture outbox."
    )]
    WalLevel { found: String },
    #[error(
        "role '{role}' lacks the REPLICATION attribute. Fix: ALTER ROLE \"{role}\" REPLICATION; \
         (as a superuser). Or run with --capture outbox."
    )]
    NoReplicationRole { role: String },
    #[error(
        "table {table}: deletes and owner changes must carry the old row (its owner column), \
         which logical replication sends only with REPLICA IDENTITY FULL. Fix: \
         ALTER TABLE \"{table}\" REPLICA IDENTITY FULL;"
    )]
    ReplicaIdentity { table: String },
    #[error("logical replication: {0}")]
    Replication(#[from] pgwire_replication::PgWireError),
    #[error("the replication stream ended")]
    StreamEnded,
    #[error(transparent)]
    Pgoutput(#[from] pg_logical::pgoutput::DecodeError),
    #[error("spilling a large transaction to a temporary file: {0}")]
    Spill(#[from] std::io::Error),
    #[error("a row of relation {0} arrived before its description")]
    UnknownRelation(u32),
    #[error("read before connecting")]
    NotConnected,
    #[error(
        "sslmode=verify-full with logical capture needs the database host as a name that its \
         certificate carries, not an IP address (or use sslmode=verify-ca)"
    )]
    VerifyFullNeedsHostName,
}

pub type Result<T, E = CaptureError> = std::result::Result<T, E>;

/// The capture set up in the open database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capture {
    /// SQLite triggers; the pump follows the log.
    Sqlite,
    /// PostgreSQL triggers into the log; the pump follows it behind a fence.
    Outbox,
    /// PostgreSQL logical replication from `slot` over `publication`.
    Logical { slot: String, publication: String, max_slot_lag_bytes: u64 },
}

impl Capture {
    /// Install capture in `db` (triggers, or publication and slot), checking what the backend
    /// needs and naming the fix for anything missing.
    pub async fn install(db: &Db, settings: &CaptureSettings) -> Result<Self> {
        for name in [&settings.slot, &settings.publication] {
            if !catalog::is_identifier(name) {
                return Err(CaptureError::BadName { name: name.clone() });
            }
        }
        let (db, settings) = (db.clone(), settings.clone());
        tokio::task::spawn_blocking(move || {
            if db.sqlite_path().is_some() {
                sqlite::install(&mut db.sqlite_connection()?, db.catalog())?;
                return Ok(Capture::Sqlite);
            }
            let mut client = db.pg_client()?;
            match settings.mode {
                CaptureMode::Outbox => {
                    pg_outbox::install(&mut *client, db.catalog(), &settings.slot)?;
                    Ok(Capture::Outbox)
                }
                CaptureMode::Logical => {
                    // The replication client compares a verify-full certificate with a
                    // host name only; say so now rather than retry for ever.
                    let ip_host = db.pg_config().and_then(|c| c.get_hosts().first()).is_some_and(|h| {
                        matches!(h, postgres::config::Host::Tcp(name) if name.parse::<std::net::IpAddr>().is_ok())
                    });
                    if ip_host && db.pg_tls().is_some_and(|t| t.mode == crate::db::tls::SslMode::VerifyFull) {
                        return Err(CaptureError::VerifyFullNeedsHostName);
                    }
                    pg_logical::install(&mut *client, db.catalog(), &settings.slot, &settings.publication)?;
                    Ok(Capture::Logical {
                        slot: settings.slot,
                        publication: settings.publication,
                        max_slot_lag_bytes: settings.max_slot_lag_bytes,
                    })
                }
            }
        })
        .await
        .map_err(|_| DbError::Join)?
    }

    /// The pump of this capture, its starting point fixed now.
    ///
    /// Call this before the server accepts its first connection: a session registers with
    /// the hub and then reads the database, so every change committed after that read must
    /// come from the pump. A starting point taken later (when the pump's task first runs, or
    /// after its first connection failed) would leave the changes committed in between to
    /// no one.
    pub async fn pump(&self, db: &Db) -> Result<Pump> {
        Ok(match self {
            Capture::Sqlite => Pump::Sqlite(sqlite::Reader::start(db).await?),
            Capture::Outbox => Pump::Outbox(pg_outbox::Reader::start(db).await?),
            Capture::Logical { slot, publication, max_slot_lag_bytes } => {
                Pump::Logical(pg_logical::Reader::new(db, slot, publication, *max_slot_lag_bytes))
            }
        })
    }
}

/// A capture reader with its starting point, ready to run.
pub enum Pump {
    Sqlite(sqlite::Reader),
    Outbox(pg_outbox::Reader),
    Logical(pg_logical::Reader),
}

impl Pump {
    /// Run until `stop` is cancelled; then publish what is already committed and return
    /// (the "let the pump finish its batch" step of shutdown).
    pub async fn run(
        self,
        db: Db,
        hub: Hub,
        settings: PumpSettings,
        stop: CancellationToken,
        status: Arc<PumpStatus>,
    ) {
        match self {
            Pump::Sqlite(r) => pump::run(r, &db, &hub, &settings, &stop, &status).await,
            Pump::Outbox(r) => pump::run(r, &db, &hub, &settings, &stop, &status).await,
            Pump::Logical(r) => pump::run(r, &db, &hub, &settings, &stop, &status).await,
        }
    }
}

/// The poll interval while changes are flowing (or some are held back).
pub(crate) const BUSY_POLL: Duration = Duration::from_millis(1);
/// How long after the last change the pump keeps polling at [`BUSY_POLL`].
pub(crate) const BUSY_FOR: Duration = Duration::from_secs(1);
