//! A target's recovery ladder: what a pause or a dependency holds, the
//! issue that is due, each matching recoverer tried in order (as written,
//! or as the ledger learned) under the recovery limiter, an attempt's
//! outcome and what its verdict waits for, a recoverer that asks first
//! proposing instead of acting, escalation when attempts or the budget
//! run out.

use std::sync::Arc;

use healer_plugin_sdk::{redact, Recovery, Status};
use tokio::time::timeout;
use tracing::debug;

use super::{is_unknown, Cycle};
use crate::board::Held;
use crate::clock::Wall;
use crate::config::{Mode, Order};
use crate::engine::Health;
use crate::events::{Event, StepResult};
use crate::facts::Reading;
use crate::issues::Proposal;
use crate::ledger::{Judging, Verdict};

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
                    self.say_verdicts();
                    Attempted::Escalated
                }
                None => Attempted::No,
            };
        }
        self.tracker.due_again(kind);
        self.say_verdicts();
        let ladder = self.open_gates(kind, ladder, now);
        if ladder.is_empty() {
            return Attempted::No;
        }
        let ladder = self.in_order(kind, ladder);
        // An approved proposal runs its recoverer, once. Otherwise the
        // ladder stops at a recoverer that asks first: the ones before it
        // act, and it is proposed when they did not recover the issue.
        let approved = self
            .tracker
            .issue(kind)
            .and_then(|issue| issue.proposal.as_ref())
            .filter(|proposal| proposal.approved)
            .map(|proposal| proposal.recoverer.clone());
        let (ladder, propose) = match approved {
            Some(name) => {
                let approved = ladder
                    .into_iter()
                    .filter(|&i| target.recoverers[i].name == name)
                    .take(1)
                    .collect();
                (approved, None)
            }
            None => {
                let mut asking = None;
                for (at, &i) in ladder.iter().enumerate() {
                    if let Some(why) = self.asks_first(kind, i) {
                        asking = Some((at, i, why));
                        break;
                    }
                }
                match asking {
                    Some((at, i, why)) => (ladder[..at].to_vec(), Some((i, why))),
                    None => (ladder, None),
                }
            }
        };
        if ladder.is_empty() {
            if let Some((i, why)) = propose {
                self.propose(kind, i, why);
            }
            return Attempted::No;
        }
        // Other targets' recoveries hold the slots, each under promises of
        // its own: waiting for one is not a broken promise.
        if let Some(slot) = &self.slot {
            slot.waiting_for_a_slot();
        }
        let limiter = Arc::clone(&self.limiter);
        let Ok(_permit) = limiter.acquire().await else {
            return Attempted::No;
        };
        // The wait for a slot may have been long: the gates are read
        // again, on the facts as they are now.
        let ladder = self.open_gates(kind, ladder, Wall::now());
        if ladder.is_empty() {
            return Attempted::No;
        }
        // A fleet target's attempt is claimed first: a member that lost
        // its shard (or was paused past its lease) acts on nothing.
        let runs_for = std::time::Duration::from(target.policy.recovery_timeout)
            * u32::try_from(ladder.len()).unwrap_or(u32::MAX);
        let fence = match self.claim(kind, runs_for).await {
            Ok(fence) => fence,
            Err(()) => return Attempted::No,
        };
        let started_at = Wall::now();
        let Some(mut issue) = self.tracker.attempt_started(kind, started_at) else {
            return Attempted::No;
        };
        if let Some(fence) = &fence {
            issue = self.tracker.fenced(kind, fence.clone()).unwrap_or(issue);
        }
        self.say_verdicts();
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
            fence,
        };
        let mut recovered = false;
        for (rung, i) in ladder.into_iter().enumerate() {
            // Each further rung of a fleet target's ladder starts only
            // while this member may still act on what it claimed.
            if rung > 0 && self.runner.fence.as_ref().is_some_and(|f| !f.may_act()) {
                self.events.emit(Event::RecoveryNotClaimed {
                    target: name.clone(),
                    kind: kind.to_owned(),
                    reason: "this member may no longer act on its shard: the ladder stops"
                        .to_owned(),
                });
                break;
            }
            let recoverer = target.recoverers[i].name.clone();
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
            // A recoverer that failed did not heal; one that timed out
            // may have: healer cannot tell. One that succeeded is judged
            // once its issue has stayed resolved (or has not).
            let verdict = match &result {
                StepResult::Succeeded { .. } => None,
                StepResult::Failed { error } => {
                    Some((Verdict::NotHealed, format!("it failed: {error}")))
                }
                StepResult::TimedOut { after } => {
                    Some((Verdict::Unknown, format!("it timed out after {after}")))
                }
            };
            self.events.emit(Event::RecovererFinished {
                target: name.clone(),
                kind: kind.to_owned(),
                attempt,
                recoverer: recoverer.clone(),
                result,
            });
            let judging = Judging {
                recoverer,
                attempt,
                started_at,
                resolved_at: None,
            };
            match verdict {
                Some((verdict, reason)) => {
                    let said = self.judged(kind.to_owned(), judging, verdict, reason);
                    self.events.emit(said);
                }
                None => self
                    .tracker
                    .awaiting_verdict(kind, &judging.recoverer, started_at),
            }
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
        if let Some((i, why)) = propose.filter(|_| !recovered) {
            self.propose(kind, i, why);
        }
        Attempted::Ran
    }

    /// The fleet's claim on the next attempt at `kind` (none for a local
    /// target); `Err` when it was refused, said as an event.
    async fn claim(
        &mut self,
        kind: &str,
        runs_for: std::time::Duration,
    ) -> Result<Option<healer_plugin_sdk::Fence>, ()> {
        let Some(fence) = self.runner.fence.as_mut() else {
            return Ok(None);
        };
        let Some(issue) = self.tracker.issue(kind) else {
            return Err(());
        };
        match fence.claim(issue, runs_for).await {
            Ok(fence) => {
                self.not_claimed.remove(kind);
                Ok(Some(fence))
            }
            Err(reason) => {
                if self.not_claimed.get(kind) != Some(&reason) {
                    self.not_claimed.insert(kind.to_owned(), reason.clone());
                    self.events.emit(Event::RecoveryNotClaimed {
                        target: self.runner.target.name.clone(),
                        kind: kind.to_owned(),
                        reason,
                    });
                }
                Err(())
            }
        }
    }

    /// Writes what changed of a fleet target's open issues to etcd, for
    /// the next owner.
    pub(super) async fn sync_fleet(&mut self) {
        if let Some(fence) = self.runner.fence.as_mut() {
            fence.sync(self.tracker.issues()).await;
        }
    }

    /// The rungs of `ladder` in the order they are tried: as written, or
    /// under `order = "learned"` as the ledger says (each recoverer gets
    /// its `learn_after` tries, then the one that heals `kind` most often
    /// goes first). A new order is said once.
    fn in_order(&mut self, kind: &str, ladder: Vec<usize>) -> Vec<usize> {
        let target = Arc::clone(&self.runner.target);
        if target.order != Order::Learned || ladder.len() < 2 {
            return ladder;
        }
        let names: Vec<&str> = ladder
            .iter()
            .map(|&i| target.recoverers[i].name.as_str())
            .collect();
        let (order, reason) = {
            let ledger = self.shared.ledger();
            let order = ledger.learned_order(&target.name, kind, &names, target.learn_after);
            let reason = order
                .iter()
                .map(|&at| {
                    let row = ledger.get(&target.name, kind, names[at]);
                    let (healed, judged) =
                        row.map_or((0, 0), |row| (row.healed, row.healed + row.not_healed));
                    format!("{} healed {healed} of {judged}", names[at])
                })
                .collect::<Vec<_>>()
                .join(", ");
            (order, reason)
        };
        let ordered: Vec<usize> = order.iter().map(|&at| ladder[at]).collect();
        let said: Vec<String> = order.iter().map(|&at| names[at].to_owned()).collect();
        let before = self.learned.get(kind);
        let as_written = said.iter().map(String::as_str).eq(names.iter().copied());
        if before != Some(&said) && !(before.is_none() && as_written) {
            self.learned.insert(kind.to_owned(), said.clone());
            self.events.emit(Event::RecoveryOrderLearned {
                target: target.name.clone(),
                kind: kind.to_owned(),
                order: said,
                reason,
            });
        }
        ordered
    }

    /// Why recoverer `i` proposes instead of acting on `kind`, if it does:
    /// its `mode` is `propose`, or it heals `kind` less often than its
    /// `min_success` (said once each time that changes).
    fn asks_first(&mut self, kind: &str, i: usize) -> Option<String> {
        let target = Arc::clone(&self.runner.target);
        let recoverer = &target.recoverers[i];
        if recoverer.mode == Mode::Propose {
            return Some("its mode is \"propose\"".to_owned());
        }
        let min_success = recoverer.min_success?;
        let row = self
            .shared
            .ledger()
            .get(&target.name, kind, &recoverer.name)
            .cloned()
            .unwrap_or_default();
        let below = row.below(min_success, target.learn_after);
        let (healed, judged) = (row.healed, row.healed + row.not_healed);
        let pair = (kind.to_owned(), recoverer.name.clone());
        let was = self.demoted.contains(&pair);
        if below != was {
            if below {
                self.demoted.insert(pair);
            } else {
                self.demoted.remove(&pair);
            }
            self.events.emit(Event::RecovererDemoted {
                target: target.name.clone(),
                kind: kind.to_owned(),
                recoverer: recoverer.name.clone(),
                healed,
                judged,
                min_success,
                demoted: below,
            });
        }
        below.then(|| {
            format!("it healed {healed} of {judged} attempts, under its min_success {min_success}")
        })
    }

    /// Proposes recoverer `i` for the issue of `kind` instead of running
    /// it: the exact action (its config, secrets hidden) and until when
    /// an operator may approve it.
    fn propose(&mut self, kind: &str, i: usize, why: String) {
        let target = Arc::clone(&self.runner.target);
        let recoverer = &target.recoverers[i];
        let now = Wall::now();
        let proposal = Proposal {
            recoverer: recoverer.name.clone(),
            action: action_of(recoverer),
            why,
            proposed_at: now,
            expires_at: now + recoverer.propose_for.into(),
            approved: false,
        };
        let attempts = self.tracker.issue(kind).map_or(0, |issue| issue.attempts);
        if attempts >= target.policy.max_attempts {
            // No attempt is left to run it in: the issue is escalated at
            // its next check, as any issue whose attempts ran out.
            return;
        }
        if let Some(issue) = self.tracker.propose(kind, proposal) {
            self.events.emit(Event::RecoveryProposed {
                target: target.name.clone(),
                approve: format!("healer approve {}/{kind}", target.name),
                issue,
            });
            self.show_issues();
        }
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
                let recoverer = target.recoverers[i].name.clone();
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

impl Cycle {
    /// Takes back the proposals whose recoverer is no longer configured
    /// as it was proposed (a reload renamed, changed or removed it): an
    /// operator approves an action, and only that action may run.
    pub(super) fn withdraw_stale_proposals(&mut self) {
        let target = Arc::clone(&self.runner.target);
        let stale: Vec<(String, String)> = self
            .tracker
            .issues()
            .filter_map(|issue| {
                let proposal = issue.proposal.as_ref()?;
                let still = target.recoverers.iter().any(|recoverer| {
                    recoverer.name == proposal.recoverer && action_of(recoverer) == proposal.action
                });
                (!still).then(|| {
                    let reason = format!(
                        "{} is no longer configured as it was proposed ({})",
                        proposal.recoverer, proposal.action
                    );
                    (issue.kind.clone(), reason)
                })
            })
            .collect();
        for (kind, reason) in stale {
            if let Some(issue) = self.tracker.withdraw(&kind) {
                self.events.emit(Event::ProposalWithdrawn {
                    target: target.name.clone(),
                    issue,
                    reason,
                });
            }
        }
    }
}

/// What a recoverer does, as a proposal shows it and an approval holds
/// it to: its plugin and its config, secrets hidden.
fn action_of(recoverer: &crate::config::RecovererUse) -> String {
    format!(
        "{} {}",
        recoverer.plugin.plugin,
        redact::json(&recoverer.plugin.config)
    )
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
