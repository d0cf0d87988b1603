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
//!
//! Memory stays bounded whatever the size of a transaction: past [`spill::SPILL_AFTER`]
//! rows an open transaction goes to a temporary file; it is numbered and written to the log
//! in chunks; and its changes are then published from the log a page at a time (the
//! backlog) rather than from memory, before anything that committed after it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use pgwire_replication::{Lsn, ReplicationClient, ReplicationEvent};
use tradewire_hub::Change;

use self::pgoutput::{Message, Relation};
use self::spill::{SPILL_AFTER, Spill};
use self::writer::{Backlog, LogWriter, RowChange, Txn};
use super::pump::Source;
use super::{CaptureError, Result};
use crate::changefeed::ChangeLog;
use crate::changefeed::log::make_change;
use crate::db::sql::Sql;
use crate::db::{Catalog, Db, DbError};
use crate::sql_params;

pub mod pgoutput;
mod slot;
mod spill;
mod writer;

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Most changes persisted in one transaction of ours, when several source transactions
/// are waiting.
const MAX_BATCH: usize = 5_000;
/// How long a wait lasts without a replication message: the stream pushes, so this only
/// bounds how long the pump goes without its housekeeping (pruning).
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// The prefix of a logical message that asks for its position to be persisted:
/// `SELECT pg_logical_emit_message(true, 'tradewire.sync', '')` returns an LSN, and once
/// `tw_meta.lsn` has reached it, every change committed before the call is in the log
/// (tests use it to wait for capture; an operator can use it the same way).
pub const SYNC_PREFIX: &str = "tradewire.sync";

/// Check what logical capture needs, naming the fix for each thing missing; then create or
/// update the publication and create the slot when absent. Outbox triggers from an
/// earlier run are removed (they would log every change twice).
pub fn install(conn: &mut dyn Sql, catalog: &Catalog, slot: &str, publication: &str) -> Result<()> {
    let wal_level = conn.text("SHOW wal_level", &[])?.unwrap_or_default();
    if wal_level != "logical" {
        return Err(CaptureError::WalLevel { found: wal_level });
    }
    let user = conn.text("SELECT current_user::text", &[])?.unwrap_or_default();
    let may_replicate = conn
        .value("SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user", &[])?
        .is_some_and(|c| c.truthy());
    if !may_replicate {
        return Err(CaptureError::NoReplicationRole { role: user });
    }
    for table in catalog.tables() {
        let t = &table.spec.table;
        let identity = conn
            .text(
                "SELECT relreplident::text FROM pg_class WHERE oid = ?1::text::regclass",
                sql_params![t.as_str()],
            )?
            .unwrap_or_default();
        if identity != "f" {
            return Err(CaptureError::ReplicaIdentity { table: t.clone() });
        }
    }
    let mut sql = String::from("BEGIN;\n");
    for table in catalog.tables() {
        let t = &table.spec.table;
        sql += &format!("DROP TRIGGER IF EXISTS tw_capture ON \"{t}\";\n");
        sql += &format!("DROP TRIGGER IF EXISTS tw_truncate ON \"{t}\";\n");
    }
    // The outbox's counter write-back (see `seq::PG_APPEND`).
    sql += "DO $d$ BEGIN IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'tw_write_back' \
            AND tgrelid = 'tw_user_seq'::regclass) THEN DROP TRIGGER tw_write_back ON tw_user_seq; \
            END IF; END $d$;\n";
    let tables: Vec<String> = catalog.tables().map(|t| format!("\"{}\"", t.spec.table)).collect();
    let exists = conn.value("SELECT 1 FROM pg_publication WHERE pubname = ?1", sql_params![publication])?;
    sql += &match exists {
        Some(_) => format!("ALTER PUBLICATION \"{publication}\" SET TABLE {};\n", tables.join(", ")),
        None => format!("CREATE PUBLICATION \"{publication}\" FOR TABLE {};\n", tables.join(", ")),
    };
    sql += "COMMIT;";
    conn.batch(&sql)?;
    if conn.value("SELECT 1 FROM pg_replication_slots WHERE slot_name = ?1", sql_params![slot])?.is_none() {
        conn.value("SELECT pg_create_logical_replication_slot(?1, 'pgoutput')::text", sql_params![slot])?;
        tracing::info!(slot, publication, "created the logical replication slot");
    }
    Ok(())
}

/// Reads the slot, numbers and persists committed transactions, and hands them to the pump.
/// Its position is the LSN persisted in the log, so it needs nothing kept across
/// reconnects: a new stream starts there.
pub struct Reader {
    db: Db,
    slot: String,
    publication: String,
    /// Watches the slot's lag while the reader lives.
    watcher: tokio::task::JoinHandle<()>,
    stream: Option<Stream>,
    /// Changes in the log not yet published (from a large transaction), per user in
    /// order. Published before anything newer is read; kept across reconnects.
    backlog: VecDeque<Backlog>,
}

/// One replication session and what it has received but not yet persisted.
struct Stream {
    client: ReplicationClient,
    writer: Arc<Mutex<LogWriter>>,
    persisted: u64,
    /// Shared with each batch's numbering step; copied only when a Relation message changes
    /// it (rarely: at the start and after DDL).
    relations: Arc<HashMap<u32, Relation>>,
    /// The transaction being received.
    open: Open,
    commit_ts: i64,
    in_txn: bool,
    /// The open transaction carries a sync message (see [`SYNC_PREFIX`]).
    fence: bool,
    /// Committed transactions waiting to be persisted.
    ready: Vec<Txn>,
    ready_rows: usize,
    ready_lsn: u64,
    /// Persisted, to acknowledge once published.
    unacknowledged: Option<u64>,
}

impl Reader {
    pub fn new(db: &Db, slot: &str, publication: &str, max_slot_lag_bytes: u64) -> Self {
        let watcher = tokio::spawn(slot::watch_slot(db.clone(), slot.to_owned(), max_slot_lag_bytes));
        Self {
            db: db.clone(),
            slot: slot.into(),
            publication: publication.into(),
            watcher,
            stream: None,
            backlog: VecDeque::new(),
        }
    }

    fn stream(&mut self) -> Result<&mut Stream> {
        self.stream.as_mut().ok_or(CaptureError::NotConnected)
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// Run a blocking step of the log writer off the async runtime.
async fn blocking<T: Send + 'static>(
    writer: &Arc<Mutex<LogWriter>>,
    f: impl FnOnce(&mut LogWriter) -> Result<T> + Send + 'static,
) -> Result<T> {
    let writer = writer.clone();
    tokio::task::spawn_blocking(move || f(&mut writer.lock().unwrap_or_else(|p| p.into_inner())))
        .await
        .map_err(|_| DbError::Join)?
}

impl Source for Reader {
    async fn connect(&mut self) -> Result<()> {
        if let Some(mut old) = self.stream.take() {
            let _ = old.client.shutdown().await;
        }
        let db = self.db.clone();
        let writer = Arc::new(Mutex::new(
            tokio::task::spawn_blocking(move || Ok::<_, DbError>(LogWriter::new(db.pg_client()?)))
                .await
                .map_err(|_| DbError::Join)??,
        ));
        let persisted = blocking(&writer, |w| Ok(w.persisted_lsn()?)).await?;
        let (pg, tls) = match (self.db.pg_config(), self.db.pg_tls()) {
            (Some(pg), Some(tls)) => (pg, tls),
            _ => return Err(DbError::WrongBackend { wanted: "PostgreSQL" }.into()),
        };
        let config = slot::replication_config(pg, tls, &self.slot, &self.publication, persisted);
        let client = ReplicationClient::connect(config).await?;
        tracing::info!(slot = self.slot, lsn = %Lsn::from_u64(persisted), "logical replication streaming");
        self.stream = Some(Stream {
            client,
            writer,
            persisted,
            relations: Arc::default(),
            open: Open::default(),
            commit_ts: 0,
            in_txn: false,
            fence: false,
            ready: Vec::new(),
            ready_rows: 0,
            ready_lsn: 0,
            unacknowledged: None,
        });
        Ok(())
    }

    async fn wait(&mut self, _poll: Duration) -> Result<()> {
        if !self.backlog.is_empty() {
            return Ok(());
        }
        let stream = self.stream()?;
        if !stream.ready.is_empty() {
            return Ok(());
        }
        // `recv` takes from a channel: cancel-safe.
        if let Ok(event) = tokio::time::timeout(IDLE_WAIT, stream.client.recv()).await {
            stream.handle(event?)?;
        }
        Ok(())
    }

    /// Publish the backlog first, if any. Otherwise take what has already arrived without
    /// waiting; once nothing is waiting (or the batch is full), number and persist the
    /// committed transactions and return their changes.
    async fn read(&mut self, max: usize) -> Result<Vec<Change>> {
        if !self.backlog.is_empty() {
            return self.read_backlog(max).await;
        }
        let (epoch, catalog) = (self.db.epoch().clone(), self.db.catalog().clone());
        let stream = self.stream()?;
        while stream.ready_rows < MAX_BATCH {
            // `unconstrained`: tokio's cooperative budget would otherwise report "nothing
            // waiting" after ~128 events, capping every batch at that size.
            match tokio::task::unconstrained(stream.client.recv()).now_or_never() {
                Some(event) => stream.handle(event?)?,
                None => break,
            }
        }
        if stream.ready_lsn <= stream.persisted {
            return Ok(Vec::new());
        }
        let txns = std::mem::take(&mut stream.ready);
        stream.ready_rows = 0;
        let lsn = stream.ready_lsn;
        let relations = stream.relations.clone();
        let started = std::time::Instant::now();
        let appended = blocking(&stream.writer, move |w| w.append(&relations, &catalog, txns, lsn)).await?;
        stream.persisted = lsn;
        stream.unacknowledged = Some(lsn);
        let backlog: u64 = appended.backlog.iter().map(|b| b.last - b.first + 1).sum();
        metrics::histogram!("tradewire_log_persist_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("tradewire_log_persist_changes")
            .record((appended.changes.len() as u64 + backlog) as f64);
        if backlog > 0 {
            tracing::info!(
                changes = backlog,
                users = appended.backlog.len(),
                "a large transaction is in the log; publishing it from there"
            );
        }
        self.backlog.extend(appended.backlog);
        Ok(appended
            .changes
            .into_iter()
            .map(|c| make_change(&epoch, c.user, c.seq, c.topic, c.op, c.commit_ts, c.row, c.old))
            .collect())
    }

    fn holding(&self) -> bool {
        !self.backlog.is_empty()
    }

    fn published(&mut self) {
        if let Some(stream) = self.stream.as_mut()
            && let Some(lsn) = stream.unacknowledged.take()
        {
            stream.client.update_applied_lsn(Lsn::from_u64(lsn));
        }
    }

    async fn close(&mut self) {
        if let Some(mut stream) = self.stream.take() {
            let _ = stream.client.shutdown().await;
        }
        tracing::info!("logical replication stopped");
    }
}

impl Reader {
    /// Up to `max` changes of the backlog's first user, read back from the log.
    async fn read_backlog(&mut self, max: usize) -> Result<Vec<Change>> {
        let Some(front) = self.backlog.front_mut() else { return Ok(Vec::new()) };
        let want = (front.last - front.first + 1).min(max.max(1) as u64) as usize;
        let changes =
            ChangeLog::new(self.db.clone()).changes_after(&front.user, front.first - 1, want).await?;
        // Fewer than wanted only if retention pruned them meanwhile: clients see the jump
        // and are answered `resync_required` for the missing positions.
        front.first = changes.last().map_or(front.last, |c| c.seq) + 1;
        if front.first > front.last {
            self.backlog.pop_front();
        }
        metrics::gauge!("tradewire_replication_backlog_users").set(self.backlog.len() as f64);
        Ok(changes)
    }
}

/// The transaction being received: its first rows in memory, the rest spilled to disk.
#[derive(Default)]
struct Open {
    rows: Vec<RowChange>,
    spill: Option<Spill>,
}

impl Open {
    /// Add a row message (`raw` is the message as received, for the spill).
    fn add(&mut self, message: Message, raw: &[u8]) -> Result<()> {
        if self.spill.is_none() && self.rows.len() < SPILL_AFTER {
            let rows = &mut self.rows;
            RowChange::from_message(message, |rc| rows.push(rc));
            return Ok(());
        }
        let spill = match &mut self.spill {
            Some(spill) => spill,
            None => {
                metrics::counter!("tradewire_replication_spilled_transactions_total").increment(1);
                self.spill.insert(Spill::new()?)
            }
        };
        spill.push(raw)?;
        Ok(())
    }

    fn len(&self) -> usize {
        self.rows.len() + self.spill.as_ref().map_or(0, Spill::len)
    }
}

impl Stream {
    /// Take one replication event into the open transaction or the ready list.
    fn handle(&mut self, event: Option<ReplicationEvent>) -> Result<()> {
        let Some(event) = event else { return Err(CaptureError::StreamEnded) };
        match event {
            ReplicationEvent::Begin { commit_time_micros, .. } => {
                self.in_txn = true;
                self.open = Open::default();
                self.fence = false;
                self.commit_ts = (commit_time_micros + PG_EPOCH_MICROS) / 1000;
            }
            ReplicationEvent::XLogData { data, .. } => match pgoutput::decode(&data)? {
                Message::Relation(rel) => {
                    Arc::make_mut(&mut self.relations).insert(rel.id, rel);
                }
                Message::Other(_) => {}
                // Rows, and TRUNCATE (numbered at commit: a `truncate` in every stream).
                message => self.open.add(message, &data)?,
            },
            ReplicationEvent::Commit { end_lsn, .. } => {
                self.in_txn = false;
                let end = end_lsn.as_u64();
                let open = std::mem::take(&mut self.open);
                if end <= self.persisted || end <= self.ready_lsn {
                    // Already in the log: sent again after a restart.
                    metrics::counter!("tradewire_replication_skipped_total").increment(1);
                    return Ok(());
                }
                self.ready_lsn = end;
                if open.len() > 0 || std::mem::take(&mut self.fence) {
                    // A fence (see `SYNC_PREFIX`) is written like a change, so its position
                    // reaches the log even though it numbers nothing.
                    self.ready_rows += open.len();
                    self.ready.push(Txn { rows: open.rows, spill: open.spill, commit_ts: self.commit_ts });
                }
            }
            ReplicationEvent::Message { transactional: true, prefix, .. } if prefix == SYNC_PREFIX => {
                self.fence = true;
            }
            // Idle: everything sent before `wal_end` is in the log or was not ours (a
            // transaction still open upstream is sent when it commits, after this position).
            // Confirming it lets the slot release WAL, and lets a PostgreSQL shutdown finish
            // without waiting for us.
            ReplicationEvent::KeepAlive { wal_end, .. }
                if !self.in_txn
                    && self.ready.is_empty()
                    && self.unacknowledged.is_none()
                    && wal_end.as_u64() > self.persisted =>
            {
                self.client.update_applied_lsn(wal_end);
            }
            _ => {}
        }
        Ok(())
    }
}
