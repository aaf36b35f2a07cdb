//! The daemon heals a real HTTP service on 127.0.0.1: a service answering
//! 500 is diagnosed and recovered, and one that stops answering (SIGSTOP)
//! is caught by the timeout and restarted while other targets keep their
//! schedule.

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use healer_e2e::{
    fast_config, free_port, healer_bin, is_alive, plugins_dir_with, run_bounded, signal,
    wait_until, Answer, Daemon, Event, Receiver, StepResult,
};
use healer_plugin_sdk::Status;

const LIMIT: Duration = Duration::from_secs(20);
const SERVICE: &str = env!("CARGO_BIN_EXE_test-service");

struct Service {
    port: u16,
    status: std::path::PathBuf,
    pidfile: std::path::PathBuf,
    first: Child,
}

impl Service {
    fn start(dir: &Path) -> Service {
        let port = free_port();
        let (status, pidfile) = (dir.join("status"), dir.join("service.pid"));
        let first = Command::new(SERVICE)
            .args([
                "--port",
                &port.to_string(),
                "--status-file",
                status.to_str().unwrap(),
                "--pidfile",
                pidfile.to_str().unwrap(),
            ])
            .spawn()
            .unwrap();
        wait_until("the service listens", LIMIT, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        Service {
            port,
            status,
            pidfile,
            first,
        }
    }

    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(&self.pidfile)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn start_argv(&self) -> String {
        format!(
            r#"["{SERVICE}", "--port", "{}", "--status-file", "{}", "--pidfile", "{}"]"#,
            self.port,
            self.status.display(),
            self.pidfile.display()
        )
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(pid) = self.pid().filter(|&p| is_alive(p)) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let _ = self.first.kill();
        let _ = self.first.wait();
    }
}

#[test]
fn a_service_answering_500_is_diagnosed_recovered_and_resolved() {
    let plugins = plugins_dir_with(&["healer-plugin-http", "healer-plugin-command"]);
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path());
    let body = format!(
        r#"
[[target]]
name = "web"
monitor = {{ plugin = "http", url = "http://127.0.0.1:{port}/health", timeout = "1s" }}
[[target.diagnose]]
plugin = "http"
[[target.recover]]
plugin = "command"
on = ["http.status_5xx"]
argv = ["sh", "-c", "echo 200 > {status}"]
"#,
        port = service.port,
        status = service.status.display()
    );
    let mut daemon = Daemon::start(&fast_config(dir.path(), plugins.path(), &body));
    daemon.wait_for(
        "web is OK",
        LIMIT,
        |e| matches!(e, Event::Checked { target, status: Status::Ok, .. } if target == "web"),
    );

    std::fs::write(&service.status, "500").unwrap();

    let opened = daemon.wait_for(
        "an issue opens",
        LIMIT,
        |e| matches!(e, Event::IssueOpened { target, .. } if target == "web"),
    );
    daemon.wait_for("the recovery", LIMIT, |e| {
        matches!(e, Event::RecovererFinished { target, kind, result: StepResult::Succeeded { .. }, .. }
            if target == "web" && kind == "http.status_5xx")
    });
    let resolved = daemon.wait_for(
        "the issue resolves",
        LIMIT,
        |e| matches!(e, Event::IssueResolved { target, .. } if target == "web"),
    );
    let Event::IssueOpened { issue, .. } = opened else {
        unreachable!()
    };
    assert_eq!(issue.kind, "http.status_5xx");
    assert!(issue.summary.contains("answered 500"), "{}", issue.summary);
    let Event::IssueResolved { issue, .. } = resolved else {
        unreachable!()
    };
    assert_eq!(issue.kind, "http.status_5xx");
    daemon.wait_for("web is OK again", LIMIT, |e| {
        matches!(e, Event::Checked { target, status: Status::Ok, was: Some(Status::Critical), .. } if target == "web")
    });
}

#[test]
fn a_service_that_stops_answering_is_restarted_while_other_targets_keep_their_schedule() {
    let plugins = plugins_dir_with(&[
        "healer-plugin-http",
        "healer-plugin-command",
        "healer-fixture-panicky",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path());
    let body = format!(
        r#"
[[target]]
name = "web"
monitor = {{ plugin = "http", url = "http://127.0.0.1:{port}/", timeout = "300ms" }}
[[target.diagnose]]
plugin = "http"
[[target.recover]]
plugin = "service-restart"
on = ["http.timeout", "http.refused"]
stop = ["sh", "-c", "kill -KILL $(cat {pidfile})"]
start = {start}
detach = true

[[target]]
name = "neighbour"
monitor = {{ plugin = "counter" }}
"#,
        port = service.port,
        pidfile = service.pidfile.display(),
        start = service.start_argv()
    );
    let mut daemon = Daemon::start(&fast_config(dir.path(), plugins.path(), &body));
    daemon.wait_for(
        "web is OK",
        LIMIT,
        |e| matches!(e, Event::Checked { target, status: Status::Ok, .. } if target == "web"),
    );
    let frozen = service.pid().unwrap();

    signal(frozen, "STOP");

    let neighbour_checks = |daemon: &Daemon| {
        daemon.count(|e| matches!(e, Event::Checked { target, .. } if target == "neighbour"))
    };
    let neighbour_before = neighbour_checks(&daemon);
    daemon.wait_for("a timeout issue", LIMIT, |e| {
        matches!(e, Event::IssueOpened { target, issue } if target == "web" && issue.kind == "http.timeout")
    });
    daemon.wait_for("the restart", LIMIT, |e| {
        matches!(e, Event::RecovererFinished { target, recoverer, result: StepResult::Succeeded { .. }, .. }
            if target == "web" && recoverer == "service-restart")
    });
    daemon.wait_for("the issue resolves", LIMIT, |e| {
        matches!(e, Event::IssueResolved { target, issue } if target == "web" && issue.kind == "http.timeout")
    });
    let neighbour_after = neighbour_checks(&daemon);
    let restarted = wait_until("a new service pid", LIMIT, || {
        service.pid().filter(|&p| p != frozen && is_alive(p))
    });
    assert_ne!(restarted, frozen);
    // The outage took several 100 ms intervals; the neighbour kept checking.
    assert!(
        neighbour_after - neighbour_before >= 3,
        "neighbour checked {} times during the outage",
        neighbour_after - neighbour_before
    );
}

/// A server on 127.0.0.1 answering 200 to each connection, after 150 ms
/// while `slow` is set; its port.
fn answering_slowly_when(slow: std::sync::Arc<std::sync::atomic::AtomicBool>) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let slow = slow.clone();
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                if slow.load(std::sync::atomic::Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(150));
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                );
            });
        }
    });
    port
}

#[test]
fn a_run_of_slow_answers_opens_http_slow_at_the_third_from_the_history_the_worker_keeps() {
    // The http diagnoser reads the history only for `http.slow`, and asks
    // for `slow_for_samples - 1` observations of it: the worker keeps no
    // more (its memory is measured by bench/scale), and they are enough.
    let plugins = plugins_dir_with(&["healer-plugin-http"]);
    let dir = tempfile::tempdir().unwrap();
    let slow = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let port = answering_slowly_when(slow.clone());
    let body = format!(
        r#"
[[target]]
name = "web"
monitor = {{ plugin = "http", url = "http://127.0.0.1:{port}/health", timeout = "1s", max_latency = "50ms" }}
[[target.diagnose]]
plugin = "http"
slow_for_samples = 3
"#
    );
    let mut daemon = Daemon::start(&fast_config(dir.path(), plugins.path(), &body));
    daemon.wait_for(
        "web is OK",
        LIMIT,
        |e| matches!(e, Event::Checked { target, status: Status::Ok, .. } if target == "web"),
    );
    slow.store(true, std::sync::atomic::Ordering::SeqCst);
    daemon.wait_for("http.slow opens", LIMIT, |e| {
        matches!(e, Event::IssueOpened { target, issue } if target == "web" && issue.kind == "http.slow")
    });
    let records = daemon.records();
    let opened = records
        .iter()
        .position(
            |r| matches!(&r.event, Event::IssueOpened { issue, .. } if issue.kind == "http.slow"),
        )
        .unwrap();
    let slow_checks = records[..opened]
        .iter()
        .filter(|r| {
            matches!(&r.event, Event::Checked { target, status: Status::Warning, .. } if target == "web")
        })
        .count();
    assert_eq!(
        slow_checks, 3,
        "http.slow opened after {slow_checks} slow answers, not 3"
    );
}

#[test]
fn a_check_goes_to_the_service_itself_never_through_a_proxy_named_in_the_environment() {
    // A proxy that would blame the service: every request through it
    // fails. A check must judge the service, not the road to it.
    let proxy = Receiver::start(Answer::Status(502));
    let service = Receiver::start(Answer::Status(200));
    let plugins = plugins_dir_with(&["healer-plugin-http"]);
    let dir = tempfile::tempdir().unwrap();
    let config = fast_config(
        dir.path(),
        plugins.path(),
        &format!(
            r#"
[[target]]
name = "by-address"
monitor = {{ plugin = "http", url = "http://127.0.0.1:{port}/health" }}

[[target]]
name = "by-name"
monitor = {{ plugin = "http", url = "http://localhost:{port}/health" }}
"#,
            port = service.port
        ),
    );
    let proxy_url = proxy.url("");
    let mut once = Command::new(healer_bin());
    once.args(["once", "--config", config.to_str().unwrap()]);
    for variable in ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"] {
        once.env(variable, &proxy_url);
    }
    once.env_remove("NO_PROXY").env_remove("no_proxy");
    let output = run_bounded(&mut once, LIMIT);
    let table = String::from_utf8_lossy(&output.stdout);

    assert_eq!(output.status.code(), Some(0), "{table}");
    for target in ["by-address", "by-name"] {
        assert!(
            table
                .lines()
                .any(|line| line.starts_with(target) && line.contains("answered 200")),
            "{table}"
        );
    }
    assert_eq!(proxy.requests().len(), 0, "{:?}", proxy.requests());
    assert_eq!(service.requests().len(), 2);
}
