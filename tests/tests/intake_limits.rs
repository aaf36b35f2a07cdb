//! The intake is bounded against what anyone on the port may send, and
//! shows no secret: a flood of invented names and fingerprints costs
//! bounded memory, `dry_run` takes only true or false, and neither a dry
//! run nor the logs show a webhook's headers or the password in its URL.

use std::time::Duration;

use healer_e2e::{
    fast_config, free_port, plugins_dir_with, post, post_json, rss, wait_for_port, Daemon, Event,
    KeepAlive,
};
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(30);

/// What healer's RSS may grow by under the flood: the intake keeps at most
/// 10,000 anomaly names, occurrences and firing fingerprints (documented in
/// docs/CONFIG.md), the store's pending history is capped, the rest is
/// allocator slack.
const FLOOD_RSS_GROWTH: u64 = 64 * 1024 * 1024;

/// A daemon with `[intake]` on a free port plus `body`; the plugins
/// directory lives as long as the returned value.
fn daemon_with_intake(dir: &std::path::Path, body: &str) -> (Daemon, u16, tempfile::TempDir) {
    let plugins = plugins_dir_with(&["healer-plugin-webhook", "healer-plugin-command"]);
    let port = free_port();
    let config = fast_config(
        dir,
        plugins.path(),
        &format!("\n[intake]\nbind = \"127.0.0.1:{port}\"\n{body}"),
    );
    let daemon = Daemon::start(&config);
    wait_for_port(port, LIMIT);
    (daemon, port, plugins)
}

#[test]
fn a_dry_run_and_the_logs_never_show_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let closed = free_port();
    let body = format!(
        r#"
[[reflex]]
match = "deploy.*"
workflow = "notify"

[workflow.notify]
steps = [
  {{ plugin = "webhook", url = "http://n8n:pa55word@127.0.0.1:{closed}/hook", headers = {{ "X-Api-Key" = "k3y-s3cret" }}, retries = 0 }},
  {{ plugin = "command", argv = ["true"], env = {{ DB_PASSWORD = "hunter2" }} }},
]
"#
    );
    let (mut daemon, port, _plugins) = daemon_with_intake(dir.path(), &body);

    let (status, dry) = post_json(port, "/anomaly?dry_run=true", r#"{"name": "deploy.web"}"#);
    let (_, ran) = post_json(port, "/anomaly", r#"{"name": "deploy.web"}"#);
    let finished = daemon.wait_for("the workflow fails", LIMIT, |e| {
        matches!(e, Event::WorkflowFinished { .. })
    });
    drop(daemon);

    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["status"], "dry_run", "{dry}");
    assert_eq!(ran["status"], "started", "{ran}");
    let Event::WorkflowFinished { error, .. } = finished else {
        unreachable!()
    };
    assert!(error.is_some(), "the webhook to a closed port failed");
    let shown = dry.to_string();
    assert!(shown.contains("<redacted>"), "{shown}");
    for (what, text) in [
        ("the dry-run answer", shown),
        (
            "the log",
            std::fs::read_to_string(dir.path().join("healer.log")).unwrap(),
        ),
        (
            "stderr",
            std::fs::read_to_string(dir.path().join("healer.stderr")).unwrap(),
        ),
        (
            "the event log",
            std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap(),
        ),
    ] {
        for secret in ["pa55word", "k3y-s3cret", "hunter2"] {
            assert!(!text.contains(secret), "{secret} is in {what}");
        }
    }
}

#[test]
fn dry_run_is_true_or_false_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let body = "[[reflex]]\nmatch = \"x.*\"\nworkflow = \"w\"\n[workflow.w]\nsteps = [{ plugin = \"command\", argv = [\"true\"] }]\n";
    let (_daemon, port, _plugins) = daemon_with_intake(dir.path(), body);
    let anomaly = br#"{"name": "x.y"}"#;
    let ask = |query: &str| {
        post(
            port,
            &format!("/anomaly{query}"),
            "application/json",
            &[],
            anomaly,
        )
    };

    let (yes, dry) = ask("?dry_run=true");
    let (no, _) = ask("?dry_run=false");
    let refused: Vec<(u16, String)> = ["?dry_run", "?dry_run=1", "?dry_run=yes", "?dry_run=TRUE"]
        .iter()
        .map(|query| ask(query))
        .collect();

    assert_eq!(yes, 200, "{dry}");
    assert!(dry.contains("\"status\":\"dry_run\""), "{dry}");
    assert_eq!(no, 202, "dry_run=false runs it");
    for (status, body) in refused {
        let error: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (status, error["field"].as_str()),
            (400, Some("dry_run")),
            "{body}"
        );
    }
}

#[test]
fn a_flood_of_invented_names_and_fingerprints_costs_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let body = "[[reflex]]\nmatch = \"flood*\"\nworkflow = \"w\"\n[workflow.w]\nsteps = [{ plugin = \"command\", argv = [\"true\"] }]\n";
    let (mut daemon, port, _plugins) = daemon_with_intake(dir.path(), body);
    let mut client = KeepAlive::connect(port);
    // Warm up, then measure from a steady start.
    for n in 0..200 {
        client.post_json("/anomaly", &format!(r#"{{"name": "warm.{n}"}}"#));
    }
    let before = rss(daemon.pid());

    // 100,000 distinct names and as many distinct fingerprints, as
    // Alertmanager groups of 250 alerts (each alert name matches the
    // reflex, so each is tracked).
    for group in 0..400 {
        let alerts: Vec<Value> = (0..250)
            .map(|n| {
                let id = group * 250 + n;
                json!({
                    "status": "firing",
                    "labels": {"alertname": format!("flood.{id}")},
                    "startsAt": "2026-11-23T10:00:00Z",
                    "fingerprint": format!("{id:016x}"),
                })
            })
            .collect();
        let (status, answer) =
            client.post_json("/alertmanager", &json!({"alerts": alerts}).to_string());
        assert_eq!(status, 200, "{answer}");
    }
    for id in 0..100_000 {
        let (status, _) =
            client.post_json("/anomaly", &format!(r#"{{"name": "flood.named.{id}"}}"#));
        assert!(status == 200 || status == 202, "{status}");
    }
    let after = rss(daemon.pid());
    let (status, _) = client.post_json("/anomaly", r#"{"name": "flood.still.answered"}"#);

    let grown = after.saturating_sub(before);
    println!(
        "RSS before {} MiB, after 120,000 names and 100,000 fingerprints {} MiB (+{} MiB)",
        before >> 20,
        after >> 20,
        grown >> 20
    );
    assert!(
        grown < FLOOD_RSS_GROWTH,
        "RSS grew by {} MiB (bound {} MiB)",
        grown >> 20,
        FLOOD_RSS_GROWTH >> 20
    );
    assert!(status == 200 || status == 202);
    assert!(daemon.is_running());
}
