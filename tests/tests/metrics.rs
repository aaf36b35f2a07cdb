//! `/metrics` read by a real Prometheus (Debian's `prometheus`, on
//! loopback): it scrapes healer every second without a parse error, sees
//! a healthy target as healthy, and sees the series move when that
//! target's process dies and its recovery cannot help. An issue's state
//! shows in the API and the metrics as it changes, not at the next check.
//! A fresh healer already shows every family `docs/CONFIG.md` lists, and
//! `promtool check metrics` (Debian's `prometheus`) finds nothing to say.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use healer_e2e::{
    escalating_target, fast_config, free_port, get, plugins_dir_with, poll_until, run_bounded_from,
    try_api, wait_for_port, workspace_root, Daemon, Prometheus, Service,
};

const LIMIT: Duration = Duration::from_secs(30);

/// How often Prometheus is asked (it scrapes every second).
const EVERY: Duration = Duration::from_millis(100);

#[test]
fn prometheus_scrapes_healer_and_sees_a_failing_target_move_the_series() {
    let plugins = plugins_dir_with(&["healer-plugin-process", "healer-plugin-command"]);
    let dir = tempfile::tempdir().unwrap();
    let mut service = Service::start(&dir.path().join("web.pid"));
    let port = free_port();
    // Its restart never helps: two failed attempts, then escalated.
    let body = format!(
        "\n[intake]\nbind = \"127.0.0.1:{port}\"\n{}",
        escalating_target(dir.path(), "web")
    );
    let _daemon = Daemon::start(&fast_config(dir.path(), plugins.path(), &body));
    wait_for_port(port, LIMIT);
    let prometheus = Prometheus::start(port);

    let scraped = poll_until("Prometheus scrapes healer cleanly", LIMIT, EVERY, || {
        let target = prometheus.healer_target()?;
        (target["health"] == "up").then_some(target)
    });
    assert_eq!(scraped["lastError"], "", "{scraped}");
    let value = |promql: &str| prometheus.value(promql);
    let until = |what: &str, promql: &str, wanted: fn(f64) -> bool| {
        poll_until(what, LIMIT, EVERY, || value(promql).filter(|v| wanted(*v)));
    };
    until("healer up in Prometheus", "up{job=\"healer\"}", |v| {
        v == 1.0
    });
    until(
        "web healthy in Prometheus",
        "healer_target_healthy{target=\"web\"}",
        |v| v == 1.0,
    );
    until(
        "web's checks timed",
        "healer_check_duration_seconds_count{target=\"web\"}",
        |v| v > 0.0,
    );
    assert_eq!(
        value("healer_target_status{target=\"web\",status=\"ok\"}"),
        Some(1.0)
    );
    assert_eq!(value("healer_issues{state=\"escalated\"}"), Some(0.0));
    assert_eq!(
        value("healer_recoveries_total{target=\"web\",result=\"failed\"}"),
        Some(0.0),
        "counted from zero, before the first recovery"
    );

    service.kill();

    until(
        "web unhealthy in Prometheus",
        "healer_target_healthy{target=\"web\"}",
        |v| v == 0.0,
    );
    until(
        "web critical in Prometheus",
        "healer_target_status{target=\"web\",status=\"critical\"}",
        |v| v == 1.0,
    );
    until(
        "the failed recoveries counted",
        "healer_recoveries_total{target=\"web\",result=\"failed\"}",
        |v| v == 2.0,
    );
    until(
        "the issue escalated in Prometheus",
        "healer_issues{state=\"escalated\"}",
        |v| v == 1.0,
    );
    until(
        "the escalation counted",
        "healer_escalations_total{target=\"web\"}",
        |v| v == 1.0,
    );
    assert_eq!(
        value("healer_target_status{target=\"web\",status=\"ok\"}"),
        None,
        "a status no longer held leaves the series"
    );
    let scraped = prometheus
        .healer_target()
        .expect("the target is still listed");
    assert_eq!(scraped["health"], "up", "{scraped}");
    assert_eq!(scraped["lastError"], "", "{scraped}");
}

#[test]
fn an_attempt_and_an_escalation_show_in_the_api_and_metrics_before_the_next_check() {
    let plugins = plugins_dir_with(&["healer-plugin-example", "healer-plugin-command"]);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // One attempt of 2 s that fails; once escalated, the next check is a
    // minute away.
    let body = format!(
        r#"
[intake]
bind = "127.0.0.1:{port}"

[[target]]
name = "report"
max_attempts = 1
escalated_interval = "60s"
monitor = {{ plugin = "file-exists", path = "{dir}/report.csv" }}
[[target.recover]]
plugin = "command"
argv = ["sh", "-c", "sleep 2; exit 1"]
"#,
        dir = dir.path().display()
    );
    let _daemon = Daemon::start(&fast_config(dir.path(), plugins.path(), &body));
    wait_for_port(port, LIMIT);
    let issue = |wanted: &str| {
        let issues = try_api(port, "/api/v1/issues?target=report")?;
        let issue = issues.as_array()?.first()?.clone();
        (issue["state"] == wanted).then_some(issue)
    };
    let metric = |line: &str| get(port, "/metrics").1.lines().any(|l| l == line);

    let recovering = poll_until("the attempt shown", LIMIT, EVERY, || issue("recovering"));
    assert_eq!(recovering["attempts"], 1, "{recovering}");
    assert!(metric("healer_issues{state=\"recovering\"} 1"));

    // Shown when it happens: 2 s, not the minute until the next check.
    let escalated = poll_until(
        "the escalation shown",
        Duration::from_secs(10),
        EVERY,
        || issue("escalated"),
    );
    assert_eq!(escalated["attempts"], 1, "{escalated}");
    assert!(metric("healer_issues{state=\"escalated\"} 1"));
    assert!(metric("healer_issues{state=\"recovering\"} 0"));
}

/// Where Debian's `prometheus` package puts the metrics linter.
const PROMTOOL: &str = "/usr/bin/promtool";

/// The metric names the `GET /metrics` row of `docs/CONFIG.md` lists
/// (labels left out).
fn families_in_config_md() -> BTreeSet<String> {
    let text = std::fs::read_to_string(workspace_root().join("docs/CONFIG.md")).unwrap();
    let row = text
        .lines()
        .find(|line| line.starts_with("| `GET /metrics` |"))
        .expect("docs/CONFIG.md has a `GET /metrics` row");
    row.split('`')
        .skip(1)
        .step_by(2)
        .filter(|quoted| quoted.starts_with("healer_"))
        .map(|quoted| quoted.split('{').next().unwrap_or(quoted).to_owned())
        .collect()
}

/// What `promtool check metrics` says about `text` (it exits 0 when it
/// finds nothing to say).
fn promtool_check(text: &str) -> (bool, String) {
    assert!(
        std::path::Path::new(PROMTOOL).exists(),
        "{PROMTOOL} is missing: install Debian's prometheus (apt-get install -y prometheus; .ci/run does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let scraped = dir.path().join("metrics.txt");
    std::fs::File::create(&scraped)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .unwrap();
    let output = run_bounded_from(
        Command::new(PROMTOOL).args(["check", "metrics"]),
        Stdio::from(std::fs::File::open(&scraped).unwrap()),
        LIMIT,
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success() && said.trim().is_empty(), said)
}

#[test]
fn a_fresh_healer_shows_every_documented_family_at_zero_and_promtool_finds_nothing_wrong() {
    let plugins = plugins_dir_with(&[
        "healer-plugin-process",
        "healer-plugin-command",
        "healer-plugin-example",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let _service = Service::start(&dir.path().join("web.pid"));
    let port = free_port();
    let body = format!(
        "\n[intake]\nbind = \"127.0.0.1:{port}\"\n{}\n[[target]]\nname = \"hostname\"\n\
         monitor = {{ plugin = \"file-exists\", path = \"/etc/hostname\" }}\n",
        escalating_target(dir.path(), "web")
    );
    let _daemon = Daemon::start(&fast_config(dir.path(), plugins.path(), &body));
    wait_for_port(port, LIMIT);
    poll_until("both targets checked once", LIMIT, EVERY, || {
        let targets = try_api(port, "/api/v1/targets")?;
        let targets = targets.as_array()?;
        (targets.len() == 2 && targets.iter().all(|t| t["status"] == "OK")).then_some(())
    });

    let (status, text) = get(port, "/metrics");

    assert_eq!(status, 200, "{text}");
    let documented = families_in_config_md();
    assert!(documented.len() >= 15, "{documented:?}");
    let sample_names: BTreeSet<&str> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .collect();
    let shown: BTreeSet<String> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# HELP "))
        .filter_map(|help| help.split(' ').next())
        .map(str::to_owned)
        .collect();
    for family in &documented {
        assert!(shown.contains(family), "no HELP for {family}:\n{text}");
        let samples = [family.clone(), format!("{family}_count")];
        assert!(
            samples
                .iter()
                .any(|name| sample_names.contains(name.as_str())),
            "no sample of {family}:\n{text}"
        );
    }
    assert_eq!(
        shown, documented,
        "/metrics and the `GET /metrics` row of docs/CONFIG.md name the same families"
    );
    // Checks begin at start: their count is the one that moves at once.
    for line in text.lines().filter(|line| line.contains("_total")) {
        if !line.starts_with('#') && !line.starts_with("healer_checks_began_total") {
            assert!(line.ends_with(" 0"), "nothing has happened yet: {line}");
        }
    }
    let (clean, said) = promtool_check(&text);
    assert!(clean, "promtool check metrics:\n{said}\non:\n{text}");
    // promtool reads what it is given: a family with no HELP is found.
    let (clean, said) = promtool_check("healer_unexplained_total 1\n");
    assert!(!clean && said.contains("no help text"), "{said}");
}
