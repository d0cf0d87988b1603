//! Operational endpoints: health, readiness and Prometheus metrics.

use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn health_readiness_and_metrics_answer_without_a_token() {
    let app = spawn_app().await;
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready: serde_json::Value =
        app.http.get(app.url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready, json!({"database": true, "pump": true}));

    // Some traffic, so every family has a sample.
    let mut ws = app.ws("alice").await;
    ws.subscribe_snapshot("s", json!(["*"])).await;
    app.insert_signals("alice", 3, "x");
    for _ in 0..3 {
        ws.event().await;
    }
    let text = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for family in [
        "tradewire_connections",
        "tradewire_subscriptions",
        "tradewire_changes_captured_total",
        "tradewire_events_delivered_total",
        "tradewire_pump_lag_seconds",
        "tradewire_sessions",
    ] {
        assert!(text.contains(family), "/metrics lacks {family}:\n{text}");
    }
}

#[tokio::test]
async fn private_endpoints_need_a_token() {
    let app = spawn_app().await;
    for path in ["/v1/bots", "/v1/orders", "/v1/market/symbols", "/v1/changes?since=x:0"] {
        let r = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized", "{path}");
    }
}
