//! A plugin package upgraded in place: its `.so` replaced in the plugins
//! directory and `healer reload`. The new file is probed, a new worker
//! serves the package's targets, which keep their issues and pauses, and
//! the old worker ends, with no check missed; a replacement that fails its
//! probe leaves the running worker serving, and the reload says why in one
//! line.

use std::path::Path;
use std::time::Duration;

use healer::clock::Wall;

use healer_e2e::{
    is_alive, run_healer, stdout, wait_until, workers_of, Answer, Daemon, Event, Receiver, Running,
};
use healer_plugin_sdk::Status;

const LIMIT: Duration = Duration::from_secs(60);

/// How often the healthy targets are checked.
const EVERY: Duration = Duration::from_millis(500);

const WEB: [&str; 8] = [
    "web1", "web2", "web3", "web4", "web5", "web6", "web7", "web8",
];

const HTTP: &str = "libhealer_plugin_http.so";

fn targets(server: &Receiver, closed_port: u16) -> String {
    let mut body = String::new();
    for name in WEB {
        body.push_str(&format!(
            "\n[[target]]\nname = \"{name}\"\ninterval = \"500ms\"\nmonitor = {{ plugin = \"http\", url = \"{}\" }}\n",
            server.url(&format!("/{name}"))
        ));
    }
    body.push_str(&format!(
        "\n[[target]]\nname = \"down\"\ninterval = \"500ms\"\nmonitor = {{ plugin = \"http\", url = \"http://127.0.0.1:{closed_port}/\" }}\n"
    ));
    body
}

/// The pid of the worker serving the http package.
fn http_worker(healer: u32) -> Option<u32> {
    workers_of(healer)
        .into_iter()
        .find(|(_, cmdline)| cmdline.contains(HTTP))
        .map(|(pid, _)| pid)
}

/// Writes `bytes` over the package file as an installer does: a new file
/// renamed into place.
fn replace_package(plugins: &Path, with: &Path) {
    let staged = plugins.join(".staged");
    std::fs::copy(with, &staged).unwrap();
    std::fs::rename(&staged, plugins.join(HTTP)).unwrap();
}

fn reload(healer: &Running) -> serde_json::Value {
    let output = run_healer(
        &["reload", "--json", "--config", healer.config_arg()],
        LIMIT,
    );
    assert!(output.status.success(), "{output:?}");
    serde_json::from_str(&stdout(&output)).expect("JSON")
}

/// For each healthy target, the gaps between its checks within
/// `from..to` (healer's wall clock): the share with no check missed (under
/// two intervals: a stall of this shared machine delays, a missed check
/// skips), and how many.
fn on_time(daemon: &Daemon, from: Wall, to: Wall) -> (f64, usize) {
    let records = daemon.records();
    let (mut gaps, mut late) = (0, 0);
    for name in WEB {
        let times: Vec<Wall> = records
            .iter()
            .filter(|r| matches!(&r.event, Event::Checked { target, .. } if target == name))
            .map(|r| r.at)
            .filter(|at| *at >= from && *at <= to)
            .collect();
        for pair in times.windows(2) {
            gaps += 1;
            if pair[1].since(pair[0]) >= EVERY * 2 {
                late += 1;
            }
        }
    }
    (1.0 - late as f64 / gaps.max(1) as f64, gaps)
}

#[test]
fn a_replaced_package_is_served_by_a_new_worker_after_a_reload_keeping_issues_and_pauses() {
    let server = Receiver::start(Answer::Status(200));
    let closed_port = healer_e2e::free_port();
    let mut healer = Running::start(&["healer-plugin-http"], |_| targets(&server, closed_port));
    healer.daemon.wait_for(
        "the issue of the target that is down",
        LIMIT,
        |e| matches!(e, Event::IssueOpened { target, .. } if target == "down"),
    );
    let paused = run_healer(
        &[
            "pause",
            "web1",
            "--for",
            "1h",
            "--reason",
            "upgrade",
            "--config",
            healer.config_arg(),
        ],
        LIMIT,
    );
    assert!(paused.status.success(), "{paused:?}");
    let healer_pid = healer.daemon.pid();
    let old = wait_until("the http worker", LIMIT, || http_worker(healer_pid));

    // A rebuilt copy: the same package without its debug sections (a
    // different file, a different sha256, the same plugins).
    let rebuilt = healer.dir.path().join("rebuilt.so");
    let stripped = std::process::Command::new("strip")
        .args(["--strip-debug", "-o"])
        .arg(&rebuilt)
        .arg(healer.plugins.path().join(HTTP))
        .status()
        .expect("strip runs (binutils)");
    assert!(stripped.success());
    std::thread::sleep(EVERY * 4);
    let swap_from = Wall::now();
    replace_package(healer.plugins.path(), &rebuilt);
    let answer = reload(&healer);
    let mut changed: Vec<String> = answer["changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_owned())
        .collect();
    changed.sort();
    let mut all: Vec<String> = WEB.iter().map(|n| (*n).to_owned()).collect();
    all.push("down".to_owned());
    all.sort();
    assert_eq!(
        changed, all,
        "every target of the package restarted: {answer}"
    );
    assert!(
        answer["packages_added"][0]
            .as_str()
            .is_some_and(|f| f.ends_with(HTTP)),
        "{answer}"
    );
    let new = wait_until("a new http worker, the old one gone", LIMIT, || {
        http_worker(healer_pid).filter(|pid| *pid != old && !is_alive(old))
    });
    let after_new = healer.daemon.records().len();
    std::thread::sleep(EVERY * 6);
    let (share, gaps) = on_time(&healer.daemon, swap_from, Wall::now());
    println!(
        "across the upgrade: {gaps} gaps between checks, {:.1} % on time",
        share * 100.0
    );
    assert!(gaps >= WEB.len() * 5, "checks went on: {gaps} gaps");
    assert!(
        share >= 0.95,
        "{:.1} % of checks on time across the upgrade",
        share * 100.0
    );

    let records = healer.daemon.records();
    let opened = records
        .iter()
        .filter(|r| matches!(&r.event, Event::IssueOpened { target, .. } if target == "down"))
        .count();
    assert_eq!(opened, 1, "the issue was kept, not opened again");
    assert!(
        !records
            .iter()
            .any(|r| matches!(&r.event, Event::IssueDropped { .. })),
        "no issue dropped"
    );
    let web1 = healer_e2e::api(healer.port, "/api/v1/targets/web1");
    assert_eq!(web1["paused"]["reason"], "upgrade", "still paused: {web1}");
    // Every target is checked OK once the old worker is gone: by the new.
    for name in WEB {
        let ok = healer.daemon.records()[after_new..]
            .iter()
            .filter(|r| matches!(&r.event, Event::Checked { target, status: Status::Ok, .. } if target == name))
            .count();
        assert!(ok >= 2, "{name} checked OK by the new worker: {ok}");
    }

    // A broken replacement: refused by its probe, the running worker
    // serves on, and the reload says so in one line.
    let broken = healer.dir.path().join("broken.so");
    std::fs::write(&broken, "this is not a library\n").unwrap();
    replace_package(healer.plugins.path(), &broken);
    let answer = reload(&healer);
    let problems: Vec<&str> = answer["plugin_problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(problems.len(), 1, "{answer}");
    assert!(
        problems[0].contains(HTTP)
            && problems[0].contains("the new file is refused (not a shared library")
            && problems[0].contains("serves on"),
        "{}",
        problems[0]
    );
    assert_eq!(answer["changed"], serde_json::json!([]), "{answer}");
    let before = healer.daemon.records().len();
    std::thread::sleep(EVERY * 3);
    assert_eq!(
        http_worker(healer_pid),
        Some(new),
        "the running worker serves on"
    );
    let checked_after = healer.daemon.records()[before..]
        .iter()
        .filter(|r| matches!(&r.event, Event::Checked { target, status: Status::Ok, .. } if target == "web2"))
        .count();
    assert!(checked_after >= 2, "web2 still checked OK: {checked_after}");
}
