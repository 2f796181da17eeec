//! The load loop: `concurrency` tasks take request numbers from a shared counter until the count or
//! the time budget is used up, and record each request's latency. Both bounds always apply, so a run
//! always ends by itself.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What one request achieved.
#[derive(Debug, Clone, Default)]
pub struct Done {
    /// Entities the server accepted (a single-entity request: 0 or 1).
    pub ok: u64,
    /// Entities the server refused.
    pub failed: u64,
    /// Why something failed, if it did.
    pub error: Option<String>,
}

impl Done {
    pub fn ok(ok: u64) -> Done {
        Done {
            ok,
            ..Done::default()
        }
    }

    pub fn failed(failed: u64, error: String) -> Done {
        Done {
            ok: 0,
            failed,
            error: Some(error),
        }
    }
}

/// The result of a run.
#[derive(Debug)]
pub struct Outcome {
    pub requests: u64,
    pub ok: u64,
    pub failed: u64,
    pub elapsed: Duration,
    /// Every request's latency, sorted.
    pub latencies: Vec<Duration>,
    /// The first few errors.
    pub errors: Vec<String>,
    /// Whether the time budget ran out before the count was reached.
    pub timed_out: bool,
}

/// Most error messages kept for the report.
const KEPT_ERRORS: usize = 10;

/// Runs `op(0)`, `op(1)`, … `op(total - 1)` on `concurrency` tasks, stopping early when `budget` has
/// elapsed (requests in flight finish).
pub async fn run<F, Fut>(concurrency: usize, total: u64, budget: Duration, op: F) -> Outcome
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Done> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let op = Arc::clone(&op);
        let next = Arc::clone(&next);
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let (mut ok, mut failed) = (0, 0);
            let mut errors = Vec::new();
            let mut timed_out = false;
            loop {
                if start.elapsed() >= budget {
                    timed_out = true;
                    break;
                }
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= total {
                    break;
                }
                let sent = Instant::now();
                let done = op(index).await;
                latencies.push(sent.elapsed());
                ok += done.ok;
                failed += done.failed;
                if let Some(error) = done.error
                    && errors.len() < KEPT_ERRORS
                {
                    errors.push(error);
                }
            }
            (latencies, ok, failed, errors, timed_out)
        });
    }
    let mut outcome = Outcome {
        requests: 0,
        ok: 0,
        failed: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        errors: Vec::new(),
        timed_out: false,
    };
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((latencies, ok, failed, errors, timed_out)) => {
                outcome.latencies.extend(latencies);
                outcome.ok += ok;
                outcome.failed += failed;
                outcome.timed_out |= timed_out;
                for error in errors {
                    if outcome.errors.len() < KEPT_ERRORS {
                        outcome.errors.push(error);
                    }
                }
            }
            Err(error) => outcome.errors.push(format!("a load task failed: {error}")),
        }
    }
    outcome.elapsed = start.elapsed();
    outcome.requests = outcome.latencies.len() as u64;
    outcome.latencies.sort_unstable();
    outcome
}

/// The `p`-th percentile (nearest rank) of sorted latencies.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&sorted, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&sorted, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[tokio::test]
    async fn runs_stop_at_the_count() {
        let outcome = run(3, 10, Duration::from_secs(10), |_| async { Done::ok(1) }).await;
        assert_eq!((outcome.requests, outcome.ok, outcome.failed), (10, 10, 0));
        assert!(!outcome.timed_out);
    }

    #[tokio::test]
    async fn runs_stop_at_the_time_budget() {
        let outcome = run(2, u64::MAX, Duration::from_millis(50), |_| async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Done::ok(1)
        })
        .await;
        assert!(outcome.timed_out);
        assert!(outcome.requests < 100);
    }
}
