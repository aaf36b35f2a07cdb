//! A package served by a `healer worker` process: healer's side of the
//! socketpair, and the supervision of the worker.
//!
//! The worker is started on first use and again, after a capped backoff,
//! on the first use after it ended. It ends (and is killed, with its whole
//! process group) when it exits or is killed by a signal, closes its
//! socket, sends something that is not a message, or misses its heartbeat
//! (a ping it answers only once the package's own runtime has run a task,
//! so a plugin task that spins is noticed). Every call in flight then ends
//! as an error naming the reason ("plugin worker crashed in libfoo.so:
//! killed by SIGSEGV"), which the engine records as UNKNOWN. After
//! `crash_limit` crashes within `crash_window` the package is quarantined:
//! its calls fail at once until its file changes (and probes clean again)
//! or healer restarts.
//!
//! A worker starts in its package's sandbox (see [`super::sandbox`]), is
//! tracked from spawn to reap (see [`super::children`]: the reaper leaves
//! it alone, and its process group is killed before it is reaped), gets
//! what healer sends it through a bounded outbox (see [`super::outbox`]: a
//! worker that leaves it unread for `stuck_after` is stuck, like one that
//! misses its heartbeat), and has what it prints relayed to healer's log
//! at a limited rate (see [`super::output`]).
//!
//! Instances are numbered by healer and created in the worker on first
//! use; after a restart each is created again, from the config it was
//! created with, on its next call. A push monitor's pushes flow back on
//! the socket, and its `next_push` waits across a restart.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use healer_plugin_sdk::ffi::Declared;
use healer_plugin_sdk::{Duration as Written, Finding, Observation, Outcome, Recovery};
use tokio::io::unix::AsyncFd;
use tokio::net::unix::OwnedReadHalf;
use tokio::process::Child;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

use super::assignment::Assignment;
use super::bounds::Findings;
use super::children::{self, Tracked};
use super::identity::Identity;
use super::instance::{
    Backend, Call as Pending, Checked, Diagnosis, Instance, Observed, Observing, WorkerHealth,
};
use super::outbox::{self, Outbox};
use super::output::{self, Allowance};
use super::probe::{probe_all, signal_name, ToProbe, PROBE_WITHIN};
use super::sandbox::environment;
use super::wire::{self, Answer, Call, FromWorker, Observe, Seen, ToWorker};
use super::PluginKind;
use crate::config::{PackagePolicy, Sandbox, WorkerLimits};
use crate::events::{Event, Events};

/// The descriptor a worker finds its end of the socketpair on.
pub const WORKER_FD: RawFd = 3;

/// How often a worker is pinged.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// The wait before the first restart; it doubles with each crash within
/// the window.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The longest wait before a restart.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How long creating an instance (or checking a config) in a worker may
/// take: a constructor that never returns fails the call, not the target.
const CREATE_WITHIN: Duration = Duration::from_secs(10);

/// Observations a monitor may push ahead of healer (as in-process).
const PUSH_BACKLOG: usize = 64;

/// A package served by worker processes, one at a time.
pub struct Remote {
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
    me: Weak<Remote>,
}

struct State {
    /// The file as last probed clean.
    identity: Identity,
    conn: Option<Arc<Conn>>,
    /// Workers started so far.
    generation: u64,
    /// When each crash within the window happened.
    crashes: VecDeque<Instant>,
    /// No start before this, after a crash.
    retry_at: Option<Instant>,
    last_crash: Option<String>,
    /// Why the package is quarantined, when it is.
    quarantined: Option<String>,
    /// A changed file is being probed again.
    reprobing: bool,
}

/// One running worker.
struct Conn {
    generation: u64,
    pid: u32,
    out: Outbox,
    open: Mutex<Open>,
    /// Stop the worker: the package is no longer used.
    stop: Notify,
}

#[derive(Default)]
struct Open {
    calls: HashMap<u64, oneshot::Sender<Result<Answer, String>>>,
    /// Boxed: a channel allocates its slots 32 at a time, and one
    /// channel per monitor adds up at 10,000 targets.
    pushes: HashMap<u64, mpsc::Sender<Option<Box<Observation>>>>,
    /// Set once the worker has ended: why.
    ended: Option<String>,
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl Conn {
    /// Sends `message`; `false` when the outbox has no room for it.
    fn send(&self, message: &ToWorker) -> bool {
        self.out.send(wire::encode(message)).is_ok()
    }

    fn deliver(&self, message: FromWorker) {
        let mut open = lock(&self.open);
        match message {
            FromWorker::Reply { id, answer } => {
                if let Some(waiting) = open.calls.remove(&id) {
                    let _ = waiting.send(answer);
                }
            }
            FromWorker::Push { instance, seen } => {
                let last = seen.is_none();
                // A full backlog drops the observation, as in-process,
                // before anything of it is parsed; what waits there is
                // held to the smaller limit of a push.
                if let Some(Ok(slot)) = open.pushes.get(&instance).map(|p| p.try_reserve()) {
                    slot.send(seen.map(|seen| Box::new(seen.into_pushed())));
                }
                if last {
                    open.pushes.remove(&instance);
                }
            }
            FromWorker::Pong { .. } | FromWorker::Ready => {}
        }
    }

    /// Ends every call in flight with `message` and closes every push
    /// stream; returns how many calls were in flight.
    fn end(&self, message: &str) -> usize {
        let mut open = lock(&self.open);
        open.ended = Some(message.to_owned());
        open.pushes.clear();
        let calls = std::mem::take(&mut open.calls);
        let in_flight = calls.len();
        for (_, waiting) in calls {
            let _ = waiting.send(Err(message.to_owned()));
        }
        in_flight
    }
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
        Arc::new_cyclic(|me| Remote {
            name: shown.file_name().map_or_else(
                || shown.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
            shown: shown.to_owned(),
            target: target.to_owned(),
            exe: exe.to_owned(),
            pin: policy.sha256.clone(),
            limits: policy.limits,
            sandbox: policy.sandbox.clone(),
            env: policy.env.clone(),
            allowance: Allowance::new(),
            state: Mutex::new(State {
                identity,
                conn: None,
                generation: 0,
                crashes: VecDeque::new(),
                retry_at: None,
                last_crash: None,
                quarantined: None,
                reprobing: false,
            }),
            restarted: Notify::new(),
            ids: AtomicU64::new(1),
            events: OnceLock::new(),
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
        let mut state = lock(&self.state);
        if let Some(conn) = &state.conn {
            return Ok(Arc::clone(conn));
        }
        if let Some(why) = state.quarantined.clone() {
            if state.reprobing || state.identity.still_at(&self.target) {
                return Err(why);
            }
            // The file changed since: probe the new one, once, in the
            // background (a caller that gives up does not cancel it).
            state.reprobing = true;
            if let Some(me) = self.me.upgrade() {
                tokio::spawn(async move { me.reprobe().await });
            }
            return Err(format!("{why} (its file changed: probing it again)"));
        }
        if let Some(at) = state.retry_at {
            let now = Instant::now();
            if at > now {
                return Err(format!(
                    "plugin worker for {} is restarting after a crash ({}); next start in {}",
                    self.name,
                    state.last_crash.as_deref().unwrap_or("?"),
                    humantime::format_duration(round_ms(at - now))
                ));
            }
        }
        match self.start(&mut state) {
            Ok(conn) => Ok(conn),
            Err(err) => {
                // As a crash: no new attempt before the backoff.
                drop(state);
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
                    state.quarantined = None;
                    state.reprobing = false;
                    state.crashes.clear();
                    state.retry_at = None;
                    drop(state);
                    self.emit(Event::PluginQuarantineLifted {
                        package: self.name.clone(),
                        file: self.shown.clone(),
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
        state.reprobing = false;
        state.quarantined = Some(format!(
            "plugin package {} is quarantined: its file changed, but the new one is refused: {refused}",
            self.name
        ));
    }

    /// Starts a worker; called with the state locked and no worker running.
    fn start(&self, state: &mut State) -> Result<Arc<Conn>, String> {
        let fail = |what: &str, err: io::Error| {
            format!(
                "cannot start a plugin worker for {}: {what}: {err}",
                self.name
            )
        };
        let (mut ours, theirs) =
            std::os::unix::net::UnixStream::pair().map_err(|err| fail("socketpair", err))?;
        // Waiting for the worker on its socket before it starts: a few
        // KiB, far below the socket's buffer; the timeout only makes sure.
        let assignment = Assignment {
            file: self.target.clone(),
            identity: state.identity.clone(),
            shown_as: self.shown.clone(),
            sandbox: self.sandbox.clone(),
        };
        ours.set_write_timeout(Some(Duration::from_secs(1)))
            .and_then(|()| assignment.send(&mut ours))
            .map_err(|err| fail("its assignment", err))?;
        let mut command = tokio::process::Command::new(&self.exe);
        // `ps` shows `healer worker libfoo.so`: the rest is in the
        // assignment.
        command
            .arg0("healer")
            .arg("worker")
            .arg(&self.name)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Nothing of healer's environment but the allowlist.
            .env_clear()
            .envs(environment(&self.env))
            // Its own group: whatever a plugin forks is killed with it.
            .process_group(0)
            .kill_on_drop(true);
        // Only the soft limit: what a plugin starts (a service, by a
        // recovery) gets the hard one back (the SDK's command runner).
        let (fd, memory) = (theirs.as_raw_fd(), self.limits.memory);
        // SAFETY: the closure runs in the child between fork and exec and
        // makes only async-signal-safe calls (fcntl, dup2, setrlimit) on
        // values copied in; it allocates nothing.
        unsafe {
            command.pre_exec(move || hand_over(fd, memory));
        }
        let (mut child, tracked) =
            children::spawn(|| command.spawn(), Child::id).map_err(|err| fail("spawn", err))?;
        let (name, allowance) = (&self.name, &self.allowance);
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(output::relay(name.clone(), Arc::clone(allowance), stdout));
        }
        let said = child
            .stderr
            .take()
            .map(|stderr| tokio::spawn(output::relay(name.clone(), Arc::clone(allowance), stderr)));
        drop(theirs);
        ours.set_nonblocking(true)
            .map_err(|err| fail("socket", err))?;
        let stream = tokio::net::UnixStream::from_std(ours).map_err(|err| fail("socket", err))?;
        let (read, write) = stream.into_split();
        let (out, frames) = Outbox::new(outbox::BUDGET);
        state.generation += 1;
        let pid = child.id().unwrap_or(0);
        let exit = Exit::watch(tracked);
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
            Worker { child, exit, said },
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

/// A worker process as its supervisor holds it.
struct Worker {
    child: Child,
    exit: Exit,
    /// What it printed last on stderr, once that ends.
    said: Option<JoinHandle<Option<String>>>,
}

/// How a supervisor sees its worker end without reaping it (a pidfd, or
/// a look every 100 ms without one), so the worker's process group can be
/// killed while the exited worker still holds the group's id.
struct Exit {
    tracked: Tracked,
    pidfd: Option<AsyncFd<std::os::fd::OwnedFd>>,
}

impl Exit {
    fn watch(tracked: Tracked) -> Exit {
        let pidfd = rustix::process::Pid::from_raw(tracked.pid())
            .and_then(|pid| {
                rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
            })
            // SAFETY: the pidfd was just opened and is owned by the
            // `AsyncFd`, which keeps it open, as the same descriptor, until
            // it is dropped.
            .and_then(|pidfd| unsafe { AsyncFd::register(pidfd) }.ok());
        Exit { tracked, pidfd }
    }

    /// Returns once the worker has ended (it stays unreaped).
    async fn ended(&self) {
        match &self.pidfd {
            // A pidfd is readable once its process has exited.
            Some(pidfd) => {
                let _ = pidfd.readable().await;
            }
            None => {
                while !children::has_exited(self.tracked.pid()) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Why a supervisor stopped watching its worker.
enum Ending {
    /// It ended by itself: its exit status says how.
    Exited,
    /// It is killed for this.
    Killed(String),
    /// Its package is no longer used.
    Stopped,
}

/// Reads the worker's messages and watches it until it ends, or until its
/// package is no longer used.
async fn supervise(
    remote: Weak<Remote>,
    stuck_after: Duration,
    conn: Arc<Conn>,
    worker: Worker,
    mut frames: FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
) {
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ping: Option<(u64, Instant)> = None;
    let mut seq = 0;
    // Pings start once the worker has loaded its package.
    let (started, mut ready) = (Instant::now(), false);
    let ending = loop {
        tokio::select! {
            frame = frames.next() => match frame {
                Some(Ok(bytes)) => match wire::decode::<FromWorker>(&bytes) {
                    // Said once: a worker that says it again would set
                    // back the clock of what it has not read.
                    Ok(FromWorker::Ready) if ready => {
                        break Ending::Killed("broke the protocol: it said it was ready twice".to_owned());
                    }
                    Ok(FromWorker::Ready) => {
                        ready = true;
                        conn.out.reading_from(Instant::now());
                    }
                    Ok(FromWorker::Pong { seq }) => {
                        if ping.is_some_and(|(sent, _)| sent == seq) {
                            ping = None;
                        }
                    }
                    Ok(message) => conn.deliver(message),
                    Err(err) => break Ending::Killed(format!("broke the protocol: it sent {err}")),
                },
                ended => {
                    // Closed or reset (a worker that dies with a ping
                    // unread resets the socket): one that died says how.
                    let otherwise = match ended {
                        Some(Err(err)) => format!("broke the protocol: {err}"),
                        _ => "closed its socket".to_owned(),
                    };
                    match tokio::time::timeout(Duration::from_millis(500), worker.exit.ended()).await {
                        Ok(()) => break Ending::Exited,
                        Err(_) => break Ending::Killed(otherwise),
                    }
                }
            },
            () = worker.exit.ended() => break Ending::Exited,
            () = conn.stop.notified() => break Ending::Stopped,
            _ = tick.tick() => {
                // While it loads, the rule below judges it instead.
                if ready && conn.out.stuck(Instant::now(), stuck_after) {
                    break Ending::Killed(format!(
                        "stopped reading: {} bytes healer sent it went unread for {}",
                        conn.out.waiting(),
                        humantime::format_duration(stuck_after)
                    ));
                }
                match ping {
                    _ if !ready => {
                        if started.elapsed() >= PROBE_WITHIN + stuck_after {
                            break Ending::Killed(format!(
                                "did not finish loading its package within {}",
                                humantime::format_duration(PROBE_WITHIN + stuck_after)
                            ));
                        }
                    }
                    Some((_, sent)) if sent.elapsed() >= stuck_after => {
                        break Ending::Killed(format!(
                            "stopped answering: no heartbeat for {} (a plugin task that spins or blocks the package's runtime?)",
                            humantime::format_duration(stuck_after)
                        ));
                    }
                    Some(_) => {}
                    None => {
                        seq += 1;
                        // A ping with no room waits for the next tick; a
                        // full outbox is judged above.
                        if conn.send(&ToWorker::Ping { seq }) {
                            ping = Some((seq, Instant::now()));
                        }
                    }
                }
            },
        }
    };
    // The whole group (the worker, and whatever a plugin forked), while
    // the worker is not yet reaped: its pid cannot have been reused.
    let Worker {
        mut child,
        exit,
        said,
    } = worker;
    exit.tracked.kill_group();
    let status = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
    // Untracked only after the child is dropped: one not reaped by now is
    // killed on drop while it still holds its pid.
    drop(child);
    drop(exit);
    let reason = match (ending, status) {
        (Ending::Stopped, _) => String::new(),
        (Ending::Killed(reason), _) => reason,
        (Ending::Exited, Ok(Ok(status))) => describe_exit(status),
        (Ending::Exited, Ok(Err(err))) => format!("cannot be waited for: {err}"),
        (Ending::Exited, Err(_)) => "ended, but could not be reaped".to_owned(),
    };
    // Its last words on stderr often say why ("memory allocation of
    // 268435456 bytes failed").
    let last_words = match said {
        Some(said) => tokio::time::timeout(Duration::from_millis(500), said)
            .await
            .ok()
            .and_then(Result::ok)
            .flatten(),
        None => None,
    };
    let reason = match last_words {
        Some(line) if !reason.is_empty() => format!("{reason} (it printed: {line})"),
        _ => reason,
    };
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
        let now = Instant::now();
        let window = self.limits.crash_window;
        let (crashes, quarantined) = {
            let mut state = lock(&self.state);
            if let (Some(ours), Some(conn)) = (&state.conn, conn) {
                if ours.generation == conn.generation {
                    state.conn = None;
                }
            }
            state.crashes.push_back(now);
            while state
                .crashes
                .front()
                .is_some_and(|at| now.duration_since(*at) > window)
            {
                state.crashes.pop_front();
            }
            let crashes = u32::try_from(state.crashes.len()).unwrap_or(u32::MAX);
            let backoff = FIRST_BACKOFF
                .saturating_mul(1 << crashes.saturating_sub(1).min(16))
                .min(MAX_BACKOFF);
            state.retry_at = Some(now + backoff);
            state.last_crash = Some(reason.clone());
            let quarantined = crashes >= self.limits.crash_limit && state.quarantined.is_none();
            if quarantined {
                state.quarantined = Some(format!(
                    "plugin package {} is quarantined: its worker crashed {crashes} times within {} (last: {reason}); replace the file, or restart healer, to try it again",
                    self.name,
                    humantime::format_duration(window)
                ));
            }
            (crashes, quarantined)
        };
        let message = format!("plugin worker crashed in {}: {reason}", self.name);
        let in_flight = conn.map_or(0, |conn| conn.end(&message));
        self.emit(Event::PluginWorkerCrashed {
            package: self.name.clone(),
            file: self.shown.clone(),
            reason: reason.clone(),
            in_flight,
            crashes,
            within: Written(window),
        });
        if quarantined {
            self.emit(Event::PluginQuarantined {
                package: self.name.clone(),
                file: self.shown.clone(),
                crashes,
                within: Written(window),
                reason,
            });
        }
        self.restarted.notify_waiters();
    }

    /// Waits until a worker may be started again (or one was).
    async fn until_retry(&self) {
        let wait = {
            let state = lock(&self.state);
            match (state.quarantined.is_some(), state.retry_at) {
                (true, _) => Duration::from_secs(1),
                (false, Some(at)) => at
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(10)),
                (false, None) => Duration::from_millis(10),
            }
        };
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

/// "killed by SIGSEGV", "exited with status 0".
pub(super) fn describe_exit(status: ExitStatus) -> String {
    match (status.signal(), status.code()) {
        (Some(signal), _) => format!(
            "killed by {}{}",
            signal_name(signal),
            if status.core_dumped() {
                " (core dumped)"
            } else {
                ""
            }
        ),
        (None, Some(code)) => format!("exited with status {code}"),
        (None, None) => "ended".to_owned(),
    }
}

fn round_ms(duration: Duration) -> Duration {
    Duration::from_millis(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

/// In the child, before exec: its end of the socketpair becomes
/// [`WORKER_FD`] (open across exec), and its address space is limited.
fn hand_over(fd: RawFd, memory: u64) -> io::Result<()> {
    // SAFETY: fcntl, dup2, getrlimit and setrlimit are async-signal-safe and take
    // only plain values; `fd` is open in the child (inherited).
    unsafe {
        if fd == WORKER_FD {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(io::Error::last_os_error());
            }
        } else if libc::dup2(fd, WORKER_FD) < 0 {
            return Err(io::Error::last_os_error());
        }
        if memory > 0 {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_AS, &mut limit) != 0 {
                return Err(io::Error::last_os_error());
            }
            limit.rlim_cur = memory.min(limit.rlim_max);
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

impl Backend for Remote {
    fn check_config<'a>(
        &'a self,
        kind: PluginKind,
        name: &'a str,
        config: &'a str,
    ) -> Pending<'a, Result<Declared, String>> {
        Box::pin(async move {
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
                fresh: Mutex::new(None),
                pushed: tokio::sync::Mutex::new(None),
            };
            instance.place().await?;
            Ok(Box::new(instance) as Box<dyn Instance>)
        })
    }

    fn heartbeat(&self) -> Pending<'_, Result<(), String>> {
        Box::pin(async move { self.connection().map(drop) })
    }

    fn report_to(&self, events: &Events) {
        let _ = self.events.set(events.clone());
    }

    fn health(&self) -> Option<WorkerHealth> {
        let state = lock(&self.state);
        Some(WorkerHealth {
            pid: state.conn.as_ref().map(|conn| conn.pid),
            started: state.generation,
            recent_crashes: state.crashes.len(),
            last_crash: state.last_crash.clone(),
            quarantined: state.quarantined.clone(),
        })
    }
}

/// An instance in a worker, created again in each new worker.
pub struct RemoteInstance {
    remote: Arc<Remote>,
    kind: PluginKind,
    name: String,
    config: String,
    /// (worker generation, instance number) where it exists now.
    placed: tokio::sync::Mutex<Option<(u64, u64)>>,
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
        if let Some((generation, id)) = *placed {
            if generation == conn.generation {
                return Ok((conn, id));
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
        *placed = Some((conn.generation, id));
        Ok((conn, id))
    }

    async fn call(&self, call: impl FnOnce(u64) -> Call) -> Result<Answer, String> {
        let (conn, id) = self.place().await?;
        self.remote.call_on(&conn, call(id)).await
    }

    /// Whether `other` is served by the same workers.
    pub fn same_worker_as(&self, other: &RemoteInstance) -> bool {
        Arc::ptr_eq(&self.remote, &other.remote)
    }

    /// This monitor's check (or what it pushed), diagnosed in its worker by
    /// `diagnosers` (instances of the same package) against the history
    /// the worker keeps: one call, one frame each way.
    pub async fn observe(
        &self,
        diagnosers: &[&RemoteInstance],
        observing: Observing<'_>,
    ) -> Result<Observed, String> {
        let (conn, monitor) = self.place().await?;
        let mut placed = Vec::with_capacity(diagnosers.len());
        for diagnoser in diagnosers {
            let (theirs, id) = diagnoser.place().await?;
            if theirs.generation != conn.generation {
                return Err(format!(
                    "plugin worker for {} restarted during the call",
                    self.remote.name
                ));
            }
            placed.push(id);
        }
        let placed_count = placed.len();
        let call = Call::Observe(Observe {
            monitor,
            pushed: observing.pushed.map(Seen::from),
            missed: observing.missed.iter().map(Seen::from).collect(),
            diagnosers: placed,
            keep: u32::try_from(observing.keep).unwrap_or(u32::MAX),
            within_us: u64::try_from(observing.within.as_micros()).unwrap_or(u64::MAX),
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
            Answer::Observed { checked, diagnoses } => Ok(Observed {
                checked: match checked {
                    // Its worker diagnosed it: its details are not
                    // healer's to read (nor to parse).
                    wire::Checked::Seen(seen) => {
                        Checked::Seen(seen.into_observation_without_details())
                    }
                    wire::Checked::Failed(error) => Checked::Failed(error),
                    wire::Checked::TimedOut => Checked::TimedOut,
                },
                diagnoses: diagnoses
                    .into_iter()
                    .map(|diagnosis| match diagnosis {
                        wire::Diagnosis::Found(found) => Diagnosis::Found(findings(found)),
                        wire::Diagnosis::Failed(error) => Diagnosis::Failed(error),
                        wire::Diagnosis::TimedOut => Diagnosis::TimedOut,
                    })
                    .collect(),
            }),
            other => unexpected(other, "a check and its diagnosis"),
        }
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

/// Findings as decoded (their details already within the budget of one
/// answer), with the count of those left out.
fn findings(found: wire::FoundList) -> Findings {
    Findings {
        kept: found.kept.into_iter().map(Finding::from).collect(),
        dropped: found.dropped,
    }
}

impl Instance for RemoteInstance {
    fn remote(&self) -> Option<&RemoteInstance> {
        Some(self)
    }

    fn check(&self) -> Pending<'_, Result<Observation, String>> {
        Box::pin(async move {
            match self.call(|instance| Call::Check { instance }).await? {
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
        let Ok(placed) = self.placed.try_lock() else {
            return;
        };
        let Some((generation, instance)) = *placed else {
            return;
        };
        let state = lock(&self.remote.state);
        if let Some(conn) = state.conn.as_ref().filter(|c| c.generation == generation) {
            lock(&conn.open).pushes.remove(&instance);
            let _ = conn.send(&ToWorker::Drop { instance });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::SinkExt;
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
        let exit = Exit::watch(tracked);
        let (out, frames) = Outbox::new(outbox::BUDGET);
        let conn = Arc::new(Conn {
            generation: 1,
            pid: child.id().unwrap_or(0),
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
            Worker {
                child,
                exit,
                said: None,
            },
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
