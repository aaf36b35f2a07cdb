//! One failure seen by two checks of a target is recovered once: the
//! issue only the other check found waits while the first one's recovery
//! is under way (its verification, its backoff), and resolves with it.
use std::time::Duration;

use healer_e2e::{fast_config, plugins_dir_with, Daemon, Event};

#[test]
fn one_failure_seen_by_two_checks_gets_one_ladder_not_two() {
    let plugins = plugins_dir_with(&[
        "healer-plugin-process",
        "healer-plugin-nagios",
        "healer-plugin-command",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        r#"
[[target]]
name = "svc"
interval = "3s"
backoff = "5s"
backoff_max = "1m"
grace = "300ms"
max_attempts = 3
recovery_budget = 10

[[target.monitor]]
plugin = "process"
pidfile = "{dir}/never.pid"
[[target.monitor.diagnose]]
plugin = "process"

[[target.monitor]]
plugin = "nagios"
command = ["sh", "-c", "echo refused; exit 2"]

[[target.recover]]
plugin = "command"
on = ["*"]
argv = ["true"]
"#,
        dir = dir.path().display()
    );
    let config = fast_config(dir.path(), plugins.path(), &body);
    let mut daemon = Daemon::start(&config);
    daemon.wait_for("a first attempt", Duration::from_secs(30), |e| {
        matches!(e, Event::AttemptStarted { .. })
    });
    // Within the 5 s backoff, the other check's issue (nagios.critical)
    // is not attempted.
    std::thread::sleep(Duration::from_secs(4));
    let attempts = attempts_started(&daemon);
    assert_eq!(
        attempts.len(),
        1,
        "one failure seen by two checks was restarted twice within the backoff: {attempts:?}"
    );
}

#[test]
fn a_restart_that_worked_but_answers_slowly_is_not_restarted_again() {
    let plugins = plugins_dir_with(&[
        "healer-plugin-process",
        "healer-plugin-nagios",
        "healer-plugin-command",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    // The "service": started by the restart, answers its health check 2 s later.
    let start = format!("sleep 600 & echo $! > {d}/svc.pid; date +%s > {d}/started; echo started");
    let health = format!(
        "test -f {d}/started && [ $(( $(date +%s) - $(cat {d}/started) )) -ge 3 ] && {{ echo ok; exit 0; }}; echo refused; exit 2"
    );
    let body = format!(
        r#"
[[target]]
name = "svc"
interval = "2s"
backoff = "10s"
backoff_max = "1m"
grace = "500ms"
recovery_budget = 10

[[target.monitor]]
plugin = "process"
pidfile = "{d}/svc.pid"
[[target.monitor.diagnose]]
plugin = "process"

[[target.monitor]]
plugin = "nagios"
interval = "30s"
command = ["sh", "-c", {health:?}]

[[target.recover]]
plugin = "command"
on = ["*"]
argv = ["sh", "-c", {start:?}]
"#
    );
    let config = fast_config(dir.path(), plugins.path(), &body);
    let mut daemon = Daemon::start(&config);
    daemon.wait_for("a first attempt", Duration::from_secs(40), |e| {
        matches!(e, Event::AttemptStarted { .. })
    });
    std::thread::sleep(Duration::from_secs(3));
    let attempts = attempts_started(&daemon);
    if let Ok(pid) = std::fs::read_to_string(dir.path().join("svc.pid")) {
        let _ = std::process::Command::new("kill").arg(pid.trim()).status();
    }
    assert_eq!(
        attempts.len(),
        1,
        "the service was restarted twice: {attempts:?}"
    );
}

/// Every attempt started so far (when, which kind, its number), printed.
fn attempts_started(daemon: &Daemon) -> Vec<(healer::clock::Wall, String, u32)> {
    let attempts: Vec<_> = daemon
        .records()
        .iter()
        .filter_map(|r| match &r.event {
            Event::AttemptStarted { issue, .. } => Some((r.at, issue.kind.clone(), issue.attempts)),
            _ => None,
        })
        .collect();
    for (at, kind, n) in &attempts {
        println!("{at} {kind} attempt {n}");
    }
    attempts
}
