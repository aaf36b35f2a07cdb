//! Bounded waits: poll until something holds, or panic saying what did not
//! happen within the limit.

use std::time::{Duration, Instant};

/// Polls `probe` every 5 ms until it returns `Some`, or panics after `limit`.
pub fn wait_until<T>(what: &str, limit: Duration, probe: impl FnMut() -> Option<T>) -> T {
    poll_until(what, limit, Duration::from_millis(5), probe)
}

/// Polls `probe` every `every` until it returns `Some`, or panics after
/// `limit`: for probes that cost a peer real work (a Prometheus query).
pub fn poll_until<T>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(every);
    }
}

/// Waits until something accepts connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, limit: Duration) {
    wait_until("the port accepts connections", limit, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
}
