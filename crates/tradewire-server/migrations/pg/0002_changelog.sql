-- The change log on PostgreSQL: the durable replay log sessions replay from.
--
-- Logical capture: written by the server from the WAL stream, in WAL (= commit) order,
-- together with the per-user heads and the last persisted LSN, in one transaction.
-- Outbox capture: written by triggers inside the writing transaction; the per-user counter
-- row in tw_user_seq makes `seq` gap-free and, because its lock is held until commit,
-- commit-ordered per user. `xid` lets the pump read only what every earlier transaction
-- has finished with.

CREATE TABLE IF NOT EXISTS tw_user_seq (
    user_id TEXT PRIMARY KEY,
    seq     BIGINT NOT NULL
);

CREATE TABLE tw_changes (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id   TEXT NOT NULL,
    seq       BIGINT NOT NULL,
    topic     TEXT NOT NULL,
    op        TEXT NOT NULL CHECK (op IN ('insert', 'update', 'delete')),
    row_json  TEXT,
    old_json  TEXT,
    commit_ts BIGINT NOT NULL,
    xid       xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE UNIQUE INDEX tw_changes_user_seq ON tw_changes(user_id, seq);
CREATE INDEX tw_changes_commit_ts ON tw_changes(commit_ts);
CREATE INDEX tw_changes_xid ON tw_changes(xid);
