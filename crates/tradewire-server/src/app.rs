//! The application assembly: reads the [`Config`] once, builds every part with its own
//! settings, wires the router, and owns start-up and the fixed drain order of shutdown.
//!
//! Start-up: open the database (migrations, catalog) → install capture → seed → build the
//! shared services. Serving: fix the pump's starting point, start the pump and the
//! simulator, accept connections. Shutdown: stop accepting → stop the simulator → the pump
//! publishes what is committed → sessions close with 1001 → the database closes.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;
use tradewire_hub::{Hub, MarketBus};

use crate::capture::{Capture, CaptureError, CaptureSettings};
use crate::config::Config;
use crate::credentials::{Tokens, load_or_create_secret};
use crate::db::{Db, DbError, seed};
use crate::http::redacted_uri;
use crate::market_source::MarketSource;
use crate::sim::{self, SimHandle};
use crate::state::{AppState, Parts};
use crate::supervisor::supervise;
use crate::{api, gateway, web};

/// A built server, ready to serve (tests reach into its state).
pub struct Server {
    state: AppState,
    config: Config,
    capture: Capture,
    sim_commands: Option<tokio::sync::mpsc::Receiver<sim::Command>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error("JWT secret: {0}")]
    Secret(#[from] crate::credentials::SecretError),
}

impl Server {
    /// Open the database (migrations, catalog), install capture, seed, and build the state.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let settings = config.db_settings();
        let db =
            tokio::task::spawn_blocking(move || Db::open(&settings)).await.map_err(|_| DbError::Join)??;
        let capture = Capture::install(&db, &config.capture_settings()).await?;
        if config.demo_mode() {
            db.write(|tx| seed::demo(tx)).await?;
        } else {
            db.write(|tx| seed::leave_demo(tx)).await?;
        }
        let secret = load_or_create_secret(config.jwt_secret.as_ref(), &config.data_dir)?;
        let (sim, sim_commands) = match config.simulator {
            true => {
                let (handle, rx) = SimHandle::channel();
                (Some(handle), Some(rx))
            }
            false => (None, None),
        };
        let market_source = sim.clone().map(|h| Arc::new(h) as Arc<dyn MarketSource>);
        let state = AppState::new(Parts {
            tokens: Tokens::new(&secret, config.token_ttl_secs),
            hub: Hub::new(config.queue_limits()),
            market_bus: MarketBus::new(),
            sim,
            market_source,
            metrics: crate::telemetry::metrics_handle(),
            db,
        });
        Ok(Self { state, config, capture, sim_commands })
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn router(&self) -> Router {
        Router::new()
            .merge(api::router(self.state.clone(), self.config.api_settings()))
            .merge(gateway::router(self.state.clone(), self.config.gateway_settings()))
            .merge(web::router())
            // A span per request without the query's token (`?token=` is how browsers
            // authenticate WebSockets and EventSources).
            .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                tracing::debug_span!("request", method = %req.method(), uri = %redacted_uri(req.uri()))
            }))
    }

    /// Start capture: the one place that decides which capture reader runs. Its starting
    /// point is fixed here, before the first connection is accepted (see [`Capture::pump`]).
    ///
    /// The pump runs under supervision. A pump that fails mid-way may have published part
    /// of what it read, so its successor starts at the log's head, and every live session
    /// is then cut off (4008): each client resumes from its own position and reads what it
    /// missed from the log. Nothing is lost, nothing is delivered twice.
    async fn start_capture(
        &self,
        settings: CaptureSettings,
        stop: CancellationToken,
    ) -> Result<JoinHandle<()>, CaptureError> {
        let mut first = Some(self.capture.pump(self.state.db()).await?);
        let (state, capture) = (self.state.clone(), self.capture.clone());
        let health = state.health().clone();
        Ok(tokio::spawn(supervise("pump", health, stop.clone(), move || {
            let (state, capture, stop, first) = (state.clone(), capture.clone(), stop.clone(), first.take());
            async move {
                let pump = match first {
                    Some(pump) => pump,
                    None => {
                        let pump = capture.pump(state.db()).await?;
                        state.hub().cut_off_all();
                        tracing::warn!("capture restarted: live sessions cut off to resume from the log");
                        pump
                    }
                };
                state.set_pump_running(true);
                let status = state.pump_status().clone();
                let run = pump.run(state.db().clone(), state.hub().clone(), settings.pump, stop, status);
                let failed = tokio::select! {
                    () = run => false,
                    () = state.pump_fault().notified() => true,
                };
                state.set_pump_running(false);
                if failed {
                    anyhow::bail!("failure injected by a test");
                }
                Ok(())
            }
        })))
    }

    /// Serve on `listener` until `shutdown` is cancelled, then drain in order: stop
    /// accepting → stop the simulator → let the pump publish what is committed → close
    /// sessions with 1001 → close the database. Each step has a deadline.
    pub async fn serve(mut self, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
        let state = self.state.clone();
        let addr: SocketAddr = listener.local_addr()?;
        let pump_stop = CancellationToken::new();
        let pump = self.start_capture(self.config.capture_settings(), pump_stop.clone()).await?;
        let sim_stop = CancellationToken::new();
        // The simulator (and with it the market source) runs under supervision: a failure
        // restarts it from the database, serving the same command channel.
        let sim = self.sim_commands.take().map(|rx| {
            let (db, bus, settings) =
                (state.db().clone(), state.market_bus().clone(), self.config.sim_settings());
            let commands: sim::Commands = Arc::new(tokio::sync::Mutex::new(rx));
            let stop = sim_stop.clone();
            tokio::spawn(supervise("simulator", state.health().clone(), sim_stop.clone(), move || {
                let (db, bus, commands, stop) = (db.clone(), bus.clone(), commands.clone(), stop.clone());
                async move { Ok(sim::run(db, bus, settings, commands, stop).await?) }
            }))
        });
        // The public `system` topic: health pushed to dashboards.
        let report_stop = CancellationToken::new();
        let reporter = {
            let (state, stop) = (state.clone(), report_stop.clone());
            tokio::spawn(supervise("system_topic", state.health().clone(), report_stop.clone(), move || {
                crate::system::report(state.clone(), stop.clone())
            }))
        };
        let accept_stop = CancellationToken::new();
        let http = tokio::spawn(
            axum::serve(listener, self.router().into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(accept_stop.clone().cancelled_owned())
                .into_future(),
        );
        tracing::info!(%addr, "serving");
        shutdown.cancelled().await;

        let deadline = self.config.shutdown_timeout();
        tracing::info!("shutdown: stop accepting");
        accept_stop.cancel();
        report_stop.cancel();
        let _ = tokio::time::timeout(deadline, reporter).await;
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
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "pump task failed"),
            Err(_) => tracing::warn!("pump did not drain in time"),
        }
        tracing::info!(sessions = state.hub().stats().sessions, "shutdown: closing sessions with 1001");
        state.sessions_close().cancel();
        state.tracker().close();
        if tokio::time::timeout(deadline, state.tracker().wait()).await.is_err() {
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
