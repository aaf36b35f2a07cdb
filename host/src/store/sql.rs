//! The SQL: opening a connection the way healer needs it, writing one
//! batch (and, when due, the retention of history and runs) in one
//! transaction, and reading the saved state back at start. Times are
//! milliseconds since the Unix epoch.
//!
//! The connection holds the database exclusively (`locking_mode =
//! EXCLUSIVE`, set before WAL mode): in WAL mode SQLite then keeps its
//! index in memory instead of mapping a `-shm` file, so nothing another
//! process does to a file (making it immutable, truncating it) can turn a
//! write into SIGBUS; and a second healer on the same `state_dir` finds
//! the database locked instead of interleaving its writes. Other processes
//! can read the database once healer has stopped.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use healer_plugin_sdk::Status;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::projection::Batch;
use super::schema::{self, MigrationError};
use crate::clock::Wall;
use crate::facts::Fact;
use crate::intake::Acted;
use crate::issues::{Issue, State};
use crate::ledger::{self, Outcomes};
use crate::model::AnomalyState;
use crate::model::Pause;
use crate::model::PluginRecord;

/// The WAL file is truncated back to this after a checkpoint.
const WAL_LIMIT: i64 = 64 * 1024 * 1024;

fn ms(wall: Wall) -> i64 {
    i64::try_from(wall.millis()).unwrap_or(i64::MAX)
}

fn wall(millis: i64) -> Wall {
    Wall::from_millis(u64::try_from(millis).unwrap_or(0))
}

/// Opens the database for writing (creating it), in WAL mode, migrated to
/// the latest schema.
pub fn connect(file: &Path) -> Result<Connection, MigrationError> {
    let mut conn = Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
    // The first statement reads the header: a file that is not a database
    // fails here, and one of a newer healer is left as it is.
    let version = schema::version(&conn)?;
    if version > schema::LATEST {
        return Err(MigrationError::Newer(version));
    }
    // A file that cannot be written stays in its old journal mode; the
    // first write then says why.
    let _mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "journal_size_limit", WAL_LIMIT)?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    schema::migrate(&mut conn)?;
    Ok(conn)
}

/// Opens the database read-only, to read the saved state when it cannot
/// be written. In normal locking mode: a connection that may not write
/// cannot take the exclusive lock, and SQLite reads a WAL database it
/// cannot write with its index in memory. Close it before a writer opens.
pub fn connect_read_only(file: &Path) -> Result<Connection, MigrationError> {
    let conn = Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(1))?;
    let version = schema::version(&conn)?;
    if version != schema::LATEST {
        return Err(MigrationError::Newer(version));
    }
    Ok(conn)
}

/// History and runs to delete, with the batch they are written with.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// History and runs older than this are deleted...
    pub keep_for: Duration,
    /// ...and history beyond the newest this many rows.
    pub keep_events: u64,
    pub now: Wall,
}

/// Writes one batch, and applies `retention` when given, in one
/// transaction: all of it, or (on error) none, so a retried batch is
/// never written twice.
pub fn write(
    conn: &mut Connection,
    batch: &Batch,
    retention: Option<Retention>,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO events (at, event, subject, body) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for row in &batch.history {
            insert.execute(params![ms(row.at), row.event, row.subject, row.body])?;
        }
        let mut run = tx.prepare_cached(
            "INSERT INTO runs (run_id, number, anomaly, workflow, reflex, attempt, status, details, params, started_at, finished_at, error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
             ON CONFLICT (run_id) DO UPDATE SET
                 status = excluded.status,
                 started_at = COALESCE(runs.started_at, excluded.started_at),
                 finished_at = COALESCE(excluded.finished_at, runs.finished_at),
                 error = excluded.error",
        )?;
        let mut last_run: Option<i64> = None;
        for row in &batch.runs {
            let number: Option<i64> = row
                .run
                .run_id
                .strip_prefix("run-")
                .and_then(|n| n.parse().ok());
            last_run = last_run.max(number);
            run.execute(params![
                row.run.run_id,
                number,
                row.run.anomaly,
                row.run.workflow,
                row.run.reflex,
                row.run.attempt,
                row.status,
                row.run.details.as_str(),
                row.run.params.as_str(),
                row.started_at.map(ms),
                row.finished_at.map(ms),
                row.error,
            ])?;
        }
        // Once a batch, not once a run.
        if let Some(number) = last_run {
            tx.prepare_cached(
                "INSERT INTO counters (name, value) VALUES ('last_run', ?1)
                 ON CONFLICT (name) DO UPDATE SET value = MAX(value, excluded.value)",
            )?
            .execute(params![number])?;
        }
        let mut put_issue = tx.prepare_cached(
            "INSERT OR REPLACE INTO issues (target, kind, state, severity, summary, attempts, opened_at, next_attempt_at, escalated_at, resolved_at, proposal, judging)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?;
        let mut drop_issue =
            tx.prepare_cached("DELETE FROM issues WHERE target = ?1 AND kind = ?2")?;
        for ((target, kind), issue) in &batch.issues {
            match issue {
                Some(issue) => put_issue.execute(params![
                    target,
                    kind,
                    issue.state.as_str(),
                    issue.severity.as_str(),
                    issue.summary,
                    issue.attempts,
                    ms(issue.opened_at),
                    ms(issue.next_attempt_at),
                    issue.escalated_at.map(ms),
                    issue.resolved_at.map(ms),
                    issue
                        .proposal
                        .as_ref()
                        .and_then(|p| serde_json::to_string(p).ok()),
                    issue
                        .judging
                        .as_ref()
                        .and_then(|j| serde_json::to_string(j).ok()),
                ])?,
                None => drop_issue.execute(params![target, kind])?,
            };
        }
        let mut put_anomaly = tx.prepare_cached(
            "INSERT OR REPLACE INTO anomalies (name, attempts, last_run, last_report, suppressed, escalated)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut drop_anomaly = tx.prepare_cached("DELETE FROM anomalies WHERE name = ?1")?;
        for (name, state) in &batch.anomalies {
            match state {
                Some(state) => put_anomaly.execute(params![
                    name,
                    state.attempts,
                    state.last_run.map(ms),
                    state.last_report.map(ms),
                    i64::try_from(state.suppressed).unwrap_or(i64::MAX),
                    state.escalated,
                ])?,
                None => drop_anomaly.execute(params![name])?,
            };
        }
        let mut put_acted = tx.prepare_cached(
            "INSERT OR REPLACE INTO alerts_acted (fingerprint, starts_at, alertname, acted_at) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut drop_acted = tx
            .prepare_cached("DELETE FROM alerts_acted WHERE fingerprint = ?1 AND starts_at = ?2")?;
        for ((fingerprint, starts_at), acted) in &batch.acted {
            match acted {
                Some((alertname, at)) => {
                    put_acted.execute(params![fingerprint, starts_at, alertname, ms(*at)])?
                }
                None => drop_acted.execute(params![fingerprint, starts_at])?,
            };
        }
        let mut put_firing = tx.prepare_cached(
            "INSERT OR REPLACE INTO alerts_firing (alertname, fingerprint, seen_at) VALUES (?1, ?2, ?3)",
        )?;
        let mut drop_firing = tx.prepare_cached(
            "DELETE FROM alerts_firing WHERE alertname = ?1 AND fingerprint = ?2",
        )?;
        for ((alertname, fingerprint), seen_at) in &batch.firing {
            match seen_at {
                Some(seen_at) => {
                    put_firing.execute(params![alertname, fingerprint, ms(*seen_at)])?
                }
                None => drop_firing.execute(params![alertname, fingerprint])?,
            };
        }
        let mut put_pause = tx.prepare_cached(
            "INSERT OR REPLACE INTO pauses (target, until, reason, since) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut drop_pause = tx.prepare_cached("DELETE FROM pauses WHERE target = ?1")?;
        for (target, pause) in &batch.pauses {
            match pause {
                Some(pause) => put_pause.execute(params![
                    target,
                    ms(pause.until),
                    pause.reason,
                    ms(pause.since)
                ])?,
                None => drop_pause.execute(params![target])?,
            };
        }
        let mut put_fact = tx.prepare_cached(
            "INSERT OR REPLACE INTO facts (name, body, expires_at) VALUES (?1, ?2, ?3)",
        )?;
        let mut drop_fact = tx.prepare_cached("DELETE FROM facts WHERE name = ?1")?;
        for (name, fact) in &batch.facts {
            match fact {
                Some(fact) => {
                    let body = serde_json::to_string(fact).unwrap_or_default();
                    put_fact.execute(params![name, body, fact.expires_at.map(ms)])?
                }
                None => drop_fact.execute(params![name])?,
            };
        }
        let mut put_outcomes = tx.prepare_cached(
            "INSERT OR REPLACE INTO outcomes (target, kind, recoverer, body) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut drop_outcomes = tx.prepare_cached(
            "DELETE FROM outcomes WHERE target = ?1 AND kind = ?2 AND recoverer = ?3",
        )?;
        for ((target, kind, recoverer), row) in &batch.outcomes {
            match row {
                Some(row) => {
                    let body = serde_json::to_string(row).unwrap_or_default();
                    put_outcomes.execute(params![target, kind, recoverer, body])?
                }
                None => drop_outcomes.execute(params![target, kind, recoverer])?,
            };
        }
        let mut put_plugin =
            tx.prepare_cached("INSERT OR REPLACE INTO plugins (package, body) VALUES (?1, ?2)")?;
        let mut drop_plugin = tx.prepare_cached("DELETE FROM plugins WHERE package = ?1")?;
        for (package, record) in &batch.plugins {
            match record {
                Some(record) => {
                    let body = serde_json::to_string(record).unwrap_or_default();
                    put_plugin.execute(params![package, body])?
                }
                None => drop_plugin.execute(params![package])?,
            };
        }
    }
    if let Some(retention) = retention {
        prune(&tx, retention)?;
    }
    tx.commit()
}

/// How many of the newest history events are read back at start, for the
/// API's recent history.
pub const RECENT: usize = crate::history::KEPT;

/// The state saved in the database.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Every issue (resolved ones too: the flap memory), by target.
    pub issues: HashMap<String, Vec<Issue>>,
    pub anomalies: Vec<(String, AnomalyState)>,
    pub acted: Vec<(String, Acted)>,
    pub firing: Vec<(String, String, Wall)>,
    /// Targets paused for maintenance.
    pub pauses: Vec<(String, Pause)>,
    /// The facts kept (a row that does not read as a fact is left out).
    pub facts: Vec<Fact>,
    /// The ledger's rows (one that does not read back is left out).
    pub outcomes: Vec<(ledger::Key, Outcomes)>,
    /// What is remembered of each plugin package (one that does not read
    /// back is left out).
    pub plugins: Vec<(String, PluginRecord)>,
    /// The newest events of the history, oldest first (at most
    /// [`RECENT`]), as JSON text.
    pub recent: Vec<String>,
    /// The highest workflow run number, 0 when none ran.
    pub last_run: u64,
}

fn status(text: &str) -> Status {
    match text {
        "OK" => Status::Ok,
        "WARNING" => Status::Warning,
        "CRITICAL" => Status::Critical,
        _ => Status::Unknown,
    }
}

/// Reads everything healer carries on from.
pub fn load(conn: &Connection) -> rusqlite::Result<Loaded> {
    let mut loaded = Loaded::default();
    let mut issues = conn.prepare(
        "SELECT target, kind, state, severity, summary, attempts, opened_at, next_attempt_at, escalated_at, resolved_at, proposal, judging FROM issues",
    )?;
    let rows = issues.query_map([], |row| {
        let state: String = row.get(2)?;
        let severity: String = row.get(3)?;
        let mut issue = Issue::saved(
            row.get(1)?,
            State::parse(&state).unwrap_or(State::Open),
            status(&severity),
            row.get(4)?,
            row.get(5)?,
            [wall(row.get(6)?), wall(row.get(7)?)],
            [
                row.get::<_, Option<i64>>(8)?.map(wall),
                row.get::<_, Option<i64>>(9)?.map(wall),
            ],
        );
        // What does not read back is left out: the issue goes on without it.
        let json = |at: usize| row.get::<_, Option<String>>(at);
        issue.proposal = json(10)?.and_then(|body| serde_json::from_str(&body).ok());
        issue.judging = json(11)?.and_then(|body| serde_json::from_str(&body).ok());
        Ok((row.get::<_, String>(0)?, issue))
    })?;
    for row in rows {
        let (target, issue) = row?;
        loaded.issues.entry(target).or_default().push(issue);
    }
    let mut anomalies = conn.prepare(
        "SELECT name, attempts, last_run, last_report, suppressed, escalated FROM anomalies",
    )?;
    let rows = anomalies.query_map([], |row| {
        let mut state = AnomalyState::default();
        state.attempts = row.get(1)?;
        state.last_run = row.get::<_, Option<i64>>(2)?.map(wall);
        state.last_report = row.get::<_, Option<i64>>(3)?.map(wall);
        state.suppressed = u64::try_from(row.get::<_, i64>(4)?).unwrap_or(0);
        state.escalated = row.get(5)?;
        Ok((row.get::<_, String>(0)?, state))
    })?;
    loaded.anomalies = rows.collect::<rusqlite::Result<_>>()?;
    let mut acted =
        conn.prepare("SELECT fingerprint, starts_at, alertname, acted_at FROM alerts_acted")?;
    let rows = acted.query_map([], |row| {
        Ok((
            row.get::<_, String>(2)?,
            Acted {
                fingerprint: row.get(0)?,
                starts_at: row.get(1)?,
                at: wall(row.get(3)?),
            },
        ))
    })?;
    loaded.acted = rows.collect::<rusqlite::Result<_>>()?;
    let mut firing = conn.prepare("SELECT alertname, fingerprint, seen_at FROM alerts_firing")?;
    let rows = firing.query_map([], |row| Ok((row.get(0)?, row.get(1)?, wall(row.get(2)?))))?;
    loaded.firing = rows.collect::<rusqlite::Result<_>>()?;
    let mut pauses = conn.prepare("SELECT target, until, reason, since FROM pauses")?;
    let rows = pauses.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            Pause {
                until: wall(row.get(1)?),
                reason: row.get(2)?,
                since: wall(row.get(3)?),
            },
        ))
    })?;
    loaded.pauses = rows.collect::<rusqlite::Result<_>>()?;
    let mut facts = conn.prepare("SELECT body FROM facts")?;
    let rows = facts.query_map([], |row| row.get::<_, String>(0))?;
    loaded.facts = rows
        .filter_map(|body| serde_json::from_str(&body.ok()?).ok())
        .collect();
    let mut outcomes = conn.prepare("SELECT target, kind, recoverer, body FROM outcomes")?;
    let rows = outcomes.query_map([], |row| {
        Ok((
            (row.get(0)?, row.get(1)?, row.get(2)?),
            row.get::<_, String>(3)?,
        ))
    })?;
    loaded.outcomes = rows
        .filter_map(|row| {
            let (key, body) = row.ok()?;
            Some((key, serde_json::from_str(&body).ok()?))
        })
        .collect();
    loaded.plugins = plugins(conn)?;
    let mut recent = conn.prepare("SELECT body FROM events ORDER BY id DESC LIMIT ?1")?;
    let rows = recent.query_map([RECENT as i64], |row| row.get::<_, String>(0))?;
    loaded.recent = rows.collect::<rusqlite::Result<_>>()?;
    loaded.recent.reverse();
    let last: Option<i64> = conn
        .query_row(
            "SELECT value FROM counters WHERE name = 'last_run'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    loaded.last_run = last.and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
    Ok(loaded)
}

/// What is remembered of each plugin package (a row that does not read
/// back is left out).
pub fn plugins(conn: &Connection) -> rusqlite::Result<Vec<(String, PluginRecord)>> {
    let mut plugins = conn.prepare("SELECT package, body FROM plugins")?;
    let rows = plugins.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
    })?;
    Ok(rows
        .filter_map(|row| {
            let (package, body) = row.ok()?;
            Some((package, serde_json::from_str(&body).ok()?))
        })
        .collect())
}

/// Deletes history older than `keep_for` and beyond the newest
/// `keep_events` rows, and workflow runs older than `keep_for`. Returns the
/// number of rows deleted.
pub fn prune(conn: &Connection, retention: Retention) -> rusqlite::Result<usize> {
    let cutoff = ms(retention.now)
        .saturating_sub(i64::try_from(retention.keep_for.as_millis()).unwrap_or(i64::MAX));
    let keep = i64::try_from(retention.keep_events).unwrap_or(i64::MAX);
    let mut deleted = conn.execute("DELETE FROM events WHERE at < ?1", params![cutoff])?;
    deleted += conn.execute(
        "DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?1",
        params![keep],
    )?;
    deleted += conn.execute(
        "DELETE FROM runs WHERE COALESCE(finished_at, started_at, 0) < ?1",
        params![cutoff],
    )?;
    Ok(deleted)
}

/// How many events the history holds.
#[cfg(test)]
pub fn count_events(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT COUNT(*) FROM events", [], |row| {
        row.get::<_, i64>(0)
    })
    .map(|n| u64::try_from(n).unwrap_or(0))
}
