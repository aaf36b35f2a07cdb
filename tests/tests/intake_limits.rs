//! The intake is bounded against what anyone on the port may send, and
//! shows no secret: a flood of invented names and fingerprints costs
//! bounded memory, a flood faster than healer records is refused (503)
//! rather than queued, and what was answered 2xx survives a stop,
//! `dry_run` takes only true or false, and neither a dry run nor the logs
//! show a webhook's headers or the password in its URL.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use healer_e2e::{
    fast_config, free_port, plugins_dir_with, post, post_json, rss, store_file, wait_for_port,
    Daemon, Event, KeepAlive,
};
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(30);

/// What healer's RSS may grow by under the flood: the intake keeps at most
/// 10,000 anomaly names, occurrences and firing fingerprints (documented in
/// docs/CONFIG.md), the store's pending history is capped, the rest is
/// allocator slack.
const FLOOD_RSS_GROWTH: u64 = 64 * 1024 * 1024;

/// Prints the growth of healer's RSS from `before` to `after` (`what` was
/// posted in between) and holds it under [`FLOOD_RSS_GROWTH`].
fn assert_grew_within_bound(before: u64, after: u64, what: &str) {
    let grown = after.saturating_sub(before);
    println!(
        "RSS before {} MiB, after {what} {} MiB (+{} MiB)",
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
}

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
params = {{ api_token = "p4r4m-s3cret" }}

[workflow.notify]
steps = [
  {{ plugin = "webhook", url = "http://n8n:pa55word@127.0.0.1:{closed}/hook?access_token=qu3ry-s3cret", headers = {{ "X-Api-Key" = "k3y-s3cret" }}, retries = 0, continue_on_error = true }},
  {{ plugin = "command", argv = ["true"], env = {{ DB_PASSWORD = "hunter2" }} }},
]
"#
    );
    let (mut daemon, port, _plugins) = daemon_with_intake(dir.path(), &body);

    let (status, dry) = post_json(port, "/anomaly?dry_run=true", r#"{"name": "deploy.web"}"#);
    let (_, ran) = post_json(port, "/anomaly", r#"{"name": "deploy.web"}"#);
    let finished = daemon.wait_for("the workflow finishes", LIMIT, |e| {
        matches!(e, Event::WorkflowFinished { .. })
    });
    let steps = daemon.count(|e| matches!(e, Event::WorkflowStep { .. }));
    drop(daemon);

    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["status"], "dry_run", "{dry}");
    assert_eq!(ran["status"], "started", "{ran}");
    let Event::WorkflowFinished { error, .. } = finished else {
        unreachable!()
    };
    assert!(error.is_none(), "the failed webhook may fail: {error:?}");
    assert_eq!(steps, 2, "the webhook failed and the command ran");
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
        for secret in [
            "pa55word",
            "k3y-s3cret",
            "hunter2",
            "p4r4m-s3cret",
            "qu3ry-s3cret",
        ] {
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

    assert_grew_within_bound(before, after, "120,000 names and 100,000 fingerprints");
    assert!(status == 200 || status == 202);
    assert!(daemon.is_running());
}

/// Sends `request` on a new connection and reads the answer (or the close)
/// for at most 10 s.
fn exchange(port: u16, request: &[u8], then_wait: Duration) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    std::thread::sleep(then_wait);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn a_chunked_body_past_64_kib_is_413_a_broken_one_400_and_a_stalled_one_408() {
    let dir = tempfile::tempdir().unwrap();
    let (_daemon, port, _plugins) = daemon_with_intake(dir.path(), "request_timeout = \"1s\"\n");

    // No Content-Length to refuse up front: the limit stops the read.
    let chunk = format!(
        r#"{{"name": "big", "details": {{"blob": "{}"#,
        "x".repeat(70_000)
    );
    let chunked = format!(
        "POST /anomaly HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    let answer = exchange(port, chunked.as_bytes(), Duration::ZERO);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // A broken chunk size is a bad request, not a timeout.
    let broken = b"POST /anomaly HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n";
    let answer = exchange(port, broken, Duration::ZERO);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    // Half a body, then nothing: the deadline ends it, and says so.
    let stalled = b"POST /anomaly HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\": ";
    let started = std::time::Instant::now();
    let answer = exchange(port, stalled, Duration::ZERO);
    println!(
        "a stalled body, answered in {:?}: {answer:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut off after {:?}",
        started.elapsed()
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
}

#[test]
fn concurrent_reports_with_large_details_cost_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    // No reflex matches: every report is a no_reflex, the cheapest answer
    // and the one anyone on the port can produce at will.
    let (mut daemon, port, _plugins) = daemon_with_intake(dir.path(), "");
    let details = "y".repeat(60_000);
    let mut warm = KeepAlive::connect(port);
    for n in 0..100 {
        warm.post_json(
            "/anomaly",
            &format!(r#"{{"name": "warm.{n}", "details": {{"blob": "{details}"}}}}"#),
        );
    }
    let before = rss(daemon.pid());

    let clients: Vec<_> = (0..4)
        .map(|client| {
            let details = details.clone();
            std::thread::spawn(move || {
                let mut connection = KeepAlive::connect(port);
                for n in 0..2_500 {
                    let body = format!(
                        r#"{{"name": "big.{client}.{n}", "details": {{"blob": "{details}"}}}}"#
                    );
                    let (status, answer) = connection.post_json("/anomaly", &body);
                    assert_eq!(status, 200, "{answer}");
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    let after = rss(daemon.pid());

    assert_grew_within_bound(before, after, "10,000 reports of 60 KB from 4 clients");
    assert!(daemon.is_running());
}

/// Every name the store's history holds a `would_run` for, and the
/// refusals its `reports_refused` events count (how many such events, and
/// the refused reports they add up to).
fn recorded_after_stop(dir: &std::path::Path) -> (HashSet<String>, HashSet<String>, (u64, u64)) {
    let conn = rusqlite::Connection::open_with_flags(
        store_file(dir),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let names = |query: &str| -> HashSet<String> {
        let mut statement = conn.prepare(query).unwrap();
        let rows = statement.query_map([], |row| row.get(0)).unwrap();
        rows.map(Result::unwrap).collect()
    };
    let history = names("SELECT subject FROM events WHERE event = 'would_run'");
    let runs = names("SELECT anomaly FROM runs WHERE status = 'would_run'");
    let refusals = conn
        .query_row(
            "SELECT count(*), coalesce(sum(json_extract(body, '$.refused')), 0) FROM events WHERE event = 'reports_refused'",
            [],
            |row| Ok((row.get::<_, i64>(0)? as u64, row.get::<_, i64>(1)? as u64)),
        )
        .unwrap();
    (history, runs, refusals)
}

#[test]
fn a_flood_faster_than_recording_is_refused_with_503_and_every_2xx_report_survives_a_stop() {
    let dir = tempfile::tempdir().unwrap();
    // The kill switch: every distinct name is a `would_run` that must be
    // recorded (never shed). A small backlog so this flood passes it.
    let body = "actions = false\nmax_runs_per_minute = 0\nmax_backlog = 50\n[[reflex]]\nmatch = \"flood.*\"\nworkflow = \"w\"\n[workflow.w]\nsteps = [{ plugin = \"command\", argv = [\"true\"] }]\n";
    let (mut daemon, port, _plugins) = daemon_with_intake(dir.path(), body);

    let flood_for = Duration::from_secs(4);
    let clients: Vec<_> = (0..6)
        .map(|client| {
            std::thread::spawn(move || {
                let mut connection = KeepAlive::connect(port);
                let (mut answered, mut refused) = (Vec::new(), Vec::new());
                let started = Instant::now();
                let mut n = 0;
                while started.elapsed() < flood_for {
                    let name = format!("flood.{client}.{n}");
                    n += 1;
                    let (status, answer) =
                        connection.post_json("/anomaly", &format!(r#"{{"name": "{name}"}}"#));
                    match status {
                        200 => answered.push(name),
                        503 => refused.push(answer),
                        other => panic!("{name}: answered {other}: {answer}"),
                    }
                }
                (answered, refused)
            })
        })
        .collect();
    // One refusal seen whole, head and all, while the flood goes on.
    let mut seen = None;
    let started = Instant::now();
    while seen.is_none() && started.elapsed() < flood_for {
        let request = "POST /anomaly HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 24\r\nConnection: close\r\n\r\n{\"name\": \"flood.probe\"}\n";
        let answer = exchange(port, request.as_bytes(), Duration::ZERO);
        if answer.starts_with("HTTP/1.1 503") {
            seen = Some(answer);
        }
    }
    let (mut answered, mut refused) = (Vec::new(), Vec::new());
    for client in clients {
        let (ok, no) = client.join().unwrap();
        answered.extend(ok);
        refused.extend(no);
    }
    let stopped_cleanly = daemon.stop();
    let (history, runs, (refusal_events, refusals_counted)) = recorded_after_stop(dir.path());

    println!(
        "{} answered 200, {} refused 503; recorded: {} in the history, {} in runs; {refusal_events} reports_refused events counting {refusals_counted}",
        answered.len(),
        refused.len(),
        history.len(),
        runs.len()
    );
    assert!(stopped_cleanly, "healer exits by itself after SIGTERM");
    assert!(!refused.is_empty(), "the flood passed max_backlog = 50");
    let lost: Vec<&String> = answered
        .iter()
        .filter(|name| !history.contains(*name))
        .collect();
    assert!(
        lost.is_empty(),
        "{} answered 200 but not in the history: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    let lost: Vec<&String> = answered
        .iter()
        .filter(|name| !runs.contains(*name))
        .collect();
    assert!(
        lost.is_empty(),
        "{} answered 200 but not in runs: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    // A refusal is clean JSON naming why, and did nothing.
    let answer: Value = serde_json::from_str(&refused[0]).unwrap();
    assert_eq!(answer["status"], "refused", "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("max_backlog = 50"),
        "{answer}"
    );
    let seen = seen.expect("a refusal seen whole");
    assert!(
        seen.to_ascii_lowercase().contains("retry-after: 1\r\n"),
        "{seen}"
    );
    let refused_names: Vec<String> = refused
        .iter()
        .filter_map(|answer| serde_json::from_str::<Value>(answer).ok())
        .filter_map(|answer| answer["anomaly"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(refused_names.len(), refused.len());
    assert!(
        refused_names.iter().all(|name| !history.contains(name)),
        "a refused report was recorded"
    );
    // Refusals are recorded in a few events (once a 10 s at most, and the
    // rest at stop), which count every one (the probe's too).
    assert!(
        (1..=3).contains(&refusal_events),
        "{refusal_events} reports_refused events"
    );
    assert_eq!(
        refusals_counted,
        refused.len() as u64 + 1,
        "the flood's and the probe's"
    );
}
