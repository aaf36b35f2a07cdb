//! The listener belongs to this machine: against the real daemon on
//! 127.0.0.1, a request naming another host (DNS rebinding) is refused
//! with 421 and a write from a page of another site with 403, on every
//! write endpoint of the API and the intake, and changes nothing; healer's
//! own commands, the seed's curl and a page of the listener's own origin
//! work as before. The token is read, checked and compared the same way
//! for the intake and the API, at start and at reload.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use healer_e2e::{
    api, exchange, fast_config, free_port, plugins_dir_with, run_bounded, run_healer, signal,
    wait_for_port, wait_until, Answer, Daemon, Event, Receiver,
};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(20);

/// The seed's curl body.
const SEED_BODY: &str = r#"{
  "name": "api_latency.coinbase.high",
  "details": {
    "latency_ms": 5000,
    "region": "us-east-1"
  }
}"#;

/// A firing Alertmanager group whose alert a reflex matches.
const ALERT: &str = r#"{"version": "4", "status": "firing", "receiver": "healer", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
  "alerts": [{"status": "firing", "labels": {"alertname": "api_latency.binance.high"}, "annotations": {}, "startsAt": "2026-11-23T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z", "fingerprint": "c0ffee1234"}]}"#;

/// healer on a free loopback port with a healthy target `web` and one
/// reflex (`api_latency.*` posts to `n8n`), `intake_extra` added to its
/// `[intake]`.
struct Healer {
    _dir: tempfile::TempDir,
    _plugins: tempfile::TempDir,
    port: u16,
    config: PathBuf,
    daemon: Daemon,
    n8n: Receiver,
}

impl Healer {
    fn start(intake_extra: &str) -> Healer {
        Healer::start_in(tempfile::tempdir().unwrap(), intake_extra)
    }

    fn start_in(dir: tempfile::TempDir, intake_extra: &str) -> Healer {
        let plugins = plugins_dir_with(&["healer-plugin-nagios", "healer-plugin-webhook"]);
        let n8n = Receiver::start(Answer::Status(200));
        let port = free_port();
        let body = format!(
            "\n[intake]\nbind = \"127.0.0.1:{port}\"\ncooldown = \"0s\"\n{intake_extra}\n\
             [[target]]\nname = \"web\"\nmonitor = {{ plugin = \"nagios\", command = [\"true\"] }}\n\n\
             [[reflex]]\nmatch = \"api_latency.*\"\nworkflow = \"notify\"\n\n\
             [workflow.notify]\nsteps = [{{ plugin = \"webhook\", url = \"{}\" }}]\n",
            n8n.url("/webhook/healer")
        );
        let config = fast_config(dir.path(), plugins.path(), &body);
        let daemon = Daemon::start(&config);
        wait_for_port(port, LIMIT);
        Healer {
            _dir: dir,
            _plugins: plugins,
            port,
            config,
            daemon,
            n8n,
        }
    }

    fn config_arg(&self) -> &str {
        self.config.to_str().unwrap()
    }

    /// `healer ARGS --config CONFIG`.
    fn healer(&self, args: &[&str]) -> std::process::Output {
        let mut all = args.to_vec();
        all.extend(["--config", self.config_arg()]);
        run_healer(&all, LIMIT)
    }
}

/// One HTTP/1.1 request with `Host: host` (none when `None`) and the other
/// headers; a body makes it JSON.
fn request(
    port: u16,
    method: &str,
    path: &str,
    host: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if let Some(host) = host {
        head.push_str(&format!("Host: {host}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if method != "GET" {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("Connection: close\r\n\r\n");
    exchange(port, &format!("{head}{body}"))
}

/// A request from elsewhere: what it is, its Host, its other headers, and
/// the status it gets.
type Foreign<'a> = (&'a str, Option<&'a str>, Vec<(&'a str, &'a str)>, u16);

/// Every write endpoint, with a body it would accept.
fn writes() -> Vec<(&'static str, String)> {
    vec![
        (
            "/api/v1/targets/web/pause",
            r#"{"for": "30d", "reason": "a web page"}"#.to_owned(),
        ),
        ("/api/v1/targets/web/resume", "{}".to_owned()),
        ("/api/v1/issues/web/reset", "{}".to_owned()),
        ("/api/v1/reload", "{}".to_owned()),
        ("/anomaly", SEED_BODY.to_owned()),
        ("/alertmanager", ALERT.to_owned()),
    ]
}

/// The `error` of a refusal: one line of JSON.
fn error_of(what: &str, body: &str) -> String {
    assert!(!body.trim_end().contains('\n'), "{what}: {body}");
    let json: Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("{what}: not JSON: {body}"));
    json["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no error: {body}"))
        .to_owned()
}

/// What an accepted write would have left behind.
fn acted(event: &Event) -> bool {
    matches!(
        event,
        Event::TargetPaused { .. }
            | Event::TargetResumed { .. }
            | Event::IssueResetByOperator { .. }
            | Event::ConfigReloaded { .. }
            | Event::ConfigRejected { .. }
            | Event::WorkflowStarted { .. }
            | Event::NoReflex { .. }
            | Event::AnomalySuppressed { .. }
            | Event::AlertReceived { .. }
    )
}

#[test]
fn a_foreign_host_or_a_write_from_another_site_is_refused_and_changes_nothing_while_the_cli_and_curl_work(
) {
    let mut healer = Healer::start("");
    let port = healer.port;
    let own = format!("127.0.0.1:{port}");
    let own_origin = format!("http://{own}");
    let rebound = format!("rebind.attacker.example:{port}");
    let rebound_origin = format!("http://{rebound}");
    wait_until("web is checked", LIMIT, || {
        (api(port, "/api/v1/targets")[0]["status"] == "OK").then_some(())
    });

    // DNS rebinding: a page of rebind.attacker.example, its name now
    // resolving to 127.0.0.1, reads...
    for path in [
        "/",
        "/healthz",
        "/metrics",
        "/api/v1/targets",
        "/api/v1/targets/web",
        "/api/v1/issues",
        "/api/v1/history",
        "/api/v1/plugins",
        "/no/such/endpoint",
    ] {
        let (status, body) = request(port, "GET", path, Some(&rebound), &[], "");
        assert_eq!(status, 421, "GET {path}: {body}");
        let error = error_of(path, &body);
        assert!(
            error.contains(&format!("{rebound:?}")) && error.contains("allowed_hosts"),
            "{error}"
        );
    }
    // ...and writes.
    for (path, body) in writes() {
        let foreign: [Foreign; 6] = [
            (
                "rebound host",
                Some(&rebound),
                vec![("Origin", &rebound_origin)],
                421,
            ),
            (
                "another origin",
                Some(&own),
                vec![("Origin", "http://evil.example")],
                403,
            ),
            ("origin null", Some(&own), vec![("Origin", "null")], 403),
            (
                "another port of this host",
                Some(&own),
                vec![("Origin", "http://127.0.0.1:3000")],
                403,
            ),
            (
                "Sec-Fetch-Site: cross-site",
                Some(&own),
                vec![("Sec-Fetch-Site", "cross-site")],
                403,
            ),
            (
                "Sec-Fetch-Site: same-site",
                Some(&own),
                vec![("Sec-Fetch-Site", "same-site")],
                403,
            ),
        ];
        for (what, host, headers, expected) in foreign {
            let (status, answer) = request(port, "POST", path, host, &headers, &body);
            assert_eq!(status, expected, "POST {path} with {what}: {answer}");
            error_of(&format!("POST {path} with {what}"), &answer);
        }
    }

    // healer's own commands work, and are the first to act: nothing
    // refused above left an event before the pause's.
    let status = healer.healer(&["status"]);
    assert_eq!(status.status.code(), Some(0), "{status:?}");
    let pause = healer.healer(&["pause", "web", "--for", "1h", "--reason", "maintenance"]);
    assert!(pause.status.success(), "{pause:?}");
    healer.daemon.wait_for("the operator's pause", LIMIT, |e| {
        matches!(e, Event::TargetPaused { .. })
    });
    let events: Vec<Event> = healer
        .daemon
        .records()
        .into_iter()
        .map(|r| r.event)
        .filter(acted)
        .collect();
    assert!(
        matches!(&events[..], [Event::TargetPaused { pause, .. }] if pause.reason == "maintenance"),
        "{events:?}"
    );
    assert!(healer.n8n.requests().is_empty());

    // A foreign resume leaves the pause in place.
    let (status, _) = request(
        port,
        "POST",
        "/api/v1/targets/web/resume",
        Some(&own),
        &[("Origin", "http://evil.example")],
        "{}",
    );
    assert_eq!(status, 403);
    assert_eq!(
        api(port, "/api/v1/targets/web")["paused"]["reason"],
        "maintenance"
    );

    // The seed's curl, sending no Origin, starts the workflow.
    let curl = format!(
        "curl -s -X POST \"http://127.0.0.1:{port}/anomaly\" -H \"Content-Type: application/json\" -d '{SEED_BODY}'"
    );
    let output = Command::new("sh").arg("-c").arg(&curl).output().unwrap();
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["status"], "started", "{answer}");
    wait_until("n8n receives the anomaly", LIMIT, || {
        (healer.n8n.requests().len() == 1).then_some(())
    });

    // A page of the listener's own origin may write.
    let (status, answer) = request(
        port,
        "POST",
        "/api/v1/targets/web/resume",
        Some(&own),
        &[("Origin", &own_origin), ("Sec-Fetch-Site", "same-origin")],
        "{}",
    );
    assert_eq!(status, 200, "{answer}");
    healer.daemon.wait_for("the resume", LIMIT, |e| {
        matches!(e, Event::TargetResumed { .. })
    });
    // By any of its names, and with no Host at all (HTTP/1.0).
    for host in [format!("localhost:{port}"), format!("[::1]:{port}"), own] {
        let (status, body) = request(port, "GET", "/api/v1/targets", Some(&host), &[], "");
        assert_eq!(status, 200, "Host: {host}: {body}");
    }
    let (status, body) = exchange(port, "GET /api/v1/targets HTTP/1.0\r\n\r\n");
    assert_eq!(status, 200, "{body}");
}

#[test]
fn allowed_hosts_are_served_and_the_token_is_checked_alike_for_the_intake_and_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let token = "9c1f0e5b7a2d4c68";
    std::fs::write(dir.path().join("token"), format!("{token}\n")).unwrap();
    let healer = Healer::start_in(
        dir,
        "token_file = \"token\"\nallowed_hosts = [\"Healer.Example.test\"]",
    );
    let port = healer.port;
    let name = format!("healer.example.test:{port}");
    let bearer = format!("Bearer {token}");
    let lower = format!("bearer {token}");
    let upper = format!("BEARER {token}");

    // The configured name, in any case, reads and writes from its origin.
    let (status, body) = request(
        port,
        "GET",
        "/api/v1/targets",
        Some(&name.to_uppercase()),
        &[("Authorization", &bearer)],
        "",
    );
    assert_eq!(status, 200, "{body}");
    let origin = format!("http://{name}");
    let (status, body) = request(
        port,
        "POST",
        "/api/v1/targets/web/pause",
        Some(&name),
        &[("Origin", &origin), ("Authorization", &upper)],
        r#"{"for": "1m"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = request(
        port,
        "GET",
        "/",
        Some(&format!("other.example.test:{port}")),
        &[("Authorization", &bearer)],
        "",
    );
    assert_eq!(status, 421, "{body}");

    // One scheme rule and one comparison for both: Bearer in any case...
    let (status, body) = request(
        port,
        "POST",
        "/anomaly",
        Some(&name),
        &[("Authorization", &lower)],
        SEED_BODY,
    );
    assert_eq!(status, 202, "{body}");
    let (status, body) = request(
        port,
        "GET",
        "/api/v1/issues",
        Some(&name),
        &[("Authorization", &lower)],
        "",
    );
    assert_eq!(status, 200, "{body}");
    // ...a wrong or empty one refused by both (`curl -u x:` is Basic with
    // an empty password)...
    for path in ["/anomaly", "/api/v1/targets/web/resume"] {
        for auth in [
            format!("Bearer {}", &token[..15]),
            format!("Bearer {token}x"),
            "Bearer ".to_owned(),
            "Basic eDo=".to_owned(),
        ] {
            let (status, body) = request(
                port,
                "POST",
                path,
                Some(&name),
                &[("Authorization", &auth)],
                SEED_BODY,
            );
            assert_eq!(status, 401, "{path} with {auth:?}: {body}");
        }
    }
    let (status, _) = request(
        port,
        "GET",
        "/api/v1/targets",
        Some(&name),
        &[("Authorization", "Basic eDo=")],
        "",
    );
    assert_eq!(status, 401, "curl -u x: reads nothing");
    // ...and Basic with the token as password good for reading only.
    // `curl -u x:9c1f0e5b7a2d4c68`.
    let basic = "Basic eDo5YzFmMGU1YjdhMmQ0YzY4";
    let (status, _) = request(
        port,
        "GET",
        "/api/v1/targets",
        Some(&name),
        &[("Authorization", basic)],
        "",
    );
    assert_eq!(status, 200);
    let (status, _) = request(
        port,
        "POST",
        "/anomaly",
        Some(&name),
        &[("Authorization", basic)],
        SEED_BODY,
    );
    assert_eq!(status, 401);
    // The CLI reads the token from the same file.
    wait_until("web is checked", LIMIT, || {
        let (_, body) = request(
            port,
            "GET",
            "/api/v1/targets/web",
            Some(&name),
            &[("Authorization", &bearer)],
            "",
        );
        let web: Value = serde_json::from_str(&body).ok()?;
        (web["status"] == "OK").then_some(())
    });
    let status = healer.healer(&["status"]);
    assert_eq!(status.status.code(), Some(0), "{status:?}");
}

/// `healer check` on `config`, with these environment variables.
fn check_with_env(config: &Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(healer_e2e::healer_bin());
    command
        .envs(env.iter().copied())
        .args(["check", "--config"])
        .arg(config);
    run_bounded(&mut command, LIMIT)
}

#[test]
fn a_token_env_that_is_whitespace_or_short_is_refused_by_check_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugins_dir_with(&[]);
    let config = dir.path().join("healer.toml");
    std::fs::write(
        &config,
        format!(
            "[healer]\nplugins_dir = \"{}\"\n\n[intake]\nbind = \"127.0.0.1:8000\"\ntoken_env = \"HEALER_LISTENER_TEST_TOKEN\"\n",
            plugins.path().display()
        ),
    )
    .unwrap();
    let at = format!("{}:6:1: [intake] token_env", config.display());
    for (value, why) in [
        ("", "is empty"),
        (" \t ", "holds only whitespace"),
        ("s3cret", "has 6 characters, fewer than 16"),
    ] {
        let output = check_with_env(&config, &[("HEALER_LISTENER_TEST_TOKEN", value)]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{value:?}: {stderr}");
        let line = stderr
            .lines()
            .find(|l| l.starts_with(&at))
            .unwrap_or_else(|| panic!("{value:?}: no {at} in {stderr}"));
        assert!(line.contains(why) && line.contains("16 to 1024"), "{line}");
    }
    let output = check_with_env(
        &config,
        &[("HEALER_LISTENER_TEST_TOKEN", "0123456789abcdef")],
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
}

#[test]
fn a_short_token_is_refused_at_start_and_at_reload_and_the_running_healer_keeps_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "short-token\n").unwrap();
    let plugins = plugins_dir_with(&["healer-plugin-nagios"]);
    let port = free_port();
    let body = format!(
        "\n[intake]\nbind = \"127.0.0.1:{port}\"\ntoken_file = \"token\"\n\n[[target]]\nname = \"web\"\nmonitor = {{ plugin = \"nagios\", command = [\"true\"] }}\n"
    );
    let config = fast_config(dir.path(), plugins.path(), &body);
    let at = format!("{}:", config.display());

    // At start: refused, naming the file, line and what would be right.
    let run = run_healer(&["run", "--config", config.to_str().unwrap()], LIMIT);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.lines().any(|l| l.contains(&at)
            && l.contains("token_file")
            && l.contains("has 11 characters, fewer than 16")),
        "{stderr}"
    );

    // At reload: refused, and the daemon carries on with its token.
    let good = "a-long-enough-token-0001";
    std::fs::write(&token_file, format!("{good}\n")).unwrap();
    let mut daemon = Daemon::start(&config);
    wait_for_port(port, LIMIT);
    std::fs::write(&token_file, "\nshort\n").unwrap();
    signal(daemon.pid(), "HUP");
    let rejected = daemon.wait_for("the reload is rejected", LIMIT, |e| {
        matches!(e, Event::ConfigRejected { .. })
    });
    let Event::ConfigRejected { problems, .. } = rejected else {
        unreachable!()
    };
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with(&at) && p.contains("its first line is blank")),
        "{problems:?}"
    );
    let (status, _) = request(
        port,
        "GET",
        "/api/v1/targets",
        Some("127.0.0.1"),
        &[("Authorization", &format!("Bearer {good}"))],
        "",
    );
    assert_eq!(status, 200);
    assert!(daemon.is_running());
}
