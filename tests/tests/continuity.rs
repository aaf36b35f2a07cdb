//! Nothing is forgotten on restart: healer killed with `kill -9` (or
//! stopped) and started again carries on from its store: attempts,
//! backoff, escalations, Alertmanager dedup and anomaly cooldowns. A
//! crash-looping healer never hands a failing service fresh attempts.

use std::time::Duration;

use healer::clock::Wall;
use healer_e2e::{
    after_start, fast_config, free_port, hopeless_target, plugins_dir_with, post_json,
    store_number, wait_for_port, wait_until, Alertmanager, Answer, Daemon, Event, Receiver,
    STORE_WRITES_WITHIN,
};

const LIMIT: Duration = Duration::from_secs(30);

fn attempts_started(events: &[Event], target: &str) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::AttemptStarted {
                target: t, issue, ..
            } if t == target => Some(issue.attempts),
            _ => None,
        })
        .collect()
}

#[test]
fn a_restart_after_attempt_two_carries_on_with_attempt_three_then_escalates() {
    let plugins = plugins_dir_with(&["healer-plugin-process", "healer-plugin-command"]);
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("attempts");
    // A recovery that never helps; 3 s between attempts leaves time to
    // kill healer between attempt 2 and attempt 3.
    let body = hopeless_target(
        dir.path(),
        "3s",
        &format!(
            r#"["sh", "-c", "echo $HEALER_ATTEMPT >> {}"]"#,
            ran.display()
        ),
    );
    let config = fast_config(dir.path(), plugins.path(), &body);
    let mut daemon = Daemon::start(&config);
    daemon.wait_for(
        "attempt 2 finished",
        LIMIT,
        |e| matches!(e, Event::AttemptFinished { issue, .. } if issue.attempts == 2),
    );
    std::thread::sleep(STORE_WRITES_WITHIN);

    daemon.kill();
    let before = daemon.records();
    assert_eq!(
        attempts_started(&after_start(&before, 1), "hopeless"),
        [1, 2],
        "killed between attempts 2 and 3"
    );
    let stored = |column: &str| {
        store_number(
            dir.path(),
            &format!(
                "SELECT {column} FROM issues WHERE target = 'hopeless' AND state = 'recovering'"
            ),
        )
    };
    assert_eq!(stored("attempts"), Some(2), "attempt 2 is in the store");
    let due = Wall::from_millis(stored("next_attempt_at").unwrap() as u64);
    let mut daemon = Daemon::start(&config);
    daemon.wait_for(
        "the escalation after the restart",
        LIMIT,
        |e| matches!(e, Event::IssueEscalated { target, .. } if target == "hopeless"),
    );
    std::thread::sleep(Duration::from_millis(500)); // five more checks

    let after = after_start(&daemon.records(), 2);
    let Event::Started {
        restored_issues, ..
    } = &after[0]
    else {
        panic!("{:?}", after[0]);
    };
    assert_eq!(*restored_issues, 1);
    assert_eq!(
        attempts_started(&after, "hopeless"),
        [3],
        "the next attempt is 3; attempt 1 is never seen again"
    );
    let third = daemon
        .records()
        .into_iter()
        .find(|r| matches!(&r.event, Event::AttemptStarted { issue, .. } if issue.attempts == 3))
        .unwrap();
    assert!(
        third.at >= due,
        "attempt 3 waited for its backoff across the restart: due {due}, started {}",
        third.at
    );
    let escalated = after.iter().find_map(|e| match e {
        Event::IssueEscalated { issue, .. } => Some(issue.attempts),
        _ => None,
    });
    assert_eq!(escalated, Some(3));
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "1\n2\n3\n");
    assert!(daemon.is_running());
}

#[test]
fn an_escalated_issue_stays_escalated_after_a_restart_and_resolves_when_healed() {
    let plugins = plugins_dir_with(&["healer-plugin-process", "healer-plugin-command"]);
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("service.pid");
    let body = format!(
        r#"
[[target]]
name = "broken"
max_attempts = 1
escalated_interval = "500ms"
monitor = {{ plugin = "process", pidfile = "{pidfile}", watch = false }}
[[target.recover]]
plugin = "command"
argv = ["true"]
"#,
        pidfile = pidfile.display()
    );
    let config = fast_config(dir.path(), plugins.path(), &body);
    let mut daemon = Daemon::start(&config);
    daemon.wait_for("the escalation", LIMIT, |e| {
        matches!(e, Event::IssueEscalated { .. })
    });
    assert!(daemon.stop(), "an operator restarts healer");
    assert_eq!(
        store_number(
            dir.path(),
            "SELECT COUNT(*) FROM issues WHERE target = 'broken' AND state = 'escalated' AND escalated_at IS NOT NULL",
        ),
        Some(1),
        "the escalation is in the store"
    );

    let mut daemon = Daemon::start(&config);
    let checked_after_restart = |daemon: &Daemon| {
        after_start(&daemon.records(), 2)
            .into_iter()
            .filter(|e| matches!(e, Event::Checked { .. }))
            .count()
    };
    wait_until("four re-probes", LIMIT, || {
        (checked_after_restart(&daemon) >= 4).then_some(())
    });
    let records = daemon.records();
    let started_at = records
        .iter()
        .filter(|r| matches!(r.event, Event::Started { .. }))
        .nth(1)
        .unwrap()
        .at;
    let probes: Vec<_> = records
        .iter()
        .filter(|r| r.at >= started_at && matches!(r.event, Event::Checked { .. }))
        .map(|r| r.at)
        .collect();
    // Escalated: re-probed every 500 ms, not every 100 ms interval.
    for pair in probes.windows(2) {
        let gap = pair[1].since(pair[0]);
        assert!(
            gap >= Duration::from_millis(450),
            "re-probed after {gap:?}: {probes:?}"
        );
    }
    let after = after_start(&daemon.records(), 2);
    assert!(
        attempts_started(&after, "broken").is_empty(),
        "an escalated issue is never recovered again: {after:?}"
    );
    assert!(
        !after
            .iter()
            .any(|e| matches!(e, Event::IssueOpened { .. } | Event::IssueResolved { .. })),
        "still the same escalated issue: {after:?}"
    );

    // The service comes back (an operator fixed it): the issue resolves.
    let mut service = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    std::fs::write(&pidfile, service.id().to_string()).unwrap();
    let resolved = daemon.wait_for(
        "the issue resolves",
        LIMIT,
        |e| matches!(e, Event::IssueResolved { target, .. } if target == "broken"),
    );
    let _ = service.kill();
    let _ = service.wait();
    let Event::IssueResolved { issue, .. } = resolved else {
        unreachable!()
    };
    assert_eq!(issue.attempts, 1);
    assert!(issue.escalated_at.is_some());
}

#[test]
fn alertmanagers_resend_after_a_restart_is_a_duplicate_and_a_cooldown_still_holds() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugins_dir_with(&["healer-plugin-webhook"]);
    let n8n = Receiver::start(Answer::Status(200));
    let port = free_port();
    let body = format!(
        r#"
[intake]
bind = "127.0.0.1:{port}"
cooldown = "10m"

[[reflex]]
match = "HighErrorRate"
workflow = "page"
[[reflex]]
match = "api.*.slow"
workflow = "page"

[workflow.page]
steps = [{{ plugin = "webhook", url = "{url}" }}]
"#,
        url = n8n.url("/hook")
    );
    let config = fast_config(dir.path(), plugins.path(), &body);
    let mut daemon = Daemon::start(&config);
    wait_for_port(port, LIMIT);
    let alertmanager = Alertmanager::start(&format!("http://127.0.0.1:{port}/alertmanager"));

    // Prometheus fires an alert at Alertmanager; Alertmanager posts it to
    // healer, which runs the workflow once.
    alertmanager.fire(&serde_json::json!([{
        "labels": {"alertname": "HighErrorRate", "service": "api", "severity": "page"},
        "annotations": {"summary": "5xx above 5%"},
        "startsAt": "2026-11-23T10:00:00Z",
        "generatorURL": "http://127.0.0.1:9090/graph"
    }]));
    let (_, slow) = post_json(port, "/anomaly", r#"{"name": "api.checkout.slow"}"#);
    assert_eq!(slow["status"], "started", "{slow}");
    wait_until("two webhook calls", LIMIT, || {
        (n8n.requests().len() == 2).then_some(())
    });
    wait_until("both runs finished", LIMIT, || {
        let finished = daemon
            .records()
            .iter()
            .filter(|r| matches!(r.event, Event::WorkflowFinished { .. }))
            .count();
        (finished == 2).then_some(())
    });
    assert!(daemon.stop(), "an operator restarts healer");
    assert_eq!(
        store_number(dir.path(), "SELECT COUNT(*) FROM alerts_acted"),
        Some(1),
        "the alert acted on is in the store"
    );
    assert_eq!(
        store_number(
            dir.path(),
            "SELECT COUNT(*) FROM anomalies WHERE name = 'api.checkout.slow' AND last_run IS NOT NULL",
        ),
        Some(1),
        "the anomaly's last run is in the store"
    );
    let daemon = Daemon::start(&config);
    wait_for_port(port, LIMIT);
    // Alertmanager re-sends the group (its retry, then every repeat
    // interval): the same occurrence, answered as a duplicate.
    wait_until("a re-send after the restart", LIMIT, || {
        after_start(&daemon.records(), 2)
            .iter()
            .any(|e| {
                matches!(
                    e,
                    Event::AlertReceived {
                        duplicate: true,
                        ..
                    }
                )
            })
            .then_some(())
    });
    let (_, again) = post_json(port, "/anomaly", r#"{"name": "api.checkout.slow"}"#);
    std::thread::sleep(Duration::from_millis(500));

    let after = after_start(&daemon.records(), 2);
    assert!(
        !after
            .iter()
            .any(|e| matches!(e, Event::WorkflowStarted { .. })),
        "nothing ran again after the restart: {after:?}"
    );
    assert!(
        !after.iter().any(|e| matches!(
            e,
            Event::AlertReceived {
                duplicate: false,
                ..
            }
        )),
        "every re-send was a duplicate: {after:?}"
    );
    assert_eq!(
        (again["status"].as_str(), again["reason"].as_str()),
        (Some("suppressed"), Some("cooldown")),
        "{again}"
    );
    assert_eq!(n8n.requests().len(), 2);
    drop(alertmanager);
}
