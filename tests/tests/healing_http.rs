//! The daemon heals a real HTTP service on 127.0.0.1: a service answering
//! 500 is diagnosed and recovered, and one that stops answering (SIGSTOP)
//! is caught by the timeout and restarted while other targets keep their
//! schedule.

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use healer_e2e::{fast_config, free_port, is_alive, plugins_dir_with, signal, wait_until, Daemon};

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
    let mut daemon = Daemon::start(
        &fast_config(dir.path(), plugins.path(), &body),
        &dir.path().join("healer.log"),
    );
    daemon.wait_for_log(&["status changed", "target=web", "status=OK"], LIMIT);

    std::fs::write(&service.status, "500").unwrap();

    let opened = daemon.wait_for_log(&["issue opened", "target=web"], LIMIT);
    daemon.wait_for_log(
        &["recovery succeeded", "target=web", "kind=http.status_5xx"],
        LIMIT,
    );
    let resolved = daemon.wait_for_log(&["issue resolved", "target=web"], LIMIT);
    assert!(
        opened.contains("kind=http.status_5xx") && opened.contains("answered 500"),
        "{opened}"
    );
    assert!(resolved.contains("kind=http.status_5xx"), "{resolved}");
    daemon.wait_for_log(
        &[
            "status changed",
            "target=web",
            "status=OK",
            "was=\"CRITICAL\"",
        ],
        LIMIT,
    );
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
    let mut daemon = Daemon::start(
        &fast_config(dir.path(), plugins.path(), &body),
        &dir.path().join("healer.log"),
    );
    daemon.wait_for_log(&["status changed", "target=web", "status=OK"], LIMIT);
    let frozen = service.pid().unwrap();

    signal(frozen, "STOP");
    let neighbour_before = daemon.count_in_log(&["checked", "target=neighbour"]);
    daemon.wait_for_log(&["issue opened", "target=web", "kind=http.timeout"], LIMIT);
    daemon.wait_for_log(
        &[
            "recovery succeeded",
            "target=web",
            "recoverer=service-restart",
        ],
        LIMIT,
    );
    daemon.wait_for_log(
        &["issue resolved", "target=web", "kind=http.timeout"],
        LIMIT,
    );
    let neighbour_after = daemon.count_in_log(&["checked", "target=neighbour"]);

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
