//! What a plugin cannot make of facts (issue 22), with the real daemon: a
//! monitor publishing 100,000 facts every check keeps its quota and no
//! more, one writing keys of another plugin's namespace (and healer's)
//! keeps none of them; each is said once, not once per check, its checks
//! stay OK, and healer's memory does not grow with the flood.

use std::time::Duration;

use healer::facts::KEYS_PER_WRITER;
use healer_e2e::{
    api, fast_config, free_port, get, plugins_dir_with, rss, wait_for_port, wait_until, Daemon,
    Event,
};

const LIMIT: Duration = Duration::from_secs(60);
const FLOOD: usize = 100_000;
/// Checks of the flood after warm-up, RSS read before and after.
const MEASURED_CHECKS: f64 = 20.0;

#[test]
fn a_flood_of_facts_and_a_trespass_keep_quota_and_namespace_say_so_once_and_cost_no_memory() {
    let plugins = plugins_dir_with(&["healer-fixture-facts-flood"]);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let body = format!(
        r#"
[intake]
bind = "127.0.0.1:{port}"

[[target]]
name = "flooded"
interval = "250ms"
timeout = "10s"
monitor = {{ plugin = "flood", count = {FLOOD} }}

[[target]]
name = "trespasser"
interval = "250ms"
monitor = {{ plugin = "flood", count = 1, trespass = ["process.pid", "healthy"] }}
"#
    );
    let config = fast_config(dir.path(), plugins.path(), &body);
    let mut daemon = Daemon::start(&config);
    wait_for_port(port, LIMIT);

    let dropped = |subject: &'static str| move |e: &Event| matches!(e, Event::FactsDropped { subject: s, .. } if s == subject);
    let flooded = daemon.wait_for("the flood dropped", LIMIT, dropped("target.flooded"));
    let Event::FactsDropped {
        writer,
        dropped: count,
        reason,
        ..
    } = &flooded
    else {
        unreachable!("matched above");
    };
    assert_eq!(writer, "flood");
    assert_eq!(*count, FLOOD - KEYS_PER_WRITER, "{reason}");
    assert!(
        reason.contains(&format!("flood keeps at most {KEYS_PER_WRITER} keys")),
        "{reason}"
    );
    let trespass = daemon.wait_for("the trespass dropped", LIMIT, dropped("target.trespasser"));
    let Event::FactsDropped {
        dropped: count,
        reason,
        ..
    } = &trespass
    else {
        unreachable!("matched above");
    };
    assert_eq!(*count, 2, "process.pid and healthy: {reason}");
    assert!(
        reason.contains("flood writes only its own keys (flood.*)"),
        "{reason}"
    );

    // Warm-up: a few floods more, then healer's memory from there on.
    let checks = || checks_of(port, "flooded");
    let warm = checks() + 8.0;
    wait_until("the warm-up's checks", LIMIT, || {
        (checks() >= warm).then_some(())
    });
    let (rss_before, checks_before) = (rss(daemon.pid()), checks());
    let end = checks_before + MEASURED_CHECKS;
    wait_until("the measured checks", LIMIT, || {
        (checks() >= end).then_some(())
    });
    let (rss_after, checks_after) = (rss(daemon.pid()), checks());
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    println!(
        "healer RSS over {} checks of {FLOOD} facts each: {:.1} MiB before, {:.1} MiB after, {:+.1} MiB",
        checks_after - checks_before,
        mib(rss_before),
        mib(rss_after),
        mib(rss_after) - mib(rss_before)
    );
    assert!(
        rss_after < rss_before + (20 << 20),
        "healer grew from {rss_before} to {rss_after} bytes"
    );

    // What healer holds: the quota of the flood, none of the trespass.
    let facts = api(port, "/api/v1/facts");
    let facts = facts.as_array().expect("an array of facts");
    let of = |subject: &str, writer: &str| {
        facts
            .iter()
            .filter(|f| f["subject"] == subject && f["source"]["writer"] == writer)
            .map(|f| f["key"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    let flood_keys = of("target.flooded", "flood");
    assert_eq!(flood_keys.len(), KEYS_PER_WRITER, "{flood_keys:?}");
    assert_eq!(of("target.trespasser", "flood"), ["flood.f0"]);
    for fact in facts {
        let (key, writer) = (&fact["key"], &fact["source"]["writer"]);
        let key = key.as_str().unwrap_or_default();
        if writer == "flood" {
            assert!(key.starts_with("flood."), "{fact}");
        } else {
            assert_eq!(writer, "healer", "{fact}");
        }
    }

    // Said once each, not once per check; every check was OK all along.
    assert_eq!(daemon.count(dropped("target.flooded")), 1);
    assert_eq!(daemon.count(dropped("target.trespasser")), 1);
    assert_eq!(
        daemon.count(|e| matches!(
            e,
            Event::PluginFailed { .. } | Event::PluginTimedOut { .. } | Event::IssueOpened { .. }
        )),
        0,
        "{}",
        daemon.log_text()
    );
    let (status, _) = get(port, "/healthz");
    assert_eq!(status, 200);
    assert!(daemon.is_running());
    assert!(daemon.stop());
}

/// How many checks of `target` healer has timed, from its `/metrics`.
fn checks_of(port: u16, target: &str) -> f64 {
    let (_, metrics) = get(port, "/metrics");
    let line = format!("healer_check_duration_seconds_count{{target=\"{target}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with(&line))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
