//! Shared knowledge with the real daemon (issue 22): healer publishes
//! what it knows of each target as facts, a recoverer gated on another
//! target's fact waits for it and says which fact, from whom and how old,
//! `healer facts` shows them, and they survive a restart; a diagnoser acts
//! on a fact another target's monitor publishes, the fact goes with its
//! writer's worker and its absence is not acted on; a package of the
//! previous SDK minor runs next to one that publishes facts.

use std::time::Duration;

use healer::clock::Wall;
use healer::facts::Retraction;
use healer_e2e::{
    after_start, api, fast_config, free_port, plugins_dir_with, run_healer, signal, stdout,
    wait_for_port, wait_until, workers_of, Daemon, Event, Record, Running,
};
use healer_plugin_sdk::Status;

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn a_recovery_gated_on_a_dependencys_health_waits_citing_the_fact_and_runs_once_it_holds() {
    let plugins = plugins_dir_with(&["healer-plugin-process", "healer-plugin-command"]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let port = free_port();
    // db's restart works only once `db-may-start` exists; app's restart
    // acts only while db is healthy, by a gate on healer's own fact.
    let body = format!(
        r#"
[intake]
bind = "127.0.0.1:{port}"

[[target]]
name = "db"
max_attempts = 10000
monitor = {{ plugin = "process", pidfile = "{d}/db.pid" }}
[[target.recover]]
plugin = "command"
argv = ["sh", "-c", "test -f {d}/db-may-start && {{ sleep 60 & echo $! > {d}/db.pid; }}"]

[[target]]
name = "app"
monitor = {{ plugin = "process", pidfile = "{d}/app.pid" }}
[[target.recover]]
plugin = "command"
argv = ["sh", "-c", "sleep 60 & echo $! > {d}/app.pid"]
when = ["target.db.healthy == true"]
"#
    );
    let config = fast_config(dir.path(), plugins.path(), &body);
    let config_arg = config.to_str().unwrap();
    let mut daemon = Daemon::start(&config);
    wait_for_port(port, LIMIT);

    let gated = daemon.wait_for("app's recovery gated on db's health", LIMIT, |e| {
        matches!(e, Event::RecoveryGated { target, evidence, .. }
            if target == "app" && evidence.starts_with("target.db.healthy = false from healer, "))
    });
    let Event::RecoveryGated { gate, evidence, .. } = &gated else {
        unreachable!("matched above");
    };
    assert_eq!(gate, "when target.db.healthy == true");
    assert!(evidence.ends_with(" s old"), "{evidence}");
    assert!(
        !dir.path().join("app.pid").exists(),
        "app was restarted while db was down"
    );
    assert_eq!(
        daemon.count(|e| matches!(e, Event::AttemptStarted { target, .. } if target == "app")),
        0,
        "a gated recovery spends no attempt"
    );

    // `healer facts db` asks the running daemon.
    let facts = run_healer(&["facts", "db", "--config", config_arg], LIMIT);
    assert!(facts.status.success(), "{facts:?}");
    let shown = stdout(&facts);
    assert!(
        shown.contains("target.db.healthy  false  from healer"),
        "{shown}"
    );

    // `healer explain app` shows the fact the decision read.
    let explained = run_healer(&["explain", "app", "--config", config_arg], LIMIT);
    assert!(explained.status.success(), "{explained:?}");
    let shown = stdout(&explained);
    assert!(
        shown.contains(
            "when target.db.healthy == true: false (target.db.healthy = false from healer, "
        ),
        "{shown}"
    );

    std::fs::write(dir.path().join("db-may-start"), "").unwrap();
    daemon.wait_for(
        "db heals",
        LIMIT,
        |e| matches!(e, Event::IssueResolved { target, .. } if target == "db"),
    );
    daemon.wait_for(
        "app is restarted and heals",
        LIMIT,
        |e| matches!(e, Event::IssueResolved { target, .. } if target == "app"),
    );
    let records = daemon.records();
    let position = |wanted: &dyn Fn(&Event) -> bool| {
        records
            .iter()
            .position(|r| wanted(&r.event))
            .expect("in the event log")
    };
    let db_healed =
        position(&|e| matches!(e, Event::IssueResolved { target, .. } if target == "db"));
    let app_attempt =
        position(&|e| matches!(e, Event::AttemptStarted { target, .. } if target == "app"));
    assert!(
        db_healed < app_attempt,
        "app was restarted before db healed"
    );

    // What the process plugin publishes from its worker: the pid it found.
    let pid = std::fs::read_to_string(dir.path().join("app.pid")).unwrap();
    let shown = wait_until("app's pid known as a fact", LIMIT, || {
        let facts = run_healer(&["facts", "app", "--config", config_arg], LIMIT);
        let shown = stdout(&facts);
        shown
            .contains(&format!(
                "target.app.process.pid  {}  from process",
                pid.trim()
            ))
            .then_some(shown)
    });
    assert!(
        shown.contains("target.app.process.running  true  from process"),
        "{shown}"
    );

    // The facts survive a restart of healer.
    assert!(daemon.stop());
    let mut again = Daemon::start(&config);
    let started = wait_until("healer runs again", LIMIT, || {
        after_start(&again.records(), 2).into_iter().next()
    });
    let Event::Started { restored_facts, .. } = started else {
        panic!("{started:?}");
    };
    assert!(restored_facts >= 6, "{restored_facts} facts restored");
    assert!(again.stop());
}

/// The fact the `said` monitor of target `db` publishes.
const SAID: &str = "target.db.said.value";

fn about_said(record: &Record) -> bool {
    match &record.event {
        Event::FactChanged { fact, .. }
        | Event::FactRetracted { fact, .. }
        | Event::FactExpired { fact } => fact.name() == SAID,
        _ => false,
    }
}

/// The worker serving the `said` monitor's package (not the reader's).
fn writers_worker(healer: u32) -> Option<u32> {
    workers_of(healer)
        .into_iter()
        .find(|(_, cmdline)| cmdline.contains("libhealer_fixture_facts.so"))
        .map(|(pid, _)| pid)
}

#[test]
fn a_fact_another_targets_diagnoser_acts_on_goes_with_its_writers_worker_and_its_absence_is_not_acted_on(
) {
    let plugins = plugins_dir_with(&[
        "healer-fixture-facts",
        "healer-fixture-facts-reader",
        "healer-plugin-example",
        "healer-plugin-command",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    std::fs::write(dir.path().join("said"), "down\n").unwrap();
    std::fs::write(dir.path().join("app"), "").unwrap();
    // db's monitor says what the file `said` says, as a fact, every
    // second; app's diagnoser (another package, so another worker) reads
    // it and finds app unhealthy while it says anything but "up"; app's
    // recovery makes it say "up".
    let body = format!(
        r#"
[[target]]
name = "db"
interval = "1s"
monitor = {{ plugin = "said", path = "{d}/said" }}

[[target]]
name = "app"
max_attempts = 1000
[target.monitor]
plugin = "file-exists"
path = "{d}/app"
[[target.monitor.diagnose]]
plugin = "needs"
reads = ["target.db.*"]
fact = "{SAID}"
healthy = "up"
[[target.recover]]
plugin = "command"
argv = ["sh", "-c", "echo up > {d}/said; touch {d}/acted"]
"#
    );
    let config = fast_config(dir.path(), plugins.path(), &body);
    let mut daemon = Daemon::start(&config);

    // The reader acts on the fact.
    daemon.wait_for("app's diagnoser reads db's fact", LIMIT, |e| {
        matches!(e, Event::IssueOpened { target, issue }
            if target == "app" && issue.kind == "needs.not_healthy" && issue.summary.starts_with("target.db.said.value = \"down\""))
    });
    daemon.wait_for(
        "app's recovery runs",
        LIMIT,
        |e| matches!(e, Event::AttemptStarted { target, .. } if target == "app"),
    );
    daemon.wait_for(
        "app heals once db says up",
        LIMIT,
        |e| matches!(e, Event::IssueResolved { target, .. } if target == "app"),
    );
    assert!(dir.path().join("acted").exists());
    daemon.wait_for("db's fact says up", LIMIT, |e| {
        matches!(e, Event::FactChanged { fact, .. }
            if fact.name() == SAID && fact.value == healer::facts::Value::Text("up".into()))
    });

    // kill -9 of the writer's worker, just after one of db's checks (so
    // the fact is missing for most of db's interval, while app is checked
    // every 100 ms).
    let worker = wait_until("db's worker is found", LIMIT, || {
        writers_worker(daemon.pid())
    });
    let checks_of_db = |records: &[Record]| {
        records
            .iter()
            .filter(|r| matches!(&r.event, Event::Checked { target, .. } if target == "db"))
            .count()
    };
    let before = checks_of_db(&daemon.records());
    wait_until("a check of db", LIMIT, || {
        (checks_of_db(&daemon.records()) > before).then_some(())
    });
    let killed_at = Wall::now();
    signal(worker, "KILL");

    let after_kill = |records: Vec<Record>| -> Vec<Record> {
        records.into_iter().filter(|r| r.at >= killed_at).collect()
    };
    let retracted = wait_until("db's fact retracted", LIMIT, || {
        after_kill(daemon.records())
            .into_iter()
            .find(|r| about_said(r) && matches!(r.event, Event::FactRetracted { .. }))
    });
    let Event::FactRetracted { why, .. } = &retracted.event else {
        unreachable!("found above");
    };
    assert_eq!(*why, Retraction::WorkerEnded);
    let took = retracted.at.since(killed_at);
    println!("fact_retracted {} ms after kill -9", took.as_millis());
    assert!(
        took < Duration::from_secs(1),
        "db's interval is 1 s: {took:?}"
    );

    // The next worker's first good check writes it again.
    let rewritten = wait_until("db's fact written again", LIMIT, || {
        after_kill(daemon.records())
            .into_iter()
            .find(|r| about_said(r) && matches!(r.event, Event::FactChanged { was: None, .. }))
    });
    println!(
        "written again {} ms after kill -9",
        rewritten.at.since(killed_at).as_millis()
    );
    let records = after_kill(daemon.records());
    let crashed = records
        .iter()
        .find(|r| matches!(&r.event, Event::PluginWorkerCrashed { package, .. } if package == "libhealer_fixture_facts.so"))
        .expect("the crash is an event");
    assert!(crashed.at >= retracted.at, "the facts went first");
    // While the fact was missing app was checked, found healthy (absence
    // is not evidence), and nothing was done about it.
    let absent: Vec<&Record> = records
        .iter()
        .filter(|r| r.at >= retracted.at && r.at <= rewritten.at)
        .collect();
    let checks_of_app: Vec<Status> = absent
        .iter()
        .filter_map(|r| match &r.event {
            Event::Checked { target, status, .. } if target == "app" => Some(*status),
            _ => None,
        })
        .collect();
    assert!(
        !checks_of_app.is_empty(),
        "app was checked while the fact was missing"
    );
    assert!(
        checks_of_app.iter().all(|s| *s == Status::Ok),
        "{checks_of_app:?}"
    );
    let acted: Vec<&Event> = records
        .iter()
        .map(|r| &r.event)
        .filter(|e| {
            matches!(e, Event::IssueOpened { target, .. }
                | Event::FindingSeen { target, .. }
                | Event::AttemptStarted { target, .. } if target == "app")
        })
        .collect();
    assert!(
        acted.is_empty(),
        "app acted on the fact's absence: {acted:?}"
    );
    assert!(daemon.stop());
}

#[test]
fn a_package_of_the_previous_sdk_minor_checks_and_heals_next_to_one_that_publishes_facts() {
    let plugins = plugins_dir_with(&[
        "healer-fixture-sdk-1-3",
        "healer-fixture-facts",
        "healer-plugin-command",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    std::fs::write(dir.path().join("said"), "up\n").unwrap();
    let port = free_port();
    let body = format!(
        r#"
[intake]
bind = "127.0.0.1:{port}"

[[target]]
name = "old"
monitor = {{ plugin = "present", path = "{d}/present" }}
[[target.recover]]
plugin = "command"
argv = ["touch", "{d}/present"]

[[target]]
name = "db"
monitor = {{ plugin = "said", path = "{d}/said" }}
"#
    );
    let config = fast_config(dir.path(), plugins.path(), &body);
    let config_arg = config.to_str().unwrap();

    // The loader sees each package's own SDK version.
    let listed = run_healer(
        &["plugins", "--dir", plugins.path().to_str().unwrap()],
        LIMIT,
    );
    assert!(listed.status.success(), "{listed:?}");
    let shown = stdout(&listed);
    assert!(
        shown.contains("healer-fixture-sdk-1-3 0.0.0 (SDK 1.3.0)"),
        "{shown}"
    );
    assert!(
        shown.contains(&format!(
            "healer-fixture-facts 0.0.0 (SDK {})",
            healer_plugin_sdk::ffi::SDK_VERSION
        )),
        "{shown}"
    );

    let mut daemon = Daemon::start(&config);
    wait_for_port(port, LIMIT);
    // The old package checks and heals as before.
    daemon.wait_for(
        "old's missing file is an issue",
        LIMIT,
        |e| matches!(e, Event::IssueOpened { target, .. } if target == "old"),
    );
    daemon.wait_for(
        "old heals",
        LIMIT,
        |e| matches!(e, Event::IssueResolved { target, .. } if target == "old"),
    );
    assert!(dir.path().join("present").exists());
    let packages = api(port, "/api/v1/plugins");
    let sdk_of = |name: &str| {
        packages["packages"]
            .as_array()
            .and_then(|all| all.iter().find(|p| p["name"] == name))
            .map(|p| p["sdk_version"].clone())
    };
    assert_eq!(sdk_of("healer-fixture-sdk-1-3"), Some("1.3.0".into()));

    // The new one's facts are there beside it.
    let facts = wait_until("db's fact in the API", LIMIT, || {
        let facts = api(port, "/api/v1/facts");
        facts
            .as_array()
            .is_some_and(|all| {
                all.iter().any(|f| {
                    f["subject"] == "target.db"
                        && f["key"] == "said.value"
                        && f["value"] == "up"
                        && f["source"]["writer"] == "said"
                })
            })
            .then_some(facts)
    });
    assert!(
        facts.as_array().is_some_and(|all| all
            .iter()
            .any(|f| f["subject"] == "target.old" && f["key"] == "healthy")),
        "healer's own facts of the old package's target: {facts:#}"
    );
    let shown = stdout(&run_healer(&["facts", "db", "--config", config_arg], LIMIT));
    assert!(
        shown.contains("target.db.said.value  \"up\"  from said"),
        "{shown}"
    );
    assert_eq!(
        daemon.count(|e| matches!(
            e,
            Event::PluginFailed { .. } | Event::PluginWorkerCrashed { .. }
        )),
        0,
        "both packages ran cleanly"
    );
    assert!(daemon.stop());
}

#[test]
fn an_operators_note_opens_a_gate_and_taking_it_back_says_so() {
    // web's restart waits for an operator's go-ahead.
    let running = Running::start(&["healer-plugin-process", "healer-plugin-command"], |dir| {
        let d = dir.display();
        format!(
            r#"
[[target]]
name = "web"
monitor = {{ plugin = "process", pidfile = "{d}/web.pid" }}
[[target.recover]]
plugin = "command"
argv = ["sh", "-c", "sleep 30 & echo $! > {d}/web.pid"]
when = ["target.web.note.go_ahead == true"]
"#
        )
    });
    let (config_arg, mut daemon) = (running.config_arg().to_owned(), running.daemon);
    let config_arg = config_arg.as_str();
    let gated = daemon.wait_for(
        "web's recovery waits for the note",
        LIMIT,
        |e| matches!(e, Event::RecoveryGated { target, .. } if target == "web"),
    );
    let Event::RecoveryGated { evidence, .. } = gated else {
        unreachable!()
    };
    assert!(evidence.contains("target.web.note.go_ahead"), "{evidence}");

    let bad = run_healer(
        &[
            "fact",
            "set",
            "web.go_ahead",
            "true",
            "--config",
            config_arg,
        ],
        LIMIT,
    );
    assert!(!bad.status.success(), "not a note's name: {bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("is not a note's name"),
        "{bad:?}"
    );
    let set = run_healer(
        &[
            "fact",
            "set",
            "target.web.note.go_ahead",
            "true",
            "--for",
            "1m",
            "--config",
            config_arg,
        ],
        LIMIT,
    );
    assert!(set.status.success(), "{set:?}");
    assert!(
        stdout(&set).starts_with("target.web.note.go_ahead = true (operator) until "),
        "{set:?}"
    );
    daemon.wait_for(
        "web restarted once the note holds",
        LIMIT,
        |e| matches!(e, Event::IssueResolved { target, .. } if target == "web"),
    );
    let unset = run_healer(
        &[
            "fact",
            "unset",
            "target.web.note.go_ahead",
            "--config",
            config_arg,
        ],
        LIMIT,
    );
    assert!(unset.status.success(), "{unset:?}");
    daemon.wait_for("the note taken back", LIMIT, |e| {
        matches!(e, Event::FactRetracted { fact, .. } if fact.name() == "target.web.note.go_ahead")
    });
    let again = run_healer(
        &[
            "fact",
            "unset",
            "target.web.healthy",
            "--config",
            config_arg,
        ],
        LIMIT,
    );
    assert!(
        !again.status.success(),
        "healer's own facts are not an operator's: {again:?}"
    );
    assert!(daemon.stop());
}
