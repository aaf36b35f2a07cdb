//! The AutoHealer intake: anomalies posted over HTTP are matched against
//! the reflex map and start corrective workflows (webhooks to n8n,
//! commands, restarts), with storm control, a kill switch and dry runs.
//! Every action is an event; the log writes it as the seed did
//! (`auto_healer_action` at CRITICAL) and the store keeps it.
//!
//! Only this module and `api` know HTTP (`http.rs` here; `access.rs`
//! decides whom the listener serves, for the API too). The storm state
//! and the Alertmanager dedup are pure (`storm.rs`, `alerts.rs`) and carry
//! on across restarts from what the store saved. Reports that would act
//! are refused while recording is too far behind (`backlog.rs`), so what
//! the intake answers 2xx is recorded.

mod access;
mod alertmanager;
mod backlog;
pub mod client;
mod guard;
mod http;
pub mod occurrences;
mod quiet;
mod storm;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use healer_plugin_sdk::redact;
use healer_plugin_sdk::{Finding, Recovery, Status};
use serde::Serialize;
use serde_json::Value;
use tokio::time::timeout;

use crate::clock::Wall;
use crate::config::{Config, Intake as Settings, Reflex, Workflow};
use crate::events::{Event, Events, Json, Run, StepResult};
use crate::model::{AnomalyState, StoreHealth, Suppressed};
use crate::plugins::{Catalog, RecovererHandle};
pub use access::{check_token, is_write, TokenRefusal};
pub use alertmanager::{AlertResult, AlertmanagerReply};
pub use http::{
    listen, read_alertmanager, read_anomaly, serve, AlertmanagerPayload, AnomalyReport, BadRequest,
    MAX_BODY,
};
pub use occurrences::{Acted, Occurrences};
pub use storm::MAX_TRACKED;
use storm::{Limits, Storm};

/// The intake: settings, reflexes, workflows with their step instances.
pub struct Intake {
    settings: Settings,
    /// The fleet this member shares its reports with (`[fleet]`): the
    /// first member to write a report's key acts on it.
    fleet: std::sync::OnceLock<crate::fleet::Fleet>,
    token: Option<String>,
    reflexes: Vec<Reflex>,
    /// Each reflex's params as events show them (secrets redacted),
    /// encoded once: the same index as `reflexes`.
    shown_params: Vec<Json>,
    workflows: HashMap<String, (Workflow, Vec<Arc<RecovererHandle>>)>,
    storm: Mutex<Storm>,
    alerts: Mutex<Occurrences>,
    /// How often reports that start nothing are recorded.
    quiet: Mutex<quiet::Quiet>,
    /// The number of the last run; run ids go on from it after a restart.
    runs: AtomicU64,
    events: Events,
    /// Anomaly names whose storm state was carried over from before a restart.
    restored: usize,
    /// Workflows running now, and a wake-up when the last one ends.
    running: AtomicUsize,
    idle: tokio::sync::Notify,
    /// The store, whose unwritten events count toward the backlog.
    store: Option<Arc<dyn StoreHealth>>,
    /// Reports refused and not yet recorded in a `reports_refused` event.
    refused: AtomicU64,
    said: Mutex<backlog::Said>,
}

/// The intake's state as saved before a restart.
#[derive(Debug)]
pub struct Saved {
    /// Each anomaly name's storm state.
    pub anomalies: Vec<(String, AnomalyState)>,
    /// Alertmanager occurrences acted on.
    pub acted: Vec<Acted>,
    /// (alert name, fingerprint, last heard of) firing.
    pub firing: Vec<(String, String, Wall)>,
    /// The number of the last workflow run; `None` when unknown (the store
    /// could not be read), then run numbers start from the clock.
    pub last_run: Option<u64>,
}

impl Default for Saved {
    /// Nothing saved: a first start (run numbers start from 1).
    fn default() -> Saved {
        Saved {
            anomalies: Vec::new(),
            acted: Vec::new(),
            firing: Vec::new(),
            last_run: Some(0),
        }
    }
}

/// What a report led to: the HTTP answer, as JSON.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Reply {
    /// The workflow started (HTTP 202).
    Started {
        anomaly: String,
        run_id: String,
        workflow: String,
        reflex: String,
        attempt: u32,
    },
    /// The kill switch is on: recorded, not run.
    WouldRun {
        anomaly: String,
        run_id: String,
        workflow: String,
        reflex: String,
        attempt: u32,
    },
    /// Counted, not run.
    Suppressed {
        anomaly: String,
        reason: &'static str,
        suppressed: u64,
        workflow: String,
    },
    /// No reflex matches: nothing runs.
    NoReflex { anomaly: String, reason: String },
    /// Another member of the fleet was sent it first and acts on it.
    Duplicate {
        anomaly: String,
        duplicate: bool,
        reason: String,
    },
    /// Too many events wait to be recorded: nothing was done; try again
    /// after a while (HTTP 503 with Retry-After).
    Refused {
        anomaly: String,
        error: String,
        waiting: usize,
        limit: usize,
    },
    /// `?dry_run=true`: what would run.
    DryRun {
        anomaly: String,
        reflex: String,
        reflex_origin: String,
        workflow: String,
        params: Value,
        steps: Vec<StepView>,
    },
}

impl Reply {
    /// Whether the workflow started, or would have with the kill switch off.
    pub fn acted_on(&self) -> bool {
        matches!(self, Reply::Started { .. } | Reply::WouldRun { .. })
    }
}

/// A workflow step as a dry run and `healer explain` show it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepView {
    pub plugin: String,
    pub config: Value,
    pub continue_on_error: bool,
}

impl Intake {
    /// Creates every workflow step's recoverer, reads the token, and
    /// carries on from the `saved` state. `store` (none when it is off) is
    /// watched for events it has not written yet.
    pub async fn build(
        config: &Config,
        catalog: &Catalog,
        events: Events,
        saved: Saved,
        store: Option<Arc<dyn StoreHealth>>,
    ) -> Result<Arc<Intake>, Vec<String>> {
        let settings = config.intake.clone().unwrap_or_default();
        let mut errors = Vec::new();
        let token = config.intake_token().unwrap_or_else(|err| {
            errors.push(err.to_string());
            None
        });
        let mut workflows = HashMap::new();
        for workflow in config.workflows.values() {
            let mut steps = Vec::new();
            for step in &workflow.steps {
                let plugin = &step.plugin;
                let Some(package) = catalog.find(plugin.kind, &plugin.plugin) else {
                    errors.push(format!(
                        "workflow {:?}: no loaded package exports recoverer {:?}",
                        workflow.name, plugin.plugin
                    ));
                    continue;
                };
                match package.new_recoverer(&plugin.plugin, &plugin.config).await {
                    Ok(handle) => steps.push(Arc::new(handle)),
                    Err(err) => errors.push(format!(
                        "workflow {:?}: cannot create recoverer {:?}: {err}",
                        workflow.name, plugin.plugin
                    )),
                }
            }
            workflows.insert(workflow.name.clone(), (workflow.clone(), steps));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let limits = Limits {
            cooldown: settings.cooldown.into(),
            max_attempts: settings.max_attempts,
            stable_after: settings.stable_after.into(),
            max_runs_per_minute: settings.max_runs_per_minute,
        };
        let now = Wall::now();
        let mut storm = Storm::new(limits);
        let restored = storm.restore(saved.anomalies, now);
        let mut alerts = Occurrences::default();
        alerts.restore(saved.acted, saved.firing, now);
        let last_run = saved.last_run.unwrap_or(now.millis() / 1000);
        Ok(Arc::new(Intake {
            settings,
            fleet: std::sync::OnceLock::new(),
            token,
            reflexes: config.reflexes.clone(),
            shown_params: config
                .reflexes
                .iter()
                .map(|reflex| Json::encode(&redact::json(&reflex.params)))
                .collect(),
            workflows,
            storm: Mutex::new(storm),
            alerts: Mutex::new(alerts),
            quiet: Mutex::new(quiet::Quiet::new(std::time::Instant::now())),
            runs: AtomicU64::new(last_run),
            events,
            restored,
            running: AtomicUsize::new(0),
            idle: tokio::sync::Notify::new(),
            store,
            refused: AtomicU64::new(0),
            said: Mutex::new(backlog::Said::default()),
        }))
    }

    /// Shares reports with `fleet` from now on.
    pub fn join_fleet(&self, fleet: crate::fleet::Fleet) {
        let _ = self.fleet.set(fleet);
    }

    /// Whether this member acts on the report of anomaly `name`: without
    /// a fleet always; in one, when it is the first member to report the
    /// name within its cooldown (a name no reflex matches starts nothing
    /// and is not shared). `Err` when the fleet cannot tell.
    pub async fn first_in_fleet(&self, name: &str) -> Result<bool, String> {
        match self.fleet.get() {
            Some(fleet) if self.reflex_for(name).is_some() => {
                fleet
                    .first_to_report(&crate::fleet::anomaly_key(name))
                    .await
            }
            _ => Ok(true),
        }
    }

    /// The report of anomaly `name` was acted on here: it stays a
    /// duplicate fleet-wide for its cooldown.
    pub fn acted_in_fleet(&self, name: &str) {
        if let Some(fleet) = self.fleet.get().cloned() {
            let (key, keep) = (
                crate::fleet::anomaly_key(name),
                self.settings.cooldown.into(),
            );
            tokio::spawn(async move { fleet.reported(&key, keep).await });
        }
    }

    /// The fleet-wide key of an alert's occurrence this member acts on
    /// (`Ok(Some)`), or `Ok(None)` when another member was sent it first.
    /// Without a fleet, or for an alert no reflex matches, the key is
    /// empty: nothing to share.
    async fn alert_first_in_fleet(
        &self,
        receiver: &str,
        name: &str,
        fingerprint: &str,
        starts_at: &str,
    ) -> Result<Option<String>, String> {
        match self.fleet.get() {
            Some(fleet) if self.reflex_for(name).is_some() => {
                let key = crate::fleet::alert_key(receiver, fingerprint, starts_at);
                Ok(fleet.first_to_report(&key).await?.then_some(key))
            }
            _ => Ok(Some(String::new())),
        }
    }

    /// The alerts of `keys` were acted on here: each stays a duplicate
    /// fleet-wide for a week.
    fn alerts_acted_in_fleet(&self, keys: Vec<String>) {
        let Some(fleet) = self.fleet.get().cloned() else {
            return;
        };
        let keys: Vec<String> = keys.into_iter().filter(|key| !key.is_empty()).collect();
        if keys.is_empty() {
            return;
        }
        tokio::spawn(async move {
            for key in keys {
                fleet.reported(&key, crate::fleet::ALERT_KEPT).await;
            }
        });
    }

    /// Waits (at most `limit`) for the workflows still running, so their
    /// ends are recorded before healer stops; returns how many still run.
    pub async fn drain(&self, limit: std::time::Duration) -> usize {
        let all_done = async {
            loop {
                let idle = self.idle.notified();
                if self.running.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        };
        let _ = timeout(limit, all_done).await;
        self.running.load(Ordering::Acquire)
    }

    /// The token it was built with (the API's reads and writes need the
    /// same one).
    pub fn required_token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// How long a request may take to arrive (the API answers within it).
    pub fn request_timeout(&self) -> std::time::Duration {
        self.settings.request_timeout.into()
    }

    /// How many anomaly names carried on from before a restart.
    pub fn restored_anomalies(&self) -> usize {
        self.restored
    }

    /// The first reflex matching `name`.
    pub fn reflex_for(&self, name: &str) -> Option<&Reflex> {
        self.reflexes.iter().find(|reflex| reflex.matches(name))
    }

    /// Whether recording is too far behind to take a report that would
    /// act: more than `max_backlog` events wait in the stream or in the
    /// store. Two atomic reads while it is not.
    pub fn behind(&self) -> Option<backlog::Behind> {
        let limit = self.settings.max_backlog;
        let stream = self.events.waiting();
        let store = self.store.as_ref().map_or(0, |store| store.pending());
        if stream + store <= limit {
            return None;
        }
        // A store that cannot write (a full disk) keeps its rows in
        // memory, bounded, and has said so (`store_degraded`): healing
        // goes on from memory, so then only the stream's backlog refuses,
        // never a disk outage by itself.
        let degraded = self.store.as_ref().is_some_and(|store| store.degraded());
        let waiting = if degraded { stream } else { stream + store };
        backlog::behind(waiting, limit, || degraded)
    }

    /// Counts one refused report (recorded later, see [`Intake::say_refusals`]).
    fn refuse(&self, name: &str, behind: &backlog::Behind) -> Reply {
        self.refused.fetch_add(1, Ordering::Relaxed);
        Reply::Refused {
            anomaly: name.to_owned(),
            error: behind.reason(),
            waiting: behind.waiting,
            limit: behind.limit,
        }
    }

    /// Records the refusals counted so far as one `reports_refused` event
    /// when it is time (see `backlog::Said`); `stopping` says the rest.
    pub fn say_refusals(&self, stopping: bool) {
        let unsaid = self.refused.load(Ordering::Relaxed);
        let due = self.said.lock().unwrap_or_else(|p| p.into_inner()).due(
            unsaid,
            std::time::Instant::now(),
            stopping,
        );
        if !due {
            return;
        }
        let refused = self.refused.swap(0, Ordering::Relaxed);
        self.events.emit(Event::ReportsRefused {
            refused,
            waiting: self.events.waiting() + self.store.as_ref().map_or(0, |store| store.pending()),
            limit: self.settings.max_backlog,
            reason: self.behind().map_or_else(
                || "recording was behind; it has caught up".to_owned(),
                |behind| behind.reason(),
            ),
        });
    }

    /// Handles one anomaly report.
    pub fn report(self: &Arc<Self>, name: &str, details: Value, dry_run: bool) -> Reply {
        let index = self.reflexes.iter().position(|reflex| reflex.matches(name));
        let reflex = index.map(|index| &self.reflexes[index]);
        let workflow = reflex.and_then(|reflex| self.workflows.get(&reflex.workflow));
        let (Some(reflex), Some((workflow, _))) = (reflex, workflow) else {
            let reason = match reflex {
                None => format!(
                    "no reflex matches {name:?} ({} reflexes)",
                    self.reflexes.len()
                ),
                Some(reflex) => format!("workflow {:?} is not defined", reflex.workflow),
            };
            let recorded = self
                .quiet
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .record(name, std::time::Instant::now());
            if let Some(left_out) = recorded {
                self.events.emit(Event::NoReflex {
                    anomaly: name.to_owned(),
                    details: crate::events::bounded(&details),
                    reason: reason.clone(),
                    left_out,
                });
            }
            return Reply::NoReflex {
                anomaly: name.to_owned(),
                reason,
            };
        };
        if dry_run {
            return Reply::DryRun {
                anomaly: name.to_owned(),
                reflex: reflex.pattern.clone(),
                reflex_origin: reflex.origin.clone(),
                workflow: workflow.name.clone(),
                params: redact::json(&reflex.params),
                steps: explain_steps(workflow),
            };
        }
        // Before storm control: a refused report changes no state.
        if let Some(behind) = self.behind() {
            return self.refuse(name, &behind);
        }
        let (verdict, state) = {
            let mut storm = self.storm.lock().unwrap_or_else(|p| p.into_inner());
            let verdict = storm.report(
                name,
                &reflex.pattern,
                reflex.max_runs_per_minute,
                Wall::now(),
            );
            (verdict, storm.state(name))
        };
        let attempt = match verdict {
            Ok(admitted) => admitted.attempt,
            Err((reason, count)) => {
                if reason == Suppressed::Escalated {
                    self.events.emit(Event::AnomalyEscalated {
                        anomaly: name.to_owned(),
                        workflow: workflow.name.clone(),
                        attempts: state.attempts,
                        quiet_for: self.settings.stable_after,
                        state,
                    });
                } else {
                    self.events.emit(Event::AnomalySuppressed {
                        anomaly: name.to_owned(),
                        workflow: workflow.name.clone(),
                        reason,
                        count,
                        state,
                    });
                }
                return Reply::Suppressed {
                    anomaly: name.to_owned(),
                    reason: reason.as_str(),
                    suppressed: count,
                    workflow: workflow.name.clone(),
                };
            }
        };
        let run_id = format!("run-{}", self.runs.fetch_add(1, Ordering::Relaxed) + 1);
        // The record (events, log, store) has the details bounded and the
        // params' secrets redacted, each encoded once; the workflow gets
        // them whole.
        let params = index
            .and_then(|index| self.shown_params.get(index))
            .cloned()
            .unwrap_or_else(|| Json::encode(&redact::json(&reflex.params)));
        let run = Run {
            run_id: run_id.clone(),
            anomaly: name.to_owned(),
            details: crate::events::bounded(&details),
            workflow: workflow.name.clone(),
            params,
            reflex: reflex.pattern.clone(),
            attempt,
        };
        // Only a workflow that runs needs them (not the kill switch's record).
        let work = self
            .settings
            .actions
            .then(|| (details, reflex.params.clone()));
        let (anomaly, workflow_name, reflex) = (
            name.to_owned(),
            workflow.name.clone(),
            reflex.pattern.clone(),
        );
        if let Some(work) = work {
            self.events.emit(Event::WorkflowStarted {
                run: run.clone(),
                state,
            });
            let intake = Arc::clone(self);
            self.running.fetch_add(1, Ordering::AcqRel);
            tokio::spawn(async move {
                intake.run(run, work).await;
                if intake.running.fetch_sub(1, Ordering::AcqRel) == 1 {
                    intake.idle.notify_waiters();
                }
            });
            Reply::Started {
                anomaly,
                run_id,
                workflow: workflow_name,
                reflex,
                attempt,
            }
        } else {
            self.events.emit(Event::WouldRun { run, state });
            self.storm
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .finished(name);
            Reply::WouldRun {
                anomaly,
                run_id,
                workflow: workflow_name,
                reflex,
                attempt,
            }
        }
    }

    /// Runs a workflow's steps with the anomaly's full `details` and
    /// `params`; `run` is its record.
    async fn run(&self, run: Run, (details, params): (Value, Value)) {
        let Some((definition, steps)) = self.workflows.get(&run.workflow) else {
            return;
        };
        let recovery = Recovery {
            target: run.anomaly.clone(),
            finding: Finding {
                kind: run.anomaly.clone(),
                severity: Status::Critical,
                summary: format!("anomaly {}", run.anomaly),
                details,
            },
            attempt: run.attempt,
            params,
            fence: None,
        };
        let mut failed = None;
        for (index, (step, handle)) in definition.steps.iter().zip(steps).enumerate() {
            let plugin = &step.plugin.plugin;
            let result =
                match timeout(self.settings.step_timeout.into(), handle.recover(&recovery)).await {
                    Ok(Ok(outcome)) => StepResult::success(&outcome.summary),
                    Ok(Err(error)) => StepResult::failure(&error),
                    Err(_) => StepResult::TimedOut {
                        after: self.settings.step_timeout,
                    },
                };
            let error = result.error();
            self.events.emit(Event::WorkflowStep {
                run_id: run.run_id.clone(),
                workflow: run.workflow.clone(),
                step: index + 1,
                plugin: plugin.clone(),
                result,
            });
            if let Some(error) = error {
                if !step.continue_on_error {
                    failed = Some(format!("step {} ({plugin}) failed: {error}", index + 1));
                    break;
                }
            }
        }
        let anomaly = run.anomaly.clone();
        self.events.emit(Event::WorkflowFinished {
            run,
            succeeded: failed.is_none(),
            error: failed,
        });
        self.storm
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .finished(&anomaly);
    }
}

/// A workflow's steps as a dry run and `healer explain` show them, secrets
/// redacted.
pub fn explain_steps(workflow: &Workflow) -> Vec<StepView> {
    workflow
        .steps
        .iter()
        .map(|step| StepView {
            plugin: step.plugin.plugin.clone(),
            config: redact::json(&step.plugin.config),
            continue_on_error: step.continue_on_error,
        })
        .collect()
}

#[cfg(test)]
mod tests;
