//! Capture by logical replication (PostgreSQL).
//!
//! The server reads the WAL of the captured tables from a permanent slot, decoded by
//! `pgoutput`. Each transaction is buffered until its Commit; per-user `seq` is assigned in
//! WAL order, which is commit order. Committed transactions are then appended to the durable
//! replay log (`tw_changes`), together with the users' heads and the transaction's end LSN,
//! in one transaction of ours; only after that commit are the changes published and the LSN
//! acknowledged to the slot. After a crash at any point, the stream restarts at the last
//! persisted LSN and whatever arrives at or below it is skipped: no change is lost, none is
//! numbered twice.
//!
//! While changes flow, several source transactions are persisted together (everything that
//! has already arrived when one commits), so the log's own commits do not bound throughput.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig, ReplicationEvent};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;
use tradewire_hub::{Change, Hub};
use tradewire_protocol::ChangeOp;

use super::log::make_change;
use super::pgoutput::{self, Datum, Message, Relation};
use super::pump::{PumpSettings, prune_if_due, publish};
use crate::db::sql::{Param, Sql};
use crate::db::{Capture, Db, DbError, Result, TableInfo, now_ms};
use crate::sql_params;

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Most changes persisted in one transaction of ours, when several source transactions
/// are waiting.
const MAX_BATCH: usize = 5_000;
/// The prefix of a logical message that asks for its position to be persisted:
/// `SELECT pg_logical_emit_message(true, 'tradewire.sync', '')` returns an LSN, and once
/// `tw_meta.lsn` has reached it, every change committed before the call is in the log
/// (tests use it to wait for capture; an operator can use it the same way).
pub const SYNC_PREFIX: &str = "tradewire.sync";
/// Rows per INSERT statement (7 parameters each, well under PostgreSQL's 65,535).
const INSERT_CHUNK: usize = 1_000;

/// Run logical capture until `stop`; reconnect (with backoff) after any failure: a
/// PostgreSQL restart, a dropped connection, a failed write of the log.
pub async fn run(db: Db, hub: Hub, settings: PumpSettings, stop: CancellationToken) -> Result<()> {
    let Capture::Logical { slot, publication } = db.capture() else {
        return Err(DbError::Setup("logical capture on a database not set up for it".into()));
    };
    let lag = tokio::spawn(watch_slot(db.clone(), slot.clone(), stop.clone()));
    let mut backoff = Duration::from_millis(100);
    let result = loop {
        let started = Instant::now();
        match stream(&db, &hub, &settings, &slot, &publication, &stop).await {
            Ok(()) => break Ok(()),
            Err(e) => {
                metrics::counter!("tradewire_pump_errors_total").increment(1);
                tracing::warn!(error = %e, retry_in = ?backoff, "logical replication stopped; reconnecting");
            }
        }
        if started.elapsed() > Duration::from_secs(10) {
            backoff = Duration::from_millis(100);
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stop.cancelled() => break Ok(()),
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    };
    lag.abort();
    result
}

/// One change of a committed transaction, numbered and ready to persist and publish.
struct Numbered {
    user: String,
    seq: u64,
    topic: String,
    op: ChangeOp,
    row: Option<Map<String, Value>>,
    old: Option<Map<String, Value>>,
    commit_ts: i64,
}

/// The log writer's state: its own connection and the users' heads as persisted.
struct Log {
    client: crate::db::DropOffRuntime<postgres::Client>,
    heads: HashMap<String, u64>,
}

impl Log {
    fn head(&mut self, user: &str) -> Result<u64> {
        if let Some(h) = self.heads.get(user) {
            return Ok(*h);
        }
        let h = super::ChangeLog::head_sync(&mut *self.client, user)?;
        self.heads.insert(user.to_owned(), h);
        Ok(h)
    }

    /// The last LSN whose transaction is in the log (0 before the first).
    fn persisted_lsn(&mut self) -> Result<u64> {
        Ok(self
            .client
            .text("SELECT value FROM tw_meta WHERE key = 'lsn'", &[])?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// Append `changes`, the new heads and `lsn` in one transaction.
    fn persist(&mut self, changes: &[Numbered], lsn: u64) -> Result<()> {
        let mut tx = self.client.transaction()?;
        for chunk in changes.chunks(INSERT_CHUNK) {
            let mut sql = String::from(
                "INSERT INTO tw_changes(user_id, seq, topic, op, row_json, old_json, commit_ts) VALUES ",
            );
            let mut params = Vec::with_capacity(chunk.len() * 7);
            for (i, c) in chunk.iter().enumerate() {
                let b = i * 7;
                if i > 0 {
                    sql.push(',');
                }
                sql += &format!(
                    "(?{},?{},?{},?{},?{},?{},?{})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6,
                    b + 7
                );
                params.extend([
                    Param::from(c.user.as_str()),
                    Param::from(c.seq),
                    Param::from(c.topic.as_str()),
                    Param::from(op_name(c.op)),
                    Param::from(c.row.as_ref().map(json_text)),
                    Param::from(c.old.as_ref().map(json_text)),
                    Param::from(c.commit_ts),
                ]);
            }
            Sql::execute(&mut tx, &sql, &params)?;
        }
        let mut heads: HashMap<&str, u64> = HashMap::new();
        for c in changes {
            heads.insert(&c.user, c.seq);
        }
        let heads: Vec<(&str, u64)> = heads.into_iter().collect();
        for chunk in heads.chunks(INSERT_CHUNK) {
            let mut sql = String::from("INSERT INTO tw_user_seq(user_id, seq) VALUES ");
            let mut params = Vec::with_capacity(chunk.len() * 2);
            for (i, (user, seq)) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(',');
                }
                sql += &format!("(?{},?{})", i * 2 + 1, i * 2 + 2);
                params.extend([Param::from(*user), Param::from(*seq)]);
            }
            sql += " ON CONFLICT (user_id) DO UPDATE SET seq = excluded.seq";
            Sql::execute(&mut tx, &sql, &params)?;
        }
        Sql::execute(
            &mut tx,
            "INSERT INTO tw_meta(key, value) VALUES ('lsn', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            sql_params![lsn.to_string()],
        )?;
        tx.commit()?;
        Ok(())
    }
}

/// A row as JSON text, without copying it into a `Value` first.
fn json_text(row: &Map<String, Value>) -> String {
    serde_json::to_string(row).expect("a JSON map always serializes")
}

fn op_name(op: ChangeOp) -> &'static str {
    match op {
        ChangeOp::Insert => "insert",
        ChangeOp::Update => "update",
        ChangeOp::Delete => "delete",
    }
}

/// A row change of an open transaction.
struct RowChange {
    rel: u32,
    kind: ChangeOp,
    old: Option<Vec<Datum>>,
    new: Option<Vec<Datum>>,
}

/// The replication connection settings, from the database URL.
fn replication_config(db: &Db, slot: &str, publication: &str, start: u64) -> Result<ReplicationConfig> {
    let pg = db.pg_config().ok_or_else(|| DbError::Setup("not a PostgreSQL database".into()))?;
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
    Ok(config
        .with_start_lsn(Lsn::from_u64(start))
        .with_ack_lsn(Lsn::from_u64(start))
        .with_status_interval(Duration::from_secs(1))
        .with_wakeup_interval(Duration::from_secs(1))
        .with_application_name("tradewire"))
}

/// Run a blocking step of the log writer off the async runtime.
async fn blocking<T: Send + 'static>(
    log: &Arc<Mutex<Log>>,
    f: impl FnOnce(&mut Log) -> Result<T> + Send + 'static,
) -> Result<T> {
    let log = log.clone();
    tokio::task::spawn_blocking(move || f(&mut log.lock().unwrap_or_else(|p| p.into_inner())))
        .await
        .map_err(|_| DbError::Join)?
}

/// One replication session: from the last persisted LSN until `stop` or a failure.
async fn stream(
    db: &Db,
    hub: &Hub,
    settings: &PumpSettings,
    slot: &str,
    publication: &str,
    stop: &CancellationToken,
) -> Result<()> {
    let db2 = db.clone();
    let log = Arc::new(Mutex::new(
        tokio::task::spawn_blocking(move || {
            Ok::<_, DbError>(Log {
                client: crate::db::DropOffRuntime::new(db2.pg_client()?),
                heads: HashMap::new(),
            })
        })
        .await
        .map_err(|_| DbError::Join)??,
    ));
    let mut persisted = blocking(&log, Log::persisted_lsn).await?;
    let config = replication_config(db, slot, publication, persisted)?;
    let mut client =
        ReplicationClient::connect(config).await.map_err(|e| DbError::Replication(e.to_string()))?;
    tracing::info!(slot, lsn = %Lsn::from_u64(persisted), "logical replication streaming");

    let epoch = db.epoch().clone();
    let catalog = db.catalog().clone();
    // Shared with each batch's numbering step; copied only when a Relation message changes
    // it (rarely: at the start and after DDL).
    let mut relations: Arc<HashMap<u32, Relation>> = Arc::default();
    let mut open: Vec<RowChange> = Vec::new();
    let mut commit_ts = 0i64;
    let mut fence = false;
    let mut in_txn = false;
    let mut ready: Vec<(Vec<RowChange>, i64)> = Vec::new();
    let mut ready_rows = 0usize;
    let mut ready_lsn = 0u64;
    let mut last_prune = Instant::now();

    loop {
        // Take what has already arrived without waiting; once nothing is waiting (or the
        // batch is full), write the committed transactions and publish them.
        // (`unconstrained`: tokio's cooperative budget would otherwise report "nothing
        // waiting" after ~128 events, capping every batch at that size.)
        let event = match tokio::task::unconstrained(client.recv()).now_or_never() {
            Some(ev) => Some(ev),
            None if !ready.is_empty() => None,
            None => {
                tokio::select! {
                    ev = client.recv() => Some(ev),
                    () = stop.cancelled() => {
                        let _ = client.shutdown().await;
                        tracing::info!("logical replication stopped");
                        return Ok(());
                    }
                }
            }
        };
        if let Some(ev) = event {
            let ev = ev.map_err(|e| DbError::Replication(e.to_string()))?;
            let Some(ev) = ev else {
                return Err(DbError::Replication("the stream ended".into()));
            };
            match ev {
                ReplicationEvent::Begin { commit_time_micros, .. } => {
                    in_txn = true;
                    open.clear();
                    fence = false;
                    commit_ts = (commit_time_micros + PG_EPOCH_MICROS) / 1000;
                }
                ReplicationEvent::XLogData { data, .. } => {
                    match pgoutput::decode(&data).map_err(|e| DbError::Decode(e.to_string()))? {
                        Message::Relation(rel) => {
                            Arc::make_mut(&mut relations).insert(rel.id, rel);
                        }
                        Message::Insert { rel, new } => {
                            open.push(RowChange { rel, kind: ChangeOp::Insert, old: None, new: Some(new) })
                        }
                        Message::Update { rel, old, new } => {
                            open.push(RowChange { rel, kind: ChangeOp::Update, old, new: Some(new) })
                        }
                        Message::Delete { rel, old } => {
                            open.push(RowChange { rel, kind: ChangeOp::Delete, old: Some(old), new: None })
                        }
                        Message::Truncate { rels } => {
                            let names: Vec<&str> = rels
                                .iter()
                                .filter_map(|r| relations.get(r))
                                .map(|r| r.name.as_str())
                                .collect();
                            tracing::warn!(
                                tables = ?names,
                                "TRUNCATE of a captured table is not captured: clients keep the rows \
                                 until they resubscribe with a snapshot"
                            );
                        }
                        Message::Other(_) => {}
                    }
                }
                ReplicationEvent::Commit { end_lsn, .. } => {
                    in_txn = false;
                    let end = end_lsn.as_u64();
                    let changes = std::mem::take(&mut open);
                    if end <= persisted || end <= ready_lsn {
                        // Already in the log: sent again after a restart.
                        metrics::counter!("tradewire_replication_skipped_total").increment(1);
                        continue;
                    }
                    ready_lsn = end;
                    if !changes.is_empty() || std::mem::take(&mut fence) {
                        // A fence (see `SYNC_PREFIX`) is written like a change, so its
                        // position reaches the log even though it numbers nothing.
                        ready_rows += changes.len();
                        ready.push((changes, commit_ts));
                    }
                    if ready_rows < MAX_BATCH {
                        continue;
                    }
                }
                ReplicationEvent::Message { transactional: true, prefix, .. } if prefix == SYNC_PREFIX => {
                    fence = true;
                }
                ReplicationEvent::KeepAlive { wal_end, .. } if !in_txn && ready.is_empty() => {
                    // Idle: everything sent before `wal_end` is in the log or was not ours
                    // (a transaction still open upstream is sent when it commits, after
                    // this position). Confirming it lets the slot release WAL, and lets a
                    // PostgreSQL shutdown finish without waiting for us.
                    if wal_end.as_u64() > persisted {
                        client.update_applied_lsn(wal_end);
                    }
                    continue;
                }
                _ => continue,
            }
            if ready_rows < MAX_BATCH {
                continue;
            }
        }
        if ready_lsn <= persisted {
            continue;
        }
        // Number, persist, publish, acknowledge.
        let txns = std::mem::take(&mut ready);
        ready_rows = 0;
        let lsn = ready_lsn;
        let rels = relations.clone();
        let catalog = catalog.clone();
        let persist_started = Instant::now();
        let numbered = blocking(&log, move |log| {
            let mut out = Vec::new();
            for (changes, ts) in txns {
                for rc in changes {
                    if let Err(e) = number(log, &rels, &catalog, rc, ts, &mut out) {
                        log.heads.clear();
                        return Err(e);
                    }
                }
            }
            // Heads advance only when the write commits: on failure the next session
            // reloads them from the database.
            let result = log.persist(&out, lsn);
            if result.is_err() {
                log.heads.clear();
            }
            result.map(|()| out)
        })
        .await?;
        persisted = lsn;
        metrics::histogram!("tradewire_log_persist_seconds").record(persist_started.elapsed().as_secs_f64());
        metrics::histogram!("tradewire_log_persist_changes").record(numbered.len() as f64);
        let now = now_ms();
        let n = numbered.len();
        for (i, c) in numbered.into_iter().enumerate() {
            // A large transaction is published in runs of `batch`, letting sessions run in
            // between (as the SQLite pump does between reads), so a session that is
            // replaying drains its queue instead of overflowing it.
            if i > 0 && i % settings.batch == 0 {
                tokio::task::yield_now().await;
            }
            let change: Change = make_change(&epoch, c.user, c.seq, c.topic, c.op, c.commit_ts, c.row, c.old);
            publish(hub, change, now);
        }
        client.update_applied_lsn(Lsn::from_u64(lsn));
        if n > 0 {
            metrics::counter!("tradewire_changes_captured_total").increment(n as u64);
        }
        prune_if_due(db, settings, &mut last_prune).await;
    }
}

/// The owner of a row: its owner column as text (numbers are written out).
fn owner_of(row: &Map<String, Value>, owner: &str) -> Option<String> {
    match row.get(owner)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Turn one row change into numbered changes (none for tables we do not capture; two when
/// the row changed owner: a delete for the old owner, an insert for the new one).
fn number(
    log: &mut Log,
    relations: &HashMap<u32, Relation>,
    catalog: &crate::db::Catalog,
    rc: RowChange,
    commit_ts: i64,
    out: &mut Vec<Numbered>,
) -> Result<()> {
    let rel = relations
        .get(&rc.rel)
        .ok_or_else(|| DbError::Decode(format!("a row of relation {} before its description", rc.rel)))?;
    let Some(table): Option<&TableInfo> = catalog.by_table(&rel.name) else { return Ok(()) };
    let owner_col = &table.spec.owner;
    let old = rc.old.as_deref().map(|t| pgoutput::json_row(rel, t, None));
    let new = rc.new.as_deref().map(|t| pgoutput::json_row(rel, t, old.as_ref()));
    let old_owner = old.as_ref().and_then(|r| owner_of(r, owner_col));
    let new_owner = new.as_ref().and_then(|r| owner_of(r, owner_col));
    let mut push = |user: String, op: ChangeOp, row, old| -> Result<()> {
        let seq = log.head(&user)? + 1;
        log.heads.insert(user.clone(), seq);
        out.push(Numbered { user, seq, topic: table.spec.topic.clone(), op, row, old, commit_ts });
        Ok(())
    };
    match (old, new) {
        (None, Some(new)) => {
            // An insert, or an update whose old row was not sent (it cannot have moved).
            if let Some(user) = new_owner {
                push(user, rc.kind, Some(new), None)?;
            }
        }
        (Some(old), None) => {
            if let Some(user) = old_owner {
                push(user, ChangeOp::Delete, None, Some(old))?;
            }
        }
        (Some(old), Some(new)) if old_owner == new_owner => {
            if let Some(user) = new_owner {
                push(user, ChangeOp::Update, Some(new), Some(old))?;
            }
        }
        (Some(old), Some(new)) => {
            if let Some(user) = old_owner {
                push(user, ChangeOp::Delete, None, Some(old))?;
            }
            if let Some(user) = new_owner {
                push(user, ChangeOp::Insert, Some(new), None)?;
            }
        }
        (None, None) => {}
    }
    Ok(())
}

/// Every few seconds: how far the slot lags behind the server's WAL and how much WAL it
/// holds back, as metrics, with a warning when the configured bound is crossed.
async fn watch_slot(db: Db, slot: String, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut warned = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
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
                let bound = db.max_slot_lag_bytes();
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
