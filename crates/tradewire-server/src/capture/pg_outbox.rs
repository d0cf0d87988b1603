//! Outbox capture (PostgreSQL without logical replication): PL/pgSQL triggers, and the
//! reader that follows the log they write.
//!
//! Triggers write each change into `tw_changes` inside the writer's transaction, numbered
//! by the owner's counter row (see [`super::seq`]). Unlike SQLite, PostgreSQL runs writers
//! concurrently, so log ids are not commit order. The pump therefore reads by transaction
//! id behind a fence: `pg_snapshot_xmin` of the current snapshot is the oldest transaction
//! still running, so every transaction below it has ended and no new row can ever appear
//! there. Each round reads the window between the previous fence and the new one.
//!
//! Within one user, `seq` follows commit order (the counter row's lock), but transaction
//! ids need not: a user's `seq` 6 may land in an earlier window than `seq` 5. The pump holds
//! such a change back until the ones before it are published, so each user's stream is
//! published in `seq` order without gaps.
//!
//! NOTIFY is only a wake-up; the pump also polls, so a lost notification delays nothing
//! for long. A transaction left open anywhere in the database holds the fence back, and
//! with it delivery: keep `idle_in_transaction_session_timeout` short, or use logical
//! capture.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use tradewire_hub::Change;

use super::pump::Source;
use super::seq::PG_APPEND;
use super::{CaptureError, Result};
use crate::changefeed::log::{LOG_COLUMNS, log_row, note_unreadable, to_change};
use crate::db::catalog::TableInfo;
use crate::db::rows::json_row_expr;
use crate::db::sql::{Cell, Dialect, Sql};
use crate::db::{Catalog, Db, DbError, DecodeError, DropOffRuntime};
use crate::sql_params;

/// The outbox trigger function and trigger of one table.
fn pg_trigger_sql(info: &TableInfo) -> String {
    let t = &info.spec.table;
    let topic = &info.spec.topic;
    let owner = &info.spec.owner;
    let new_row = json_row_expr(Dialect::Postgres, &info.columns, "NEW.");
    let old_row = json_row_expr(Dialect::Postgres, &info.columns, "OLD.");
    format!(
        r#"
CREATE OR REPLACE FUNCTION "tw_capture_{t}"() RETURNS trigger LANGUAGE plpgsql AS $f$
DECLARE
    n_owner text; o_owner text; n_row text; o_row text;
    ts bigint := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN n_owner := NEW."{owner}"::text; n_row := {new_row}; END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN o_owner := OLD."{owner}"::text; o_row := {old_row}; END IF;
    IF TG_OP = 'UPDATE' AND n_owner IS NOT DISTINCT FROM o_owner THEN
        IF n_owner IS NOT NULL THEN PERFORM tw_append(n_owner, '{topic}', 'update', n_row, o_row, ts); END IF;
    ELSE
        -- A row that changes owner leaves the old owner's stream and enters the new one's.
        IF o_owner IS NOT NULL THEN PERFORM tw_append(o_owner, '{topic}', 'delete', NULL, o_row, ts); END IF;
        IF n_owner IS NOT NULL THEN PERFORM tw_append(n_owner, '{topic}', 'insert', n_row, NULL, ts); END IF;
    END IF;
    RETURN NULL;
END $f$;
DROP TRIGGER IF EXISTS tw_capture ON "{t}";
CREATE TRIGGER tw_capture AFTER INSERT OR UPDATE OR DELETE ON "{t}"
    FOR EACH ROW EXECUTE FUNCTION "tw_capture_{t}"();
-- TRUNCATE fires no row trigger: every user's stream gets a `truncate` change instead (in
-- user order, so two truncates take the counter rows' locks in the same order).
CREATE OR REPLACE FUNCTION "tw_truncate_{t}"() RETURNS trigger LANGUAGE plpgsql AS $f$
DECLARE
    u text;
    ts bigint := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
BEGIN
    FOR u IN SELECT user_id FROM tw_user_seq ORDER BY user_id LOOP
        PERFORM tw_append(u, '{topic}', 'truncate', NULL, NULL, ts);
    END LOOP;
    RETURN NULL;
END $f$;
DROP TRIGGER IF EXISTS tw_truncate ON "{t}";
CREATE TRIGGER tw_truncate AFTER TRUNCATE ON "{t}"
    FOR EACH STATEMENT EXECUTE FUNCTION "tw_truncate_{t}"();
"#
    )
}

/// (Re)create the outbox triggers of every captured table, in one transaction.
pub fn install(conn: &mut dyn Sql, catalog: &Catalog, slot: &str) -> Result<(), DbError> {
    let mut sql = format!("BEGIN;\n{PG_APPEND}");
    for table in catalog.tables() {
        sql += &pg_trigger_sql(table);
    }
    sql += "COMMIT;";
    conn.batch(&sql)?;
    if conn.value("SELECT 1 FROM pg_replication_slots WHERE slot_name = ?1", sql_params![slot])?.is_some() {
        tracing::warn!(
            slot,
            "a replication slot from logical capture exists and holds WAL back; \
             drop it with SELECT pg_drop_replication_slot('{slot}') if you stay on outbox capture"
        );
    }
    Ok(())
}

/// Follows the log behind the fence. Its position (the fence and each user's last `seq`
/// published) is taken before the server accepts connections and kept across reconnects,
/// so neither a late start nor a broken connection skips anything.
pub struct Reader {
    db: Db,
    /// The fence the next window starts at.
    from: String,
    order: Order,
    /// The fence ending the window being read, while one is open. A window can be large (a
    /// bulk update of millions of rows), so it is read through a cursor, `max` rows at a
    /// time (PostgreSQL sorts it, on disk if need be): memory stays bounded, and sessions
    /// drain their queues between rounds instead of taking the whole window at once.
    window: Option<String>,
    /// The reader's own connection, listening for `tw_changes` (opened by `connect`).
    client: Option<Arc<Mutex<DropOffRuntime<postgres::Client>>>>,
}

impl Reader {
    /// The first fence, and each user's counter in the same snapshot: every change up to
    /// that counter was committed before the pump started (its subscribers read it from the
    /// log); every later one is published, in `seq` order. (Taking a user's first change
    /// seen as the next one would drop an earlier `seq` that lands in a later window.)
    pub async fn start(db: &Db) -> Result<Self> {
        let db = db.clone();
        tokio::task::spawn_blocking(move || {
            let mut client = db.pg_client()?;
            client.batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
            let mut order = Order::default();
            let result = (|| -> Result<String, DbError> {
                let from = fence(&mut client)?;
                for r in Sql::query(&mut *client, "SELECT user_id, seq FROM tw_user_seq", &[])? {
                    let [user, seq]: [Cell; 2] =
                        r.try_into().map_err(|_| DecodeError::Shape { what: "tw_user_seq", columns: 2 })?;
                    let user: Arc<str> = Arc::from(user.into_text().unwrap_or_default());
                    order.published.insert(user, seq.int().max(0) as u64);
                }
                Ok(from)
            })();
            client.batch("COMMIT")?;
            let from = result?;
            tracing::info!(fence = %from, users = order.published.len(), "outbox capture starts");
            Ok(Self { db, from, order, window: None, client: None })
        })
        .await
        .map_err(|_| DbError::Join)?
    }

    fn client(&self) -> Result<Arc<Mutex<DropOffRuntime<postgres::Client>>>> {
        self.client.clone().ok_or(CaptureError::NotConnected)
    }
}

impl Source for Reader {
    async fn connect(&mut self) -> Result<()> {
        let db = self.db.clone();
        let client = tokio::task::spawn_blocking(move || {
            let mut client = db.pg_client()?;
            client.batch_execute("LISTEN tw_changes").map_err(DbError::from)?;
            Ok::<_, DbError>(client)
        })
        .await
        .map_err(|_| DbError::Join)??;
        self.client = Some(Arc::new(Mutex::new(client)));
        // A window's cursor dies with its connection: read the window again from its start
        // (what was published of it is not published twice, see `Order`).
        self.window = None;
        tracing::info!(fence = %self.from, "outbox capture connected");
        Ok(())
    }

    /// NOTIFY is only a wake-up: the wait ends after `poll` whatever arrives.
    async fn wait(&mut self, poll: Duration) -> Result<()> {
        if self.window.is_some() {
            return Ok(());
        }
        let client = self.client()?;
        tokio::task::spawn_blocking(move || {
            let mut client = client.lock().unwrap_or_else(|p| p.into_inner());
            let mut notes = client.notifications();
            notes.timeout_iter(poll).next()?;
            while notes.iter().next()?.is_some() {}
            Ok::<_, postgres::Error>(())
        })
        .await
        .map_err(|_| DbError::Join)?
        .map_err(|e| CaptureError::Db(e.into()))
    }

    async fn read(&mut self, max: usize) -> Result<Vec<Change>> {
        let rows = self.next_rows(max.max(1)).await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let epoch = self.db.epoch().clone();
        let changes = tokio::task::spawn_blocking(move || {
            let read = |r| {
                let change = to_change(&epoch, log_row(r)?);
                note_unreadable(&change);
                Ok(change)
            };
            rows.into_iter().map(read).collect::<Result<Vec<_>, DbError>>()
        })
        .await
        .map_err(|_| DbError::Join)??;
        let mut out = Vec::with_capacity(changes.len());
        for change in changes {
            self.order.offer(change, &mut out);
        }
        metrics::gauge!("tradewire_outbox_held_changes").set(self.order.holding() as f64);
        Ok(out)
    }

    fn holding(&self) -> bool {
        self.order.holding() > 0 || self.window.is_some()
    }
}

impl Reader {
    /// The next `max` rows of the window between the last fence and a new one, opening the
    /// window (a transaction and a cursor on the reader's connection) when none is open.
    async fn next_rows(&mut self, max: usize) -> Result<Vec<Vec<Cell>>> {
        let client = self.client()?;
        let (from, open) = (self.from.clone(), self.window.clone());
        let (to, rows, done) = tokio::task::spawn_blocking(move || {
            let mut client = client.lock().unwrap_or_else(|p| p.into_inner());
            let to = match open {
                Some(to) => to,
                None => {
                    client.batch("BEGIN READ ONLY")?;
                    let to = fence(&mut client)?;
                    if to == from {
                        client.batch("COMMIT")?;
                        return Ok::<_, DbError>((to, Vec::new(), true));
                    }
                    Sql::execute(
                        &mut **client,
                        &format!(
                            "DECLARE tw_window NO SCROLL CURSOR FOR SELECT {LOG_COLUMNS} FROM tw_changes
                             WHERE xid >= ?1::text::xid8 AND xid < ?2::text::xid8 ORDER BY user_id, seq"
                        ),
                        sql_params![from.as_str(), to.as_str()],
                    )?;
                    to
                }
            };
            let rows = Sql::query(&mut **client, &format!("FETCH FORWARD {max} FROM tw_window"), &[])?;
            let done = rows.len() < max;
            if done {
                client.batch("CLOSE tw_window; COMMIT")?;
            }
            Ok((to, rows, done))
        })
        .await
        .map_err(|_| DbError::Join)??;
        if !rows.is_empty() {
            tracing::debug!(from = %self.from, %to, rows = rows.len(), held = self.order.holding(), "outbox window");
        }
        if done {
            self.from = to;
            self.window = None;
        } else {
            self.window = Some(to);
        }
        Ok(rows)
    }
}

/// Most changes held back for one user. A gap that holds back more than this is not going
/// to fill (a change numbered by hand and never committed, a damaged log): the held changes
/// are released, and a client sees the jump in `seq` and resumes, where the missing
/// position is answered with `resync_required` — never a silent skip, and never a table
/// that grows for ever.
const MAX_HELD_PER_USER: usize = 10_000;

/// Per-user ordering state.
#[derive(Default)]
struct Order {
    /// The last `seq` released, per user seen since start.
    published: HashMap<Arc<str>, u64>,
    /// Changes that arrived before an earlier `seq` of the same user.
    held: HashMap<Arc<str>, BTreeMap<u64, Change>>,
}

impl Order {
    /// Release `change` into `out` if it is the user's next, then whatever it unblocks;
    /// else hold it. A change at or below what was released is dropped (seen twice).
    fn offer(&mut self, change: Change, out: &mut Vec<Change>) {
        let user = change.user_id.clone();
        // A user without a counter when the pump started begins at 1 (see `Reader::start`).
        let last = *self.published.entry(user.clone()).or_insert(0);
        if change.seq <= last {
            return;
        }
        if change.seq > last + 1 {
            let held = self.held.entry(user.clone()).or_default();
            held.insert(change.seq, change);
            if held.len() <= MAX_HELD_PER_USER {
                return;
            }
            // Give up on the gap: release from the first change held.
            let first = held.pop_first().map(|(_, c)| c).expect("more than the bound are held");
            metrics::counter!("tradewire_outbox_gaps_skipped_total").increment(1);
            tracing::error!(user = %user, missing_from = last + 1, resumes_at = first.seq,
                "a gap in a user's changes did not fill; releasing the changes after it");
            return self.release(first, out);
        }
        self.release(change, out);
    }

    /// Publish `change` (the user's next), then every held change that follows it.
    fn release(&mut self, change: Change, out: &mut Vec<Change>) {
        let user = change.user_id.clone();
        let mut next = change.seq;
        out.push(change);
        if let Some(held) = self.held.get_mut(&user) {
            while let Some(c) = held.remove(&(next + 1)) {
                next = c.seq;
                out.push(c);
            }
            if held.is_empty() {
                self.held.remove(&user);
            }
        }
        self.published.insert(user, next);
    }

    fn holding(&self) -> usize {
        self.held.values().map(BTreeMap::len).sum()
    }
}

fn fence(client: &mut postgres::Client) -> Result<String, DbError> {
    Ok(client
        .text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text", &[])?
        .ok_or(DecodeError::Shape { what: "pg_snapshot_xmin", columns: 1 })?)
}

#[cfg(test)]
mod tests {
    use tradewire_protocol::ChangeOp;

    use super::*;

    fn change(user: &str, seq: u64) -> Change {
        Change::new(user.into(), "e1".into(), seq, "signals".into(), ChangeOp::Insert, vec![], 0, None, None)
    }

    /// Offer one change; the `seq`s released by it.
    fn offer(order: &mut Order, c: Change) -> Vec<u64> {
        let mut out = Vec::new();
        order.offer(c, &mut out);
        out.iter().map(|c| c.seq).collect()
    }

    #[test]
    fn a_change_ahead_of_its_user_is_held_until_the_gap_fills() {
        let mut order = Order::default();
        assert_eq!(offer(&mut order, change("u1", 1)), [1]);
        assert_eq!(offer(&mut order, change("u1", 3)), [0u64; 0], "2 is not published yet");
        assert_eq!(order.holding(), 1);
        assert_eq!(offer(&mut order, change("u1", 2)), [2, 3], "2 releases 3");
        assert_eq!(offer(&mut order, change("u1", 2)), [0u64; 0], "seen twice: published once");
        assert_eq!(order.holding(), 0);
    }

    #[test]
    fn a_gap_that_never_fills_holds_back_a_bounded_number_of_changes() {
        let mut order = Order::default();
        assert_eq!(offer(&mut order, change("u1", 1)), [1]);
        for seq in 3..(3 + MAX_HELD_PER_USER as u64) {
            assert!(offer(&mut order, change("u1", seq)).is_empty());
        }
        assert_eq!(order.holding(), MAX_HELD_PER_USER);
        let released = offer(&mut order, change("u1", 3 + MAX_HELD_PER_USER as u64));
        assert_eq!(released.len(), MAX_HELD_PER_USER + 1, "released in order past the gap");
        assert_eq!(released[0], 3);
        assert!(released.windows(2).all(|w| w[1] == w[0] + 1));
        assert_eq!(order.holding(), 0);
        assert!(offer(&mut order, change("u1", 2)).is_empty(), "the missing one, late, is not sent");
    }

    #[test]
    fn the_counter_at_start_decides_what_comes_next_not_the_first_change_seen() {
        let mut order = Order::default();
        // At the pump's start u1's counter stood at 4; 6 arrives in an earlier window than 5.
        order.published.insert("u1".into(), 4);
        assert_eq!(offer(&mut order, change("u1", 6)), [0u64; 0]);
        assert_eq!(offer(&mut order, change("u1", 5)), [5, 6]);
        // Changes committed before the start are the log's to serve.
        assert_eq!(offer(&mut order, change("u1", 3)), [0u64; 0]);
    }
}
