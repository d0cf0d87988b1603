//! Logs and metrics set-up. Tests call nothing here (or `init_logs` with a quiet filter),
//! so their output stays clean.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

/// Install the process's log subscriber. Safe to call more than once (later calls do nothing).
pub fn init_logs(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(true);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// How often the recorder's histogram samples are folded into their summaries (and the
/// allocator's figures sampled).
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads the global allocator's figures: bytes the program has allocated, and bytes the
/// allocator keeps resident. Set by a binary whose allocator can tell.
pub type AllocatorStats = fn() -> Option<(u64, u64)>;

static ALLOCATOR_STATS: OnceLock<AllocatorStats> = OnceLock::new();

/// Export the allocator's figures as `tradewire_allocator_{allocated,resident}_bytes`.
pub fn set_allocator_stats(stats: AllocatorStats) {
    let _ = ALLOCATOR_STATS.set(stats);
}

fn sample_allocator() {
    if let Some((allocated, resident)) = ALLOCATOR_STATS.get().and_then(|stats| stats()) {
        metrics::gauge!("tradewire_allocator_allocated_bytes").set(allocated as f64);
        metrics::gauge!("tradewire_allocator_resident_bytes").set(resident as f64);
    }
}

/// The process's Prometheus recorder. The `metrics` facade has one recorder per process,
/// so servers started in one test process share it (their counters add up).
///
/// A thread runs the recorder's upkeep every few seconds: histogram samples (one per
/// published change) are otherwise kept until `/metrics` is scraped, so a server nobody
/// scrapes grew by every sample it ever recorded.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle =
                PrometheusBuilder::new().install_recorder().expect("no other metrics recorder is installed");
            describe();
            let upkeep = handle.clone();
            let started = std::thread::Builder::new().name("tw-metrics-upkeep".into()).spawn(move || {
                loop {
                    sample_allocator();
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                }
            });
            if let Err(e) = started {
                tracing::warn!(error = %e, "cannot start the metrics upkeep thread; histograms grow until scraped");
            }
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!("tradewire_connections", "Open client connections, by transport");
    describe_gauge!("tradewire_sessions", "Sessions registered in the hub");
    describe_gauge!("tradewire_subscriptions", "Live subscriptions");
    describe_gauge!(
        "tradewire_allocator_allocated_bytes",
        "Heap bytes in use by the program (when the allocator reports it)"
    );
    describe_gauge!(
        "tradewire_allocator_resident_bytes",
        "Bytes the allocator keeps resident (when it reports it)"
    );
    describe_counter!("tradewire_changes_captured_total", "Changes read from the change log and published");
    describe_counter!("tradewire_events_delivered_total", "Event messages written to clients");
    describe_histogram!("tradewire_pump_lag_seconds", "Commit to publish delay of the pump");
    describe_counter!("tradewire_queue_overflows_total", "Session queues that overflowed (slow consumers)");
    describe_counter!("tradewire_disconnects_total", "Server-initiated WebSocket closes, by code");
    describe_counter!("tradewire_pump_errors_total", "Failed reads of the change log (retried)");
}
