//! Plugins run in `healer worker` processes: a check that segfaults,
//! aborts, spins, leaks, writes garbage to its worker's socket, closes it,
//! or forks and exits ends that worker, never healer. Its calls in flight
//! are UNKNOWN, the crash is an event, the worker comes back on next use,
//! and a package that keeps crashing is quarantined, while a healthy
//! target in another package is checked on schedule all along.

use std::path::Path;
use std::time::{Duration, Instant};

use healer::events::Record;
use healer_e2e::{
    fast_config, is_alive, plugins_dir_with, rss, signal, wait_until, workers_of, Daemon, Event,
};
use healer_plugin_sdk::Status;

const LIMIT: Duration = Duration::from_secs(60);

/// How often the healthy target is checked.
const HEALTHY_EVERY: Duration = Duration::from_millis(200);

/// A config with a healthy target (`file-exists` in the example package)
/// and a `hostile` one doing `does`, plus `extra` lines for `[plugins]`.
fn config_with(dir: &Path, plugins: &Path, hostile: &str, extra: &str) -> std::path::PathBuf {
    let body = format!(
        r#"
[plugins]
stuck_after = "1s"
{extra}

[[target]]
name = "healthy"
interval = "200ms"
monitor = {{ plugin = "file-exists", path = "{config_dir}" }}

[[target]]
name = "hostile"
monitor = {{ plugin = "hostile", {hostile} }}
"#,
        config_dir = dir.display()
    );
    fast_config(dir, plugins, &body)
}

fn hostile_dir() -> tempfile::TempDir {
    plugins_dir_with(&["healer-fixture-hostile", "healer-plugin-example"])
}

/// The share of the healthy target's checks that came on time (within
/// half an interval of their schedule), and how many there were.
fn healthy_on_time(records: &[Record]) -> (f64, usize) {
    let checks: Vec<&Record> = records
        .iter()
        .filter(|r| matches!(&r.event, Event::Checked { target, pushed: false, .. } if target == "healthy"))
        .collect();
    let gaps: Vec<Duration> = checks.windows(2).map(|w| w[1].at.since(w[0].at)).collect();
    let late = gaps
        .iter()
        .filter(|gap| **gap > HEALTHY_EVERY + HEALTHY_EVERY / 2)
        .count();
    let on_time = 1.0 - late as f64 / gaps.len().max(1) as f64;
    (on_time, checks.len())
}

/// Runs a `hostile` target doing `does` until its package is quarantined;
/// checks that each crash said `reason`, that its checks were UNKNOWN, and
/// that healer and the healthy target went on.
fn quarantined_for(does: &str, reason: &str) {
    let plugins = hostile_dir();
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(
        dir.path(),
        plugins.path(),
        &format!("does = \"{does}\""),
        "",
    );
    let started = Instant::now();
    let mut daemon = Daemon::start(&config);
    daemon.wait_for(
        &format!("the package doing {does} is quarantined"),
        LIMIT,
        |e| matches!(e, Event::PluginQuarantined { package, .. } if package.contains("hostile")),
    );
    // A few more healthy checks after the quarantine.
    std::thread::sleep(HEALTHY_EVERY * 5);
    let took = started.elapsed();
    assert!(daemon.is_running(), "healer itself survived {does}");
    let records = daemon.records();

    let crashes: Vec<(&String, &u32)> = records
        .iter()
        .filter_map(|r| match &r.event {
            Event::PluginWorkerCrashed {
                package,
                reason,
                crashes,
                ..
            } if package.contains("hostile") => Some((reason, crashes)),
            _ => None,
        })
        .collect();
    assert_eq!(
        crashes.len(),
        3,
        "three crashes, then quarantine: {crashes:?}"
    );
    for (said, _) in &crashes {
        assert!(said.contains(reason), "{does}: {said}");
    }
    let restarts = records
        .iter()
        .filter(|r| matches!(&r.event, Event::PluginWorkerRestarted { package, .. } if package.contains("hostile")))
        .count();
    assert_eq!(restarts, 2, "restarted after each crash but the last");

    let hostile: Vec<(Status, &str)> = records
        .iter()
        .filter_map(|r| match &r.event {
            Event::Checked {
                target,
                status,
                summary,
                ..
            } if target == "hostile" => Some((*status, summary.as_str())),
            _ => None,
        })
        .collect();
    assert!(
        hostile
            .iter()
            .any(|(status, summary)| *status == Status::Unknown
                && summary.contains("plugin worker crashed in libhealer_fixture_hostile.so")),
        "a crash is UNKNOWN naming the package: {hostile:?}"
    );
    assert!(
        hostile
            .iter()
            .all(|(status, _)| matches!(status, Status::Unknown | Status::Ok)),
        "never CRITICAL on a crash: {hostile:?}"
    );
    let quarantined_failures = records
        .iter()
        .filter(|r| matches!(&r.event, Event::PluginFailed { target, error, .. } if target == "hostile" && error.contains("is quarantined")))
        .count();
    assert!(
        quarantined_failures > 0,
        "after the quarantine its checks fail at once, UNKNOWN"
    );
    assert_eq!(
        records
            .iter()
            .filter(|r| matches!(r.event, Event::AttemptStarted { .. }))
            .count(),
        0,
        "nothing recovers on a crash's word"
    );

    let (on_time, checks) = healthy_on_time(&records);
    println!(
        "{does}: quarantined after {took:?}; crashes: {crashes:?}; healthy target: {checks} checks, {:.1}% on time",
        on_time * 100.0
    );
    assert!(
        checks as f64 >= took.as_secs_f64() / HEALTHY_EVERY.as_secs_f64() * 0.5,
        "{checks} healthy checks in {took:?}"
    );
    assert!(
        on_time >= 0.95,
        "{:.1}% of healthy checks on time",
        on_time * 100.0
    );
}

#[test]
fn a_check_that_segfaults_ends_its_worker_not_healer() {
    quarantined_for("segfault", "killed by SIGSEGV");
}

#[test]
fn a_check_that_aborts_ends_its_worker_not_healer() {
    quarantined_for("abort", "killed by SIGABRT");
}

#[test]
fn a_check_that_spins_misses_the_heartbeat_and_its_worker_is_killed() {
    quarantined_for("spin", "stopped answering: no heartbeat for 1s");
}

#[test]
fn a_worker_that_writes_garbage_to_its_socket_is_killed() {
    quarantined_for("garbage", "broke the protocol");
}

#[test]
fn a_worker_that_closes_its_socket_is_killed() {
    quarantined_for("close-socket", "closed its socket");
}

#[test]
fn a_worker_that_forks_and_exits_is_seen_to_exit() {
    quarantined_for("fork-exit", "exited with status 0");
}

#[test]
fn a_monitor_that_leaks_is_stopped_at_its_workers_limit_and_healer_stays_small() {
    let plugins = hostile_dir();
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(
        dir.path(),
        plugins.path(),
        "does = \"leak\"",
        "memory_limit = \"1GiB\"",
    );
    let mut daemon = Daemon::start(&config);
    let pid = daemon.pid();
    let mut largest = 0;
    let started = Instant::now();
    while started.elapsed() < LIMIT {
        largest = largest.max(rss(pid));
        let quarantined = daemon.count(|e| matches!(e, Event::PluginQuarantined { .. })) > 0;
        if quarantined {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let records = daemon.records();
    let crashes: Vec<&String> = records
        .iter()
        .filter_map(|r| match &r.event {
            Event::PluginWorkerCrashed { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    println!(
        "leak of 256 MiB per check: crashes {crashes:?}; healer's largest RSS {:.1} MB",
        largest as f64 / 1e6
    );
    assert_eq!(crashes.len(), 3, "{crashes:?}");
    for reason in crashes {
        assert!(
            reason.contains("killed by SIGABRT") && reason.contains("memory allocation of"),
            "{reason}"
        );
    }
    assert!(daemon.is_running());
    assert!(largest > 0, "healer's RSS was read");
    assert!(largest < 50_000_000, "healer's RSS {largest} bytes");
}

/// The worker serving the hostile package.
fn hostile_worker(healer: u32) -> Option<u32> {
    workers_of(healer)
        .into_iter()
        .find(|(_, cmdline)| cmdline.contains("libhealer_fixture_hostile.so"))
        .map(|(pid, _)| pid)
}

#[test]
fn a_worker_killed_mid_check_is_restarted_and_the_next_check_succeeds() {
    let plugins = hostile_dir();
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("checking");
    let config = config_with(
        dir.path(),
        plugins.path(),
        &format!(
            "does = \"slow\", slow_ms = 400, mark = \"{}\"",
            mark.display()
        ),
        "",
    );
    let mut daemon = Daemon::start(&config);
    daemon.wait_for(
        "a first good check",
        LIMIT,
        |e| matches!(e, Event::Checked { target, status: Status::Ok, .. } if target == "hostile"),
    );
    let worker = wait_until("the worker is found", LIMIT, || {
        hostile_worker(daemon.pid())
    });
    // Kill as a check starts: it takes 400 ms.
    let _ = std::fs::remove_file(&mark);
    wait_until("a check starts", LIMIT, || mark.exists().then_some(()));
    signal(worker, "KILL");

    let crashed = daemon.wait_for("the crash is an event", LIMIT, |e| {
        matches!(e, Event::PluginWorkerCrashed { .. })
    });
    let Event::PluginWorkerCrashed {
        reason, in_flight, ..
    } = crashed
    else {
        unreachable!()
    };
    assert_eq!(reason, "killed by SIGKILL");
    assert_eq!(in_flight, 1, "the check was in flight");
    daemon.wait_for("the worker is restarted", LIMIT, |e| {
        matches!(e, Event::PluginWorkerRestarted { .. })
    });
    daemon.wait_for("the check after the crash succeeds", LIMIT, |e| {
        matches!(e, Event::Checked { target, status: Status::Ok, was: Some(Status::Unknown), .. } if target == "hostile")
    });
    let new_worker = hostile_worker(daemon.pid()).expect("a new worker");
    assert_ne!(new_worker, worker);
    assert!(!is_alive(worker));
    let summaries: Vec<String> = daemon
        .records()
        .into_iter()
        .filter_map(|r| match r.event {
            Event::Checked {
                target,
                status: Status::Unknown,
                summary,
                ..
            } if target == "hostile" => Some(summary),
            _ => None,
        })
        .collect();
    assert_eq!(
        summaries.first().map(String::as_str),
        Some("check failed: plugin worker crashed in libhealer_fixture_hostile.so: killed by SIGKILL"),
        "the check in flight is UNKNOWN, naming the signal"
    );
    // Checks fall due on a fixed-rate grid: one may come while the worker
    // waits out its restart backoff, and is UNKNOWN too, saying so.
    for later in &summaries[1..] {
        assert!(
            later.starts_with(
                "check failed: plugin worker for libhealer_fixture_hostile.so is restarting after a crash (killed by SIGKILL)"
            ),
            "{summaries:?}"
        );
    }
}

#[test]
fn what_a_plugin_runs_inherits_neither_the_workers_socket_nor_its_memory_limit() {
    let plugins = plugins_dir_with(&["healer-plugin-nagios"]);
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("seen.txt");
    let script = format!(
        "ls -l /proc/self/fd > {seen}.tmp; grep 'Max address space' /proc/self/limits >> {seen}.tmp; mv {seen}.tmp {seen}; echo OK",
        seen = seen.display()
    );
    let body = format!(
        "[plugins]\nmemory_limit = \"512MiB\"\n\n[[target]]\nname = \"script\"\nmonitor = {{ plugin = \"nagios\", command = [\"sh\", \"-c\", {script:?}] }}\n"
    );
    let config = fast_config(dir.path(), plugins.path(), &body);
    let mut daemon = Daemon::start(&config);
    daemon.wait_for(
        "the script ran",
        LIMIT,
        |e| matches!(e, Event::Checked { target, status: Status::Ok, .. } if target == "script"),
    );
    let worker = workers_of(daemon.pid());
    assert_eq!(worker.len(), 1, "the nagios package runs in a worker");
    let worker_limits = std::fs::read_to_string(format!("/proc/{}/limits", worker[0].0)).unwrap();
    let text = std::fs::read_to_string(&seen).unwrap();
    println!("{text}");

    assert!(
        worker_limits.contains(&format!("Max address space         {}", 512 << 20)),
        "the worker runs under its limit: {worker_limits}"
    );
    assert!(!text.contains("socket:"), "no socket inherited: {text}");
    let limit = text
        .lines()
        .find(|l| l.starts_with("Max address space"))
        .unwrap();
    assert!(
        limit.split_whitespace().nth(3) == Some("unlimited"),
        "the script gets the hard limit back: {limit}"
    );
}

#[test]
fn a_diagnoser_in_a_worker_is_handed_no_more_history_than_it_asks_for_and_all_when_it_does_not_say()
{
    // Three targets of the `typical` monitor, each with a diagnoser that
    // finds `history.reached` once handed `report_at` observations:
    // `two` asks for 2 and reports at 2, `never` asks for 2 and reports at
    // 3 (so never, if the worker keeps no more), `all` does not say and
    // reports at the target's whole history (10). (That the worker also
    // keeps no more than 2 is what bench/scale measures: with this, the
    // worker's RSS per target fell from 9.8 to 4.1 KB.)
    let plugins = plugins_dir_with(&["healer-fixture-typical"]);
    let dir = tempfile::tempdir().unwrap();
    let target = |name: &str, needs: &str, report_at: u32| {
        format!(
            "\n[[target]]\nname = \"{name}\"\nmonitor = {{ plugin = \"typical\" }}\n\
             [[target.diagnose]]\nplugin = \"history-length\"\n{needs}report_at = {report_at}\n"
        )
    };
    let body = [
        target("two", "needs = 2\n", 2),
        target("never", "needs = 2\n", 3),
        target("all", "", 10),
    ]
    .concat();
    let mut daemon = Daemon::start(&fast_config(dir.path(), plugins.path(), &body));
    let opened = |name: &'static str| move |e: &Event| matches!(e, Event::IssueOpened { target, issue } if target == name && issue.kind == "history.reached");
    let Event::IssueOpened { issue, .. } = daemon.wait_for("two reached", LIMIT, opened("two"))
    else {
        unreachable!()
    };
    assert_eq!(issue.summary, "handed 2");
    let Event::IssueOpened { issue, .. } = daemon.wait_for("all reached", LIMIT, opened("all"))
    else {
        unreachable!()
    };
    assert_eq!(issue.summary, "handed 10");
    // By now `never` has been checked about 10 times: from its 4th check
    // on, a worker keeping more than 2 would have handed it 3.
    let records = daemon.records();
    let checks = records
        .iter()
        .filter(|r| matches!(&r.event, Event::Checked { target, .. } if target == "never"))
        .count();
    assert!(checks >= 5, "never was checked {checks} times");
    assert!(
        !records.iter().any(|r| opened("never")(&r.event)),
        "a diagnoser that asked for 2 was handed more"
    );
}

#[test]
fn a_worker_printing_100_mb_grows_the_log_by_under_1_mb_and_says_how_many_lines_it_dropped() {
    let plugins = plugins_dir_with(&["healer-fixture-chatty"]);
    let dir = tempfile::tempdir().unwrap();
    let done = dir.path().join("printed");
    let body = format!(
        "[[target]]\nname = \"chatty\"\nmonitor = {{ plugin = \"chatty\", megabytes = 100, done = \"{}\" }}\n",
        done.display()
    );
    let config = fast_config(dir.path(), plugins.path(), &body);
    let mut daemon = Daemon::start(&config);
    daemon.wait_for(
        "a first check",
        LIMIT,
        |e| matches!(e, Event::Checked { target, .. } if target == "chatty"),
    );
    let before = std::fs::metadata(&daemon.log).map_or(0, |meta| meta.len());
    wait_until("100 MB are printed", Duration::from_secs(300), || {
        done.exists().then_some(())
    });
    // Every dropped line is counted, in lines of the log saying so.
    let dropped = |log: &str| -> u64 {
        log.lines()
            .filter_map(|line| {
                let (_, rest) =
                    line.split_once("plugin worker for libhealer_fixture_chatty.so printed ")?;
                rest.split_once(" more lines; dropped")?
                    .0
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    };
    let shown = |log: &str| {
        log.lines()
            .filter(|line| line.contains("plugin worker printed: chatty plugin says"))
            .count() as u64
    };
    let printed = 100 * 10_000;
    let log = wait_until(
        "every line is logged or counted",
        Duration::from_secs(60),
        || {
            let log = daemon.log_text();
            (dropped(&log) + shown(&log) == printed).then_some(log)
        },
    );
    let grown = std::fs::metadata(&daemon.log).unwrap().len() - before;
    println!(
        "100 MB printed: the log grew by {grown} bytes, {} lines shown, {} dropped",
        shown(&log),
        dropped(&log)
    );
    assert!(grown < 1 << 20, "the log grew by {grown} bytes");
    assert!(dropped(&log) > printed * 9 / 10);
    assert!(daemon.is_running());
}

/// `healer reset` with `args`, on `config`, bounded.
fn reset_plugin(config: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["reset"];
    all.extend_from_slice(args);
    all.extend(["--config", config.to_str().unwrap()]);
    healer_e2e::run_healer(&all, LIMIT)
}

/// The hostile package's quarantine as `GET /api/v1/plugins` shows it,
/// its crashes counted since healer first ran it, and its workers
/// started since this healer started.
fn hostile_quarantine(port: u16) -> (Option<String>, u64, u64) {
    let (status, body) = healer_e2e::get(port, "/api/v1/plugins");
    assert_eq!(status, 200, "{body}");
    let plugins: serde_json::Value = serde_json::from_str(&body).unwrap();
    let hostile = plugins["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["file"].as_str().unwrap().contains("hostile"))
        .expect("the hostile package is listed")
        .clone();
    (
        hostile["worker"]["quarantined"].as_str().map(str::to_owned),
        hostile["worker"]["crashes"].as_u64().unwrap_or(0),
        hostile["worker"]["started"].as_u64().unwrap_or(u64::MAX),
    )
}

#[test]
fn a_quarantine_outlives_a_restart_until_an_operator_lifts_it() {
    let plugins = hostile_dir();
    let dir = tempfile::tempdir().unwrap();
    let port = healer_e2e::free_port();
    let body = format!(
        r#"
[intake]
bind = "127.0.0.1:{port}"

[[target]]
name = "hostile"
monitor = {{ plugin = "hostile", does = "segfault" }}
"#
    );
    let config = fast_config(dir.path(), plugins.path(), &body);
    let mut first = Daemon::start(&config);
    first.wait_for(
        "the quarantine",
        LIMIT,
        |e| matches!(e, Event::PluginQuarantined { sha256, .. } if sha256.len() == 64),
    );
    assert!(first.stop(), "the first healer stopped cleanly");
    let before = first.records().len();

    let mut second = Daemon::start(&config);
    healer_e2e::wait_for_port(port, LIMIT);
    let since_restart = |daemon: &Daemon| daemon.records().split_off(before);
    let after_restart = |what: &str, daemon: &Daemon, wanted: &dyn Fn(&Event) -> bool| {
        wait_until(what, LIMIT, || {
            since_restart(daemon)
                .iter()
                .any(|r| wanted(&r.event))
                .then_some(())
        })
    };
    // Checks made after the restart are refused by the quarantine, and no
    // worker of the hostile package ever starts again.
    after_restart(
        "a check refused by the remembered quarantine",
        &second,
        &|e| {
            matches!(e, Event::PluginFailed { target, error, .. }
            if target == "hostile" && error.contains("quarantined"))
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    let started_again = since_restart(&second)
        .iter()
        .filter(|r| {
            matches!(
                &r.event,
                Event::PluginWorkerCrashed { .. } | Event::PluginWorkerRestarted { .. }
            )
        })
        .count();
    assert_eq!(started_again, 0, "no hostile worker ran after the restart");
    let (quarantined, crashes, started) = hostile_quarantine(port);
    assert_eq!(
        started, 0,
        "no worker of the quarantined package started, not even to check its config"
    );
    let why = quarantined.expect("still quarantined after the restart");
    assert!(
        why.contains("healer reset --plugin libhealer_fixture_hostile.so"),
        "{why}"
    );
    assert_eq!(crashes, 3, "the crashes before the restart are remembered");

    for (file, said) in [
        ("libnothing.so", "no plugin package libnothing.so"),
        (
            "libhealer_plugin_example.so",
            "plugin package libhealer_plugin_example.so is not quarantined",
        ),
    ] {
        let refused = reset_plugin(&config, &["--plugin", file]);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{refused:?}");
        assert!(
            stderr.contains(said) && stderr.trim().lines().count() == 1,
            "one line: {said}: {stderr}"
        );
    }

    let lifted = reset_plugin(&config, &["--plugin", "libhealer_fixture_hostile.so"]);
    assert!(lifted.status.success(), "{lifted:?}");
    after_restart(
        "the operator's lift, as an event",
        &second,
        &|e| matches!(e, Event::PluginQuarantineLifted { how, .. } if how == "an operator lifted it"),
    );
    // Served again: a hostile worker starts (and, being hostile, crashes).
    after_restart(
        "a hostile worker running again",
        &second,
        &|e| matches!(e, Event::PluginWorkerCrashed { package, .. } if package.contains("hostile")),
    );
    assert!(second.is_running());
}
