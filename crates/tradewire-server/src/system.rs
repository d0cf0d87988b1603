//! The public `system` topic: the server's own health, pushed to whoever subscribes (a
//! dashboard's health badge needs no polling). Each component's state (`up`, or `down`
//! with its cause), the pump's lag, and whether a market source runs; sent when it
//! changes (at once when a supervised task fails or comes back), and every few seconds
//! regardless, so a new subscriber is never long without it
//! (the bus also hands the latest value to each new subscriber at once).

use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tradewire_hub::{MarketKind, MarketMessage};

use crate::clock::now_ms;
use crate::state::AppState;

/// The public topic name.
pub const TOPIC: &str = "system";
/// How often health is looked at.
const EVERY: Duration = Duration::from_secs(1);
/// Sent at least this often, changed or not.
const REFRESH: Duration = Duration::from_secs(5);

/// The health document: `status` is `ok` when every component is up, else `degraded`.
pub async fn status(state: &AppState) -> Value {
    let health = state.health().components();
    let component = |name: &str, up: bool| {
        let record = health.get(name).cloned().unwrap_or_default();
        let mut v = match record.down {
            Some(cause) => json!({"state": "down", "cause": cause}),
            None if !up => json!({"state": "down"}),
            None => json!({"state": "up"}),
        };
        if record.restarts > 0 {
            v["restarts"] = json!(record.restarts);
            v["last_failure"] = json!(record.last_failure);
        }
        v
    };
    let database = state.db().ping().await.is_ok();
    let pump = state.pump_status();
    let mut components = json!({
        "database": component("database", database),
        "pump": component("pump", state.pump_running()),
    });
    components["pump"]["lag_ms"] = json!(pump.lag_ms());
    components["pump"]["last_published_at"] = json!(pump.published_at_ms());
    if state.sim().is_some() {
        components["simulator"] = component("simulator", true);
    }
    components["market_source"] = match state.market_source() {
        Some(_) => component("simulator", true),
        None => json!({"state": "none"}),
    };
    let all_up = components.as_object().is_some_and(|c| c.values().all(|v| v["state"] != "down"));
    json!({"status": if all_up { "ok" } else { "degraded" }, "components": components})
}

/// Publish [`status`] on the `system` topic until `stop`.
pub async fn report(state: AppState, stop: CancellationToken) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(EVERY);
    let mut changes = state.health().changes();
    let mut last: Option<(Value, tokio::time::Instant)> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            // A component went down or came back: say so now, not at the next tick.
            Ok(()) = changes.changed() => {}
            () = stop.cancelled() => return Ok(()),
        }
        let now = status(&state).await;
        // The pump's last-published time moves with every change: it alone is no news.
        let news = |old: &Value| {
            let strip = |v: &Value| {
                let mut v = v.clone();
                v["components"]["pump"]["last_published_at"] = Value::Null;
                v["components"]["pump"]["lag_ms"] = Value::Null;
                v
            };
            strip(old) != strip(&now)
        };
        let due = match &last {
            None => true,
            Some((old, at)) => news(old) || at.elapsed() >= REFRESH,
        };
        if due {
            state.market_bus().publish(MarketMessage::encode(
                TOPIC,
                MarketKind::Latest,
                now_ms(),
                now.clone(),
            ));
            last = Some((now, tokio::time::Instant::now()));
        }
    }
}
