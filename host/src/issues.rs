//! The issue state machine of one target: findings in, transitions out.
//!
//! An issue is keyed by (target, finding kind). A finding opens one only
//! after `fail_after` consecutive failed checks (soft → hard). Recovery
//! attempts are paced by capped exponential backoff and limited to
//! `max_attempts`; when the check after the last attempt still fails, the
//! issue is escalated and nothing more is tried until it resolves, after
//! `resolve_after` consecutive healthy checks. A resolved issue's attempt
//! count is remembered for `stable_after`: an issue that flaps back keeps
//! counting instead of restarting a service forever.
//!
//! Kinds are named by plugins, so they are outside input: besides the
//! ladder of each kind, a target has a recovery budget (`recovery_budget`
//! attempts within `stable_after`, whatever the kinds are called), holds at
//! most [`MAX_ISSUES_PER_TARGET`] open issues and remembers at most
//! [`MAX_REMEMBERED`] resolved ones. Every step is linear in the findings
//! and issues it is given.
//!
//! Pure: no I/O, no clock of its own (callers pass `now`), so every rule is
//! tested exactly.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use healer_plugin_sdk::{Finding, Status};
use serde::{Deserialize, Serialize};

use crate::clock::Wall;
use crate::config::Policy;

/// Open issues one target may hold: findings of new kinds beyond them are
/// left out (and said so), the issues already open go on.
pub const MAX_ISSUES_PER_TARGET: usize = 32;

/// Resolved issues whose attempt counts one target remembers (the flap
/// memory); beyond them the oldest is forgotten first. The recovery
/// budget still counts its attempts.
pub const MAX_REMEMBERED: usize = 256;

/// Where an issue stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Found; no attempt made yet (or held by a dependency).
    Open,
    /// At least one recovery attempt made.
    Recovering,
    /// Attempts exhausted (or nothing can recover it): no more attempts
    /// until it resolves.
    Escalated,
    /// Healthy again. A tracker holds no resolved issues; its snapshot in
    /// an event (and the store) says how the issue ended, and its attempt
    /// count is remembered for `stable_after`.
    Resolved,
}

impl State {
    /// Lower-case name for logs and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Open => "open",
            State::Recovering => "recovering",
            State::Escalated => "escalated",
            State::Resolved => "resolved",
        }
    }

    /// The state written by [`State::as_str`].
    pub fn parse(text: &str) -> Option<State> {
        [
            State::Open,
            State::Recovering,
            State::Escalated,
            State::Resolved,
        ]
        .into_iter()
        .find(|state| state.as_str() == text)
    }
}

/// One issue of one target. What events carry and the store keeps: every
/// moment in it is wall-clock time, so it means the same after a restart.
/// HumanDuration out (events, the API) with a `next_attempt_at` only while one
/// may come: an escalated or resolved issue has none.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Issue {
    /// The finding kind, e.g. `process.not_running`.
    pub kind: String,
    /// Where it stands.
    pub state: State,
    /// The latest finding's severity.
    pub severity: Status,
    /// The latest finding's summary.
    pub summary: String,
    /// Recovery attempts made, including those before a flap.
    pub attempts: u32,
    /// When it opened.
    pub opened_at: Wall,
    /// When the next attempt may start (kept while escalated, for a
    /// reset; never shown then).
    #[serde(default = "Wall::zero")]
    pub next_attempt_at: Wall,
    /// When it was escalated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalated_at: Option<Wall>,
    /// When it resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<Wall>,
    /// Consecutive healthy checks since it was last seen.
    #[serde(skip)]
    healthy: u32,
    /// The target's checks (bit per check) that found it and have not
    /// since found it gone: it heals only when none is left.
    #[serde(skip)]
    failing_in: u64,
    /// Every check that found it since it opened: only their healthy
    /// runs count towards `resolve_after`.
    #[serde(skip)]
    found_ever: u64,
    /// An attempt is running.
    #[serde(skip)]
    attempting: bool,
}

impl Serialize for Issue {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        /// What is written: the issue, its next attempt only when one may come.
        #[derive(Serialize)]
        struct HumanDuration<'a> {
            kind: &'a str,
            state: State,
            severity: Status,
            summary: &'a str,
            attempts: u32,
            opened_at: Wall,
            #[serde(skip_serializing_if = "Option::is_none")]
            next_attempt_at: Option<Wall>,
            #[serde(skip_serializing_if = "Option::is_none")]
            escalated_at: Option<Wall>,
            #[serde(skip_serializing_if = "Option::is_none")]
            resolved_at: Option<Wall>,
        }
        let waiting = matches!(self.state, State::Open | State::Recovering);
        HumanDuration {
            kind: &self.kind,
            state: self.state,
            severity: self.severity,
            summary: &self.summary,
            attempts: self.attempts,
            opened_at: self.opened_at,
            next_attempt_at: waiting.then_some(self.next_attempt_at),
            escalated_at: self.escalated_at,
            resolved_at: self.resolved_at,
        }
        .serialize(serializer)
    }
}

impl Issue {
    /// An issue as it was saved before a restart: `times` are when it
    /// opened and when its next attempt is due, `ended` when it was
    /// escalated and when it resolved.
    pub fn saved(
        kind: String,
        state: State,
        severity: Status,
        summary: String,
        attempts: u32,
        times: [Wall; 2],
        ended: [Option<Wall>; 2],
    ) -> Issue {
        let [opened_at, next_attempt_at] = times;
        let [escalated_at, resolved_at] = ended;
        Issue {
            kind,
            state,
            severity,
            summary,
            attempts,
            opened_at,
            next_attempt_at,
            escalated_at,
            resolved_at,
            healthy: 0,
            failing_in: 0,
            found_ever: 0,
            attempting: false,
        }
    }
}

/// What changed; the engine emits an event for each.
#[derive(Clone, Debug, PartialEq)]
pub enum Transition {
    /// A finding became an issue; its attempts carried over from a flap.
    Opened(Issue),
    /// An issue's check passed `resolve_after` times.
    Resolved(Issue),
    /// No more attempts will be made.
    Escalated { issue: Issue, reason: String },
    /// A finding was seen but has not yet failed `fail_after` times.
    Soft {
        kind: String,
        failures: u32,
        needed: u32,
    },
    /// A resolved issue stayed healthy for `stable_after`: its attempt count
    /// is forgotten, and a new issue of this kind starts from attempt 1.
    Forgotten {
        kind: String,
        /// Forgotten to make room (the memory holds [`MAX_REMEMBERED`]),
        /// not after `stable_after`.
        full: bool,
    },
    /// Findings of new kinds from one source (its index in
    /// [`Tracker::observe_from`]) were not opened: the source holds its
    /// share of [`MAX_ISSUES_PER_TARGET`], or the target all of them.
    LeftOut {
        source: usize,
        /// The target held all it may (not only the source its share).
        target_full: bool,
        kinds: Vec<String>,
        count: usize,
    },
    /// A saved open issue is not carried on: the target already holds as
    /// many open issues as it may.
    Dropped { issue: Issue, reason: String },
}

/// The issues of one target.
#[derive(Debug)]
pub struct Tracker {
    policy: Policy,
    issues: HashMap<String, Issue>,
    soft: HashMap<String, Soft>,
    /// Resolved issues' attempt counts and when they resolved.
    remembered: HashMap<String, (u32, Wall)>,
    /// When the target's latest attempts started, oldest first: no more
    /// than its budget, none older than `stable_after`.
    spent: VecDeque<Wall>,
    /// What `restore` let go, said at the next check.
    let_go: Vec<Transition>,
    /// Which source (see [`Tracker::observe_from`]) opened each open or
    /// soft issue of this run: what its share of the cap holds.
    owners: HashMap<String, usize>,
    /// The target's checks, and their sources (diagnosers, or the
    /// monitor of a check without any) all together.
    layout: Layout,
}

/// How many checks a target has and how many sources of findings they
/// have together: the share of the cap each source holds.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// Checks (at most 64).
    pub checks: usize,
    /// Sources of findings, over all checks.
    pub sources: usize,
}

impl Layout {
    /// One check with one source.
    pub const ONE: Layout = Layout {
        checks: 1,
        sources: 1,
    };

    /// Every check's bit.
    fn all_checks(self) -> u64 {
        match self.checks {
            0 => 1,
            64.. => u64::MAX,
            checks => (1 << checks) - 1,
        }
    }
}

/// The findings of one check's run: the check (its index in the target),
/// where its sources start among the target's, and one list per source.
pub struct Seen<'a> {
    /// The check's index.
    pub check: usize,
    /// Its first source's index among the target's sources.
    pub first_source: usize,
    /// Its sources' findings, in order.
    pub lists: &'a [&'a [Finding]],
}

/// A finding seen before, not yet an issue.
#[derive(Debug)]
struct Soft {
    /// Failed checks in a row.
    failures: u32,
    /// The checks that found it (as [`Issue::failing_in`]).
    failing_in: u64,
}

/// How many example kinds a [`Transition::LeftOut`] names.
const LEFT_OUT_NAMED: usize = 5;

impl Tracker {
    /// A tracker with no issues, for a target of one check.
    pub fn new(policy: Policy) -> Tracker {
        Tracker::with_layout(policy, Layout::ONE)
    }

    /// A tracker with no issues, for a target of `layout`'s checks.
    pub fn with_layout(policy: Policy, layout: Layout) -> Tracker {
        Tracker {
            policy,
            issues: HashMap::new(),
            soft: HashMap::new(),
            remembered: HashMap::new(),
            spent: VecDeque::new(),
            let_go: Vec::new(),
            owners: HashMap::new(),
            layout: Layout {
                checks: layout.checks.clamp(1, 64),
                sources: layout.sources.max(1),
            },
        }
    }

    /// Recovery attempts the target may make within `stable_after`.
    pub fn budget(&self) -> u32 {
        self.policy.recovery_budget()
    }

    /// Carries on from issues saved before a restart: open, recovering and
    /// escalated ones as they were (attempts, backoff due time, escalation),
    /// resolved ones as the flap memory while `stable_after` has not passed.
    /// Returns how many open issues were restored. What it does not carry
    /// on (resolved issues older than `stable_after`, open ones beyond the
    /// cap, the flap memory beyond its cap) is let go at the next check,
    /// with the transitions that tell the store to forget it.
    ///
    /// The recovery budget is not saved as such: it is spent again by the
    /// attempts these issues made, each at the latest moment it can have
    /// started (a resolved issue's when it resolved, an open issue's its
    /// last attempt), so a restart never hands a target fresh attempts.
    pub fn restore(&mut self, mut saved: Vec<Issue>, now: Wall) -> usize {
        let stable_after: Duration = self.policy.stable_after.into();
        let budget = self.budget() as usize;
        let mut restored = 0;
        let mut spent = Vec::new();
        // Open ones first, oldest first: those the cap keeps.
        saved.sort_by_key(|issue| (issue.state == State::Resolved, issue.opened_at));
        for mut issue in saved {
            let attempts = (issue.attempts as usize).min(budget);
            match (issue.state, issue.resolved_at) {
                (State::Resolved, Some(at)) if at.within(stable_after, now) => {
                    spent.extend(std::iter::repeat_n(at, attempts));
                    self.remember(issue.kind, issue.attempts, at);
                }
                (State::Resolved, _) => self.let_go.push(Transition::Forgotten {
                    kind: issue.kind,
                    full: false,
                }),
                _ if self.issues.len() >= MAX_ISSUES_PER_TARGET => {
                    self.let_go.push(Transition::Dropped {
                        issue,
                        reason: format!(
                        "the target holds {MAX_ISSUES_PER_TARGET} open issues, as many as it may"
                    ),
                    })
                }
                _ => {
                    let backoff =
                        u64::try_from(self.backoff(issue.attempts).as_millis()).unwrap_or(u64::MAX);
                    let started =
                        Wall::from_millis(issue.next_attempt_at.millis().saturating_sub(backoff));
                    spent.extend(std::iter::repeat_n(started, attempts));
                    issue.healthy = 0;
                    // Which checks found it is not saved: every check
                    // must find it gone.
                    issue.failing_in = self.layout.all_checks();
                    issue.found_ever = issue.failing_in;
                    issue.attempting = false;
                    self.issues.insert(issue.kind.clone(), issue);
                    restored += 1;
                }
            }
        }
        spent.sort();
        self.carry_spent(spent);
        restored
    }

    /// Remembers a resolved issue's attempts. When the memory is full, an
    /// issue that had no attempts goes first, then the oldest; what goes
    /// is let go at the next check.
    fn remember(&mut self, kind: String, attempts: u32, resolved_at: Wall) {
        if self.remembered.len() >= MAX_REMEMBERED && !self.remembered.contains_key(&kind) {
            let first_to_go = self
                .remembered
                .iter()
                .min_by_key(|(_, (attempts, at))| (*attempts > 0, *at))
                .map(|(kind, _)| kind.clone());
            if let Some(kind) = first_to_go {
                self.remembered.remove(&kind);
                self.let_go.push(Transition::Forgotten { kind, full: true });
            }
        }
        self.remembered.insert(kind, (attempts, resolved_at));
    }

    /// When the target's attempts within its budget started: what a
    /// successor (a reload) carries on with, see [`carry_spent`](Self::carry_spent).
    pub fn spent(&self) -> Vec<Wall> {
        self.spent.iter().copied().collect()
    }

    /// Spends the budget again for attempts a predecessor made (or the
    /// store's issues made), oldest first, each counted once: whichever
    /// of the two knows of more attempts wins.
    pub fn carry_spent(&mut self, spent: Vec<Wall>) {
        if spent.len() > self.spent.len() {
            self.spent.clear();
            for at in spent {
                self.spend(at);
            }
        }
    }

    /// Records an attempt started at `at` against the budget.
    fn spend(&mut self, at: Wall) {
        self.spent.push_back(at);
        while self.spent.len() > self.budget() as usize {
            self.spent.pop_front();
        }
    }

    /// Attempts the budget still allows at `now`. An attempt recorded
    /// before the clock was set back counts no longer than `stable_after`
    /// past the moment the clock reaches it again.
    fn budget_left(&mut self, now: Wall) -> usize {
        let stable_after: Duration = self.policy.stable_after.into();
        self.spent.retain(|at| at.within(stable_after, now));
        (self.budget() as usize).saturating_sub(self.spent.len())
    }

    /// Whether the target's recovery budget allows an attempt now. Ask
    /// only when an attempt would really be made; when it does not, the
    /// issue is [escalated for it](Self::escalate_over_budget).
    pub fn within_budget(&mut self, now: Wall) -> bool {
        self.budget_left(now) > 0
    }

    /// Escalates the issue of `kind`: the target spent its budget.
    pub fn escalate_over_budget(&mut self, kind: &str, now: Wall) -> Option<Transition> {
        let reason = format!(
            "the target spent its recovery budget: {} attempts within {} (recovery_budget)",
            self.budget(),
            self.policy.stable_after
        );
        self.escalate(kind, reason, now)
    }

    /// The open issues.
    pub fn issues(&self) -> impl Iterator<Item = &Issue> {
        self.issues.values()
    }

    /// The issue of this kind, if open.
    pub fn issue(&self, kind: &str) -> Option<&Issue> {
        self.issues.get(kind)
    }

    /// The checks (a bit each) whose latest runs found the issue of
    /// `kind`; 0 when none is open.
    pub fn found_by(&self, kind: &str) -> u64 {
        self.issues.get(kind).map_or(0, |issue| issue.failing_in)
    }

    /// The checks that found the issues whose recovery is under way: an
    /// attempt made and its backoff not over. Another check's issue waits
    /// for them (one failure seen twice is recovered once); 0 when none.
    pub fn recovering_in(&self, now: Wall) -> u64 {
        self.issues
            .values()
            .filter(|issue| issue.state == State::Recovering && issue.next_attempt_at > now)
            .fold(0, |checks, issue| {
                checks | issue.failing_in | issue.found_ever
            })
    }

    /// Which checks hold the issues restored from before a restart:
    /// `claim` names them by kind (the checks whose plugins name such
    /// kinds); 0 leaves an issue to every check. Called once, after
    /// [`restore`](Self::restore).
    pub fn claim_restored(&mut self, claim: impl Fn(&str) -> u64) {
        for issue in self.issues.values_mut() {
            let checks = claim(&issue.kind) & self.layout.all_checks();
            if checks != 0 {
                issue.failing_in = checks;
                issue.found_ever = checks;
            }
        }
    }

    /// Whether any issue is open.
    pub fn has_issues(&self) -> bool {
        !self.issues.is_empty()
    }

    /// The checks that found the escalated issues.
    pub fn escalated_in(&self) -> u64 {
        self.issues
            .values()
            .filter(|issue| issue.state == State::Escalated)
            .fold(0, |checks, issue| checks | issue.found_ever)
    }

    /// Whether every open issue is escalated (then, and only then, the target
    /// is re-probed on the slow cadence: another issue may still be recovered).
    pub fn all_escalated(&self) -> bool {
        !self.issues.is_empty()
            && self
                .issues
                .values()
                .all(|issue| issue.state == State::Escalated)
    }

    /// Feeds the findings of one check, all from one source (the monitor,
    /// or one diagnoser); see [`observe_from`](Self::observe_from).
    pub fn observe(
        &mut self,
        findings: &[Finding],
        now: Wall,
        conclusive: bool,
    ) -> Vec<Transition> {
        self.observe_from(&[findings], now, conclusive)
    }

    /// Feeds the findings of one check, one list per source (each of the
    /// target's diagnosers, always in the same order). An inconclusive
    /// check (the check or a diagnoser failed or timed out) can open and
    /// keep issues, but never counts as healthy: nothing resolves on a
    /// check that could not tell.
    ///
    /// Each source holds at most its share of [`MAX_ISSUES_PER_TARGET`]
    /// open (and soft) issues, so one diagnoser answering many kinds
    /// cannot keep another's finding from opening.
    pub fn observe_from(
        &mut self,
        sources: &[&[Finding]],
        now: Wall,
        conclusive: bool,
    ) -> Vec<Transition> {
        let seen = Seen {
            check: 0,
            first_source: 0,
            lists: sources,
        };
        self.observe_check(seen, now, conclusive)
    }

    /// Feeds the findings of one run of one of the target's checks (see
    /// [`observe_from`](Self::observe_from)). A check speaks only for the
    /// issues it found: one that finds nothing heals no issue another
    /// check found and still finds.
    pub fn observe_check(
        &mut self,
        seen: Seen<'_>,
        now: Wall,
        conclusive: bool,
    ) -> Vec<Transition> {
        let Seen {
            check,
            first_source,
            lists: sources,
        } = seen;
        let bit = 1u64 << check.min(63);
        let all_sources = self.layout.sources.max(first_source + sources.len());
        let share = (MAX_ISSUES_PER_TARGET / all_sources).max(1);
        let stable_after: Duration = self.policy.stable_after.into();
        // A due time further ahead than the longest backoff was set before
        // the clock was set back: wait no longer than that from now.
        let latest = now + self.policy.backoff_max.into();
        for issue in self.issues.values_mut() {
            issue.next_attempt_at = issue.next_attempt_at.min(latest);
        }
        let mut transitions = std::mem::take(&mut self.let_go);
        self.remembered.retain(|kind, (_, resolved_at)| {
            let keep = resolved_at.within(stable_after, now);
            if !keep {
                transitions.push(Transition::Forgotten {
                    kind: kind.clone(),
                    full: false,
                });
            }
            keep
        });
        // Every kind this check found: what healing reads.
        let kinds: HashSet<&str> = sources
            .iter()
            .flat_map(|findings| findings.iter())
            .map(|finding| finding.kind.as_str())
            .collect();
        // Two diagnosers finding the same kind in one check is one
        // failure: the first to be taken counts.
        let mut taken = HashSet::new();
        // The issues (open or soft) each source opened and still holds.
        let mut owned = vec![0usize; all_sources];
        for source in self.owners.values() {
            if let Some(count) = owned.get_mut(*source) {
                *count += 1;
            }
        }
        for (source, findings) in sources.iter().enumerate() {
            let source = first_source + source;
            let (mut left_out, mut target_full) = (Vec::new(), false);
            for finding in findings.iter() {
                let kind = finding.kind.as_str();
                if taken.contains(kind) {
                    continue;
                }
                let open = self.issues.contains_key(kind);
                let soft = self.soft.contains_key(kind);
                let full = self.issues.len() >= MAX_ISSUES_PER_TARGET
                    || !soft && self.soft.len() >= MAX_ISSUES_PER_TARGET;
                let room = open || !full && (soft || owned[source] < share);
                if !room {
                    target_full |= full;
                    left_out.push(kind);
                    continue;
                }
                taken.insert(kind);
                if !open && !soft {
                    self.owners.insert(kind.to_owned(), source);
                    owned[source] += 1;
                }
                self.take(finding, bit, now, &mut transitions);
            }
            if !left_out.is_empty() {
                transitions.push(Transition::LeftOut {
                    source,
                    target_full,
                    count: left_out.len(),
                    kinds: left_out
                        .iter()
                        .take(LEFT_OUT_NAMED)
                        .map(|kind| (*kind).to_owned())
                        .collect(),
                });
            }
        }
        // What holds no issue and no soft count is no one's.
        let (issues, soft) = (&self.issues, &self.soft);
        self.owners
            .retain(|kind, _| issues.contains_key(kind) || soft.contains_key(kind));
        if !conclusive {
            return transitions;
        }
        let transitions = self.heal(&kinds, bit, now, transitions);
        let (issues, soft) = (&self.issues, &self.soft);
        self.owners
            .retain(|kind, _| issues.contains_key(kind) || soft.contains_key(kind));
        transitions
    }

    /// One finding of this check, of a kind open, soft or with room.
    fn take(&mut self, finding: &Finding, bit: u64, now: Wall, transitions: &mut Vec<Transition>) {
        if let Some(issue) = self.issues.get_mut(&finding.kind) {
            issue.healthy = 0;
            issue.failing_in |= bit;
            issue.found_ever |= bit;
            issue.severity = finding.severity;
            issue.summary.clone_from(&finding.summary);
            // Not only after a failed attempt: an issue restored (or
            // reopened) with no attempts left must not wait forever.
            let exhausted = issue.attempts >= self.policy.max_attempts && !issue.attempting;
            if exhausted && issue.state != State::Escalated {
                issue.state = State::Escalated;
                issue.escalated_at = Some(now);
                transitions.push(Transition::Escalated {
                    issue: issue.clone(),
                    reason: format!("still failing after {} recovery attempts", issue.attempts),
                });
            }
            return;
        }
        let soft = self.soft.entry(finding.kind.clone()).or_insert(Soft {
            failures: 0,
            failing_in: 0,
        });
        soft.failures += 1;
        soft.failing_in |= bit;
        if soft.failures < self.policy.fail_after {
            transitions.push(Transition::Soft {
                kind: finding.kind.clone(),
                failures: soft.failures,
                needed: self.policy.fail_after,
            });
            return;
        }
        let failing_in = soft.failing_in;
        self.soft.remove(&finding.kind);
        let attempts = self
            .remembered
            .remove(&finding.kind)
            .map_or(0, |(attempts, _)| attempts);
        let mut issue = Issue {
            kind: finding.kind.clone(),
            state: State::Open,
            severity: finding.severity,
            summary: finding.summary.clone(),
            attempts,
            opened_at: now,
            next_attempt_at: now,
            escalated_at: None,
            resolved_at: None,
            healthy: 0,
            failing_in,
            found_ever: failing_in,
            attempting: false,
        };
        transitions.push(Transition::Opened(issue.clone()));
        if attempts >= self.policy.max_attempts {
            issue.state = State::Escalated;
            issue.escalated_at = Some(now);
            transitions.push(Transition::Escalated {
                issue: issue.clone(),
                reason: format!(
                    "came back within {} after {attempts} recovery attempts",
                    self.policy.stable_after
                ),
            });
        }
        self.issues.insert(issue.kind.clone(), issue);
    }

    /// After a conclusive run of the check whose bit is `bit`: what it
    /// found before and finds no more is gone as far as it can tell; a
    /// soft finding no check still finds is forgotten, and an issue no
    /// check still finds counts a healthy check (and resolves after
    /// `resolve_after` of them). A check that never found an issue
    /// leaves it alone.
    fn heal(
        &mut self,
        kinds: &HashSet<&str>,
        bit: u64,
        now: Wall,
        mut transitions: Vec<Transition>,
    ) -> Vec<Transition> {
        self.soft.retain(|kind, soft| {
            if !kinds.contains(kind.as_str()) {
                soft.failing_in &= !bit;
            }
            soft.failing_in != 0
        });
        let healed: Vec<String> = self
            .issues
            .values_mut()
            .filter(|issue| !kinds.contains(issue.kind.as_str()))
            .filter(|issue| issue.found_ever & bit != 0)
            .filter_map(|issue| {
                issue.failing_in &= !bit;
                if issue.failing_in != 0 {
                    return None;
                }
                issue.healthy += 1;
                (issue.healthy >= self.policy.resolve_after).then(|| issue.kind.clone())
            })
            .collect();
        for kind in healed {
            if let Some(mut issue) = self.issues.remove(&kind) {
                self.remember(kind, issue.attempts, now);
                issue.state = State::Resolved;
                issue.resolved_at = Some(now);
                transitions.push(Transition::Resolved(issue));
            }
        }
        // The flap memory that had to go to make room.
        transitions.append(&mut self.let_go);
        transitions
    }

    /// Issues that may be recovered now: not escalated, attempts left,
    /// backoff elapsed, no attempt running; the oldest first. Each attempt
    /// asks [`within_budget`](Self::within_budget) first.
    pub fn due(&self, now: Wall) -> Vec<String> {
        let mut due: Vec<&Issue> = self
            .issues
            .values()
            .filter(|i| i.state != State::Escalated && !i.attempting)
            .filter(|i| i.attempts < self.policy.max_attempts && i.next_attempt_at <= now)
            .collect();
        due.sort_by(|a, b| (a.opened_at, &a.kind).cmp(&(b.opened_at, &b.kind)));
        due.into_iter().map(|i| i.kind.clone()).collect()
    }

    /// Records the start of an attempt; the issue as it now stands (its
    /// `attempts` is this attempt's number, 1-based). The next attempt is
    /// due a backoff from now already, so one interrupted by a crash is
    /// not followed by another at once after the restart.
    pub fn attempt_started(&mut self, kind: &str, now: Wall) -> Option<Issue> {
        let backoff = self.backoff(self.issues.get(kind)?.attempts + 1);
        let issue = self.issues.get_mut(kind)?;
        issue.attempts += 1;
        issue.attempting = true;
        issue.state = State::Recovering;
        issue.next_attempt_at = now + backoff;
        let started = issue.clone();
        self.spend(now);
        Some(started)
    }

    /// Records the end of an attempt; the next may start after the backoff.
    pub fn attempt_finished(&mut self, kind: &str, now: Wall) -> Option<Issue> {
        let backoff = self.backoff(self.issues.get(kind).map_or(1, |i| i.attempts));
        let issue = self.issues.get_mut(kind)?;
        issue.attempting = false;
        issue.next_attempt_at = now + backoff;
        Some(issue.clone())
    }

    /// Escalates an issue that nothing can recover.
    pub fn escalate(&mut self, kind: &str, reason: String, now: Wall) -> Option<Transition> {
        let issue = self.issues.get_mut(kind)?;
        if issue.state == State::Escalated {
            return None;
        }
        issue.state = State::Escalated;
        issue.escalated_at = Some(now);
        Some(Transition::Escalated {
            issue: issue.clone(),
            reason,
        })
    }

    /// An operator's reset: the issue gets its attempts back (and is no
    /// longer escalated), its flap memory is forgotten and the target gets
    /// its recovery budget back; the backoff of an attempt that just ran
    /// still holds. `None`, and nothing changed, when no issue of this kind
    /// is open.
    pub fn reset(&mut self, kind: &str) -> Option<Issue> {
        let issue = self.issues.get_mut(kind)?;
        issue.attempts = 0;
        issue.state = State::Open;
        issue.escalated_at = None;
        let reset = issue.clone();
        self.remembered.remove(kind);
        self.spent.clear();
        Some(reset)
    }

    /// Everything a tracker must hand on when its target restarts (a
    /// reload): its open issues, and its flap memory as resolved issues.
    pub fn save(&self) -> Vec<Issue> {
        let open = self.issues.values().cloned();
        let remembered = self
            .remembered
            .iter()
            .map(|(kind, (attempts, resolved_at))| {
                Issue::saved(
                    kind.clone(),
                    State::Resolved,
                    Status::Ok,
                    String::new(),
                    *attempts,
                    [*resolved_at, *resolved_at],
                    [None, Some(*resolved_at)],
                )
            });
        open.chain(remembered).collect()
    }

    /// The wait after attempt `n`: `backoff`, doubled per attempt, capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base: Duration = self.policy.backoff.into();
        let doubled = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        doubled.min(self.policy.backoff_max.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use healer_plugin_sdk::Duration as HumanDuration;

    fn policy() -> Policy {
        Policy {
            interval: HumanDuration::from_secs(5),
            timeout: HumanDuration::from_secs(1),
            max_attempts: 3,
            fail_after: 1,
            resolve_after: 1,
            stable_after: HumanDuration::from_secs(300),
            backoff: HumanDuration::from_secs(1),
            backoff_max: HumanDuration::from_secs(10),
            escalated_interval: HumanDuration::from_secs(60),
            grace: HumanDuration::from_millis(0),
            recovery_timeout: HumanDuration::from_secs(1),
            recovery_budget: None,
        }
    }

    fn down() -> Vec<Finding> {
        vec![Finding::critical("process.not_running", "gone")]
    }

    fn opened(transitions: &[Transition]) -> Option<u32> {
        transitions.iter().find_map(|t| match t {
            Transition::Opened(issue) => Some(issue.attempts),
            _ => None,
        })
    }

    /// What check `check` of a target of two checks (one source each) finds.
    fn run_of(
        tracker: &mut Tracker,
        check: usize,
        found: &[Finding],
        now: Wall,
    ) -> Vec<Transition> {
        let lists = [found];
        let seen = Seen {
            check,
            first_source: check,
            lists: &lists,
        };
        tracker.observe_check(seen, now, true)
    }

    fn resolved(transitions: &[Transition]) -> bool {
        transitions
            .iter()
            .any(|t| matches!(t, Transition::Resolved(_)))
    }

    const TWO_CHECKS: Layout = Layout {
        checks: 2,
        sources: 2,
    };

    #[test]
    fn a_check_that_never_found_an_issue_leaves_it_open() {
        let mut tracker = Tracker::with_layout(policy(), TWO_CHECKS);
        let now = Wall::from_millis(1_000_000);
        assert_eq!(opened(&run_of(&mut tracker, 1, &down(), now)), Some(0));
        // The http check answers OK: it cannot tell the process is back.
        assert!(!resolved(&run_of(&mut tracker, 0, &[], now)));
        assert!(tracker.issue("process.not_running").is_some());
        // The check that found it finds it gone.
        assert!(resolved(&run_of(&mut tracker, 1, &[], now)));
    }

    #[test]
    fn a_kind_two_checks_found_resolves_when_both_find_it_gone() {
        let mut tracker = Tracker::with_layout(policy(), TWO_CHECKS);
        let now = Wall::from_millis(1_000_000);
        run_of(&mut tracker, 0, &down(), now);
        run_of(&mut tracker, 1, &down(), now);
        assert!(!resolved(&run_of(&mut tracker, 0, &[], now)));
        assert!(resolved(&run_of(&mut tracker, 1, &[], now)));
    }

    #[test]
    fn a_restored_issue_resolves_when_every_check_finds_it_gone() {
        let now = Wall::from_millis(1_000_000);
        let mut before = Tracker::with_layout(policy(), TWO_CHECKS);
        run_of(&mut before, 1, &down(), now);
        let mut tracker = Tracker::with_layout(policy(), TWO_CHECKS);
        tracker.restore(before.save(), now);
        assert!(!resolved(&run_of(&mut tracker, 0, &[], now)));
        assert!(resolved(&run_of(&mut tracker, 1, &[], now)));
    }

    #[test]
    fn a_restored_issue_claimed_by_its_check_resolves_while_another_cannot_tell() {
        let now = Wall::from_millis(1_000_000);
        let mut before = Tracker::with_layout(policy(), TWO_CHECKS);
        run_of(&mut before, 0, &down(), now);
        let mut tracker = Tracker::with_layout(policy(), TWO_CHECKS);
        tracker.restore(before.save(), now);
        tracker.claim_restored(|kind| u64::from(kind.starts_with("process.")));
        // Check 1 cannot tell (UNKNOWN); check 0, whose kind it is, says gone.
        let unknown = [Finding::new(
            "nagios.unknown",
            Status::Unknown,
            "no check_disk",
        )];
        let lists = [&unknown[..]];
        let seen = Seen {
            check: 1,
            first_source: 1,
            lists: &lists,
        };
        tracker.observe_check(seen, now, false);
        assert!(resolved(&run_of(&mut tracker, 0, &[], now)));
    }

    #[test]
    fn only_the_checks_that_found_an_issue_count_towards_resolve_after() {
        let policy = Policy {
            resolve_after: 2,
            ..policy()
        };
        let mut tracker = Tracker::with_layout(policy, TWO_CHECKS);
        let now = Wall::from_millis(1_000_000);
        run_of(&mut tracker, 0, &down(), now);
        assert!(!resolved(&run_of(&mut tracker, 0, &[], now)));
        // The other check cannot see it: its healthy runs do not count.
        assert!(!resolved(&run_of(&mut tracker, 1, &[], now)));
        assert!(!resolved(&run_of(&mut tracker, 1, &[], now)));
        assert!(resolved(&run_of(&mut tracker, 0, &[], now)));
    }

    #[test]
    fn a_soft_finding_is_forgotten_only_by_the_check_that_found_it() {
        let mut tracker = Tracker::with_layout(
            Policy {
                fail_after: 2,
                ..policy()
            },
            TWO_CHECKS,
        );
        let now = Wall::from_millis(1_000_000);
        run_of(&mut tracker, 1, &down(), now);
        run_of(&mut tracker, 0, &[], now);
        // Still one failure behind it: the second opens the issue.
        assert_eq!(opened(&run_of(&mut tracker, 1, &down(), now)), Some(0));
    }

    #[test]
    fn an_escalated_issue_is_written_without_a_next_attempt() {
        let mut tracker = Tracker::new(policy());
        let now = Wall::from_millis(1_000_000);
        tracker.observe(&down(), now, true);
        let open = serde_json::to_value(tracker.issue("process.not_running")).unwrap();
        assert!(open.get("next_attempt_at").is_some(), "{open}");
        tracker.escalate("process.not_running", "test".to_owned(), now);
        let escalated = serde_json::to_value(tracker.issue("process.not_running")).unwrap();
        assert!(escalated.get("next_attempt_at").is_none(), "{escalated}");
        let back: Issue = serde_json::from_value(escalated).unwrap();
        assert_eq!(back.state, State::Escalated);
    }

    fn attempt(tracker: &mut Tracker, now: Wall) -> u32 {
        let n = tracker
            .attempt_started("process.not_running", now)
            .map_or(0, |issue| issue.attempts);
        tracker.attempt_finished("process.not_running", now);
        n
    }

    /// One diagnoser answering as many kinds as the target may hold, every
    /// check, against another diagnoser's real finding on the same target.
    #[test]
    fn one_diagnosers_flood_cannot_crowd_out_another_diagnosers_finding() {
        let mut tracker = Tracker::new(policy());
        let now = Wall::from_millis(1_000_000);
        let flood: Vec<Finding> = (0..MAX_ISSUES_PER_TARGET)
            .map(|i| Finding::critical(format!("hostile.k{i}"), "s"))
            .collect();
        let honest_quiet: Vec<Finding> = Vec::new();
        let transitions = tracker.observe_from(&[&flood, &honest_quiet], now, true);
        assert_eq!(
            tracker.issues().count(),
            MAX_ISSUES_PER_TARGET / 2,
            "its share"
        );
        assert!(
            transitions.iter().any(
                |t| matches!(t, Transition::LeftOut { source: 0, count, .. } if *count == MAX_ISSUES_PER_TARGET / 2)
            ),
            "{transitions:?}"
        );
        let later = now + Duration::from_secs(5);
        tracker.observe_from(&[&flood, &down()], later, true);
        assert!(
            tracker.issue("process.not_running").is_some(),
            "the other diagnoser's finding opens"
        );
    }

    #[test]
    fn a_flood_naming_anothers_kind_past_its_share_does_not_claim_it() {
        let mut tracker = Tracker::new(policy());
        let now = Wall::from_millis(1_000_000);
        let mut flood: Vec<Finding> = (0..MAX_ISSUES_PER_TARGET)
            .map(|i| Finding::critical(format!("hostile.k{i}"), "s"))
            .collect();
        flood.extend(down());
        tracker.observe_from(&[&flood, &down()], now, true);
        assert!(tracker.issue("process.not_running").is_some());
    }

    #[test]
    fn a_flood_of_new_kinds_every_check_holds_only_its_share() {
        let mut tracker = Tracker::new(policy());
        let mut now = Wall::from_millis(1_000_000);
        for step in 0..6 {
            let flood: Vec<Finding> = (0..MAX_ISSUES_PER_TARGET)
                .map(|i| Finding::critical(format!("hostile.s{step}.k{i}"), "s"))
                .collect();
            let honest = if step >= 2 { down() } else { Vec::new() };
            tracker.observe_from(&[&flood, &honest], now, true);
            assert!(tracker.issues().count() <= MAX_ISSUES_PER_TARGET);
            if step >= 2 {
                assert!(
                    tracker.issue("process.not_running").is_some(),
                    "step {step}: {} open",
                    tracker.issues().count()
                );
            }
            now = now + Duration::from_secs(5);
        }
    }

    #[test]
    fn soft_findings_coming_of_age_never_take_a_target_past_its_cap() {
        let mut tracker = Tracker::new(Policy {
            fail_after: 2,
            ..policy()
        });
        let now = Wall::from_millis(1_000_000);
        let mut soft: Vec<Finding> = Vec::new();
        for step in 0..6 {
            let mut findings: Vec<Finding> = (0..MAX_ISSUES_PER_TARGET - 1)
                .map(|i| Finding::critical(format!("fresh.s{step}.k{i}"), "s"))
                .collect();
            findings.extend(soft.iter().cloned());
            findings.extend(
                tracker
                    .issues()
                    .map(|i| Finding::critical(i.kind.clone(), "s"))
                    .collect::<Vec<_>>(),
            );
            tracker.observe(&findings, now, true);
            assert!(
                tracker.issues().count() <= MAX_ISSUES_PER_TARGET,
                "step {step}"
            );
            soft = findings[..MAX_ISSUES_PER_TARGET - 1].to_vec();
        }
    }

    #[test]
    fn one_failed_check_opens_an_issue_by_default() {
        let mut tracker = Tracker::new(policy());
        let now = Wall::from_millis(1_000_000);
        let transitions = tracker.observe(&down(), now, true);
        assert_eq!(opened(&transitions), Some(0), "{transitions:?}");
        assert_eq!(tracker.due(now), ["process.not_running"]);
    }

    #[test]
    fn fail_after_needs_that_many_consecutive_failures() {
        let mut tracker = Tracker::new(Policy {
            fail_after: 3,
            ..policy()
        });
        let now = Wall::from_millis(1_000_000);
        tracker.observe(&down(), now, true);
        tracker.observe(&[], now, true); // a blip resets the count
        tracker.observe(&down(), now, true);
        tracker.observe(&down(), now, true);
        assert!(!tracker.has_issues());
        let transitions = tracker.observe(&down(), now, true);
        assert!(opened(&transitions).is_some(), "{transitions:?}");
    }

    #[test]
    fn attempts_back_off_exponentially_up_to_the_cap() {
        let tracker = Tracker::new(policy());
        let waits: Vec<u64> = (1..=6).map(|n| tracker.backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn exactly_max_attempts_then_escalation_and_nothing_more() {
        let mut tracker = Tracker::new(policy());
        let mut now = Wall::from_millis(1_000_000);
        let mut attempts = Vec::new();
        let mut escalated = false;
        for _ in 0..20 {
            for transition in tracker.observe(&down(), now, true) {
                escalated |= matches!(transition, Transition::Escalated { issue, .. } if issue.attempts == 3);
            }
            for _ in tracker.due(now) {
                attempts.push(attempt(&mut tracker, now));
            }
            now = now + Duration::from_secs(30);
        }
        assert_eq!(attempts, [1, 2, 3]);
        assert!(escalated);
        assert_eq!(
            tracker.issue("process.not_running").unwrap().state,
            State::Escalated
        );
    }

    #[test]
    fn the_backoff_holds_the_next_attempt() {
        let mut tracker = Tracker::new(policy());
        let now = Wall::from_millis(1_000_000);
        tracker.observe(&down(), now, true);
        attempt(&mut tracker, now);
        tracker.observe(&down(), now + Duration::from_millis(500), true);
        assert!(tracker.due(now + Duration::from_millis(500)).is_empty());
        assert_eq!(tracker.due(now + Duration::from_secs(1)).len(), 1);
    }

    #[test]
    fn resolve_after_needs_that_many_healthy_checks() {
        let mut tracker = Tracker::new(Policy {
            resolve_after: 2,
            ..policy()
        });
        let now = Wall::from_millis(1_000_000);
        tracker.observe(&down(), now, true);
        assert!(tracker.observe(&[], now, true).is_empty());
        let transitions = tracker.observe(&[], now, true);
        assert!(
            matches!(&transitions[..], [Transition::Resolved(issue)] if issue.attempts == 0 && issue.state == State::Resolved),
            "{transitions:?}"
        );
        assert!(!tracker.has_issues());
    }

    #[test]
    fn a_flapping_issue_keeps_its_attempt_count_until_stable() {
        let mut tracker = Tracker::new(policy());
        let now = Wall::from_millis(1_000_000);
        tracker.observe(&down(), now, true);
        attempt(&mut tracker, now);
        attempt(&mut tracker, now);
        tracker.observe(&[], now, true); // resolved after 2 attempts
        let later = now + Duration::from_secs(60);
        assert_eq!(opened(&tracker.observe(&down(), later, true)), Some(2));
        assert_eq!(attempt(&mut tracker, later), 3);
        tracker.observe(&[], later, true);
        // Back again, attempts exhausted: escalated at once, no restart storm.
        let transitions = tracker.observe(&down(), later + Duration::from_secs(1), true);
        assert!(
            matches!(&transitions[1], Transition::Escalated { issue, .. } if issue.attempts == 3),
            "{transitions:?}"
        );
        assert!(tracker.due(later + Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn after_stable_after_the_count_starts_over() {
        let mut tracker = Tracker::new(policy());
        let now = Wall::from_millis(1_000_000);
        tracker.observe(&down(), now, true);
        attempt(&mut tracker, now);
        tracker.observe(&[], now, true);
        let much_later = now + Duration::from_secs(301);
        let transitions = tracker.observe(&down(), much_later, true);
        assert_eq!(
            transitions[0],
            Transition::Forgotten {
                kind: "process.not_running".into(),
                full: false,
            }
        );
        assert_eq!(opened(&transitions), Some(0));
    }

    #[test]
    fn an_inconclusive_check_never_resolves_an_issue() {
        let mut tracker = Tracker::new(policy());
        let now = Wall::from_millis(1_000_000);
        tracker.observe(&down(), now, true);
        assert!(tracker.observe(&[], now, false).is_empty());
        assert!(tracker.has_issues());
        assert!(matches!(
            tracker.observe(&[], now, true)[0],
            Transition::Resolved(_)
        ));
    }

    #[test]
    fn the_same_kind_twice_in_one_check_is_one_failure() {
        let mut tracker = Tracker::new(Policy {
            fail_after: 2,
            ..policy()
        });
        let twice = [down(), down()].concat();
        assert!(matches!(
            tracker.observe(&twice, Wall::from_millis(1_000_000), true)[0],
            Transition::Soft { failures: 1, .. }
        ));
    }

    #[test]
    fn the_slow_cadence_needs_every_issue_escalated() {
        let mut tracker = Tracker::new(policy());
        let now = Wall::from_millis(1_000_000);
        let two = [Finding::critical("a.x", "a"), Finding::critical("b.y", "b")];
        tracker.observe(&two, now, true);
        tracker.escalate("a.x", "no recoverer".into(), now);
        assert!(!tracker.all_escalated());
        tracker.escalate("b.y", "no recoverer".into(), now);
        assert!(tracker.all_escalated());
    }

    #[test]
    fn an_escalated_issue_resolves_when_healthy_again() {
        let mut tracker = Tracker::new(policy());
        let now = Wall::from_millis(1_000_000);
        tracker.observe(&down(), now, true);
        assert!(tracker
            .escalate("process.not_running", "no recoverer".into(), now)
            .is_some());
        assert!(tracker.due(now).is_empty());
        assert!(matches!(
            tracker.observe(&[], now, true)[0],
            Transition::Resolved(_)
        ));
    }

    #[test]
    fn a_restored_tracker_carries_on_with_attempts_backoff_and_escalation() {
        let now = Wall::from_millis(1_000_000);
        let mut before = Tracker::new(policy());
        before.observe(&down(), now, true);
        attempt(&mut before, now);
        attempt(&mut before, now);
        let saved: Vec<Issue> = before.issues().cloned().collect();
        assert_eq!(saved[0].next_attempt_at, now + Duration::from_secs(2));

        let mut after = Tracker::new(policy());
        assert_eq!(after.restore(saved, now + Duration::from_secs(1)), 1);
        assert!(
            after.due(now + Duration::from_secs(1)).is_empty(),
            "the backoff still holds"
        );
        let later = now + Duration::from_secs(2);
        assert_eq!(after.due(later), ["process.not_running"]);
        assert_eq!(attempt(&mut after, later), 3);
        let transitions = after.observe(&down(), later, true);
        assert!(
            matches!(&transitions[..], [Transition::Escalated { issue, .. }] if issue.escalated_at == Some(later)),
            "{transitions:?}"
        );

        let mut again = Tracker::new(policy());
        again.restore(after.issues().cloned().collect(), later);
        assert!(again.all_escalated());
        assert!(again.due(later + Duration::from_secs(3600)).is_empty());
    }

    #[test]
    fn a_restored_resolved_issue_is_remembered_only_within_stable_after() {
        let now = Wall::from_millis(1_000_000);
        let mut before = Tracker::new(policy());
        before.observe(&down(), now, true);
        attempt(&mut before, now);
        let transitions = before.observe(&[], now, true);
        let Some(Transition::Resolved(resolved)) = transitions.into_iter().next() else {
            panic!("not resolved");
        };

        let mut soon = Tracker::new(policy());
        assert_eq!(
            soon.restore(vec![resolved.clone()], now + Duration::from_secs(60)),
            0
        );
        let back = soon.observe(&down(), now + Duration::from_secs(60), true);
        assert_eq!(
            opened(&back),
            Some(1),
            "the flap memory survived the restart"
        );

        let mut late = Tracker::new(policy());
        late.restore(vec![resolved], now + Duration::from_secs(301));
        let back = late.observe(&down(), now + Duration::from_secs(301), true);
        assert_eq!(opened(&back), Some(0));
    }

    #[test]
    fn a_restored_open_issue_with_no_attempts_left_is_escalated() {
        let now = Wall::from_millis(1_000_000);
        let mut tracker = Tracker::new(policy());
        let saved = Issue::saved(
            "process.not_running".into(),
            State::Open,
            Status::Critical,
            "gone".into(),
            3,
            [now, now],
            [None, None],
        );
        tracker.restore(vec![saved], now);
        assert!(tracker.due(now).is_empty());
        let transitions = tracker.observe(&down(), now, true);
        assert!(
            matches!(&transitions[..], [Transition::Escalated { issue, .. }] if issue.attempts == 3),
            "{transitions:?}"
        );
    }

    #[test]
    fn an_attempt_cut_short_by_a_crash_still_waits_its_backoff() {
        let now = Wall::from_millis(1_000_000);
        let mut tracker = Tracker::new(policy());
        tracker.observe(&down(), now, true);
        tracker.attempt_started("process.not_running", now);
        // healer is killed here, before the attempt finishes.
        let saved: Vec<Issue> = tracker.issues().cloned().collect();
        let mut restarted = Tracker::new(policy());
        restarted.restore(saved, now);
        assert!(restarted.due(now + Duration::from_millis(500)).is_empty());
        assert_eq!(restarted.due(now + Duration::from_secs(1)).len(), 1);
    }

    #[test]
    fn a_clock_set_back_holds_an_attempt_no_longer_than_the_longest_backoff() {
        let now = Wall::from_millis(10_000_000);
        let mut tracker = Tracker::new(policy());
        tracker.observe(&down(), now, true);
        attempt(&mut tracker, now); // the next is due 1 s later
        let set_back = Wall::from_millis(now.millis() - 3_600_000);
        tracker.observe(&down(), set_back, true);
        assert!(
            tracker.due(set_back).is_empty(),
            "the backoff is not skipped"
        );
        assert!(tracker.due(set_back + Duration::from_secs(9)).is_empty());
        assert_eq!(
            tracker.due(set_back + Duration::from_secs(10)).len(),
            1,
            "due after at most backoff_max (10 s), not an hour"
        );
    }

    #[test]
    fn an_operator_reset_gives_an_escalated_issue_its_attempts_back() {
        let now = Wall::from_millis(1_000_000);
        let mut tracker = Tracker::new(policy());
        tracker.observe(&down(), now, true);
        let kind = "process.not_running";
        tracker.escalate(kind, "nothing helps".into(), now);
        assert!(tracker.due(now).is_empty());
        let issue = tracker.reset(kind).expect("the issue is open");
        assert_eq!((issue.state, issue.attempts), (State::Open, 0));
        assert_eq!(tracker.due(now), vec![kind.to_owned()]);
        assert!(tracker.reset("no.such").is_none());
    }

    #[test]
    fn a_saved_tracker_carries_its_issues_and_flap_memory_to_its_successor() {
        let now = Wall::from_millis(1_000_000);
        let mut tracker = Tracker::new(policy());
        tracker.observe(&down(), now, true);
        attempt(&mut tracker, now);
        tracker.observe(&[], now, true); // resolved, remembered with 1 attempt
        let mut next = Tracker::new(policy());
        next.restore(tracker.save(), now);
        let back = next.observe(&down(), now, true);
        assert_eq!(opened(&back), Some(1), "the flap memory went along");
    }

    /// A diagnoser that names a new kind at every check.
    fn rotating(i: u32) -> Vec<Finding> {
        vec![Finding::critical(format!("rotating.k{i}"), "again")]
    }

    /// Attempts every due issue the budget allows, as the engine does;
    /// returns the attempts made and the budget escalations.
    fn recover_due(tracker: &mut Tracker, now: Wall) -> (u32, Vec<Transition>) {
        let (mut attempts, mut escalated) = (0, Vec::new());
        for kind in tracker.due(now) {
            if tracker.within_budget(now) {
                tracker.attempt_started(&kind, now);
                tracker.attempt_finished(&kind, now);
                attempts += 1;
            } else {
                escalated.extend(tracker.escalate_over_budget(&kind, now));
            }
        }
        (attempts, escalated)
    }

    #[test]
    fn a_target_gets_its_budget_of_attempts_however_its_kinds_are_named() {
        let mut tracker = Tracker::new(policy());
        let mut now = Wall::from_millis(1_000_000);
        let (mut attempts, mut escalations) = (0, 0);
        for i in 0..40 {
            tracker.observe(&rotating(i), now, true);
            let (made, escalated) = recover_due(&mut tracker, now);
            attempts += made;
            escalations += escalated
                .iter()
                .filter(|t| matches!(t, Transition::Escalated { reason, .. } if reason.contains("recovery budget")))
                .count();
            now = now + Duration::from_secs(2);
        }
        assert_eq!(attempts, 3, "max_attempts is the budget by default");
        assert_eq!(escalations, 37, "every later kind escalates at once");
        // Once the attempts are older than stable_after, the budget is back.
        let later = now + Duration::from_secs(300);
        tracker.observe(&rotating(99), later, true);
        assert_eq!(recover_due(&mut tracker, later).0, 1);
    }

    #[test]
    fn the_budget_is_its_own_setting_shared_by_all_issues_oldest_first() {
        let mut tracker = Tracker::new(Policy {
            recovery_budget: Some(2),
            ..policy()
        });
        let now = Wall::from_millis(1_000_000);
        tracker.observe(&[Finding::critical("z.late", "z")], now, true);
        let three = [
            Finding::critical("z.late", "z"),
            Finding::critical("a.x", "a"),
            Finding::critical("b.y", "b"),
        ];
        let later = now + Duration::from_secs(1);
        tracker.observe(&three, later, true);
        assert_eq!(tracker.due(later), ["z.late", "a.x", "b.y"], "oldest first");
        let (attempts, escalated) = recover_due(&mut tracker, later);
        assert_eq!(attempts, 2);
        assert!(
            matches!(&escalated[..], [Transition::Escalated { issue, .. }] if issue.kind == "b.y" && issue.attempts == 0),
            "{escalated:?}"
        );
    }

    #[test]
    fn a_restart_does_not_hand_back_the_spent_budget() {
        let now = Wall::from_millis(1_000_000);
        let mut before = Tracker::new(policy());
        for i in 0..3 {
            let at = now + Duration::from_secs(u64::from(i) * 10);
            before.observe(&rotating(i), at, true);
            recover_due(&mut before, at);
        }
        // Each attempt is spent again at the latest moment it can have
        // begun (k0's when k0 resolved, 10 s in) and ages out 300 s after
        // that, not 300 s after the restart; the other two still hold.
        let mut after = Tracker::new(policy());
        after.restore(before.save(), now + Duration::from_secs(30));
        let later = now + Duration::from_secs(311);
        after.observe(&rotating(7), later, true);
        let (attempts, escalated) = recover_due(&mut after, later);
        assert_eq!(attempts, 1, "one of three came back, no more");
        after.observe(&rotating(8), later, true);
        assert_eq!(recover_due(&mut after, later).0, 0);
        assert!(escalated.is_empty());
    }

    #[test]
    fn a_reload_hands_the_spent_budget_to_the_successor() {
        let budget_of_two = || {
            Tracker::new(Policy {
                recovery_budget: Some(2),
                ..policy()
            })
        };
        let now = Wall::from_millis(1_000_000);
        let mut before = budget_of_two();
        before.observe(&rotating(0), now, true);
        recover_due(&mut before, now);
        before.observe(&rotating(1), now, true);
        recover_due(&mut before, now);
        let mut after = budget_of_two();
        after.restore(before.save(), now);
        after.carry_spent(before.spent());
        after.observe(&rotating(2), now, true);
        assert_eq!(recover_due(&mut after, now).0, 0);
    }

    #[test]
    fn a_clock_set_back_holds_the_budget_no_longer_than_stable_after() {
        let now = Wall::from_millis(100_000_000);
        let mut tracker = Tracker::new(policy());
        for i in 0..3 {
            tracker.observe(&rotating(i), now, true);
            recover_due(&mut tracker, now);
        }
        let set_back = Wall::from_millis(now.millis() - 86_400_000);
        let hour_later = set_back + Duration::from_secs(3600);
        tracker.observe(&rotating(9), hour_later, true);
        assert_eq!(recover_due(&mut tracker, hour_later).0, 1);
    }

    #[test]
    fn what_restore_does_not_carry_on_is_let_go_at_the_next_check() {
        let now = Wall::from_millis(10_000_000);
        let old = Issue::saved(
            "old.resolved".into(),
            State::Resolved,
            Status::Ok,
            String::new(),
            1,
            [now, now],
            [None, Some(Wall::from_millis(1_000))],
        );
        let open: Vec<Issue> = (0..MAX_ISSUES_PER_TARGET + 2)
            .map(|i| {
                let at = Wall::from_millis(1_000 + i as u64);
                Issue::saved(
                    format!("open.k{i}"),
                    State::Open,
                    Status::Critical,
                    String::new(),
                    0,
                    [at, at],
                    [None, None],
                )
            })
            .collect();
        let mut tracker = Tracker::new(policy());
        let restored = tracker.restore([vec![old], open].concat(), now);
        assert_eq!(restored, MAX_ISSUES_PER_TARGET);
        let transitions = tracker.observe(&[], now, false);
        let let_go: Vec<_> = transitions
            .iter()
            .filter_map(|t| match t {
                Transition::Forgotten { kind, .. } => Some(kind.as_str()),
                Transition::Dropped { issue, .. } => Some(issue.kind.as_str()),
                _ => None,
            })
            .collect();
        let newest = format!("open.k{}", MAX_ISSUES_PER_TARGET + 1);
        assert_eq!(let_go.len(), 3, "{let_go:?}");
        assert!(let_go.contains(&"old.resolved") && let_go.contains(&newest.as_str()));
        assert!(tracker.issue("open.k0").is_some(), "the oldest are kept");
    }

    #[test]
    fn a_saved_attempt_count_from_a_damaged_row_costs_no_more_than_the_budget() {
        let now = Wall::from_millis(10_000_000);
        let damaged = Issue::saved(
            "process.not_running".into(),
            State::Escalated,
            Status::Critical,
            String::new(),
            u32::MAX,
            [now, now],
            [None, None],
        );
        let mut tracker = Tracker::new(policy());
        assert_eq!(tracker.restore(vec![damaged], now), 1);
        assert_eq!(tracker.spent().len(), 3);
    }

    #[test]
    fn a_target_holds_at_most_its_cap_of_issues_and_says_what_it_left_out() {
        let mut tracker = Tracker::new(policy());
        let now = Wall::from_millis(1_000_000);
        let flood: Vec<Finding> = (0..20_000)
            .map(|i| Finding::critical(format!("flood.k{i}"), "s"))
            .collect();
        let transitions = tracker.observe(&flood, now, true);
        assert_eq!(tracker.issues().count(), MAX_ISSUES_PER_TARGET);
        let left_out: Vec<_> = transitions
            .iter()
            .filter_map(|t| match t {
                Transition::LeftOut { kinds, count, .. } => Some((kinds.len(), *count)),
                _ => None,
            })
            .collect();
        assert_eq!(left_out, [(5, 20_000 - MAX_ISSUES_PER_TARGET)]);
        // The issues already open go on; one of them resolving makes room.
        let mut fewer = flood[1..MAX_ISSUES_PER_TARGET].to_vec();
        fewer.push(Finding::critical("new.kind", "s"));
        tracker.observe(&fewer, now, true);
        assert!(tracker.issue("flood.k0").is_none());
        assert!(
            tracker.issue("new.kind").is_none(),
            "no room yet at that check"
        );
        tracker.observe(&fewer, now, true);
        assert!(tracker.issue("new.kind").is_some());
        assert_eq!(tracker.issues().count(), MAX_ISSUES_PER_TARGET);
    }

    #[test]
    fn the_flap_memory_is_bounded_and_every_resolved_issue_is_forgotten_aloud() {
        let mut tracker = Tracker::new(Policy {
            recovery_budget: Some(u32::MAX),
            ..policy()
        });
        let now = Wall::from_millis(1_000_000);
        let mut transitions = Vec::new();
        let kinds = MAX_REMEMBERED as u32 + 100;
        for i in 0..kinds {
            let at = now + Duration::from_millis(u64::from(i));
            transitions.extend(tracker.observe(&rotating(i), at, true));
        }
        transitions.extend(tracker.observe(&[], now + Duration::from_secs(1), true));
        assert_eq!(tracker.remembered.len(), MAX_REMEMBERED);
        assert!(
            !tracker.remembered.contains_key("rotating.k0"),
            "the oldest went first"
        );
        // Every issue that resolved is forgotten in the end, and said so
        // (the store deletes its row then): none is left behind.
        transitions.extend(tracker.observe(&[], now + Duration::from_secs(3600), true));
        assert!(tracker.remembered.is_empty());
        let count =
            |wanted: fn(&Transition) -> bool| transitions.iter().filter(|t| wanted(t)).count();
        let resolved = count(|t| matches!(t, Transition::Resolved(_)));
        let forgotten = count(|t| matches!(t, Transition::Forgotten { .. }));
        assert_eq!((resolved, forgotten), (kinds as usize, kinds as usize));
    }

    #[test]
    fn a_reset_of_no_open_issue_changes_nothing() {
        let now = Wall::from_millis(1_000_000);
        let mut tracker = Tracker::new(policy());
        tracker.observe(&down(), now, true);
        attempt(&mut tracker, now);
        tracker.observe(&[], now, true); // resolved, remembered with 1 attempt
        assert!(tracker.reset("process.not_running").is_none());
        let back = tracker.observe(&down(), now, true);
        assert_eq!(opened(&back), Some(1), "the flap memory is still there");
    }

    #[test]
    fn a_reset_keeps_the_backoff_of_the_attempt_that_just_ran() {
        let now = Wall::from_millis(1_000_000);
        let mut tracker = Tracker::new(policy());
        tracker.observe(&down(), now, true);
        attempt(&mut tracker, now); // the next is due 1 s later
        let issue = tracker.reset("process.not_running").expect("open");
        assert_eq!(issue.attempts, 0);
        assert!(tracker.due(now).is_empty(), "the backoff still holds");
        assert_eq!(tracker.due(now + Duration::from_secs(1)).len(), 1);
    }
}
