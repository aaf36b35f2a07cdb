//! A plugin package as the rest of healer sees it, and the one way healer
//! calls plugins: a [`Package`]'s [`Backend`] creates [`Instance`]s, and
//! the typed handles the engine holds ([`MonitorHandle`],
//! [`DiagnoserHandle`], [`RecovererHandle`]) wrap them. Two backends
//! implement it: the package loaded in this process (`in_process`; a
//! trusted, measured opt-in) and the package served by a `healer worker`
//! process (`worker::client`; the default). The engine cannot tell them
//! apart, and this module names neither: what only a worker can do (a
//! check diagnosed where it ran) the traits say in their own words
//! ([`WorkerId`], [`Instance::observe`]).
//!
//! Every call returns a future the caller may time out and drop: the
//! plugin-side work is then aborted. Errors are plain strings written by
//! the plugin, the SDK or the worker's supervisor (a panic reads `panicked
//! at src/lib.rs:12:5: message`); callers add which plugin and target they
//! concern.
//!
//! The handles are where every answer, from either backend, is held to
//! the plugin limits ([`bounds`]) before the engine sees it.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use healer_plugin_sdk::ffi::{Declared, PluginKind};
use healer_plugin_sdk::{Observation, Outcome, Recovery};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::bounds::{self, Findings};
use crate::config::Isolation;
use crate::events::Events;
use crate::model::PluginRecord;

/// A loaded package: its file, who built it, and what it exports.
#[derive(Clone)]
pub struct Package {
    /// The `.so` it was loaded from.
    pub file: PathBuf,
    /// The package's crate name.
    pub name: String,
    /// The package's crate version.
    pub version: String,
    /// The SDK version it was built against.
    pub sdk_version: String,
    /// Its plugins, in the order it exports them.
    pub plugins: Vec<PluginInfo>,
    /// The file's SHA-256 (lowercase hex), when loaded from a checked file.
    pub sha256: Option<String>,
    /// Where its plugins run.
    pub isolation: Isolation,
    pub(super) backend: Arc<dyn Backend>,
}

impl Package {
    /// Whether `other` is this very package (the same workers), as a
    /// reload keeps a package whose file did not change.
    pub fn same_as(&self, other: &Package) -> bool {
        Arc::ptr_eq(&self.backend, &other.backend)
    }

    /// Its file's name (`libhealer_plugin_process.so`): how events, the
    /// store and operators name it.
    pub fn file_name(&self) -> String {
        self.file.file_name().map_or_else(
            || self.file.display().to_string(),
            |name| name.to_string_lossy().into_owned(),
        )
    }
}

impl fmt::Debug for Package {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Package")
            .field("file", &self.file)
            .field("name", &self.name)
            .field("version", &self.version)
            .field("plugins", &self.plugins)
            .field("isolation", &self.isolation)
            .finish_non_exhaustive()
    }
}

/// One plugin of a package, as `healer plugins` lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PluginInfo {
    /// `monitor`, `diagnoser` or `recoverer`.
    #[serde(serialize_with = "kind_as_str", deserialize_with = "kind_from_str")]
    pub kind: PluginKind,
    /// The name configs use.
    pub name: String,
    /// One line.
    pub description: String,
    /// Commented TOML sample.
    pub sample_config: String,
}

fn kind_as_str<S: serde::Serializer>(kind: &PluginKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind.as_str())
}

fn kind_from_str<'de, D: serde::Deserializer<'de>>(d: D) -> Result<PluginKind, D::Error> {
    let name = String::deserialize(d)?;
    [
        PluginKind::Monitor,
        PluginKind::Diagnoser,
        PluginKind::Recoverer,
    ]
    .into_iter()
    .find(|kind| kind.as_str() == name)
    .ok_or_else(|| serde::de::Error::custom(format!("no plugin kind {name:?}")))
}

/// A plugin call under way.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a package's plugins run.
pub trait Backend: Send + Sync {
    /// Whether `config` (JSON text) is valid for the named plugin, without
    /// keeping anything; when it is, what the plugin declares about it.
    fn check_config<'a>(
        &'a self,
        kind: PluginKind,
        name: &'a str,
        config: &'a str,
    ) -> Pending<'a, Result<Declared, String>>;

    /// Creates an instance of the named plugin from its config.
    fn create<'a>(
        &'a self,
        kind: PluginKind,
        name: &'a str,
        config: &'a str,
    ) -> Pending<'a, Result<Box<dyn Instance>, String>>;

    /// Answers once the package's own runtime has run a task.
    fn heartbeat(&self) -> Pending<'_, Result<(), String>>;

    /// Where the backend reports what happens to it (worker crashes).
    fn report_to(&self, _events: &Events) {}

    /// Whom the backend tells, at once, that a worker serving the package
    /// ended; in process nothing ends.
    fn when_worker_ends(&self, _hook: &WhenWorkerEnds) {}

    /// How its worker stands; `None` in process (nothing to supervise).
    fn health(&self) -> Option<WorkerHealth> {
        None
    }

    /// Carries on from what was remembered of the package: its crash
    /// count, and its quarantine if it was of this very file.
    fn remember(&self, _record: &PluginRecord) {}

    /// An operator's word: the quarantine is lifted (an event says so),
    /// or refused, saying why (not quarantined; in process, never).
    fn lift_quarantine(&self) -> Result<(), String> {
        Err("it runs in healer's own process: there is no quarantine to lift".to_owned())
    }

    /// The backend that serves `target`'s instances, when the package is
    /// served by several workers; `None`: this one.
    fn for_target(&self, _target: &str) -> Option<Arc<dyn Backend>> {
        None
    }
}

/// What healer does when a worker that served a package ended (it
/// crashed, and the package may be quarantined): called with the
/// package's file name (`libhealer_plugin_process.so`) before the calls in
/// flight on that worker fail, so nothing the worker vouched for outlives
/// it. Set by the engine, which takes back the facts of that package.
pub type WhenWorkerEnds = Arc<dyn Fn(&str) + Send + Sync>;

/// How a package's worker stands, for the operator's view.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WorkerHealth {
    /// The worker's pid, while one runs.
    pub pid: Option<u32>,
    /// Workers started since healer started.
    pub started: u64,
    /// Crashes within the crash window.
    pub recent_crashes: usize,
    /// Why the last worker crashed.
    pub last_crash: Option<String>,
    /// Why the package is quarantined, while it is.
    pub quarantined: Option<String>,
    /// Crashes since healer first ran it (kept across restarts).
    #[serde(default)]
    pub crashes: u64,
    /// The pids of its other workers, when several serve it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pids: Vec<u32>,
}

/// One plugin instance. Only the calls of its kind are ever made.
pub trait Instance: Send + Sync {
    /// A monitor's check.
    fn check(&self) -> Pending<'_, Result<Observation, String>>;
    /// A monitor's check, healer holding the facts of digest `facts` from
    /// its last one: a worker sends them as `"same"` when they did not
    /// change (only changes cross the wire). In process, [`check`](Self::check).
    fn check_knowing(&self, facts: u64) -> Pending<'_, Result<Observation, String>> {
        let _ = facts;
        self.check()
    }
    /// A monitor's next pushed observation; `None` once it never will.
    fn next_push(&self) -> Pending<'_, Option<Observation>>;
    /// A diagnoser's findings on `latest` after `history` (oldest first).
    fn diagnose<'a>(
        &'a self,
        latest: &'a Observation,
        history: &'a [Observation],
    ) -> Pending<'a, Result<Findings, String>>;
    /// A recoverer's attempt.
    fn recover<'a>(&'a self, recovery: &'a Recovery) -> Pending<'a, Result<Outcome, String>>;
    /// How many observations before the latest a diagnoser reads, when
    /// this process knows (it lives here); `None` otherwise.
    fn history_needed(&self) -> Option<usize> {
        None
    }
    /// The worker that serves it; `None` when it lives in this process.
    fn worker(&self) -> Option<WorkerId> {
        None
    }
    /// Where it exists in its worker now, created there first if the
    /// worker's current process has not seen it; `None` when no worker
    /// serves it.
    fn placed(&self) -> Option<Pending<'_, Result<Placed, String>>> {
        None
    }
    /// A monitor's check (or what it pushed), diagnosed where it runs by
    /// `diagnosers` (instances of its worker: see
    /// [`MonitorHandle::diagnosed_in_place_by`]); an error when no worker
    /// serves it.
    fn observe<'a>(
        &'a self,
        _diagnosers: &'a [&'a dyn Instance],
        _observing: Observing<'a>,
    ) -> Pending<'a, Result<Observed, String>> {
        Box::pin(std::future::ready(Err(
            "this monitor is not served by a worker".to_owned(),
        )))
    }
    /// Has a monitor checked on its grid where it runs, and diagnosed
    /// there by `diagnosers` (as [`observe`](Self::observe)), until
    /// [`unwatch`](Self::unwatch)ed or its worker ends: see [`Watching`].
    /// An error when it cannot be (no worker serves it, or it failed to
    /// start).
    fn watch<'a>(
        &'a self,
        _diagnosers: &'a [&'a dyn Instance],
        _watching: Watching,
    ) -> Pending<'a, Result<(), String>> {
        Box::pin(std::future::ready(Err(
            "this monitor is not served by a worker".to_owned(),
        )))
    }
    /// Stops a [`watch`](Self::watch): healer checks it itself again.
    fn unwatch(&self) {}
    /// healer no longer holds the facts of a watched monitor: its worker's
    /// next check sends them whole.
    fn facts_forgotten(&self) {}
}

/// What a watched monitor's worker says, and where it goes ([`Instance::watch`]).
pub struct Watching {
    /// Observations the worker keeps for the diagnosers.
    pub keep: usize,
    /// The deadline of the check and of each diagnosis.
    pub within: std::time::Duration,
    /// The grid: a point every `every`, one of them at `origin`.
    pub every: std::time::Duration,
    pub origin: std::time::Instant,
    /// The digest of the facts healer holds from the monitor's last check.
    pub facts: u64,
    /// Every check is news, not only what healer must decide on (healer
    /// records every check as an event).
    pub every_check: bool,
    /// Each check healer must decide on, and the end of the watch; `false`
    /// when it was not taken (the loop is behind: the watch is then over).
    pub news: Box<dyn Fn(WatchNews) -> bool + Send + Sync>,
    /// How the checks that said nothing new went, about once a second;
    /// `false` when healer no longer holds the monitor's facts (its next
    /// check then sends them whole).
    pub quiet: Box<dyn Fn(QuietChecks) -> bool + Send + Sync>,
}

/// What a watched monitor's worker says that healer must decide on.
pub enum WatchNews {
    /// A check (status other than OK, or changed, findings, changed
    /// facts, or a failure), when it began, how late, and how long it took.
    Checked {
        observed: Observed,
        began: std::time::Instant,
        late: std::time::Duration,
        took: std::time::Duration,
    },
    /// The watch ended (its worker did): healer checks it itself.
    Ended(String),
}

/// How a watched monitor's checks that said nothing new went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuietChecks {
    /// Checks made.
    pub checks: u32,
    /// How long the latest took.
    pub took: std::time::Duration,
    /// How many began late, and the latest any began.
    pub late: u32,
    pub late_by: std::time::Duration,
    /// Points of the check's grid that passed with no check begun.
    pub missed: u32,
    /// When the latest of them ended.
    pub latest: Option<std::time::Instant>,
}

/// Which worker serves an instance: instances with the same one live in
/// the same worker process, and move together to its next one. Opaque:
/// only equality means anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerId(u64);

impl WorkerId {
    /// One never handed out before.
    pub fn fresh() -> WorkerId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        WorkerId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// Where an instance exists in its worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placed {
    /// Which of its worker's processes holds it (they are counted from 1
    /// as they start).
    pub generation: u64,
    /// Its number in that process.
    pub instance: u64,
}

/// How a check went when its diagnosis ran where it ran.
pub enum CheckResult {
    Seen(Observation),
    Failed(String),
    TimedOut,
}

/// How one diagnoser's diagnosis went, in the worker.
pub enum DiagnosisResult {
    Found(Findings),
    Failed(String),
    TimedOut,
}

/// A check and its diagnoses; no diagnoses when the check failed or said
/// UNKNOWN.
pub struct Observed {
    pub checked: CheckResult,
    pub diagnoses: Vec<DiagnosisResult>,
}

/// What an observation in the worker is asked to do.
pub struct Observing<'a> {
    /// What the monitor pushed, diagnosed instead of a check.
    pub pushed: Option<&'a Observation>,
    /// What the worker's history lacks, oldest first.
    pub missed: &'a [Observation],
    /// Observations the worker keeps for the diagnosers.
    pub keep: usize,
    /// The deadline of the check and of each diagnosis.
    pub within: std::time::Duration,
    /// The digest of the facts healer holds from the monitor's last check
    /// (0: none): see [`Instance::check_knowing`].
    pub facts: u64,
}

impl Package {
    /// The package as it serves `target`: the same, or, when several
    /// workers serve it, the one worker that serves every instance of that
    /// target (a check is then diagnosed where it ran).
    pub fn for_target(&self, target: &str) -> Package {
        match self.backend.for_target(target) {
            Some(backend) => Package {
                backend,
                ..self.clone()
            },
            None => self.clone(),
        }
    }

    /// How its worker stands; `None` when it runs in process.
    pub fn worker_health(&self) -> Option<WorkerHealth> {
        self.backend.health()
    }

    /// Whether `config` is a valid config for the named plugin, without
    /// creating anything; when it is, what the plugin declares about it
    /// (nothing, from a package built before SDK 1.3), held to the limits.
    pub async fn check_config(
        &self,
        kind: PluginKind,
        name: &str,
        config: &Value,
    ) -> Result<Declared, String> {
        self.backend
            .check_config(kind, name, &config.to_string())
            .await
            .map(bounds::declared)
    }

    /// Creates a monitor instance from its config.
    pub async fn new_monitor(&self, name: &str, config: &Value) -> Result<MonitorHandle, String> {
        self.create(PluginKind::Monitor, name, config)
            .await
            .map(MonitorHandle)
    }

    /// Creates a diagnoser instance from its config.
    pub async fn new_diagnoser(
        &self,
        name: &str,
        config: &Value,
    ) -> Result<DiagnoserHandle, String> {
        self.create(PluginKind::Diagnoser, name, config)
            .await
            .map(DiagnoserHandle)
    }

    /// Creates a recoverer instance from its config.
    pub async fn new_recoverer(
        &self,
        name: &str,
        config: &Value,
    ) -> Result<RecovererHandle, String> {
        self.create(PluginKind::Recoverer, name, config)
            .await
            .map(RecovererHandle)
    }

    async fn create(
        &self,
        kind: PluginKind,
        name: &str,
        config: &Value,
    ) -> Result<Box<dyn Instance>, String> {
        self.backend.create(kind, name, &config.to_string()).await
    }
}

/// A monitor instance. Dropping it drops the plugin's instance.
pub struct MonitorHandle(Box<dyn Instance>);

impl MonitorHandle {
    /// Runs one check.
    pub async fn check(&self) -> Result<Observation, String> {
        held(self.0.check().await.map(bounds::observation))
    }

    /// Runs one check, healer holding the facts of digest `facts` from
    /// the last one (see [`Instance::check_knowing`]).
    pub async fn check_knowing(&self, facts: u64) -> Result<Observation, String> {
        held(self.0.check_knowing(facts).await.map(bounds::observation))
    }

    /// The next observation the monitor pushes; `None` once it never will.
    pub async fn next_push(&self) -> Option<Observation> {
        self.0.next_push().await.map(bounds::observation)
    }

    /// Whether a worker serves it (it can then be [`watch`](Self::watch)ed).
    pub fn served_by_a_worker(&self) -> bool {
        self.0.worker().is_some()
    }

    /// Whether its checks can be diagnosed by `diagnosers` where they run:
    /// all are served by the same worker.
    pub fn diagnosed_in_place_by(&self, diagnosers: &[&DiagnoserHandle]) -> bool {
        let Some(worker) = self.0.worker() else {
            return false;
        };
        !diagnosers.is_empty()
            && diagnosers
                .iter()
                .all(|diagnoser| diagnoser.0.worker() == Some(worker))
    }

    /// A check (or a pushed observation) diagnosed where it ran, by
    /// `diagnosers`; see [`diagnosed_in_place_by`](Self::diagnosed_in_place_by).
    /// An error is healer's own machinery failing (the worker crashed).
    pub async fn observe(
        &self,
        diagnosers: &[&DiagnoserHandle],
        observing: Observing<'_>,
    ) -> Result<Observed, String> {
        let diagnosers: Vec<&dyn Instance> = diagnosers.iter().map(|d| d.0.as_ref()).collect();
        self.0
            .observe(&diagnosers, observing)
            .await
            .map(Observed::held)
    }

    /// Has its checks made on its grid where it runs, diagnosed there by
    /// `diagnosers` (see [`diagnosed_in_place_by`](Self::diagnosed_in_place_by)),
    /// and only what healer must decide on sent back: see [`Watching`].
    pub async fn watch(
        &self,
        diagnosers: &[&DiagnoserHandle],
        mut watching: Watching,
    ) -> Result<(), String> {
        let diagnosers: Vec<&dyn Instance> = diagnosers.iter().map(|d| d.0.as_ref()).collect();
        // What the worker says is held to the limits, as an answer is.
        let news = std::mem::replace(&mut watching.news, Box::new(|_| false));
        watching.news = Box::new(move |said| {
            news(match said {
                WatchNews::Checked {
                    observed,
                    began,
                    late,
                    took,
                } => WatchNews::Checked {
                    observed: Observed::held(observed),
                    began,
                    late,
                    took,
                },
                WatchNews::Ended(why) => WatchNews::Ended(bounds::error(why)),
            })
        });
        self.0.watch(&diagnosers, watching).await
    }

    /// Stops its [`watch`](Self::watch).
    pub fn unwatch(&self) {
        self.0.unwatch();
    }

    /// healer no longer holds the facts its worker thinks it does: the
    /// next check of its [`watch`](Self::watch) sends them whole.
    pub fn facts_forgotten(&self) {
        self.0.facts_forgotten();
    }
}

impl Observed {
    /// What a worker answered, held to the plugin limits.
    fn held(self) -> Observed {
        Observed {
            checked: match self.checked {
                CheckResult::Seen(seen) => CheckResult::Seen(bounds::observation(seen)),
                CheckResult::Failed(error) => CheckResult::Failed(bounds::error(error)),
                CheckResult::TimedOut => CheckResult::TimedOut,
            },
            diagnoses: self
                .diagnoses
                .into_iter()
                .map(|diagnosis| match diagnosis {
                    DiagnosisResult::Found(found) => {
                        match bounds::findings(found.kept, found.dropped) {
                            Ok(found) => DiagnosisResult::Found(found),
                            Err(error) => DiagnosisResult::Failed(error),
                        }
                    }
                    DiagnosisResult::Failed(error) => DiagnosisResult::Failed(bounds::error(error)),
                    DiagnosisResult::TimedOut => DiagnosisResult::TimedOut,
                })
                .collect(),
        }
    }
}

/// A diagnoser instance.
pub struct DiagnoserHandle(Box<dyn Instance>);

impl DiagnoserHandle {
    /// How many observations before the latest it reads, when it lives in
    /// this process; `usize::MAX` (all the target keeps) when that is not
    /// known here (its worker knows when the monitor is there too).
    pub fn history_needed(&self) -> usize {
        self.0.history_needed().unwrap_or(usize::MAX)
    }

    /// Diagnoses `latest` given the observations before it, oldest
    /// first. An answer with a kind that cannot name an issue is an error.
    pub async fn diagnose(
        &self,
        latest: &Observation,
        history: &[Observation],
    ) -> Result<Findings, String> {
        let found = held(self.0.diagnose(latest, history).await)?;
        bounds::findings(found.kept, found.dropped)
    }
}

/// A recoverer instance.
pub struct RecovererHandle(Box<dyn Instance>);

impl RecovererHandle {
    /// Attempts a recovery.
    pub async fn recover(&self, recovery: &Recovery) -> Result<Outcome, String> {
        held(self.0.recover(recovery).await.map(bounds::outcome))
    }
}

/// A plugin's error held to the limits.
fn held<T>(answer: Result<T, String>) -> Result<T, String> {
    answer.map_err(bounds::error)
}
