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
use super::wire::{self, Answer, Call, Found, FromWorker, Kind, Observe, Seen, ToWorker};
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
    // stopped waiting) loses nothing but its own observation.
    let remember_here = |seen: &Seen| {
        let mut held = lock(held);
        if keep == 0 {
            held.histories.remove(&observe.monitor);
            return;
        }
        let kept = wire::encode_kept(seen);
        let history = held.histories.entry(observe.monitor).or_default();
        remember(history, kept, keep);
    };
    for seen in &observe.missed {
        remember_here(seen);
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
            remember_here(&Seen::from(&Observation::unknown(summary)));
            return Ok(Answer::Observed {
                checked: failed,
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
    let seen = Seen::from(&latest);
    remember_here(&seen);
    // The details stay here with the history: healer reads only the
    // status, summary, metrics and facts of a check diagnosed in its
    // worker (the facts only when they changed).
    Ok(Answer::Observed {
        checked: wire::Checked::Seen(seen.without_details(observe.facts)),
        diagnoses,
    })
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
