//! The real daemon keeps a real process alive: killed with `kill -9`, it is
//! running again with a new pid within milliseconds, thanks to the process
//! monitor's pidfd push.

use std::path::Path;
use std::time::{Duration, Instant};

use healer_e2e::{
    is_alive, plugins_dir_with, read_pid, signal, test_paths, wait_until, Daemon, Event, StepResult,
};

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
