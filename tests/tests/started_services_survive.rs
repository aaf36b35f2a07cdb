//! A service a recovery started is not healer's: it keeps running, with the
//! same pid, when healer is stopped (SIGTERM, as `systemctl stop` does) or
//! killed (`kill -9`, as a crash or the watchdog), and healer started again
//! finds it running and starts nothing. And the sample systemd unit, which
//! makes that true under systemd (`KillMode=process`), is one systemd
//! accepts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use healer_e2e::{
    after_start, fast_config, free_port, get, healer_bin, is_alive, plugins_dir_with, read_pid,
    run_bounded, signal, wait_until, workspace_root, Daemon, Event,
};
use healer_plugin_sdk::Status;

const LIMIT: Duration = Duration::from_secs(20);

/// The test's HTTP service: a real long-running program.
const SERVICE: &str = env!("CARGO_BIN_EXE_test-service");

/// A target keeping `test-service` on `port` running through its pidfile,
/// started detached by the `command` recoverer.
fn config(dir: &Path, plugins: &Path, port: u16) -> PathBuf {
    let body = format!(
        r#"
[[target]]
name = "service"
monitor = {{ plugin = "process", pidfile = "{dir}/service.pid" }}
[[target.diagnose]]
plugin = "process"
[[target.recover]]
plugin = "command"
on = ["process.not_running"]
argv = ["{SERVICE}", "--port", "{port}", "--status-file", "{dir}/status", "--pidfile", "{dir}/service.pid"]
detach = true
"#,
        dir = dir.display()
    );
    fast_config(dir, plugins, &body)
}

/// Kills the service at the end of the test, whatever happened.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(pid) = read_pid(&self.0).filter(|&pid| is_alive(pid)) {
            signal(pid, "KILL");
        }
    }
}

/// healer's `run`-th start (1-based) on this config: waits until it has
/// checked the service and found it running, then watches it for ten more
/// intervals, in which it must neither open an issue nor start anything.
fn started_again_finds_it_running(daemon: &Daemon, run: usize) {
    wait_until("healer started again checks the service", LIMIT, || {
        after_start(&daemon.records(), run)
            .iter()
            .any(|e| matches!(e, Event::Checked { target, status: Status::Ok, .. } if target == "service"))
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    let events = after_start(&daemon.records(), run);
    let acted: Vec<&Event> = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::IssueOpened { .. }
                    | Event::AttemptStarted { .. }
                    | Event::RecovererFinished { .. }
            )
        })
        .collect();
    assert!(acted.is_empty(), "run {run} acted: {acted:?}");
    assert!(
        events.iter().any(|e| matches!(e, Event::Checked { target, status: Status::Ok, .. } if target == "service")),
        "run {run} saw the service running"
    );
}

#[test]
fn a_service_a_recovery_started_survives_healer_stopped_and_killed_and_is_not_started_twice() {
    let plugins = plugins_dir_with(&["healer-plugin-process", "healer-plugin-command"]);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = config(dir.path(), plugins.path(), port);
    let pidfile = dir.path().join("service.pid");
    let _cleanup = Cleanup(pidfile.clone());

    // Nothing runs: healer starts the service.
    let mut daemon = Daemon::start(&config);
    daemon.wait_for(
        "the service started and found running",
        LIMIT,
        |e| matches!(e, Event::IssueResolved { target, .. } if target == "service"),
    );
    let service = wait_until("the service runs", LIMIT, || {
        read_pid(&pidfile).filter(|&pid| is_alive(pid))
    });
    assert_eq!(get(port, "/").0, 200, "the service answers");

    // Stopped as `systemctl stop` stops it (SIGTERM to healer alone).
    assert!(daemon.stop(), "healer stops cleanly on SIGTERM");
    // Its plugin workers die with it; give any such death time to land.
    std::thread::sleep(Duration::from_millis(500));
    assert!(is_alive(service), "the service died with healer (SIGTERM)");
    assert_eq!(get(port, "/").0, 200, "the service answers without healer");

    let mut daemon = Daemon::start(&config);
    started_again_finds_it_running(&daemon, 2);
    assert_eq!(read_pid(&pidfile), Some(service));

    // Killed, as a crash or the watchdog would.
    daemon.kill();
    std::thread::sleep(Duration::from_millis(500));
    assert!(is_alive(service), "the service died with healer (kill -9)");
    assert_eq!(get(port, "/").0, 200, "the service answers without healer");

    let daemon = Daemon::start(&config);
    started_again_finds_it_running(&daemon, 3);
    assert_eq!(read_pid(&pidfile), Some(service));
    assert!(is_alive(service));
    let started = daemon
        .count(|e| matches!(e, Event::RecovererFinished { target, .. } if target == "service"));
    assert_eq!(started, 1, "one start in three runs of healer");
}

/// The shipped unit, with its binary paths pointed at the built `healer`
/// (`systemd-analyze verify` checks that `ExecStart=` can be executed).
fn unit_for_this_build(dir: &Path) -> PathBuf {
    let shipped = std::fs::read_to_string(workspace_root().join("config/healer.service"))
        .expect("config/healer.service");
    assert!(shipped.contains("ExecStart=/usr/local/bin/healer run "));
    let unit = dir.join("healer.service");
    let here = shipped.replace("/usr/local/bin/healer", &healer_bin().display().to_string());
    std::fs::write(&unit, here).unwrap();
    unit
}

#[test]
fn the_sample_unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_this_build(dir.path());
    let output = run_bounded(
        std::process::Command::new("systemd-analyze")
            .arg("verify")
            .arg(&unit),
        LIMIT,
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "systemd-analyze verify: {said}");
    // Warnings (an unknown key, a bad value ignored) still exit 0.
    assert_eq!(said.trim(), "", "systemd-analyze verify has remarks");
}

#[test]
fn the_sample_unit_stops_healer_alone_and_keeps_what_breaks_services_out() {
    let shipped = std::fs::read_to_string(workspace_root().join("config/healer.service"))
        .expect("config/healer.service");
    let settings: Vec<(&str, &str)> = shipped
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .collect();
    let values = |key: &str| -> Vec<&str> {
        settings
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .collect()
    };
    assert_eq!(values("KillMode"), ["process"]);
    for inherited in ["MemoryDenyWriteExecute", "PrivateTmp", "UMask"] {
        assert_eq!(values(inherited), Vec::<&str>::new(), "{inherited} is set");
    }
    assert_eq!(values("StateDirectoryMode"), ["0700"]);
    assert_eq!(values("LogsDirectoryMode"), ["0700"]);
}
