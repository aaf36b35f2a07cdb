//! The ledger and the recoveries that ask first, with the real daemon,
//! real processes killed with SIGKILL and the `command` recoverer (issue
//! 22): each attempt judged and counted in `/api/v1/outcomes` and
//! `healer outcomes`; `order = "learned"` running the recoverer that heals
//! first; a recoverer under its `min_success` proposing; `mode =
//! "propose"` leaving the service down until `healer approve`, listed in
//! the API, `healer status` and the dashboard (in Chromium), expiring
//! into an escalation; the ledger and proposals surviving a restart.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use healer_e2e::{
    after_start, api, chromium_dom, run_healer, stdout, wait_for_port, wait_until, Daemon, Event,
    Running,
};

/// The packages every test here runs.
const PACKAGES: &[&str] = &["healer-plugin-process", "healer-plugin-command"];

const LIMIT: Duration = Duration::from_secs(30);

/// A `[[target]]` named `name` whose process lives in `dir/NAME.pid`,
/// with `extra` lines, recovered by `recoverers` (TOML tables).
fn target(dir: &Path, name: &str, extra: &str, recoverers: &str) -> String {
    format!(
        "\n[[target]]\nname = \"{name}\"\n{extra}\nmonitor = {{ plugin = \"process\", pidfile = \"{dir}/{name}.pid\" }}\n[[target.diagnose]]\nplugin = \"process\"\n{recoverers}\n",
        dir = dir.display()
    )
}

/// A `command` recoverer that starts `name` again (a `sleep`, its pid in
/// `dir/NAME.pid`), with `extra` lines.
fn restart(dir: &Path, name: &str, extra: &str) -> String {
    format!(
        "[[target.recover]]\nplugin = \"command\"\nargv = [\"sh\", \"-c\", \"sleep 30 & echo $! > {dir}/{name}.pid\"]\n{extra}\n",
        dir = dir.display()
    )
}

/// A `command` recoverer that says it succeeded and does nothing.
fn does_nothing(extra: &str) -> String {
    format!("[[target.recover]]\nplugin = \"command\"\nargv = [\"true\"]\n{extra}\n")
}

/// Starts `name`'s process as its recoverer would.
fn start(dir: &Path, name: &str) {
    let status = Command::new("sh")
        .args([
            "-c",
            &format!("sleep 30 & echo $! > {}/{name}.pid", dir.display()),
        ])
        .status()
        .expect("sh runs");
    assert!(status.success());
}

/// SIGKILL to the process in `dir/NAME.pid`.
fn kill(dir: &Path, name: &str) {
    let pid = std::fs::read_to_string(dir.join(format!("{name}.pid"))).expect("a pidfile");
    let status = Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -9 {pid}");
}

fn judged(event: &Event, name: &str, recoverer: &str) -> Option<(String, u32, u32)> {
    match event {
        Event::RecoveryJudged {
            target,
            recoverer: r,
            verdict,
            outcomes,
            ..
        } if target == name && r == recoverer => {
            Some((verdict.as_str().to_owned(), outcomes.tries, outcomes.healed))
        }
        _ => None,
    }
}

#[test]
fn a_service_killed_three_times_is_counted_three_tries_three_healed() {
    let Running {
        dir,
        port,
        config,
        mut daemon,
        plugins: _plugins,
    } = Running::start(PACKAGES, |d| {
        start(d, "web");
        target(d, "web", "stable_after = \"1s\"", &restart(d, "web", ""))
    });
    daemon.wait_for(
        "web is checked",
        LIMIT,
        |e| matches!(e, Event::Checked { target, .. } if target == "web"),
    );
    for kill_number in 1..=3u32 {
        kill(dir.path(), "web");
        let verdict = daemon.wait_for("the attempt's verdict", LIMIT, |e| {
            judged(e, "web", "command").is_some_and(|(_, tries, _)| tries == kill_number)
        });
        assert_eq!(
            judged(&verdict, "web", "command"),
            Some(("healed".to_owned(), kill_number, kill_number)),
            "{verdict:?}"
        );
    }
    // web's check is diagnosed in its worker (the process monitor and
    // diagnoser share a package): its facts still reach healer, sent
    // whole once and then as "same", and so stay held past their time to
    // live (twice the 100 ms interval).
    std::thread::sleep(Duration::from_secs(1));
    let facts = api(port, "/api/v1/facts?target=web");
    let pid = std::fs::read_to_string(dir.path().join("web.pid")).unwrap();
    let held = facts
        .as_array()
        .expect("a JSON array")
        .iter()
        .find(|fact| fact["key"] == "process.pid")
        .unwrap_or_else(|| panic!("no process.pid: {facts}"));
    assert_eq!(held["value"].as_f64(), pid.trim().parse().ok(), "{held}");
    assert_eq!(held["source"]["writer"], "process", "{held}");
    let rows = api(port, "/api/v1/outcomes");
    let rows = rows.as_array().expect("a JSON array");
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row["target"], "web");
    assert_eq!(row["kind"], "process.not_running");
    assert_eq!(row["recoverer"], "command");
    assert_eq!(
        (row["tries"].as_u64(), row["healed"].as_u64()),
        (Some(3), Some(3))
    );
    let median = row["median_time_to_healthy_ms"].as_u64().expect("a median");
    assert!(median < 5_000, "{median} ms to healthy");
    let config_arg = config.to_str().unwrap();
    let shown = stdout(&run_healer(&["outcomes", "--config", config_arg], LIMIT));
    assert!(
        shown.contains("web  process.not_running  command  3  3  0  0  "),
        "{shown}"
    );
    let explained = stdout(&run_healer(
        &["explain", "web", "--config", config_arg],
        LIMIT,
    ));
    assert!(
        explained.contains(
            "recoverer command on *\n    process.not_running: healed 3 of 3 tries, median "
        ),
        "{explained}"
    );
    assert!(daemon.stop());
}

#[test]
fn learned_order_runs_first_the_recoverer_that_heals_and_one_under_min_success_proposes() {
    // `web`: a recoverer that never heals first, one that does second.
    // `flaky`: one that never heals, which must heal half the time.
    let Running {
        dir,
        mut daemon,
        plugins: _plugins,
        ..
    } = Running::start(PACKAGES, |d| {
        start(d, "web");
        let web = target(
            d,
            "web",
            "order = \"learned\"\nlearn_after = 2\nmax_attempts = 20\nstable_after = \"500ms\"",
            &format!("{}{}", does_nothing(""), restart(d, "web", "")),
        );
        let flaky = target(
            d,
            "flaky",
            "learn_after = 1\nmax_attempts = 20",
            &does_nothing("min_success = 0.5"),
        );
        format!("{web}{flaky}")
    });
    let d = dir.path();
    daemon.wait_for(
        "web is checked",
        LIMIT,
        |e| matches!(e, Event::Checked { target, .. } if target == "web"),
    );
    kill(d, "web");
    let learned = daemon.wait_for(
        "web's order learned",
        LIMIT,
        |e| matches!(e, Event::RecoveryOrderLearned { target, .. } if target == "web"),
    );
    let Event::RecoveryOrderLearned { order, reason, .. } = learned else {
        unreachable!()
    };
    assert_eq!(order, ["command#2", "command"], "{reason}");
    assert_eq!(reason, "command#2 healed 0 of 0, command healed 0 of 2");
    daemon.wait_for("command#2 healed web", LIMIT, |e| {
        judged(e, "web", "command#2").is_some_and(|(verdict, _, _)| verdict == "healed")
    });
    let ran = |daemon: &Daemon| -> Vec<String> {
        daemon
            .records()
            .into_iter()
            .filter_map(|r| match r.event {
                Event::RecovererFinished {
                    target, recoverer, ..
                } if target == "web" => Some(recoverer),
                _ => None,
            })
            .collect()
    };
    let before = ran(&daemon).len();
    kill(d, "web");
    let recoverer = wait_until("web's next recoverer", LIMIT, || {
        ran(&daemon).get(before).cloned()
    });
    assert_eq!(recoverer, "command#2", "the one that heals runs first");
    let nothing_runs = daemon.count(|e| {
        matches!(e, Event::RecovererFinished { target, recoverer, .. } if target == "web" && recoverer == "command")
    });
    assert_eq!(
        nothing_runs, 2,
        "the one that never heals ran its 2 tries only"
    );

    // `flaky` never ran: its one try is judged, and it proposes instead.
    let demoted = daemon.wait_for(
        "flaky's recoverer demoted",
        LIMIT,
        |e| matches!(e, Event::RecovererDemoted { target, .. } if target == "flaky"),
    );
    let Event::RecovererDemoted {
        healed,
        judged,
        demoted,
        ..
    } = demoted
    else {
        unreachable!()
    };
    assert_eq!((healed, judged, demoted), (0, 1, true));
    daemon.wait_for(
        "flaky's proposal",
        LIMIT,
        |e| matches!(e, Event::RecoveryProposed { target, .. } if target == "flaky"),
    );
    assert_eq!(
        daemon.count(|e| matches!(e, Event::AttemptStarted { target, .. } if target == "flaky")),
        1,
        "one attempt, then it asks"
    );
    assert!(daemon.stop());
}

/// The issue of `target` in `/api/v1/issues`, if open.
fn issue_of(port: u16, target: &str) -> Option<serde_json::Value> {
    api(port, "/api/v1/issues")
        .as_array()?
        .iter()
        .find(|row| row["target"] == target)
        .cloned()
}

#[test]
fn a_proposed_recovery_leaves_the_service_down_until_approved_and_an_unanswered_one_escalates() {
    let Running {
        dir,
        port,
        config,
        mut daemon,
        plugins: _plugins,
    } = Running::start(PACKAGES, |d| {
        start(d, "web");
        start(d, "batch");
        let web = target(d, "web", "", &restart(d, "web", "mode = \"propose\""));
        let batch = target(
            d,
            "batch",
            "",
            &restart(d, "batch", "mode = \"propose\"\npropose_for = \"2s\""),
        );
        format!("{web}{batch}")
    });
    let (d, config_arg) = (dir.path(), config.to_str().unwrap());
    daemon.wait_for(
        "web is checked",
        LIMIT,
        |e| matches!(e, Event::Checked { target, .. } if target == "web"),
    );
    let web_pid = std::fs::read_to_string(d.join("web.pid")).unwrap();
    kill(d, "web");
    kill(d, "batch");
    daemon.wait_for(
        "web's proposal",
        LIMIT,
        |e| matches!(e, Event::RecoveryProposed { target, .. } if target == "web"),
    );

    // Listed in the API, with the exact action.
    let issue = wait_until("web's proposal in the API", LIMIT, || issue_of(port, "web"));
    let proposal = &issue["proposal"];
    assert_eq!(proposal["recoverer"], "command", "{issue}");
    assert!(
        proposal["action"]
            .as_str()
            .is_some_and(|action| action
                .starts_with("command {\"argv\":[\"sh\",\"-c\",\"sleep 30 & echo $! > ")),
        "{issue}"
    );
    // In `healer status`.
    let status = stdout(&run_healer(&["status", "--config", config_arg], LIMIT));
    assert!(
        status.contains("PROPOSED command: `healer approve web/process.not_running` before "),
        "{status}"
    );
    // On the dashboard, in a real browser.
    let dom = chromium_dom(&format!("http://127.0.0.1:{port}/"), (1200, 900));
    assert!(
        dom.contains(
            "data-issue=\"web/process.not_running\" data-state=\"open\" data-proposed=\"yes\""
        ),
        "{dom}"
    );
    assert!(
        dom.contains("Approve: <code>healer approve web/process.not_running</code>"),
        "{dom}"
    );
    // It stays down: nothing ran.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(std::fs::read_to_string(d.join("web.pid")).unwrap(), web_pid);
    assert_eq!(
        daemon.count(|e| matches!(e, Event::AttemptStarted { target, .. } if target == "web")),
        0
    );

    // Approved: restarted at once.
    let asked = Instant::now();
    let approved = run_healer(
        &["approve", "web/process.not_running", "--config", config_arg],
        LIMIT,
    );
    assert!(approved.status.success(), "{approved:?}");
    wait_until("web restarted", LIMIT, || {
        (std::fs::read_to_string(d.join("web.pid")).ok()? != web_pid).then_some(())
    });
    let took = asked.elapsed();
    println!("approve to restarted: {} ms", took.as_millis());
    assert!(
        took < Duration::from_secs(1),
        "restarted {took:?} after the approval"
    );
    daemon.wait_for(
        "web healthy",
        LIMIT,
        |e| matches!(e, Event::IssueResolved { target, .. } if target == "web"),
    );

    // batch's proposal is not answered: it expires, and the issue escalates.
    let escalated = daemon.wait_for(
        "batch escalated",
        LIMIT,
        |e| matches!(e, Event::IssueEscalated { target, .. } if target == "batch"),
    );
    let Event::IssueEscalated { reason, .. } = escalated else {
        unreachable!()
    };
    assert!(
        reason.starts_with("nobody answered the proposal to run command made at "),
        "{reason}"
    );
    assert!(daemon.stop());
}

#[test]
fn outcomes_and_a_waiting_proposal_survive_a_restart() {
    let Running {
        dir,
        port,
        config,
        mut daemon,
        plugins: _plugins,
    } = Running::start(PACKAGES, |d| {
        start(d, "web");
        let web = target(d, "web", "stable_after = \"500ms\"", &restart(d, "web", ""));
        let batch = target(d, "batch", "", &restart(d, "batch", "mode = \"propose\""));
        format!("{web}{batch}")
    });
    let d = dir.path();
    daemon.wait_for(
        "batch's proposal",
        LIMIT,
        |e| matches!(e, Event::RecoveryProposed { target, .. } if target == "batch"),
    );
    kill(d, "web");
    daemon.wait_for("web's verdict", LIMIT, |e| {
        judged(e, "web", "command").is_some()
    });
    assert!(daemon.stop());

    let mut again = Daemon::start(&config);
    let started = wait_until("healer runs again", LIMIT, || {
        after_start(&again.records(), 2).into_iter().next()
    });
    let Event::Started {
        restored_outcomes,
        restored_facts,
        ..
    } = started
    else {
        panic!("{started:?}");
    };
    assert_eq!(restored_outcomes, 1);
    assert!(restored_facts >= 6, "{restored_facts} facts restored");
    wait_for_port(port, LIMIT);
    let rows = api(port, "/api/v1/outcomes");
    assert_eq!(rows[0]["tries"], 1, "{rows}");
    let issue = issue_of(port, "batch").expect("batch's issue carried on");
    assert_eq!(issue["proposal"]["recoverer"], "command", "{issue}");
    std::thread::sleep(Duration::from_millis(500));
    let proposed_again = after_start(&again.records(), 2)
        .iter()
        .filter(|e| matches!(e, Event::RecoveryProposed { target, .. } if target == "batch"))
        .count();
    assert_eq!(
        proposed_again, 0,
        "the same proposal waits on; none is made again"
    );
    assert!(again.stop());
}
