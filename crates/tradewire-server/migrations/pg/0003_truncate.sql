-- A TRUNCATE of a captured table is kept in each user's stream as a `truncate` change
-- (SQLite has no TRUNCATE: its `DELETE FROM t` is captured row by row).
ALTER TABLE tw_changes DROP CONSTRAINT IF EXISTS tw_changes_op_check;
ALTER TABLE tw_changes ADD CONSTRAINT tw_changes_op_check
    CHECK (op IN ('insert', 'update', 'delete', 'truncate'));
