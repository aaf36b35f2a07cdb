//! The real daemon keeps a real process alive: killed with `kill -9`, it is
//! running again with a new pid within milliseconds, thanks to the process
//! monitor's pidfd push; an exit pushed when the service already runs
//! again restarts nothing; and one stopped (SIGSTOP) for `stopped_for` is
//! restarted once, within seconds.

use std::path::Path;
use std::time::{Duration, Instant};

use healer_e2e::{
    is_alive, plugins_dir_with, read_pid, signal, test_paths, wait_until, Daemon, Event, Service,
    StepResult,
};
use healer_plugin_sdk::Status;

const LIMIT: Duration = Duration::from_secs(20);

/// A config that keeps `sleep 120` alive through a pidfile.
fn supervising_config(dir: &Path, plugins: &Path, watch: bool) -> std::path::PathBuf {
    let pidfile = dir.join("service.pid");
    let config = format!(
        r#"
[healer]
interval = "200ms"
{paths}
[[target]]
name = "service"
[target.monitor]
plugin = "process"
pidfile = "{pidfile}"
watch = {watch}
[[target.diagnose]]
plugin = "process"
[[target.recover]]
plugin = "command"
on = ["process.not_running"]
argv = ["sh", "-c", "sleep 120 & echo $! > {pidfile}"]
"#,
        paths = test_paths(plugins),
        pidfile = pidfile.display(),
    );
    let path = dir.join("healer.toml");
    std::fs::write(&path, config).unwrap();
    path
}

#[test]
fn a_process_killed_with_sigkill_is_restarted_with_a_new_pid() {
    let plugins = plugins_dir_with(&["healer-plugin-process", "healer-plugin-command"]);
    let dir = tempfile::tempdir().unwrap();
    let config = supervising_config(dir.path(), plugins.path(), true);
    let pidfile = dir.path().join("service.pid");
    let mut daemon = Daemon::start(&config);

    // Nothing runs yet: healer starts it, then sees it healthy.
    daemon.wait_for(
        "the first start",
        LIMIT,
        |e| matches!(e, Event::IssueResolved { target, .. } if target == "service"),
    );
    let first = wait_until("the service runs", LIMIT, || {
        read_pid(&pidfile).filter(|&p| is_alive(p))
    });

    let killed_at = Instant::now();
    signal(first, "KILL");
    let second = wait_until("the service is restarted", LIMIT, || {
        read_pid(&pidfile).filter(|&p| p != first && is_alive(p))
    });
    let recovery_time = killed_at.elapsed();

    println!("time to recovery after kill -9: {recovery_time:?}");
    assert_ne!(first, second);
    daemon.wait_for("the restart recorded", LIMIT, |e| {
        matches!(e, Event::RecovererFinished { target, kind, attempt: 2, result: StepResult::Succeeded { .. }, .. }
            if target == "service" && kind == "process.not_running")
    });
    assert!(daemon.is_running());
    signal(second, "KILL");
}

#[test]
fn an_exit_pushed_after_a_restart_by_another_restarts_nothing_and_a_crash_restarts_once() {
    // The restart healer would run appends to `starts`: a second start of
    // a running service shows there.
    let plugins = plugins_dir_with(&["healer-plugin-process", "healer-plugin-command"]);
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("service.pid");
    let starts = dir.path().join("starts");
    let mut old = Service::start(&pidfile);
    let old_pid = read_pid(&pidfile).unwrap();
    // Checks every 4 s: none falls between the steps below (milliseconds
    // apart), so only the pushed exit can tell healer about them.
    let config = dir.path().join("healer.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[healer]
interval = "4s"
grace = "100ms"
{paths}
[[target]]
name = "service"
monitor = {{ plugin = "process", pidfile = "{pidfile}" }}
[[target.diagnose]]
plugin = "process"
[[target.recover]]
plugin = "command"
on = ["process.not_running"]
argv = ["sh", "-c", "echo started >> {starts}; sleep 600 & echo $! > {pidfile}"]
"#,
            paths = test_paths(plugins.path()),
            pidfile = pidfile.display(),
            starts = starts.display(),
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start(&config);
    let checked_ok = |e: &Event| matches!(e, Event::Checked { target, status: Status::Ok, pushed: false, .. } if target == "service");
    daemon.wait_for("a check that watches the service", LIMIT, checked_ok);

    // Something else restarts the service: the pidfile names a new, live
    // process before the old one dies. By the time its exit is pushed, the
    // service runs again.
    let mut new = Service::start(&pidfile);
    let new_pid = read_pid(&pidfile).unwrap();
    old.kill();
    let pushed = daemon.wait_for(
        "the old process's exit pushed",
        LIMIT,
        |e| matches!(e, Event::Checked { target, pushed: true, .. } if target == "service"),
    );
    let Event::Checked {
        status, summary, ..
    } = pushed
    else {
        panic!("not a check: {pushed:?}");
    };
    assert_eq!(status, Status::Ok, "{summary}");
    assert!(
        summary.starts_with(&format!("pid {old_pid} exited; pid {new_pid} running")),
        "{summary}"
    );
    // The next scheduled check, well past `grace` and any backoff, sees it
    // running too; nothing was restarted.
    let checks = daemon.count(checked_ok);
    wait_until("the next scheduled check", LIMIT, || {
        (daemon.count(checked_ok) > checks).then_some(())
    });
    assert_eq!(
        daemon.count(|e| matches!(e, Event::AttemptStarted { .. })),
        0,
        "a service running again was restarted"
    );
    assert!(!starts.exists(), "a service running again was restarted");
    assert_eq!(read_pid(&pidfile), Some(new_pid));
    assert!(is_alive(new_pid));

    // A real crash of the new process (the one watched now) is restarted,
    // once.
    new.kill();
    let restarted = wait_until("the service is restarted", LIMIT, || {
        read_pid(&pidfile).filter(|&p| p != new_pid && is_alive(p))
    });
    daemon.wait_for(
        "the restart verified",
        LIMIT,
        |e| matches!(e, Event::IssueResolved { target, .. } if target == "service"),
    );
    let checks = daemon.count(checked_ok);
    wait_until("the next scheduled check", LIMIT, || {
        (daemon.count(checked_ok) > checks).then_some(())
    });
    // Stopped first: healer would restart what the test kills.
    assert!(daemon.stop(), "healer did not stop cleanly");
    signal(restarted, "KILL");
    let started = std::fs::read_to_string(&starts).unwrap_or_default();
    assert_eq!(started.lines().count(), 1, "started: {started:?}");
    assert_eq!(
        daemon.count(|e| matches!(e, Event::AttemptStarted { .. })),
        1
    );
}

#[test]
fn a_process_stopped_longer_than_stopped_for_is_running_again_within_three_and_a_half_seconds() {
    // A stopped process exists and does nothing (a hang no pidfd tells):
    // once stopped for `stopped_for` it is `process.stopped`, pushed by
    // the monitor's watcher without waiting for the next check, and the
    // restart kills it (a stopped process ends on SIGKILL) and starts
    // another, once.
    let plugins = plugins_dir_with(&["healer-plugin-process", "healer-plugin-command"]);
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("service.pid");
    let starts = dir.path().join("starts");
    let _service = Service::start(&pidfile);
    let first = read_pid(&pidfile).unwrap();
    let config = dir.path().join("healer.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[healer]
interval = "500ms"
grace = "100ms"
{paths}
[[target]]
name = "service"
[target.monitor]
plugin = "process"
pidfile = "{pidfile}"
stopped_for = "2s"
[[target.diagnose]]
plugin = "process"
[[target.recover]]
plugin = "command"
on = ["process.not_running", "process.stopped"]
argv = ["sh", "-c", "if [ \"$HEALER_FINDING\" = process.stopped ]; then kill -KILL \"$(cat {pidfile})\"; fi; echo started >> {starts}; sleep 600 & echo $! > {pidfile}"]
"#,
            paths = test_paths(plugins.path()),
            pidfile = pidfile.display(),
            starts = starts.display(),
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start(&config);
    daemon.wait_for(
        "a check that sees the service running",
        LIMIT,
        |e| matches!(e, Event::Checked { target, status: Status::Ok, .. } if target == "service"),
    );

    let stopped_at = Instant::now();
    signal(first, "STOP");
    let second = wait_until("the service runs again", LIMIT, || {
        read_pid(&pidfile).filter(|&p| p != first && is_alive(p))
    });
    let took = stopped_at.elapsed();

    println!("SIGSTOP to running again (stopped_for 2 s, interval 500 ms): {took:?}");
    assert!(
        took < Duration::from_millis(3500),
        "running again after {took:?}"
    );
    daemon.wait_for("the restart verified", LIMIT, |e| {
        matches!(e, Event::IssueResolved { target, issue } if target == "service" && issue.kind == "process.stopped")
    });
    wait_until("the stopped process is gone", LIMIT, || {
        (!is_alive(first)).then_some(())
    });
    assert!(daemon.stop(), "healer did not stop cleanly");
    signal(second, "KILL");
    let started = std::fs::read_to_string(&starts).unwrap_or_default();
    assert_eq!(started.lines().count(), 1, "started: {started:?}");
}
