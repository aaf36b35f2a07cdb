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
//! Pure: no I/O, no clock of its own (callers pass `now`), so every rule is
//! tested exactly.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use healer_plugin_sdk::{Finding, Status};

use crate::config::Policy;

/// Where an issue stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Found; no attempt made yet (or held by a dependency).
    Open,
    /// At least one recovery attempt made.
    Recovering,
    /// Attempts exhausted (or nothing can recover it): no more attempts
    /// until it resolves.
    Escalated,
}

impl State {
    /// Lower-case name for logs and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Open => "open",
            State::Recovering => "recovering",
            State::Escalated => "escalated",
        }
    }
}

/// One open issue.
#[derive(Clone, Debug)]
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
    /// Consecutive healthy checks since it was last seen.
    pub healthy: u32,
    /// When the next attempt may start.
    pub next_attempt_at: Instant,
    /// An attempt is running.
    pub attempting: bool,
}

/// What changed; the engine logs each.
#[derive(Clone, Debug, PartialEq)]
pub enum Transition {
    /// A finding became an issue; `attempts` carried over from a flap.
    Opened { kind: String, attempts: u32 },
    /// An issue's check passed `resolve_after` times.
    Resolved { kind: String, attempts: u32 },
    /// No more attempts will be made.
    Escalated {
        kind: String,
        attempts: u32,
        reason: String,
    },
    /// A finding was seen but has not yet failed `fail_after` times.
    Soft {
        kind: String,
        failures: u32,
        needed: u32,
    },
}

/// The issues of one target.
#[derive(Debug)]
pub struct Tracker {
    policy: Policy,
    issues: HashMap<String, Issue>,
    soft: HashMap<String, u32>,
    /// Resolved issues' attempt counts and when they resolved.
    remembered: HashMap<String, (u32, Instant)>,
}

impl Tracker {
    /// A tracker with no issues.
    pub fn new(policy: Policy) -> Tracker {
        Tracker {
            policy,
            issues: HashMap::new(),
            soft: HashMap::new(),
            remembered: HashMap::new(),
        }
    }

    /// The open issues.
    pub fn issues(&self) -> impl Iterator<Item = &Issue> {
        self.issues.values()
    }

    /// The issue of this kind, if open.
    pub fn issue(&self, kind: &str) -> Option<&Issue> {
        self.issues.get(kind)
    }

    /// Whether any issue is open.
    pub fn has_issues(&self) -> bool {
        !self.issues.is_empty()
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

    /// Feeds the findings of one check. An inconclusive check (the check or a
    /// diagnoser failed or timed out) can open and keep issues, but never
    /// counts as healthy: nothing resolves on a check that could not tell.
    pub fn observe(
        &mut self,
        findings: &[Finding],
        now: Instant,
        conclusive: bool,
    ) -> Vec<Transition> {
        let stable_after: Duration = self.policy.stable_after.into();
        self.remembered
            .retain(|_, (_, resolved_at)| now.duration_since(*resolved_at) < stable_after);
        let mut transitions = Vec::new();
        // Two diagnosers finding the same kind in one check is one failure.
        let mut kinds = std::collections::HashSet::new();
        let findings: Vec<&Finding> = findings
            .iter()
            .filter(|f| kinds.insert(f.kind.as_str()))
            .collect();

        for finding in findings.iter().copied() {
            if let Some(issue) = self.issues.get_mut(&finding.kind) {
                issue.healthy = 0;
                issue.severity = finding.severity;
                issue.summary.clone_from(&finding.summary);
                let exhausted = issue.attempts >= self.policy.max_attempts && !issue.attempting;
                if exhausted && issue.state == State::Recovering {
                    issue.state = State::Escalated;
                    transitions.push(Transition::Escalated {
                        kind: issue.kind.clone(),
                        attempts: issue.attempts,
                        reason: format!("still failing after {} recovery attempts", issue.attempts),
                    });
                }
                continue;
            }
            let failures = self.soft.entry(finding.kind.clone()).or_insert(0);
            *failures += 1;
            if *failures < self.policy.fail_after {
                transitions.push(Transition::Soft {
                    kind: finding.kind.clone(),
                    failures: *failures,
                    needed: self.policy.fail_after,
                });
                continue;
            }
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
                healthy: 0,
                next_attempt_at: now,
                attempting: false,
            };
            transitions.push(Transition::Opened {
                kind: issue.kind.clone(),
                attempts,
            });
            if attempts >= self.policy.max_attempts {
                issue.state = State::Escalated;
                transitions.push(Transition::Escalated {
                    kind: issue.kind.clone(),
                    attempts,
                    reason: format!(
                        "came back within {} after {attempts} recovery attempts",
                        self.policy.stable_after
                    ),
                });
            }
            self.issues.insert(issue.kind.clone(), issue);
        }

        let found = |kind: &str| findings.iter().any(|f| f.kind == kind);
        if !conclusive {
            return transitions;
        }
        self.soft.retain(|kind, _| found(kind));
        let healed: Vec<String> = self
            .issues
            .values_mut()
            .filter(|issue| !found(&issue.kind))
            .filter_map(|issue| {
                issue.healthy += 1;
                (issue.healthy >= self.policy.resolve_after).then(|| issue.kind.clone())
            })
            .collect();
        for kind in healed {
            if let Some(issue) = self.issues.remove(&kind) {
                self.remembered.insert(kind.clone(), (issue.attempts, now));
                transitions.push(Transition::Resolved {
                    kind,
                    attempts: issue.attempts,
                });
            }
        }
        transitions
    }

    /// Issues that may be recovered now: not escalated, attempts left,
    /// backoff elapsed, no attempt running.
    pub fn due(&self, now: Instant) -> Vec<String> {
        let mut due: Vec<String> = self
            .issues
            .values()
            .filter(|i| i.state != State::Escalated && !i.attempting)
            .filter(|i| i.attempts < self.policy.max_attempts && i.next_attempt_at <= now)
            .map(|i| i.kind.clone())
            .collect();
        due.sort();
        due
    }

    /// Records the start of an attempt; returns its number (1-based).
    pub fn attempt_started(&mut self, kind: &str) -> u32 {
        let Some(issue) = self.issues.get_mut(kind) else {
            return 0;
        };
        issue.attempts += 1;
        issue.attempting = true;
        issue.state = State::Recovering;
        issue.attempts
    }

    /// Records the end of an attempt; the next may start after the backoff.
    pub fn attempt_finished(&mut self, kind: &str, now: Instant) {
        let backoff = self.backoff(self.issues.get(kind).map_or(1, |i| i.attempts));
        if let Some(issue) = self.issues.get_mut(kind) {
            issue.attempting = false;
            issue.next_attempt_at = now + backoff;
        }
    }

    /// Escalates an issue that nothing can recover.
    pub fn escalate(&mut self, kind: &str, reason: String) -> Option<Transition> {
        let issue = self.issues.get_mut(kind)?;
        if issue.state == State::Escalated {
            return None;
        }
        issue.state = State::Escalated;
        Some(Transition::Escalated {
            kind: kind.to_owned(),
            attempts: issue.attempts,
            reason,
        })
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
    use healer_plugin_sdk::Duration as Written;

    fn policy() -> Policy {
        Policy {
            interval: Written::from_secs(5),
            timeout: Written::from_secs(1),
            max_attempts: 3,
            fail_after: 1,
            resolve_after: 1,
            stable_after: Written::from_secs(300),
            backoff: Written::from_secs(1),
            backoff_max: Written::from_secs(10),
            escalated_interval: Written::from_secs(60),
            grace: Written::from_millis(0),
            recovery_timeout: Written::from_secs(1),
        }
    }

    fn down() -> Vec<Finding> {
        vec![Finding::critical("process.not_running", "gone")]
    }

    fn attempt(tracker: &mut Tracker, now: Instant) -> u32 {
        let n = tracker.attempt_started("process.not_running");
        tracker.attempt_finished("process.not_running", now);
        n
    }

    #[test]
    fn one_failed_check_opens_an_issue_by_default() {
        let mut tracker = Tracker::new(policy());
        let now = Instant::now();
        assert_eq!(
            tracker.observe(&down(), now, true),
            [Transition::Opened {
                kind: "process.not_running".into(),
                attempts: 0
            }]
        );
        assert_eq!(tracker.due(now), ["process.not_running"]);
    }

    #[test]
    fn fail_after_needs_that_many_consecutive_failures() {
        let mut tracker = Tracker::new(Policy {
            fail_after: 3,
            ..policy()
        });
        let now = Instant::now();
        tracker.observe(&down(), now, true);
        tracker.observe(&[], now, true); // a blip resets the count
        tracker.observe(&down(), now, true);
        tracker.observe(&down(), now, true);
        assert!(!tracker.has_issues());
        let transitions = tracker.observe(&down(), now, true);
        assert!(
            matches!(transitions[0], Transition::Opened { .. }),
            "{transitions:?}"
        );
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
        let mut now = Instant::now();
        let mut attempts = Vec::new();
        let mut escalated = false;
        for _ in 0..20 {
            for transition in tracker.observe(&down(), now, true) {
                escalated |= matches!(transition, Transition::Escalated { attempts: 3, .. });
            }
            for _ in tracker.due(now) {
                attempts.push(attempt(&mut tracker, now));
            }
            now += Duration::from_secs(30);
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
        let now = Instant::now();
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
        let now = Instant::now();
        tracker.observe(&down(), now, true);
        assert!(tracker.observe(&[], now, true).is_empty());
        assert_eq!(
            tracker.observe(&[], now, true),
            [Transition::Resolved {
                kind: "process.not_running".into(),
                attempts: 0
            }]
        );
        assert!(!tracker.has_issues());
    }

    #[test]
    fn a_flapping_issue_keeps_its_attempt_count_until_stable() {
        let mut tracker = Tracker::new(policy());
        let now = Instant::now();
        tracker.observe(&down(), now, true);
        attempt(&mut tracker, now);
        attempt(&mut tracker, now);
        tracker.observe(&[], now, true); // resolved after 2 attempts
        let later = now + Duration::from_secs(60);
        assert_eq!(
            tracker.observe(&down(), later, true)[0],
            Transition::Opened {
                kind: "process.not_running".into(),
                attempts: 2
            }
        );
        assert_eq!(attempt(&mut tracker, later), 3);
        tracker.observe(&[], later, true);
        // Back again, attempts exhausted: escalated at once, no restart storm.
        let transitions = tracker.observe(&down(), later + Duration::from_secs(1), true);
        assert!(
            matches!(transitions[1], Transition::Escalated { attempts: 3, .. }),
            "{transitions:?}"
        );
        assert!(tracker.due(later + Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn after_stable_after_the_count_starts_over() {
        let mut tracker = Tracker::new(policy());
        let now = Instant::now();
        tracker.observe(&down(), now, true);
        attempt(&mut tracker, now);
        tracker.observe(&[], now, true);
        let much_later = now + Duration::from_secs(301);
        assert_eq!(
            tracker.observe(&down(), much_later, true)[0],
            Transition::Opened {
                kind: "process.not_running".into(),
                attempts: 0
            }
        );
    }

    #[test]
    fn an_inconclusive_check_never_resolves_an_issue() {
        let mut tracker = Tracker::new(policy());
        let now = Instant::now();
        tracker.observe(&down(), now, true);
        assert!(tracker.observe(&[], now, false).is_empty());
        assert!(tracker.has_issues());
        assert!(matches!(
            tracker.observe(&[], now, true)[0],
            Transition::Resolved { .. }
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
            tracker.observe(&twice, Instant::now(), true)[0],
            Transition::Soft { failures: 1, .. }
        ));
    }

    #[test]
    fn the_slow_cadence_needs_every_issue_escalated() {
        let mut tracker = Tracker::new(policy());
        let now = Instant::now();
        let two = [Finding::critical("a.x", "a"), Finding::critical("b.y", "b")];
        tracker.observe(&two, now, true);
        tracker.escalate("a.x", "no recoverer".into());
        assert!(!tracker.all_escalated());
        tracker.escalate("b.y", "no recoverer".into());
        assert!(tracker.all_escalated());
    }

    #[test]
    fn an_escalated_issue_resolves_when_healthy_again() {
        let mut tracker = Tracker::new(policy());
        let now = Instant::now();
        tracker.observe(&down(), now, true);
        assert!(tracker
            .escalate("process.not_running", "no recoverer".into())
            .is_some());
        assert!(tracker.due(now).is_empty());
        assert!(matches!(
            tracker.observe(&[], now, true)[0],
            Transition::Resolved { .. }
        ));
    }
}
