//! One running worker as healer's calls see it: the outbox of what healer
//! sends it, the calls waiting for its answers, and the push streams of
//! its monitors; what it sends back is delivered to them, and when it
//! ends, every call in flight ends with the reason.

use std::collections::HashMap;
use std::sync::Mutex;

use std::time::Duration;

use healer_plugin_sdk::{Finding, Observation};
use tokio::sync::{mpsc, oneshot, Notify};

use super::outbox::Outbox;
use super::wire::{self, Answer, FromWorker, ToWorker};
use crate::plugins::bounds::Findings;
use crate::plugins::lock::lock;
use crate::plugins::package::{CheckResult, DiagnosisResult, Observed, QuietChecks, WatchNews};

/// One running worker.
pub struct Conn {
    /// Which of its package's workers it is (counted from 1).
    pub generation: u64,
    pub pid: u32,
    pub out: Outbox,
    pub open: Mutex<Open>,
    /// Stop the worker: the package is no longer used.
    pub stop: Notify,
}

/// Where what a watched monitor's worker says goes (see
/// [`crate::plugins::package::Watching`]).
pub struct Watcher {
    pub news: Box<dyn Fn(WatchNews) -> bool + Send + Sync>,
    pub quiet: Box<dyn Fn(QuietChecks) -> bool + Send + Sync>,
}

/// What waits on one running worker.
#[derive(Default)]
pub struct Open {
    pub calls: HashMap<u64, oneshot::Sender<Result<Answer, String>>>,
    /// Boxed: a channel allocates its slots 32 at a time, and one
    /// channel per monitor adds up at 10,000 targets.
    pub pushes: HashMap<u64, mpsc::Sender<Option<Box<Observation>>>>,
    /// Monitors checked on their grids in the worker, by instance.
    pub watches: HashMap<u64, Watcher>,
    /// Set once the worker has ended: why.
    pub ended: Option<String>,
}

impl Conn {
    /// Sends `message`; `false` when the outbox has no room for it.
    pub fn send(&self, message: &ToWorker) -> bool {
        self.out.send(wire::encode(message)).is_ok()
    }

    /// Hands what the worker sent to the call or push stream it is for.
    pub fn deliver(&self, message: FromWorker) {
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
            FromWorker::Watched {
                monitor,
                began_ns,
                late_us,
                took_us,
                checked,
                diagnoses,
            } => {
                let Some(watcher) = open.watches.get(&monitor) else {
                    return;
                };
                let news = WatchNews::Checked {
                    observed: observed(checked, diagnoses),
                    began: wire::instant_of(began_ns),
                    late: Duration::from_micros(late_us),
                    took: Duration::from_micros(took_us),
                };
                // Not taken: healer checks it itself from now on.
                if !(watcher.news)(news) {
                    open.watches.remove(&monitor);
                    drop(open);
                    self.send(&ToWorker::Unwatch { monitor });
                }
            }
            FromWorker::Quiet(runs) => {
                let mut forgotten = Vec::new();
                // One entry a watch at most: a worker that repeats one is
                // not heard out.
                let watches = open.watches.len();
                for runs in runs.into_iter().take(watches) {
                    let Some(watcher) = open.watches.get(&runs.monitor) else {
                        continue;
                    };
                    let quiet = QuietChecks {
                        checks: runs.checks,
                        took: Duration::from_micros(u64::from(runs.took_us)),
                        late: runs.late,
                        late_by: Duration::from_micros(runs.late_us),
                        missed: runs.missed,
                        latest: (runs.latest_ns != 0).then(|| wire::instant_of(runs.latest_ns)),
                    };
                    if !(watcher.quiet)(quiet) {
                        forgotten.push(runs.monitor);
                    }
                }
                drop(open);
                for monitor in forgotten {
                    self.send(&ToWorker::FactsForgotten { monitor });
                }
            }
            FromWorker::Pong { .. } | FromWorker::Ready => {}
        }
    }

    /// Ends every call in flight with `message`, closes every push stream
    /// and ends every watch; returns how many calls were in flight and
    /// watches ended.
    pub fn end(&self, message: &str) -> usize {
        let mut open = lock(&self.open);
        open.ended = Some(message.to_owned());
        open.pushes.clear();
        // A watched monitor's checks were under way in it too.
        let watched = open.watches.len();
        for (_, watcher) in open.watches.drain() {
            (watcher.news)(WatchNews::Ended(message.to_owned()));
        }
        let calls = std::mem::take(&mut open.calls);
        let in_flight = calls.len() + watched;
        for (_, waiting) in calls {
            let _ = waiting.send(Err(message.to_owned()));
        }
        in_flight
    }
}

/// A check and its diagnoses as a worker said them.
pub fn observed(checked: wire::Checked, diagnoses: Vec<wire::Diagnosis>) -> Observed {
    Observed {
        checked: match checked {
            // Its worker diagnosed it: its details are not healer's to
            // read (nor to parse), but its facts are.
            wire::Checked::Seen(seen) => match seen.into_observation_without_details() {
                Ok(seen) => CheckResult::Seen(seen),
                Err(why) => CheckResult::Seen(Observation::unknown(why)),
            },
            wire::Checked::Failed(error) => CheckResult::Failed(error),
            wire::Checked::TimedOut => CheckResult::TimedOut,
        },
        diagnoses: diagnoses
            .into_iter()
            .map(|diagnosis| match diagnosis {
                wire::Diagnosis::Found(found) => DiagnosisResult::Found(findings(found)),
                wire::Diagnosis::Failed(error) => DiagnosisResult::Failed(error),
                wire::Diagnosis::TimedOut => DiagnosisResult::TimedOut,
            })
            .collect(),
    }
}

/// Findings as decoded (their details already within the budget of one
/// answer), with the count of those left out.
pub fn findings(found: wire::FoundList) -> Findings {
    Findings {
        kept: found.kept.into_iter().map(Finding::from).collect(),
        dropped: found.dropped,
    }
}
