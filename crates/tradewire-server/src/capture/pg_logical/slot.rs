//! The replication slot: the replication connection's settings, and a watch on how much
//! WAL the slot holds back.

use std::time::Duration;

use pgwire_replication::{Lsn, ReplicationConfig};

use crate::db::Db;
use crate::sql_params;

/// The replication connection settings, from the database URL.
pub fn replication_config(
    pg: &postgres::Config,
    tls: &crate::db::PgTls,
    slot: &str,
    publication: &str,
    start: u64,
) -> ReplicationConfig {
    let user = pg.get_user().unwrap_or("postgres").to_owned();
    let password = pg.get_password().map(|p| String::from_utf8_lossy(p).into_owned()).unwrap_or_default();
    let dbname = pg.get_dbname().unwrap_or(&user).to_owned();
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    let config = match pg.get_hosts().first() {
        Some(postgres::config::Host::Unix(dir)) => ReplicationConfig::unix(
            dir.to_string_lossy().into_owned(),
            port,
            user,
            password,
            dbname,
            slot,
            publication,
        ),
        Some(postgres::config::Host::Tcp(host)) => {
            ReplicationConfig::new(host.clone(), user, password, dbname, slot, publication).with_port(port)
        }
        None => {
            ReplicationConfig::new("localhost", user, password, dbname, slot, publication).with_port(port)
        }
    };
    config
        .with_start_lsn(Lsn::from_u64(start))
        .with_ack_lsn(Lsn::from_u64(start))
        .with_status_interval(Duration::from_secs(1))
        .with_wakeup_interval(Duration::from_secs(1))
        .with_application_name("tradewire")
        .with_tls(tls.replication())
}

/// Every few seconds: how far the slot lags behind the server's WAL and how much WAL it
/// holds back, as metrics, with a warning when the configured bound is crossed.
pub async fn watch_slot(db: Db, slot: String, bound: u64) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut warned = false;
    loop {
        tick.tick().await;
        let s = slot.clone();
        let read = db
            .read(move |c| {
                c.query_opt(
                    "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint,
                            (pg_current_wal_lsn() - restart_lsn)::bigint, active
                     FROM pg_replication_slots WHERE slot_name = ?1",
                    sql_params![s],
                )
            })
            .await;
        match read {
            Ok(Some(r)) => {
                let (lag, retained) = (r[0].int(), r[1].int());
                metrics::gauge!("tradewire_slot_lag_bytes").set(lag as f64);
                metrics::gauge!("tradewire_slot_retained_wal_bytes").set(retained as f64);
                if retained.max(lag) as u64 > bound && !warned {
                    warned = true;
                    tracing::warn!(
                        slot,
                        lag,
                        retained,
                        bound,
                        "the replication slot holds back more WAL than allowed (max_slot_lag_bytes): \
                         is the server keeping up? If Tradewire is gone for good, drop the slot"
                    );
                } else if retained.max(lag) as u64 <= bound {
                    warned = false;
                }
            }
            Ok(None) => tracing::warn!(slot, "the replication slot is missing"),
            Err(e) => tracing::debug!(error = %e, "reading slot lag failed"),
        }
    }
}
