//! [`AppState`]: the services every edge of the server shares (the database, the change
//! log, the hub, the market bus, tokens, the simulator, shutdown), each behind an accessor.
//!
//! It holds services, not settings: each edge (`api`, `gateway`) keeps its own settings in
//! its own router state, and only the application assembly (`app`) reads the configuration.
//! This module imports no edge.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tradewire_hub::{Hub, MarketBus};

use crate::changefeed::ChangeLog;
use crate::credentials::Tokens;
use crate::db::{Catalog, Db};
use crate::market_source::MarketSource;
use crate::sim::SimHandle;
use crate::supervisor::Health;

/// What every handler and session shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

struct Services {
    db: Db,
    log: ChangeLog,
    hub: Hub,
    market_bus: MarketBus,
    tokens: Tokens,
    sim: Option<SimHandle>,
    market_source: Option<Arc<dyn MarketSource>>,
    sessions_close: CancellationToken,
    tracker: TaskTracker,
    metrics: PrometheusHandle,
    instance: String,
    pump_running: AtomicBool,
    health: Health,
    pump_status: Arc<crate::capture::PumpStatus>,
    /// Test seam: stops the pump's task as a panic would (see [`AppState::inject_pump_failure`]).
    pump_fault: tokio::sync::Notify,
}

/// The parts an [`AppState`] is made of (see [`AppState::new`]).
pub struct Parts {
    pub db: Db,
    pub hub: Hub,
    pub market_bus: MarketBus,
    pub tokens: Tokens,
    pub sim: Option<SimHandle>,
    pub market_source: Option<Arc<dyn MarketSource>>,
    pub metrics: PrometheusHandle,
}

impl AppState {
    pub fn new(parts: Parts) -> Self {
        let Parts { db, hub, market_bus, tokens, sim, market_source, metrics } = parts;
        Self(Arc::new(Services {
            log: ChangeLog::new(db.clone()),
            db,
            hub,
            market_bus,
            tokens,
            sim,
            market_source,
            sessions_close: CancellationToken::new(),
            tracker: TaskTracker::new(),
            metrics,
            instance: format!("{:06x}", rand::random::<u32>() & 0xff_ffff),
            pump_running: AtomicBool::new(false),
            health: Health::default(),
            pump_fault: tokio::sync::Notify::new(),
            pump_status: Arc::default(),
        }))
    }

    pub fn db(&self) -> &Db {
        &self.0.db
    }

    /// The captured tables.
    pub fn catalog(&self) -> &Arc<Catalog> {
        self.0.db.catalog()
    }

    /// Reads of the change log (heads, replay, snapshots).
    pub fn log(&self) -> &ChangeLog {
        &self.0.log
    }

    /// Per-user fan-out of changes.
    pub fn hub(&self) -> &Hub {
        &self.0.hub
    }

    /// Public market data, conflated per session (fed by the market source).
    pub fn market_bus(&self) -> &MarketBus {
        &self.0.market_bus
    }

    pub fn tokens(&self) -> &Tokens {
        &self.0.tokens
    }

    /// The running paper-trading simulator, when configured.
    pub fn sim(&self) -> Option<&SimHandle> {
        self.0.sim.as_ref()
    }

    /// Where current market values come from (the simulator, when it runs).
    pub fn market_source(&self) -> Option<&Arc<dyn MarketSource>> {
        self.0.market_source.as_ref()
    }

    /// Cancelled in the drain step "close sessions with 1001".
    pub fn sessions_close(&self) -> &CancellationToken {
        &self.0.sessions_close
    }

    /// Every WebSocket and SSE session task.
    pub fn tracker(&self) -> &TaskTracker {
        &self.0.tracker
    }

    pub fn metrics(&self) -> &PrometheusHandle {
        &self.0.metrics
    }

    /// Names this process in session ids.
    pub fn instance(&self) -> &str {
        &self.0.instance
    }

    /// Is the pump running (for `/readyz`)?
    pub fn pump_running(&self) -> bool {
        self.0.pump_running.load(Ordering::Relaxed)
    }

    /// Which background tasks are down (for `/readyz`).
    pub fn health(&self) -> &Health {
        &self.0.health
    }

    /// Make the running pump task fail, as a panic in it would (for tests of its
    /// supervision).
    #[doc(hidden)]
    pub fn inject_pump_failure(&self) {
        self.0.pump_fault.notify_one();
    }

    /// What the pump reports of itself (lag), for the `system` topic.
    pub fn pump_status(&self) -> &Arc<crate::capture::PumpStatus> {
        &self.0.pump_status
    }

    pub(crate) fn pump_fault(&self) -> &tokio::sync::Notify {
        &self.0.pump_fault
    }

    pub(crate) fn set_pump_running(&self, running: bool) {
        self.0.pump_running.store(running, Ordering::Relaxed);
    }
}
