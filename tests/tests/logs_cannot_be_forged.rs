//! Text from outside cannot forge a line of healer's log: an operator's
//! pause reason and a plugin's summary, both holding a newline followed by
//! what looks like one of healer's own lines, stay on the line of the
//! event that carries them, in the readable log and in JSON lines, in the
//! log file and on stderr.

use std::time::Duration;

use healer_e2e::{
    fast_config, free_port, plugins_dir_with, run_healer, wait_for_port, Daemon, Event,
};

const LIMIT: Duration = Duration::from_secs(20);

/// What a forger would like to see at the start of a line.
const FORGED_LINE: &str = "2030-01-01T00:00:00.000000Z ERROR forged";

/// The text a forger sends: a newline, then the forged line.
fn forged() -> String {
    format!("\n{FORGED_LINE}")
}

/// Runs healer with the log in `format` on a target whose monitor's
/// summary is forged, pauses that target with a forged reason, and
/// returns the log file and stderr once healer has stopped.
fn log_of_a_forgery(format: &str) -> (String, String) {
    let plugins = plugins_dir_with(&["healer-fixture-typical"]);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let summary = format!("disk full{}", forged());
    let body = format!(
        "log_format = \"{format}\"\n\n[intake]\nbind = \"127.0.0.1:{port}\"\n\n\
         [[target]]\nname = \"forger\"\n\
         monitor = {{ plugin = \"fixed\", status = \"CRITICAL\", summary = {summary:?} }}\n"
    );
    let config = fast_config(dir.path(), plugins.path(), &body);
    let mut daemon = Daemon::start(&config);
    wait_for_port(port, LIMIT);
    daemon.wait_for("the forged summary opened an issue", LIMIT, |e| {
        matches!(e, Event::IssueOpened { target, issue } if target == "forger" && issue.summary == summary)
    });

    let reason = format!("maintenance{}", forged());
    let output = run_healer(
        &[
            "pause",
            "forger",
            "--for",
            "1h",
            "--reason",
            &reason,
            "--config",
            config.to_str().unwrap(),
        ],
        LIMIT,
    );
    assert!(output.status.success(), "healer pause: {output:?}");
    daemon.wait_for("the pause with the forged reason", LIMIT, |e| {
        matches!(e, Event::TargetPaused { target, pause } if target == "forger" && pause.reason == reason)
    });
    assert!(daemon.stop(), "healer stops cleanly");
    (daemon.log_text(), daemon.stderr())
}

fn lines_starting_with_the_forgery(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|line| line.starts_with(FORGED_LINE))
        .collect()
}

#[test]
fn a_forged_pause_reason_and_summary_stay_on_their_line_in_the_readable_log() {
    let (log, stderr) = log_of_a_forgery("human");
    for (name, text) in [("healer.log", &log), ("stderr", &stderr)] {
        assert_eq!(
            lines_starting_with_the_forgery(text),
            Vec::<&str>::new(),
            "{name}:\n{text}"
        );
        // The text is there, escaped, on the line of its event.
        let escaped = format!("\\n{FORGED_LINE}");
        let paused = text
            .lines()
            .find(|line| line.contains("target paused"))
            .unwrap_or_else(|| panic!("no pause in {name}:\n{text}"));
        assert!(
            paused.contains(&format!("reason=maintenance{escaped}")),
            "{paused}"
        );
        let opened = text
            .lines()
            .find(|line| line.contains("issue opened"))
            .unwrap_or_else(|| panic!("no issue opened in {name}:\n{text}"));
        assert!(
            opened.contains(&format!("summary=disk full{escaped}")),
            "{opened}"
        );
    }
}

#[test]
fn a_forged_pause_reason_and_summary_stay_inside_their_json_strings() {
    let (log, stderr) = log_of_a_forgery("json");
    for (name, text) in [("healer.log", &log), ("stderr", &stderr)] {
        assert_eq!(
            lines_starting_with_the_forgery(text),
            Vec::<&str>::new(),
            "{name}:\n{text}"
        );
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|err| panic!("not JSON in {name} ({err}): {line}"))
            })
            .collect();
        // Read back, the text is what was sent.
        let field = |message: &str, field: &str| {
            lines
                .iter()
                .find(|line| line["fields"]["message"] == message)
                .and_then(|line| line["fields"][field].as_str())
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("no {message:?} with {field} in {name}:\n{text}"))
        };
        assert_eq!(
            field("target paused: checks go on, recoveries do not", "reason"),
            format!("maintenance{}", forged())
        );
        assert_eq!(
            field("issue opened", "summary"),
            format!("disk full{}", forged())
        );
    }
}
