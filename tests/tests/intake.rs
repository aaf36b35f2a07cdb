//! The AutoHealer intake over real HTTP on 127.0.0.1: the seed's curl
//! example, both reflex map forms, failing webhooks, storms, Alertmanager,
//! and bad requests, against the real daemon and a local receiver standing
//! in for n8n.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use healer_e2e::{
    free_port, post, post_json, test_paths, wait_for_port, wait_until, Answer, Daemon, Event,
    Receiver,
};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(20);

/// Starts the daemon with `[intake]` on `port` plus `body`, and waits until
/// the intake answers. The plugins are copied into `dir/plugins`.
fn start(dir: &Path, port: u16, intake_extra: &str, body: &str) -> Daemon {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for package in ["healer-plugin-webhook", "healer-plugin-command"] {
        let file = healer_e2e::package_file(package);
        std::fs::copy(&file, plugins.join(file.file_name().unwrap())).unwrap();
    }
    let config = format!(
        "[healer]\n{}\n[intake]\nbind = \"127.0.0.1:{port}\"\n{intake_extra}\n{body}",
        test_paths(&plugins)
    );
    std::fs::write(dir.join("healer.toml"), config).unwrap();
    let daemon = Daemon::start(&dir.join("healer.toml"));
    wait_for_port(port, LIMIT);
    daemon
}

/// The `auto_healer_action` run of `anomaly` that finished.
fn finished(daemon: &mut Daemon, anomaly: &str) -> (bool, Option<String>) {
    match daemon.wait_for(
        "the workflow finishes",
        LIMIT,
        |e| matches!(e, Event::WorkflowFinished { run, .. } if run.anomaly == anomaly),
    ) {
        Event::WorkflowFinished {
            succeeded, error, ..
        } => (succeeded, error),
        _ => unreachable!(),
    }
}

fn webhook_workflow(name: &str, url: &str, extra: &str) -> String {
    format!("[workflow.{name}]\nsteps = [{{ plugin = \"webhook\", url = \"{url}\", retry_backoff = \"50ms\"{extra} }}]\n")
}

/// A running daemon with one reflex: names matching `pattern` run workflow
/// `w` with `params`, whose one step posts to a fresh receiver (200).
struct OneReflex {
    daemon: Daemon,
    n8n: Receiver,
    port: u16,
}

fn one_reflex(dir: &Path, pattern: &str, params: &str, intake_extra: &str) -> OneReflex {
    let n8n = Receiver::start(Answer::Status(200));
    let body = format!(
        "[[reflex]]\nmatch = \"{pattern}\"\nworkflow = \"w\"\nparams = {{ {params} }}\n\n{}",
        webhook_workflow("w", &n8n.url("/"), "")
    );
    let port = free_port();
    let daemon = start(dir, port, intake_extra, &body);
    OneReflex { daemon, n8n, port }
}

fn bodies(receiver: &Receiver) -> Vec<Value> {
    receiver
        .requests()
        .iter()
        .map(|(_, body)| serde_json::from_str(body).unwrap())
        .collect()
}

#[test]
fn the_seeds_curl_example_triggers_the_mapped_workflow() {
    let dir = tempfile::tempdir().unwrap();
    let n8n = Receiver::start(Answer::Status(200));
    let body = format!(
        "[[reflex]]\nmatch = \"api_latency.coinbase.high\"\nworkflow = \"run_coinbase_health_check_and_clear_cache\"\nparams = {{ exchange = \"coinbase\" }}\n\n{}",
        webhook_workflow("run_coinbase_health_check_and_clear_cache", &n8n.url("/webhook/healer"), "")
    );
    // The seed's port: a program already on it (a healer left running by
    // scripts/start) would answer the curl below instead of this daemon.
    if let Err(err) = std::net::TcpListener::bind(("127.0.0.1", 8000)) {
        panic!("port 8000 is taken ({err}): this test replays the seed's curl, port included; stop whatever holds it (a healer from scripts/start?)");
    }
    let mut daemon = start(dir.path(), 8000, "", &body);

    // The seed's example, byte for byte.
    let curl = r#"curl -X POST "http://127.0.0.1:8000/anomaly" \
-H "Content-Type: application/json" \
-d '{
  "name": "api_latency.coinbase.high",
  "details": {
    "latency_ms": 5000,
    "region": "us-east-1"
  }
}'"#;
    let output = Command::new("sh").arg("-c").arg(curl).output().unwrap();
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();

    assert_eq!(answer["status"], "started", "{answer}");
    assert_eq!(
        answer["workflow"],
        "run_coinbase_health_check_and_clear_cache"
    );
    assert!(answer["run_id"].as_str().unwrap().starts_with("run-"));
    wait_until("n8n receives the anomaly", LIMIT, || {
        (n8n.requests().len() == 1).then_some(())
    });
    let received = &bodies(&n8n)[0];
    assert_eq!(received["anomaly"]["name"], "api_latency.coinbase.high");
    assert_eq!(
        received["anomaly"]["details"],
        serde_json::json!({"latency_ms": 5000, "region": "us-east-1"})
    );
    assert_eq!(
        received["params"],
        serde_json::json!({"exchange": "coinbase"})
    );
    let started = daemon.wait_for("the workflow starts", LIMIT, |e| {
        matches!(e, Event::WorkflowStarted { .. })
    });
    let Event::WorkflowStarted { run, .. } = started else {
        unreachable!()
    };
    assert_eq!(run.anomaly, "api_latency.coinbase.high");
    assert_eq!(run.workflow, "run_coinbase_health_check_and_clear_cache");
    assert_eq!(run.details.to_value()["latency_ms"], 5000);
    assert_eq!(
        finished(&mut daemon, "api_latency.coinbase.high"),
        (true, None)
    );
    // The seed's record, in the log, at CRITICAL.
    let log = daemon.log_text();
    let record = log
        .lines()
        .find(|l| l.contains("event=\"auto_healer_action\"") && l.contains("status=\"started\""))
        .expect("the seed's auto_healer_action record is logged");
    assert!(
        record.contains("severity=\"CRITICAL\"")
            && record.contains("anomaly=\"api_latency.coinbase.high\"")
            && record.contains("latency_ms"),
        "{record}"
    );
}

#[test]
fn the_seeds_yaml_reflex_map_and_toml_reflexes_both_work_and_unknown_names_run_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let n8n = Receiver::start(Answer::Status(200));
    std::fs::write(
        dir.path().join("reflex_map.yml"),
        "anomalies:\n  - name: \"api_latency.coinbase.high\"\n    workflow: \"clear_cache\"\n    params:\n      service: \"coinbase\"\n  - name: \"disk.full\"\n    workflow: \"clear_cache\"\n",
    )
    .unwrap();
    let body = format!(
        "[[reflex]]\nmatch = \"queue.*.stuck\"\nworkflow = \"clear_cache\"\nparams = {{ from = \"toml\" }}\n\n{}",
        webhook_workflow("clear_cache", &n8n.url("/hook"), "")
    );
    let port = free_port();
    let mut daemon = start(dir.path(), port, "reflex_map = \"reflex_map.yml\"", &body);

    let (_, yaml) = post_json(
        port,
        "/anomaly",
        r#"{"name": "api_latency.coinbase.high", "details": {}}"#,
    );
    let (_, yaml_no_params) = post_json(port, "/anomaly", r#"{"name": "disk.full"}"#);
    let (_, toml) = post_json(
        port,
        "/anomaly",
        r#"{"name": "queue.orders.stuck", "details": {"depth": 9000}}"#,
    );
    let (status, unknown) = post_json(
        port,
        "/anomaly",
        r#"{"name": "nobody.knows.this", "details": {}}"#,
    );

    assert_eq!(yaml["status"], "started", "{yaml}");
    assert_eq!(yaml_no_params["status"], "started", "{yaml_no_params}");
    assert_eq!(toml["status"], "started", "{toml}");
    assert_eq!(
        (status, unknown["status"].as_str()),
        (200, Some("no_reflex")),
        "{unknown}"
    );
    wait_until("three webhook calls", LIMIT, || {
        (n8n.requests().len() == 3).then_some(())
    });
    let received = bodies(&n8n);
    let params = |name: &str| {
        received
            .iter()
            .find(|b| b["anomaly"]["name"] == name)
            .map(|b| b["params"].clone())
    };
    assert_eq!(
        params("api_latency.coinbase.high"),
        Some(serde_json::json!({"service": "coinbase"}))
    );
    assert_eq!(params("disk.full"), Some(serde_json::json!({})));
    assert_eq!(
        params("queue.orders.stuck"),
        Some(serde_json::json!({"from": "toml"}))
    );
    daemon.wait_for(
        "the unknown anomaly recorded",
        LIMIT,
        |e| matches!(e, Event::NoReflex { anomaly, .. } if anomaly == "nobody.knows.this"),
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(n8n.requests().len(), 3, "the unknown anomaly ran nothing");
}

#[test]
fn failing_webhooks_are_retried_and_the_final_failure_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let error_500 = Receiver::start(Answer::Status(500));
    let silent = Receiver::start(Answer::Never);
    let closed_port = free_port();
    let body = format!(
        "[[reflex]]\nmatch = \"a.500\"\nworkflow = \"w500\"\n[[reflex]]\nmatch = \"a.timeout\"\nworkflow = \"wtimeout\"\n[[reflex]]\nmatch = \"a.refused\"\nworkflow = \"wrefused\"\n\n{}{}{}",
        webhook_workflow("w500", &error_500.url("/"), ""),
        webhook_workflow("wtimeout", &silent.url("/"), ", timeout = \"200ms\""),
        webhook_workflow("wrefused", &format!("http://127.0.0.1:{closed_port}/"), ""),
    );
    let port = free_port();
    let mut daemon = start(dir.path(), port, "", &body);

    for name in ["a.500", "a.timeout", "a.refused"] {
        let (status, answer) = post_json(port, "/anomaly", &format!(r#"{{"name": "{name}"}}"#));
        assert_eq!(
            (status, answer["status"].as_str()),
            (202, Some("started")),
            "{answer}"
        );
    }

    let failed = |daemon: &mut Daemon, anomaly: &str| {
        let (succeeded, error) = finished(daemon, anomaly);
        assert!(!succeeded, "{anomaly}");
        error.unwrap_or_default()
    };
    let failed_500 = failed(&mut daemon, "a.500");
    let failed_timeout = failed(&mut daemon, "a.timeout");
    let failed_refused = failed(&mut daemon, "a.refused");
    assert_eq!(error_500.requests().len(), 3, "1 try + 2 retries");
    assert_eq!(silent.requests().len(), 3);
    assert!(
        failed_500.contains("failed after 3 tries: answered 500"),
        "{failed_500}"
    );
    assert!(
        failed_timeout.contains("failed after 3 tries: no answer within 200ms"),
        "{failed_timeout}"
    );
    assert!(
        failed_refused.contains("failed after 3 tries: cannot connect"),
        "{failed_refused}"
    );
    let (status, health) = post_json(port, "/anomaly", r#"{"name": "still.serving"}"#);
    assert_eq!(
        (status, health["status"].as_str()),
        (200, Some("no_reflex"))
    );
}

#[test]
fn a_hundred_identical_anomalies_in_a_second_run_the_workflow_once() {
    let dir = tempfile::tempdir().unwrap();
    let OneReflex {
        daemon: _daemon,
        n8n,
        port,
        ..
    } = one_reflex(dir.path(), "storm.*", "", "cooldown = \"60s\"");

    let started = std::time::Instant::now();
    let answers: Vec<Value> = (0..100)
        .map(|_| post_json(port, "/anomaly", r#"{"name": "storm.api.down"}"#).1)
        .collect();
    let took = started.elapsed();

    let count = |status: &str| answers.iter().filter(|a| a["status"] == status).count();
    assert!(took < Duration::from_secs(1), "100 reports took {took:?}");
    assert_eq!(count("started"), 1, "{answers:?}");
    assert_eq!(count("suppressed"), 99);
    assert_eq!(answers.last().unwrap()["suppressed"], 99);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(n8n.requests().len(), 1);
}

fn alertmanager_payload(status: &str) -> String {
    format!(
        r#"{{"version": "4", "groupKey": "{{}}:{{alertname=\"HighErrorRate\"}}", "truncatedAlerts": 0, "status": "{status}",
        "receiver": "healer", "groupLabels": {{"alertname": "HighErrorRate"}}, "commonLabels": {{}}, "commonAnnotations": {{}},
        "externalURL": "http://alertmanager:9093",
        "alerts": [{{"status": "{status}", "labels": {{"alertname": "HighErrorRate", "service": "api", "severity": "page"}},
          "annotations": {{"summary": "5xx above 5%"}}, "startsAt": "2026-11-23T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
          "generatorURL": "http://prometheus:9090/graph", "fingerprint": "c0ffee1234"}}]}}"#
    )
}

#[test]
fn an_alertmanager_alert_opens_once_and_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let OneReflex {
        mut daemon,
        n8n,
        port,
    } = one_reflex(dir.path(), "HighErrorRate", "", "cooldown = \"0s\"");

    let (status, firing) = post_json(port, "/alertmanager", &alertmanager_payload("firing"));
    let (_, resent) = post_json(port, "/alertmanager", &alertmanager_payload("firing"));
    wait_until("the workflow runs", LIMIT, || {
        (n8n.requests().len() == 1).then_some(())
    });
    assert_eq!(finished(&mut daemon, "HighErrorRate"), (true, None));
    let (_, resolved) = post_json(port, "/alertmanager", &alertmanager_payload("resolved"));

    assert_eq!(
        (status, firing["started"].as_u64()),
        (200, Some(1)),
        "{firing}"
    );
    assert_eq!(
        resent["duplicates"], 1,
        "Alertmanager's re-send must not run it again: {resent}"
    );
    assert_eq!(resolved["resolved"], 1, "{resolved}");
    daemon.wait_for(
        "the anomaly resolves",
        LIMIT,
        |e| matches!(e, Event::AnomalyResolved { anomaly } if anomaly == "HighErrorRate"),
    );
    let received = &bodies(&n8n)[0];
    assert_eq!(received["anomaly"]["details"]["labels"]["service"], "api");
    assert_eq!(
        received["anomaly"]["details"]["annotations"]["summary"],
        "5xx above 5%"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(n8n.requests().len(), 1);
}

#[test]
fn bad_requests_get_the_right_status_and_a_json_error_and_the_next_good_one_works() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-intake-token\n").unwrap();
    let extra = format!("token_file = \"{}\"\ncooldown = \"0s\"", token.display());
    let OneReflex {
        daemon: _daemon,
        port,
        ..
    } = one_reflex(dir.path(), "good.*", "", &extra);
    let auth = [("Authorization", "Bearer s3cret-intake-token")];
    let good = br#"{"name": "good.one", "details": {}}"#;
    let huge = format!(
        r#"{{"name": "good.one", "details": {{"blob": "{}"}}}}"#,
        "x".repeat(1 << 20)
    );

    // (what, expected status, expected `field`, (status, body) answered)
    type Case<'a> = (&'a str, u16, Option<&'a str>, (u16, String));
    let cases: Vec<Case> = vec![
        (
            "wrong content type",
            415,
            None,
            post(port, "/anomaly", "text/plain", &auth, good),
        ),
        (
            "1 MiB body",
            413,
            None,
            post(port, "/anomaly", "application/json", &auth, huge.as_bytes()),
        ),
        (
            "broken JSON",
            400,
            None,
            post(port, "/anomaly", "application/json", &auth, b"{\"name\": "),
        ),
        (
            "missing name",
            400,
            Some("name"),
            post(
                port,
                "/anomaly",
                "application/json",
                &auth,
                br#"{"details": {}}"#,
            ),
        ),
        (
            "bad name",
            400,
            Some("name"),
            post(
                port,
                "/anomaly",
                "application/json",
                &auth,
                br#"{"name": "rm -rf /"}"#,
            ),
        ),
        (
            "details not an object",
            400,
            Some("details"),
            post(
                port,
                "/anomaly",
                "application/json",
                &auth,
                br#"{"name": "a", "details": 5}"#,
            ),
        ),
        (
            "no token",
            401,
            None,
            post(port, "/anomaly", "application/json", &[], good),
        ),
        (
            "wrong token",
            401,
            None,
            post(
                port,
                "/anomaly",
                "application/json",
                &[("Authorization", "Bearer guess")],
                good,
            ),
        ),
    ];
    for (index, (what, status, field, (got, body))) in cases.into_iter().enumerate() {
        let error: Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("{what}: not JSON: {body}"));
        assert_eq!(got, status, "{what}: {body}");
        assert!(
            error["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {body}"
        );
        assert_eq!(error["field"].as_str(), field, "{what}: {body}");
        let next = format!(r#"{{"name": "good.after.{index}"}}"#);
        let (after, answer) = post(port, "/anomaly", "application/json", &auth, next.as_bytes());
        assert_eq!(after, 202, "a good request after {what}: {answer}");
    }
}

#[test]
fn send_explain_dry_run_and_the_kill_switch() {
    let dir = tempfile::tempdir().unwrap();
    let OneReflex {
        daemon: _daemon,
        n8n,
        ..
    } = one_reflex(
        dir.path(),
        "api.*.slow",
        "tier = \"gold\"",
        "actions = false",
    );
    let config = dir.path().join("healer.toml");
    let config = config.to_str().unwrap();

    let explained =
        healer_e2e::run_healer(&["explain", "--config", config, "api.checkout.slow"], LIMIT);
    let unexplained = healer_e2e::run_healer(&["explain", "--config", config, "db.down"], LIMIT);
    let dry = healer_e2e::run_healer(
        &["send", "--config", config, "api.checkout.slow", "--dry-run"],
        LIMIT,
    );
    let sent = healer_e2e::run_healer(
        &[
            "send",
            "--config",
            config,
            "api.checkout.slow",
            "-d",
            "p99_ms=900",
            "-d",
            "region=eu",
        ],
        LIMIT,
    );

    let explanation = String::from_utf8_lossy(&explained.stdout);
    assert_eq!(explained.status.code(), Some(0));
    assert!(
        explanation.contains("reflex    api.*.slow") && explanation.contains("{\"tier\":\"gold\"}"),
        "{explanation}"
    );
    assert!(explanation.contains("kill switch is on"), "{explanation}");
    assert_eq!(unexplained.status.code(), Some(1));
    let dry: Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(dry["status"], "dry_run");
    assert_eq!(dry["steps"][0]["plugin"], "webhook");
    assert_eq!(sent.status.code(), Some(0));
    let sent: Value = serde_json::from_slice(&sent.stdout).unwrap();
    assert_eq!(
        sent["status"], "would_run",
        "the kill switch records instead of running: {sent}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        n8n.requests().is_empty(),
        "nothing ran with the kill switch on"
    );
}

#[test]
fn a_stalled_client_is_cut_off_and_others_are_served() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let OneReflex {
        daemon: _daemon,
        port,
        ..
    } = one_reflex(dir.path(), "x", "", "request_timeout = \"300ms\"");

    let mut slow = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    slow.write_all(b"POST /anomaly HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
        .unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let closed = slow.read_to_end(&mut rest);
    let (status, answer) = post_json(port, "/anomaly", r#"{"name": "x"}"#);

    assert!(
        closed.is_ok(),
        "the server closed the stalled connection: {closed:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed after {:?}",
        started.elapsed()
    );
    assert_eq!(
        (status, answer["status"].as_str()),
        (202, Some("started")),
        "{answer}"
    );
}

fn alert(name: &str, status: &str, fingerprint: &str) -> String {
    format!(
        r#"{{"status": "{status}", "labels": {{"alertname": "{name}"}}, "annotations": {{}}, "startsAt": "2026-11-23T10:00:00Z", "fingerprint": "{fingerprint}"}}"#
    )
}

fn group(alerts: &[String]) -> String {
    format!(
        r#"{{"version": "4", "status": "firing", "truncatedAlerts": 0, "alerts": [{}]}}"#,
        alerts.join(",")
    )
}

#[test]
fn a_bad_alert_does_not_sink_its_group_and_a_name_resolves_when_all_its_alerts_do() {
    let dir = tempfile::tempdir().unwrap();
    let OneReflex {
        mut daemon,
        n8n,
        port,
    } = one_reflex(dir.path(), "HostDown", "", "cooldown = \"0s\"");

    let (status, first) = post_json(
        port,
        "/alertmanager",
        &group(&[
            alert("bad name!", "firing", "f0"),
            alert("HostDown", "firing", "f1"),
            alert("HostDown", "firing", "f2"),
        ]),
    );
    wait_until("one run", LIMIT, || {
        (n8n.requests().len() == 1).then_some(())
    });
    assert_eq!(finished(&mut daemon, "HostDown"), (true, None));
    // f2 was suppressed (f1's run was in flight), so a re-send runs it.
    let (_, resent) = post_json(
        port,
        "/alertmanager",
        &group(&[alert("HostDown", "firing", "f2")]),
    );
    let (_, one_resolved) = post_json(
        port,
        "/alertmanager",
        &group(&[alert("HostDown", "resolved", "f1")]),
    );
    let (_, all_resolved) = post_json(
        port,
        "/alertmanager",
        &group(&[alert("HostDown", "resolved", "f2")]),
    );

    assert_eq!(status, 200, "{first}");
    assert_eq!(first["started"], 1, "{first}");
    assert_eq!(first["results"][0]["alert"], 0, "{first}");
    assert_eq!(resent["duplicates"], 0, "{resent}");
    assert_eq!(resent["started"], 1, "{resent}");
    assert_eq!(
        one_resolved["resolved"], 0,
        "host2 still fires: {one_resolved}"
    );
    assert_eq!(all_resolved["resolved"], 1, "{all_resolved}");
}
