//! Logs and metrics set-up. Tests call nothing here (or `init_logs` with a quiet filter),
//! so their output stays clean.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Install the process's log subscriber. Safe to call more than once (later calls do nothing).
pub fn init_logs(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(true);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// The process's Prometheus recorder. The `metrics` facade has one recorder per process,
/// so servers started in one test process share it (their counters add up).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle =
                PrometheusBuilder::new().install_recorder().expect("no other metrics recorder is installed");
            describe();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!("tradewire_connections", "Open client connections, by transport");
    describe_gauge!("tradewire_sessions", "Sessions registered in the hub");
    describe_gauge!("tradewire_subscriptions", "Live subscriptions");
    describe_counter!("tradewire_changes_captured_total", "Changes read from the change log and published");
    describe_counter!("tradewire_events_delivered_total", "Event messages written to clients");
    describe_histogram!("tradewire_pump_lag_seconds", "Commit to publish delay of the pump");
    describe_counter!("tradewire_queue_overflows_total", "Session queues that overflowed (slow consumers)");
    describe_counter!("tradewire_disconnects_total", "Server-initiated WebSocket closes, by code");
    describe_counter!("tradewire_pump_errors_total", "Failed reads of the change log (retried)");
}
