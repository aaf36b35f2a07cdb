//! The daemon's recovery policy with real processes: attempts are limited
//! and then escalated, dependencies hold their dependents' recovery, and a
//! plugin that panics or hangs hurts nobody else.

use std::time::Duration;

use healer_e2e::{fast_config, plugins_dir_with, Daemon};

const LIMIT: Duration = Duration::from_secs(20);

#[test]
fn a_recovery_that_never_helps_runs_exactly_max_attempts_times_then_escalates() {
    let plugins = plugins_dir_with(&["healer-plugin-process", "healer-plugin-command"]);
    let dir = tempfile::tempdir().unwrap();
    let attempts = dir.path().join("attempts");
    let body = format!(
        r#"
[[target]]
name = "hopeless"
max_attempts = 3
monitor = {{ plugin = "process", pidfile = "{dir}/never.pid" }}
[[target.recover]]
plugin = "command"
argv = ["sh", "-c", "echo attempt >> {attempts}"]
"#,
        dir = dir.path().display(),
        attempts = attempts.display()
    );
    let mut daemon = Daemon::start(
        &fast_config(dir.path(), plugins.path(), &body),
        &dir.path().join("healer.log"),
    );

    let escalation = daemon.wait_for_log(&["issue escalated", "target=hopeless"], LIMIT);
    std::thread::sleep(Duration::from_secs(1)); // ten more check intervals

    assert!(
        escalation.contains("ERROR") && escalation.contains("severity=\"CRITICAL\""),
        "{escalation}"
    );
    assert!(escalation.contains("attempts=3"), "{escalation}");
    assert_eq!(
        std::fs::read_to_string(&attempts).unwrap().lines().count(),
        3
    );
    assert_eq!(
        daemon.count_in_log(&["WARN recovery attempt", "target=hopeless"]),
        3
    );
    assert!(daemon.is_running());
}

#[test]
fn a_dependent_is_not_recovered_while_its_dependency_is_down() {
    let plugins = plugins_dir_with(&["healer-plugin-process", "healer-plugin-command"]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let body = format!(
        r#"
[[target]]
name = "db"
max_attempts = 100
monitor = {{ plugin = "process", pidfile = "{d}/db.pid" }}
[[target.recover]]
plugin = "command"
argv = ["sh", "-c", "test -f {d}/db-may-start && {{ sleep 60 & echo $! > {d}/db.pid; }}"]

[[target]]
name = "app"
depends_on = ["db"]
monitor = {{ plugin = "process", pidfile = "{d}/app.pid" }}
[[target.recover]]
plugin = "command"
argv = ["sh", "-c", "sleep 60 & echo $! > {d}/app.pid"]
"#
    );
    let mut daemon = Daemon::start(
        &fast_config(dir.path(), plugins.path(), &body),
        &dir.path().join("healer.log"),
    );

    let held = daemon.wait_for_log(&["recovery held", "target=app", "dependency=\"db\""], LIMIT);
    std::thread::sleep(Duration::from_millis(500));
    assert!(held.contains("caused upstream"), "{held}");
    assert!(
        !dir.path().join("app.pid").exists(),
        "app was recovered while db was down"
    );
    assert_eq!(
        daemon.count_in_log(&["WARN recovery attempt", "target=app"]),
        0
    );

    std::fs::write(dir.path().join("db-may-start"), "").unwrap();
    daemon.wait_for_log(&["issue resolved", "target=db"], LIMIT);
    daemon.wait_for_log(&["recovery succeeded", "target=app"], LIMIT);
    daemon.wait_for_log(&["issue resolved", "target=app"], LIMIT);
    for pidfile in ["db.pid", "app.pid"] {
        let pid = std::fs::read_to_string(dir.path().join(pidfile)).unwrap();
        healer_e2e::signal(pid.trim().parse().unwrap(), "KILL");
    }
}

#[test]
fn plugins_that_panic_or_hang_leave_the_daemon_and_other_targets_healthy() {
    let plugins = plugins_dir_with(&["healer-fixture-panicky"]);
    let dir = tempfile::tempdir().unwrap();
    let body = r#"
[[target]]
name = "panics"
monitor = { plugin = "panics-in-check" }

[[target]]
name = "hangs"
timeout = "200ms"
monitor = { plugin = "hangs-in-check" }

[[target]]
name = "healthy"
monitor = { plugin = "counter" }
"#;
    let mut daemon = Daemon::start(
        &fast_config(dir.path(), plugins.path(), body),
        &dir.path().join("healer.log"),
    );

    let panicked = daemon.wait_for_log(&["check failed", "target=panics"], LIMIT);
    let hung = daemon.wait_for_log(&["check timed out", "target=hangs"], LIMIT);
    daemon.wait_for_log(&["checked", "target=healthy", "check 5"], LIMIT);
    let before = daemon.count_in_log(&["checked", "target=healthy"]);
    std::thread::sleep(Duration::from_secs(1));
    let after = daemon.count_in_log(&["checked", "target=healthy"]);

    assert!(
        panicked.contains("panicked at tests/fixtures/panicky/src/lib.rs")
            && panicked.contains("check exploded on purpose"),
        "{panicked}"
    );
    assert!(hung.contains("timeout=200ms"), "{hung}");
    // 100 ms interval: about 10 checks a second while its neighbours misbehave
    // (at least 3 even on a loaded machine).
    assert!(
        after - before >= 3,
        "healthy target checked only {} times in 1 s",
        after - before
    );
    assert!(daemon.is_running());
}

#[test]
fn a_diagnoser_stuck_in_blocking_code_fails_fast_instead_of_piling_up() {
    let plugins = plugins_dir_with(&["healer-fixture-panicky"]);
    let dir = tempfile::tempdir().unwrap();
    let body = r#"
[[target]]
name = "stuck"
timeout = "200ms"
monitor = { plugin = "counter" }
[[target.diagnose]]
plugin = "blocks-forever"
"#;
    let mut daemon = Daemon::start(
        &fast_config(dir.path(), plugins.path(), body),
        &dir.path().join("healer.log"),
    );

    daemon.wait_for_log(&["diagnoser timed out", "target=stuck"], LIMIT);
    let fast = daemon.wait_for_log(&["diagnoser failed", "target=stuck"], LIMIT);

    assert!(
        fast.contains("the previous diagnosis of this instance is still running"),
        "{fast}"
    );
    daemon.wait_for_log(&["checked", "target=stuck", "check 10"], LIMIT);
    assert!(daemon.is_running());
}
