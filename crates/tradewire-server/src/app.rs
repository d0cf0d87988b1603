//! The application: shared state, the router, and `serve` with its fixed drain order.

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::trace::TraceLayer;
use tradewire_hub::{Hub, MarketBus};

use crate::auth::{Tokens, load_or_create_secret};
use crate::changefeed::{ChangeLog, pump};
use crate::config::Config;
use crate::db::{Db, seed};
use crate::market::MarketSource;
use crate::sim::SimHandle;
use crate::{api, gateway, web};

/// What every handler and session shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub config: Config,
    pub db: Db,
    pub log: ChangeLog,
    pub hub: Hub,
    /// Public market data, conflated per session (fed by a market source).
    pub market: MarketBus,
    pub tokens: Tokens,
    /// The running paper-trading simulator, when configured.
    pub sim: Option<SimHandle>,
    /// Where current market values come from (the simulator, when it runs).
    pub market_source: Option<Arc<dyn MarketSource>>,
    /// Cancelled in the drain step "close sessions with 1001".
    pub sessions_close: CancellationToken,
    /// Every WebSocket and SSE session task.
    pub tracker: TaskTracker,
    pub metrics: PrometheusHandle,
    /// Names this process in session ids.
    pub instance: String,
    /// Checked against when a login names an unknown user, so both take equally long.
    pub dummy_password_hash: String,
    pump_running: AtomicBool,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn pump_running(&self) -> bool {
        self.pump_running.load(Ordering::Relaxed)
    }
}

/// A built server, ready to serve (tests reach into its state).
pub struct Server {
    state: AppState,
    sim_commands: Option<tokio::sync::mpsc::Receiver<crate::sim::Command>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error("JWT secret in {dir}: {source}")]
    Secret { dir: String, source: std::io::Error },
}

impl Server {
    /// Open the database (migrations, capture triggers, demo data) and build the state.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let settings = config.db_settings();
        let db = tokio::task::spawn_blocking(move || Db::open(&settings))
            .await
            .map_err(|_| crate::db::DbError::Join)??;
        if config.demo {
            db.write(|tx| seed::demo(tx)).await?;
        } else {
            db.write(|tx| seed::instruments(tx)).await?;
        }
        let secret = load_or_create_secret(config.jwt_secret.as_ref(), &config.data_dir)
            .map_err(|source| StartError::Secret { dir: config.data_dir.display().to_string(), source })?;
        let (sim, sim_commands) = match config.simulator {
            true => {
                let (handle, rx) = SimHandle::channel();
                (Some(handle), Some(rx))
            }
            false => (None, None),
        };
        let market_source = sim.clone().map(|h| Arc::new(h) as Arc<dyn MarketSource>);
        let state = AppState(Arc::new(Inner {
            sim,
            market_source,
            tokens: Tokens::new(&secret, config.token_ttl_secs),
            log: ChangeLog::new(db.clone()),
            hub: Hub::new(config.queue_limits()),
            market: MarketBus::new(),
            db,
            sessions_close: CancellationToken::new(),
            tracker: TaskTracker::new(),
            metrics: crate::telemetry::metrics_handle(),
            instance: format!("{:06x}", rand::random::<u32>() & 0xff_ffff),
            dummy_password_hash: crate::auth::hash_password(&format!("{:x}", rand::random::<u128>())),
            pump_running: AtomicBool::new(false),
            config,
        }));
        Ok(Self { state, sim_commands })
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn router(&self) -> Router {
        Router::new()
            .merge(api::router())
            .route("/v1/ws", get(gateway::ws::handler))
            .route("/v1/sse", get(gateway::sse::handler))
            .route("/v1/changes", get(gateway::poll::handler))
            .merge(web::router())
            .layer(TraceLayer::new_for_http())
            .with_state(self.state.clone())
    }

    /// Serve on `listener` until `shutdown` is cancelled, then drain in order: stop
    /// accepting → let the pump publish what is committed → close sessions with 1001 →
    /// close the database. Each step has a deadline.
    pub async fn serve(mut self, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
        let state = self.state.clone();
        let addr: SocketAddr = listener.local_addr()?;
        // Before the first connection is accepted (see `pump::Start`).
        let start = pump::start(&state.db).await?;
        let pump_stop = CancellationToken::new();
        let pump = {
            let (db, hub, settings, stop) =
                (state.db.clone(), state.hub.clone(), state.config.pump_settings(), pump_stop.clone());
            let state = state.clone();
            tokio::spawn(async move {
                state.pump_running.store(true, Ordering::Relaxed);
                let r = pump::run(start, db, hub, settings, stop).await;
                state.pump_running.store(false, Ordering::Relaxed);
                if let Err(e) = &r {
                    tracing::error!(error = %e, "pump stopped");
                }
                r
            })
        };
        let sim_stop = CancellationToken::new();
        let sim = self.sim_commands.take().map(|rx| {
            let (db, bus, settings) = (state.db.clone(), state.market.clone(), state.config.sim_settings());
            tokio::spawn(crate::sim::run(db, bus, settings, rx, sim_stop.clone()))
        });
        let accept_stop = CancellationToken::new();
        let http = tokio::spawn(
            axum::serve(listener, self.router())
                .with_graceful_shutdown(accept_stop.clone().cancelled_owned())
                .into_future(),
        );
        tracing::info!(%addr, "serving");
        shutdown.cancelled().await;

        let deadline = Duration::from_millis(state.config.shutdown_timeout_ms);
        tracing::info!("shutdown: stop accepting");
        accept_stop.cancel();
        if let Some(sim) = sim {
            tracing::info!("shutdown: stopping the simulator");
            sim_stop.cancel();
            if tokio::time::timeout(deadline, sim).await.is_err() {
                tracing::warn!("the simulator did not stop in time");
            }
        }
        tracing::info!("shutdown: draining the pump");
        pump_stop.cancel();
        match tokio::time::timeout(deadline, pump).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "pump ended with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "pump task failed"),
            Err(_) => tracing::warn!("pump did not drain in time"),
        }
        tracing::info!(sessions = state.hub.stats().sessions, "shutdown: closing sessions with 1001");
        state.sessions_close.cancel();
        state.tracker.close();
        if tokio::time::timeout(deadline, state.tracker.wait()).await.is_err() {
            tracing::warn!("some sessions did not close in time");
        }
        if tokio::time::timeout(deadline, http).await.is_err() {
            tracing::warn!("HTTP connections did not finish in time");
        }
        tracing::info!("shutdown: done");
        Ok(())
    }
}

/// Build and serve: the entry point of `tradewire serve` and of the tests.
pub async fn run(listener: TcpListener, config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    Server::build(config).await?.serve(listener, shutdown).await
}
