//! The driver loop: step the simulator on a timer, serve API commands, persist effects,
//! publish market data, follow bot changes made in the database.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tradewire_hub::{MarketBus, MarketKind, MarketMessage};
use tradewire_sim::{Bot, Effect, InitialState, MarketEvent, Portfolio, Risk, SimConfig, Simulator};

use super::{Command, Refusal, persist};
use crate::clock::now_ms;
use crate::db::rows::scan_all_rows;
use crate::db::{Db, DbError, Sql};
use crate::market_source::MarketView;
use crate::sql_params;

/// How the simulator runs.
#[derive(Debug, Clone, Copy)]
pub struct SimSettings {
    pub seed: u64,
    /// Simulator steps per second (market ticks per symbol).
    pub ticks_per_second: u32,
}

/// Every row of `table` (all owners), as JSON objects, for loading the simulator. One
/// query per table: this runs every second, and reading user by user cost a query per
/// user and table (with 10,000 users, more than a core of CPU all the time).
fn all_rows<T: serde::de::DeserializeOwned>(
    conn: &mut dyn Sql,
    db: &Db,
    topic: &str,
) -> Result<Vec<T>, DbError> {
    let table = db.catalog().topic(topic).expect("built-in topic");
    let mut out = Vec::new();
    for row in scan_all_rows(conn, table)? {
        match serde_json::from_value(Value::Object(row)) {
            Ok(v) => out.push(v),
            Err(e) => tracing::warn!(topic, error = %e, "row not loadable by the simulator; skipped"),
        }
    }
    Ok(out)
}

/// The simulator starts flat: what a previous run left open is closed (orders expire,
/// positions close at their last mark), so the database and the simulator agree.
fn close_previous_run(conn: &mut dyn Sql) -> Result<(u64, u64), DbError> {
    let now = now_ms();
    let orders = conn.execute(
        "UPDATE orders SET status = 'expired', updated_at = ?1
         WHERE status IN ('new', 'partially_filled', 'triggered')",
        sql_params![now],
    )?;
    let positions = conn.execute(
        "UPDATE positions SET status = 'closed', closed_at = ?1, updated_at = ?1, unrealized_pnl = '0'
         WHERE status = 'open'",
        sql_params![now],
    )?;
    Ok((orders, positions))
}

async fn load(db: &Db) -> Result<InitialState, DbError> {
    let dbc = db.clone();
    db.write(move |tx| {
        let (orders, positions) = close_previous_run(tx)?;
        if orders + positions > 0 {
            tracing::info!(orders, positions, "closed what a previous simulator run left open");
        }
        Ok::<_, DbError>(InitialState {
            portfolios: all_rows::<Portfolio>(tx, &dbc, "portfolios")?,
            bots: all_rows::<Bot>(tx, &dbc, "bots")?,
            risk: all_rows::<Risk>(tx, &dbc, "risk")?,
        })
    })
    .await
}

/// Encode a market event as the `market` frame of its topic.
fn market_message(ev: &MarketEvent, kind: MarketKind) -> Option<MarketMessage> {
    let mut data = serde_json::to_value(ev).ok()?;
    let ts = data.get("ts").and_then(Value::as_i64).unwrap_or_else(now_ms);
    if let Value::Object(map) = &mut data {
        map.remove("type");
    }
    Some(MarketMessage::encode(&ev.topic(), kind, ts, data))
}

fn publish(bus: &MarketBus, sim: &Simulator, events: &[MarketEvent]) {
    for ev in events {
        match ev {
            MarketEvent::BookDelta(d) => {
                let book = sim.market().book_snapshot(&d.symbol).map(MarketEvent::BookSnapshot);
                if let (Some(delta), Some(book)) = (
                    market_message(ev, MarketKind::BookDelta),
                    book.as_ref().and_then(|b| market_message(b, MarketKind::BookSnapshot)),
                ) {
                    bus.publish_book_delta(delta, book);
                }
            }
            MarketEvent::BookSnapshot(_) => {
                if let Some(m) = market_message(ev, MarketKind::BookSnapshot) {
                    bus.publish(m);
                }
            }
            _ => {
                if let Some(m) = market_message(ev, MarketKind::Latest) {
                    bus.publish(m);
                }
            }
        }
    }
}

/// Bring the simulator in line with the database: portfolios it does not know yet (a new
/// user), and bots (new, changed, deleted — the database is their source of truth).
async fn sync_accounts(db: &Db, sim: &mut Simulator) -> Result<(), DbError> {
    let dbc = db.clone();
    let (portfolios, risk, bots) = db
        .read(move |c| {
            Ok((
                all_rows::<Portfolio>(c, &dbc, "portfolios")?,
                all_rows::<Risk>(c, &dbc, "risk")?,
                all_rows::<Bot>(c, &dbc, "bots")?,
            ))
        })
        .await?;
    let mut effects = Vec::new();
    for p in portfolios {
        if sim.engine().portfolio(&p.id).is_none() {
            let r = risk.iter().find(|r| r.portfolio_id == p.id).cloned();
            effects.extend(sim.add_portfolio(p, r, now_ms()));
        }
    }
    persist::write(db, effects).await?;
    let known: Vec<String> = sim.bots().map(|b| b.id.clone()).collect();
    for id in known.iter().filter(|id| !bots.iter().any(|b| &b.id == *id)) {
        sim.remove_bot(id);
    }
    for bot in bots {
        if sim.bot(&bot.id) == Some(&bot) {
            continue;
        }
        if let Err(e) = sim.upsert_bot(bot) {
            tracing::warn!(error = %e, "bot not taken over by the simulator");
        }
    }
    Ok(())
}

/// The row a command is about: the first row it wrote to `table`, as it stands after the
/// whole command (an order accepted and filled at once answers as filled).
fn first_row(effects: &[Effect], table: &str) -> Option<Value> {
    let rows: Vec<Value> = effects.iter().filter(|e| e.table() == table).map(Effect::row_json).collect();
    let id = rows.first()?.get("id")?.clone();
    rows.into_iter().rev().find(|r| r.get("id") == Some(&id))
}

/// The API's commands to the simulator. The receiver outlives each run of the simulator, so
/// a restarted simulator serves the same handle.
pub type Commands = Arc<tokio::sync::Mutex<mpsc::Receiver<Command>>>;

/// Run the simulator until `stop` is cancelled.
///
/// The simulator changes its memory before the database commits what it did. A write that
/// fails (after retries: see `persist::write`) therefore ends this run with the error: the
/// supervisor starts a new one from the database, so the simulator never runs ahead of what
/// was committed, and a command answered with an error has no effect.
pub async fn run(
    db: Db,
    bus: MarketBus,
    settings: SimSettings,
    commands: Commands,
    stop: CancellationToken,
) -> Result<(), DbError> {
    let mut commands = commands.lock().await;
    let initial = load(&db).await?;
    let start = now_ms();
    let config = SimConfig { id_prefix: format!("{start:x}_"), ..SimConfig::new(settings.seed, start) };
    let mut sim = match Simulator::new(config, initial) {
        Ok(sim) => sim,
        Err(e) => {
            tracing::error!(error = %e, "the simulator cannot start");
            return Ok(());
        }
    };
    bus.set_symbols(sim.market().instruments().map(|i| i.symbol.clone()));
    bus.set_kline_intervals(tradewire_sim::KLINE_INTERVALS.iter().map(|iv| (*iv).to_owned()));
    tracing::info!(seed = settings.seed, ticks_per_second = settings.ticks_per_second, "simulator running");
    let period = Duration::from_secs(1) / settings.ticks_per_second.max(1);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut bot_sync = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            Some(cmd) = commands.recv() => serve(&db, &mut sim, cmd).await?,
            _ = tick.tick() => {
                let out = sim.step(now_ms());
                // Market data first: it does not wait for the database.
                publish(&bus, &sim, &out.market);
                persist::write(&db, out.effects).await?;
            }
            _ = bot_sync.tick() => {
                if let Err(e) = sync_accounts(&db, &mut sim).await {
                    tracing::warn!(error = %e, "reading bots failed; will retry");
                }
            }
        }
    }
    bus.set_symbols([]);
    bus.set_kline_intervals([]);
    tracing::info!("simulator stopped");
    Ok(())
}

/// The order this user already placed with this `client_order_id`, if any.
async fn existing_order(db: &Db, order: &tradewire_sim::NewOrder) -> Result<Option<Value>, DbError> {
    let Some(cid) = order.client_order_id.clone() else { return Ok(None) };
    let user = order.user_id.clone();
    let table = db.catalog().topic("orders").expect("built-in topic").clone();
    db.read(move |c| {
        let id = c.text(
            "SELECT id FROM orders WHERE user_id = ?1 AND client_order_id = ?2",
            sql_params![&user, &cid],
        )?;
        match id {
            Some(id) => Ok(crate::db::rows::get_row(c, &table, &user, &id)?.map(Value::Object)),
            None => Ok(None),
        }
    })
    .await
}

/// Serve one API command: apply it, persist its effects, answer with the row it is about.
/// A failed write is answered `Unavailable` and returned, so the run ends and the
/// simulator is rebuilt from the database (the command then had no effect).
async fn serve(db: &Db, sim: &mut Simulator, cmd: Command) -> Result<(), DbError> {
    let now = now_ms();
    // `Err`: the write failed (the simulator is now ahead of the database).
    let persist_then = |effects: Vec<Effect>, table: &'static str| async move {
        let row = first_row(&effects, table);
        persist::write(db, effects).await?;
        Ok(row.ok_or_else(|| Refusal::NotFound(format!("no {table} row"))))
    };
    match cmd {
        Command::PlaceOrder(order, reply) => {
            // Idempotency is checked here, where commands are serialized, against every
            // order ever placed (the simulator only knows its open ones).
            if sim.engine().portfolio(&order.portfolio_id).is_none() {
                // A portfolio created since the last sync (a new user).
                if let Err(e) = sync_accounts(db, sim).await {
                    tracing::warn!(error = %e, "reading accounts failed");
                }
            }
            let r = match existing_order(db, &order).await {
                Ok(Some(row)) => Ok(Ok((row, false))),
                Ok(None) => match sim.place_order(*order, now) {
                    Ok(effects) => persist_then(effects, "orders").await.map(|r| r.map(|row| (row, true))),
                    Err(denied) => Ok(Err(denied.into())),
                },
                Err(e) => {
                    tracing::error!(error = %e, "idempotency check failed");
                    Ok(Err(Refusal::Unavailable))
                }
            };
            answer(reply, r)
        }
        Command::CancelOrder { user_id, order_id, reply } => {
            let r = match sim.cancel_order(&user_id, &order_id, now) {
                Ok(effects) => persist_then(effects, "orders").await,
                Err(denied) => Ok(Err(denied.into())),
            };
            answer(reply, r)
        }
        Command::ClosePosition { user_id, position_id, reply } => {
            let r = match sim.close_position(&user_id, &position_id, now) {
                Ok(effects) => persist_then(effects, "orders").await,
                Err(denied) => Ok(Err(denied.into())),
            };
            answer(reply, r)
        }
        Command::Signal { user_id, bot_id, direction, confidence, reply } => {
            let r = match sim.simulate_signal(&user_id, &bot_id, direction, confidence, now) {
                Ok(effects) => persist_then(effects, "signals").await,
                Err(e) => Ok(Err(Refusal::NotFound(e.to_string()))),
            };
            answer(reply, r)
        }
        Command::Market { symbol, view, reply } => {
            let m = sim.market();
            let value = match view {
                MarketView::Ticker => m.ticker(&symbol).and_then(|t| serde_json::to_value(t).ok()),
                MarketView::Book => m.book_snapshot(&symbol).and_then(|b| serde_json::to_value(b).ok()),
                MarketView::Klines => m.klines(&symbol).and_then(|k| serde_json::to_value(k).ok()),
            };
            let _ = reply.send(value);
            Ok(())
        }
        Command::SyncBots(reply) => {
            if let Err(e) = sync_accounts(db, sim).await {
                tracing::warn!(error = %e, "reading bots failed");
            }
            let _ = reply.send(());
            Ok(())
        }
        Command::Panic => panic!("the simulator was asked to fail (a supervision test)"),
    }
}

/// Send a command's answer. A failed write is answered `Unavailable` and handed back, to
/// end the run (see [`run`]).
fn answer<T>(
    reply: oneshot::Sender<Result<T, Refusal>>,
    r: Result<Result<T, Refusal>, DbError>,
) -> Result<(), DbError> {
    match r {
        Ok(answer) => {
            let _ = reply.send(answer);
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, "persisting a command's effects failed; the simulator restarts from the database");
            let _ = reply.send(Err(Refusal::Unavailable));
            Err(e)
        }
    }
}
