//! The daemon's recovery policy with real processes: attempts are limited
//! and then escalated, dependencies hold their dependents' recovery, and a
//! plugin that panics or hangs hurts nobody else.

use std::time::Duration;

use healer_e2e::{fast_config, plugins_dir_with, Daemon, Event, StepResult};

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
    let mut daemon = Daemon::start(&fast_config(dir.path(), plugins.path(), &body));

    let escalation = daemon.wait_for(
        "the escalation",
        LIMIT,
        |e| matches!(e, Event::IssueEscalated { target, .. } if target == "hopeless"),
    );
    std::thread::sleep(Duration::from_secs(1)); // ten more check intervals

    let Event::IssueEscalated { issue, .. } = escalation else {
        unreachable!()
    };
    assert_eq!(issue.attempts, 3);
    assert!(issue.escalated_at.is_some());
    assert_eq!(
        std::fs::read_to_string(&attempts).unwrap().lines().count(),
        3
    );
    assert_eq!(
        daemon.count(|e| matches!(e, Event::AttemptStarted { target, .. } if target == "hopeless")),
        3
    );
    let log = daemon.log_text();
    let line = log.lines().find(|l| l.contains("issue escalated")).unwrap();
    assert!(
        line.contains("ERROR") && line.contains("severity=\"CRITICAL\""),
        "the log says it at CRITICAL: {line}"
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
    let mut daemon = Daemon::start(&fast_config(dir.path(), plugins.path(), &body));

    daemon.wait_for("app's recovery held by db", LIMIT, |e| {
        matches!(e, Event::RecoveryHeld { target, dependency, .. } if target == "app" && dependency == "db")
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !dir.path().join("app.pid").exists(),
        "app was recovered while db was down"
    );
    assert_eq!(
        daemon.count(|e| matches!(e, Event::AttemptStarted { target, .. } if target == "app")),
        0
    );

    std::fs::write(dir.path().join("db-may-start"), "").unwrap();
    for target in ["db", "app"] {
        daemon.wait_for(
            "the issue resolves",
            LIMIT,
            |e| matches!(e, Event::IssueResolved { target: t, .. } if t == target),
        );
    }
    assert_eq!(
        daemon.count(|e| matches!(e, Event::RecovererFinished { target, result: StepResult::Succeeded { .. }, .. } if target == "app")),
        1
    );
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
    let mut daemon = Daemon::start(&fast_config(dir.path(), plugins.path(), body));

    let panicked = daemon.wait_for(
        "the panic reported",
        LIMIT,
        |e| matches!(e, Event::PluginFailed { target, .. } if target == "panics"),
    );
    let hung = daemon.wait_for(
        "the hang reported",
        LIMIT,
        |e| matches!(e, Event::PluginTimedOut { target, .. } if target == "hangs"),
    );
    let healthy_checks = |daemon: &Daemon| {
        daemon.count(|e| matches!(e, Event::Checked { target, .. } if target == "healthy"))
    };
    daemon.wait_for("five healthy checks", LIMIT, |e| {
        matches!(e, Event::Checked { target, summary, .. } if target == "healthy" && summary.contains("check 5"))
    });
    let before = healthy_checks(&daemon);
    std::thread::sleep(Duration::from_secs(1));
    let after = healthy_checks(&daemon);

    let Event::PluginFailed { error, .. } = panicked else {
        unreachable!()
    };
    assert!(
        error.contains("panicked at tests/fixtures/panicky/src/lib.rs")
            && error.contains("check exploded on purpose"),
        "{error}"
    );
    let Event::PluginTimedOut { after: waited, .. } = hung else {
        unreachable!()
    };
    assert_eq!(waited.to_string(), "200ms");
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
    let mut daemon = Daemon::start(&fast_config(dir.path(), plugins.path(), body));

    daemon.wait_for(
        "the diagnoser times out",
        LIMIT,
        |e| matches!(e, Event::PluginTimedOut { target, .. } if target == "stuck"),
    );
    let fast = daemon.wait_for(
        "the next diagnosis fails fast",
        LIMIT,
        |e| matches!(e, Event::PluginFailed { target, .. } if target == "stuck"),
    );

    let Event::PluginFailed { error, .. } = fast else {
        unreachable!()
    };
    assert!(
        error.contains("the previous diagnosis of this instance is still running"),
        "{error}"
    );
    daemon.wait_for("ten checks", LIMIT, |e| {
        matches!(e, Event::Checked { target, summary, .. } if target == "stuck" && summary.contains("check 10"))
    });
    assert!(daemon.is_running());
}
