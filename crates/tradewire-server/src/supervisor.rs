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

/// Which background components are down and why, and how often each was restarted.
/// Cheap to clone; [`Health::changes`] wakes on every change.
#[derive(Debug, Clone)]
pub struct Health(Arc<HealthInner>);

#[derive(Debug)]
struct HealthInner {
    components: Mutex<BTreeMap<&'static str, Component>>,
    changed: tokio::sync::watch::Sender<u64>,
}

/// One supervised component's record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Component {
    /// Why it is down now (`None`: up).
    pub down: Option<String>,
    pub restarts: u64,
    /// The cause of its last failure.
    pub last_failure: Option<String>,
}

impl Default for Health {
    fn default() -> Self {
        Self(Arc::new(HealthInner {
            components: Mutex::default(),
            changed: tokio::sync::watch::Sender::new(0),
        }))
    }
}

impl Health {
    fn update(&self, component: &'static str, f: impl FnOnce(&mut Component)) {
        let mut all = self.0.components.lock().unwrap_or_else(|p| p.into_inner());
        f(all.entry(component).or_default());
        drop(all);
        self.0.changed.send_modify(|n| *n += 1);
    }

    pub fn up(&self, component: &'static str) {
        self.update(component, |c| c.down = None);
    }

    pub fn down(&self, component: &'static str, cause: String) {
        self.update(component, |c| {
            c.restarts += 1;
            c.last_failure = Some(cause.clone());
            c.down = Some(cause);
        });
    }

    /// The components that are down, with their causes.
    pub fn down_components(&self) -> BTreeMap<&'static str, String> {
        let all = self.0.components.lock().unwrap_or_else(|p| p.into_inner());
        all.iter().filter_map(|(name, c)| Some((*name, c.down.clone()?))).collect()
    }

    /// Every supervised component's record.
    pub fn components(&self) -> BTreeMap<&'static str, Component> {
        self.0.components.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A receiver that sees every change.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.changed.subscribe()
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
