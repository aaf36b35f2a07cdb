//! The AutoHealer intake: anomalies posted over HTTP are matched against
//! the reflex map and start corrective workflows (webhooks to n8n,
//! commands, restarts), with storm control, a kill switch and dry runs.
//! Every action is recorded as the seed did: event `auto_healer_action`
//! with the anomaly and workflow, at CRITICAL severity.
//!
//! Only this module and `api` know HTTP (`http.rs` here).

pub mod client;
mod guard;
mod http;
mod storm;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use healer_plugin_sdk::{Finding, Recovery, Status};
use serde_json::{json, Value};
use tokio::time::timeout;
use tracing::{error, info, warn};

use crate::config::{Config, Intake as Settings, Reflex, Workflow};
use crate::plugins::{Catalog, RecovererHandle};
pub use http::{listen, serve};
use storm::{Limits, Storm};

/// The intake: settings, reflexes, workflows with their step instances.
pub struct Intake {
    settings: Settings,
    token: Option<String>,
    reflexes: Vec<Reflex>,
    workflows: HashMap<String, (Workflow, Vec<Arc<RecovererHandle>>)>,
    storm: Mutex<Storm>,
    runs: AtomicU64,
    /// Alertmanager alerts already acted on: (fingerprint, startsAt) -> when.
    seen_alerts: Mutex<HashMap<(String, String), Instant>>,
    /// Fingerprints of the alerts firing under each alert name.
    firing: Mutex<HashMap<String, std::collections::HashSet<String>>>,
}

/// What a report led to; the HTTP answer is this as JSON.
pub type Answer = Value;

impl Intake {
    /// Creates every workflow step's recoverer and reads the token.
    pub async fn build(config: &Config, catalog: &Catalog) -> Result<Arc<Intake>, Vec<String>> {
        let settings = config.intake.clone().unwrap_or_default();
        let mut errors = Vec::new();
        let token = Intake::token(&settings).unwrap_or_else(|err| {
            errors.push(err);
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
        Ok(Arc::new(Intake {
            settings,
            token,
            reflexes: config.reflexes.clone(),
            workflows,
            storm: Mutex::new(Storm::new(limits)),
            runs: AtomicU64::new(0),
            seen_alerts: Mutex::new(HashMap::new()),
            firing: Mutex::new(HashMap::new()),
        }))
    }

    /// The token write endpoints require, if any: from `token_env` or
    /// `token_file`. Also what `healer check` and `healer send` use.
    pub fn token(settings: &Settings) -> Result<Option<String>, String> {
        match (&settings.token_env, &settings.token_file) {
            (Some(var), _) => match std::env::var(var) {
                Ok(token) if !token.trim().is_empty() => Ok(Some(token.trim().to_owned())),
                _ => Err(format!("[intake] token_env: the environment variable {var} is not set or empty")),
            },
            (None, Some(file)) => match std::fs::read_to_string(file) {
                Ok(text) if !text.trim().is_empty() => Ok(Some(text.lines().next().unwrap_or("").trim().to_owned())),
                Ok(_) => Err(format!("[intake] token_file {}: the file is empty", file.display())),
                Err(err) => Err(format!("[intake] token_file {}: {err}", file.display())),
            },
            (None, None) if !settings.bind.ip().is_loopback() => Err(format!(
                "[intake] bind = \"{}\" reaches beyond this machine, so it needs a token: set token_env or token_file, or bind to 127.0.0.1",
                settings.bind
            )),
            (None, None) => Ok(None),
        }
    }

    /// The first reflex matching `name`.
    pub fn reflex_for(&self, name: &str) -> Option<&Reflex> {
        self.reflexes.iter().find(|reflex| reflex.matches(name))
    }

    /// Handles one anomaly report.
    pub fn report(self: &Arc<Self>, name: &str, details: Value, dry_run: bool) -> Answer {
        let Some(reflex) = self.reflex_for(name) else {
            warn!(event = "auto_healer_action", status = "no_reflex", anomaly = name, details = %details, "no reflex matches this anomaly; nothing runs");
            return json!({"status": "no_reflex", "anomaly": name, "reason": format!("no reflex matches {name:?} ({} reflexes)", self.reflexes.len())});
        };
        let Some((workflow, _)) = self.workflows.get(&reflex.workflow) else {
            return json!({"status": "no_reflex", "anomaly": name, "reason": format!("workflow {:?} is not defined", reflex.workflow)});
        };
        if dry_run {
            return json!({
                "status": "dry_run",
                "anomaly": name,
                "reflex": reflex.pattern,
                "reflex_origin": reflex.origin,
                "workflow": workflow.name,
                "params": reflex.params,
                "steps": explain_steps(workflow),
            });
        }
        let admitted = self.storm.lock().unwrap_or_else(|p| p.into_inner()).report(
            name,
            &reflex.pattern,
            reflex.max_runs_per_minute,
            Instant::now(),
        );
        let attempt = match admitted {
            Ok(admitted) => admitted.attempt,
            Err((reason, count)) => {
                if reason == storm::Suppressed::Escalated {
                    error!(
                        event = "auto_healer_action",
                        status = "escalated",
                        severity = "CRITICAL",
                        anomaly = name,
                        workflow = %workflow.name,
                        attempts = self.settings.max_attempts,
                        "anomaly escalated: its workflow ran {} times and it is still reported; no further runs until it is quiet for {} or its alert resolves",
                        self.settings.max_attempts,
                        self.settings.stable_after
                    );
                } else if count == 1 || count % 100 == 0 {
                    info!(
                        anomaly = name,
                        reason = reason.as_str(),
                        suppressed = count,
                        "anomaly suppressed"
                    );
                }
                return json!({"status": "suppressed", "anomaly": name, "reason": reason.as_str(), "suppressed": count, "workflow": workflow.name});
            }
        };
        let run_id = format!("run-{}", self.runs.fetch_add(1, Ordering::Relaxed) + 1);
        let status = if self.settings.actions {
            "started"
        } else {
            "would_run"
        };
        error!(
            event = "auto_healer_action",
            status,
            severity = "CRITICAL",
            anomaly = name,
            details = %details,
            workflow = %workflow.name,
            params = %reflex.params,
            reflex = %reflex.pattern,
            run_id = %run_id,
            attempt,
            "auto-healer action: {}",
            if self.settings.actions { "workflow started" } else { "kill switch on: the workflow would have run" }
        );
        if self.settings.actions {
            let intake = Arc::clone(self);
            let (name, params, run) = (name.to_owned(), reflex.params.clone(), run_id.clone());
            let workflow_name = workflow.name.clone();
            tokio::spawn(async move {
                intake
                    .run(&name, details, &workflow_name, params, attempt, &run)
                    .await
            });
        } else {
            self.storm
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .finished(name);
        }
        json!({"status": status, "anomaly": name, "run_id": run_id, "workflow": workflow.name, "reflex": reflex.pattern, "attempt": attempt})
    }

    async fn run(
        &self,
        name: &str,
        details: Value,
        workflow: &str,
        params: Value,
        attempt: u32,
        run_id: &str,
    ) {
        let Some((definition, steps)) = self.workflows.get(workflow) else {
            return;
        };
        let finding = Finding {
            kind: name.to_owned(),
            severity: Status::Critical,
            summary: format!("anomaly {name}"),
            details: details.clone(),
        };
        let recovery = Recovery {
            target: name.to_owned(),
            finding,
            attempt,
            params: params.clone(),
        };
        let mut failed = None;
        for (index, (step, handle)) in definition.steps.iter().zip(steps).enumerate() {
            let plugin = &step.plugin.plugin;
            match timeout(self.settings.step_timeout.into(), handle.recover(&recovery)).await {
                Ok(Ok(outcome)) => {
                    info!(run_id, workflow, step = index + 1, plugin = %plugin, summary = %outcome.summary, "workflow step succeeded")
                }
                Ok(Err(err)) => {
                    warn!(run_id, workflow, step = index + 1, plugin = %plugin, error = %err, "workflow step failed");
                    if !step.continue_on_error {
                        failed = Some(format!("step {} ({plugin}) failed: {err}", index + 1));
                        break;
                    }
                }
                Err(_) => {
                    let err = format!(
                        "step {} ({plugin}) timed out after {}",
                        index + 1,
                        self.settings.step_timeout
                    );
                    warn!(run_id, workflow, "{err}");
                    if !step.continue_on_error {
                        failed = Some(err);
                        break;
                    }
                }
            }
        }
        let status = if failed.is_some() {
            "failed"
        } else {
            "succeeded"
        };
        error!(
            event = "auto_healer_action",
            status,
            severity = "CRITICAL",
            anomaly = name,
            details = %details,
            workflow,
            params = %params,
            run_id,
            attempt,
            error = failed.as_deref().unwrap_or(""),
            "auto-healer action: workflow {status}"
        );
        self.storm
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .finished(name);
    }

    /// An Alertmanager alert of `name` with `fingerprint` resolved. The
    /// anomaly resolves (its attempts are forgotten) once no other alert of
    /// that name is still firing.
    pub fn resolve(&self, name: &str, fingerprint: &str) -> bool {
        {
            let mut firing = self.firing.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(fingerprints) = firing.get_mut(name) {
                fingerprints.remove(fingerprint);
                if !fingerprints.is_empty() {
                    return false;
                }
                firing.remove(name);
            }
        }
        let resolved = self
            .storm
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .resolved(name);
        if resolved {
            info!(anomaly = name, "issue resolved: the alert resolved");
        }
        resolved
    }

    /// Whether this alert occurrence was already acted on (Alertmanager
    /// re-sends on retries and repeat intervals).
    pub fn already_acted_on(&self, fingerprint: &str, starts_at: &str) -> bool {
        let seen = self.seen_alerts.lock().unwrap_or_else(|p| p.into_inner());
        seen.contains_key(&(fingerprint.to_owned(), starts_at.to_owned()))
    }

    /// Notes a firing alert; remembers its occurrence (for a day) only when
    /// it was acted on, so one suppressed by a storm limit runs on a re-send.
    pub fn firing(&self, name: &str, fingerprint: &str, starts_at: &str, acted_on: bool) {
        self.firing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_owned())
            .or_default()
            .insert(fingerprint.to_owned());
        if acted_on {
            let mut seen = self.seen_alerts.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            seen.retain(|_, at| now.duration_since(*at).as_secs() < 86_400);
            seen.insert((fingerprint.to_owned(), starts_at.to_owned()), now);
        }
    }
}

/// A workflow's steps as a dry run shows them.
pub fn explain_steps(workflow: &Workflow) -> Vec<Value> {
    workflow
        .steps
        .iter()
        .map(|step| json!({"plugin": step.plugin.plugin, "config": step.plugin.config, "continue_on_error": step.continue_on_error}))
        .collect()
}
