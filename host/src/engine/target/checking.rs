//! A target's checks as its loop runs them: one check (or a pushed
//! observation) under its deadline, diagnosed where it ran or here, its
//! findings fed to the tracker; what a plugin's failure or timeout reads
//! as (UNKNOWN, never CRITICAL).

use std::time::Duration;

use healer_plugin_sdk::redact;
use healer_plugin_sdk::{Duration as HumanDuration, Finding, Observation, Status};
use tokio::time::{timeout, Instant};

use super::{is_unknown, Cycle, LeftOut, Run, MACHINERY_SLACK};
use crate::clock::Wall;
use crate::events::{fact_events, Event, Role};
use crate::facts::{take_published, Facts, Retraction, Source, Taken, Value as FactValue};
use crate::issues::{Seen, Transition};
use crate::plugins::bounds::FACTS_PER_CHECK;
use crate::plugins::{CheckResult, DiagnosisResult, Observed, Observing};

impl Cycle {
    /// Feeds what check `index`'s worker made of it on its grid (see
    /// `watching`) to the issues, as a check this loop made.
    pub(super) fn run_watched(
        &mut self,
        index: usize,
        observed: Observed,
        began: Instant,
        took: Duration,
    ) -> Run {
        self.checks[index].checked_at = Some(began);
        let ends = self.worker_ends(index);
        let within: Duration = self.checks[index].deadline.into();
        let mut run = self.observed_run(index, None, Ok(Ok(observed)), took, within);
        let facts_sent = crate::facts::published_any(&run.seen.details);
        self.publish_facts(index, &mut run.seen, ends);
        self.track(index, &run);
        self.show(index, &run.seen, Some(run.took));
        self.checks[index].remember(run.seen.clone());
        self.after_watched_run(index, facts_sent);
        run
    }

    /// Feeds what one run found to the issues.
    fn track(&mut self, index: usize, run: &Run) {
        let conclusive = run.concluded();
        self.after_diagnosis(index, &run.findings, conclusive);
        for finding in &run.findings {
            if conclusive || is_unknown(&finding.kind) {
                self.fresh.insert(finding.kind.clone());
            }
        }
    }

    /// Runs check `index` (or diagnoses what its monitor pushed) and, when
    /// `track`, feeds what it found to the issues.
    pub(super) async fn run_check(
        &mut self,
        index: usize,
        pushed: Option<Observation>,
        track: bool,
    ) -> Run {
        let was_push = pushed.is_some();
        if !was_push {
            // What its monitor pushed before this run began is stale.
            self.checks[index].checked_at = Some(Instant::now());
        }
        // Counted before the check: an answer from a worker that ended
        // meanwhile publishes nothing.
        let ends = self.worker_ends(index);
        let run = if self.checks[index].in_place {
            // Diagnosed in the worker, which saw the facts in the details;
            // taken out here, before anything of healer's reads them.
            let mut run = self.observe(index, pushed).await;
            self.publish_facts(index, &mut run.seen, ends);
            run
        } else {
            let started = Instant::now();
            let (mut seen, checked) = match pushed {
                Some(seen) => (seen, true),
                None => self.check(index).await,
            };
            // Facts out of the details before a diagnoser reads them.
            self.publish_facts(index, &mut seen, ends);
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
        let mut run = run;
        if track && self.runner.target.confirm > 0 {
            self.confirm_failure(index, &mut run).await;
        }
        if track {
            self.track(index, &run);
        }
        self.show(index, &run.seen, (!was_push).then_some(run.took));
        self.checks[index].remember(run.seen.clone());
        if !was_push {
            self.after_watched_run(index, false);
        }
        run
    }

    /// A fleet target's run that would open an issue (`confirm = K`) is
    /// checked by K other members first: unless every one of them sees
    /// the target fail too, the run is UNKNOWN, naming every view (the
    /// owner's own network may be what fails), and nothing recovers on it.
    async fn confirm_failure(&mut self, index: usize, run: &mut Run) {
        let Some(fence) = self.runner.fence.as_ref() else {
            return;
        };
        let failing = matches!(run.seen.status, Status::Warning | Status::Critical);
        let new = run
            .findings
            .iter()
            .any(|f| f.severity != Status::Unknown && self.tracker.issue(&f.kind).is_none());
        if !run.concluded() || !failing || !new {
            return;
        }
        let fleet = fence.fleet().clone();
        self.promise(crate::fleet::ASK_WITHIN + MACHINERY_SLACK);
        let answers = fleet.confirm(self.name(), self.runner.target.confirm).await;
        if crate::fleet::agreed(&answers) {
            return;
        }
        let owner = crate::fleet::Seen {
            member: fleet.member().to_owned(),
            status: run.seen.status,
            summary: run.seen.summary.clone(),
        };
        let said = format!(
            "not confirmed by the fleet: {}",
            crate::fleet::views(&owner, &answers)
        );
        let monitor = &self.runner.target.checks[index].monitor.plugin;
        run.seen = Observation::unknown(said.clone());
        run.findings = vec![Finding::new(
            format!("{monitor}.unknown"),
            Status::Unknown,
            said,
        )];
        run.checked = false;
    }

    /// Runs check `index`'s monitor within its deadline; `false` when the
    /// check itself failed (the observation is then UNKNOWN and says why).
    pub(super) async fn check(&mut self, index: usize) -> (Observation, bool) {
        let check = &self.checks[index];
        let (deadline, plugin) = (check.deadline, check.plugin.clone());
        self.promise(deadline.into());
        let facts = check.facts_digest;
        match timeout(deadline.into(), check.monitor.check_knowing(facts)).await {
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
    pub(super) fn plugin_failed(&self, role: Role, plugin: &str, error: &str) -> Observation {
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
    pub(super) fn plugin_timed_out(
        &self,
        role: Role,
        plugin: &str,
        after: HumanDuration,
    ) -> Observation {
        self.emit(Event::PluginTimedOut {
            target: self.name().to_owned(),
            role,
            plugin: plugin.to_owned(),
            after,
        });
        Observation::unknown(format!("check timed out after {after}"))
    }

    pub(super) fn note_status(
        &mut self,
        index: usize,
        seen: &Observation,
        pushed: bool,
        took: Duration,
    ) {
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
    pub(super) async fn observe(&mut self, index: usize, pushed: Option<Observation>) -> Run {
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
            facts: check.facts_digest,
        };
        let observed = timeout(deadline, check.monitor.observe(&diagnosers, observing))
            .await
            .map_err(|_| ());
        let took = if was_push {
            Duration::ZERO
        } else {
            started.elapsed()
        };
        self.observed_run(index, pushed, observed, took, deadline)
    }

    /// What a check (or a push) diagnosed in its worker came to: `observed`
    /// is the worker's answer, an error when healer's side failed, or
    /// `Err(())` when it did not come within `deadline`.
    pub(super) fn observed_run(
        &mut self,
        index: usize,
        pushed: Option<Observation>,
        observed: Result<Result<Observed, String>, ()>,
        took: Duration,
        deadline: Duration,
    ) -> Run {
        let was_push = pushed.is_some();
        let check = &self.checks[index];
        let within: Duration = check.deadline.into();
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
    pub(super) async fn diagnose(
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
        let now = Wall::now();
        for ((plugin, diagnoser), grant) in check.diagnosers.iter().zip(&check.grants) {
            let given = grant.as_ref().map(|grant| {
                let mut given = seen.clone();
                grant_facts(&mut given, grant, &self.shared.facts(), now);
                given
            });
            let seen = given.as_ref().unwrap_or(seen);
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
    pub(super) fn after_diagnosis(&mut self, index: usize, findings: &[Finding], conclusive: bool) {
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
    pub(super) fn settle_health(&mut self, conclusive: bool) {
        let tracker = &self.tracker;
        self.findings
            .retain(|kind, _| tracker.issue(kind).is_some());
        self.held.retain(|kind, _| tracker.issue(kind).is_some());
        self.withheld.retain(|kind| tracker.issue(kind).is_some());
        self.gated.retain(|kind, _| tracker.issue(kind).is_some());
        // What was said of the ladder's order and of demotions outlives an
        // issue (so a new one does not say it again), within a bound: kinds
        // are named by plugins.
        if self.learned.len() > crate::issues::MAX_REMEMBERED {
            self.learned.retain(|kind, _| tracker.issue(kind).is_some());
        }
        if self.demoted.len() > crate::issues::MAX_REMEMBERED {
            self.demoted
                .retain(|(kind, _)| tracker.issue(kind).is_some());
        }
        let down = self.tracker.has_issues();
        let name = self.name().to_owned();
        self.publish_health(down, conclusive);
        if self.shared.set_health(&name, down) {
            self.shared.recheck_dependents(&name);
        }
    }

    /// How many times the worker of check `index`'s monitor ended so far.
    fn worker_ends(&self, index: usize) -> u64 {
        match &self.checks[index].source.package {
            Some(package) => self.shared.facts().worker_ends(package),
            None => 0,
        }
    }

    /// Publishes the facts the monitor sent with this observation (taken
    /// out of its details), as `target.<name>.<key>`, each expiring after
    /// twice the check's interval (see `Watch::facts_ttl`) unless written again. A check that could
    /// not tell (UNKNOWN) asserts nothing and takes back every fact its
    /// monitor wrote about the target; one whose monitor's worker ended
    /// since `ends` was counted (its facts were taken back then) may be
    /// that worker's last word, and publishes nothing. What healer does
    /// not keep is said once (`facts_dropped`) until a publication keeps
    /// everything again.
    fn publish_facts(&mut self, index: usize, seen: &mut Observation, ends: u64) {
        let taken = take_published(&mut seen.details);
        // Nothing published and nothing to take back: no lock, no lookup.
        if taken == Taken::default() && seen.status != Status::Unknown {
            self.checks[index].facts_digest = 0;
            return;
        }
        let subject = format!("target.{}", self.name());
        let now = Wall::now();
        let check = &mut self.checks[index];
        let (changes, dropped) = {
            // One lock: a worker's end is counted and its facts taken back
            // either before this reads the count or after this publishes.
            let mut facts = self.shared.facts();
            let ended = check
                .source
                .package
                .as_deref()
                .is_some_and(|package| facts.worker_ends(package) != ends);
            let ttl = check.facts_ttl();
            // What healer will hold whole after this, for the worker to
            // compare the next check's facts with.
            let held_whole = std::mem::take(&mut check.facts_digest);
            if seen.status == Status::Unknown {
                let writer = Some(check.source.writer.as_str());
                (facts.retract(&subject, writer, Retraction::Unknown), None)
            } else if ended || taken == Taken::default() {
                (Vec::new(), None)
            } else if taken.same {
                // Unchanged, said in one word: vouched for again. When
                // healer no longer holds them (expired meanwhile), the next
                // check sends them whole.
                if facts.refresh(&subject, &check.source.writer, ttl, now) > 0 {
                    check.facts_digest = held_whole;
                }
                return;
            } else {
                let digest = taken.digest;
                let mut out = facts.publish(&subject, &check.source, taken.facts, Some(ttl), now);
                // The store kept all it was given. What the check itself
                // sent that healer does not read (a value that is not a
                // truth, number or text; facts beyond the first
                // FACTS_PER_CHECK) is refused alike next time: it does not
                // stop the worker from saying "same" (it would otherwise
                // send every check of that monitor whole).
                let stored_all = out.dropped.is_none();
                let mut also_drop = |count: usize, reason: &dyn Fn() -> String| {
                    if count > 0 {
                        out.dropped.get_or_insert_with(|| (0, reason())).0 += count;
                    }
                };
                also_drop(taken.refused, &|| {
                    format!(
                        "{}: a fact's value must be a truth, a number or a text",
                        check.source
                    )
                });
                also_drop(taken.left_out, &|| {
                    format!(
                        "{}: healer reads at most {FACTS_PER_CHECK} facts from one check",
                        check.source
                    )
                });
                // Held as sent: the worker may say "same" next time.
                if stored_all {
                    check.facts_digest = digest;
                }
                (out.changes, out.dropped)
            }
        };
        let said = match dropped {
            None => {
                check.facts_dropped_said = false;
                None
            }
            Some(_) if check.facts_dropped_said => None,
            Some((dropped, reason)) => {
                check.facts_dropped_said = true;
                Some(Event::FactsDropped {
                    subject: subject.clone(),
                    writer: check.source.writer.clone(),
                    dropped,
                    reason,
                })
            }
        };
        for event in fact_events(changes).chain(said) {
            self.emit(event);
        }
    }

    /// Publishes what healer knows of this target as facts about
    /// `target.<name>`: `healthy` (no open issue), `since` (when that last
    /// changed) and `status` (what the board shows). Only a change is an
    /// event. A step that could not tell (a check or diagnosis failed or
    /// said UNKNOWN), or an open UNKNOWN issue, asserts nothing: `healthy`
    /// is taken back until a step can tell again.
    fn publish_health(&mut self, down: bool, conclusive: bool) {
        let unknown = self.tracker.issues().any(|issue| is_unknown(&issue.kind));
        // Written only when it changes (healer's own facts do not expire):
        // a steady target costs no lock and no lookup a step.
        let status = self.slot.as_ref().and_then(|slot| slot.settled_status());
        let now_said = (conclusive && !unknown).then_some((!down, status));
        if self.health_said == Some(now_said) {
            return;
        }
        self.health_said = Some(now_said);
        let now = Wall::now();
        let subject = format!("target.{}", self.name());
        if !conclusive || unknown {
            let name = format!("{subject}.healthy");
            let gone = {
                let mut facts = self.shared.facts();
                if facts.read(&name, now).is_some() {
                    facts.retract_one(&name, Retraction::Unknown)
                } else {
                    None
                }
            };
            for event in fact_events(gone.into_iter().collect()) {
                self.emit(event);
            }
            return;
        }
        let healthy = FactValue::Bool(!down);
        let mut values = vec![("healthy".to_owned(), healthy.clone())];
        if let Some(status) = status {
            values.push((
                "status".to_owned(),
                FactValue::Text(status.as_str().to_owned()),
            ));
        }
        let mut facts = self.shared.facts();
        let was = facts
            .read(&format!("{subject}.healthy"), now)
            .map(|f| &f.value);
        if was != Some(&healthy) {
            values.push(("since".to_owned(), FactValue::Text(now.to_string())));
        }
        let published = facts.publish(&subject, &Source::healer(), values, None, now);
        drop(facts);
        for event in fact_events(published.changes) {
            self.emit(event);
        }
    }

    /// Says once that findings are being left out, when a step starts
    /// leaving some out; the episode ends with a conclusive step that left
    /// none out (a failed diagnosis in between ends nothing).
    pub(super) fn say_left_out(&mut self, conclusive: bool) {
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

/// Gives a diagnoser the facts its `reads` grants, in the observation's
/// details under the SDK's `READ_FACTS_KEY`: each by name, with its value,
/// its writer and its age in seconds (`Observation::read_fact`).
fn grant_facts(seen: &mut Observation, grant: &globset::GlobSet, facts: &Facts, now: Wall) {
    let granted: serde_json::Map<String, serde_json::Value> = facts
        .holding(now)
        .filter_map(|fact| {
            let name = fact.name();
            grant.is_match(&name).then(|| {
                let value = serde_json::json!({
                    "value": fact.value,
                    "source": fact.source.writer,
                    "age_s": now.since(fact.observed_at).as_secs(),
                });
                (name, value)
            })
        })
        .collect();
    if !seen.details.is_object() {
        let was = std::mem::take(&mut seen.details);
        seen.details = serde_json::json!({});
        if !was.is_null() {
            seen.details["value"] = was;
        }
    }
    seen.details[healer_plugin_sdk::READ_FACTS_KEY] = serde_json::Value::Object(granted);
}
