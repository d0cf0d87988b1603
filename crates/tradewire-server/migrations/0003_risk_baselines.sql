-- The circuit breaker's baselines, stored with its row so a restart keeps "Today's P&L"
-- and the drawdown peak (NULL in rows written before: they start from the equity then).
ALTER TABLE risk ADD COLUMN day_start_ms INTEGER;
ALTER TABLE risk ADD COLUMN day_start_equity TEXT;
ALTER TABLE risk ADD COLUMN peak_equity TEXT;
