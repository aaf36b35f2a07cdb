//! Alert sinks with the real daemon: an escalation reaches a real
//! Alertmanager (Debian's `prometheus-alertmanager`, on loopback) through
//! the `alertmanager` sink and resolves there when the target heals; a
//! webhook gets valid JSON with its template filled, however odd the
//! summary; a sink that refuses connections is retried, recorded as
//! failed, and healing goes on; an alert still escalated is sent again
//! after a restart; an anomaly the intake escalated fires and resolves
//! too; `healer check` names a bad sink's line.

use std::process::{Child, Command};
use std::time::Duration;

use healer::issues::Issue;
use healer::model::AlertState;
use healer_e2e::{
    after_start, fast_config, free_port, get, plugins_dir_with, post_json, read_pid, run_healer,
    supervised_target, wait_for_port, wait_until, Alertmanager, Answer, Daemon, Event, Receiver,
};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);
const PLUGINS: &[&str] = &["healer-plugin-process", "healer-plugin-command"];

/// A `[[target]]` named `broken` watching `pidfile`, whose one recovery
/// attempt never helps, so it escalates at once; re-probed every 200 ms
/// while escalated, so it resolves soon after the pidfile names a live
/// process.
fn broken_target(pidfile: &str) -> String {
    format!(
        r#"
[[target]]
name = "broken"
max_attempts = 1
escalated_interval = "200ms"
monitor = {{ plugin = "process", pidfile = {pidfile} }}
[[target.recover]]
plugin = "command"
argv = ["true"]
"#
    )
}

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    format!("\"{escaped}\"")
}

/// A live process written to `pidfile`: the broken target heals. Killed
/// when dropped.
struct Healed(Child);

fn heal(pidfile: &std::path::Path) -> Healed {
    let service = Command::new("sleep").arg("60").spawn().unwrap();
    std::fs::write(pidfile, format!("{}\n", service.id())).unwrap();
    Healed(service)
}

impl Drop for Healed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for target `broken` to escalate; its issue.
fn escalation_of_broken(daemon: &mut Daemon) -> Issue {
    match daemon.wait_for(
        "the escalation",
        LIMIT,
        |e| matches!(e, Event::IssueEscalated { target, .. } if target == "broken"),
    ) {
        Event::IssueEscalated { issue, .. } => issue,
        other => unreachable!("{other:?}"),
    }
}

fn is_sent(event: &Event, sink: &str, wanted: AlertState) -> bool {
    matches!(event, Event::AlertSent { sink: s, target, state, .. }
        if s == sink && target == "broken" && *state == wanted)
}

/// The alerts Alertmanager holds (`GET /api/v2/alerts?...`) for target `broken`.
fn alerts_for_broken(alertmanager: &Alertmanager, query: &str) -> Vec<Value> {
    let (status, body) = get(alertmanager.port, &format!("/api/v2/alerts{query}"));
    assert_eq!(status, 200, "{body}");
    let alerts: Vec<Value> = serde_json::from_str(&body).unwrap();
    alerts
        .into_iter()
        .filter(|alert| alert["labels"]["target"] == "broken")
        .collect()
}

#[test]
fn an_escalation_fires_in_alertmanager_and_resolves_there_when_the_target_heals() {
    let plugins = plugins_dir_with(PLUGINS);
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("service.pid");
    let routed = Receiver::start(Answer::Status(200));
    let alertmanager = Alertmanager::start(&routed.url("/alertmanager"));
    let body = format!(
        r#"{target}
[[alert]]
name = "team"
type = "alertmanager"
url = "http://127.0.0.1:{port}"
labels = {{ env = "test" }}
"#,
        target = broken_target(&toml_string(&pidfile.display().to_string())),
        port = alertmanager.port,
    );
    let mut daemon = Daemon::start(&fast_config(dir.path(), plugins.path(), &body));

    let issue = escalation_of_broken(&mut daemon);
    daemon.wait_for("the alert sent", LIMIT, |e| {
        is_sent(e, "team", AlertState::Firing)
    });
    let active = "?active=true&silenced=false&inhibited=false";
    let firing = alerts_for_broken(&alertmanager, active);
    assert_eq!(firing.len(), 1, "{firing:?}");
    let labels = &firing[0]["labels"];
    assert_eq!(labels["alertname"], "healer_escalation");
    assert_eq!(labels["kind"], issue.kind.as_str());
    assert_eq!(labels["severity"], "critical");
    assert_eq!(labels["env"], "test");
    assert_eq!(firing[0]["status"]["state"], "active");
    assert_eq!(firing[0]["annotations"]["summary"], issue.summary.as_str());

    let _service = heal(&pidfile);
    daemon.wait_for(
        "the issue resolved",
        LIMIT,
        |e| matches!(e, Event::IssueResolved { target, .. } if target == "broken"),
    );
    daemon.wait_for("the resolution sent", LIMIT, |e| {
        is_sent(e, "team", AlertState::Resolved)
    });
    // Alertmanager 0.25 lists no resolved alert, active or not.
    wait_until("the alert gone from Alertmanager", LIMIT, || {
        alerts_for_broken(&alertmanager, "")
            .is_empty()
            .then_some(())
    });
    assert!(daemon.is_running());
}

#[test]
fn a_webhook_gets_valid_json_with_its_template_filled_when_firing_and_when_resolved() {
    let plugins = plugins_dir_with(PLUGINS);
    let dir = tempfile::tempdir().unwrap();
    // The summary names the pidfile: quotes, a backslash and a newline in
    // it must still make valid JSON.
    let odd = dir.path().join("we\"ird\\dir\nx");
    std::fs::create_dir(&odd).unwrap();
    let pidfile = odd.join("service.pid");
    let hook = Receiver::start(Answer::Status(200));
    let body = format!(
        r#"{target}
[[alert]]
type = "webhook"
url = "{url}"
headers = {{ "X-Key" = "k3y-value" }}
body = {{ text = "healer: {{target}} {{kind}} {{state}}: {{summary}}", state = "{{state}}", attempts = "{{attempts}}", list = ["{{target}}", 1, true] }}
"#,
        target = broken_target(&toml_string(&pidfile.display().to_string())),
        url = hook.url("/webhook/healer"),
    );
    let mut daemon = Daemon::start(&fast_config(dir.path(), plugins.path(), &body));

    let issue = escalation_of_broken(&mut daemon);
    assert!(
        ["\"", "\\", "\n"].iter().all(|c| issue.summary.contains(c)),
        "{:?}",
        issue.summary
    );
    daemon.wait_for("the firing sent", LIMIT, |e| {
        is_sent(e, "webhook-1", AlertState::Firing)
    });
    let _service = heal(&pidfile);
    daemon.wait_for("the resolution sent", LIMIT, |e| {
        is_sent(e, "webhook-1", AlertState::Resolved)
    });
    std::thread::sleep(Duration::from_millis(500)); // nothing more comes

    let requests = hook.requests();
    assert_eq!(requests.len(), 2, "once per firing, once per resolution");
    for ((head, body), state) in requests.iter().zip(["firing", "resolved"]) {
        assert!(head.starts_with("POST /webhook/healer "), "{head}");
        let head = head.to_ascii_lowercase();
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(head.contains("x-key: k3y-value"), "{head}");
        let sent: Value = serde_json::from_str(body).expect("the body is valid JSON");
        assert_eq!(
            sent["text"],
            format!("healer: broken {} {state}: {}", issue.kind, issue.summary)
        );
        assert_eq!(sent["state"], state);
        assert_eq!(sent["attempts"], "1");
        assert_eq!(sent["list"], serde_json::json!(["broken", 1, true]));
    }
}

#[test]
fn a_sink_that_refuses_connections_is_retried_recorded_as_failed_and_healing_goes_on() {
    let plugins = plugins_dir_with(PLUGINS);
    let dir = tempfile::tempdir().unwrap();
    let refusing = free_port();
    let body = format!(
        r#"{broken}{service}
[[alert]]
name = "nowhere"
type = "alertmanager"
url = "http://127.0.0.1:{refusing}"
retries = 2
retry_backoff = "100ms"
timeout = "2s"
"#,
        broken = broken_target(&toml_string(
            &dir.path().join("never.pid").display().to_string()
        )),
        service = supervised_target(dir.path(), 60),
    );
    let mut daemon = Daemon::start(&fast_config(dir.path(), plugins.path(), &body));

    let failed = daemon.wait_for("the delivery given up", LIMIT, |e| {
        matches!(e, Event::AlertFailed { sink, target, .. } if sink == "nowhere" && target == "broken")
    });
    let Event::AlertFailed {
        state,
        tries,
        error,
        ..
    } = failed
    else {
        unreachable!()
    };
    assert_eq!(state, AlertState::Firing);
    assert_eq!(tries, 3, "the first try and two retries");
    assert!(error.contains("cannot connect"), "{error}");
    assert_eq!(daemon.count(|e| matches!(e, Event::AlertSent { .. })), 0);

    // healer goes on healing: the supervised service, killed, is restarted.
    let pidfile = dir.path().join("service.pid");
    let pid = wait_until("the service running", LIMIT, || read_pid(&pidfile));
    let resolved_before =
        daemon.count(|e| matches!(e, Event::IssueResolved { target, .. } if target == "service"));
    healer_e2e::signal(pid, "KILL");
    wait_until("the service restarted", LIMIT, || {
        let resolved = daemon
            .count(|e| matches!(e, Event::IssueResolved { target, .. } if target == "service"));
        (resolved > resolved_before).then_some(())
    });
    assert_ne!(read_pid(&pidfile), Some(pid));
    assert!(daemon.is_running());
}

#[test]
fn an_alert_still_escalated_is_sent_again_after_a_restart() {
    let plugins = plugins_dir_with(PLUGINS);
    let dir = tempfile::tempdir().unwrap();
    // A stand-in for Alertmanager that records what it is sent.
    let alertmanager = Receiver::start(Answer::Status(200));
    let body = format!(
        r#"{target}
[[alert]]
type = "alertmanager"
url = "{url}"
"#,
        target = broken_target(&toml_string(
            &dir.path().join("never.pid").display().to_string()
        )),
        url = alertmanager.url(""),
    );
    let config = fast_config(dir.path(), plugins.path(), &body);
    let mut daemon = Daemon::start(&config);
    daemon.wait_for("the alert sent", LIMIT, |e| {
        is_sent(e, "alertmanager-1", AlertState::Firing)
    });
    assert!(daemon.stop(), "an operator restarts healer");
    let before = alertmanager.requests().len();
    assert_eq!(before, 1);

    // Sinks start before the first check: the alert may be sent again
    // before the second `started` event.
    let daemon = Daemon::start(&config);
    let firings = || daemon.count(|e| is_sent(e, "alertmanager-1", AlertState::Firing));
    wait_until("the alert sent again", LIMIT, || {
        (firings() == 2).then_some(())
    });
    let started = wait_until("healer started again", LIMIT, || {
        after_start(&daemon.records(), 2).into_iter().next()
    });
    let Event::Started {
        restored_issues, ..
    } = started
    else {
        panic!("{started:?}");
    };
    assert_eq!(restored_issues, 1);
    assert_eq!(
        daemon.count(|e| matches!(e, Event::IssueEscalated { .. })),
        1,
        "the issue did not escalate anew: it was restored escalated"
    );
    let requests = alertmanager.requests();
    assert_eq!(requests.len(), before + 1);
    let (head, body) = &requests[before];
    assert!(head.starts_with("POST /api/v2/alerts "), "{head}");
    let sent: Value = serde_json::from_str(body).unwrap();
    assert_eq!(sent[0]["labels"]["target"], "broken");
    let ends_at = sent[0]["endsAt"].as_str().unwrap().to_owned();
    let ends_at: healer::clock::Wall = serde_json::from_value(Value::String(ends_at)).unwrap();
    assert!(
        ends_at > healer::clock::Wall::now(),
        "it fires on: it ends four re-sends ahead"
    );
}

#[test]
fn an_escalated_anomaly_fires_and_resolves_when_its_alertmanager_alert_does() {
    let plugins = plugins_dir_with(&["healer-plugin-command"]);
    let dir = tempfile::tempdir().unwrap();
    let hook = Receiver::start(Answer::Status(200));
    let port = free_port();
    let body = format!(
        r#"
[intake]
bind = "127.0.0.1:{port}"
cooldown = "0s"
max_attempts = 1

[[reflex]]
match = "DiskFull"
workflow = "noop"

[workflow.noop]
steps = [{{ plugin = "command", argv = ["true"] }}]

[[alert]]
type = "webhook"
url = "{url}"
"#,
        url = hook.url("/hook"),
    );
    let mut daemon = Daemon::start(&fast_config(dir.path(), plugins.path(), &body));
    wait_for_port(port, LIMIT);
    let group = |status: &str| {
        format!(
            r#"{{"version": "4", "status": "{status}", "truncatedAlerts": 0, "alerts": [{{"status": "{status}", "labels": {{"alertname": "DiskFull"}}, "annotations": {{}}, "startsAt": "2026-11-23T10:00:00Z", "fingerprint": "d15cf011"}}]}}"#
        )
    };
    let anomaly_sent = |event: &Event, wanted: AlertState| {
        matches!(event, Event::AlertSent { target, kind, state, .. }
            if target == "DiskFull" && kind == "anomaly" && *state == wanted)
    };

    // Its one run does not help: the next report escalates it.
    let (status, _) = post_json(port, "/alertmanager", &group("firing"));
    assert_eq!(status, 200);
    daemon.wait_for(
        "the workflow finished",
        LIMIT,
        |e| matches!(e, Event::WorkflowFinished { run, .. } if run.anomaly == "DiskFull"),
    );
    let (_, escalated) = post_json(port, "/anomaly", r#"{"name": "DiskFull"}"#);
    assert_eq!(escalated["reason"], "attempts exhausted", "{escalated}");
    daemon.wait_for("the firing sent", LIMIT, |e| {
        anomaly_sent(e, AlertState::Firing)
    });
    let (status, _) = post_json(port, "/alertmanager", &group("resolved"));
    assert_eq!(status, 200);
    daemon.wait_for("the resolution sent", LIMIT, |e| {
        anomaly_sent(e, AlertState::Resolved)
    });

    let bodies: Vec<Value> = hook
        .requests()
        .iter()
        .map(|(_, body)| serde_json::from_str(body).unwrap())
        .collect();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    for (sent, state) in bodies.iter().zip(["firing", "resolved"]) {
        assert_eq!(sent["target"], "DiskFull");
        assert_eq!(sent["kind"], "anomaly");
        assert_eq!(sent["state"], state);
        assert_eq!(sent["severity"], "critical");
        assert_eq!(sent["attempts"], 1);
    }
}

#[test]
fn healer_check_names_the_line_of_a_bad_alert_sink() {
    let plugins = plugins_dir_with(&[]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("healer.toml");
    std::fs::write(
        &config,
        "[[alert]]\ntype = \"webhook\"\nurl = \"ftp://127.0.0.1/\"\nbody = { text = \"{tagret} is down\" }\n",
    )
    .unwrap();
    let output = run_healer(
        &[
            "check",
            "--config",
            config.to_str().unwrap(),
            "--plugins-dir",
            plugins.path().to_str().unwrap(),
        ],
        LIMIT,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let file = config.display();
    assert!(
        stderr.contains(&format!(
            "{file}:3:7: alert sink \"webhook-1\": `url` must be http or https, not \"ftp\""
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{file}:4:8: alert sink \"webhook-1\": `body`: unknown placeholder `{{tagret}}` (did you mean `{{target}}`?)")),
        "{stderr}"
    );
}
