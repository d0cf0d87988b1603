-- Tradewire built-in trading schema (PostgreSQL): the SQLite schema with the same columns,
-- so rows have one JSON shape on both backends.
-- Money, prices and quantities are exact decimal strings (TEXT affinity, never REAL).
-- Times are milliseconds since the Unix epoch. Every private row has its owner `user_id`.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);

CREATE TABLE instruments (
    symbol                  TEXT PRIMARY KEY,
    base                    TEXT NOT NULL,
    quote                   TEXT NOT NULL,
    tick_size               TEXT NOT NULL,
    lot_size                TEXT NOT NULL,
    min_notional            TEXT NOT NULL,
    max_leverage            BIGINT NOT NULL,
    maintenance_margin_rate TEXT NOT NULL,
    maker_fee               TEXT NOT NULL,
    taker_fee               TEXT NOT NULL
);

CREATE TABLE portfolios (
    id               TEXT PRIMARY KEY,
    user_id          TEXT NOT NULL REFERENCES users(id),
    name             TEXT NOT NULL,
    currency         TEXT NOT NULL DEFAULT 'USDT',
    balance          TEXT NOT NULL DEFAULT '0',
    equity           TEXT NOT NULL DEFAULT '0',
    unrealized_pnl   TEXT NOT NULL DEFAULT '0',
    realized_pnl     TEXT NOT NULL DEFAULT '0',
    margin_used      TEXT NOT NULL DEFAULT '0',
    margin_available TEXT NOT NULL DEFAULT '0',
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX portfolios_user ON portfolios(user_id);

CREATE TABLE trading_bots (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id),
    portfolio_id TEXT REFERENCES portfolios(id),
    name         TEXT NOT NULL,
    strategy     TEXT NOT NULL,
    symbol       TEXT NOT NULL,
    status       TEXT NOT NULL DEFAULT 'stopped' CHECK (status IN ('running', 'paused', 'stopped')),
    config       JSONB NOT NULL DEFAULT '{}',
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX trading_bots_user ON trading_bots(user_id);

CREATE TABLE positions (
    id                TEXT PRIMARY KEY,
    user_id           TEXT NOT NULL REFERENCES users(id),
    portfolio_id      TEXT REFERENCES portfolios(id),
    bot_id            TEXT,
    symbol            TEXT NOT NULL,
    side              TEXT NOT NULL CHECK (side IN ('long', 'short')),
    status            TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed', 'liquidated')),
    quantity          TEXT NOT NULL,
    entry_price       TEXT NOT NULL,
    mark_price        TEXT,
    leverage          BIGINT NOT NULL DEFAULT 1,
    margin            TEXT NOT NULL DEFAULT '0',
    unrealized_pnl    TEXT NOT NULL DEFAULT '0',
    realized_pnl      TEXT NOT NULL DEFAULT '0',
    liquidation_price TEXT,
    opened_at         BIGINT NOT NULL,
    closed_at         BIGINT,
    updated_at        BIGINT NOT NULL
);
CREATE INDEX positions_user ON positions(user_id, status);

CREATE TABLE orders (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users(id),
    portfolio_id    TEXT REFERENCES portfolios(id),
    bot_id          TEXT,
    client_order_id TEXT NOT NULL,
    symbol          TEXT NOT NULL,
    side            TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    type            TEXT NOT NULL CHECK (type IN ('market', 'limit', 'stop', 'take_profit')),
    time_in_force   TEXT NOT NULL DEFAULT 'gtc' CHECK (time_in_force IN ('gtc', 'ioc', 'fok')),
    price           TEXT,
    stop_price      TEXT,
    quantity        TEXT NOT NULL,
    filled_quantity TEXT NOT NULL DEFAULT '0',
    avg_fill_price  TEXT,
    status          TEXT NOT NULL DEFAULT 'new' CHECK (status IN
                    ('new', 'partially_filled', 'filled', 'canceled', 'rejected', 'expired', 'triggered')),
    reduce_only     BOOLEAN NOT NULL DEFAULT false,
    post_only       BOOLEAN NOT NULL DEFAULT false,
    reject_reason   TEXT,
    chain_id        TEXT,
    chain_role      TEXT CHECK (chain_role IS NULL OR chain_role IN ('entry', 'take_profit', 'stop_loss')),
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (user_id, client_order_id)
);
CREATE INDEX orders_user_status ON orders(user_id, status);

CREATE TABLE fills (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id),
    order_id     TEXT NOT NULL,
    portfolio_id TEXT,
    symbol       TEXT NOT NULL,
    side         TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    price        TEXT NOT NULL,
    quantity     TEXT NOT NULL,
    fee          TEXT NOT NULL DEFAULT '0',
    fee_asset    TEXT NOT NULL DEFAULT 'USDT',
    liquidity    TEXT NOT NULL DEFAULT 'taker' CHECK (liquidity IN ('maker', 'taker')),
    realized_pnl TEXT NOT NULL DEFAULT '0',
    ts           BIGINT NOT NULL
);
CREATE INDEX fills_user ON fills(user_id, ts);

CREATE TABLE lifecycle (
    id        TEXT PRIMARY KEY,
    user_id   TEXT NOT NULL REFERENCES users(id),
    entity    TEXT NOT NULL CHECK (entity IN ('order', 'position', 'bot', 'chain', 'portfolio')),
    entity_id TEXT NOT NULL,
    event     TEXT NOT NULL,
    detail    JSONB NOT NULL DEFAULT '{}',
    ts        BIGINT NOT NULL
);
CREATE INDEX lifecycle_user ON lifecycle(user_id, ts);

CREATE TABLE signals (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id),
    bot_id     TEXT,
    symbol     TEXT NOT NULL,
    direction  TEXT NOT NULL CHECK (direction IN ('long', 'short', 'flat')),
    confidence TEXT NOT NULL,
    reason     TEXT NOT NULL DEFAULT '',
    ts         BIGINT NOT NULL
);
CREATE INDEX signals_user ON signals(user_id, ts);

CREATE TABLE risk (
    id               TEXT PRIMARY KEY,
    user_id          TEXT NOT NULL REFERENCES users(id),
    portfolio_id     TEXT NOT NULL UNIQUE,
    circuit_breaker  TEXT NOT NULL DEFAULT 'armed' CHECK (circuit_breaker IN ('armed', 'tripped', 'disabled')),
    trip_reason      TEXT,
    daily_loss_limit TEXT NOT NULL DEFAULT '0',
    max_drawdown     TEXT NOT NULL DEFAULT '0',
    daily_pnl        TEXT NOT NULL DEFAULT '0',
    drawdown         TEXT NOT NULL DEFAULT '0',
    tripped_at       BIGINT,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX risk_user ON risk(user_id);

CREATE TABLE pnl (
    id             TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL REFERENCES users(id),
    portfolio_id   TEXT NOT NULL,
    equity         TEXT NOT NULL,
    balance        TEXT NOT NULL,
    realized_pnl   TEXT NOT NULL,
    unrealized_pnl TEXT NOT NULL,
    ts             BIGINT NOT NULL
);
CREATE INDEX pnl_user ON pnl(user_id, ts);

CREATE TABLE watchlist (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id),
    symbol     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (user_id, symbol)
);

-- Deletes must carry the owner column (and updates the old row, for domain events):
-- logical replication sends the whole old row only with REPLICA IDENTITY FULL.
ALTER TABLE portfolios REPLICA IDENTITY FULL;
ALTER TABLE trading_bots REPLICA IDENTITY FULL;
ALTER TABLE positions REPLICA IDENTITY FULL;
ALTER TABLE orders REPLICA IDENTITY FULL;
ALTER TABLE fills REPLICA IDENTITY FULL;
ALTER TABLE lifecycle REPLICA IDENTITY FULL;
ALTER TABLE signals REPLICA IDENTITY FULL;
ALTER TABLE risk REPLICA IDENTITY FULL;
ALTER TABLE pnl REPLICA IDENTITY FULL;
