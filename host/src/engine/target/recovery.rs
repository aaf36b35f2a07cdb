//! A target's recovery ladder: what a pause or a dependency holds, the
//! issue that is due, each matching recoverer tried in order under the
//! recovery limiter, an attempt's outcome, escalation when attempts or
//! the budget run out.

use std::sync::Arc;

use healer_plugin_sdk::{Recovery, Status};
use tokio::time::timeout;
use tracing::debug;

use super::{is_unknown, Cycle};
use crate::board::Held;
use crate::clock::Wall;
use crate::engine::Health;
use crate::events::{Event, StepResult};
use crate::facts::Reading;

impl Cycle {
    /// Whether the target is paused for maintenance: then nothing due is
    /// recovered, and each issue says so once per pause. A pause that
    /// expired ends here, with an event.
    pub(super) fn paused(&mut self, due: &[String]) -> bool {
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
                    reason: crate::engine::PAUSE_TOO_LONG.to_owned(),
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
    pub(super) async fn recover(&mut self) -> bool {
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
                let now = Wall::now();
                let evidence = self
                    .shared
                    .facts()
                    .read(&format!("target.{dependency}.healthy"), now)
                    .map(|fact| fact.cited(now));
                self.events.emit(Event::RecoveryHeld {
                    target: target.name.clone(),
                    kind,
                    dependency: dependency.to_owned(),
                    reason: reason.to_owned(),
                    evidence,
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
        let ladder = self.open_gates(kind, ladder, now);
        if ladder.is_empty() {
            return Attempted::No;
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

impl Cycle {
    /// The recoverers of `ladder` whose `when` and `unless` let them act
    /// now. When none may, the recovery is held, said once per reason
    /// (`recovery_gated`, citing the fact): no attempt, no budget spent.
    fn open_gates(&mut self, kind: &str, ladder: Vec<usize>, now: Wall) -> Vec<usize> {
        let target = Arc::clone(&self.runner.target);
        let mut first_closed = None;
        let open: Vec<usize> = {
            let facts = self.shared.facts();
            ladder
                .into_iter()
                .filter(|&i| {
                    let recoverer = &target.recoverers[i];
                    let closed = recoverer
                        .when
                        .iter()
                        .map(|gate| (gate, gate.read(&facts, now), true))
                        .chain(
                            recoverer
                                .unless
                                .iter()
                                .map(|gate| (gate, gate.read(&facts, now), false)),
                        )
                        .find(|(_, reading, wanted)| match reading {
                            Reading::True(_) => !wanted,
                            Reading::False(_) => *wanted,
                            Reading::Unknown(_) => true,
                        });
                    let Some((gate, reading, wanted)) = closed else {
                        return true;
                    };
                    first_closed.get_or_insert((i, gate.to_string(), reading, wanted));
                    false
                })
                .collect()
        };
        match first_closed.filter(|_| open.is_empty()) {
            None => {
                self.gated.remove(kind);
            }
            Some((i, gate, reading, wanted)) => {
                let (evidence, state) = match reading {
                    Reading::True(cited) => (cited, "true"),
                    Reading::False(cited) => (cited, "false"),
                    Reading::Unknown(said) => (said, "unknown"),
                };
                let recoverer = target.recoverers[i].plugin.plugin.clone();
                let said = format!("{recoverer}|{gate}|{state}");
                if self.gated.get(kind) != Some(&said) {
                    self.gated.insert(kind.to_owned(), said);
                    let clause = if wanted { "when" } else { "unless" };
                    self.events.emit(Event::RecoveryGated {
                        target: target.name.clone(),
                        kind: kind.to_owned(),
                        recoverer,
                        gate: format!("{clause} {gate}"),
                        evidence,
                    });
                }
            }
        }
        open
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
