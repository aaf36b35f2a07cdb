//! One target's loop: wait for the schedule, a push or a re-check request;
//! check (with a deadline); diagnose; update the issues; recover what is
//! due, trying the matching recoverers in order; repeat.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use healer_plugin_sdk::{Finding, Observation, Recovery, Status};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::{sleep_until, timeout, Instant};
use tracing::{debug, error, info, warn};

use super::{Health, Runner, Shared};
use crate::issues::{Tracker, Transition};

/// The state of one target's healing loop.
pub struct Cycle {
    runner: Runner,
    shared: Arc<Shared>,
    limiter: Arc<Semaphore>,
    tracker: Tracker,
    history: VecDeque<Observation>,
    history_len: usize,
    last_status: Option<Status>,
    /// The latest finding of each open issue: what recoverers are given.
    findings: HashMap<String, Finding>,
    /// Issues whose recovery is held by a dependency (logged once).
    held: HashSet<String>,
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
        history_len: usize,
    ) -> Cycle {
        let tracker = Tracker::new(runner.target.policy);
        Cycle {
            runner,
            shared,
            limiter,
            tracker,
            history: VecDeque::new(),
            history_len: history_len.max(1),
            last_status: None,
            findings: HashMap::new(),
            held: HashSet::new(),
        }
    }

    fn name(&self) -> &str {
        &self.runner.target.name
    }

    /// Runs until `shutdown` changes.
    pub(crate) async fn run(
        mut self,
        mut recheck: mpsc::Receiver<()>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let policy = self.runner.target.policy;
        let (push_sender, mut pushes) = mpsc::channel(16);
        let monitor = Arc::clone(&self.runner.monitor);
        let forward = tokio::spawn(async move {
            while let Some(seen) = monitor.next_push().await {
                if push_sender.send(seen).await.is_err() {
                    break;
                }
            }
        });
        let mut next = Instant::now() + jitter(policy.interval.into(), self.name());
        loop {
            let pushed = tokio::select! {
                _ = sleep_until(next) => None,
                Some(seen) = pushes.recv() => Some(seen),
                Some(()) = recheck.recv() => {
                    debug!(target = %self.name(), "re-checking at once: a dependency recovered");
                    None
                }
                _ = shutdown.changed() => break,
            };
            let was_push = pushed.is_some();
            let step = self.step(pushed).await;
            let now = Instant::now();
            next = match step {
                Step::Recovered => now + Duration::from(policy.grace),
                Step::Checked if was_push => next,
                Step::Checked if self.tracker.all_escalated() => {
                    now + Duration::from(policy.escalated_interval)
                }
                Step::Checked => now + Duration::from(policy.interval),
            };
        }
        forward.abort();
    }

    /// One check (and diagnosis, and recovery if asked), for `healer once`.
    pub(crate) async fn once(&mut self, recover: bool) -> (String, Observation, Vec<String>) {
        let (seen, checked) = self.check().await;
        let (findings, diagnosed) = self.diagnose(&seen, checked).await;
        let kinds = findings.iter().map(|f| f.kind.clone()).collect();
        if recover {
            self.after_diagnosis(&findings, checked && diagnosed);
            self.recover().await;
        }
        (self.name().to_owned(), seen, kinds)
    }

    async fn step(&mut self, pushed: Option<Observation>) -> Step {
        let (seen, checked) = match pushed {
            Some(seen) => {
                debug!(target = %self.name(), status = %seen.status, summary = %seen.summary, "pushed by the monitor");
                (seen, true)
            }
            None => self.check().await,
        };
        self.note_status(&seen);
        let (findings, diagnosed) = self.diagnose(&seen, checked).await;
        self.history.push_back(seen);
        while self.history.len() > self.history_len {
            self.history.pop_front();
        }
        self.after_diagnosis(&findings, checked && diagnosed);
        if self.recover().await {
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
        match timeout(policy.timeout.into(), self.runner.monitor.check()).await {
            Ok(Ok(seen)) => (seen, true),
            Ok(Err(err)) => {
                warn!(target = %self.name(), monitor = %plugin, error = %err, "check failed");
                (Observation::unknown(format!("check failed: {err}")), false)
            }
            Err(_) => {
                warn!(target = %self.name(), monitor = %plugin, timeout = %policy.timeout, "check timed out");
                (
                    Observation::unknown(format!("check timed out after {}", policy.timeout)),
                    false,
                )
            }
        }
    }

    fn note_status(&mut self, seen: &Observation) {
        let was = self.last_status.replace(seen.status);
        if was == Some(seen.status) {
            debug!(target = %self.name(), status = %seen.status, summary = %seen.summary, "checked");
            return;
        }
        let was = was.map_or("none", Status::as_str);
        if seen.status == Status::Ok {
            info!(target = %self.name(), status = %seen.status, was, summary = %seen.summary, "status changed");
        } else {
            warn!(target = %self.name(), status = %seen.status, was, summary = %seen.summary, "status changed");
        }
    }

    /// Findings from the diagnosers, or, with none configured (or when the
    /// check itself failed, which diagnosers cannot interpret), the
    /// observation itself when it is not OK (`<monitor>.<status>`). The flag
    /// is `false` when a diagnoser failed: the findings may be incomplete.
    async fn diagnose(&mut self, seen: &Observation, checked: bool) -> (Vec<Finding>, bool) {
        if self.runner.diagnosers.is_empty() || !checked {
            if seen.status == Status::Ok {
                return (Vec::new(), true);
            }
            let kind = format!(
                "{}.{}",
                self.runner.target.monitor.plugin,
                seen.status.as_str().to_lowercase()
            );
            return (
                vec![Finding::new(kind, seen.status, seen.summary.clone())],
                true,
            );
        }
        let deadline: Duration = self.runner.target.policy.timeout.into();
        let history = self.history.make_contiguous();
        let mut findings = Vec::new();
        let mut complete = true;
        for (plugin, diagnoser) in &self.runner.diagnosers {
            match timeout(deadline, diagnoser.diagnose(seen, history)).await {
                Ok(Ok(found)) => findings.extend(found),
                Ok(Err(err)) => {
                    complete = false;
                    warn!(target = %self.runner.target.name, diagnoser = %plugin, error = %err, "diagnoser failed")
                }
                Err(_) => {
                    complete = false;
                    warn!(target = %self.runner.target.name, diagnoser = %plugin, "diagnoser timed out")
                }
            }
        }
        (findings, complete)
    }

    /// Feeds the findings to the issues; `conclusive` is `false` when the
    /// check or a diagnoser failed, and then nothing counts as healthy.
    fn after_diagnosis(&mut self, findings: &[Finding], conclusive: bool) {
        for finding in findings {
            self.findings.insert(finding.kind.clone(), finding.clone());
        }
        for transition in self
            .tracker
            .observe(findings, Instant::now().into_std(), conclusive)
        {
            self.log_transition(&transition);
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

    fn log_transition(&self, transition: &Transition) {
        let name = self.name();
        match transition {
            Transition::Soft {
                kind,
                failures,
                needed,
            } => {
                info!(target = %name, kind = %kind, failures, needed, "finding seen; an issue opens after {needed} consecutive failed checks")
            }
            Transition::Opened { kind, attempts } => {
                let summary = self.findings.get(kind).map_or("", |f| f.summary.as_str());
                warn!(target = %name, kind = %kind, attempts, summary, "issue opened")
            }
            Transition::Resolved { kind, attempts } => {
                info!(target = %name, kind = %kind, attempts, "issue resolved")
            }
            Transition::Escalated {
                kind,
                attempts,
                reason,
            } => error!(
                target = %name,
                kind = %kind,
                attempts,
                reason = %reason,
                severity = "CRITICAL",
                "issue escalated: no further recovery until it resolves or an operator resets it"
            ),
        }
    }

    /// Recovers every issue that is due; returns whether any attempt ran.
    async fn recover(&mut self) -> bool {
        let due = self.tracker.due(Instant::now().into_std());
        if due.is_empty() {
            return false;
        }
        let target = &self.runner.target;
        if let Some((dependency, health)) = self.shared.first_unhealthy(&target.depends_on) {
            let why = match health {
                Health::Unchecked => "has not been checked yet",
                _ => "has an open issue",
            };
            for kind in due {
                if self.held.insert(kind.clone()) {
                    warn!(target = %target.name, kind = %kind, dependency, "recovery held: the finding is caused upstream, {dependency} {why}");
                }
            }
            return false;
        }
        let mut acted = false;
        for kind in due {
            let ladder: Vec<usize> = (0..target.recoverers.len())
                .filter(|&i| target.recoverers[i].handles(&kind))
                .collect();
            if ladder.is_empty() {
                if let Some(transition) = self
                    .tracker
                    .escalate(&kind, format!("no recoverer of this target handles {kind}"))
                {
                    self.log_transition(&transition);
                }
                continue;
            }
            let Some(finding) = self.findings.get(&kind).cloned() else {
                continue;
            };
            let Ok(_permit) = self.limiter.acquire().await else {
                return acted;
            };
            let attempt = self.tracker.attempt_started(&kind);
            let policy = target.policy;
            warn!(target = %target.name, kind = %kind, attempt = %format!("{attempt}/{}", policy.max_attempts), "recovery attempt");
            let recovery = Recovery {
                target: target.name.clone(),
                finding,
                attempt,
                params: serde_json::json!({}),
            };
            let mut recovered = false;
            for i in ladder {
                let plugin = &target.recoverers[i].plugin.plugin;
                match timeout(
                    policy.recovery_timeout.into(),
                    self.runner.recoverers[i].recover(&recovery),
                )
                .await
                {
                    Ok(Ok(outcome)) => {
                        info!(target = %target.name, kind = %kind, recoverer = %plugin, attempt, summary = %outcome.summary, "recovery succeeded");
                        recovered = true;
                        break;
                    }
                    Ok(Err(err)) => {
                        warn!(target = %target.name, kind = %kind, recoverer = %plugin, attempt, error = %err, "recoverer failed")
                    }
                    Err(_) => {
                        warn!(target = %target.name, kind = %kind, recoverer = %plugin, attempt, timeout = %policy.recovery_timeout, "recoverer timed out")
                    }
                }
            }
            if !recovered {
                warn!(target = %target.name, kind = %kind, attempt, "recovery attempt failed: no recoverer succeeded");
            }
            self.tracker
                .attempt_finished(&kind, Instant::now().into_std());
            acted = true;
        }
        acted
    }
}

/// A random share of `interval`, so targets do not all fire at once.
fn jitter(interval: Duration, name: &str) -> Duration {
    let random = std::collections::hash_map::RandomState::new().hash_one(name);
    interval.mul_f64((random % 10_000) as f64 / 10_000.0)
}
