//! The intake part of the config: `[intake]`, `[[reflex]]` (and the seed's
//! `reflex_map.yml`), `[workflow.NAME]`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use globset::{Glob, GlobMatcher};
use healer_plugin_sdk::ffi::PluginKind;
use healer_plugin_sdk::Duration;
use serde::Deserialize;
use serde_json::Value;
use toml::Spanned;

use super::{source::did_you_mean, ConfigError, Location, PluginUse};

/// `[intake]`: the HTTP endpoint anomalies are posted to.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Intake {
    /// Where to listen. Beyond loopback only with a token.
    pub bind: SocketAddr,
    /// The bearer token write endpoints require, from this environment variable...
    pub token_env: Option<String>,
    /// ...or from this file (first line).
    pub token_file: Option<PathBuf>,
    /// The seed's reflex map file (`anomalies: [{name, workflow, params}]`).
    pub reflex_map: Option<PathBuf>,
    /// The same anomaly within this time of its last run is counted, not re-run.
    pub cooldown: Duration,
    /// Runs per anomaly name before further reports are suppressed...
    pub max_attempts: u32,
    /// ...until it has been quiet (or resolved) this long.
    pub stable_after: Duration,
    /// Runs started per minute, all reflexes together (0 = no limit).
    pub max_runs_per_minute: u32,
    /// The kill switch: `false` turns every run into a "would have run" record.
    pub actions: bool,
    /// Deadline of each workflow step.
    pub step_timeout: Duration,
    /// A request's head and body must arrive within this, from its first
    /// byte, however they trickle; an idle connection is closed after it.
    #[serde(alias = "client_timeout")]
    pub request_timeout: Duration,
    /// Open connections at most; a new one beyond it closes the oldest.
    pub max_connections: usize,
    /// Reports that would act are refused (503, Retry-After) while more
    /// than this many events wait to be recorded (delivered to the log and
    /// written to the store): what healer answers 2xx it records, and a
    /// stop writes out at most this much.
    pub max_backlog: usize,
}

impl Default for Intake {
    fn default() -> Intake {
        Intake {
            bind: SocketAddr::from(([127, 0, 0, 1], 8000)),
            token_env: None,
            token_file: None,
            reflex_map: None,
            cooldown: Duration::from_secs(60),
            max_attempts: 3,
            stable_after: Duration::from_secs(600),
            max_runs_per_minute: 60,
            actions: true,
            step_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            max_connections: 256,
            max_backlog: 20_000,
        }
    }
}

/// One reflex: anomaly names matching `pattern` start `workflow`.
#[derive(Clone, Debug)]
pub struct Reflex {
    /// The glob as written, e.g. `api_latency.*.high`.
    pub pattern: String,
    /// The workflow to run.
    pub workflow: String,
    /// Parameters handed to every step.
    pub params: Value,
    /// Runs of this reflex per minute (0 = only the global limit).
    pub max_runs_per_minute: u32,
    /// Where it was written (`file:line`).
    pub origin: String,
    matcher: GlobMatcher,
}

impl Reflex {
    /// Whether an anomaly of this name triggers this reflex.
    pub fn matches(&self, name: &str) -> bool {
        self.matcher.is_match(name)
    }
}

/// `[workflow.NAME]`: steps run in order.
#[derive(Clone, Debug)]
pub struct Workflow {
    /// The workflow's name.
    pub name: String,
    /// Its steps.
    pub steps: Vec<Step>,
}

/// One step: a recoverer with its config.
#[derive(Clone, Debug)]
pub struct Step {
    /// The recoverer.
    pub plugin: PluginUse,
    /// Go on with the next step when this one fails.
    pub continue_on_error: bool,
}

impl Step {
    /// What the step does, where in the file it is aside: (plugin, its
    /// config as JSON text, `continue_on_error`).
    pub fn fingerprint(&self) -> (String, String, bool) {
        (
            self.plugin.plugin.clone(),
            self.plugin.config.to_string(),
            self.continue_on_error,
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReflex {
    #[serde(rename = "match")]
    pattern: Spanned<String>,
    workflow: Spanned<String>,
    #[serde(default)]
    params: toml::Table,
    #[serde(default)]
    max_runs_per_minute: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWorkflow {
    steps: Vec<Spanned<toml::Table>>,
}

/// The seed's `reflex_map.yml`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedMap {
    anomalies: Vec<SeedReflex>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedReflex {
    name: String,
    workflow: String,
    #[serde(default)]
    params: Option<Value>,
}

impl super::Checker<'_> {
    pub(super) fn workflows(
        &mut self,
        raw: BTreeMap<String, Spanned<RawWorkflow>>,
    ) -> BTreeMap<String, Workflow> {
        let mut workflows = BTreeMap::new();
        for (name, raw) in raw {
            let at = raw.span().start;
            let mut steps = Vec::new();
            for table in raw.into_inner().steps {
                let span = table.span();
                let mut table = table.into_inner();
                let continue_on_error = match table.remove("continue_on_error") {
                    None => false,
                    Some(toml::Value::Boolean(value)) => value,
                    Some(_) => {
                        self.error(
                            span.start,
                            "`continue_on_error` must be true or false".to_owned(),
                        );
                        false
                    }
                };
                if let Some(plugin) =
                    self.plugin_use(PluginKind::Recoverer, Spanned::new(span, table), false)
                {
                    steps.push(Step {
                        plugin,
                        continue_on_error,
                    });
                }
            }
            if steps.is_empty() {
                self.error(at, format!("workflow {name:?} has no steps: add steps = [{{ plugin = \"webhook\", url = \"...\" }}]"));
            }
            workflows.insert(name.clone(), Workflow { name, steps });
        }
        workflows
    }

    pub(super) fn reflexes(
        &mut self,
        raw: Vec<RawReflex>,
        workflows: &BTreeMap<String, Workflow>,
    ) -> Vec<Reflex> {
        let mut reflexes = Vec::new();
        for reflex in raw {
            let at = reflex.pattern.span().start;
            let origin = format!("{}:{}", self.file.display(), self.source.locate(at).line);
            let workflow_at = reflex.workflow.span().start;
            let params = serde_json::to_value(&reflex.params).unwrap_or(Value::Null);
            match self.reflex(
                reflex.pattern.into_inner(),
                reflex.workflow.into_inner(),
                params,
                reflex.max_runs_per_minute,
                origin,
                workflows,
            ) {
                Ok(reflex) => reflexes.push(reflex),
                Err((in_workflow, message)) => {
                    self.error(if in_workflow { workflow_at } else { at }, message)
                }
            }
        }
        reflexes
    }

    /// Reads the seed's `reflex_map.yml`; its reflexes come after the TOML ones.
    pub(super) fn seed_map(
        &mut self,
        path: &Path,
        workflows: &BTreeMap<String, Workflow>,
    ) -> Vec<Reflex> {
        let fail = |message: String, line: Option<usize>| ConfigError {
            file: path.to_owned(),
            at: line.map(|line| Location { line, column: 1 }),
            message,
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) => {
                self.errors
                    .push(fail(format!("cannot read the reflex map: {err}"), None));
                return Vec::new();
            }
        };
        let map: SeedMap = match serde_yaml_ng::from_str(&text) {
            Ok(map) => map,
            Err(err) => {
                // libyaml puts the end of a file without a final newline
                // on the line after its last: the end is on its last line.
                let end = text.split('\n').count();
                let line = err.location().map(|l| l.line().min(end));
                let message = err.to_string();
                let message = message
                    .split(" at line ")
                    .next()
                    .unwrap_or(&message)
                    .to_owned();
                self.errors.push(fail(message, line));
                return Vec::new();
            }
        };
        let mut reflexes = Vec::new();
        for (index, seed) in map.anomalies.into_iter().enumerate() {
            let line = text
                .lines()
                .position(|l| l.contains(&seed.name))
                .map(|l| l + 1);
            let origin = format!("{}:{}", path.display(), line.unwrap_or(0));
            let params = seed.params.unwrap_or_else(|| serde_json::json!({}));
            match self.reflex(seed.name, seed.workflow, params, 0, origin, workflows) {
                Ok(reflex) => reflexes.push(reflex),
                Err((_, message)) => self
                    .errors
                    .push(fail(format!("anomalies[{index}]: {message}"), line)),
            }
        }
        reflexes
    }

    fn reflex(
        &mut self,
        pattern: String,
        workflow: String,
        params: Value,
        max_runs_per_minute: u32,
        origin: String,
        workflows: &BTreeMap<String, Workflow>,
    ) -> Result<Reflex, (bool, String)> {
        let matcher = Glob::new(&pattern)
            .map_err(|err| {
                (
                    false,
                    format!(
                        "reflex pattern {pattern:?} is not a valid glob: {}",
                        err.kind()
                    ),
                )
            })?
            .compile_matcher();
        if !workflows.contains_key(&workflow) {
            let hint = did_you_mean(&workflow, workflows.keys().map(String::as_str))
                .map_or_else(String::new, |guess| format!(" (did you mean \"{guess}\"?)"));
            return Err((true, format!("reflex {pattern:?} names workflow {workflow:?}, which is not defined{hint}; define it as [workflow.{workflow}]")));
        }
        if !params.is_object() {
            return Err((
                false,
                format!("reflex {pattern:?}: `params` must be a table"),
            ));
        }
        Ok(Reflex {
            pattern,
            workflow,
            params,
            max_runs_per_minute,
            origin,
            matcher,
        })
    }
}
