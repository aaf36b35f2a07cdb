//! `healer worker NAME`: the worker's side. It reads its assignment, the
//! first frame healer sends on its socketpair on [`WORKER_FD`] (see
//! [`super::assignment`]; NAME, the package's file name, is only what
//! `ps` shows), confines itself (its sandbox: see [`super::sandbox`]),
//! loads the one package healer probed (only if the file is still the one
//! probed), then serves healer's calls from the same socket until healer
//! closes it or dies (the worker is killed with healer: see
//! [`super::parent`]).
//!
//! The package is loaded here, so the worker holds its instances as the
//! package's own ([`Local`]): a check and its diagnoses run on what the
//! package answered, with no conversion in between.
//!
//! Each call runs as its own task, so many are in flight at once; a
//! cancelled call's task is aborted. A ping is answered once the package's
//! runtime has run a task. Monitor instances forward what they push.

use std::collections::{HashMap, VecDeque};
use std::os::fd::FromRawFd;
use std::os::unix::fs::FileTypeExt;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use std::time::Duration;

use abi_stable::std_types::RVec;
use healer_plugin_sdk::ffi::ObservationFfi;
use healer_plugin_sdk::{Observation, Recovery, Status};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::AbortHandle;
use tokio_util::codec::FramedRead;

use super::assignment::{Assignment, WORKER_FD};
use super::parent::Parent;
use super::wire::{
    self, Answer, Call, Found, FromWorker, Kind, Observe, QuietRuns, Seen, ToWorker,
};
use crate::grid;
use crate::plugins::identity;
use crate::plugins::in_process::{InProcess, Local};
use crate::plugins::loader::load_opened_here;
use crate::plugins::lock::lock;
use crate::plugins::package::{Backend, Instance};

/// `healer worker NAME`, started by healer with its socket on
/// [`WORKER_FD`].
pub fn serve(name: &str) -> ExitCode {
    // Never outlives a healer that died before this.
    let Some(parent) = Parent::find() else {
        return ExitCode::FAILURE;
    };
    let refuse = |shown: &dyn std::fmt::Display, reason: String| {
        eprintln!("healer worker: {shown}: {reason}");
        ExitCode::from(2)
    };
    let handed_over = std::fs::metadata(format!("/proc/self/fd/{WORKER_FD}"));
    if !handed_over.is_ok_and(|meta| meta.file_type().is_socket()) {
        return refuse(
            &name,
            format!("descriptor {WORKER_FD} is not healer's socket (healer worker is started by healer itself)"),
        );
    }
    // SAFETY: descriptor 3 was handed over by healer (see `child::hand_over`)
    // and is checked above to be a socket; nothing else in this process
    // owns it.
    let mut socket = unsafe { std::os::unix::net::UnixStream::from_raw_fd(WORKER_FD) };
    // healer wrote it before the worker started; the wait only bounds a
    // healer that broke off.
    let assignment = socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|err| format!("cannot read healer's socket: {err}"))
        .and_then(|()| Assignment::receive(&mut socket));
    let assignment = match assignment {
        Ok(assignment) => assignment,
        Err(reason) => return refuse(&name, reason),
    };
    let shown = assignment.shown_as.display();
    let refuse = |reason: String| refuse(&shown, reason);
    if let Err(err) = socket.set_read_timeout(None) {
        return refuse(format!("cannot read healer's socket: {err}"));
    }
    let opened = match identity::open(&assignment.file) {
        Ok(opened) => opened,
        Err(reason) => return refuse(reason),
    };
    if opened.identity != assignment.identity {
        return refuse("changed since it was probed; not loaded".to_owned());
    }
    // The probe said at start what of the sandbox the kernel lacks.
    if let Err(err) = super::sandbox::confine(&assignment.sandbox, &opened.file) {
        return refuse(format!("cannot be sandboxed: {err}"));
    }
    // Dies with healer from here on.
    parent.die_with();
    let loaded = match load_opened_here(opened, &assignment.shown_as) {
        Ok(loaded) => loaded,
        Err(err) => return refuse(err.reason),
    };
    // Nothing a plugin runs may inherit healer's socket.
    let cloexec = nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC);
    if let Err(err) = nix::fcntl::fcntl(&socket, cloexec) {
        return refuse(format!(
            "cannot keep healer's socket from programs it runs: {err}"
        ));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(err) => return refuse(format!("cannot start the worker's runtime: {err}")),
    };
    runtime.block_on(async move {
        let _ = socket.set_nonblocking(true);
        match tokio::net::UnixStream::from_std(socket) {
            Ok(socket) => {
                serve_on(loaded.in_process, socket).await;
                ExitCode::SUCCESS
            }
            Err(err) => refuse(format!("cannot use healer's socket: {err}")),
        }
    })
}

/// What the worker holds between calls.
#[derive(Default)]
struct Held {
    instances: HashMap<u64, Arc<Local>>,
    /// Calls under way, by id.
    running: HashMap<u64, AbortHandle>,
    /// Push forwarders, by instance.
    forwarding: HashMap<u64, AbortHandle>,
    /// The observations before the latest, oldest first, of each monitor
    /// whose checks are diagnosed here: each one postcard-encoded buffer
    /// (about 100 bytes, where the FFI form took nine allocations and
    /// some 600), decoded only to be handed to a diagnoser.
    histories: HashMap<u64, VecDeque<Box<[u8]>>>,
    /// Monitors checked on their grids here ([`watch_here`]), by instance:
    /// the task, and the digest of the facts healer holds from it.
    watching: HashMap<u64, (AbortHandle, Arc<AtomicU64>)>,
    /// How the watched checks that said nothing new went, since last sent.
    quiet: HashMap<u64, QuietRuns>,
}

type Shared = Arc<Mutex<Held>>;

fn send(out: &UnboundedSender<Bytes>, message: &FromWorker) {
    let _ = out.send(wire::encode(message));
}

async fn serve_on(backend: InProcess, socket: tokio::net::UnixStream) {
    let (read, write) = socket.into_split();
    let (out, outbox) = tokio::sync::mpsc::unbounded_channel();
    // Answers to checks are gathered for a moment; everything else (pushes,
    // pongs, created instances) goes at once.
    let (checked, checks) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(wire::write_gathering(
        write,
        outbox,
        checks,
        wire::GATHER_ANSWERS,
    ));
    send(&out, &FromWorker::Ready);
    let held: Shared = Arc::default();
    tokio::spawn(say_quiet_runs(Arc::clone(&held), out.clone()));
    // Checks on the grids, at most this many at once: when they fall
    // behind, every target waits its turn, first due first served.
    let turns = Arc::new(tokio::sync::Semaphore::new(WATCHED_AT_ONCE));
    let mut frames = FramedRead::new(read, wire::codec());
    while let Some(Ok(frame)) = frames.next().await {
        let message = match wire::decode::<ToWorker>(&frame) {
            Ok(message) => message,
            Err(err) => {
                eprintln!("healer worker: healer sent {err}; stopping");
                return;
            }
        };
        match message {
            ToWorker::Call { id, call } => {
                let answers = if matches!(call, Call::Check { .. } | Call::Observe(_)) {
                    checked.clone()
                } else {
                    out.clone()
                };
                let (held_by_task, out) = (Arc::clone(&held), out.clone());
                let task = tokio::spawn(async move {
                    let answer = run(&backend, &held_by_task, &out, call).await;
                    lock(&held_by_task).running.remove(&id);
                    let reply = wire::encode(&FromWorker::Reply { id, answer });
                    let reply = match wire::fits(&reply) {
                        Ok(()) => reply,
                        Err(err) => wire::encode(&FromWorker::Reply {
                            id,
                            answer: Err(format!("the plugin's answer cannot be sent: {err}")),
                        }),
                    };
                    let _ = answers.send(reply);
                });
                lock(&held).running.insert(id, task.abort_handle());
            }
            ToWorker::Cancel { id } => {
                if let Some(task) = lock(&held).running.remove(&id) {
                    task.abort();
                }
            }
            ToWorker::Drop { instance } => {
                let mut held = lock(&held);
                held.instances.remove(&instance);
                held.histories.remove(&instance);
                if let Some(forwarder) = held.forwarding.remove(&instance) {
                    forwarder.abort();
                }
                unwatch(&mut held, instance);
            }
            ToWorker::Watch(watch) => {
                let monitor = watch.monitor;
                let facts = Arc::new(AtomicU64::new(watch.facts));
                let task = tokio::spawn(watch_here(
                    Arc::clone(&held),
                    watch,
                    Arc::clone(&facts),
                    checked.clone(),
                    Arc::clone(&turns),
                ));
                let mut held = lock(&held);
                unwatch(&mut held, monitor);
                held.watching.insert(monitor, (task.abort_handle(), facts));
            }
            ToWorker::Unwatch { monitor } => unwatch(&mut lock(&held), monitor),
            ToWorker::FactsForgotten { monitor } => {
                if let Some((_, facts)) = lock(&held).watching.get(&monitor) {
                    facts.store(0, Ordering::Relaxed);
                }
            }
            ToWorker::Ping { seq } => {
                let out = out.clone();
                tokio::spawn(async move {
                    if backend.heartbeat().await.is_ok() {
                        send(&out, &FromWorker::Pong { seq });
                    }
                });
            }
        }
    }
    // healer closed its end (it stopped, or died): nothing left to do.
}

async fn run(
    backend: &InProcess,
    held: &Shared,
    out: &UnboundedSender<Bytes>,
    call: Call,
) -> Result<Answer, String> {
    let instance = |number: u64| {
        lock(held).instances.get(&number).cloned().ok_or_else(|| {
            format!("healer asked for instance {number}, which this worker does not have")
        })
    };
    match call {
        Call::CheckConfig { kind, name, config } => backend
            .check_config(kind.into(), &name, &config)
            .await
            .map(|declared| Answer::Declared {
                kinds: declared.kinds,
                own_timeout_ms: declared.own_timeout_ms,
            }),
        Call::Create {
            instance: number,
            kind,
            name,
            config,
        } => {
            let created = Arc::new(backend.create_here(kind.into(), &name, &config).await?);
            let mut held_now = lock(held);
            if matches!(kind, Kind::Monitor) {
                let forwarder =
                    tokio::spawn(forward_pushes(number, Arc::clone(&created), out.clone()));
                held_now.forwarding.insert(number, forwarder.abort_handle());
            }
            held_now.instances.insert(number, created);
            Ok(Answer::Done)
        }
        Call::Check {
            instance: number,
            facts,
        } => {
            // Passed on as the package wrote it, its details unparsed
            // (healer reads them, once): only what healer would refuse
            // anyway is refused here, by its size, before it crosses.
            let seen = instance(number)?.check_raw().await?;
            crate::plugins::bounds::details_fit(&seen.details)?;
            let mut seen = Seen::from(&seen);
            seen.facts_as_known(facts);
            Ok(Answer::Seen(seen))
        }
        Call::Diagnose {
            instance: number,
            latest,
            history,
        } => {
            let latest = Observation::from(latest);
            let history: Vec<Observation> = history.into_iter().map(Observation::from).collect();
            let findings = instance(number)?.diagnose(&latest, &history).await?;
            Ok(Answer::Findings(
                findings.kept.iter().map(Found::from).collect(),
            ))
        }
        Call::Recover {
            instance: number,
            recovery,
        } => {
            let recovery: Recovery = serde_json::from_str(&recovery)
                .map_err(|err| format!("healer sent a malformed recovery request: {err}"))?;
            let outcome = instance(number)?.recover(&recovery).await?;
            Ok(Answer::outcome(&outcome))
        }
        Call::Observe(observe) => observe_here(held, observe).await,
    }
}

/// A check (or what was pushed) and its diagnoses, here, against the
/// history kept here: see [`wire::Observe`]. The check and each diagnosis
/// have their own deadline; no lock is held across a plugin call.
async fn observe_here(held: &Shared, observe: Observe) -> Result<Answer, String> {
    let facts = observe.facts;
    let raw = observe_raw(held, observe).await?;
    Ok(match raw.checked {
        // The details stay here with the history: healer reads only the
        // status, summary, metrics and facts of a check diagnosed in its
        // worker (the facts only when they changed).
        Ok(latest) => Answer::Observed {
            checked: wire::Checked::Seen(Seen::from(&latest).without_details(facts)),
            diagnoses: raw.diagnoses,
        },
        Err(failed) => Answer::Observed {
            checked: failed,
            diagnoses: Vec::new(),
        },
    })
}

/// A check (or what was pushed) and its diagnoses, as the package answered
/// them: nothing converted for the wire yet.
struct Raw {
    /// The observation, or how the check failed.
    checked: Result<ObservationFfi, wire::Checked>,
    diagnoses: Vec<wire::Diagnosis>,
}

/// See [`observe_here`].
async fn observe_raw(held: &Shared, observe: Observe) -> Result<Raw, String> {
    let local = |number: u64| {
        let instance = lock(held).instances.get(&number).cloned();
        instance.ok_or_else(|| {
            format!("healer asked for instance {number}, which this worker does not have")
        })
    };
    let monitor = local(observe.monitor)?;
    let diagnosers = observe
        .diagnosers
        .iter()
        .map(|&number| local(number))
        .collect::<Result<Vec<_>, _>>()?;
    let within = Duration::from_micros(observe.within_us);
    // No more than the diagnosers read: the shipped http diagnoser reads
    // none by default, and then nothing is kept or copied per check.
    let needed = diagnosers
        .iter()
        .map(|diagnoser| diagnoser.history_needed().unwrap_or(usize::MAX))
        .max()
        .unwrap_or(0);
    let keep = usize::try_from(observe.keep)
        .unwrap_or(usize::MAX)
        .min(needed);
    let checked = match observe.pushed {
        Some(seen) => Ok(ObservationFfi::from(seen)),
        None => {
            let check = monitor.check_raw();
            match tokio::time::timeout(within, check).await {
                Ok(Ok(seen)) => Ok(seen),
                Ok(Err(error)) => Err(wire::Checked::Failed(error)),
                Err(_) => Err(wire::Checked::TimedOut),
            }
        }
    };
    // The history stays in its map: a call cancelled half-way (healer
    // stopped waiting) loses nothing but its own observation. Nothing is
    // converted when nothing is kept.
    let remember_here = |seen: &dyn Fn() -> Seen| {
        let mut held = lock(held);
        if keep == 0 {
            if !held.histories.is_empty() {
                held.histories.remove(&observe.monitor);
            }
            return;
        }
        let kept = wire::encode_kept(&seen());
        let history = held.histories.entry(observe.monitor).or_default();
        remember(history, kept, keep);
    };
    for seen in &observe.missed {
        remember_here(&|| seen.clone());
    }
    let latest = match checked {
        Ok(latest) => latest,
        Err(failed) => {
            let summary = match &failed {
                wire::Checked::Failed(error) => format!("check failed: {error}"),
                _ => format!(
                    "check timed out after {}",
                    humantime::format_duration(within)
                ),
            };
            remember_here(&|| Seen::from(&Observation::unknown(summary.clone())));
            return Ok(Raw {
                checked: Err(failed),
                diagnoses: Vec::new(),
            });
        }
    };
    let mut diagnoses = Vec::new();
    // An UNKNOWN observation holds no evidence to diagnose.
    if latest.status != Status::Unknown {
        let before: RVec<ObservationFfi> = lock(held)
            .histories
            .get(&observe.monitor)
            .map(|history| {
                history
                    .iter()
                    .filter_map(|kept| wire::decode_kept(kept))
                    .collect()
            })
            .unwrap_or_default();
        let last = diagnosers.len().saturating_sub(1);
        let mut before = Some(before);
        for (i, diagnoser) in diagnosers.iter().enumerate() {
            // Each diagnoser owns what it is given; the last gets ours.
            let given = if i == last {
                before.take().unwrap_or_default()
            } else {
                before.clone().unwrap_or_default()
            };
            let diagnosis = diagnoser.diagnose_raw(latest.clone(), given);
            diagnoses.push(match tokio::time::timeout(within, diagnosis).await {
                Ok(Ok(found)) => {
                    wire::Diagnosis::Found(found.into_iter().map(Found::from).collect())
                }
                Ok(Err(error)) => wire::Diagnosis::Failed(error),
                Err(_) => wire::Diagnosis::TimedOut,
            });
        }
    }
    remember_here(&|| Seen::from(&latest));
    Ok(Raw {
        checked: Ok(latest),
        diagnoses,
    })
}

/// Watched checks run at once, at most: the slots of 10,000 targets at
/// one check a second hold about 200 each.
const WATCHED_AT_ONCE: usize = 512;

/// How often the quiet runs are sent.
const QUIET_EVERY: Duration = Duration::from_secs(1);

/// Stops checking `monitor` on its grid.
fn unwatch(held: &mut Held, monitor: u64) {
    if let Some((task, _)) = held.watching.remove(&monitor) {
        task.abort();
    }
    held.quiet.remove(&monitor);
}

/// Checks a monitor on its grid, diagnosed here as an [`Observe`] call is,
/// until told to stop: what healer must decide on crosses at once
/// ([`FromWorker::Watched`]); a check that changes nothing (OK again, no
/// findings, its facts as healer holds them) is only counted, for
/// [`say_quiet_runs`].
async fn watch_here(
    held: Shared,
    watch: wire::Watch,
    facts: Arc<AtomicU64>,
    news: UnboundedSender<Bytes>,
    turns: Arc<tokio::sync::Semaphore>,
) {
    let every = Duration::from_micros(watch.every_us.max(1_000));
    let origin = wire::instant_of(watch.origin_ns);
    let mut due = grid::at_or_after(origin, std::time::Instant::now(), every);
    let mut last: Option<Status> = None;
    loop {
        tokio::time::sleep_until(due.into()).await;
        let Ok(_turn) = turns.acquire().await else {
            return;
        };
        let began = std::time::Instant::now();
        let (late, is_late) = grid::lateness(due, began, every);
        let observe = Observe {
            monitor: watch.monitor,
            pushed: None,
            missed: Vec::new(),
            diagnosers: watch.diagnosers.clone(),
            keep: watch.keep,
            within_us: watch.within_us,
            facts: facts.load(Ordering::Relaxed),
        };
        let Ok(raw) = observe_raw(&held, observe).await else {
            // The instance is gone: healer dropped it.
            return;
        };
        let took = began.elapsed();
        let held_facts = facts.load(Ordering::Relaxed);
        // Read before anything is converted: most checks end here.
        let (status, published) = match &raw.checked {
            Ok(latest) => (latest.status, wire::facts_digest_in(&latest.details)),
            Err(_) => (Status::Unknown, None),
        };
        let facts_changed = match published {
            Some(digest) => digest != held_facts,
            None => held_facts != 0,
        };
        let found = raw.diagnoses.iter().any(|diagnosis| match diagnosis {
            wire::Diagnosis::Found(found) => !found.kept.is_empty() || found.dropped > 0,
            _ => true,
        });
        let new = watch.every_check
            || status != Status::Ok
            || last != Some(status)
            || found
            || facts_changed;
        last = Some(status);
        let late_us = u64::try_from(late.as_micros()).unwrap_or(u64::MAX);
        if new {
            // What healer will hold: an UNKNOWN check takes them back.
            let holds = match published {
                _ if status == Status::Unknown => 0,
                Some(digest) => digest,
                None => 0,
            };
            facts.store(holds, Ordering::Relaxed);
            let (checked, diagnoses) = match raw.checked {
                Ok(latest) => (
                    wire::Checked::Seen(Seen::from(&latest).without_details(held_facts)),
                    raw.diagnoses,
                ),
                Err(failed) => (failed, Vec::new()),
            };
            let message = FromWorker::Watched {
                monitor: watch.monitor,
                began_ns: wire::monotonic_ns(began),
                late_us,
                took_us: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
                checked,
                diagnoses,
            };
            let mut frame = wire::encode(&message);
            if let Err(why) = wire::fits(&frame) {
                // Said, not dropped: healer must not keep believing the
                // check before. It holds no facts from it now.
                facts.store(0, Ordering::Relaxed);
                frame = wire::encode(&FromWorker::Watched {
                    monitor: watch.monitor,
                    began_ns: wire::monotonic_ns(began),
                    late_us,
                    took_us: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
                    checked: wire::Checked::Failed(format!("its answer cannot be sent: {why}")),
                    diagnoses: Vec::new(),
                });
            }
            let _ = news.send(frame);
        } else {
            let mut held = lock(&held);
            let runs = held.quiet.entry(watch.monitor).or_default();
            runs.monitor = watch.monitor;
            runs.checks = runs.checks.saturating_add(1);
            runs.took_us = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
            runs.latest_ns = wire::monotonic_ns(began + took);
            if is_late {
                runs.late = runs.late.saturating_add(1);
            }
            runs.late_us = runs.late_us.max(late_us);
        }
        // The next point; one already passed (the thread was overbooked)
        // is due at once, behind those already waiting, so lateness is
        // spread over every target instead of starving some. Points
        // further back are missed: late checks too. Never sooner than
        // half an interval after this one began.
        let now = std::time::Instant::now();
        let mut next = (due + every).max(grid::at_or_before(origin, now, every));
        if next < began + every / 2 {
            next = grid::at_or_after(origin, began + every / 2, every);
        }
        let missed = grid::missed_between(due, next, every);
        if missed > 0 {
            let mut held = lock(&held);
            let runs = held.quiet.entry(watch.monitor).or_default();
            runs.monitor = watch.monitor;
            runs.missed = runs
                .missed
                .saturating_add(u32::try_from(missed).unwrap_or(u32::MAX));
            let late = now.saturating_duration_since(due + every);
            runs.late_us = runs
                .late_us
                .max(u64::try_from(late.as_micros()).unwrap_or(u64::MAX));
        }
        due = next;
    }
}

/// Sends, about once a second, how the watched checks that said nothing
/// new went.
async fn say_quiet_runs(held: Shared, out: UnboundedSender<Bytes>) {
    let mut every = tokio::time::interval(QUIET_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let runs: Vec<QuietRuns> = lock(&held).quiet.drain().map(|(_, runs)| runs).collect();
        if !runs.is_empty() {
            send(&out, &FromWorker::Quiet(runs));
        }
    }
}

/// Keeps `seen` as the newest of at most `keep` observations.
fn remember(history: &mut VecDeque<Box<[u8]>>, seen: Box<[u8]>, keep: usize) {
    history.push_back(seen);
    while history.len() > keep {
        history.pop_front();
    }
}

/// Sends each observation a monitor pushes, and a last `None` once it
/// never will.
async fn forward_pushes(number: u64, monitor: Arc<Local>, out: UnboundedSender<Bytes>) {
    loop {
        let seen = monitor.next_push().await;
        let last = seen.is_none();
        send(
            &out,
            &FromWorker::Push {
                instance: number,
                seen: seen.as_ref().map(Seen::from),
            },
        );
        if last {
            return;
        }
    }
}
