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
//! An issue also carries what it waits for: the verdict on its latest
//! successful attempt (a `ledger::Judging`, given as a
//! [`Transition::Judged`]: healed once it has stayed resolved for
//! `stable_after`, not healed when another attempt is needed, it comes
//! back or is escalated) and a recovery proposed to an operator
//! ([`Proposal`]: no attempt is made until it is approved; rejected or
//! unanswered by its expiry, the issue is escalated).
//!
//! Pure: no I/O, no clock of its own (callers pass `now`), so every rule is
//! tested exactly.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use healer_plugin_sdk::{Fence, Finding, Status};
use serde::{Deserialize, Serialize};

use crate::clock::Wall;
use crate::config::Policy;
use crate::ledger::{Judging, Verdict};

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
/// Written out (events, the API) with a `next_attempt_at` only while one
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
    /// A recovery proposed to an operator and not yet answered (or
    /// approved and not yet run). Boxed, as is `judging`: an issue rides
    /// in many events, and is small while it waits for neither.
    #[serde(default)]
    pub proposal: Option<Box<Proposal>>,
    /// The latest successful attempt, waiting for its verdict.
    #[serde(default)]
    pub judging: Option<Box<Judging>>,
    /// The fleet's claim on its latest attempt (a fleet target's).
    #[serde(default)]
    pub fence: Option<Box<Fence>>,
}

/// A recovery healer proposes instead of running it (`mode = "propose"`,
/// or a recoverer below its `min_success`): the exact action, and until
/// when an operator may approve it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// The recoverer that would run.
    pub recoverer: String,
    /// What it would do: its plugin and its config, secrets hidden.
    pub action: String,
    /// Why it asks instead of acting.
    pub why: String,
    /// When it was proposed.
    pub proposed_at: Wall,
    /// When, unanswered, the issue is escalated.
    pub expires_at: Wall,
    /// Approved: the next attempt runs it, once.
    #[serde(default)]
    pub approved: bool,
}

/// An operator's answer to a proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Approve,
    Reject,
}

impl Serialize for Issue {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        /// What is written: the issue, its next attempt only when one may come.
        #[derive(Serialize)]
        struct Shown<'a> {
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
            #[serde(skip_serializing_if = "Option::is_none")]
            proposal: Option<&'a Proposal>,
            #[serde(skip_serializing_if = "Option::is_none")]
            judging: Option<&'a Judging>,
            #[serde(skip_serializing_if = "Option::is_none")]
            fence: Option<&'a Fence>,
        }
        let waiting = matches!(self.state, State::Open | State::Recovering);
        Shown {
            kind: &self.kind,
            state: self.state,
            severity: self.severity,
            summary: &self.summary,
            attempts: self.attempts,
            opened_at: self.opened_at,
            next_attempt_at: waiting.then_some(self.next_attempt_at),
            escalated_at: self.escalated_at,
            resolved_at: self.resolved_at,
            proposal: self.proposal.as_deref(),
            judging: self.judging.as_deref(),
            fence: self.fence.as_deref(),
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
            proposal: None,
            judging: None,
            fence: None,
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
    /// An attempt that said it succeeded was judged.
    Judged {
        kind: String,
        judging: Judging,
        verdict: Verdict,
        reason: String,
    },
}

/// The issues of one target.
#[derive(Debug)]
pub struct Tracker {
    policy: Policy,
    issues: HashMap<String, Issue>,
    soft: HashMap<String, Soft>,
    /// Resolved issues' attempt counts, when they resolved, and the
    /// attempt that healed them, waiting for its verdict.
    remembered: HashMap<String, (u32, Wall, Option<Box<Judging>>)>,
    /// When the target's latest attempts started, oldest first: no more
    /// than its budget, none older than `stable_after`.
    spent: VecDeque<Wall>,
    /// What `restore` let go, said at the next check.
    let_go: Vec<Transition>,
    /// Verdicts given, not yet taken ([`verdicts`](Self::verdicts)).
    judged: Vec<Transition>,
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
            judged: Vec::new(),
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
                    self.remember(issue.kind, issue.attempts, at, issue.judging);
                }
                (State::Resolved, _) => {
                    if let Some(judging) = issue.judging {
                        self.judge(
                            &issue.kind,
                            *judging,
                            Verdict::Unknown,
                            format!(
                                "healer was not running for all of the {} it had to stay resolved",
                                self.policy.stable_after
                            ),
                        );
                    }
                    self.let_go.push(Transition::Forgotten {
                        kind: issue.kind,
                        full: false,
                    })
                }
                _ if self.issues.len() >= MAX_ISSUES_PER_TARGET => {
                    if let Some(judging) = issue.judging.take() {
                        self.judge(
                            &issue.kind,
                            *judging,
                            Verdict::Unknown,
                            "the issue was not carried on".to_owned(),
                        );
                    }
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
    fn remember(
        &mut self,
        kind: String,
        attempts: u32,
        resolved_at: Wall,
        judging: Option<Box<Judging>>,
    ) {
        if self.remembered.len() >= MAX_REMEMBERED && !self.remembered.contains_key(&kind) {
            let first_to_go = self
                .remembered
                .iter()
                .min_by_key(|(_, (attempts, at, _))| (*attempts > 0, *at))
                .map(|(kind, _)| kind.clone());
            if let Some(kind) = first_to_go {
                if let Some((_, _, Some(judging))) = self.remembered.remove(&kind) {
                    let reason = "forgotten to make room before it was stable".to_owned();
                    self.judge(&kind, *judging, Verdict::Unknown, reason);
                }
                self.let_go.push(Transition::Forgotten { kind, full: true });
            }
        }
        self.remembered
            .insert(kind, (attempts, resolved_at, judging));
    }

    /// Gives a verdict on an attempt; taken with the next transitions.
    fn judge(&mut self, kind: &str, judging: Judging, verdict: Verdict, reason: String) {
        self.judged.push(Transition::Judged {
            kind: kind.to_owned(),
            judging,
            verdict,
            reason,
        });
    }

    /// The verdicts given since last asked (an attempt started, an issue
    /// escalated); a check's transitions carry their own.
    pub fn verdicts(&mut self) -> Vec<Transition> {
        std::mem::take(&mut self.judged)
    }

    /// Records that `recoverer` said it succeeded in the attempt of the
    /// issue of `kind` that started at `started_at`: its verdict comes
    /// when the issue has stayed resolved for `stable_after`, or sooner
    /// when it has not.
    pub fn awaiting_verdict(&mut self, kind: &str, recoverer: &str, started_at: Wall) {
        if let Some(issue) = self.issues.get_mut(kind) {
            issue.judging = Some(Box::new(Judging {
                recoverer: recoverer.to_owned(),
                attempt: issue.attempts,
                started_at,
                resolved_at: None,
            }));
        }
    }

    /// The issue of `kind` is due again: the attempt before, if it said
    /// it succeeded, did not heal it within its verification window and
    /// is judged not healed (before the next attempt's ladder is ordered
    /// by what healed).
    pub fn due_again(&mut self, kind: &str) {
        if let Some(judging) = self.issues.get_mut(kind).and_then(|i| i.judging.take()) {
            let reason = "another attempt was needed".to_owned();
            self.judge(kind, *judging, Verdict::NotHealed, reason);
        }
    }

    /// Proposes `proposal` for the issue of `kind` instead of an attempt:
    /// no attempt is made until an operator approves it. The issue as it
    /// now stands; `None` when no such issue is open or one is proposed.
    pub fn propose(&mut self, kind: &str, proposal: Proposal) -> Option<Issue> {
        let issue = self.issues.get_mut(kind)?;
        if issue.proposal.is_some() || issue.state == State::Escalated {
            return None;
        }
        issue.proposal = Some(Box::new(proposal));
        Some(issue.clone())
    }

    /// An operator's answer to the proposal of the issue of `kind`:
    /// approved, the next attempt runs it (due at once); rejected (also
    /// once approved), the issue is escalated. `Err` says why there is
    /// nothing to answer (none, expired, approved already).
    pub fn answer(
        &mut self,
        kind: &str,
        answer: Answer,
        now: Wall,
    ) -> Result<(Issue, Option<Transition>), String> {
        let issue = self
            .issues
            .get_mut(kind)
            .ok_or_else(|| format!("no open issue of kind {kind:?}"))?;
        let Some(proposal) = issue.proposal.as_mut() else {
            return Err(format!(
                "the issue {kind:?} has no proposal waiting for an answer"
            ));
        };
        if proposal.expires_at <= now {
            return Err(format!(
                "the proposal for {kind:?} expired at {}",
                proposal.expires_at
            ));
        }
        match answer {
            Answer::Approve if proposal.approved => Err(format!(
                "the proposal for {kind:?} is approved already: it runs when the issue is next due"
            )),
            Answer::Approve => {
                proposal.approved = true;
                issue.next_attempt_at = issue.next_attempt_at.min(now);
                Ok((issue.clone(), None))
            }
            Answer::Reject => {
                let recoverer = proposal.recoverer.clone();
                let reason = format!("an operator rejected the proposal to run {recoverer}");
                let transition = self.escalate(kind, reason, now);
                let issue = self.issues.get(kind).cloned().ok_or("the issue went")?;
                Ok((issue, transition))
            }
        }
    }

    /// Escalates the issues whose proposals nobody answered in time, or
    /// that were approved but could not run in time (a dependency, pause
    /// or gate held them): an approval is not for ever.
    pub fn expire_proposals(&mut self, now: Wall) -> Vec<Transition> {
        let expired: Vec<(String, String, Wall, bool)> = self
            .issues
            .values()
            .filter_map(|issue| {
                let p = issue.proposal.as_ref()?;
                (p.expires_at <= now).then(|| {
                    (
                        issue.kind.clone(),
                        p.recoverer.clone(),
                        p.proposed_at,
                        p.approved,
                    )
                })
            })
            .collect();
        expired
            .into_iter()
            .filter_map(|(kind, recoverer, proposed_at, approved)| {
                let reason = if approved {
                    format!("the approved proposal to run {recoverer} made at {proposed_at} could not run before it expired (propose_for)")
                } else {
                    format!("nobody answered the proposal to run {recoverer} made at {proposed_at} (propose_for)")
                };
                self.escalate(&kind, reason, now)
            })
            .collect()
    }

    /// When the first proposal expires.
    pub fn next_proposal_expiry(&self) -> Option<Wall> {
        self.issues
            .values()
            .filter_map(|issue| issue.proposal.as_ref())
            .map(|proposal| proposal.expires_at)
            .min()
    }

    /// Takes back the proposal of the issue of `kind` (its recoverer is no
    /// longer configured as it was); the issue as it now stands.
    pub fn withdraw(&mut self, kind: &str) -> Option<Issue> {
        let issue = self.issues.get_mut(kind)?;
        issue.proposal.take()?;
        Some(issue.clone())
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
        let shown_stable_after = self.policy.stable_after;
        self.remembered.retain(|kind, (_, resolved_at, judging)| {
            let keep = resolved_at.within(stable_after, now);
            if !keep {
                if let Some(judging) = judging.take() {
                    transitions.push(Transition::Judged {
                        kind: kind.clone(),
                        judging: *judging,
                        verdict: Verdict::Healed,
                        reason: format!(
                            "it stayed resolved for {shown_stable_after} (stable_after)"
                        ),
                    });
                }
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
                issue.proposal = None;
                let judging = issue.judging.take();
                transitions.push(Transition::Escalated {
                    issue: issue.clone(),
                    reason: format!("still failing after {} recovery attempts", issue.attempts),
                });
                if let Some(judging) = judging {
                    transitions.push(Transition::Judged {
                        kind: finding.kind.clone(),
                        judging: *judging,
                        verdict: Verdict::NotHealed,
                        reason: "the issue was escalated".to_owned(),
                    });
                }
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
        let (attempts, judging) = self
            .remembered
            .remove(&finding.kind)
            .map_or((0, None), |(attempts, _, judging)| (attempts, judging));
        if let Some(judging) = judging {
            transitions.push(Transition::Judged {
                kind: finding.kind.clone(),
                judging: *judging,
                verdict: Verdict::NotHealed,
                reason: format!(
                    "the issue came back within {} (stable_after)",
                    self.policy.stable_after
                ),
            });
        }
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
            proposal: None,
            judging: None,
            fence: None,
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
                if let Some(judging) = &mut issue.judging {
                    judging.resolved_at = Some(now);
                }
                issue.proposal = None;
                self.remember(kind, issue.attempts, now, issue.judging.clone());
                issue.state = State::Resolved;
                issue.resolved_at = Some(now);
                transitions.push(Transition::Resolved(issue));
            }
        }
        // The flap memory that had to go to make room.
        transitions.append(&mut self.let_go);
        transitions.append(&mut self.judged);
        transitions
    }

    /// Issues that may be recovered now: not escalated, attempts left,
    /// backoff elapsed, no attempt running, no proposal waiting for an
    /// answer; the oldest first. Each attempt
    /// asks [`within_budget`](Self::within_budget) first.
    pub fn due(&self, now: Wall) -> Vec<String> {
        let mut due: Vec<&Issue> = self
            .issues
            .values()
            .filter(|i| i.state != State::Escalated && !i.attempting)
            .filter(|i| i.attempts < self.policy.max_attempts && i.next_attempt_at <= now)
            .filter(|i| i.proposal.as_ref().is_none_or(|p| p.approved))
            .collect();
        due.sort_by(|a, b| (a.opened_at, &a.kind).cmp(&(b.opened_at, &b.kind)));
        due.into_iter().map(|i| i.kind.clone()).collect()
    }

    /// Records the start of an attempt; the issue as it now stands (its
    /// `attempts` is this attempt's number, 1-based). The next attempt is
    /// due a backoff from now already, so one interrupted by a crash is
    /// not followed by another at once after the restart. The attempt
    /// before it, if it said it succeeded, is judged not healed.
    pub fn attempt_started(&mut self, kind: &str, now: Wall) -> Option<Issue> {
        let backoff = self.backoff(self.issues.get(kind)?.attempts + 1);
        let issue = self.issues.get_mut(kind)?;
        if let Some(judging) = issue.judging.take() {
            let reason = "another attempt was needed".to_owned();
            self.judge(kind, *judging, Verdict::NotHealed, reason);
        }
        let issue = self.issues.get_mut(kind)?;
        // An approval is for one attempt, this one: a crash during it must
        // not leave it approved for another.
        issue.proposal = None;
        issue.attempts += 1;
        issue.attempting = true;
        issue.state = State::Recovering;
        issue.next_attempt_at = now + backoff;
        issue.fence = None;
        let started = issue.clone();
        self.spend(now);
        Some(started)
    }

    /// The fleet's claim on the attempt that just started at `kind`.
    pub fn fenced(&mut self, kind: &str, fence: Fence) -> Option<Issue> {
        let issue = self.issues.get_mut(kind)?;
        issue.fence = Some(Box::new(fence));
        Some(issue.clone())
    }

    /// Records the end of an attempt; the next may start after the backoff.
    pub fn attempt_finished(&mut self, kind: &str, now: Wall) -> Option<Issue> {
        let backoff = self.backoff(self.issues.get(kind).map_or(1, |i| i.attempts));
        let issue = self.issues.get_mut(kind)?;
        issue.attempting = false;
        issue.proposal = None;
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
        issue.proposal = None;
        let judging = issue.judging.take();
        let escalated = issue.clone();
        if let Some(judging) = judging {
            let why = "the issue was escalated".to_owned();
            self.judge(kind, *judging, Verdict::NotHealed, why);
        }
        Some(Transition::Escalated {
            issue: escalated,
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
        issue.proposal = None;
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
            .map(|(kind, (attempts, resolved_at, judging))| {
                let mut issue = Issue::saved(
                    kind.clone(),
                    State::Resolved,
                    Status::Ok,
                    String::new(),
                    *attempts,
                    [*resolved_at, *resolved_at],
                    [None, Some(*resolved_at)],
                );
                issue.judging.clone_from(judging);
                issue
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
mod tests;
