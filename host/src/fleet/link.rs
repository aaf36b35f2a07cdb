//! The member's way to etcd: one client per endpoint the config names,
//! one of them in use at a time, the next taken when it fails.
//!
//! etcd's Rust client balances every call over all its endpoints, and a
//! member that died keeps its place in the balance: its calls fail at
//! once (connection refused) and, being the least loaded, it is picked
//! often. Measured with one of three etcd members killed: a third of the
//! takes and half of the scans failed, and shards a dead healer left
//! were taken over 2.3 s later than the first. So, as etcd's own Go
//! client once did, the member pins one endpoint and moves to the next
//! when a call to it fails or does not answer in time.

use std::sync::atomic::{AtomicUsize, Ordering};

use etcd_client::{Client, ConnectOptions};

/// One client per endpoint, one in use.
pub struct Link {
    clients: Vec<Client>,
    in_use: AtomicUsize,
}

impl Link {
    /// A client for each of `endpoints` (each connects lazily: an etcd
    /// member down at start is no error).
    pub async fn connect(
        endpoints: &[String],
        options: &ConnectOptions,
    ) -> Result<Link, etcd_client::Error> {
        let mut clients = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            clients.push(Client::connect([endpoint], Some(options.clone())).await?);
        }
        Ok(Link {
            clients,
            in_use: AtomicUsize::new(0),
        })
    }

    /// The client of the endpoint in use, and which it is (for
    /// [`Link::failed`]).
    pub fn client(&self) -> (usize, Client) {
        let index = self.in_use.load(Ordering::Relaxed);
        (index, self.clients[index % self.clients.len()].clone())
    }

    /// A call through the client `index` failed: the next endpoint is
    /// used from now (once per failure, however many calls saw it).
    pub fn failed(&self, index: usize) {
        if self.clients.len() > 1 {
            let _ = self.in_use.compare_exchange(
                index,
                (index + 1) % self.clients.len(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
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

    #[tokio::test]
    async fn a_failure_moves_to_the_next_endpoint_once_and_wraps_around() {
        let link = Link::connect(&endpoints(3), &ConnectOptions::new())
            .await
            .expect("lazy clients");
        let (first, _) = link.client();
        assert_eq!(first, 0);
        link.failed(first);
        link.failed(first); // a second call that saw the same failure
        assert_eq!(link.client().0, 1);
        link.failed(1);
        link.failed(2);
        assert_eq!(link.client().0, 0, "back to the first");
    }

    #[tokio::test]
    async fn one_endpoint_stays_in_use() {
        let link = Link::connect(&endpoints(1), &ConnectOptions::new())
            .await
            .expect("a lazy client");
        link.failed(0);
        assert_eq!(link.client().0, 0);
    }
}
