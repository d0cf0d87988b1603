//! Background tasks under supervision. A supervised task that panics or fails is logged
//! with its cause, counted (`tradewire_task_restarts_total{task}`), marked down in
//! [`Health`] — so `/readyz` answers 503 naming it — and started again after a backoff
//! (100 ms doubling to 5 s), from the database state. A task that ends because the server
//! is stopping is not restarted.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Which background components are down, and why. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<Mutex<BTreeMap<&'static str, String>>>);

impl Health {
    pub fn up(&self, component: &'static str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(component);
    }

    pub fn down(&self, component: &'static str, cause: String) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(component, cause);
    }

    /// The components that are down, with their causes.
    pub fn down_components(&self) -> BTreeMap<&'static str, String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Run the task `start` makes until `stop`, making a new one whenever it fails.
pub async fn supervise<F, Fut>(task: &'static str, health: Health, stop: CancellationToken, mut start: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        health.up(task);
        let started = tokio::time::Instant::now();
        let result = tokio::spawn(start()).await;
        if stop.is_cancelled() {
            return;
        }
        let cause = match result {
            Ok(Ok(())) => "ended on its own".to_owned(),
            Ok(Err(e)) => format!("failed: {e:#}"),
            Err(join) => match join.try_into_panic() {
                Ok(panic) => {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".to_owned());
                    format!("panicked: {message}")
                }
                Err(_) => "was cancelled".to_owned(),
            },
        };
        if started.elapsed() > Duration::from_secs(30) {
            backoff = Duration::from_millis(100);
        }
        tracing::error!(task, %cause, retry_in = ?backoff, "background task stopped; restarting it");
        metrics::counter!("tradewire_task_restarts_total", "task" => task).increment(1);
        health.down(task, cause);
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_task_that_panics_is_marked_down_and_started_again() {
        let (health, stop) = (Health::default(), CancellationToken::new());
        let runs = Arc::new(AtomicU32::new(0));
        let supervisor = {
            let (health, stop, runs) = (health.clone(), stop.clone(), runs.clone());
            tokio::spawn(supervise("demo", health, stop.clone(), move || {
                let (runs, stop) = (runs.clone(), stop.clone());
                async move {
                    if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                        panic!("boom");
                    }
                    stop.cancelled().await;
                    Ok(())
                }
            }))
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while runs.load(Ordering::SeqCst) < 2 {
            if let Some(cause) = health.down_components().get("demo") {
                assert!(cause.contains("boom"), "{cause}");
            }
            assert!(tokio::time::Instant::now() < deadline, "not restarted");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        while !health.down_components().is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "not marked up again");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.cancel();
        supervisor.await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 2, "not restarted after a stop");
    }
}
