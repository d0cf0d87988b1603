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

/// A log far behind its retention (120,000 changes older than the window, as after ingest
/// faster than pruning) is pruned within seconds of the round that finds it behind — a
/// batch every 100 ms, not one batch per interval (here an hour) — and nothing inside the
/// window is touched.
#[tokio::test]
async fn pruning_catches_up_with_a_log_far_behind_and_keeps_the_window() {
    use crate::backend::{Backend, backend, shell};
    use crate::helpers::{Bystander, eventually};

    let app = crate::helpers::spawn_app_with(|c| c.prune_interval_secs = 3600).await;
    let count = |sql: &str| app.sql().int(sql, &[]);
    let in_window = count("SELECT COUNT(*) FROM tw_changes WHERE commit_ts > 0");
    // Ids below every existing one, so the old rows are the log's oldest.
    let old = match backend() {
        Backend::Sqlite => {
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 120000)
             INSERT INTO tw_changes(id, user_id, seq, topic, op, row_json, old_json, commit_ts)
             SELECT -i, 'u_gone', i, 'signals', 'insert', '{}', NULL, 0 FROM n;"
        }
        _ => {
            "INSERT INTO tw_changes(id, user_id, seq, topic, op, row_json, old_json, commit_ts)
             OVERRIDING SYSTEM VALUE
             SELECT -i, 'u_gone', i, 'signals', 'insert', '{}', NULL, 0 FROM generate_series(1, 120000) AS i;"
        }
    };
    shell(&app.target(), old);
    // The round at start finds the log behind.
    let app = app.restart().await;
    let count = |sql: &str| app.sql().int(sql, &[]);
    eventually("the old changes are pruned", || async {
        (count("SELECT COUNT(*) FROM tw_changes WHERE user_id = 'u_gone'") == 0).then_some(())
    })
    .await;
    assert_eq!(
        count("SELECT COUNT(*) FROM tw_changes WHERE commit_ts > 0"),
        in_window,
        "nothing inside the retention window was removed"
    );
    let mut alice = Bystander::new(&app, "alice").await;
    alice.still_served(&app).await;
}
