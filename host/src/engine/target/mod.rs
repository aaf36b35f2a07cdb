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

use healer_plugin_sdk::{Duration as HumanDuration, Finding, Observation, Status};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::{sleep_until, Instant};
use tracing::debug;

use super::check::Watch;
use super::{Command, Runner, Shared};
use crate::board::{Held, Slot, TargetView};
use crate::clock::Wall;
use crate::events::{Event, Events};
use crate::issues::{Answer, Issue, Layout, State, Tracker, Transition};
use crate::ledger::{Judging, Verdict};
use crate::plugins::{CheckResult, Observed, WatchNews};

mod checking;
mod recovery;
mod watching;

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
    /// A fleet target's issues whose claim was refused, and the reason
    /// last said (said again only when it changes).
    not_claimed: HashMap<String, String>,
    /// Issues whose recoverers' gates hold them, and the reason last said.
    gated: BTreeMap<String, String>,
    /// Issues whose recovery waits for the pause they were told of
    /// (said once per pause).
    paused: HashSet<String>,
    /// The learned order of each kind's ladder, as last said.
    learned: BTreeMap<String, Vec<String>>,
    /// The (kind, recoverer) pairs under their `min_success`, as last said.
    demoted: HashSet<(String, String)>,
    /// What healer last wrote of this target as facts: `None` before the
    /// first step (the store may have carried some over), then whether it
    /// was healthy and its status, or `None` when `healthy` was taken back.
    health_said: Option<Option<(bool, Option<Status>)>>,
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
    /// A check's worker checked it on its grid, and healer must decide on
    /// what it found: when it began, and how long it took.
    Watched(usize, Box<(Observed, Instant, Duration)>),
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
        let mut checks = Vec::with_capacity(target.checks.len());
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
            not_claimed: HashMap::new(),
            gated: BTreeMap::new(),
            paused: HashSet::new(),
            learned: BTreeMap::new(),
            demoted: HashSet::new(),
            health_said: None,
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
                slot.checked_in(took, 1);
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
        // A fleet target just taken over is checked at once: its last
        // owner may have died a lease ago.
        if self.runner.fence.is_some() {
            self.off_grid = Some(Instant::now());
        }
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
        let (news_sender, mut news) = mpsc::channel::<watching::News>(watching::NEWS_BACKLOG);
        loop {
            self.settle_watches(&news_sender).await;
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
                Some(said) = news.recv(), if !self.verifying => {
                    let (index, id, said) = *said;
                    match said {
                        WatchNews::Ended(why) => {
                            // Taken back either way; UNKNOWN only for a
                            // check that may have been under way.
                            if !self.watch_ended(index, id, &why) {
                                continue;
                            }
                            let failed = Observed {
                                checked: CheckResult::Failed(why),
                                diagnoses: Vec::new(),
                            };
                            Wake::Watched(index, Box::new((failed, Instant::now(), Duration::ZERO)))
                        }
                        WatchNews::Checked { observed, began, late, took } => {
                            // A worker's clock reading is never after now.
                            let began = Instant::from_std(began).min(Instant::now());
                            if !self.fresh_news(index, id, began) {
                                debug!(target = %self.name(), "news of a check older than the latest is dropped");
                                continue;
                            }
                            if let Some(watched) = &self.checks[index].watched {
                                watched.ran(took, late);
                            }
                            if let Some(slot) = &self.slot {
                                let interval = self.checks[index].interval;
                                let (late, is_late) = crate::grid::lateness(began - late, began, interval);
                                slot.began(1, u64::from(is_late), late);
                            }
                            Wake::Watched(index, Box::new((observed, began, took)))
                        }
                    }
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
                    Some(Command::Answer(asked)) => {
                        let super::Answering { kind, answer, reply } = *asked;
                        let answered = self.answer(&kind, answer);
                        // Approved: a check first (the issue must still
                        // hold), then the attempt, at once.
                        if answered.is_ok() && answer == Answer::Approve && !self.verifying {
                            self.off_grid = Some(Instant::now());
                        }
                        let _ = reply.send(answered);
                        continue;
                    }
                    Some(Command::Stop) | None => break,
                },
                _ = shutdown.changed() => break,
            };
            let started = Instant::now();
            let (runs, pushed, watched, on_grid) = match wake {
                Wake::Scheduled => {
                    let due: Vec<usize> = self
                        .checks
                        .iter()
                        .filter(|check| check.schedule.next <= started)
                        .map(|check| check.index)
                        .collect();
                    // A watched check waits for its worker, unless the
                    // worker went silent.
                    let mut runs = Vec::with_capacity(due.len());
                    for index in due {
                        if !self.worker_still_says(index, started) {
                            runs.push(index);
                        }
                    }
                    if runs.is_empty() {
                        continue;
                    }
                    self.began_on_grid(&runs, started);
                    (runs, None, None, true)
                }
                Wake::All => {
                    // healer checks them itself: their workers stop, and
                    // are handed them again (with the facts healer then
                    // holds) once the target is quiet.
                    for index in 0..self.checks.len() {
                        self.unwatch(index);
                    }
                    self.off_grid = None;
                    self.verifying = false;
                    ((0..self.checks.len()).collect(), None, None, false)
                }
                Wake::Pushed(index, seen) => (Vec::new(), Some((index, seen)), None, false),
                Wake::Watched(index, said) => (Vec::new(), None, Some((index, *said)), false),
            };
            // Boxed: a step's future is large and lives only while it
            // runs; the loop at rest (10,000 of them) stays small.
            let recovered = Box::pin(self.step(&runs, pushed, watched)).await;
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
                    let due = check.schedule.next;
                    check.schedule.after_scheduled(started, now, every);
                    // Points passed while this step ran: late checks.
                    let missed = crate::grid::missed_between(due, check.schedule.next, every);
                    if let (Some(slot), true) = (&self.slot, missed > 0) {
                        let late = now.saturating_duration_since(due + every);
                        slot.began(missed, missed, late);
                    }
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
            .filter(|issue| issue.proposal.as_ref().is_none_or(|p| p.approved))
            .map(|issue| issue.next_attempt_at)
            .chain(settled)
            .chain(self.tracker.next_proposal_expiry())
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

    /// An operator's answer to the proposal of the issue of `kind`.
    fn answer(&mut self, kind: &str, answer: Answer) -> Result<Issue, String> {
        let (issue, escalated) = self.tracker.answer(kind, answer, Wall::now())?;
        self.emit(Event::ProposalAnswered {
            target: self.name().to_owned(),
            issue: issue.clone(),
            approved: answer == Answer::Approve,
        });
        for transition in escalated.into_iter().chain(self.tracker.verdicts()) {
            self.emit_transition(transition);
        }
        self.show_issues();
        Ok(issue)
    }

    /// Escalates the issues whose proposals nobody answered in time (and
    /// first takes back those a reload made stale).
    fn expire_proposals(&mut self) {
        self.withdraw_stale_proposals();
        let expired = self.tracker.expire_proposals(Wall::now());
        if expired.is_empty() {
            return;
        }
        let verdicts = self.tracker.verdicts();
        for transition in expired.into_iter().chain(verdicts) {
            self.emit_transition(transition);
        }
        self.show_issues();
    }

    /// Says the verdicts the tracker gave since last asked.
    fn say_verdicts(&mut self) {
        for transition in self.tracker.verdicts() {
            self.emit_transition(transition);
        }
    }

    /// Counts a verdict on an attempt in the ledger, and says it.
    fn judged(&self, kind: String, judging: Judging, verdict: Verdict, reason: String) -> Event {
        let target = self.name().to_owned();
        let took = judging
            .time_to_healthy()
            .filter(|_| verdict == Verdict::Healed);
        let key = (target.clone(), kind.clone(), judging.recoverer.clone());
        let counted = self.shared.ledger().count(key, verdict, took, Wall::now());
        Event::RecoveryJudged {
            target,
            kind,
            recoverer: judging.recoverer,
            attempt: judging.attempt,
            verdict,
            reason,
            time_to_healthy: took.map(HumanDuration),
            outcomes: Box::new(counted.outcomes),
            forgot: counted.forgot.map(Box::new),
        }
    }

    /// What an escalation of this target is caused by upstream, when a
    /// dependency is not healthy: the dependency and the fact that says
    /// so, for the alert to name.
    fn root_cause(&self) -> Option<String> {
        let target = &self.runner.target;
        let (dependency, _) = self.shared.first_unhealthy(&target.depends_on)?;
        let now = Wall::now();
        let name = format!("target.{dependency}.healthy");
        let cited = self
            .shared
            .facts()
            .read(&name, now)
            .map_or_else(|| format!("{name} is unknown"), |fact| fact.cited(now));
        Some(format!("root cause: {dependency} is not healthy ({cited})"))
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
            self.settle_health(true);
            self.recover().await;
        }
        Looked {
            target: self.name().to_owned(),
            seen,
            kinds,
        }
    }

    /// Counts the checks of `runs` that began at `started` on their grids,
    /// and how late.
    fn began_on_grid(&self, runs: &[usize], started: Instant) {
        let Some(slot) = &self.slot else {
            return;
        };
        let (mut late, mut latest) = (0, Duration::ZERO);
        for &index in runs {
            let check = &self.checks[index];
            let (by, is_late) = crate::grid::lateness(check.schedule.next, started, check.interval);
            late += u64::from(is_late);
            latest = latest.max(by);
        }
        slot.began(runs.len() as u64, late, latest);
    }

    /// One step: a pushed observation, what a worker checked on its grid,
    /// or the runs of `runs`, then at most one recovery. Returns whether a
    /// recovery ran.
    async fn step(
        &mut self,
        runs: &[usize],
        pushed: Option<(usize, Observation)>,
        watched: Option<(usize, (Observed, Instant, Duration))>,
    ) -> bool {
        self.fresh.clear();
        // A fleet target's owner checks nothing once it may no longer act
        // (its lease's deadline passed, or the shard went): the daemon is
        // stopping this loop.
        if self
            .runner
            .fence
            .as_ref()
            .is_some_and(|fence| !fence.holds())
        {
            return false;
        }
        let mut conclusive = true;
        if let Some((index, seen)) = pushed {
            conclusive &= self.run_check(index, Some(seen), true).await.concluded();
        }
        if let Some((index, (observed, began, took))) = watched {
            conclusive &= self.run_watched(index, observed, began, took).concluded();
        }
        for &index in runs {
            conclusive &= self.run_check(index, None, true).await.concluded();
        }
        self.say_left_out(conclusive);
        self.settle_health(conclusive);
        self.expire_proposals();
        self.show_issues();
        // A target with an issue is checked by healer alone: its workers
        // stop before any recovery runs (a target never checks and
        // recovers at once).
        if self.tracker.has_issues() {
            for index in 0..self.checks.len() {
                self.unwatch(index);
            }
        }
        // Never act on false evidence: a check that could not tell (it
        // failed, timed out, or said UNKNOWN) resolves nothing, and only
        // recoverers that asked for UNKNOWN act after it.
        let acted = self.recover().await;
        self.sync_fleet().await;
        acted
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
                reason: match self.root_cause() {
                    Some(cause) => format!("{reason}; {cause}"),
                    None => reason,
                },
            },
            Transition::Judged {
                kind,
                judging,
                verdict,
                reason,
            } => self.judged(kind, judging, verdict, reason),
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
}

impl Run {
    /// Whether this run could tell: the check answered, every diagnoser
    /// did, and the status is not UNKNOWN.
    fn concluded(&self) -> bool {
        self.checked && self.diagnosed && self.seen.status != Status::Unknown
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
