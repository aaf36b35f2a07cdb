//! One target's loop: wait for the schedule, a push or a re-check request;
//! check (with a deadline); diagnose; update the issues; recover what is
//! due, trying the matching recoverers in order; repeat. Every transition
//! is an event; nothing here writes the log or the store.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use healer_plugin_sdk::{Duration as Written, Finding, Observation, Recovery, Status};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::{sleep_until, timeout, Instant};
use tracing::debug;

use super::{Command, Health, Runner, Shared};
use crate::board::{Slot, TargetView};
use crate::clock::Wall;
use crate::events::{Event, Events, Role, StepResult};
use crate::issues::{Issue, State, Tracker, Transition};
use crate::plugins::{Checked, Diagnosis, Observing};

/// What healer allows its own machinery (the worker, the socket) on top
/// of the plugins' deadlines, when a worker keeps them.
const MACHINERY_SLACK: Duration = Duration::from_secs(1);

/// The state of one target's healing loop.
pub struct Cycle {
    runner: Runner,
    shared: Arc<Shared>,
    limiter: Arc<Semaphore>,
    events: Events,
    tracker: Tracker,
    history: VecDeque<Observation>,
    history_len: usize,
    last_status: Option<Status>,
    /// The latest finding of each open issue: what recoverers are given.
    findings: HashMap<String, Finding>,
    /// Issues whose recovery is held by a dependency (logged once).
    held: HashSet<String>,
    /// Issues whose recovery waits for the pause they were told of
    /// (logged once per pause).
    paused: HashSet<String>,
    /// Where the operator sees it; none for `healer once`.
    slot: Option<Arc<Slot>>,
    /// The monitor's worker diagnoses its checks, and keeps the history.
    in_place: bool,
    /// Observations made here that the worker's history lacks.
    missed: Vec<Observation>,
    /// Where each diagnoser's findings of this step end in the list the
    /// step gathered (none: they all come from the monitor).
    sources: Vec<usize>,
    /// What this step's findings lost.
    left_out: LeftOut,
    /// The sources (diagnosers) that are leaving findings out: said.
    leaving_out: HashSet<String>,
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

/// What one step did, for scheduling the next check.
enum Step {
    Checked,
    Recovered,
}

impl Cycle {
    pub(crate) fn new(
        runner: Runner,
        shared: Arc<Shared>,
        limiter: Arc<Semaphore>,
        events: Events,
        history_len: usize,
    ) -> Cycle {
        let mut tracker = Tracker::new(runner.target.policy);
        tracker.restore(runner.saved.clone(), Wall::now());
        tracker.carry_spent(runner.spent.clone());
        let diagnosers: Vec<_> = runner.diagnosers.iter().map(|(_, d)| d).collect();
        let in_place = runner.monitor.diagnosed_in_place_by(&diagnosers);
        // No more than the diagnosers read (with no diagnoser, none).
        let needed = diagnosers.iter().map(|d| d.history_needed()).max();
        let history_len = history_len.max(1).min(needed.unwrap_or(0));
        Cycle {
            in_place,
            missed: Vec::new(),
            sources: Vec::new(),
            left_out: LeftOut::default(),
            leaving_out: HashSet::new(),
            runner,
            shared,
            limiter,
            events,
            tracker,
            history: VecDeque::new(),
            history_len,
            last_status: None,
            findings: HashMap::new(),
            held: HashSet::new(),
            paused: HashSet::new(),
            slot: None,
        }
    }

    /// How the target looks before its first check.
    pub(crate) fn view(&self) -> TargetView {
        let target = &self.runner.target;
        TargetView {
            name: target.name.clone(),
            monitor: target.monitor.plugin.clone(),
            interval: target.policy.interval,
            status: None,
            summary: String::new(),
            metrics: Vec::new(),
            last_check: None,
            took_us: 0,
            issues: self.tracker.issues().cloned().collect(),
            paused: self.shared.pause_of(&target.name),
        }
    }

    /// Promises progress (the next step, or the end of a plugin call) by
    /// `within` from now, plus one interval of slack: a loop that breaks
    /// its promise is stalled (`/healthz`, the systemd watchdog).
    fn promise(&self, within: Duration) {
        if let Some(slot) = &self.slot {
            let interval: Duration = self.runner.target.policy.interval.into();
            slot.progress((Instant::now() + within + interval).into_std());
        }
    }

    /// The issues as the board shows them, in kind order.
    fn issues(&self) -> Vec<Issue> {
        let mut issues: Vec<_> = self.tracker.issues().cloned().collect();
        issues.sort_by(|a, b| a.kind.cmp(&b.kind));
        issues
    }

    /// Writes the issues on the board, as soon as they change: an attempt
    /// or an escalation must not wait for the next check to be seen.
    fn show_issues(&self) {
        if let Some(slot) = &self.slot {
            let issues = self.issues();
            slot.update(|view| view.issues = issues);
        }
    }

    /// Writes the latest check and the issues on the board.
    fn show(&self, seen: &Observation, took: Option<Duration>) {
        let Some(slot) = &self.slot else {
            return;
        };
        let issues = self.issues();
        slot.update(|view| {
            view.status = Some(seen.status);
            view.summary.clone_from(&seen.summary);
            view.metrics.clone_from(&seen.metrics);
            view.last_check = Some(Wall::now());
            if let Some(took) = took {
                slot.checked_in(took);
                view.took_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
            }
            view.issues = issues;
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
        // carries when it arrived.
        let (push_sender, mut pushes) = mpsc::channel::<Box<(Instant, Observation)>>(16);
        let monitor = Arc::clone(&self.runner.monitor);
        let forward = tokio::spawn(async move {
            while let Some(seen) = monitor.next_push().await {
                if push_sender
                    .send(Box::new((Instant::now(), seen)))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        let grid = Grid::of(policy.interval.into(), self.name());
        let mut next = grid.first();
        // When the latest check (not a push) began.
        let mut checked_at: Option<Instant> = None;
        // Whether the next check verifies a recovery: it comes before any
        // push, so a push that arrived while the recovery ran (the exit of
        // the process a restart killed) is older than it, and dropped.
        let mut verifying = false;
        loop {
            self.promise(next.saturating_duration_since(Instant::now()));
            let pushed = tokio::select! {
                _ = sleep_until(next) => None,
                Some(push) = pushes.recv(), if !verifying => {
                    let (arrived, seen) = *push;
                    // A check begun after this push arrived has seen a
                    // newer truth (the push waited while a check and its
                    // recovery ran): acting on it now would be acting on
                    // stale evidence, such as an exit already healed.
                    if checked_at.is_some_and(|checked| arrived < checked) {
                        debug!(target = %self.name(), "a push older than the latest check is dropped");
                        continue;
                    }
                    Some(seen)
                }
                command = commands.recv() => match command {
                    Some(Command::Recheck) => {
                        debug!(target = %self.name(), "re-checking at once: a dependency recovered");
                        None
                    }
                    Some(Command::Reset(asked)) => {
                        let super::Reset { kind, reply } = *asked;
                        let reset = self.reset(kind.as_deref());
                        if !reset.is_empty() {
                            next = Instant::now();
                        }
                        let _ = reply.send(reset);
                        continue;
                    }
                    Some(Command::Stop) | None => break,
                },
                _ = shutdown.changed() => break,
            };
            let was_push = pushed.is_some();
            let started = Instant::now();
            if !was_push {
                checked_at = Some(started);
            }
            // Boxed: a step's future is large and lives only while it
            // runs; the loop at rest (10,000 of them) stays small.
            let step = Box::pin(self.step(pushed)).await;
            if frozen_for_a_test(self.name()) {
                // Debug builds only: a loop that stops making progress,
                // as a bug would stop it, for the watchdog's test.
                std::future::pending::<()>().await;
            }
            let now = Instant::now();
            // Back on the grid, but never sooner than half an interval
            // after this check began: a check off the grid (a re-check,
            // a reset, the one after a recovery's grace) is not followed
            // by another a few milliseconds later.
            let every: Duration = if self.tracker.all_escalated() {
                policy.escalated_interval.into()
            } else {
                policy.interval.into()
            };
            verifying = matches!(step, Step::Recovered);
            next = match step {
                Step::Recovered => now + Duration::from(policy.grace),
                Step::Checked if was_push => next,
                Step::Checked => grid.after(now.max(started + every / 2), every),
            };
        }
        forward.abort();
        self.tracker
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
                self.held.remove(&kind);
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

    /// One check (and diagnosis, and recovery if asked), for `healer once`.
    pub(crate) async fn once(&mut self, recover: bool) -> (String, Observation, Vec<String>) {
        let (seen, checked) = self.check().await;
        let (findings, diagnosed) = self.diagnose(&seen, checked).await;
        let kinds = findings.iter().map(|f| f.kind.clone()).collect();
        if recover {
            let conclusive = checked && diagnosed && seen.status != Status::Unknown;
            self.after_diagnosis(&findings, conclusive);
            self.say_left_out(conclusive);
            self.recover(conclusive).await;
        }
        (self.name().to_owned(), seen, kinds)
    }

    async fn step(&mut self, pushed: Option<Observation>) -> Step {
        let was_push = pushed.is_some();
        let (seen, checked, findings, diagnosed, took) = if self.in_place {
            self.observe(pushed).await
        } else {
            let started = Instant::now();
            let (seen, checked) = match pushed {
                Some(seen) => (seen, true),
                None => self.check().await,
            };
            let took = if was_push {
                Duration::ZERO
            } else {
                started.elapsed()
            };
            self.note_status(&seen, was_push, took);
            let (findings, diagnosed) = self.diagnose(&seen, checked).await;
            (seen, checked, findings, diagnosed, took)
        };
        let conclusive = checked && diagnosed && seen.status != Status::Unknown;
        self.after_diagnosis(&findings, conclusive);
        self.say_left_out(conclusive);
        self.show(&seen, (!was_push).then_some(took));
        if !self.in_place && self.history_len > 0 {
            self.history.push_back(seen);
            while self.history.len() > self.history_len {
                self.history.pop_front();
            }
        }
        // Never act on false evidence: a check that could not tell (it
        // failed, timed out, or said UNKNOWN) resolves nothing, and only
        // recoverers that asked for UNKNOWN act after it.
        if self.recover(conclusive).await {
            Step::Recovered
        } else {
            Step::Checked
        }
    }

    /// Runs the monitor's check within the target's deadline; `false` when
    /// the check itself failed (the observation is then UNKNOWN and says why).
    async fn check(&mut self) -> (Observation, bool) {
        let policy = self.runner.target.policy;
        let plugin = &self.runner.target.monitor.plugin;
        self.promise(policy.timeout.into());
        match timeout(policy.timeout.into(), self.runner.monitor.check()).await {
            Ok(Ok(seen)) => (seen, true),
            Ok(Err(error)) => (self.plugin_failed(Role::Monitor, plugin, &error), false),
            Err(_) => (
                self.plugin_timed_out(Role::Monitor, plugin, policy.timeout),
                false,
            ),
        }
    }

    /// A plugin call that failed: its event, and the UNKNOWN observation
    /// it stands for when it was the check.
    fn plugin_failed(&self, role: Role, plugin: &str, error: &str) -> Observation {
        let error = crate::redact::text_of(error);
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
    fn plugin_timed_out(&self, role: Role, plugin: &str, after: Written) -> Observation {
        self.emit(Event::PluginTimedOut {
            target: self.name().to_owned(),
            role,
            plugin: plugin.to_owned(),
            after,
        });
        Observation::unknown(format!("check timed out after {after}"))
    }

    fn note_status(&mut self, seen: &Observation, pushed: bool, took: Duration) {
        let was = self.last_status.replace(seen.status);
        if was == Some(seen.status) && !self.events.wants_every_check() {
            return;
        }
        self.emit(Event::Checked {
            target: self.name().to_owned(),
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
    async fn observe(
        &mut self,
        pushed: Option<Observation>,
    ) -> (Observation, bool, Vec<Finding>, bool, Duration) {
        let policy = self.runner.target.policy;
        let within: Duration = policy.timeout.into();
        let plugins = 1 + u32::try_from(self.runner.diagnosers.len()).unwrap_or(u32::MAX);
        let deadline = within.saturating_mul(plugins) + MACHINERY_SLACK;
        self.promise(deadline);
        let was_push = pushed.is_some();
        let started = Instant::now();
        let diagnosers: Vec<_> = self.runner.diagnosers.iter().map(|(_, d)| d).collect();
        let observing = Observing {
            pushed: pushed.as_ref(),
            missed: &self.missed,
            keep: self.history_len,
            within,
        };
        let observed = timeout(
            deadline,
            self.runner.monitor.observe(&diagnosers, observing),
        )
        .await;
        let took = if was_push {
            Duration::ZERO
        } else {
            started.elapsed()
        };
        let plugin = self.runner.target.monitor.plugin.clone();
        let observed = match observed {
            Ok(Ok(observed)) => {
                self.missed.clear();
                observed
            }
            // healer's side failed (the worker crashed or stopped
            // answering): the worker's history never saw this.
            failed => {
                // What was pushed is still evidence; only its diagnosis
                // is missing, so it concludes nothing. A check that never
                // came back is UNKNOWN.
                let (role, plugin) = match (&pushed, self.runner.diagnosers.first()) {
                    (Some(_), Some((diagnoser, _))) => (Role::Diagnoser, diagnoser.clone()),
                    _ => (Role::Monitor, plugin),
                };
                let unknown = match failed {
                    Ok(Err(error)) => self.plugin_failed(role, &plugin, &error),
                    _ => self.plugin_timed_out(role, &plugin, Written(deadline)),
                };
                let seen = pushed.unwrap_or(unknown);
                self.remember_missed(seen.clone());
                self.note_status(&seen, was_push, took);
                return if was_push {
                    (seen, true, Vec::new(), false, took)
                } else {
                    let findings = self.undiagnosed(&seen);
                    (seen, false, findings, true, took)
                };
            }
        };
        let (seen, checked) = match observed.checked {
            Checked::Seen(seen) => (seen, true),
            Checked::Failed(error) => (self.plugin_failed(Role::Monitor, &plugin, &error), false),
            Checked::TimedOut => (
                self.plugin_timed_out(Role::Monitor, &plugin, policy.timeout),
                false,
            ),
        };
        self.note_status(&seen, was_push, took);
        if observed.diagnoses.is_empty() {
            let findings = self.undiagnosed(&seen);
            return (seen, checked, findings, true, took);
        }
        let mut findings = Vec::new();
        // A worker that answered for fewer diagnosers than asked leaves
        // the diagnosis incomplete.
        let mut complete = observed.diagnoses.len() == self.runner.diagnosers.len();
        self.sources.clear();
        for ((diagnoser, _), diagnosis) in self.runner.diagnosers.iter().zip(observed.diagnoses) {
            match diagnosis {
                Diagnosis::Found(found) => {
                    // Findings left out may hold an open issue's kind:
                    // such a check cannot tell that it healed.
                    complete &= found.dropped == 0;
                    note_answered_too_many(&mut self.left_out, diagnoser, found.dropped);
                    findings.extend(found.kept);
                }
                Diagnosis::Failed(error) => {
                    complete = false;
                    self.plugin_failed(Role::Diagnoser, diagnoser, &error);
                }
                Diagnosis::TimedOut => {
                    complete = false;
                    self.plugin_timed_out(Role::Diagnoser, diagnoser, policy.timeout);
                }
            }
            self.sources.push(findings.len());
        }
        (seen, checked, findings, complete, took)
    }

    /// Keeps an observation the worker's history lacks, for the next call.
    fn remember_missed(&mut self, seen: Observation) {
        self.missed.push(seen);
        if self.missed.len() > self.history_len {
            self.missed.remove(0);
        }
    }

    /// With no diagnosis, the observation itself when it is not OK:
    /// `<monitor>.<status>`.
    fn undiagnosed(&self, seen: &Observation) -> Vec<Finding> {
        if seen.status == Status::Ok {
            return Vec::new();
        }
        let kind = format!(
            "{}.{}",
            self.runner.target.monitor.plugin,
            seen.status.as_str().to_lowercase()
        );
        vec![Finding::new(kind, seen.status, seen.summary.clone())]
    }

    /// Findings from the diagnosers, or, with none configured (or when the
    /// check itself failed, which diagnosers cannot interpret), the
    /// observation itself when it is not OK (`<monitor>.<status>`). The flag
    /// is `false` when a diagnoser failed: the findings may be incomplete.
    async fn diagnose(&mut self, seen: &Observation, checked: bool) -> (Vec<Finding>, bool) {
        // An UNKNOWN observation is `<monitor>.unknown`: no diagnoser can
        // read evidence into it that is not there.
        if self.runner.diagnosers.is_empty() || !checked || seen.status == Status::Unknown {
            return (self.undiagnosed(seen), true);
        }
        let deadline: Duration = self.runner.target.policy.timeout.into();
        self.promise(deadline * self.runner.diagnosers.len() as u32);
        self.history.make_contiguous();
        let (history, _) = self.history.as_slices();
        let mut findings = Vec::new();
        let mut complete = true;
        self.sources.clear();
        for (plugin, diagnoser) in &self.runner.diagnosers {
            self.sources.push(findings.len());
            match timeout(deadline, diagnoser.diagnose(seen, history)).await {
                Ok(Ok(found)) => {
                    complete &= found.dropped == 0;
                    note_answered_too_many(&mut self.left_out, plugin, found.dropped);
                    findings.extend(found.kept);
                    if let Some(end) = self.sources.last_mut() {
                        *end = findings.len();
                    }
                }
                Ok(Err(error)) => {
                    complete = false;
                    self.plugin_failed(Role::Diagnoser, plugin, &error);
                }
                Err(_) => {
                    complete = false;
                    let after = self.runner.target.policy.timeout;
                    self.plugin_timed_out(Role::Diagnoser, plugin, after);
                }
            }
        }
        (findings, complete)
    }

    /// Feeds the findings to the issues; `conclusive` is `false` when the
    /// check or a diagnoser failed, and then nothing counts as healthy.
    fn after_diagnosis(&mut self, findings: &[Finding], conclusive: bool) {
        // One list per diagnoser (each holds its share of the issues), or
        // one for the monitor when nothing diagnosed this check.
        let mut sources = std::mem::take(&mut self.sources);
        let from_monitor = sources.is_empty();
        if from_monitor {
            sources.push(findings.len());
        }
        let diagnosers = self.runner.diagnosers.len().max(1);
        sources.resize(diagnosers.max(sources.len()), findings.len());
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
        for transition in self.tracker.observe_from(&lists, Wall::now(), conclusive) {
            if let Transition::LeftOut {
                source,
                target_full,
                kinds,
                count,
            } = transition
            {
                let whose = match self.runner.diagnosers.get(source) {
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
        self.findings
            .retain(|kind, _| self.tracker.issue(kind).is_some());
        self.held.retain(|kind| self.tracker.issue(kind).is_some());
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
            Transition::Forgotten { kind } => Event::IssueReset {
                target,
                kind,
                reason: format!(
                    "healthy for {}: the attempt count starts over",
                    self.runner.target.policy.stable_after
                ),
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

    /// Recovers every issue that is due; returns whether any attempt ran.
    /// After an inconclusive check only UNKNOWN issues may be acted on (by
    /// the recoverers that asked for them): the others' evidence is stale.
    async fn recover(&mut self, conclusive: bool) -> bool {
        let mut due = self.tracker.due(Wall::now());
        if !conclusive {
            due.retain(|kind| is_unknown(kind));
        }
        if self.paused(&due) || due.is_empty() {
            return false;
        }
        let target = &self.runner.target;
        if let Some((dependency, health)) = self.shared.first_unhealthy(&target.depends_on) {
            let reason = match health {
                Health::Unchecked => "has not been checked yet",
                _ => "has an open issue",
            };
            for kind in due {
                if self.held.insert(kind.clone()) {
                    self.events.emit(Event::RecoveryHeld {
                        target: target.name.clone(),
                        kind,
                        dependency: dependency.to_owned(),
                        reason: reason.to_owned(),
                    });
                }
            }
            return false;
        }
        let (mut acted, mut shown) = (false, true);
        for kind in due {
            match self.attempt(&kind).await {
                Attempted::Ran => {
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
        let target = &self.runner.target;
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
            if self.held.insert(kind.to_owned()) {
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

/// When a target's checks fall due: on a fixed-rate grid (a slow check
/// does not stretch the period), at one of [`SLOTS`] phases of the
/// interval chosen from the target's name (the same phase in every run).
/// Targets spread over the slots, so they do not all fire at once, and
/// the targets of one slot fire in the same instant: their checks reach a
/// plugin worker as one batch, and the threads on their way wake once per
/// slot instead of once per check.
struct Grid {
    /// The first check.
    origin: Instant,
}

/// Phases per interval: 20 ms apart at 1 s.
const SLOTS: u64 = 50;

impl Grid {
    fn of(interval: Duration, name: &str) -> Grid {
        // One origin for every target of this run, so that targets of one
        // slot share their deadlines to the nanosecond.
        static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        Grid::at(
            *EPOCH.get_or_init(Instant::now),
            Instant::now(),
            interval,
            name,
        )
    }

    /// The grid of a target named `name` whose run began at `epoch`,
    /// starting after `now`.
    fn at(epoch: Instant, now: Instant, interval: Duration, name: &str) -> Grid {
        // A fixed hasher: the phase depends on the name only.
        let slot = std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default()
            .hash_one(name)
            % SLOTS;
        let phase = interval.mul_f64(slot as f64 / SLOTS as f64);
        let grid = Grid {
            origin: epoch + phase,
        };
        let origin = grid.after(now, interval);
        if grid.origin >= now {
            grid
        } else {
            Grid { origin }
        }
    }

    fn first(&self) -> Instant {
        self.origin
    }

    /// The first point of the grid of `every` after `now`.
    fn after(&self, now: Instant, every: Duration) -> Instant {
        if every.is_zero() || now < self.origin {
            return self.origin.max(now);
        }
        let every_ns = every.as_nanos();
        let steps = (now - self.origin).as_nanos() / every_ns + 1;
        // Far beyond any uptime only with absurd figures: then an
        // interval from now, never a point in the past.
        u64::try_from(steps * every_ns)
            .ok()
            .and_then(|ns| self.origin.checked_add(Duration::from_nanos(ns)))
            .unwrap_or(now + every)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn checks_fall_on_the_targets_phase_at_a_fixed_rate() {
        let epoch = Instant::now();
        let grid = Grid::at(epoch, epoch, SECOND, "web");
        let phase = grid.first() - epoch;
        assert!(phase < SECOND);
        assert_eq!(phase.as_millis() % 20, 0, "one of 50 slots: {phase:?}");
        // A check that took 200 ms does not stretch the period.
        let done = grid.first() + Duration::from_millis(200);
        assert_eq!(grid.after(done, SECOND), grid.first() + SECOND);
        // One that overran skips to the next point, never into the past.
        let late = grid.first() + Duration::from_millis(2_300);
        assert_eq!(grid.after(late, SECOND), grid.first() + 3 * SECOND);
    }

    #[test]
    fn the_phase_depends_on_the_name_only() {
        let epoch = Instant::now();
        let phases = |name: &str| Grid::at(epoch, epoch, SECOND, name).first() - epoch;
        assert_eq!(phases("web"), phases("web"));
        let spread: HashSet<Duration> = (0..200).map(|i| phases(&format!("t{i}"))).collect();
        assert!(spread.len() > 30, "200 targets on {} slots", spread.len());
    }

    #[test]
    fn a_target_started_later_begins_at_its_next_point() {
        let epoch = Instant::now();
        let now = epoch + Duration::from_millis(3_500);
        let grid = Grid::at(epoch, now, SECOND, "web");
        assert!(grid.first() >= now && grid.first() < now + SECOND);
        let phase = (grid.first() - epoch).as_nanos() % SECOND.as_nanos();
        let at_start = Grid::at(epoch, epoch, SECOND, "web").first() - epoch;
        assert_eq!(phase, at_start.as_nanos(), "the same phase");
    }

    #[test]
    fn an_absurdly_long_wait_is_one_interval_not_the_past() {
        let epoch = Instant::now();
        let grid = Grid::at(epoch, epoch, Duration::from_nanos(1), "web");
        let far = epoch + Duration::from_secs(400 * 24 * 3600);
        assert!(grid.after(far, Duration::from_nanos(1)) > far);
        assert_eq!(grid.after(far, Duration::ZERO), far);
    }
}
