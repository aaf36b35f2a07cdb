//! The store against real SQLite files in a temporary directory.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use healer_plugin_sdk::Status;
use rusqlite::{params, Connection};

use super::*;
use crate::events::{Inbox, Run};
use crate::intake::AnomalyState;
use crate::issues::State;

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
    let file = dir.path().join("state").join(FILE_NAME);
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
        details: serde_json::json!({}),
        workflow: "w".into(),
        params: serde_json::json!({}),
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

    let (_, _, _, saved, _) = open(&file);
    assert_eq!(saved.issues["web"], [issue(2)]);
    assert_eq!(saved.intake.anomalies[0].0, "disk.full");
    assert_eq!(saved.intake.anomalies[0].1.attempts, 1);
    assert_eq!(saved.intake.acted[0].fingerprint, "f1");
    assert_eq!(
        saved.intake.firing,
        [("HighErrorRate".to_owned(), "f1".to_owned())]
    );
    assert_eq!(saved.intake.last_run, Some(7));
    assert!(names(&seen).iter().all(|name| !name.starts_with("store_")));
}

#[test]
fn a_database_of_the_first_version_is_migrated_and_keeps_its_issues() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(FILE_NAME);
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
            "INSERT INTO events (at, event, subject, body) VALUES (1000, 'issue_opened', 'db', '{}')",
            [],
        )
        .unwrap();
    }

    let (_, _, _, saved, _) = open(&file);

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
    let file = dir.path().join(FILE_NAME);
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
    let (_, _, _, saved, _) = open(&file);
    assert_eq!(saved.issues["web"].len(), 1, "the new database works");
}

#[test]
fn a_database_from_a_newer_healer_is_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(FILE_NAME);
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
    let file = dir.path().join(FILE_NAME);
    let (events, inbox, store, _, seen) = open(&file);
    let events = started(events, inbox, &store, &seen);
    for n in 0..1_500 {
        events.emit(Event::Checked {
            target: "t".into(),
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
    sql::prune(&conn, Duration::from_secs(86_400), 1_000, Wall::now()).unwrap();
    assert_eq!(sql::count_events(&conn).unwrap(), 1_000);
    sql::prune(
        &conn,
        Duration::from_millis(1),
        1_000,
        Wall::now() + Duration::from_secs(1),
    )
    .unwrap();
    assert_eq!(sql::count_events(&conn).unwrap(), 0, "and by age");
}
