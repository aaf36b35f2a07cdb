//! The store against real SQLite files in a temporary directory.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use healer_plugin_sdk::Status;
use rusqlite::{params, Connection};

use super::*;
use crate::events::{Inbox, Run};
use crate::issues::State;
use crate::model::AnomalyState;

struct Collect(Arc<Mutex<Vec<Record>>>);

impl Subscriber for Collect {
    fn deliver(&mut self, record: &Record) {
        self.0.lock().unwrap().push(record.clone());
    }
}

/// A store on `file` with a collector of the events it emits.
fn open(file: &Path) -> (Events, Inbox, Store, Saved, Arc<Mutex<Vec<Record>>>) {
    let (events, inbox) = Events::channel(false);
    let settings = Settings {
        file: file.to_owned(),
        keep_for: Duration::from_secs(86_400),
        keep_events: 100_000,
        forget_anomalies_after: Duration::from_secs(600),
    };
    let (store, saved) = Store::open(settings, events.clone());
    (events, inbox, store, saved, Arc::default())
}

fn started(events: Events, inbox: Inbox, store: &Store, seen: &Arc<Mutex<Vec<Record>>>) -> Events {
    inbox.start(vec![
        store.subscriber(),
        Box::new(Collect(Arc::clone(seen))),
    ]);
    events
}

/// What a store opened on `file` reads back; the store is then stopped,
/// so its lock on the file is released.
fn saved_state(file: &Path) -> Saved {
    let (events, inbox, store, saved, seen) = open(file);
    let events = started(events, inbox, &store, &seen);
    assert!(events.finish(Duration::from_secs(5)));
    saved
}

fn issue(attempts: u32) -> Issue {
    Issue::saved(
        "process.not_running".into(),
        State::Recovering,
        Status::Critical,
        "gone".into(),
        attempts,
        [Wall::from_millis(1_000), Wall::from_millis(9_000)],
        [None, None],
    )
}

fn names(seen: &Arc<Mutex<Vec<Record>>>) -> Vec<&'static str> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|r| r.event.name())
        .collect()
}

#[test]
fn issues_and_intake_state_written_are_read_back_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state").join(STORE_FILE_NAME);
    let (events, inbox, store, saved, seen) = open(&file);
    assert!(saved.issues.is_empty());
    assert_eq!(saved.intake.last_run, Some(0));
    let events = started(events, inbox, &store, &seen);
    events.emit(Event::AttemptStarted {
        target: "web".into(),
        issue: issue(2),
        max_attempts: 3,
    });
    let run = Run {
        run_id: "run-7".into(),
        anomaly: "disk.full".into(),
        details: crate::events::Json::empty_object(),
        workflow: "w".into(),
        params: crate::events::Json::empty_object(),
        reflex: "disk.*".into(),
        attempt: 1,
    };
    let mut state = AnomalyState::default();
    state.attempts = 1;
    state.last_run = Some(Wall::now());
    state.last_report = Some(Wall::now());
    events.emit(Event::WorkflowStarted { run, state });
    events.emit(Event::AlertReceived {
        alertname: "HighErrorRate".into(),
        fingerprint: "f1".into(),
        starts_at: "10:00".into(),
        duplicate: false,
        acted_on: true,
    });
    assert!(events.finish(Duration::from_secs(5)));

    let saved = saved_state(&file);
    assert_eq!(saved.issues["web"], [issue(2)]);
    assert_eq!(saved.intake.anomalies[0].0, "disk.full");
    assert_eq!(saved.intake.anomalies[0].1.attempts, 1);
    assert_eq!(saved.intake.acted[0].fingerprint, "f1");
    let firing: Vec<_> = saved
        .intake
        .firing
        .iter()
        .map(|(name, fingerprint, _)| (name.as_str(), fingerprint.as_str()))
        .collect();
    assert_eq!(firing, [("HighErrorRate", "f1")]);
    assert_eq!(saved.intake.last_run, Some(7));
    assert!(names(&seen).iter().all(|name| !name.starts_with("store_")));
}

#[test]
fn a_database_of_the_first_version_is_migrated_and_keeps_its_issues() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(STORE_FILE_NAME);
    {
        let mut conn = Connection::open(&file).unwrap();
        assert_eq!(schema::migrate_to(&mut conn, 1).unwrap(), 0);
        conn.execute(
            "INSERT INTO issues (target, kind, state, severity, summary, attempts, opened_at, next_attempt_at)
             VALUES ('db', 'process.not_running', 'escalated', 'CRITICAL', 'gone', 3, 1000, 2000)",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO events (at, event, subject, body) VALUES (?1, 'issue_opened', 'db', '{}')",
            params![Wall::now().millis() as i64],
        )
        .unwrap();
    }

    let saved = saved_state(&file);

    let conn = Connection::open(&file).unwrap();
    assert_eq!(schema::version(&conn).unwrap(), schema::LATEST);
    assert_eq!(saved.issues["db"][0].state, State::Escalated);
    assert_eq!(saved.issues["db"][0].attempts, 3);
    let events: i64 = conn
        .query_row("SELECT COUNT(*) FROM events", [], |row| row.get(0))
        .unwrap();
    assert_eq!(events, 1);
    conn.execute(
        "INSERT INTO anomalies (name, attempts, suppressed, escalated) VALUES ('x', 1, 0, 0)",
        params![],
    )
    .expect("the second version's tables exist");
}

#[test]
fn a_corrupt_file_is_moved_aside_and_a_new_database_started() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(STORE_FILE_NAME);
    std::fs::write(&file, vec![0x5a; 8192]).unwrap();

    let (events, inbox, store, saved, seen) = open(&file);
    let events = started(events, inbox, &store, &seen);
    events.emit(Event::IssueOpened {
        target: "web".into(),
        issue: issue(0),
    });
    assert!(events.finish(Duration::from_secs(5)));

    assert_eq!(saved.intake.last_run, None, "old run numbers are unknown");
    let moved: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("healer.db.corrupt-"))
        .collect();
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert!(
        std::fs::read(dir.path().join(&moved[0])).unwrap() == vec![0x5a; 8192],
        "the corrupt file is kept as it was"
    );
    let seen = seen.lock().unwrap();
    let Event::StoreMovedAside {
        file: named, error, ..
    } = &seen[0].event
    else {
        panic!("{:?}", seen[0]);
    };
    assert_eq!(named, &file);
    assert!(error.contains("not a database"), "{error}");
    drop(seen);
    let saved = saved_state(&file);
    assert_eq!(saved.issues["web"].len(), 1, "the new database works");
}

#[test]
fn a_database_from_a_newer_healer_is_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(STORE_FILE_NAME);
    {
        let conn = Connection::open(&file).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    let before = std::fs::read(&file).unwrap();

    let (events, inbox, store, _saved, seen) = open(&file);
    let events = started(events, inbox, &store, &seen);
    events.emit(Event::IssueOpened {
        target: "web".into(),
        issue: issue(0),
    });
    events.finish(Duration::from_secs(1));

    assert!(
        std::fs::read(&file).unwrap() == before,
        "the file was changed"
    );
    let seen = seen.lock().unwrap();
    let Event::StoreDegraded { error, .. } = &seen[0].event else {
        panic!("{:?}", seen[0]);
    };
    assert!(error.contains("newer healer (schema 99"), "{error}");
}

#[test]
fn history_is_kept_by_rows_and_routine_checks_are_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(STORE_FILE_NAME);
    let (events, inbox, store, _, seen) = open(&file);
    let events = started(events, inbox, &store, &seen);
    for n in 0..1_500 {
        events.emit(Event::Checked {
            target: "t".into(),
            check: String::new(),
            status: if n % 2 == 0 {
                Status::Ok
            } else {
                Status::Critical
            },
            was: Some(if n % 2 == 0 {
                Status::Critical
            } else {
                Status::Ok
            }),
            summary: String::new(),
            pushed: false,
            took_us: 0,
        });
        events.emit(Event::Checked {
            target: "t".into(),
            check: String::new(),
            status: Status::Ok,
            was: Some(Status::Ok),
            summary: String::new(),
            pushed: false,
            took_us: 0,
        });
    }
    assert!(events.finish(Duration::from_secs(5)));
    let conn = Connection::open(&file).unwrap();
    let stored = sql::count_events(&conn).unwrap();
    assert_eq!(stored, 1_500, "routine checks are not history");
    let retention = |keep_for, now| sql::Retention {
        keep_for,
        keep_events: 1_000,
        now,
    };
    sql::prune(&conn, retention(Duration::from_secs(86_400), Wall::now())).unwrap();
    assert_eq!(sql::count_events(&conn).unwrap(), 1_000);
    let later = Wall::now() + Duration::from_secs(1);
    sql::prune(&conn, retention(Duration::from_millis(1), later)).unwrap();
    assert_eq!(sql::count_events(&conn).unwrap(), 0, "and by age");
}

fn workflow_started(anomaly: &str, last_report: Wall) -> Event {
    let mut state = AnomalyState::default();
    state.attempts = 1;
    state.last_run = Some(last_report);
    state.last_report = Some(last_report);
    Event::WorkflowStarted {
        run: Run {
            run_id: format!("run-{anomaly}"),
            anomaly: anomaly.into(),
            details: crate::events::Json::empty_object(),
            workflow: "w".into(),
            params: crate::events::Json::empty_object(),
            reflex: "*".into(),
            attempt: 1,
        },
        state,
    }
}

#[test]
fn a_failing_retention_neither_writes_a_batch_twice_nor_holds_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(STORE_FILE_NAME);
    {
        // Fault injection: an old event due for deletion, and deletions
        // that fail.
        let mut conn = Connection::open(&file).unwrap();
        schema::migrate(&mut conn).unwrap();
        conn.execute_batch(
            "INSERT INTO events (at, event, subject, body) VALUES (1000, 'started', NULL, '{}');
             CREATE TRIGGER no_deletes BEFORE DELETE ON events BEGIN SELECT RAISE(ABORT, 'deleting is broken'); END;",
        )
        .unwrap();
    }

    let (events, inbox, store, _, seen) = open(&file);
    let events = started(events, inbox, &store, &seen);
    events.emit(Event::IssueOpened {
        target: "web".into(),
        issue: issue(0),
    });
    assert!(
        events.sync(Duration::from_secs(5)),
        "written despite the retention"
    );
    std::thread::sleep(Duration::from_millis(600));
    events.finish(Duration::from_secs(5));

    let conn = Connection::open(&file).unwrap();
    assert_eq!(
        sql::count_events(&conn).unwrap(),
        2,
        "the old event and the new one, once"
    );
    assert!(
        names(&seen).iter().all(|name| !name.starts_with("store_")),
        "writing works: {:?}",
        names(&seen)
    );
}

#[test]
fn a_corrupt_file_that_cannot_be_moved_costs_one_event() {
    struct Mutable<'a>(&'a Path);
    impl Drop for Mutable<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(self.0)
                .status();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(STORE_FILE_NAME);
    std::fs::write(&file, vec![0x5a; 8192]).unwrap();
    let status = std::process::Command::new("chattr")
        .arg("+i")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "chattr +i (needs root)");
    let _mutable = Mutable(dir.path());

    let (events, inbox, store, saved, seen) = open(&file);
    let events = started(events, inbox, &store, &seen);
    events.emit(Event::IssueOpened {
        target: "web".into(),
        issue: issue(0),
    });
    std::thread::sleep(Duration::from_millis(1_200)); // several retries
    events.finish(Duration::from_secs(5));

    assert!(saved.issues.is_empty());
    assert_eq!(names(&seen), ["store_degraded", "issue_opened"]);
    let seen = seen.lock().unwrap();
    let Event::StoreDegraded { error, .. } = &seen[0].event else {
        unreachable!()
    };
    assert!(
        error.contains("not a database") && error.contains("moving it aside failed"),
        "{error}"
    );
}

#[test]
fn an_anomaly_quiet_past_the_intakes_stable_after_is_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(STORE_FILE_NAME);
    let (events, inbox, store, _, seen) = open(&file);
    let events = started(events, inbox, &store, &seen);
    // History is kept for a day, but an anomaly is forgotten after 10
    // quiet minutes: make it 20 minutes quiet.
    events.emit(workflow_started("quiet", Wall::now()));
    events.finish(Duration::from_secs(5));
    let conn = Connection::open(&file).unwrap();
    let stale = Wall::from_millis(Wall::now().millis() - 20 * 60 * 1000);
    conn.execute(
        "UPDATE anomalies SET last_report = ?1 WHERE name = 'quiet'",
        params![stale.millis() as i64],
    )
    .unwrap();
    drop(conn);

    let (events, inbox, store, saved, seen) = open(&file);
    assert_eq!(
        saved.intake.anomalies.len(),
        1,
        "read back, for the intake to judge"
    );
    let events = started(events, inbox, &store, &seen);
    events.emit(workflow_started("fresh", Wall::now()));
    events.finish(Duration::from_secs(5));

    let saved = saved_state(&file);
    let names: Vec<_> = saved
        .intake
        .anomalies
        .iter()
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(names, ["fresh"]);
}

#[test]
fn a_third_version_history_reads_back_with_the_names_of_the_fourth() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(STORE_FILE_NAME);
    // As healer wrote them before the fourth version.
    let rows = [
        (
            "issue_reset",
            r#"{"at":"2026-01-01T00:00:00.000Z","event":"issue_reset","target":"web","kind":"process.not_running","reason":"healthy for 5m: the attempt count starts over"}"#,
        ),
        (
            "alert_sent",
            r#"{"at":"2026-01-01T00:00:01.000Z","event":"alert_sent","sink":"team","target":"web","kind":"process.not_running","state":"firing","attempts":2}"#,
        ),
    ];
    {
        let mut conn = Connection::open(&file).unwrap();
        schema::migrate_to(&mut conn, 3).unwrap();
        for (event, body) in rows {
            conn.execute(
                "INSERT INTO events (at, event, subject, body) VALUES (?1, ?2, 'web', ?3)",
                params![Wall::now().millis() as i64, event, body],
            )
            .unwrap();
        }
    }

    let saved = saved_state(&file);

    let events: Vec<&Event> = saved.recent.iter().map(|record| &record.event).collect();
    assert!(
        matches!(events[..], [Event::IssueForgotten { kind, .. }, _] if kind == "process.not_running"),
        "{events:?}"
    );
    assert!(
        matches!(events[..], [_, Event::AlertSent { tries: 2, .. }]),
        "{events:?}"
    );
    let conn = Connection::open(&file).unwrap();
    let names: Vec<String> = conn
        .prepare("SELECT event FROM events ORDER BY id")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(names, ["issue_forgotten", "alert_sent"]);
}

#[test]
fn facts_written_are_read_back_after_a_restart_and_retracted_or_expired_ones_are_not() {
    use crate::facts::{Facts, Retraction, Source, Value};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(STORE_FILE_NAME);
    let (events, inbox, store, _, seen) = open(&file);
    let events = started(events, inbox, &store, &seen);
    let now = Wall::now();
    let mut facts = Facts::default();
    let plugin = Source {
        writer: "process".to_owned(),
        package: Some("libhealer_plugin_process.so".to_owned()),
        version: Some("1.0.0".to_owned()),
    };
    let mut changes = facts
        .publish(
            "target.db",
            &Source::healer(),
            vec![("healthy".to_owned(), Value::Bool(true))],
            None,
            now,
        )
        .changes;
    changes.extend(
        facts
            .publish(
                "target.db",
                &plugin,
                vec![
                    ("process.pid".to_owned(), Value::Number(42.0)),
                    ("process.start".to_owned(), Value::Text("today".into())),
                ],
                Some(Duration::from_secs(3600)),
                now,
            )
            .changes,
    );
    changes.extend(facts.retract("target.db", Some("nobody"), Retraction::Unset));
    for event in crate::events::fact_events(changes) {
        events.emit(event);
    }
    let gone = facts.worker_ended("libhealer_plugin_process.so");
    assert_eq!(gone.len(), 2);
    let kept_then_gone = gone.into_iter().take(1);
    for event in crate::events::fact_events(kept_then_gone.collect()) {
        events.emit(event);
    }
    assert!(events.finish(Duration::from_secs(5)));
    drop(store);
    let mut names: Vec<String> = saved_state(&file)
        .facts
        .iter()
        .map(crate::facts::Fact::name)
        .collect();
    names.sort();
    assert_eq!(names, ["target.db.healthy", "target.db.process.start"]);
}

#[test]
fn the_ledger_and_what_an_issue_waits_for_are_read_back_after_a_restart() {
    use crate::issues::{Proposal, State};
    use crate::ledger::{Judging, Ledger, Verdict};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(STORE_FILE_NAME);
    let (events, inbox, store, _, seen) = open(&file);
    let events = started(events, inbox, &store, &seen);
    let now = Wall::from_millis(1_700_000_000_000);
    let mut issue = gone(State::Open, now);
    issue.proposal = Some(Box::new(Proposal {
        recoverer: "command".to_owned(),
        action: "command {\"argv\":[\"true\"]}".to_owned(),
        why: "its mode is \"propose\"".to_owned(),
        proposed_at: now,
        expires_at: now + Duration::from_secs(3600),
        approved: false,
    }));
    issue.judging = Some(Box::new(Judging {
        recoverer: "command#2".to_owned(),
        attempt: 1,
        started_at: now,
        resolved_at: None,
    }));
    events.emit(Event::RecoveryProposed {
        target: "web".to_owned(),
        issue: issue.clone(),
        approve: "healer approve web/process.not_running".to_owned(),
    });
    let mut ledger = Ledger::default();
    let key = (
        "web".to_owned(),
        "process.not_running".to_owned(),
        "command".to_owned(),
    );
    let counted = ledger.count(
        key.clone(),
        Verdict::Healed,
        Some(Duration::from_millis(800)),
        now,
    );
    events.emit(Event::RecoveryJudged {
        target: key.0.clone(),
        kind: key.1.clone(),
        recoverer: key.2.clone(),
        attempt: 1,
        verdict: Verdict::Healed,
        reason: "it stayed resolved".to_owned(),
        time_to_healthy: None,
        outcomes: Box::new(counted.outcomes.clone()),
        forgot: None,
    });
    assert!(events.finish(Duration::from_secs(5)));
    drop(store);
    let saved = saved_state(&file);
    assert_eq!(saved.issues["web"], [issue]);
    assert_eq!(saved.outcomes, [(key, counted.outcomes)]);
}

#[test]
fn a_verdict_takes_the_judged_attempt_off_its_issue_so_a_restart_does_not_judge_it_again() {
    use crate::issues::State;
    use crate::ledger::{Judging, Outcomes, Verdict};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(STORE_FILE_NAME);
    let (events, inbox, store, _, seen) = open(&file);
    let events = started(events, inbox, &store, &seen);
    let now = Wall::from_millis(1_700_000_000_000);
    let mut issue = gone(State::Recovering, now);
    issue.judging = Some(Box::new(Judging {
        recoverer: "command".to_owned(),
        attempt: 1,
        started_at: now,
        resolved_at: None,
    }));
    events.emit(Event::AttemptFinished {
        target: "web".to_owned(),
        issue,
        recovered: true,
    });
    // Due again, a gate holds the next attempt: only the verdict follows.
    events.emit(Event::RecoveryJudged {
        target: "web".to_owned(),
        kind: "process.not_running".to_owned(),
        recoverer: "command".to_owned(),
        attempt: 1,
        verdict: Verdict::NotHealed,
        reason: "another attempt was needed".to_owned(),
        time_to_healthy: None,
        outcomes: Box::new(Outcomes::default()),
        forgot: None,
    });
    assert!(events.finish(Duration::from_secs(5)));
    drop(store);
    let saved = saved_state(&file);
    assert_eq!(saved.issues["web"][0].judging, None);
}

/// `web`'s issue `process.not_running` ("gone"), in `state`, one attempt
/// made, opened at `now`.
fn gone(state: crate::issues::State, now: Wall) -> crate::issues::Issue {
    crate::issues::Issue::saved(
        "process.not_running".to_owned(),
        state,
        Status::Critical,
        "gone".to_owned(),
        1,
        [now, now],
        [None, None],
    )
}

#[test]
fn a_packages_crashes_and_quarantine_are_read_back_after_a_restart_until_lifted() {
    use healer_plugin_sdk::Duration as HumanDuration;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(STORE_FILE_NAME);
    let crash = |package: &str| Event::PluginWorkerCrashed {
        package: package.to_owned(),
        file: PathBuf::from("plugins").join(package),
        reason: "killed by SIGSEGV".to_owned(),
        in_flight: 1,
        crashes: 1,
        within: HumanDuration(Duration::from_secs(600)),
    };
    let (events, inbox, store, _, seen) = open(&file);
    let events = started(events, inbox, &store, &seen);
    for package in ["libbad.so", "libbad.so", "libbad.so", "libonce.so"] {
        events.emit(crash(package));
    }
    events.emit(Event::PluginQuarantined {
        package: "libbad.so".to_owned(),
        file: PathBuf::from("plugins/libbad.so"),
        crashes: 3,
        within: HumanDuration(Duration::from_secs(600)),
        reason: "killed by SIGSEGV".to_owned(),
        sha256: "ab".repeat(32),
    });
    assert!(events.finish(Duration::from_secs(5)));
    drop(store);

    // What the daemon reads at start, before the store opens.
    let saved = remembered_plugins(&file);
    let bad = &saved["libbad.so"];
    assert_eq!(bad.crashes, 3);
    assert_eq!(bad.last_crash.as_deref(), Some("killed by SIGSEGV"));
    let quarantine = bad.quarantine.as_ref().expect("still quarantined");
    assert_eq!(quarantine.sha256, "ab".repeat(32));
    assert_eq!(
        quarantine.reason,
        "plugin package libbad.so is quarantined: its worker crashed 3 times within 10m (last: killed by SIGSEGV); replace the file, or lift it with `healer reset --plugin libbad.so`, to try it again"
    );
    assert_eq!(saved["libonce.so"].crashes, 1);
    assert!(saved["libonce.so"].quarantine.is_none());

    let (events, inbox, store, _, seen) = open(&file);
    let events = started(events, inbox, &store, &seen);
    events.emit(Event::PluginQuarantineLifted {
        package: "libbad.so".to_owned(),
        file: PathBuf::from("plugins/libbad.so"),
        how: "an operator lifted it".to_owned(),
    });
    assert!(events.finish(Duration::from_secs(5)));
    drop(store);
    let bad = remembered_plugins(&file)["libbad.so"].clone();
    assert!(bad.quarantine.is_none(), "lifted: {bad:?}");
    assert_eq!(bad.crashes, 3, "its crashes stay counted");
}
