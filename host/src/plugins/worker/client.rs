//! A package served by `healer worker` processes, one at a time: the
//! client of its socketpair (calls numbered and matched with their
//! answers, instances created again in each new worker), and the
//! supervision of its worker, put together from its sibling modules.
//!
//! The worker is started on first use ([`super::child`]) and again, after
//! a capped backoff, on the first use after it ended. It ends (and is
//! killed, with its whole process group) when it exits or is killed by a
//! signal, closes its socket, sends something that is not a message, or
//! misses its heartbeat ([`super::watch`]). Every call in flight then ends
//! as an error naming the reason ("plugin worker crashed in libfoo.so:
//! killed by SIGSEGV"), which the engine records as UNKNOWN; just before,
//! the engine is told the worker ended ([`WhenWorkerEnds`]), and takes
//! back every fact the package's plugins published. After
//! `crash_limit` crashes within `crash_window` the package is quarantined:
//! its calls fail at once until its file changes (and probes clean again)
//! or healer restarts. When a worker may start, and when the package is
//! quarantined, is the [`super::supervisor`]'s to say; this module asks
//! it, and tells it every crash.
//!
//! A worker starts in its package's sandbox (see [`super::sandbox`]), is
//! tracked from spawn to reap (see [`crate::plugins::children`]: the
//! reaper leaves it alone, and its process group is killed before it is
//! reaped), gets what healer sends it through a bounded outbox (see
//! [`super::outbox`]: a worker that leaves it unread for `stuck_after` is
//! stuck, like one that misses its heartbeat), and has what it prints
//! relayed to healer's log at a limited rate (see [`super::output`]).
//!
//! Instances are numbered by healer and created in the worker on first
//! use; after a restart each is created again, from the config it was
//! created with, on its next call. A push monitor's pushes flow back on
//! the socket, and its `next_push` waits across a restart.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use healer_plugin_sdk::ffi::{Declared, PluginKind};
use healer_plugin_sdk::{Duration as HumanDuration, Observation, Outcome, Recovery};
use tokio::net::unix::OwnedReadHalf;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

use super::assignment::Assignment;
use super::child::{self, Started, Worker};
use super::conn::{findings, observed, Conn, Open, Watcher};
use super::outbox::{self, Outbox};
use super::output::Allowance;
use super::probe::{probe_all, ToProbe, PROBE_WITHIN};
use super::supervisor::{Crash, Start, Supervisor};
use super::watch::watch;
use super::wire::{self, Answer, Call, Observe, Seen, ToWorker, Watch};
use crate::config::{PackagePolicy, Sandbox, WorkerLimits};
use crate::events::{Event, Events};
use crate::model::PluginRecord;
use crate::plugins::bounds::Findings;
use crate::plugins::identity::Identity;
use crate::plugins::lock::lock;
use crate::plugins::package::{
    Backend, Instance, Observed, Observing, Pending, Placed, Watching, WhenWorkerEnds,
    WorkerHealth, WorkerId,
};

/// How long creating an instance (or checking a config) in a worker may
/// take: a constructor that never returns fails the call, not the target.
const CREATE_WITHIN: Duration = Duration::from_secs(10);

/// Observations a monitor may push ahead of healer (as in-process).
const PUSH_BACKLOG: usize = 64;

/// A package served by worker processes, one at a time.
pub struct Remote {
    /// Which worker it is, to its instances.
    id: WorkerId,
    /// The file name in the plugins directory, as messages name it.
    name: String,
    /// The file in the plugins directory.
    shown: PathBuf,
    /// The checked file the worker loads (the symlink's target).
    target: PathBuf,
    /// healer's own binary.
    exe: PathBuf,
    /// The sha256 the config pins the file to.
    pin: Option<String>,
    limits: WorkerLimits,
    /// What its workers confine themselves to.
    sandbox: Sandbox,
    /// Variables of healer's environment its workers are handed.
    env: Vec<String>,
    /// How much its workers may print to healer's log.
    allowance: Arc<Allowance>,
    state: Mutex<State>,
    /// Wakes push monitors waiting for a worker to come back.
    restarted: Notify,
    ids: AtomicU64,
    events: OnceLock<Events>,
    /// Told at once when a worker that ran ends.
    ends: OnceLock<WhenWorkerEnds>,
    me: Weak<Remote>,
}

struct State {
    /// The file as last probed clean.
    identity: Identity,
    conn: Option<Arc<Conn>>,
    /// Workers started so far.
    generation: u64,
    /// When the next may start, after what crashed.
    supervisor: Supervisor,
    /// Crashes ever, counted on from what the store remembered.
    crashes: u64,
}

impl Remote {
    /// A package to be served from `target` (checked and probed clean as
    /// `identity`), shown as `shown`, by workers of the binary `exe`.
    pub fn new(
        shown: &Path,
        target: &Path,
        identity: Identity,
        exe: &Path,
        policy: &PackagePolicy,
    ) -> Arc<Remote> {
        let name = shown.file_name().map_or_else(
            || shown.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        Arc::new_cyclic(|me| Remote {
            id: WorkerId::fresh(),
            state: Mutex::new(State {
                identity,
                conn: None,
                generation: 0,
                supervisor: Supervisor::new(&name, &policy.limits),
                crashes: 0,
            }),
            name,
            shown: shown.to_owned(),
            target: target.to_owned(),
            exe: exe.to_owned(),
            pin: policy.sha256.clone(),
            limits: policy.limits,
            sandbox: policy.sandbox.clone(),
            env: policy.env.clone(),
            allowance: Allowance::new(),
            restarted: Notify::new(),
            ids: AtomicU64::new(1),
            events: OnceLock::new(),
            ends: OnceLock::new(),
            me: me.clone(),
        })
    }

    fn emit(&self, event: Event) {
        match self.events.get() {
            Some(events) => events.emit(event),
            None => tracing::warn!(event = event.name(), package = %self.name, "plugin worker"),
        }
    }

    fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// The running worker, started if it is due.
    fn connection(&self) -> Result<Arc<Conn>, String> {
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        if let Some(conn) = &state.conn {
            return Ok(Arc::clone(conn));
        }
        let file_changed = || !state.identity.still_at(&self.target);
        match state.supervisor.start(Instant::now(), file_changed) {
            Start::Now => {}
            Start::Refused(why) => return Err(why),
            Start::Reprobe(why) => {
                // The file changed since: probe the new one, once, in the
                // background (a caller that gives up does not cancel it).
                if let Some(me) = self.me.upgrade() {
                    tokio::spawn(async move { me.reprobe().await });
                }
                return Err(why);
            }
        }
        match self.start(state) {
            Ok(conn) => Ok(conn),
            Err(err) => {
                // As a crash: no new attempt before the backoff.
                drop(guard);
                self.record_crash(None, err.clone());
                Err(err)
            }
        }
    }

    /// Probes the file again after it changed; lifts the quarantine when it
    /// probes clean (and matches its pin, if it has one).
    async fn reprobe(&self) {
        let exe = self.exe.clone();
        let probing = ToProbe {
            file: self.target.clone(),
            sandbox: self.sandbox.clone(),
            env: self.env.clone(),
        };
        let verdict = tokio::task::spawn_blocking(move || {
            probe_all(&exe, std::slice::from_ref(&probing), PROBE_WITHIN).pop()
        })
        .await
        .ok()
        .flatten();
        let refused = match verdict {
            Some(Ok(probed)) => match &self.pin {
                Some(pin) if !probed.identity.sha256.eq_ignore_ascii_case(pin) => format!(
                    "its sha256 is {}, but the config pins {pin}",
                    probed.identity.sha256
                ),
                _ => {
                    let mut state = lock(&self.state);
                    state.identity = probed.identity;
                    state.supervisor.reprobed_clean();
                    drop(state);
                    self.emit(Event::PluginQuarantineLifted {
                        package: self.name.clone(),
                        file: self.shown.clone(),
                        how: "its file changed and probed clean".to_owned(),
                    });
                    return;
                }
            },
            Some(Err(refusal)) => refusal.reason,
            None => "its probe did not answer".to_owned(),
        };
        let mut state = lock(&self.state);
        // Remember this file, so it is probed again only once it changes
        // again.
        state.identity.restat(&self.target);
        state.supervisor.reprobe_refused(&refused);
    }

    /// Starts a worker; called with the state locked and no worker running.
    fn start(&self, state: &mut State) -> Result<Arc<Conn>, String> {
        let assignment = Assignment {
            file: self.target.clone(),
            identity: state.identity.clone(),
            shown_as: self.shown.clone(),
            sandbox: self.sandbox.clone(),
        };
        let Started {
            worker,
            socket,
            pid,
        } = child::spawn(
            &self.exe,
            &self.name,
            &self.env,
            self.limits.memory,
            &self.allowance,
            &assignment,
        )?;
        let (read, write) = socket.into_split();
        let (out, frames) = Outbox::new(outbox::BUDGET);
        state.generation += 1;
        let conn = Arc::new(Conn {
            generation: state.generation,
            pid,
            out,
            open: Mutex::new(Open::default()),
            stop: Notify::new(),
        });
        tokio::spawn(outbox::write(write, frames));
        let frames = FramedRead::new(read, wire::codec());
        tokio::spawn(supervise(
            self.me.clone(),
            self.limits.stuck_after,
            Arc::clone(&conn),
            worker,
            frames,
        ));
        state.conn = Some(Arc::clone(&conn));
        if state.generation > 1 {
            self.emit(Event::PluginWorkerRestarted {
                package: self.name.clone(),
                file: self.shown.clone(),
                pid,
            });
        }
        self.restarted.notify_waiters();
        Ok(conn)
    }
}

impl Remote {
    /// An operator lifts this worker's quarantine (said by
    /// [`Remote::announce_lift`]).
    pub(super) fn lift(&self) -> Result<(), String> {
        let mut state = lock(&self.state);
        state.supervisor.lift()?;
        drop(state);
        self.restarted.notify_waiters();
        Ok(())
    }

    /// Says that an operator lifted the quarantine.
    pub(super) fn announce_lift(&self) {
        self.emit(Event::PluginQuarantineLifted {
            package: self.name.clone(),
            file: self.shown.clone(),
            how: "an operator lifted it".to_owned(),
        });
    }
}

/// Watches the worker until it ends, or until its package is no longer
/// used; then ends it, and records the crash if it was one.
async fn supervise(
    remote: Weak<Remote>,
    stuck_after: Duration,
    conn: Arc<Conn>,
    worker: Worker,
    frames: FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
) {
    let ending = watch(stuck_after, &conn, &worker.exit, frames).await;
    let reason = worker.end(ending).await;
    match remote.upgrade() {
        Some(remote) if !reason.is_empty() => remote.record_crash(Some(&conn), reason),
        _ => {
            conn.end("plugin worker stopped: its package is no longer used");
        }
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        if let Some(conn) = &lock(&self.state).conn {
            conn.stop.notify_one();
        }
    }
}

impl Remote {
    /// Records a crash (of `conn`, or of a worker that did not start): the
    /// worker is gone, its calls fail, and the package is quarantined if
    /// it crashed too often.
    fn record_crash(&self, conn: Option<&Conn>, reason: String) {
        let window = self.limits.crash_window;
        let (
            Crash {
                crashes,
                quarantined,
            },
            sha256,
        ) = {
            let mut state = lock(&self.state);
            if let (Some(ours), Some(conn)) = (&state.conn, conn) {
                if ours.generation == conn.generation {
                    state.conn = None;
                }
            }
            state.crashes += 1;
            let crash = state.supervisor.crashed(Instant::now(), &reason);
            (crash, state.identity.sha256.clone())
        };
        // What the worker vouched for goes before its calls in flight fail
        // (a failed check would take back its monitor's facts as UNKNOWN).
        if let (Some(_), Some(ends)) = (conn, self.ends.get()) {
            ends(&self.name);
        }
        let message = format!("plugin worker crashed in {}: {reason}", self.name);
        let in_flight = conn.map_or(0, |conn| conn.end(&message));
        self.emit(Event::PluginWorkerCrashed {
            package: self.name.clone(),
            file: self.shown.clone(),
            reason: reason.clone(),
            in_flight,
            crashes,
            within: HumanDuration(window),
        });
        if quarantined {
            self.emit(Event::PluginQuarantined {
                package: self.name.clone(),
                file: self.shown.clone(),
                crashes,
                within: HumanDuration(window),
                reason,
                sha256,
            });
        }
        self.restarted.notify_waiters();
    }

    /// Waits until a worker may be started again (or one was).
    async fn until_retry(&self) {
        let wait = lock(&self.state).supervisor.retry_in(Instant::now());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = self.restarted.notified() => {}
        }
    }

    /// Makes one call on `conn` and waits for its answer.
    async fn call_on(&self, conn: &Conn, call: Call) -> Result<Answer, String> {
        let id = self.next_id();
        let frame = wire::encode(&ToWorker::Call { id, call });
        wire::fits(&frame)?;
        let (sender, answer) = oneshot::channel();
        {
            let mut open = lock(&conn.open);
            if let Some(ended) = &open.ended {
                return Err(ended.clone());
            }
            open.calls.insert(id, sender);
        }
        let mut waiting = Waiting {
            conn,
            id,
            answered: false,
        };
        if let Err(full) = conn.out.send(frame) {
            // Never sent: nothing to cancel in the worker.
            waiting.answered = true;
            lock(&conn.open).calls.remove(&id);
            return Err(format!(
                "plugin worker for {} is not reading what healer sends it ({} bytes wait); the call is refused",
                self.name, full.waiting
            ));
        }
        let answer = answer.await;
        waiting.answered = true;
        answer.unwrap_or_else(|_| Err(format!("plugin worker for {} went away", self.name)))
    }
}

/// An instance being created in a worker: unless it was, its push stream
/// is removed and the worker told to drop whatever it made of it.
struct Creating<'a> {
    conn: &'a Conn,
    id: u64,
    created: bool,
}

impl Drop for Creating<'_> {
    fn drop(&mut self) {
        if !self.created {
            lock(&self.conn.open).pushes.remove(&self.id);
            let _ = self.conn.send(&ToWorker::Drop { instance: self.id });
        }
    }
}

/// A call healer waits for: if healer stops waiting (the call timed out),
/// the worker is told to drop it.
struct Waiting<'a> {
    conn: &'a Conn,
    id: u64,
    answered: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.answered {
            lock(&self.conn.open).calls.remove(&self.id);
            let _ = self.conn.send(&ToWorker::Cancel { id: self.id });
        }
    }
}

impl Backend for Remote {
    fn check_config<'a>(
        &'a self,
        kind: PluginKind,
        name: &'a str,
        config: &'a str,
    ) -> Pending<'a, Result<Declared, String>> {
        Box::pin(async move {
            // A quarantined package's code does not run, not even to check
            // a config: its plugins are taken as declaring nothing, and
            // their targets are UNKNOWN until the quarantine is lifted.
            if let Some(why) = lock(&self.state).supervisor.quarantined() {
                tracing::warn!(package = %self.name, plugin = %name, "config not checked: {why}");
                return Ok(Declared::default());
            }
            let conn = self.connection()?;
            let call = Call::CheckConfig {
                kind: kind.into(),
                name: name.to_owned(),
                config: config.to_owned(),
            };
            let answer = tokio::time::timeout(CREATE_WITHIN, self.call_on(&conn, call))
                .await
                .map_err(|_| {
                    format!(
                        "the plugin did not check its config within {}",
                        humantime::format_duration(CREATE_WITHIN)
                    )
                })??;
            match answer {
                // Valid, and nothing declared.
                Answer::Done => Ok(Declared::default()),
                Answer::Declared {
                    kinds,
                    own_timeout_ms,
                } => Ok(Declared {
                    kinds,
                    own_timeout_ms,
                }),
                other => Err(format!(
                    "the plugin worker answered a config check with {}",
                    other.kind()
                )),
            }
        })
    }

    fn create<'a>(
        &'a self,
        kind: PluginKind,
        name: &'a str,
        config: &'a str,
    ) -> Pending<'a, Result<Box<dyn Instance>, String>> {
        Box::pin(async move {
            let remote = self
                .me
                .upgrade()
                .ok_or_else(|| "the plugin package was unloaded".to_owned())?;
            let instance = RemoteInstance {
                remote,
                kind,
                name: name.to_owned(),
                config: config.to_owned(),
                placed: tokio::sync::Mutex::new(None),
                last_placed: Mutex::new(None),
                fresh: Mutex::new(None),
                pushed: tokio::sync::Mutex::new(None),
            };
            // A quarantined package's instance is made where it will live
            // once the quarantine is lifted: until then its calls fail
            // (UNKNOWN), and healer runs on.
            let quarantined = lock(&self.state).supervisor.quarantined().is_some();
            if !quarantined {
                instance.place().await?;
            }
            Ok(Box::new(instance) as Box<dyn Instance>)
        })
    }

    fn heartbeat(&self) -> Pending<'_, Result<(), String>> {
        Box::pin(async move { self.connection().map(drop) })
    }

    fn report_to(&self, events: &Events) {
        let _ = self.events.set(events.clone());
    }

    fn when_worker_ends(&self, hook: &WhenWorkerEnds) {
        let _ = self.ends.set(Arc::clone(hook));
    }

    fn health(&self) -> Option<WorkerHealth> {
        let state = lock(&self.state);
        Some(WorkerHealth {
            pid: state.conn.as_ref().map(|conn| conn.pid),
            started: state.generation,
            recent_crashes: state.supervisor.recent_crashes(),
            last_crash: state.supervisor.last_crash().map(str::to_owned),
            quarantined: state.supervisor.quarantined().map(str::to_owned),
            crashes: state.crashes,
            pids: Vec::new(),
        })
    }

    fn remember(&self, record: &PluginRecord) {
        let mut state = lock(&self.state);
        state.crashes = state.crashes.max(record.crashes);
        let Some(quarantine) = &record.quarantine else {
            return;
        };
        // Of this very file only: a replaced file is tried again.
        if !quarantine
            .sha256
            .eq_ignore_ascii_case(&state.identity.sha256)
        {
            return;
        }
        state
            .supervisor
            .remember_quarantine(quarantine.reason.clone());
        // A worker started to check the config before this was known
        // serves nothing more.
        if let Some(conn) = state.conn.take() {
            conn.stop.notify_one();
        }
    }

    fn lift_quarantine(&self) -> Result<(), String> {
        self.lift()?;
        self.announce_lift();
        Ok(())
    }
}

/// An instance in a worker, created again in each new worker.
struct RemoteInstance {
    remote: Arc<Remote>,
    kind: PluginKind,
    name: String,
    config: String,
    /// Where it exists now.
    placed: tokio::sync::Mutex<Option<Placed>>,
    /// The same, readable while a placement is under way (which holds
    /// `placed`): what is unwatched or dropped is never skipped.
    last_placed: Mutex<Option<Placed>>,
    /// The push stream of its newest placement, not yet taken by
    /// `next_push`.
    fresh: Mutex<Option<mpsc::Receiver<Option<Box<Observation>>>>>,
    /// The push stream `next_push` reads.
    pushed: tokio::sync::Mutex<Option<mpsc::Receiver<Option<Box<Observation>>>>>,
}

impl RemoteInstance {
    /// The running worker and this instance's number in it, creating the
    /// instance there first if this worker has not seen it.
    async fn place(&self) -> Result<(Arc<Conn>, u64), String> {
        let mut placed = self.placed.lock().await;
        let conn = self.remote.connection()?;
        if let Some(Placed {
            generation,
            instance,
        }) = *placed
        {
            if generation == conn.generation {
                return Ok((conn, instance));
            }
        }
        let id = self.remote.next_id();
        // Registered before the worker creates it: a monitor may push from
        // its `watch` at once. Undone unless the creation succeeds.
        let mut pushes = None;
        if self.kind == PluginKind::Monitor {
            let (sender, receiver) = mpsc::channel(PUSH_BACKLOG);
            lock(&conn.open).pushes.insert(id, sender);
            pushes = Some(receiver);
        }
        let mut creating = Creating {
            conn: &conn,
            id,
            created: false,
        };
        let call = Call::Create {
            instance: id,
            kind: self.kind.into(),
            name: self.name.clone(),
            config: self.config.clone(),
        };
        let created = tokio::time::timeout(CREATE_WITHIN, self.remote.call_on(&conn, call)).await;
        match created {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => return Err(err),
            Err(_) => {
                return Err(format!(
                    "the plugin's constructor did not return within {}",
                    humantime::format_duration(CREATE_WITHIN)
                ))
            }
        }
        creating.created = true;
        drop(creating);
        if let Some(receiver) = pushes {
            *lock(&self.fresh) = Some(receiver);
        }
        *placed = Some(Placed {
            generation: conn.generation,
            instance: id,
        });
        *lock(&self.last_placed) = *placed;
        Ok((conn, id))
    }

    async fn call(&self, call: impl FnOnce(u64) -> Call) -> Result<Answer, String> {
        let (conn, id) = self.place().await?;
        self.remote.call_on(&conn, call(id)).await
    }

    /// This monitor's check (or what it pushed), diagnosed in its worker by
    /// `diagnosers` (instances of the same package; any that no worker
    /// serves is left out) against the history the worker keeps: one call,
    /// one frame each way.
    async fn observe_in_worker(
        &self,
        diagnosers: &[&dyn Instance],
        observing: Observing<'_>,
    ) -> Result<Observed, String> {
        let (conn, monitor, placed) = self.place_with(diagnosers).await?;
        let placed_count = placed.len();
        let call = Call::Observe(Observe {
            monitor,
            pushed: observing.pushed.map(Seen::from),
            missed: observing.missed.iter().map(Seen::from).collect(),
            diagnosers: placed,
            keep: u32::try_from(observing.keep).unwrap_or(u32::MAX),
            within_us: u64::try_from(observing.within.as_micros()).unwrap_or(u64::MAX),
            facts: observing.facts,
        });
        let asked = placed_count;
        match self.remote.call_on(&conn, call).await? {
            // More diagnoses than asked for is a worker out of step, or
            // one making healer convert what nobody reads.
            Answer::Observed { diagnoses, .. } if diagnoses.len() > asked => Err(format!(
                "plugin worker for {} broke the protocol: it answered {} diagnoses where {asked} were asked for",
                self.remote.name,
                diagnoses.len()
            )),
            Answer::Observed { checked, diagnoses } => Ok(observed(checked, diagnoses)),
            other => unexpected(other, "a check and its diagnosis"),
        }
    }
}

impl RemoteInstance {
    /// This monitor and `diagnosers` (instances of the same package; any
    /// that no worker serves is left out) placed in the running worker:
    /// it, and their numbers there.
    async fn place_with(
        &self,
        diagnosers: &[&dyn Instance],
    ) -> Result<(Arc<Conn>, u64, Vec<u64>), String> {
        let (conn, monitor) = self.place().await?;
        let mut placed = Vec::with_capacity(diagnosers.len());
        for diagnoser in diagnosers {
            let Some(placing) = diagnoser.placed() else {
                continue;
            };
            let theirs = placing.await?;
            if theirs.generation != conn.generation {
                return Err(format!(
                    "plugin worker for {} restarted during the call",
                    self.remote.name
                ));
            }
            placed.push(theirs.instance);
        }
        Ok((conn, monitor, placed))
    }

    /// Has this monitor checked on its grid in its worker: see
    /// [`Instance::watch`].
    async fn watch_in_worker(
        &self,
        diagnosers: &[&dyn Instance],
        watching: Watching,
    ) -> Result<(), String> {
        let (conn, monitor, placed) = self.place_with(diagnosers).await?;
        let watch = Watch {
            monitor,
            diagnosers: placed,
            keep: u32::try_from(watching.keep).unwrap_or(u32::MAX),
            within_us: u64::try_from(watching.within.as_micros()).unwrap_or(u64::MAX),
            every_us: u64::try_from(watching.every.as_micros()).unwrap_or(u64::MAX),
            origin_ns: wire::monotonic_ns(watching.origin),
            facts: watching.facts,
            every_check: watching.every_check,
        };
        {
            let mut open = lock(&conn.open);
            if let Some(ended) = &open.ended {
                return Err(ended.clone());
            }
            open.watches.insert(
                monitor,
                Watcher {
                    news: watching.news,
                    quiet: watching.quiet,
                },
            );
        }
        if conn.send(&ToWorker::Watch(watch)) {
            Ok(())
        } else {
            lock(&conn.open).watches.remove(&monitor);
            Err(format!(
                "plugin worker for {} is not reading what healer sends it",
                self.remote.name
            ))
        }
    }

    /// The running worker and this instance's number in it, if it is
    /// placed there.
    fn placed_now(&self) -> Option<(Arc<Conn>, u64)> {
        let placed = (*lock(&self.last_placed))?;
        let state = lock(&self.remote.state);
        let conn = state
            .conn
            .as_ref()
            .filter(|conn| conn.generation == placed.generation)?;
        Some((Arc::clone(conn), placed.instance))
    }
}

/// A reply of the wrong kind: named by its kind only (what it holds is
/// the worker's, and may be anything).
fn unexpected<T>(answer: Answer, asked: &str) -> Result<T, String> {
    Err(format!(
        "plugin worker broke the protocol: it answered {} to {asked}",
        answer.kind()
    ))
}

impl Instance for RemoteInstance {
    fn worker(&self) -> Option<WorkerId> {
        Some(self.remote.id)
    }

    fn placed(&self) -> Option<Pending<'_, Result<Placed, String>>> {
        Some(Box::pin(async move {
            let (conn, instance) = self.place().await?;
            Ok(Placed {
                generation: conn.generation,
                instance,
            })
        }))
    }

    fn observe<'a>(
        &'a self,
        diagnosers: &'a [&'a dyn Instance],
        observing: Observing<'a>,
    ) -> Pending<'a, Result<Observed, String>> {
        Box::pin(self.observe_in_worker(diagnosers, observing))
    }

    fn watch<'a>(
        &'a self,
        diagnosers: &'a [&'a dyn Instance],
        watching: Watching,
    ) -> Pending<'a, Result<(), String>> {
        Box::pin(self.watch_in_worker(diagnosers, watching))
    }

    fn unwatch(&self) {
        if let Some((conn, monitor)) = self.placed_now() {
            if lock(&conn.open).watches.remove(&monitor).is_some() {
                conn.send(&ToWorker::Unwatch { monitor });
            }
        }
    }

    fn facts_forgotten(&self) {
        if let Some((conn, monitor)) = self.placed_now() {
            conn.send(&ToWorker::FactsForgotten { monitor });
        }
    }

    fn check(&self) -> Pending<'_, Result<Observation, String>> {
        self.check_knowing(0)
    }

    fn check_knowing(&self, facts: u64) -> Pending<'_, Result<Observation, String>> {
        Box::pin(async move {
            match self
                .call(|instance| Call::Check { instance, facts })
                .await?
            {
                Answer::Seen(seen) => seen.into_checked(),
                other => unexpected(other, "a check"),
            }
        })
    }

    fn next_push(&self) -> Pending<'_, Option<Observation>> {
        Box::pin(async move {
            let mut current = self.pushed.lock().await;
            loop {
                if current.is_none() {
                    *current = lock(&self.fresh).take();
                }
                match current.as_mut() {
                    Some(pushes) => match pushes.recv().await {
                        Some(Some(seen)) => return Some(*seen),
                        // The monitor will never push: its stream is
                        // dropped (most monitors never push).
                        Some(None) => {
                            *current = None;
                            return None;
                        }
                        // Its worker ended: wait for the next one.
                        None => *current = None,
                    },
                    None => {
                        let placed = self.place().await.is_ok();
                        if !placed || lock(&self.fresh).is_none() {
                            self.remote.until_retry().await;
                        }
                    }
                }
            }
        })
    }

    fn diagnose<'a>(
        &'a self,
        latest: &'a Observation,
        history: &'a [Observation],
    ) -> Pending<'a, Result<Findings, String>> {
        Box::pin(async move {
            let call = |instance| Call::Diagnose {
                instance,
                latest: Seen::from(latest),
                history: history.iter().map(Seen::from).collect(),
            };
            match self.call(call).await? {
                Answer::Findings(found) => Ok(findings(found)),
                other => unexpected(other, "a diagnosis"),
            }
        })
    }

    fn recover<'a>(&'a self, recovery: &'a Recovery) -> Pending<'a, Result<Outcome, String>> {
        Box::pin(async move {
            let recovery = serde_json::to_string(recovery)
                .map_err(|err| format!("cannot encode the recovery request: {err}"))?;
            match self
                .call(|instance| Call::Recover { instance, recovery })
                .await?
            {
                Answer::Outcome { summary, details } => Ok(Outcome {
                    summary,
                    details: wire::details_from_text(&details),
                }),
                other => unexpected(other, "a recovery"),
            }
        })
    }
}

impl Drop for RemoteInstance {
    fn drop(&mut self) {
        let Some(Placed {
            generation,
            instance,
        }) = *lock(&self.last_placed)
        else {
            return;
        };
        let state = lock(&self.remote.state);
        if let Some(conn) = state.conn.as_ref().filter(|c| c.generation == generation) {
            let mut open = lock(&conn.open);
            open.pushes.remove(&instance);
            open.watches.remove(&instance);
            drop(open);
            let _ = conn.send(&ToWorker::Drop { instance });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::children;
    use crate::plugins::worker::wire::FromWorker;
    use futures_util::SinkExt;
    use tokio::process::Child;
    use tokio_util::codec::FramedWrite;

    /// A worker that never reads what healer sends it, answering every
    /// ping blindly (their numbers are 1, 2, 3, ...) and, with
    /// `ready_again`, saying `Ready` again now and then (which would set
    /// back the outbox's clock): whether it was ended within 5 s.
    async fn supervised_never_reading(ready_again: bool) -> bool {
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        let mut command = tokio::process::Command::new("sleep");
        command.arg("30").process_group(0).kill_on_drop(true);
        let (child, tracked) = children::spawn(|| command.spawn(), Child::id).unwrap();
        let pid = child.id().unwrap_or(0);
        let worker = Worker::new(child, tracked, None);
        let (out, frames) = Outbox::new(outbox::BUDGET);
        let conn = Arc::new(Conn {
            generation: 1,
            pid,
            out,
            open: Mutex::new(Open::default()),
            stop: Notify::new(),
        });
        let (read, write) = ours.into_split();
        tokio::spawn(outbox::write(write, frames));
        let supervisor = tokio::spawn(supervise(
            Weak::new(),
            Duration::from_secs(1),
            Arc::clone(&conn),
            worker,
            FramedRead::new(read, wire::codec()),
        ));
        // The hostile worker: never reads `theirs`, only writes to it.
        let (_unread, theirs_write) = theirs.into_split();
        let mut to_healer = FramedWrite::new(theirs_write, wire::codec());
        to_healer
            .send(wire::encode(&FromWorker::Ready))
            .await
            .unwrap();
        // healer has more to say than the socket holds.
        for _ in 0..8 {
            let _ = conn.out.send(Bytes::from(vec![0u8; 1 << 20]));
        }
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) && !supervisor.is_finished() {
            for seq in 1..=10 {
                let _ = to_healer
                    .send(wire::encode(&FromWorker::Pong { seq }))
                    .await;
            }
            if ready_again {
                let _ = to_healer.send(wire::encode(&FromWorker::Ready)).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        supervisor.is_finished()
    }

    use bytes::Bytes;

    #[tokio::test]
    async fn a_worker_that_never_reads_is_stuck_even_if_it_says_ready_again() {
        assert!(
            supervised_never_reading(false).await,
            "control: without Ready again it is judged stuck"
        );
        assert!(
            supervised_never_reading(true).await,
            "a worker that never reads but sends Ready every 300 ms was not judged stuck in 5 s (stuck_after = 1 s)"
        );
    }
}
