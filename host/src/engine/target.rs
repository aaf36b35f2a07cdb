//! One target's loop: wait for a check to fall due, a push, a re-check
//! request or an attempt's backoff to end; run the checks that are due
//! (each with its deadline), diagnose, update the target's one issue
//! tracker; recover what is due, trying the matching recoverers in order;
//! after a recovery, verify it with every check before anything else;
//! repeat. A target's checks and recoveries run one at a time: an issue
//! another check raises while (or when) one is recovered waits for its
//! verification instead of starting another. Every transition is an event; nothing here writes
//! the log or the store.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use healer_plugin_sdk::redact;
use healer_plugin_sdk::{Duration as HumanDuration, Finding, Observation, Recovery, Status};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::{sleep_until, timeout, Instant};
use tracing::debug;

use super::check::Watch;
use super::{Command, Health, Runner, Shared};
use crate::board::{Held, Slot, TargetView};
use crate::clock::Wall;
use crate::events::{Event, Events, Role, StepResult};
use crate::issues::{Issue, Layout, Seen, State, Tracker, Transition};
use crate::plugins::{CheckResult, DiagnosisResult, Observing};

/// What `healer once` found on one target: its worst observation (the
/// summaries of all its checks) and every finding kind.
pub struct Looked {
    pub target: String,
    pub seen: Observation,
    pub kinds: Vec<String>,
}

/// What healer allows its own machinery (the worker, the socket) on top
/// of the plugins' deadlines, when a worker keeps them.
const MACHINERY_SLACK: Duration = Duration::from_secs(1);

/// The state of one target's healing loop.
pub struct Cycle {
    runner: Runner,
    checks: Vec<Watch>,
    shared: Arc<Shared>,
    limiter: Arc<Semaphore>,
    events: Events,
    tracker: Tracker,
    /// The latest finding of each open issue: what recoverers are given.
    findings: HashMap<String, Finding>,
    /// Issues whose recovery is held by a dependency (said once each).
    held: BTreeMap<String, Held>,
    /// UNKNOWN issues no recoverer asked for (said once each).
    withheld: HashSet<String>,
    /// Issues whose recovery waits for the pause they were told of
    /// (said once per pause).
    paused: HashSet<String>,
    /// Where the operator sees it; none for `healer once`.
    slot: Option<Arc<Slot>>,
    /// Where each source's findings of this run end in the list the run
    /// gathered (none: they all come from the monitor).
    sources: Vec<usize>,
    /// What this step's findings lost.
    left_out: LeftOut,
    /// The sources (diagnosers) that are leaving findings out: said.
    leaving_out: HashSet<String>,
    /// The kinds this step found with evidence to act on: by a run that
    /// could tell, or UNKNOWN ones. Only these may be recovered.
    fresh: HashSet<String>,
    /// When every check runs next, off their grids: the verification after
    /// a recovery's grace, or the end of an attempt's backoff.
    off_grid: Option<Instant>,
    /// A recovery ran and its verification has not begun: what monitors
    /// push meanwhile waits, and is then older than the verification.
    verifying: bool,
    /// The latest recovery's backoff: until it ends, an issue only other
    /// checks than the recovered issue's (a bit each) found waits, also
    /// when that issue resolved (a restarted service still starting).
    settling: Option<(Wall, u64)>,
    /// The shortest interval of its checks: the slack of its promises.
    slack: Duration,
}

/// What one step's findings lost: how many, why, and whose.
#[derive(Default)]
struct LeftOut {
    count: usize,
    reasons: Vec<String>,
    sources: HashSet<String>,
}

impl LeftOut {
    fn add(&mut self, source: &str, count: usize, reason: String) {
        self.count += count;
        self.reasons.push(reason);
        self.sources.insert(source.to_owned());
    }
}

/// What the loop woke up for.
enum Wake {
    /// Checks fell due on their grids.
    Scheduled,
    /// Every check, off the grids: a verification, a backoff's end, a
    /// dependency that recovered.
    All,
    /// A check's monitor pushed an observation.
    Pushed(usize, Observation),
}

/// What one run of one check saw.
struct Run {
    seen: Observation,
    checked: bool,
    findings: Vec<Finding>,
    diagnosed: bool,
    took: Duration,
}

impl Cycle {
    pub(crate) fn new(
        mut runner: Runner,
        shared: Arc<Shared>,
        limiter: Arc<Semaphore>,
        events: Events,
        history_len: usize,
    ) -> Cycle {
        let target = Arc::clone(&runner.target);
        let mut checks = Vec::new();
        let mut first_source = 0;
        for (index, (check, instances)) in target
            .checks
            .iter()
            .zip(std::mem::take(&mut runner.checks))
            .enumerate()
        {
            let watch = Watch::new(
                index,
                check,
                instances,
                first_source,
                history_len,
                &target.name,
            );
            first_source += watch.sources();
            checks.push(watch);
        }
        let layout = Layout {
            checks: checks.len(),
            sources: first_source,
        };
        let mut tracker = Tracker::with_layout(target.policy, layout);
        tracker.restore(runner.saved.clone(), Wall::now());
        tracker.carry_spent(runner.spent.clone());
        // Which check found a restored issue is not saved: the checks
        // whose plugins name its kind (`process.*` is the process check's)
        // hold it, or, when none does, every check.
        tracker.claim_restored(|kind| {
            let named = kind.split('.').next().unwrap_or(kind);
            checks
                .iter()
                .filter(|check| {
                    check.plugin == named || check.diagnosers.iter().any(|(name, _)| name == named)
                })
                .fold(0, |bits, check| bits | 1 << check.index.min(63))
        });
        let slack = checks
            .iter()
            .map(|check| check.interval)
            .min()
            .unwrap_or_else(|| target.policy.interval.into());
        Cycle {
            checks,
            sources: Vec::new(),
            left_out: LeftOut::default(),
            leaving_out: HashSet::new(),
            fresh: HashSet::new(),
            off_grid: None,
            verifying: false,
            settling: None,
            slack,
            runner,
            shared,
            limiter,
            events,
            tracker,
            findings: HashMap::new(),
            held: BTreeMap::new(),
            withheld: HashSet::new(),
            paused: HashSet::new(),
            slot: None,
        }
    }

    /// How the target looks before its first check.
    pub(crate) fn view(&self) -> TargetView {
        let target = &self.runner.target;
        let mut view = TargetView {
            name: target.name.clone(),
            monitor: target.monitors(),
            interval: target.policy.interval,
            status: None,
            summary: String::new(),
            metrics: Vec::new(),
            last_check: None,
            took_us: 0,
            checks: self.checks.iter().map(Watch::view).collect(),
            issues: self.issues(),
            held: Vec::new(),
            paused: self.shared.pause_of(&target.name),
        };
        view.settle();
        view
    }

    /// Promises progress (the next step, or the end of a plugin call) by
    /// `within` from now, plus one interval of slack: a loop that breaks
    /// its promise is stalled (`/healthz`, the systemd watchdog).
    fn promise(&self, within: Duration) {
        if let Some(slot) = &self.slot {
            slot.progress((Instant::now() + within + self.slack).into_std());
        }
    }

    /// The issues as the board shows them, in kind order.
    fn issues(&self) -> Vec<Issue> {
        let mut issues: Vec<_> = self.tracker.issues().cloned().collect();
        issues.sort_by(|a, b| a.kind.cmp(&b.kind));
        issues
    }

    /// Writes the issues (and what holds them) on the board, as soon as
    /// they change: an attempt or an escalation must not wait for the
    /// next check to be seen.
    fn show_issues(&self) {
        if let Some(slot) = &self.slot {
            let issues = self.issues();
            let held: Vec<Held> = self.held.values().cloned().collect();
            slot.update(|view| {
                view.issues = issues;
                view.held = held;
                view.settle();
            });
        }
    }

    /// Writes the latest run of check `index` on the board.
    fn show(&self, index: usize, seen: &Observation, took: Option<Duration>) {
        let Some(slot) = &self.slot else {
            return;
        };
        slot.update(|view| {
            if let Some(check) = view.checks.get_mut(index) {
                check.status = Some(seen.status);
                check.summary.clone_from(&seen.summary);
                check.metrics.clone_from(&seen.metrics);
                check.last_check = Some(Wall::now());
                if let Some(took) = took {
                    check.took_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
                    view.took_us = check.took_us;
                }
            }
            if let Some(took) = took {
                slot.checked_in(took);
            }
        });
    }

    fn name(&self) -> &str {
        &self.runner.target.name
    }

    fn emit(&self, event: Event) {
        self.events.emit(event);
    }

    /// Runs until `shutdown` changes or it is told to stop; returns its
    /// tracker, for a successor to carry on from.
    /// Boxed: an async fn keeps its moved-in arguments beside its locals,
    /// so a cycle passed by value would be stored twice in the task of
    /// every target.
    pub(crate) async fn run(
        mut self: Box<Self>,
        mut commands: mpsc::Receiver<Command>,
        mut shutdown: watch::Receiver<bool>,
        slot: Arc<Slot>,
    ) -> Tracker {
        self.slot = Some(slot);
        let policy = self.runner.target.policy;
        // Boxed: a channel's slots are allocated 32 at a time. Each push
        // carries its check and when it arrived.
        let (push_sender, mut pushes) = mpsc::channel::<Box<(usize, Instant, Observation)>>(16);
        let forwards: Vec<_> = self
            .checks
            .iter()
            .map(|check| {
                let (index, monitor) = (check.index, Arc::clone(&check.monitor));
                let sender = push_sender.clone();
                tokio::spawn(async move {
                    while let Some(seen) = monitor.next_push().await {
                        let push = Box::new((index, Instant::now(), seen));
                        if sender.send(push).await.is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
        drop(push_sender);
        loop {
            let next = self.next_wake();
            self.promise(next.saturating_duration_since(Instant::now()));
            let wake = tokio::select! {
                _ = sleep_until(next) => {
                    if self.off_grid.is_some_and(|at| at <= Instant::now()) {
                        Wake::All
                    } else {
                        Wake::Scheduled
                    }
                }
                Some(push) = pushes.recv(), if !self.verifying => {
                    let (index, arrived, seen) = *push;
                    // A run begun after this push arrived has seen a newer
                    // truth (the push waited while a check and its
                    // recovery ran): acting on it now would be acting on
                    // stale evidence, such as an exit already healed.
                    let checked = self.checks.get(index).and_then(|check| check.checked_at);
                    if checked.is_some_and(|checked| arrived < checked) {
                        debug!(target = %self.name(), "a push older than the latest check is dropped");
                        continue;
                    }
                    Wake::Pushed(index, seen)
                }
                command = commands.recv() => match command {
                    // A verification is due: it runs every check anyway.
                    Some(Command::Recheck) if self.verifying => continue,
                    Some(Command::Recheck) => {
                        debug!(target = %self.name(), "re-checking at once: a dependency recovered");
                        Wake::All
                    }
                    Some(Command::Reset(asked)) => {
                        let super::Reset { kind, reply } = *asked;
                        let reset = self.reset(kind.as_deref());
                        // At once, but never before a recovery's grace ends.
                        if !reset.is_empty() && !self.verifying {
                            self.off_grid = Some(Instant::now());
                        }
                        let _ = reply.send(reset);
                        continue;
                    }
                    Some(Command::Stop) | None => break,
                },
                _ = shutdown.changed() => break,
            };
            let started = Instant::now();
            let (runs, pushed, on_grid) = match wake {
                Wake::Scheduled => {
                    let due = self
                        .checks
                        .iter()
                        .filter(|check| check.schedule.next <= started)
                        .map(|check| check.index)
                        .collect();
                    (due, None, true)
                }
                Wake::All => {
                    self.off_grid = None;
                    self.verifying = false;
                    ((0..self.checks.len()).collect(), None, false)
                }
                Wake::Pushed(index, seen) => (Vec::new(), Some((index, seen)), false),
            };
            // Boxed: a step's future is large and lives only while it
            // runs; the loop at rest (10,000 of them) stays small.
            let recovered = Box::pin(self.step(&runs, pushed)).await;
            if frozen_for_a_test(self.name()) {
                // Debug builds only: a loop that stops making progress,
                // as a bug would stop it, for the watchdog's test.
                std::future::pending::<()>().await;
            }
            let now = Instant::now();
            // Re-probed slowly: the checks that found the issues, once
            // every issue is escalated; the others keep their pace.
            let escalated = if self.tracker.all_escalated() {
                self.tracker.escalated_in()
            } else {
                0
            };
            for &index in &runs {
                let check = &mut self.checks[index];
                let every = if escalated & 1 << index.min(63) != 0 {
                    policy.escalated_interval.into()
                } else {
                    check.interval
                };
                if on_grid {
                    check.schedule.after_scheduled(started, now, every);
                } else {
                    check.schedule.after_unscheduled(now, every);
                }
            }
            self.verifying |= recovered;
            self.off_grid = if recovered {
                // Verified by every check after the grace, before anything
                // else: what was pushed meanwhile is older than that.
                Some(now + Duration::from(policy.grace))
            } else {
                match (self.off_grid, self.attempt_due()) {
                    (Some(set), Some(due)) => Some(set.min(due)),
                    (set, due) => set.or(due),
                }
            };
        }
        for forward in forwards {
            forward.abort();
        }
        self.tracker
    }

    /// When the loop must next wake: the first check due, or the
    /// off-grid run of every check.
    fn next_wake(&self) -> Instant {
        // Nothing comes between a recovery and its verification.
        if let Some(verification) = self.off_grid.filter(|_| self.verifying) {
            return verification;
        }
        let scheduled = self.checks.iter().map(|check| check.schedule.next).min();
        match (scheduled, self.off_grid) {
            (Some(next), Some(off)) => next.min(off),
            (Some(next), None) => next,
            (None, Some(off)) => off,
            (None, None) => Instant::now() + self.slack,
        }
    }

    /// When an attempt's backoff ends, for an issue that will want one
    /// then (its checks may not fall due for a while): every check runs
    /// then, so attempts come `backoff` apart as documented. An issue due
    /// already but not recovered waits for what holds it instead (a
    /// dependency re-checks it when it recovers; a pause, its checks).
    fn attempt_due(&self) -> Option<Instant> {
        let now = Wall::now();
        let policy = self.runner.target.policy;
        // An issue another check found, waiting for the latest recovery's
        // backoff, is looked at again when it ends.
        let settled = self
            .settling
            .map(|(until, _)| until)
            .filter(|_| self.tracker.has_issues());
        let at = self
            .tracker
            .issues()
            .filter(|issue| matches!(issue.state, State::Open | State::Recovering))
            .filter(|issue| issue.attempts < policy.max_attempts)
            .map(|issue| issue.next_attempt_at)
            .chain(settled)
            .filter(|at| *at > now)
            .min()?;
        Some(Instant::now() + at.since(now))
    }

    /// An operator's reset: the issue of `kind` (or every escalated one)
    /// gets its attempts back; the issues reset.
    fn reset(&mut self, kind: Option<&str>) -> Vec<Issue> {
        let kinds: Vec<String> = match kind {
            Some(kind) => vec![kind.to_owned()],
            None => self
                .tracker
                .issues()
                .filter(|issue| issue.state == State::Escalated)
                .map(|issue| issue.kind.clone())
                .collect(),
        };
        let mut reset = Vec::new();
        for kind in kinds {
            if let Some(issue) = self.tracker.reset(&kind) {
                self.settling = None;
                self.held.remove(&kind);
                self.withheld.remove(&kind);
                self.emit(Event::IssueResetByOperator {
                    target: self.name().to_owned(),
                    issue: issue.clone(),
                });
                reset.push(issue);
            }
        }
        self.show_issues();
        reset
    }

    /// Every check once (and diagnosis, and recovery if asked), for
    /// `healer once`: the target's worst observation (the summaries of
    /// all its checks) and every kind found.
    pub(crate) async fn once(&mut self, recover: bool) -> Looked {
        let mut kinds = Vec::new();
        let mut worst: Option<Observation> = None;
        let mut summaries = Vec::new();
        for index in 0..self.checks.len() {
            let run = self.run_check(index, None, recover).await;
            kinds.extend(run.findings.iter().map(|f| f.kind.clone()));
            if self.checks.len() > 1 {
                summaries.push(format!("{}: {}", self.checks[index].name, run.seen.summary));
            }
            if worst.as_ref().is_none_or(|w| run.seen.status > w.status) {
                worst = Some(run.seen);
            }
        }
        let mut seen = worst.unwrap_or_else(|| Observation::unknown("no check"));
        if !summaries.is_empty() {
            seen.summary = summaries.join("; ");
        }
        if recover {
            self.say_left_out(true);
            self.settle_health();
            self.recover().await;
        }
        Looked {
            target: self.name().to_owned(),
            seen,
            kinds,
        }
    }

    /// One step: a pushed observation or the runs of `runs`, then at
    /// most one recovery. Returns whether a recovery ran.
    async fn step(&mut self, runs: &[usize], pushed: Option<(usize, Observation)>) -> bool {
        self.fresh.clear();
        let mut conclusive = true;
        if let Some((index, seen)) = pushed {
            conclusive &= self.run_check(index, Some(seen), true).await.concluded();
        }
        for &index in runs {
            conclusive &= self.run_check(index, None, true).await.concluded();
        }
        self.say_left_out(conclusive);
        self.settle_health();
        self.show_issues();
        // Never act on false evidence: a check that could not tell (it
        // failed, timed out, or said UNKNOWN) resolves nothing, and only
        // recoverers that asked for UNKNOWN act after it.
        self.recover().await
    }

    /// Runs check `index` (or diagnoses what its monitor pushed) and, when
    /// `track`, feeds what it found to the issues.
    async fn run_check(&mut self, index: usize, pushed: Option<Observation>, track: bool) -> Run {
        let was_push = pushed.is_some();
        if !was_push {
            // What its monitor pushed before this run began is stale.
            self.checks[index].checked_at = Some(Instant::now());
        }
        let run = if self.checks[index].in_place {
            self.observe(index, pushed).await
        } else {
            let started = Instant::now();
            let (seen, checked) = match pushed {
                Some(seen) => (seen, true),
                None => self.check(index).await,
            };
            let took = if was_push {
                Duration::ZERO
            } else {
                started.elapsed()
            };
            self.note_status(index, &seen, was_push, took);
            let (findings, diagnosed) = self.diagnose(index, &seen, checked).await;
            Run {
                seen,
                checked,
                findings,
                diagnosed,
                took,
            }
        };
        let conclusive = run.concluded();
        if track {
            self.after_diagnosis(index, &run.findings, conclusive);
            for finding in &run.findings {
                if conclusive || is_unknown(&finding.kind) {
                    self.fresh.insert(finding.kind.clone());
                }
            }
        }
        self.show(index, &run.seen, (!was_push).then_some(run.took));
        self.checks[index].remember(run.seen.clone());
        run
    }

    /// Runs check `index`'s monitor within its deadline; `false` when the
    /// check itself failed (the observation is then UNKNOWN and says why).
    async fn check(&mut self, index: usize) -> (Observation, bool) {
        let check = &self.checks[index];
        let (deadline, plugin) = (check.deadline, check.plugin.clone());
        self.promise(deadline.into());
        match timeout(deadline.into(), check.monitor.check()).await {
            Ok(Ok(seen)) => (seen, true),
            Ok(Err(error)) => (self.plugin_failed(Role::Monitor, &plugin, &error), false),
            Err(_) => (
                self.plugin_timed_out(Role::Monitor, &plugin, deadline),
                false,
            ),
        }
    }

    /// A plugin call that failed: its event, and the UNKNOWN observation
    /// it stands for when it was the check.
    fn plugin_failed(&self, role: Role, plugin: &str, error: &str) -> Observation {
        let error = redact::text(error);
        let summary = format!("check failed: {error}");
        self.emit(Event::PluginFailed {
            target: self.name().to_owned(),
            role,
            plugin: plugin.to_owned(),
            error,
        });
        Observation::unknown(summary)
    }

    /// A plugin call past its deadline: its event, and the UNKNOWN
    /// observation it stands for when it was the check.
    fn plugin_timed_out(&self, role: Role, plugin: &str, after: HumanDuration) -> Observation {
        self.emit(Event::PluginTimedOut {
            target: self.name().to_owned(),
            role,
            plugin: plugin.to_owned(),
            after,
        });
        Observation::unknown(format!("check timed out after {after}"))
    }

    fn note_status(&mut self, index: usize, seen: &Observation, pushed: bool, took: Duration) {
        let several = self.checks.len() > 1;
        let check = &mut self.checks[index];
        let was = check.last_status.replace(seen.status);
        if was == Some(seen.status) && !self.events.wants_every_check() {
            return;
        }
        let name = if several {
            check.name.clone()
        } else {
            String::new()
        };
        self.emit(Event::Checked {
            target: self.name().to_owned(),
            check: name,
            status: seen.status,
            was,
            summary: seen.summary.clone(),
            pushed,
            took_us: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
        });
    }

    /// A check (or a pushed observation) diagnosed in the monitor's worker,
    /// which keeps the history: one call instead of one per plugin, and
    /// the history never crosses. The worker enforces the check's and each
    /// diagnoser's deadline; healer's own is for the machinery.
    async fn observe(&mut self, index: usize, pushed: Option<Observation>) -> Run {
        let check = &self.checks[index];
        let within: Duration = check.deadline.into();
        let plugins = 1 + u32::try_from(check.diagnosers.len()).unwrap_or(u32::MAX);
        let deadline = within.saturating_mul(plugins) + MACHINERY_SLACK;
        self.promise(deadline);
        let was_push = pushed.is_some();
        let started = Instant::now();
        let check = &self.checks[index];
        let diagnosers: Vec<_> = check.diagnosers.iter().map(|(_, d)| d).collect();
        let observing = Observing {
            pushed: pushed.as_ref(),
            missed: &check.missed,
            keep: check.history_len,
            within,
        };
        let observed = timeout(deadline, check.monitor.observe(&diagnosers, observing)).await;
        let took = if was_push {
            Duration::ZERO
        } else {
            started.elapsed()
        };
        let plugin = check.plugin.clone();
        let first_diagnoser = check.diagnosers.first().map(|(name, _)| name.clone());
        let observed = match observed {
            Ok(Ok(observed)) => {
                self.checks[index].missed.clear();
                observed
            }
            // healer's side failed (the worker crashed or stopped
            // answering): the worker's history never saw this.
            failed => {
                // What was pushed is still evidence; only its diagnosis
                // is missing, so it concludes nothing. A check that never
                // came back is UNKNOWN.
                let (role, plugin) = match (&pushed, first_diagnoser) {
                    (Some(_), Some(diagnoser)) => (Role::Diagnoser, diagnoser),
                    _ => (Role::Monitor, plugin),
                };
                let unknown = match failed {
                    Ok(Err(error)) => self.plugin_failed(role, &plugin, &error),
                    _ => self.plugin_timed_out(role, &plugin, HumanDuration(deadline)),
                };
                let seen = pushed.unwrap_or(unknown);
                self.checks[index].remember_missed(seen.clone());
                self.note_status(index, &seen, was_push, took);
                let (checked, findings, diagnosed) = if was_push {
                    (true, Vec::new(), false)
                } else {
                    (false, self.checks[index].undiagnosed(&seen), true)
                };
                return Run {
                    seen,
                    checked,
                    findings,
                    diagnosed,
                    took,
                };
            }
        };
        let (seen, checked) = match observed.checked {
            CheckResult::Seen(seen) => (seen, true),
            CheckResult::Failed(error) => {
                (self.plugin_failed(Role::Monitor, &plugin, &error), false)
            }
            CheckResult::TimedOut => (
                self.plugin_timed_out(Role::Monitor, &plugin, HumanDuration(within)),
                false,
            ),
        };
        self.note_status(index, &seen, was_push, took);
        if observed.diagnoses.is_empty() {
            let findings = self.checks[index].undiagnosed(&seen);
            return Run {
                seen,
                checked,
                findings,
                diagnosed: true,
                took,
            };
        }
        let mut findings = Vec::new();
        let names: Vec<String> = self.checks[index]
            .diagnosers
            .iter()
            .map(|(name, _)| name.clone())
            .collect();
        // A worker that answered for fewer diagnosers than asked leaves
        // the diagnosis incomplete.
        let mut complete = observed.diagnoses.len() == names.len();
        self.sources.clear();
        for (diagnoser, diagnosis) in names.iter().zip(observed.diagnoses) {
            match diagnosis {
                DiagnosisResult::Found(found) => {
                    // Findings left out may hold an open issue's kind:
                    // such a check cannot tell that it healed.
                    complete &= found.dropped == 0;
                    note_answered_too_many(&mut self.left_out, diagnoser, found.dropped);
                    findings.extend(found.kept);
                }
                DiagnosisResult::Failed(error) => {
                    complete = false;
                    self.plugin_failed(Role::Diagnoser, diagnoser, &error);
                }
                DiagnosisResult::TimedOut => {
                    complete = false;
                    self.plugin_timed_out(Role::Diagnoser, diagnoser, HumanDuration(within));
                }
            }
            self.sources.push(findings.len());
        }
        Run {
            seen,
            checked,
            findings,
            diagnosed: complete,
            took,
        }
    }

    /// Findings from check `index`'s diagnosers, or, with none configured
    /// (or when the check itself failed, which diagnosers cannot
    /// interpret), the observation itself when it is not OK
    /// (`<monitor>.<status>`). The flag is `false` when a diagnoser failed:
    /// the findings may be incomplete.
    async fn diagnose(
        &mut self,
        index: usize,
        seen: &Observation,
        checked: bool,
    ) -> (Vec<Finding>, bool) {
        self.sources.clear();
        let check = &self.checks[index];
        // An UNKNOWN observation is `<monitor>.unknown`: no diagnoser can
        // read evidence into it that is not there.
        if check.diagnosers.is_empty() || !checked || seen.status == Status::Unknown {
            return (check.undiagnosed(seen), true);
        }
        let deadline = check.deadline;
        self.promise(Duration::from(deadline) * check.diagnosers.len() as u32);
        let check = &mut self.checks[index];
        check.history.make_contiguous();
        let (history, _) = check.history.as_slices();
        let mut findings = Vec::new();
        let mut complete = true;
        let mut failures = Vec::new();
        for (plugin, diagnoser) in &check.diagnosers {
            match timeout(deadline.into(), diagnoser.diagnose(seen, history)).await {
                Ok(Ok(found)) => {
                    complete &= found.dropped == 0;
                    note_answered_too_many(&mut self.left_out, plugin, found.dropped);
                    findings.extend(found.kept);
                }
                Ok(Err(error)) => {
                    complete = false;
                    failures.push((plugin.clone(), Some(error)));
                }
                Err(_) => {
                    complete = false;
                    failures.push((plugin.clone(), None));
                }
            }
            self.sources.push(findings.len());
        }
        for (plugin, error) in failures {
            match error {
                Some(error) => self.plugin_failed(Role::Diagnoser, &plugin, &error),
                None => self.plugin_timed_out(Role::Diagnoser, &plugin, deadline),
            };
        }
        (findings, complete)
    }

    /// Feeds check `index`'s findings to the issues; `conclusive` is
    /// `false` when the check or a diagnoser failed, and then nothing
    /// counts as healthy.
    fn after_diagnosis(&mut self, index: usize, findings: &[Finding], conclusive: bool) {
        // One list per diagnoser (each holds its share of the issues), or
        // one for the monitor when nothing diagnosed this check.
        let mut sources = std::mem::take(&mut self.sources);
        let from_monitor = sources.is_empty();
        if from_monitor {
            sources.push(findings.len());
        }
        let check = &self.checks[index];
        sources.resize(check.sources().max(sources.len()), findings.len());
        let mut start = 0;
        let lists: Vec<&[Finding]> = sources
            .iter()
            .map(|&end| {
                let end = end.clamp(start, findings.len());
                let list = &findings[start..end];
                start = end;
                list
            })
            .collect();
        let seen = Seen {
            check: index,
            first_source: check.first_source,
            lists: &lists,
        };
        for transition in self.tracker.observe_check(seen, Wall::now(), conclusive) {
            if let Transition::LeftOut {
                source,
                target_full,
                kinds,
                count,
            } = transition
            {
                let check = &self.checks[index];
                let local = source.saturating_sub(check.first_source);
                let whose = match check.diagnosers.get(local) {
                    Some((diagnoser, _)) if !from_monitor => format!("diagnoser {diagnoser}"),
                    _ => "the monitor".to_owned(),
                };
                let max = crate::issues::MAX_ISSUES_PER_TARGET;
                let why = if target_full {
                    format!("the target holds all the {max} open issues it may")
                } else {
                    format!("{whose} holds its share of the target's {max} open issues")
                };
                let reason = format!(
                    "{why}: {count} new kinds from {whose} not opened ({}{})",
                    kinds.join(", "),
                    if count > kinds.len() { ", …" } else { "" }
                );
                self.left_out.add(&whose, count, reason);
                continue;
            }
            self.emit_transition(transition);
        }
        // The latest finding of each open issue, for its recoverers.
        for finding in findings {
            if self.tracker.issue(&finding.kind).is_some() {
                self.findings.insert(finding.kind.clone(), finding.clone());
            }
        }
    }

    /// After a step: what no open issue needs is let go, and dependents
    /// learn whether the target is down.
    fn settle_health(&mut self) {
        let tracker = &self.tracker;
        self.findings
            .retain(|kind, _| tracker.issue(kind).is_some());
        self.held.retain(|kind, _| tracker.issue(kind).is_some());
        self.withheld.retain(|kind| tracker.issue(kind).is_some());
        let down = self.tracker.has_issues();
        let name = self.name().to_owned();
        if self.shared.set_health(&name, down) {
            self.shared.recheck_dependents(&name);
        }
    }

    /// Says once that findings are being left out, when a step starts
    /// leaving some out; the episode ends with a conclusive step that left
    /// none out (a failed diagnosis in between ends nothing).
    fn say_left_out(&mut self, conclusive: bool) {
        let left_out = std::mem::take(&mut self.left_out);
        let starting = left_out
            .sources
            .iter()
            .any(|source| !self.leaving_out.contains(source));
        if starting {
            self.emit(Event::FindingsDropped {
                target: self.name().to_owned(),
                count: left_out.count,
                reason: left_out.reasons.join("; "),
            });
        }
        if conclusive {
            self.leaving_out = left_out.sources;
        } else {
            self.leaving_out.extend(left_out.sources);
        }
    }

    fn emit_transition(&self, transition: Transition) {
        let target = self.name().to_owned();
        self.emit(match transition {
            Transition::Soft {
                kind,
                failures,
                needed,
            } => Event::FindingSeen {
                target,
                kind,
                failures,
                needed,
            },
            Transition::Opened(issue) => Event::IssueOpened { target, issue },
            Transition::Resolved(issue) => Event::IssueResolved { target, issue },
            Transition::Escalated { issue, reason } => Event::IssueEscalated {
                target,
                issue,
                reason,
            },
            Transition::Forgotten { kind, full } => Event::IssueForgotten {
                target,
                kind,
                reason: if full {
                    format!(
                        "the target remembers {} resolved issues at most: the oldest's attempts are forgotten",
                        crate::issues::MAX_REMEMBERED
                    )
                } else {
                    format!(
                        "stable for {}: attempts forgotten",
                        self.runner.target.policy.stable_after
                    )
                },
            },
            Transition::Dropped { issue, reason } => Event::IssueDropped {
                target,
                issue,
                reason,
            },
            // Gathered by `after_diagnosis`, said by `say_left_out`.
            Transition::LeftOut { .. } => return,
        });
    }

    /// Whether the target is paused for maintenance: then nothing due is
    /// recovered, and each issue says so once per pause. A pause that
    /// expired ends here, with an event.
    fn paused(&mut self, due: &[String]) -> bool {
        let name = self.name().to_owned();
        let Some(mut pause) = self.shared.pause_of(&name) else {
            self.paused.clear();
            return false;
        };
        if let Some(shorter) = pause.shortened(Wall::now()) {
            if self.shared.shorten_pause(&name, &pause, shorter.clone()) {
                if let Some(slot) = &self.slot {
                    slot.update(|view| view.paused = Some(shorter.clone()));
                }
                self.emit(Event::PauseShortened {
                    target: name.clone(),
                    pause: shorter.clone(),
                    reason: super::PAUSE_TOO_LONG.to_owned(),
                });
            }
            pause = shorter;
        }
        if !pause.holds(Wall::now()) {
            if self.shared.end_pause(&name, &pause) {
                if let Some(slot) = &self.slot {
                    slot.update(|view| view.paused = None);
                }
                self.emit(Event::TargetResumed {
                    target: name,
                    reason: "the pause expired".to_owned(),
                });
            }
            self.paused.clear();
            return false;
        }
        for kind in due {
            if self.paused.insert(kind.clone()) {
                self.emit(Event::RecoveryPaused {
                    target: name.clone(),
                    kind: kind.clone(),
                    until: pause.until,
                    reason: pause.reason.clone(),
                });
            }
        }
        true
    }

    /// Recovers the issues that are due and were found by this step (their
    /// evidence is fresh), oldest first; returns whether an attempt ran.
    /// Once one ran, an issue another check found waits for the
    /// verification by every check: two checks of one service (its pid
    /// and its port) see one failure twice, and one restart heals both.
    /// The other issues of the same checks are recovered in turn, as
    /// distinct problems (two log lines). An issue nothing can recover is
    /// escalated on the way.
    async fn recover(&mut self) -> bool {
        let target = Arc::clone(&self.runner.target);
        let unhealthy = self.shared.first_unhealthy(&target.depends_on);
        if unhealthy.is_none() && !self.held.is_empty() {
            self.held.clear();
            self.show_issues();
        }
        let mut due = self.tracker.due(Wall::now());
        due.retain(|kind| self.fresh.contains(kind));
        if self.paused(&due) || due.is_empty() {
            return false;
        }
        if let Some((dependency, health)) = unhealthy {
            let reason = match health {
                Health::Unchecked => "has not been checked yet",
                _ => "has an open issue",
            };
            let mut changed = false;
            for kind in due {
                let held = self.held.get(&kind);
                if held.is_some_and(|held| held.dependency == dependency && held.reason == reason) {
                    continue;
                }
                changed = true;
                let since = held.map_or_else(Wall::now, |held| held.since);
                self.held.insert(
                    kind.clone(),
                    Held {
                        kind: kind.clone(),
                        dependency: dependency.to_owned(),
                        reason: reason.to_owned(),
                        since,
                    },
                );
                self.events.emit(Event::RecoveryHeld {
                    target: target.name.clone(),
                    kind,
                    dependency: dependency.to_owned(),
                    reason: reason.to_owned(),
                });
            }
            if changed {
                self.show_issues();
            }
            return false;
        }
        // The checks whose issues are being recovered (an attempt made, its
        // backoff not over, or one made in this step): an issue only
        // another check found is one failure seen twice, and waits.
        let (mut shown, mut acted) = (true, false);
        let now = Wall::now();
        let mut recovering = self.tracker.recovering_in(now);
        if let Some((until, checks)) = self.settling {
            if until > now {
                recovering |= checks;
            } else {
                self.settling = None;
            }
        }
        for kind in due {
            let found_by = self.tracker.found_by(&kind);
            if recovering != 0 && found_by & !recovering != 0 {
                debug!(target = %self.name(), kind, "waits: another check's issue is being recovered");
                continue;
            }
            match self.attempt(&kind).await {
                Attempted::Ran => {
                    recovering |= found_by;
                    if let Some(issue) = self.tracker.issue(&kind) {
                        self.settling = Some((issue.next_attempt_at, recovering));
                    }
                    acted = true;
                    shown = true;
                }
                Attempted::Escalated => shown = false,
                Attempted::No => {}
            }
        }
        // Once for everything this step escalated without an attempt.
        if !shown {
            self.show_issues();
        }
        acted
    }

    /// One recovery attempt of the issue of `kind`: its recoverers tried in
    /// order until one succeeds.
    async fn attempt(&mut self, kind: &str) -> Attempted {
        let target = Arc::clone(&self.runner.target);
        let name = target.name.clone();
        let Some(finding) = self.findings.get(kind).cloned() else {
            return Attempted::No;
        };
        let unknown = is_unknown(kind) || finding.severity == Status::Unknown;
        let ladder: Vec<usize> = (0..target.recoverers.len())
            .filter(|&i| target.recoverers[i].handles(kind, unknown))
            .collect();
        if ladder.is_empty() && unknown {
            // healer cannot tell what is wrong: nothing acts, nothing is
            // escalated; the issue resolves when checks can tell again.
            if self.withheld.insert(kind.to_owned()) {
                self.events.emit(Event::RecoveryWithheld {
                    target: name,
                    kind: kind.to_owned(),
                    reason:
                        "its evidence is UNKNOWN, and no recoverer's `on` names an *.unknown kind"
                            .to_owned(),
                });
            }
            return Attempted::No;
        }
        // An attempt would be made: there must be a recoverer for it, and
        // it must fit the target's budget.
        let now = Wall::now();
        let escalated = if ladder.is_empty() {
            let reason = format!("no recoverer of this target handles {kind}");
            Some(self.tracker.escalate(kind, reason, now))
        } else if !self.tracker.within_budget(now) {
            Some(self.tracker.escalate_over_budget(kind, now))
        } else {
            None
        };
        if let Some(escalated) = escalated {
            return match escalated {
                Some(transition) => {
                    self.emit_transition(transition);
                    Attempted::Escalated
                }
                None => Attempted::No,
            };
        }
        // Other targets' recoveries hold the slots, each under promises of
        // its own: waiting for one is not a broken promise.
        if let Some(slot) = &self.slot {
            slot.waiting_for_a_slot();
        }
        let Ok(_permit) = self.limiter.acquire().await else {
            return Attempted::No;
        };
        let Some(issue) = self.tracker.attempt_started(kind, Wall::now()) else {
            return Attempted::No;
        };
        let policy = target.policy;
        let attempt = issue.attempts;
        self.events.emit(Event::AttemptStarted {
            target: name.clone(),
            issue,
            max_attempts: policy.max_attempts,
        });
        self.show_issues();
        let recovery = Recovery {
            target: name.clone(),
            finding,
            attempt,
            params: serde_json::json!({}),
        };
        let mut recovered = false;
        for i in ladder {
            let recoverer = target.recoverers[i].plugin.plugin.clone();
            self.promise(policy.recovery_timeout.into());
            let result = match timeout(
                policy.recovery_timeout.into(),
                self.runner.recoverers[i].recover(&recovery),
            )
            .await
            {
                Ok(Ok(outcome)) => StepResult::success(&outcome.summary),
                Ok(Err(error)) => StepResult::failure(&error),
                Err(_) => StepResult::TimedOut {
                    after: policy.recovery_timeout,
                },
            };
            recovered = result.succeeded();
            self.events.emit(Event::RecovererFinished {
                target: name.clone(),
                kind: kind.to_owned(),
                attempt,
                recoverer,
                result,
            });
            if recovered {
                break;
            }
        }
        if let Some(issue) = self.tracker.attempt_finished(kind, Wall::now()) {
            self.events.emit(Event::AttemptFinished {
                target: name,
                issue,
                recovered,
            });
            self.show_issues();
        }
        Attempted::Ran
    }
}

impl Run {
    /// Whether this run could tell: the check answered, every diagnoser
    /// did, and the status is not UNKNOWN.
    fn concluded(&self) -> bool {
        self.checked && self.diagnosed && self.seen.status != Status::Unknown
    }
}

/// What [`Cycle::attempt`] did.
enum Attempted {
    /// An attempt ran (and the board shows it).
    Ran,
    /// The issue was escalated instead (not yet on the board).
    Escalated,
    /// Nothing.
    No,
}

/// Notes that a diagnoser answered more findings than healer takes.
fn note_answered_too_many(left_out: &mut LeftOut, diagnoser: &str, dropped: usize) {
    if dropped > 0 {
        let source = format!("diagnoser {diagnoser}");
        left_out.add(
            &source,
            dropped,
            format!(
                "diagnoser {diagnoser} answered {} findings; healer takes {} from one answer",
                dropped + crate::plugins::bounds::FINDINGS_PER_ANSWER,
                crate::plugins::bounds::FINDINGS_PER_ANSWER
            ),
        );
    }
}

/// Whether `HEALER_FAULT_FREEZE_TARGET` names this target, in a debug
/// build: its loop then hangs after its first step. Every wait in a loop
/// has a deadline, so only a bug can stall one; this lets the tests show
/// that `/healthz` and the systemd watchdog notice. Release builds ignore
/// it.
fn frozen_for_a_test(target: &str) -> bool {
    cfg!(debug_assertions)
        && std::env::var_os("HEALER_FAULT_FREEZE_TARGET").is_some_and(|name| name == target)
}

/// Whether a finding kind says healer could not tell (`<monitor>.unknown`).
fn is_unknown(kind: &str) -> bool {
    kind.ends_with(".unknown")
}
