//! What healer tells the operator is true: a target's status counts its
//! issues (an escalated one is CRITICAL whatever its monitor says) in
//! `healer status` and its exit code, the API and the dashboard; a
//! recovery held by a dependency says so, naming the dependency, in all
//! three. And attempts come `backoff` apart, doubling, as documented.

use std::time::Duration;

use healer_e2e::{
    fast_config, free_port, get, plugins_dir_with, run_healer, stdout, try_api, wait_for_port,
    wait_until, Daemon, Event,
};

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn an_escalated_issue_makes_its_target_critical_and_a_held_dependent_names_what_holds_it() {
    let plugins = plugins_dir_with(&[
        "healer-plugin-logscan",
        "healer-plugin-process",
        "healer-plugin-command",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("db.log");
    std::fs::write(&log, "12:00 disk filling: 91% used\n").unwrap();
    let port = free_port();
    // `db`: its log monitor answers OK every time; its diagnoser found the
    // disk filling, and nothing can recover that: escalated at once, and
    // kept open (resolve_after). `web`: its process never runs, and its
    // restart waits for `db`.
    let body = format!(
        r#"
[intake]
bind = "127.0.0.1:{port}"

[[target]]
name = "db"
resolve_after = 100000
[target.monitor]
plugin = "logscan"
path = "{log}"
from_start = true
[[target.diagnose]]
plugin = "logscan"
patterns = [{{ regex = "disk filling", kind = "disk.filling", severity = "WARNING" }}]

[[target]]
name = "web"
depends_on = ["db"]
[target.monitor]
plugin = "process"
pidfile = "{dir}/web.pid"
[[target.diagnose]]
plugin = "process"
[[target.recover]]
plugin = "command"
on = ["process.not_running"]
argv = ["true"]
"#,
        log = log.display(),
        dir = dir.path().display(),
    );
    let config = fast_config(dir.path(), plugins.path(), &body);
    let mut daemon = Daemon::start(&config);
    wait_for_port(port, LIMIT);
    daemon.wait_for(
        "db's issue escalated",
        LIMIT,
        |e| matches!(e, Event::IssueEscalated { target, .. } if target == "db"),
    );
    daemon.wait_for("web's restart held by db", LIMIT, |e| {
        matches!(e, Event::RecoveryHeld { target, dependency, reason, .. }
            if target == "web" && dependency == "db" && reason == "has an open issue")
    });

    // The API: db is CRITICAL though its monitor says OK; web's issue is
    // held by db, and an escalated issue has no next attempt.
    let targets = wait_until("the API shows db critical", LIMIT, || {
        let targets = try_api(port, "/api/v1/targets")?;
        let db = targets
            .as_array()?
            .iter()
            .find(|t| t["name"] == "db")?
            .clone();
        (db["status"] == "CRITICAL").then_some(targets)
    });
    let by_name = |name: &str| {
        targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap()
            .clone()
    };
    let db = by_name("db");
    assert_eq!(db["checks"][0]["status"], "OK", "{db}");
    assert_eq!(db["issues"][0]["state"], "escalated", "{db}");
    assert!(db["issues"][0].get("next_attempt_at").is_none(), "{db}");
    let web = by_name("web");
    assert_eq!(web["held"][0]["dependency"], "db", "{web}");
    assert_eq!(web["held"][0]["kind"], "process.not_running", "{web}");
    let issues = try_api(port, "/api/v1/issues").unwrap();
    let held = issues
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["id"] == "web/process.not_running")
        .cloned()
        .unwrap();
    assert_eq!(held["held"]["dependency"], "db", "{held}");

    // `healer status`: CRITICAL, exit 2, web's issue held by db.
    let status = run_healer(&["status", "--config", config.to_str().unwrap()], LIMIT);
    let table = stdout(&status);
    println!("{table}");
    assert_eq!(status.status.code(), Some(2), "{table}");
    let db_row = table.lines().find(|l| l.starts_with("db ")).unwrap();
    assert!(db_row.contains("CRITICAL"), "{table}");
    assert!(db_row.contains("disk.filling escalated"), "{table}");
    let web_row = table.lines().find(|l| l.starts_with("web ")).unwrap();
    assert!(web_row.contains("held: waiting for db"), "{table}");
    // Every row's ISSUES column starts where the header's does.
    let header = table.lines().next().unwrap();
    let column = header.find("ISSUES").unwrap();
    for row in table.lines().skip(1) {
        assert!(
            row.get(column - 2..column) == Some("  ") && !row[column..].starts_with(' '),
            "misaligned:\n{table}"
        );
    }

    // The dashboard.
    let (code, page) = get(port, "/");
    assert_eq!(code, 200);
    assert!(
        page.contains("data-target=\"db\" data-status=\"CRITICAL\""),
        "the dashboard's db row is not CRITICAL"
    );
    assert!(page.contains("held: waiting for db"), "no held badge");
}

#[test]
fn attempts_come_backoff_apart_doubling() {
    let plugins = plugins_dir_with(&["healer-plugin-process", "healer-plugin-command"]);
    let dir = tempfile::tempdir().unwrap();
    // A process that never runs; its restart never helps. Checks every
    // 5 s: the attempts must not wait for them.
    let body = format!(
        r#"
[[target]]
name = "hopeless"
interval = "5s"
backoff = "1s"
backoff_max = "1m"
grace = "200ms"
max_attempts = 4
[target.monitor]
plugin = "process"
pidfile = "{dir}/never.pid"
[[target.diagnose]]
plugin = "process"
[[target.recover]]
plugin = "command"
on = ["process.not_running"]
argv = ["true"]
"#,
        dir = dir.path().display()
    );
    let config = fast_config(dir.path(), plugins.path(), &body);
    let mut daemon = Daemon::start(&config);
    daemon.wait_for(
        "the fourth attempt",
        Duration::from_secs(40),
        |e| matches!(e, Event::AttemptStarted { issue, .. } if issue.attempts == 4),
    );
    let records = daemon.records();
    let ends: Vec<_> = records
        .iter()
        .filter(|r| matches!(r.event, Event::AttemptFinished { .. }))
        .map(|r| r.at)
        .collect();
    let starts: Vec<_> = records
        .iter()
        .filter(|r| matches!(r.event, Event::AttemptStarted { .. }))
        .map(|r| r.at)
        .collect();
    // From the end of one attempt to the start of the next.
    let gaps: Vec<f64> = ends
        .iter()
        .zip(starts.iter().skip(1))
        .map(|(end, start)| start.since(*end).as_secs_f64())
        .collect();
    println!("gaps between attempts: {gaps:.2?} s (backoff 1 s doubling)");
    assert_eq!(gaps.len(), 3, "{gaps:?}");
    for (gap, backoff) in gaps.iter().zip([1.0, 2.0, 4.0]) {
        // ± one check interval is allowed; the loop should do far better.
        assert!(
            *gap >= backoff - 0.05 && *gap <= backoff + 1.0,
            "gaps {gaps:?}: expected {backoff} s"
        );
    }
}
