//! The operator's dashboard in a real browser: healer's `/` loaded in
//! headless Chromium (Debian's `chromium`, on loopback) shows every target
//! with its status and the escalated issue, as a screenshot too, and
//! still at a phone's width. With `HEALER_UPDATE_SCREENSHOT=1` the
//! screenshot becomes `docs/dashboard.png`, the one the README shows.

use std::path::Path;
use std::time::Duration;

use healer_e2e::{
    chromium_dom, chromium_screenshot, escalating_target, fast_config, free_port, plugins_dir_with,
    try_api, wait_for_port, wait_until, workspace_root, Daemon, Service,
};

const LIMIT: Duration = Duration::from_secs(30);

/// A desktop browser's window, and a phone's (an iPhone 12-14's CSS pixels).
const DESKTOP: (u32, u32) = (1280, 900);
const PHONE: (u32, u32) = (390, 844);

/// Each target and the status its row must show.
const TARGETS: &[(&str, &str)] = &[
    ("api-server", "OK"),
    ("host", "WARNING"),
    ("billing-worker", "CRITICAL"),
];

/// The issue of `billing-worker`, escalated.
const ESCALATED: &str = "billing-worker/process.not_running";

/// A running daemon with the intake (and so the dashboard) on `port`.
struct Watched {
    port: u16,
    _daemon: Daemon,
    _service: Service,
    _plugins: tempfile::TempDir,
    _dir: tempfile::TempDir,
}

/// healer watching three targets: `api-server` (a live process: OK),
/// `host` (this machine's memory, above a 1 % warning level: WARNING) and
/// `billing-worker` (its process never runs and its restart never helps:
/// CRITICAL, the issue escalated); returned once the API shows all three
/// checked and the issue escalated.
fn watched() -> Watched {
    let plugins = plugins_dir_with(&[
        "healer-plugin-process",
        "healer-plugin-command",
        "healer-plugin-system",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(&dir.path().join("api-server.pid"));
    let port = free_port();
    let body = format!(
        r#"
[intake]
bind = "127.0.0.1:{port}"

[[target]]
name = "api-server"
monitor = {{ plugin = "process", pidfile = "{dir}/api-server.pid" }}
[[target.diagnose]]
plugin = "process"

[[target]]
name = "host"
interval = "1s"
fail_after = 1000                 # a warning, never an issue: an escalated one would make it CRITICAL
monitor = {{ plugin = "system", memory_percent = {{ warning = 1.0, critical = 100.0 }} }}
{billing}"#,
        dir = dir.path().display(),
        billing = escalating_target(dir.path(), "billing-worker"),
    );
    let daemon = Daemon::start(&fast_config(dir.path(), plugins.path(), &body));
    wait_for_port(port, LIMIT);
    wait_until("every target checked", LIMIT, || {
        let targets = try_api(port, "/api/v1/targets")?;
        let statuses: Vec<(String, String)> = targets
            .as_array()?
            .iter()
            .map(|t| {
                let name = t["name"].as_str().unwrap_or_default().to_owned();
                let status = t["status"].as_str().unwrap_or_default().to_owned();
                (name, status)
            })
            .collect();
        TARGETS
            .iter()
            .all(|(name, status)| statuses.contains(&(name.to_string(), status.to_string())))
            .then_some(())
    });
    wait_until("the issue escalated in the API", LIMIT, || {
        let issues = try_api(port, "/api/v1/issues?state=escalated")?;
        issues
            .as_array()?
            .iter()
            .any(|issue| issue["id"] == ESCALATED)
            .then_some(())
    });
    Watched {
        port,
        _daemon: daemon,
        _service: service,
        _plugins: plugins,
        _dir: dir,
    }
}

/// The `<tr …>…</tr>` of the DOM whose start tag has `attribute="value"`.
fn row<'a>(dom: &'a str, attribute: &str, value: &str) -> Option<&'a str> {
    let needle = format!("{attribute}=\"{value}\"");
    let at = dom.find(&needle)?;
    let start = dom[..at].rfind("<tr")?;
    let end = at + dom[at..].find("</tr>")? + "</tr>".len();
    Some(&dom[start..end])
}

/// Asserts that `dom` has a row for every target with its status, its
/// last hour drawn (a status strip whose bars carry the status in their
/// class and in words, and a duration sparkline), and the escalated
/// issue's row.
fn assert_rows(dom: &str) {
    for (name, status) in TARGETS {
        let tr = row(dom, "data-target", name)
            .unwrap_or_else(|| panic!("no row for target {name} in the DOM:\n{dom}"));
        assert!(
            tr.contains(&format!("data-status=\"{status}\""))
                && tr.contains(&format!(">{status}</span>")),
            "target {name} is not shown {status}: {tr}"
        );
        assert!(
            tr.contains("<svg class=\"timeline\"") && tr.contains("<svg class=\"sparkline\""),
            "target {name} has no timeline and sparkline: {tr}"
        );
        assert!(
            tr.contains(&format!("class=\"seg {}\"", status.to_lowercase()))
                && tr.contains(&format!("last hour: {status}")),
            "target {name}'s strip shows its status {status} in a bar and in words: {tr}"
        );
        assert!(
            tr.contains("<polyline") || tr.contains("<circle"),
            "target {name}'s sparkline draws its durations: {tr}"
        );
    }
    let tr = row(dom, "data-issue", ESCALATED)
        .unwrap_or_else(|| panic!("no row for issue {ESCALATED} in the DOM:\n{dom}"));
    assert!(
        tr.contains("data-state=\"escalated\"") && tr.contains(">escalated</span>"),
        "issue {ESCALATED} is not shown escalated: {tr}"
    );
}

/// Asserts that `png` is a PNG image of `(width, height)` with more in it
/// than a blank page.
fn assert_screenshot(png: &Path, (width, height): (u32, u32)) {
    let bytes = std::fs::read(png)
        .unwrap_or_else(|err| panic!("no screenshot at {}: {err}", png.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        png.display()
    );
    // The IHDR chunk comes first: its width and height, big-endian.
    let dimension =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    assert_eq!((dimension(16), dimension(20)), (width, height));
    // A blank page of that size compresses to a few kilobytes.
    assert!(
        bytes.len() > 30_000,
        "the screenshot is only {} bytes: nearly blank?",
        bytes.len()
    );
}

/// With `HEALER_UPDATE_SCREENSHOT=1`, copies the screenshot `png` into
/// `docs/` under its own name, for the README.
fn keep_for_docs(png: &Path) {
    if std::env::var_os("HEALER_UPDATE_SCREENSHOT").is_some_and(|v| v == "1") {
        let kept = workspace_root()
            .join("docs")
            .join(png.file_name().expect("a file name"));
        std::fs::copy(png, &kept).unwrap();
        println!("screenshot written to {}", kept.display());
    }
}

#[test]
fn the_dashboard_in_headless_chromium_shows_each_target_status_and_the_escalated_issue() {
    let watched = watched();
    let url = format!("http://127.0.0.1:{}/", watched.port);

    // The same history as JSON.
    let timeline = healer_e2e::api(watched.port, "/api/v1/targets/billing-worker/timeline");
    let segments = timeline["segments"].as_array().expect("segments");
    assert_eq!(
        segments.last().map(|s| s["status"].clone()),
        Some(serde_json::json!("CRITICAL")),
        "{timeline}"
    );
    assert_eq!(
        timeline["durations_us"].as_array().map(Vec::len),
        Some(60),
        "{timeline}"
    );

    let dom = chromium_dom(&url, DESKTOP);
    assert!(dom.contains("<title>healer</title>"), "{dom}");
    assert!(dom.contains("3 targets"), "{dom}");
    assert_rows(&dom);

    let shots = tempfile::tempdir().unwrap();
    let png = shots.path().join("dashboard.png");
    chromium_screenshot(&url, DESKTOP, &png);
    assert_screenshot(&png, DESKTOP);
    keep_for_docs(&png);
}

#[test]
fn the_dashboard_renders_every_row_at_a_phone_width() {
    let watched = watched();
    let url = format!("http://127.0.0.1:{}/", watched.port);

    assert_rows(&chromium_dom(&url, PHONE));

    let shots = tempfile::tempdir().unwrap();
    let png = shots.path().join("dashboard-phone.png");
    chromium_screenshot(&url, PHONE, &png);
    assert_screenshot(&png, PHONE);
    keep_for_docs(&png);
}
