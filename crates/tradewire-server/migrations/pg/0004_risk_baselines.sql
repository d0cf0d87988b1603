-- The circuit breaker's baselines, stored with its row so a restart keeps "Today's P&L"
-- and the drawdown peak (NULL in rows written before: they start from the equity then).
ALTER TABLE risk ADD COLUMN IF NOT EXISTS day_start_ms BIGINT;
ALTER TABLE risk ADD COLUMN IF NOT EXISTS day_start_equity TEXT;
ALTER TABLE risk ADD COLUMN IF NOT EXISTS peak_equity TEXT;
