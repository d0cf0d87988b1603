-- The change log: written by capture triggers inside the writing transaction, read by the
-- pump (live) and by sessions (replay). SQLite has one writer, so `id` order is commit order.

CREATE TABLE tw_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- The head of each user's stream: the last `seq` handed out.
CREATE TABLE tw_user_seq (
    user_id TEXT PRIMARY KEY NOT NULL,
    seq     INTEGER NOT NULL
);

CREATE TABLE tw_changes (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id   TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    topic     TEXT NOT NULL,
    op        TEXT NOT NULL CHECK (op IN ('insert', 'update', 'delete')),
    row_json  TEXT,
    old_json  TEXT,
    commit_ts INTEGER NOT NULL
);
CREATE UNIQUE INDEX tw_changes_user_seq ON tw_changes(user_id, seq);
CREATE INDEX tw_changes_commit_ts ON tw_changes(commit_ts);
