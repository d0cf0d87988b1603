//! Reference and demo data: instruments always; demo users, portfolios, bots and risk rows
//! into an empty database when demo mode is on.

use super::Result;
use super::sql::Sql;
use crate::clock::now_ms;
use crate::credentials::hash_password;
use crate::sql_params as params;

/// The demo users and their passwords (stated in the README).
pub const DEMO_USERS: [(&str, &str); 2] = [("alice", "alice-demo"), ("bob", "bob-demo")];

/// The instruments table holds the simulator's symbols, so the REST reference data, the
/// order checks and the market topics all agree.
pub fn instruments(conn: &mut dyn Sql) -> Result<()> {
    for i in tradewire_sim::default_instruments() {
        conn.execute(
            "INSERT INTO instruments(symbol, base, quote, tick_size, lot_size, min_notional, max_leverage,
                 maintenance_margin_rate, maker_fee, taker_fee)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10
             WHERE NOT EXISTS (SELECT 1 FROM instruments WHERE symbol = ?1)",
            params![
                i.symbol,
                i.base,
                i.quote,
                i.tick_size.to_string(),
                i.lot_size.to_string(),
                i.min_notional.to_string(),
                i64::from(i.max_leverage),
                i.maintenance_margin_rate.to_string(),
                i.maker_fee.to_string(),
                i.taker_fee.to_string()
            ],
        )?;
    }
    Ok(())
}

/// Create a user with a portfolio and a risk row; returns the user id.
pub fn create_user(conn: &mut dyn Sql, username: &str, password: &str, balance: &str) -> Result<String> {
    let now = now_ms();
    let user_id = format!("u_{username}");
    conn.execute(
        "INSERT INTO users(id, username, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![&user_id, username, hash_password(password), now],
    )?;
    let portfolio = format!("pf_{username}_main");
    conn.execute(
        "INSERT INTO portfolios(id, user_id, name, balance, equity, margin_available, created_at, updated_at)
         VALUES (?1, ?2, 'Main', ?3, ?3, ?3, ?4, ?4)",
        params![&portfolio, &user_id, balance, now],
    )?;
    conn.execute(
        "INSERT INTO risk(id, user_id, portfolio_id, daily_loss_limit, max_drawdown, updated_at)
         VALUES (?1, ?2, ?3, '500', '0.10', ?4)",
        params![format!("risk_{username}_main"), &user_id, &portfolio, now],
    )?;
    Ok(user_id)
}

/// `tw_meta` key listing the ids of the users the demo seed created.
const DEMO_USERS_KEY: &str = "demo_users";
/// A password hash no password matches: the login of a demo user outside demo mode.
const DISABLED: &str = "!disabled-outside-demo-mode";

/// The ids of the users the demo seed created (none when it never ran).
fn demo_user_ids(tx: &mut dyn Sql) -> Result<Vec<String>> {
    let ids = tx.text("SELECT value FROM tw_meta WHERE key = ?1", params![DEMO_USERS_KEY])?;
    Ok(ids.map(|v| v.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect()).unwrap_or_default())
}

/// Outside demo mode the demo users cannot log in (their rows stay; an operator removes
/// them with `tradewire user remove`). Run in a transaction.
pub fn leave_demo(tx: &mut dyn Sql) -> Result<()> {
    instruments(tx)?;
    let mut disabled = 0;
    for id in demo_user_ids(tx)? {
        disabled += tx.execute(
            "UPDATE users SET password_hash = ?1 WHERE id = ?2 AND password_hash <> ?1",
            params![DISABLED, &id],
        )?;
    }
    if disabled > 0 {
        tracing::warn!(disabled, "not in demo mode: the demo users' logins are disabled");
    }
    Ok(())
}

/// Seed the demo desk into a database that has no users yet; in a database seeded before,
/// give the demo users their logins back (run in a transaction).
pub fn demo(tx: &mut dyn Sql) -> Result<()> {
    instruments(tx)?;
    for id in demo_user_ids(tx)? {
        if let Some((_, password)) = DEMO_USERS.iter().find(|(name, _)| id == format!("u_{name}")) {
            tx.execute(
                "UPDATE users SET password_hash = ?1 WHERE id = ?2 AND password_hash = ?3",
                params![hash_password(password), &id, DISABLED],
            )?;
        }
    }
    let users = tx.value("SELECT COUNT(*) FROM users", &[])?.map_or(0, |c| c.int());
    if users == 0 {
        let now = now_ms();
        // Sampled four times a second with short windows, so the desk is trading within
        // seconds of the first start (the defaults warm up over ~20 s of one-second samples).
        let bots: [(&str, &str, &str, &str, &str, &str); 5] = [
            (
                "alice",
                "Momentum BTC",
                "ma_crossover",
                "BTCUSDT",
                "running",
                r#"{"sample_ms":250,"fast":3,"slow":8}"#,
            ),
            (
                "alice",
                "ETH Mean Revert",
                "mean_reversion",
                "ETHUSDT",
                "running",
                r#"{"sample_ms":250,"window":12}"#,
            ),
            ("alice", "SOL Grid", "grid", "SOLUSDT", "paused", r#"{"sample_ms":250}"#),
            (
                "bob",
                "Bob's BTC Grid",
                "grid",
                "BTCUSDT",
                "running",
                r#"{"sample_ms":250,"grid_step_pct":"0.0003"}"#,
            ),
            (
                "bob",
                "Bob's ETH Trend",
                "ma_crossover",
                "ETHUSDT",
                "stopped",
                r#"{"sample_ms":250,"fast":3,"slow":8}"#,
            ),
        ];
        let mut ids = Vec::new();
        for (name, password) in DEMO_USERS {
            ids.push(create_user(tx, name, password, "10000")?);
        }
        tx.execute(
            "INSERT INTO tw_meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![DEMO_USERS_KEY, ids.join(",")],
        )?;
        for (i, (owner, name, strategy, symbol, status, config)) in bots.into_iter().enumerate() {
            tx.execute(
                "INSERT INTO trading_bots(id, user_id, portfolio_id, name, strategy, symbol, status, config, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
                params![format!("bot_{owner}_{}", i + 1), format!("u_{owner}"), format!("pf_{owner}_main"), name, strategy, symbol, status, config, now],
            )?;
        }
        tracing::info!("seeded demo users alice and bob");
    }
    Ok(())
}
