//! Shared knowledge with the real daemon (issue 22): healer publishes
//! what it knows of each target as facts, a recoverer gated on another
//! target's fact waits for it and says which fact, from whom and how old,
//! `healer facts` shows them, and they survive a restart.

use std::time::Duration;

use healer_e2e::{
    after_start, fast_config, free_port, plugins_dir_with, run_healer, stdout, wait_for_port,
    wait_until, Daemon, Event,
};

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
