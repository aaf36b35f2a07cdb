//! Whose timer a check made in a worker waits on: the worker's own
//! runtime's, for a call healer sent, or the package's, for a watched
//! check whose loop runs on the package's runtime (a task there may use
//! no timer of the worker's runtime, whose driver it cannot reach).

use std::future::Future;
use std::time::{Duration, Instant};

use crate::plugins::in_process::PackageRuntime;

/// The timer of the runtime a check's task runs on.
#[derive(Clone, Copy)]
pub enum Timer {
    /// The worker's runtime (Tokio's timer of this binary).
    Worker,
    /// The package's runtime, lent to the worker.
    Package(PackageRuntime),
}

impl Timer {
    /// Waits until `at`.
    pub async fn sleep_until(self, at: Instant) {
        match self {
            Timer::Worker => tokio::time::sleep_until(at.into()).await,
            Timer::Package(runtime) => {
                runtime
                    .sleep(at.saturating_duration_since(Instant::now()))
                    .await;
            }
        }
    }

    /// What `work` comes to within `limit`; `None` when it took longer
    /// (and it is dropped).
    pub async fn within<F: Future>(self, limit: Duration, work: F) -> Option<F::Output> {
        match self {
            Timer::Worker => tokio::time::timeout(limit, work).await.ok(),
            Timer::Package(runtime) => {
                let ends = runtime.sleep(limit);
                tokio::select! {
                    biased;
                    done = work => Some(done),
                    () = ends => None,
                }
            }
        }
    }
}
