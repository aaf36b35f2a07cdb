//! The database schema and its migrations. The schema version is SQLite's
//! `user_version`; each migration takes the database from one version to
//! the next in one transaction. Migrations are never edited once released:
//! a change is a new migration appended to [`MIGRATIONS`].

use rusqlite::Connection;

/// Version 1: issues and the event history.
const V1: &str = "
CREATE TABLE issues (
    target          TEXT NOT NULL,
    kind            TEXT NOT NULL,
    state           TEXT NOT NULL,
    severity        TEXT NOT NULL,
    summary         TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    opened_at       INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    escalated_at    INTEGER,
    resolved_at     INTEGER,
    PRIMARY KEY (target, kind)
) WITHOUT ROWID;

CREATE TABLE events (
    id      INTEGER PRIMARY KEY,
    at      INTEGER NOT NULL,
    event   TEXT NOT NULL,
    subject TEXT,
    body    TEXT NOT NULL
);
CREATE INDEX events_by_time ON events (at);
CREATE INDEX events_by_subject ON events (subject, at);
";

/// Version 2: the intake's state (storm control per anomaly name,
/// Alertmanager occurrences acted on and alerts firing), workflow runs and
/// the run counter.
const V2: &str = "
CREATE TABLE anomalies (
    name        TEXT PRIMARY KEY,
    attempts    INTEGER NOT NULL,
    last_run    INTEGER,
    last_report INTEGER,
    suppressed  INTEGER NOT NULL,
    escalated   INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE alerts_acted (
    fingerprint TEXT NOT NULL,
    starts_at   TEXT NOT NULL,
    alertname   TEXT NOT NULL,
    acted_at    INTEGER NOT NULL,
    PRIMARY KEY (fingerprint, starts_at)
) WITHOUT ROWID;

CREATE TABLE alerts_firing (
    alertname   TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    seen_at     INTEGER NOT NULL,
    PRIMARY KEY (alertname, fingerprint)
) WITHOUT ROWID;

CREATE TABLE runs (
    run_id      TEXT PRIMARY KEY,
    number      INTEGER,
    anomaly     TEXT NOT NULL,
    workflow    TEXT NOT NULL,
    reflex      TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    status      TEXT NOT NULL,
    details     TEXT NOT NULL,
    params      TEXT NOT NULL,
    started_at  INTEGER,
    finished_at INTEGER,
    error       TEXT
);
CREATE INDEX runs_by_time ON runs (started_at);

-- Counters that retention never deletes (the last workflow run number).
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Version 3: targets paused for maintenance (until a wall-clock time).
const V3: &str = "
CREATE TABLE pauses (
    target TEXT PRIMARY KEY,
    until  INTEGER NOT NULL,
    reason TEXT NOT NULL,
    since  INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Version 4: two names in the history made to say what they mean. The
/// flap memory letting an issue go, `issue_reset`, which read like an
/// operator's reset, is `issue_forgotten`; an alert delivery's count of
/// requests, `attempts`, which read like an issue's recovery attempts, is
/// `tries`. (Outside text in a body is JSON-escaped: an unescaped `"`
/// only ever delimits healer's own keys and values, so the replaced text
/// cannot occur inside one.)
const V4: &str = r#"
UPDATE events
   SET event = 'issue_forgotten',
       body = replace(body, '"event":"issue_reset"', '"event":"issue_forgotten"')
 WHERE event = 'issue_reset';
UPDATE events
   SET body = replace(body, '"attempts":', '"tries":')
 WHERE event IN ('alert_sent', 'alert_failed');
"#;

/// Version 5: the facts healer and its plugins know, each as its JSON
/// (`facts::Fact`), with its expiry to prune by (none: as long as its
/// target).
const V5: &str = "
CREATE TABLE facts (
    name       TEXT PRIMARY KEY,
    body       TEXT NOT NULL,
    expires_at INTEGER
) WITHOUT ROWID;
";

/// Version 6: what an issue waits for (a proposal to an operator, the
/// verdict on its latest successful attempt), each as JSON, and the
/// ledger of outcomes, a row per (target, kind, recoverer) as JSON
/// (`ledger::Outcomes`).
const V6: &str = "
ALTER TABLE issues ADD COLUMN proposal TEXT;
ALTER TABLE issues ADD COLUMN judging TEXT;
CREATE TABLE outcomes (
    target    TEXT NOT NULL,
    kind      TEXT NOT NULL,
    recoverer TEXT NOT NULL,
    body      TEXT NOT NULL,
    PRIMARY KEY (target, kind, recoverer)
) WITHOUT ROWID;
";

/// Version 7: what healer remembers of each plugin package, by file name:
/// its workers' crashes and its quarantine, as JSON
/// (`model::PluginRecord`).
const V7: &str = "
CREATE TABLE plugins (
    package TEXT PRIMARY KEY,
    body    TEXT NOT NULL
) WITHOUT ROWID;
";

/// Every migration, in order: `MIGRATIONS[n]` takes version `n` to `n + 1`.
pub const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6, V7];

/// The version this healer writes.
pub const LATEST: u32 = MIGRATIONS.len() as u32;

/// Why a database cannot be brought to [`LATEST`].
#[derive(Debug)]
pub enum MigrationError {
    /// Written by a newer healer: left untouched.
    Newer(u32),
    /// SQLite failed.
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for MigrationError {
    fn from(err: rusqlite::Error) -> MigrationError {
        MigrationError::Sqlite(err)
    }
}

/// The database's schema version (0 for a new, empty file).
pub fn version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// Brings the database to version `to`, one migration at a time; returns
/// the version it was at.
pub fn migrate_to(conn: &mut Connection, to: u32) -> Result<u32, MigrationError> {
    let from = version(conn)?;
    if from > LATEST {
        return Err(MigrationError::Newer(from));
    }
    for (index, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .take(to as usize)
        .skip(from as usize)
    {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index as u32 + 1)?;
        tx.commit()?;
    }
    Ok(from)
}

/// Brings the database to [`LATEST`].
pub fn migrate(conn: &mut Connection) -> Result<u32, MigrationError> {
    migrate_to(conn, LATEST)
}
