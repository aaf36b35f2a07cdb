//! A healer with more checks than its threads can make on time says so,
//! and never takes its own slowness for a service's failure: the checks
//! of a worker whose one package thread is overbooked (each holds it for
//! 300 ms; five of them a second) fall behind their schedules. healer says
//! it is behind (an event, `/healthz` still 200 with the lag, the
//! metrics, a line in `healer status`), spreads the lateness over every
//! target (none waits more than three intervals), and opens no issue. The
//! config has no event log and logs at `info`: the checks are made by the
//! worker on their grids, and only their counts cross (quiet runs).

use std::time::Duration;

use healer_e2e::{free_port, get, plugins_dir_with, run_healer, stdout, wait_until, Unlogged};

const LIMIT: Duration = Duration::from_secs(40);

#[test]
fn an_overbooked_worker_makes_healer_say_it_is_behind_without_an_issue_or_a_failed_healthz() {
    let plugins = plugins_dir_with(&["healer-fixture-typical"]);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut body = format!(
        "[healer]\ninterval = \"1s\"\nplugins_dir = \"{}\"\nlog_file = \"healer.log\"\nstate_dir = \"state\"\nlog_level = \"info\"\n\n[intake]\nbind = \"127.0.0.1:{port}\"\n",
        plugins.path().display()
    );
    for i in 0..5 {
        body.push_str(&format!(
            "\n[[target]]\nname = \"slow{i}\"\nmonitor = {{ plugin = \"sluggish\", block_ms = 300 }}\n"
        ));
    }
    let config = dir.path().join("healer.toml");
    std::fs::write(&config, body).unwrap();
    let healer = Unlogged::start(&config, port);
    let log = dir.path().join("healer.log");

    // Behind: said in the log, and by /healthz with a 200.
    wait_until("healer says it is behind", LIMIT, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("healer is behind").then_some(())
    });
    let (code, health) = get(port, "/healthz");
    assert_eq!(code, 200, "behind is not broken: {health}");
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["status"], "behind", "{health}");
    assert!(
        health["behind"]["late"].as_u64().unwrap_or(0) > 0,
        "{health}"
    );

    // The metrics count late checks and say healer is behind.
    let (_, metrics) = get(port, "/metrics");
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|line| line.starts_with(name) && line[name.len()..].starts_with(' '))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in /metrics:\n{metrics}"))
    };
    assert!(value("healer_checks_late_total") > 0.0, "{metrics}");
    assert_eq!(value("healer_behind"), 1.0, "{metrics}");

    // `healer status` says so in one line.
    let status = run_healer(
        &["status", "--config", config.to_str().unwrap()],
        Duration::from_secs(20),
    );
    assert!(
        stdout(&status).contains("healer is BEHIND"),
        "{}",
        stdout(&status)
    );

    // Every target is still checked, none waits more than 3 intervals
    // (the board hears of a quiet check within a second of it: 4 s), and
    // slowness opened no issue.
    let (_, targets) = get(port, "/api/v1/targets");
    let targets: serde_json::Value = serde_json::from_str(&targets).unwrap();
    let rows = targets.as_array().expect("a list of targets");
    assert_eq!(rows.len(), 5);
    for row in rows {
        let age = row["age_ms"].as_u64().unwrap_or(u64::MAX);
        assert!(age <= 4_000, "{} last checked {age} ms ago", row["name"]);
        assert_eq!(row["status"], "OK", "{row}");
    }
    let (_, issues) = get(port, "/api/v1/issues");
    assert_eq!(issues.trim(), "[]", "slowness is not an issue: {issues}");
    drop(healer);
}
