//! The command line around the loop: `once` prints a table and exits with
//! the worst Nagios status, `run` honours the master switch, logs JSON lines
//! when asked, and reaps what its recoveries start.

use std::path::Path;
use std::time::Duration;

use healer_e2e::{plugins_dir_with, run_healer, Daemon, Event};

const LIMIT: Duration = Duration::from_secs(30);

fn write(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("healer.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn once_prints_a_table_and_exits_with_the_worst_status() {
    let plugins = plugins_dir_with(&["healer-plugin-nagios"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        &format!(
            r#"
[healer]
plugins_dir = "{}"
log_file = "{}"

[[target]]
name = "fine"
monitor = {{ plugin = "nagios", command = ["sh", "-c", "echo 'ALL OK | load=0.5'"] }}

[[target]]
name = "wobbly"
monitor = {{ plugin = "nagios", command = ["sh", "-c", "echo 'SLOW WARNING'; exit 1"] }}
"#,
            plugins.path().display(),
            dir.path().join("healer.log").display()
        ),
    );
    let config = config.to_str().unwrap();

    let all = run_healer(&["once", "--config", config], LIMIT);
    let table = String::from_utf8_lossy(&all.stdout);
    let one = run_healer(&["once", "--config", config, "--target", "fine"], LIMIT);
    let typo = run_healer(&["once", "--config", config, "--target", "fien"], LIMIT);

    assert_eq!(all.status.code(), Some(1), "{table}");
    assert!(
        table.lines().next().unwrap().starts_with("TARGET"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("fine") && l.contains("OK") && l.contains("ALL OK")),
        "{table}"
    );
    assert!(
        table.lines().any(|l| l.starts_with("wobbly")
            && l.contains("WARNING")
            && l.contains("[nagios.warning]")),
        "{table}"
    );
    assert_eq!(one.status.code(), Some(0));
    assert_eq!(typo.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&typo.stderr)
        .contains("no target is named \"fien\" (did you mean \"fine\"?)"));
}

#[test]
fn run_exits_at_once_when_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugins_dir_with(&[]);
    let log = dir.path().join("healer.log");
    let config = write(
        dir.path(),
        &format!(
            "[healer]\nenabled = false\nplugins_dir = \"{}\"\nlog_file = \"{}\"\n",
            plugins.path().display(),
            log.display()
        ),
    );

    let output = run_healer(&["run", "--config", config.to_str().unwrap()], LIMIT);

    assert_eq!(output.status.code(), Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains("healer is disabled ([healer] enabled = false); exiting"),
        "{text}"
    );
}

#[test]
fn json_log_lines_are_json_and_restarted_processes_are_healers_children() {
    let plugins = plugins_dir_with(&["healer-plugin-process", "healer-plugin-command"]);
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("service.pid");
    let config = write(
        dir.path(),
        &format!(
            r#"
[healer]
interval = "200ms"
log_format = "json"
plugins_dir = "{plugins}"
log_file = "healer.log"
event_log = "events.jsonl"

[[target]]
name = "service"
monitor = {{ plugin = "process", pidfile = "{pidfile}" }}
[[target.recover]]
plugin = "command"
argv = ["sh", "-c", "sleep 60 & echo $! > {pidfile}"]
"#,
            plugins = plugins.path().display(),
            pidfile = pidfile.display(),
        ),
    );
    let mut daemon = Daemon::start(&config);
    daemon.wait_for("the issue resolves", LIMIT, |e| {
        matches!(e, Event::IssueResolved { .. })
    });

    let log = daemon.log_text();
    let line = log
        .lines()
        .find(|line| line.contains("recovery succeeded"))
        .expect("the recovery is in the log");
    let event: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
    assert_eq!(event["level"], "INFO");
    assert_eq!(event["fields"]["target"], "service");
    assert_eq!(event["fields"]["message"], "recovery succeeded");
    // `sh` exited at once; its orphan `sleep` was re-parented to healer (a
    // child subreaper), not to PID 1.
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let parent: u32 = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(parent, daemon.pid());
    healer_e2e::signal(pid, "KILL");
}

#[test]
fn binding_the_intake_beyond_loopback_without_a_token_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugins_dir_with(&[]);
    let config = write(
        dir.path(),
        &format!(
            "[healer]\nplugins_dir = \"{}\"\nlog_file = \"{}\"\n\n[intake]\nbind = \"0.0.0.0:{}\"\n",
            plugins.path().display(),
            dir.path().join("healer.log").display(),
            healer_e2e::free_port()
        ),
    );

    let run = run_healer(&["run", "--config", config.to_str().unwrap()], LIMIT);
    let check = run_healer(&["check", "--config", config.to_str().unwrap()], LIMIT);

    for (what, output) in [("run", run), ("check", check)] {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{what}: {stderr}");
        assert!(
            stderr.contains("reaches beyond this machine, so it needs a token"),
            "{what}: {stderr}"
        );
    }
}

#[test]
fn sigusr1_reopens_the_log_file_and_the_event_log_after_logrotate_moved_them() {
    // A status flipping every 100 ms: its issue (no recoverer) escalates,
    // and escalated_interval keeps it checked that often.
    let plugins = plugins_dir_with(&["healer-plugin-nagios"]);
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[healer]\ninterval = \"100ms\"\nescalated_interval = \"100ms\"\n{}\n[[target]]\nname = \"flip\"\nmonitor = {{ plugin = \"nagios\", command = [\"sh\", \"-c\", \"test $(( $(date +%s%N) / 100000000 % 2 )) = 0\"] }}\n",
        healer_e2e::test_paths(plugins.path())
    );
    let config = write(dir.path(), &text);
    let mut daemon = Daemon::start(&config);
    daemon.wait_for("healer running", LIMIT, |e| {
        matches!(e, Event::Started { .. })
    });
    let log = dir.path().join("healer.log");
    let rotated = dir.path().join("healer.log.1");
    healer_e2e::wait_until("something is logged", LIMIT, || {
        (std::fs::metadata(&log).map_or(0, |m| m.len()) > 0).then_some(())
    });

    std::fs::rename(&log, &rotated).unwrap();
    let events = dir.path().join("events.jsonl");
    let events_rotated = dir.path().join("events.jsonl.1");
    std::fs::rename(&events, &events_rotated).unwrap();
    healer_e2e::signal(daemon.pid(), "USR1");
    healer_e2e::wait_until("a new log file with new lines", LIMIT, || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|text| text.contains("status changed"))
            .map(|_| ())
    });

    let new = std::fs::read_to_string(&log).unwrap();
    assert!(new.contains("SIGUSR1: the log file was reopened"), "{new}");
    healer_e2e::wait_until("a new event log with new events", LIMIT, || {
        let fresh = healer_e2e::read_records(&events);
        fresh
            .iter()
            .any(|r| matches!(r.event, Event::Checked { .. }))
            .then_some(())
    });
    let moved_away = std::fs::metadata(&events_rotated).unwrap().len();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        std::fs::metadata(&events_rotated).unwrap().len(),
        moved_away,
        "the rotated event log is written no more"
    );
    assert!(daemon.is_running());
}
