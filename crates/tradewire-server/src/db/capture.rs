//! Capture in the database.
//!
//! On SQLite, and on PostgreSQL in outbox mode: triggers that write every insert, update and delete of a captured
//! table into `tw_changes` inside the writing transaction, with the owner's next `seq`.
//!
//! SQLite has one writer at a time, so the order of `tw_changes.id` is commit order, and a
//! rolled-back transaction takes its log rows with it. Because the capture is in the
//! database, writes by any process (the API, the simulator, the `sqlite3` shell) are
//! captured alike.
//!
//! The trigger bodies avoid `INSERT OR …` and UPSERT on purpose: an outer statement's
//! conflict clause (`INSERT OR REPLACE INTO orders …`) would override theirs.
//!
//! On PostgreSQL with logical capture there are no triggers: a publication over the
//! captured tables and a replication slot (see `changefeed::logical`).

use super::catalog::TableInfo;
use super::rows::json_row_expr;
use super::sql::{Dialect, Sql};
use super::{Catalog, DbError, Result};
use crate::sql_params;

/// The statement time in milliseconds, as SQLite computes it inside a trigger (julianday
/// works on every SQLite version, including old `sqlite3` shells writing to the file).
const NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

/// (Re)create the SQLite capture triggers of every table in the catalog, in one transaction.
pub fn install_sqlite(conn: &mut dyn Sql, catalog: &Catalog) -> Result<()> {
    let mut sql = String::from("BEGIN;\n");
    for table in catalog.tables() {
        sql += &triggers_sql(table);
    }
    sql += "COMMIT;";
    conn.batch(&sql)
}

/// Statements that append one change for `owner` (an expression over NEW/OLD). When the
/// owner is NULL they do nothing: `user_id = NULL` matches no row.
fn append(owner: &str, topic: &str, op: &str, row: &str, old: &str) -> String {
    format!(
        "INSERT INTO tw_user_seq(user_id, seq) SELECT {owner}, 0 \
             WHERE {owner} IS NOT NULL\n\
             AND NOT EXISTS (SELECT 1 FROM tw_user_seq WHERE user_id = {owner});\n\
         UPDATE tw_user_seq SET seq = seq + 1 WHERE user_id = {owner};\n\
         INSERT INTO tw_changes(user_id, seq, topic, op, row_json, old_json, commit_ts)\n\
             SELECT {owner}, seq, '{topic}', '{op}', {row}, {old}, {NOW_MS}\n\
             FROM tw_user_seq WHERE user_id = {owner};\n"
    )
}

/// The trigger DDL of one table. Names are checked identifiers (see the catalog).
pub fn triggers_sql(info: &TableInfo) -> String {
    let t = &info.spec.table;
    let topic = &info.spec.topic;
    let owner = &info.spec.owner;
    let new_row = json_row_expr(Dialect::Sqlite, &info.columns, "NEW.");
    let old_row = json_row_expr(Dialect::Sqlite, &info.columns, "OLD.");
    let (new_owner, old_owner) = (format!("NEW.\"{owner}\""), format!("OLD.\"{owner}\""));
    let mut sql = String::new();
    for suffix in ["insert", "update", "update_moved", "delete"] {
        sql += &format!("DROP TRIGGER IF EXISTS \"tw_capture_{t}_{suffix}\";\n");
    }
    sql += &format!(
        "CREATE TRIGGER \"tw_capture_{t}_insert\" AFTER INSERT ON \"{t}\" \
         WHEN {new_owner} IS NOT NULL BEGIN\n{}END;\n",
        append(&new_owner, topic, "insert", &new_row, "NULL")
    );
    sql += &format!(
        "CREATE TRIGGER \"tw_capture_{t}_update\" AFTER UPDATE ON \"{t}\" \
         WHEN {new_owner} IS NOT NULL AND {new_owner} IS {old_owner} BEGIN\n{}END;\n",
        append(&new_owner, topic, "update", &new_row, &old_row)
    );
    // A row that changes owner leaves the old owner's stream and enters the new one's;
    // neither sees the other's version of it.
    sql += &format!(
        "CREATE TRIGGER \"tw_capture_{t}_update_moved\" AFTER UPDATE ON \"{t}\" \
         WHEN {new_owner} IS NOT {old_owner} BEGIN\n{}{}END;\n",
        append(&old_owner, topic, "delete", "NULL", &old_row),
        append(&new_owner, topic, "insert", &new_row, "NULL"),
    );
    sql += &format!(
        "CREATE TRIGGER \"tw_capture_{t}_delete\" AFTER DELETE ON \"{t}\" \
         WHEN {old_owner} IS NOT NULL BEGIN\n{}END;\n",
        append(&old_owner, topic, "delete", "NULL", &old_row)
    );
    sql
}

// ---- PostgreSQL, outbox mode ----------------------------------------------------------

/// Append one change for a user: bump the user's counter row (its lock, held to commit,
/// orders one user's writers), log the change, and wake the pump.
const PG_APPEND: &str = r#"
CREATE OR REPLACE FUNCTION tw_append(p_user text, p_topic text, p_op text, p_row text, p_old text, p_ts bigint)
RETURNS void LANGUAGE plpgsql AS $f$
DECLARE s bigint;
BEGIN
    INSERT INTO tw_user_seq(user_id, seq) VALUES (p_user, 1)
        ON CONFLICT (user_id) DO UPDATE SET seq = tw_user_seq.seq + 1
        RETURNING seq INTO s;
    INSERT INTO tw_changes(user_id, seq, topic, op, row_json, old_json, commit_ts)
        VALUES (p_user, s, p_topic, p_op, p_row, p_old, p_ts);
    -- Only a wake-up: identical notifications of one transaction are folded into one.
    PERFORM pg_notify('tw_changes', '');
END $f$;
"#;

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
"#
    )
}

/// (Re)create the outbox triggers of every captured table, in one transaction.
pub fn install_outbox(conn: &mut dyn Sql, catalog: &Catalog, slot: &str) -> Result<()> {
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

// ---- PostgreSQL, logical replication --------------------------------------------------

/// Check what logical capture needs, naming the fix for each thing missing; then create or
/// update the publication and create the slot when absent. Outbox triggers from an
/// earlier run are removed (they would log every change twice).
pub fn install_logical(conn: &mut dyn Sql, catalog: &Catalog, slot: &str, publication: &str) -> Result<()> {
    let setup = |reason: String| DbError::Setup(reason);
    let wal_level = conn.text("SHOW wal_level", &[])?.unwrap_or_default();
    if wal_level != "logical" {
        return Err(setup(format!(
            "wal_level is '{wal_level}', logical capture needs 'logical'. Fix: ALTER SYSTEM SET \
             wal_level = logical; then restart PostgreSQL. Or run with --capture outbox."
        )));
    }
    let user = conn.text("SELECT current_user::text", &[])?.unwrap_or_default();
    let may_replicate = conn
        .value("SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user", &[])?
        .is_some_and(|c| c.truthy());
    if !may_replicate {
        return Err(setup(format!(
            "role '{user}' lacks the REPLICATION attribute. Fix: ALTER ROLE \"{user}\" REPLICATION; \
             (as a superuser). Or run with --capture outbox."
        )));
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
            return Err(setup(format!(
                "table {t}: deletes and owner changes must carry the old row (its owner column), \
                 which logical replication sends only with REPLICA IDENTITY FULL. Fix: \
                 ALTER TABLE \"{t}\" REPLICA IDENTITY FULL;"
            )));
        }
    }
    let mut sql = String::from("BEGIN;\n");
    for table in catalog.tables() {
        let t = &table.spec.table;
        sql += &format!("DROP TRIGGER IF EXISTS tw_capture ON \"{t}\";\n");
    }
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
