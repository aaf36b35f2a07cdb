//! Durable state in SQLite: one file, `state_dir/healer.db`, in WAL mode.
//! It keeps every issue (attempts, next attempt due, escalation), the
//! intake's storm state and Alertmanager dedup, workflow runs, and the
//! event history (with retention by age and by rows). At start, healer
//! reads it back before its first check, so a restart never hands a
//! failing service fresh attempts.
//!
//! The store is a subscriber of the event stream: it learns everything
//! from events, and its own thread writes batches in transactions. A slow
//! or full disk never delays a check. When the database cannot be written
//! (read-only, disk full, I/O error) one `store_degraded` event says so,
//! healing goes on from memory, and the store retries and catches up; a
//! corrupt file is moved aside (never deleted) and a new one started.
//!
//! Only this module speaks SQL.

mod failure;
mod projection;
pub mod schema;
mod sql;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::clock::Wall;
use crate::config::STORE_FILE_NAME;
use crate::events::{Event, Events, Record, Subscriber};
use crate::facts::Fact;
use crate::intake::{self, occurrences::REMEMBER_FOR};
use crate::issues::Issue;
use crate::ledger::{self, Outcomes};
use crate::model::{Pause, PluginRecord, StoreHealth};
use failure::Failure;
use projection::Projection;

/// How often history and runs are pruned, and stale state dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// The first wait before retrying a failed write; it doubles up to
/// [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Events arriving within this of the previous write are written together:
/// fewer, larger transactions. It is also the most a `kill -9` can lose.
const BATCH_WINDOW: Duration = Duration::from_millis(50);

/// Where the database is and how much history it keeps.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The database file.
    pub file: PathBuf,
    /// History older than this is deleted (so are workflow runs, and
    /// firing alerts not heard of for this long).
    pub keep_for: Duration,
    /// At most this many events are kept.
    pub keep_events: u64,
    /// An anomaly's storm state is forgotten when it has not been reported
    /// for this long: the intake's `stable_after`, after which it would
    /// start over anyway.
    pub forget_anomalies_after: Duration,
}

/// The state saved before a restart.
#[derive(Debug, Default)]
pub struct Saved {
    /// Issues by target (resolved ones too: the flap memory).
    pub issues: HashMap<String, Vec<Issue>>,
    /// The intake's state.
    pub intake: intake::Saved,
    /// Targets paused for maintenance (expired pauses too: the engine
    /// ends them, and says so).
    pub pauses: HashMap<String, Pause>,
    /// The facts kept (expired ones are left to the engine to drop).
    pub facts: Vec<Fact>,
    /// The ledger of outcomes.
    pub outcomes: Vec<(ledger::Key, Outcomes)>,
    /// The newest history events, oldest first.
    pub recent: Vec<Record>,
}

/// What the database in `file` remembers of each plugin package, read
/// before the store opens it for writing (healer must know a quarantine
/// before it asks a package anything). Nothing when there is no such
/// database yet, or it cannot be read as the latest schema: the store
/// says why when it opens.
pub fn remembered_plugins(file: &Path) -> HashMap<String, PluginRecord> {
    if !file.exists() {
        return HashMap::new();
    }
    let read = sql::connect_read_only(file)
        .map_err(|err| format!("{err:?}"))
        .and_then(|conn| sql::plugins(&conn).map_err(|err| err.to_string()));
    match read {
        Ok(rows) => rows.into_iter().collect(),
        Err(err) => {
            tracing::debug!(file = %file.display(), error = %err, "plugin records not read before start");
            HashMap::new()
        }
    }
}

/// The running store: its writer thread and what it has yet to write.
pub struct Store {
    shared: Arc<Shared>,
}

struct Shared {
    inner: Mutex<Inner>,
    /// History rows not yet committed (held, or in the batch being
    /// written): read without the lock by the intake, per report.
    pending: AtomicUsize,
    /// Wakes the writer: something to write, or stop.
    wake: Condvar,
    /// Wakes whoever waits for the writer to be idle.
    idle: Condvar,
}

struct Inner {
    projection: Projection,
    writing: bool,
    /// History rows in the batch being written.
    in_flight: usize,
    /// Batches committed so far: what a stop watches for progress.
    committed: u64,
    degraded: bool,
    stop: bool,
    /// The writer has stopped and closed the database (released its lock).
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes how many history rows are not yet committed (under the lock).
    fn count_pending(&self, inner: &Inner) {
        self.pending.store(
            inner.projection.pending() + inner.in_flight,
            Ordering::Relaxed,
        );
    }
}

impl Store {
    /// Opens the database (creating, migrating, or moving a corrupt one
    /// aside), reads the saved state and starts the writer thread. Never
    /// fails: a database that cannot be used costs an event, and healer
    /// runs from memory while the store keeps trying.
    pub fn open(settings: Settings, events: Events) -> (Store, Saved) {
        let Opened {
            conn,
            loaded,
            degraded,
        } = open_and_load(&settings.file, &events);
        let mut projection = Projection::default();
        let mut saved = Saved::default();
        match loaded {
            Some(loaded) => {
                for (target, issues) in loaded.issues {
                    for issue in &issues {
                        projection
                            .issues
                            .load((target.clone(), issue.kind.clone()), issue.clone());
                    }
                    saved.issues.insert(target, issues);
                }
                for (name, state) in &loaded.anomalies {
                    projection.anomalies.load(name.clone(), state.clone());
                }
                for (alertname, acted) in &loaded.acted {
                    projection.acted.load(
                        (acted.fingerprint.clone(), acted.starts_at.clone()),
                        (alertname.clone(), acted.at),
                    );
                }
                for (alertname, fingerprint, since) in &loaded.firing {
                    projection
                        .firing
                        .load((alertname.clone(), fingerprint.clone()), *since);
                }
                for (target, pause) in &loaded.pauses {
                    projection.pauses.load(target.clone(), pause.clone());
                }
                saved.pauses = loaded.pauses.into_iter().collect();
                for fact in &loaded.facts {
                    projection.facts.load(fact.name(), fact.clone());
                }
                saved.facts = loaded.facts;
                for (key, row) in &loaded.outcomes {
                    projection.outcomes.load(key.clone(), row.clone());
                }
                saved.outcomes = loaded.outcomes;
                // Read again only to count on from (the daemon reads them
                // before the store opens: `remembered_plugins`).
                for (package, record) in loaded.plugins {
                    projection.plugins.load(package, record);
                }
                saved.recent = loaded
                    .recent
                    .iter()
                    .filter_map(|body| serde_json::from_str(body).ok())
                    .collect();
                saved.intake = intake::Saved {
                    anomalies: loaded.anomalies,
                    acted: loaded.acted.into_iter().map(|(_, acted)| acted).collect(),
                    firing: loaded.firing,
                    last_run: Some(loaded.last_run),
                };
            }
            None => saved.intake.last_run = None,
        }
        let shared = Arc::new(Shared {
            pending: AtomicUsize::new(0),
            inner: Mutex::new(Inner {
                projection,
                writing: false,
                in_flight: 0,
                committed: 0,
                degraded: degraded.is_some(),
                stop: false,
                closed: false,
            }),
            wake: Condvar::new(),
            idle: Condvar::new(),
        });
        let writer = Writer {
            shared: Arc::clone(&shared),
            settings,
            events,
            conn,
            degraded,
            last_write: Instant::now(),
        };
        let spawned = std::thread::Builder::new()
            .name("healer-store".into())
            .spawn(move || writer.run());
        if let Err(err) = spawned {
            tracing::error!(error = %err, "cannot start the store's writer thread; state is kept in memory only");
            shared.lock().closed = true;
        }
        (Store { shared }, saved)
    }

    /// The subscriber that feeds the store from the event stream.
    pub fn subscriber(&self) -> Box<dyn Subscriber> {
        Box::new(Projector(Arc::clone(&self.shared)))
    }

    /// How the store stands, for `/healthz` and `/metrics`.
    pub fn health(&self) -> Arc<dyn StoreHealth> {
        Arc::new(Health(Arc::clone(&self.shared)))
    }
}

/// The store's health as its readers see it ([`StoreHealth`]).
struct Health(Arc<Shared>);

impl StoreHealth for Health {
    fn degraded(&self) -> bool {
        let inner = self.0.lock();
        inner.degraded || inner.closed
    }

    fn pending(&self) -> usize {
        self.0.pending.load(Ordering::Relaxed)
    }

    fn lag(&self) -> Duration {
        let oldest = self.0.lock().projection.oldest_pending();
        oldest.map_or(Duration::ZERO, |at| Wall::now().since(at))
    }
}

/// The database as opened at start.
struct Opened {
    /// The connection; none when the database cannot be written.
    conn: Option<Connection>,
    /// The saved state; none when it could not be read.
    loaded: Option<sql::Loaded>,
    /// Why the store is degraded, when it is.
    degraded: Option<String>,
}

/// Opens and reads the database, moving a corrupt one aside. Returns the
/// connection (none when it cannot be written), the saved state (none when
/// it could not be read) and the cause when degraded; emits at most one
/// event of each kind.
fn open_and_load(file: &Path, events: &Events) -> Opened {
    if let Some(dir) = file.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let opened = sql::connect(file).and_then(|conn| {
        let loaded = sql::load(&conn)?;
        Ok((conn, loaded))
    });
    let failure = match opened {
        Ok((conn, loaded)) => {
            return Opened {
                conn: Some(conn),
                loaded: Some(loaded),
                degraded: None,
            }
        }
        Err(err) => failure::classify(err, file),
    };
    let (error, loaded) = match failure {
        Failure::Corrupt(error) => match move_aside(file, &error, events) {
            Ok(()) => match sql::connect(file) {
                // The old state is in the moved file; run numbers must not
                // collide with the old runs, so they are not known.
                Ok(conn) => {
                    return Opened {
                        conn: Some(conn),
                        loaded: None,
                        degraded: None,
                    }
                }
                Err(err) => (failure::classify(err, file).message().to_owned(), None),
            },
            Err(error) => (error, None),
        },
        Failure::Newer(error) => (error, None),
        Failure::Unavailable(error) => {
            // Read what can be read, so a restart still carries on.
            let loaded = sql::connect_read_only(file)
                .ok()
                .and_then(|conn| sql::load(&conn).ok())
                .or_else(|| read_a_copy(file));
            (error, loaded)
        }
    };
    let said = match &loaded {
        Some(_) => format!("{error}; the saved state was read, and healer carries on from it"),
        None => format!("{error}; no saved state could be read, so healer starts from nothing"),
    };
    degrade(file, &said, events);
    Opened {
        conn: None,
        loaded,
        degraded: Some(error),
    }
}

/// Reads the saved state from a copy of the database (and its write-ahead
/// log) in the temporary directory: SQLite cannot read a WAL database in a
/// directory where it may not create its index (a read-only file system),
/// but a copy it can.
fn read_a_copy(file: &Path) -> Option<sql::Loaded> {
    let dir = std::env::temp_dir().join(format!("healer-state-{}", std::process::id()));
    let copy = dir.join(STORE_FILE_NAME);
    let read = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::copy(file, &copy))
        .ok()
        .and_then(|_| {
            let wal = failure::with_suffix(file, "-wal");
            if wal.exists() {
                std::fs::copy(&wal, failure::with_suffix(&copy, "-wal")).ok()?;
            }
            let conn = sql::connect(&copy).ok()?;
            sql::load(&conn).ok()
        });
    let _ = std::fs::remove_dir_all(&dir);
    read
}

fn degrade(file: &Path, error: &str, events: &Events) {
    events.emit(Event::StoreDegraded {
        file: file.to_owned(),
        error: error.to_owned(),
    });
}

/// Moves a corrupt database aside (with an event); the reason when it
/// cannot be.
fn move_aside(file: &Path, error: &str, events: &Events) -> Result<(), String> {
    match failure::move_aside(file) {
        Ok(moved_to) => {
            events.emit(Event::StoreMovedAside {
                file: file.to_owned(),
                moved_to,
                error: error.to_owned(),
            });
            Ok(())
        }
        Err(err) => Err(format!("{error}; moving it aside failed: {err}")),
    }
}

/// The lock that makes one healer the only one on a `state_dir`; held
/// until dropped (or the process ends, however it ends).
pub struct StateLock {
    _held: Option<nix::fcntl::Flock<std::fs::File>>,
}

/// Locks `state_dir` for this healer (`state_dir/healer.lock`, holding its
/// pid). Fails only when another healer holds it; a lock file that cannot
/// be created (a read-only or full disk) costs a warning, and the store
/// reports what it cannot do itself.
pub fn lock_state_dir(dir: &Path) -> Result<StateLock, String> {
    use nix::fcntl::{Flock, FlockArg};
    use std::io::{Read, Seek, Write};
    let path = dir.join("healer.lock");
    let opened = std::fs::create_dir_all(dir).and_then(|()| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
    });
    let file = match opened {
        Ok(file) => file,
        Err(err) => {
            tracing::warn!(file = %path.display(), error = %err, "cannot create the state lock; another healer on this state_dir would not be noticed");
            return Ok(StateLock { _held: None });
        }
    };
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut locked) => {
            let _ = locked.set_len(0);
            let _ = locked.rewind();
            let _ = write!(locked, "{}", std::process::id());
            Ok(StateLock {
                _held: Some(locked),
            })
        }
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            Err(format!(
                "{}: in use by another healer (pid {}); stop it, or give this one its own [healer] state_dir",
                dir.display(),
                pid.trim()
            ))
        }
        Err((_, err)) => {
            tracing::warn!(file = %path.display(), error = %err, "cannot lock the state directory; another healer on this state_dir would not be noticed");
            Ok(StateLock { _held: None })
        }
    }
}

/// The subscriber side: takes events into the projection, wakes the writer.
struct Projector(Arc<Shared>);

impl Subscriber for Projector {
    fn deliver(&mut self, record: &Record) {
        let mut inner = self.0.lock();
        let was_clean = inner.projection.is_clean();
        inner.projection.apply(record);
        self.0.count_pending(&inner);
        if was_clean && !inner.projection.is_clean() {
            self.0.wake.notify_one();
        }
    }

    /// Waits until everything delivered is written (or the database turns
    /// out not to be writable), within `limit`; whether it was written.
    fn sync(&mut self, limit: Duration) -> bool {
        let written = |inner: &Inner| !inner.writing && inner.projection.is_clean();
        let inner = self.wait(limit, false, |inner| inner.degraded || written(inner));
        !inner.degraded && written(&inner)
    }

    /// Writes what is left (unless the database cannot be written) and
    /// closes it. However much is left, it waits while batches commit, and
    /// gives up once none has for `stall`.
    fn finish(&mut self, stall: Duration) {
        let mut committed = self.0.lock().committed;
        loop {
            let inner = self.wait(stall, true, |inner| {
                inner.closed || inner.committed != committed
            });
            if inner.closed || inner.committed == committed {
                break;
            }
            committed = inner.committed;
        }
        // What could not be written is said, once: healer stops anyway.
        let lost = self.0.pending.load(Ordering::Relaxed);
        if lost > 0 {
            tracing::error!(
                lost,
                "the store could not write {lost} events before healer stopped (see store_degraded); they are lost"
            );
        }
    }
}

impl Projector {
    /// Wakes the writer (asking it to stop, with `stop`) and waits at most
    /// `limit` until `done`.
    fn wait(
        &self,
        limit: Duration,
        stop: bool,
        done: impl Fn(&Inner) -> bool,
    ) -> MutexGuard<'_, Inner> {
        let deadline = Instant::now() + limit;
        let mut inner = self.0.lock();
        inner.stop |= stop;
        self.0.wake.notify_one();
        while !done(&inner) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            inner = self
                .0
                .idle
                .wait_timeout(inner, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        inner
    }
}

/// The writer thread.
struct Writer {
    shared: Arc<Shared>,
    settings: Settings,
    events: Events,
    conn: Option<Connection>,
    /// Why the database cannot be written, while it cannot.
    degraded: Option<String>,
    /// When the last batch was taken.
    last_write: Instant,
}

/// Says the writer has closed the database when it ends, by returning or
/// by a panic, so `finish` never waits for a writer that is gone.
struct Closed(Arc<Shared>);

impl Drop for Closed {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.idle.notify_all();
    }
}

impl Writer {
    /// Writes until stopped, then closes the database and says so.
    fn run(mut self) {
        let _closed = Closed(Arc::clone(&self.shared));
        self.serve();
        drop(self.conn.take());
    }

    fn serve(&mut self) {
        let mut next_prune = Instant::now();
        let mut retry = RETRY_FIRST;
        loop {
            let prune = Instant::now() >= next_prune;
            let Some(batch) = self.next_batch(next_prune) else {
                return;
            };
            let now = Wall::now();
            let rows = batch.rows();
            let written = self.write(&batch, prune.then_some(now));
            if written.is_err() {
                // Closing may checkpoint (disk I/O): not under the lock the
                // event dispatcher needs.
                self.conn = None;
            }
            let mut inner = self.shared.lock();
            inner.writing = false;
            inner.in_flight = 0;
            match written {
                Ok(()) => {
                    inner.committed += 1;
                    self.shared.count_pending(&inner);
                    if prune {
                        next_prune = Instant::now() + PRUNE_EVERY;
                    }
                    retry = RETRY_FIRST;
                    inner.degraded = false;
                    let dropped = std::mem::take(&mut inner.projection.dropped);
                    if self.degraded.take().is_some() {
                        self.events.emit(Event::StoreRecovered {
                            file: self.settings.file.clone(),
                            written: rows,
                            dropped,
                        });
                    } else if dropped > 0 {
                        // Writing works, but events came faster than it for
                        // long enough to fill the memory kept for them.
                        let error = format!(
                            "fell behind: the {dropped} oldest events waiting to be written were dropped from the history (at most {} wait)",
                            projection::MAX_PENDING
                        );
                        degrade(&self.settings.file, &error, &self.events);
                        self.degraded = Some(error);
                    }
                    self.shared.idle.notify_all();
                }
                Err(failure) => {
                    inner.projection.give_back(batch);
                    self.shared.count_pending(&inner);
                    let mut failure = failure;
                    if let Failure::Corrupt(error) = &failure {
                        match move_aside(&self.settings.file, error, &self.events) {
                            Ok(()) => {
                                inner.projection.rewrite_all();
                                continue;
                            }
                            Err(error) => failure = Failure::Unavailable(error),
                        }
                    }
                    // One event per outage, not one per retry.
                    if self.degraded.is_none() {
                        degrade(&self.settings.file, failure.message(), &self.events);
                    }
                    self.degraded = Some(failure.message().to_owned());
                    inner.degraded = true;
                    self.shared.idle.notify_all();
                    if inner.stop {
                        return;
                    }
                    // Wait before retrying; a stop request cuts it short.
                    let _ = self
                        .shared
                        .wake
                        .wait_timeout_while(inner, retry, |inner| !inner.stop)
                        .unwrap_or_else(|p| p.into_inner());
                    retry = (retry * 2).min(RETRY_MAX);
                }
            }
        }
    }

    /// Waits for something to write (or the time to prune) and takes it;
    /// `None` once stopping with nothing left.
    fn next_batch(&mut self, next_prune: Instant) -> Option<projection::Batch> {
        let mut inner = self.shared.lock();
        loop {
            if !inner.projection.is_clean() {
                break;
            }
            if inner.stop {
                self.shared.idle.notify_all();
                return None;
            }
            let now = Instant::now();
            if now >= next_prune {
                break;
            }
            inner = self
                .shared
                .wake
                .wait_timeout(inner, next_prune - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        // Gather what comes within the batch window into one transaction
        // (a stop request writes at once).
        let gather_until = self.last_write + BATCH_WINDOW;
        let now = Instant::now();
        if now < gather_until && !inner.stop {
            inner = self
                .shared
                .wake
                .wait_timeout_while(inner, gather_until - now, |inner| !inner.stop)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        self.last_write = Instant::now();
        if Instant::now() >= next_prune {
            let now = Wall::now();
            let keep_for = self.settings.keep_for;
            let forget = self.settings.forget_anomalies_after;
            inner
                .projection
                .anomalies
                .prune(|state| state.last_report.is_none_or(|at| now.since(at) >= forget));
            inner
                .projection
                .acted
                .prune(|(_, at)| now.since(*at) >= REMEMBER_FOR);
            inner
                .projection
                .firing
                .prune(|seen_at| now.since(*seen_at) >= keep_for);
            // A pause ends by itself; one of a target no longer configured
            // is never ended by the engine.
            inner.projection.pauses.prune(|pause| !pause.holds(now));
            // Facts are not pruned by their expiry here: the store keeps a
            // fact as last changed, not as last refreshed; the engine says
            // when one expires (`fact_expired`), and that removes it.
        }
        inner.writing = true;
        let batch = inner.projection.take();
        inner.in_flight = batch.history.len();
        Some(batch)
    }

    /// Writes one batch (and applies the retention when `prune` says when
    /// it is).
    fn write(&mut self, batch: &projection::Batch, prune: Option<Wall>) -> Result<(), Failure> {
        let file = self.settings.file.clone();
        let classify = |err: rusqlite::Error| failure::classify(err.into(), &file);
        if self.conn.is_none() {
            if let Some(dir) = file.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            self.conn = Some(sql::connect(&file).map_err(|err| failure::classify(err, &file))?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        let retention = prune.map(|now| sql::Retention {
            keep_for: self.settings.keep_for,
            keep_events: self.settings.keep_events,
            now,
        });
        match sql::write(conn, batch, retention) {
            Ok(()) => Ok(()),
            // Deleting old history can wait; writing the batch cannot.
            Err(err) if retention.is_some() => {
                sql::write(conn, batch, None).map_err(classify)?;
                tracing::error!(
                    file = %file.display(),
                    error = %err,
                    "store: deleting old history failed; events are still written, and the history grows until it works"
                );
                Ok(())
            }
            Err(err) => Err(classify(err)),
        }
    }
}

#[cfg(test)]
mod tests;
