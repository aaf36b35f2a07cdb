//! The member's way to etcd: one client per endpoint the config names,
//! one of them in use at a time, another taken when it fails.
//!
//! etcd's Rust client balances every call over all its endpoints, and a
//! member that died keeps its place in the balance: its calls fail at
//! once (connection refused) and, being the least loaded, it is picked
//! often. Measured with one of three etcd members killed: a third of the
//! takes and half of the scans failed, and shards a dead healer left
//! were taken over 2.3 s later than the first. So, as etcd's own Go
//! client once did, a member pins one endpoint (members start on
//! different ones, by their names) and moves on when a call to it
//! times out or fails for a fault of the endpoint (the connection, or
//! etcd saying it is unavailable, e.g. without a leader), preferring an
//! endpoint that has not failed in the last [`FAILED_LATELY`]. An answer
//! etcd gives on purpose (a compare that failed, a lease not found) says
//! nothing against the endpoint.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions};

/// An endpoint that failed this recently is tried after the others.
pub const FAILED_LATELY: Duration = Duration::from_secs(10);

/// One client per endpoint, one in use.
pub struct Link {
    endpoints: Vec<String>,
    clients: Vec<Client>,
    in_use: AtomicUsize,
    /// When each endpoint last failed.
    failed_at: Mutex<Vec<Option<Instant>>>,
}

impl Link {
    /// A client for each of `endpoints` (each connects lazily: an etcd
    /// member down at start is no error), the one of `member`'s name in
    /// use first.
    pub async fn connect(
        endpoints: &[String],
        options: &ConnectOptions,
        member: &str,
    ) -> Result<Link, etcd_client::Error> {
        let mut clients = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            clients.push(Client::connect([endpoint], Some(options.clone())).await?);
        }
        let first = super::shard_of(member) as usize % endpoints.len().max(1);
        Ok(Link {
            endpoints: endpoints.to_vec(),
            clients,
            in_use: AtomicUsize::new(first),
            failed_at: Mutex::new(vec![None; endpoints.len()]),
        })
    }

    /// The client of the endpoint in use, and which it is (for
    /// [`Link::judge`] and [`Link::failed`]), for a call [`Link::call`]
    /// cannot make (a stream kept open across calls).
    pub fn client(&self) -> (usize, Client) {
        let index = self.in_use.load(Ordering::Relaxed) % self.clients.len();
        (index, self.clients[index].clone())
    }

    /// The URL of the endpoint in use.
    pub fn endpoint(&self) -> &str {
        &self.endpoints[self.in_use.load(Ordering::Relaxed) % self.endpoints.len()]
    }

    /// Runs `op` on the client in use, for at most `within`, and moves
    /// on from its endpoint if the call times out or fails for the
    /// endpoint's fault ([`Link::judge`]).
    pub async fn call<T, Fut>(
        &self,
        within: Duration,
        op: impl FnOnce(Client) -> Fut,
    ) -> Result<Result<T, etcd_client::Error>, tokio::time::error::Elapsed>
    where
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let (index, client) = self.client();
        let answer = tokio::time::timeout(within, op(client)).await;
        self.judge(index, &answer);
        answer
    }

    /// Moves on from endpoint `index` if `answer`, a call through it
    /// within its time, says the endpoint failed.
    pub fn judge<T>(
        &self,
        index: usize,
        answer: &Result<Result<T, etcd_client::Error>, tokio::time::error::Elapsed>,
    ) {
        match answer {
            Err(_) => self.failed(index),
            Ok(Err(err)) if endpoint_fault(err) => self.failed(index),
            Ok(_) => {}
        }
    }

    /// Endpoint `index` failed: the next that has not failed lately (or
    /// the next, if all have) is used from now, once per failure however
    /// many calls saw it.
    pub fn failed(&self, index: usize) {
        let n = self.clients.len();
        if n < 2 {
            return;
        }
        let now = Instant::now();
        let next = {
            let mut failed_at = self.failed_at.lock().unwrap_or_else(|p| p.into_inner());
            failed_at[index] = Some(now);
            (1..n)
                .map(|k| (index + k) % n)
                .find(|&i| failed_at[i].is_none_or(|at| now.duration_since(at) > FAILED_LATELY))
                .unwrap_or((index + 1) % n)
        };
        let _ = self
            .in_use
            .compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// Whether `err` is the endpoint's fault (its connection, or etcd saying
/// it cannot serve: unavailable, no leader, cancelled, deadline), not an
/// answer etcd gave on purpose.
pub fn endpoint_fault(err: &etcd_client::Error) -> bool {
    // gRPC's codes: 1 cancelled, 2 unknown (what a broken transport
    // reports), 4 deadline exceeded, 14 unavailable.
    match err {
        etcd_client::Error::IoError(_) | etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(status) => matches!(status.code() as i32, 1 | 2 | 4 | 14),
        // The keep-alive stream's sender closed under it.
        etcd_client::Error::LeaseKeepAliveError(why) => why != "lease not found",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(n: usize) -> Vec<String> {
        // Nothing listens there; clients connect lazily.
        (0..n)
            .map(|i| format!("http://127.0.0.1:{}", 9 + i))
            .collect()
    }

    async fn link(n: usize) -> Link {
        let link = Link::connect(&endpoints(n), &ConnectOptions::new(), "h1")
            .await
            .expect("lazy clients");
        link.in_use.store(0, Ordering::Relaxed);
        link
    }

    fn refused() -> etcd_client::Error {
        etcd_client::Error::IoError(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
    }

    #[tokio::test]
    async fn a_failure_moves_to_the_next_endpoint_once() {
        let link = link(3).await;
        let (first, _) = link.client();
        link.failed(first);
        link.failed(first); // a second call that saw the same failure
        assert_eq!(link.client().0, 1);
        assert_eq!(link.endpoint(), "http://127.0.0.1:10");
    }

    #[tokio::test]
    async fn an_endpoint_that_failed_lately_is_passed_over_until_all_have() {
        let link = link(3).await;
        link.failed(0);
        link.failed(1);
        assert_eq!(link.client().0, 2, "0 failed lately");
        link.failed(2);
        assert_eq!(link.client().0, 0, "all failed lately: the next");
    }

    #[tokio::test]
    async fn only_faults_of_the_endpoint_move_it() {
        let link = link(3).await;
        let not_found: Result<Result<(), _>, tokio::time::error::Elapsed> = Ok(Err(
            etcd_client::Error::LeaseKeepAliveError("lease not found".into()),
        ));
        link.judge(0, &not_found);
        link.judge(0, &Ok(Ok(())));
        link.judge(
            0,
            &Ok(Err::<(), _>(etcd_client::Error::InvalidArgs("x".into()))),
        );
        assert_eq!(link.client().0, 0);
        link.judge(0, &Ok(Err::<(), _>(refused())));
        assert_eq!(link.client().0, 1);
    }

    #[tokio::test]
    async fn a_call_that_timed_out_moves_it() {
        let link = link(2).await;
        let late = tokio::time::timeout(
            Duration::ZERO,
            std::future::pending::<Result<(), etcd_client::Error>>(),
        )
        .await;
        link.judge(0, &late);
        assert_eq!(link.client().0, 1);
    }

    #[tokio::test]
    async fn one_endpoint_stays_in_use() {
        let link = link(1).await;
        link.failed(0);
        assert_eq!(link.client().0, 0);
    }

    #[tokio::test]
    async fn members_start_on_endpoints_by_their_names() {
        let mut first = std::collections::HashSet::new();
        for member in ["h1", "h2", "h3", "h4", "h5", "h6"] {
            let link = Link::connect(&endpoints(3), &ConnectOptions::new(), member)
                .await
                .expect("lazy clients");
            first.insert(link.client().0);
        }
        assert!(first.len() > 1, "{first:?}");
    }
}
