//! A quiet target's checks are made by its monitor's worker on their
//! grids, and only what healer must decide on crosses to it (no event log
//! here, so nothing asks for every check): while the service answers, the
//! checks keep their pace, the board and the metrics count them, and the
//! facts they publish stay held; the moment it fails, healer hears at once
//! and opens the issue; when it answers again, the issue resolves. A
//! package built against an older SDK minor is watched alike.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use healer_e2e::{free_port, get, plugins_dir_with, wait_until, Unlogged};

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn quiet_checks_keep_their_pace_and_facts_and_a_failure_still_reaches_the_issue_tracker_at_once() {
    let failing = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicU64::new(0));
    let service = answering(Arc::clone(&failing), Arc::clone(&requests));
    let healer = Quiet::start(
        "healer-plugin-http",
        &format!("name = \"web\"\nmonitor = {{ plugin = \"http\", url = \"http://127.0.0.1:{service}/health\", timeout = \"1s\" }}\n[[target.diagnose]]\nplugin = \"http\"\n"),
    );
    let port = healer.port;

    // Quiet: five checks a second reach the service for 4 s; the board
    // and the metrics count them; the facts they publish (each held for
    // two intervals unless vouched for again) are still held.
    wait_until("the first check", LIMIT, || {
        (requests.load(Ordering::SeqCst) > 0).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let before = requests.load(Ordering::SeqCst);
    let metric_before = checks_began(port);
    std::thread::sleep(Duration::from_secs(4));
    let made = requests.load(Ordering::SeqCst) - before;
    assert!((17..=23).contains(&made), "{made} checks in 4 s at 200 ms");
    let counted = checks_began(port) - metric_before;
    assert!(counted >= 10.0, "healer counted {counted} of {made} checks");
    let (_, targets) = get(port, "/api/v1/targets");
    let targets: serde_json::Value = serde_json::from_str(&targets).unwrap();
    assert_eq!(targets[0]["status"], "OK", "{targets}");
    assert!(
        targets[0]["age_ms"].as_u64().unwrap_or(u64::MAX) < 1_500,
        "the board hears of quiet checks: {targets}"
    );
    let (_, facts) = get(port, "/api/v1/facts");
    assert!(
        facts.contains("\"key\":\"http.answered\""),
        "the quiet checks' facts are held: {facts}"
    );

    // A failure crosses at once: the issue opens within a few intervals.
    opens_at_once(port, "web", || failing.store(true, Ordering::SeqCst));

    // And it resolves once the service answers again.
    failing.store(false, Ordering::SeqCst);
    wait_until("the issue resolves", LIMIT, || {
        let (_, issues) = get(port, "/api/v1/issues");
        (!issues.contains("\"state\":\"open\"") && !issues.contains("\"state\":\"escalated\""))
            .then_some(())
    });
}

/// A package built against SDK 1.3 (before facts) is watched as any
/// other: its quiet checks keep their pace and a failure reaches the
/// tracker at once.
#[test]
fn a_package_built_against_an_older_sdk_minor_is_watched_alike() {
    let files = tempfile::tempdir().unwrap();
    let present = files.path().join("present");
    std::fs::write(&present, "").unwrap();
    let healer = Quiet::start(
        "healer-fixture-sdk-1-3",
        &format!(
            "name = \"file\"\nmonitor = {{ plugin = \"present\", path = \"{}\" }}\n",
            present.display()
        ),
    );
    let port = healer.port;

    wait_until("the first checks", LIMIT, || {
        (checks_began(port) >= 3.0).then_some(())
    });
    let before = checks_began(port);
    std::thread::sleep(Duration::from_secs(3));
    let counted = checks_began(port) - before;
    assert!(
        (10.0..=18.0).contains(&counted),
        "{counted} checks counted in 3 s at 200 ms"
    );

    opens_at_once(port, "file", || std::fs::remove_file(&present).unwrap());
}

/// healer with one package and one target, checked every 200 ms, its
/// API on `port`; no event log, so only news crosses from the worker.
struct Quiet {
    // Dropped first: healer stops before its directories go.
    _healer: Unlogged,
    _plugins: tempfile::TempDir,
    _dir: tempfile::TempDir,
    port: u16,
}

impl Quiet {
    /// Starts healer on `package` (built from this workspace) and the
    /// `[[target]]` table whose body is `target`.
    fn start(package: &str, target: &str) -> Quiet {
        let plugins = plugins_dir_with(&[package]);
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let body = format!(
            "[healer]\ninterval = \"200ms\"\nplugins_dir = \"{}\"\nlog_file = \"healer.log\"\nstate_dir = \"state\"\nlog_level = \"info\"\n\n[intake]\nbind = \"127.0.0.1:{port}\"\n\n[[target]]\n{target}",
            plugins.path().display()
        );
        let config = dir.path().join("healer.toml");
        std::fs::write(&config, body).unwrap();
        Quiet {
            _healer: Unlogged::start(&config, port),
            _plugins: plugins,
            _dir: dir,
            port,
        }
    }
}

/// Makes `target` fail (`fail`) and holds healer to opening its issue
/// within 3 s (a few intervals).
fn opens_at_once(port: u16, target: &str, fail: impl FnOnce()) {
    let failed_at = Instant::now();
    fail();
    let named = format!("\"target\":\"{target}\"");
    wait_until("the issue opens", LIMIT, || {
        let (_, issues) = get(port, "/api/v1/issues");
        issues.contains(&named).then_some(())
    });
    assert!(
        failed_at.elapsed() < Duration::from_secs(3),
        "the issue opened {:?} after the failure",
        failed_at.elapsed()
    );
}

/// healer's count of scheduled checks begun.
fn checks_began(port: u16) -> f64 {
    let (_, metrics) = get(port, "/metrics");
    metrics
        .lines()
        .find(|line| line.starts_with("healer_checks_began_total "))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("healer_checks_began_total in:\n{metrics}"))
}

/// A server on 127.0.0.1 answering 200 to each connection, or 500 while
/// `failing` is set, counting them in `requests`; its port.
fn answering(failing: Arc<AtomicBool>, requests: Arc<AtomicU64>) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let (failing, requests) = (Arc::clone(&failing), Arc::clone(&requests));
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                requests.fetch_add(1, Ordering::SeqCst);
                let answer: &[u8] = if failing.load(Ordering::SeqCst) {
                    b"HTTP/1.1 500 Oops\r\ncontent-length: 2\r\nconnection: close\r\n\r\nno"
                } else {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                };
                let _ = stream.write_all(answer);
            });
        }
    });
    port
}
