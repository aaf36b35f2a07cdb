//! A FATAL line appended to a watched log produces a finding and a
//! recovery; a rotation of the log loses no line (one written to the old
//! file after the rename, one to the new file: both are seen).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use healer_e2e::{plugins_dir_with, test_paths, Daemon, Event, StepResult};

const LIMIT: Duration = Duration::from_secs(20);

fn append(path: &Path, line: &str) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    writeln!(file, "{line}").unwrap();
}

#[test]
fn a_fatal_line_is_recovered_and_a_rotation_loses_no_line() {
    let plugins = plugins_dir_with(&["healer-plugin-logscan", "healer-plugin-command"]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let recovered = dir.path().join("recovered");
    append(&log, "INFO started");
    let config = format!(
        r#"
[healer]
interval = "100ms"
{paths}
[[target]]
name = "app-log"
monitor = {{ plugin = "logscan", path = "{log}" }}
[[target.diagnose]]
plugin = "logscan"
patterns = [
  {{ regex = "FATAL", kind = "log.fatal" }},
  {{ regex = "OLD-FILE", kind = "log.old_file", severity = "WARNING" }},
  {{ regex = "NEW-FILE", kind = "log.new_file", severity = "WARNING" }},
]
[[target.recover]]
plugin = "command"
on = ["log.*"]
argv = ["sh", "-c", "echo \"$HEALER_FINDING: $HEALER_SUMMARY\" >> {recovered}"]
"#,
        paths = test_paths(plugins.path()),
        log = log.display(),
        recovered = recovered.display(),
    );
    std::fs::write(dir.path().join("healer.toml"), config).unwrap();
    let mut daemon = Daemon::start(&dir.path().join("healer.toml"));
    daemon.wait_for(
        "a check of the log",
        LIMIT,
        |e| matches!(e, Event::Checked { summary, .. } if summary.contains("0 new lines")),
    );

    append(&log, "INFO all fine");
    append(&log, "FATAL database connection lost");

    daemon.wait_for("the FATAL line's issue", LIMIT, |e| {
        matches!(e, Event::IssueOpened { issue, .. }
            if issue.kind == "log.fatal" && issue.summary.contains("FATAL database connection lost"))
    });
    let recovered_kind = |kind: &'static str| move |e: &Event| matches!(e, Event::RecovererFinished { kind: k, result: StepResult::Succeeded { .. }, .. } if k == kind);
    daemon.wait_for("its recovery", LIMIT, recovered_kind("log.fatal"));
    daemon.wait_for(
        "it resolves",
        LIMIT,
        |e| matches!(e, Event::IssueResolved { issue, .. } if issue.kind == "log.fatal"),
    );

    // Rotate like logrotate without copytruncate: the writer still holds the
    // old file and writes one more line there before reopening.
    let mut writer = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::fs::rename(&log, dir.path().join("app.log.1")).unwrap();
    writeln!(writer, "ERROR OLD-FILE written after the rename").unwrap();
    append(&log, "ERROR NEW-FILE first line of the new file");

    for kind in ["log.old_file", "log.new_file"] {
        daemon.wait_for(
            "an issue for each line",
            LIMIT,
            |e| matches!(e, Event::IssueOpened { issue, .. } if issue.kind == kind),
        );
    }
    // Both issues open in the same check and are recovered one after the
    // other: wait for both before reading what the recoveries wrote.
    daemon.wait_for("one recovery", LIMIT, recovered_kind("log.new_file"));
    daemon.wait_for("the other", LIMIT, recovered_kind("log.old_file"));
    let recoveries = std::fs::read_to_string(&recovered).unwrap();
    assert!(
        recoveries.contains("log.fatal: FATAL database connection lost"),
        "{recoveries}"
    );
    assert!(
        recoveries.contains("log.old_file: ERROR OLD-FILE written after the rename"),
        "{recoveries}"
    );
    assert!(
        recoveries.contains("log.new_file: ERROR NEW-FILE first line of the new file"),
        "{recoveries}"
    );
}
