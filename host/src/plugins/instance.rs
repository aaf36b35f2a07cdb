//! The one way healer calls plugins: a package's [`Backend`] creates
//! [`Instance`]s, and the typed handles the engine holds wrap them. Two
//! backends implement it: [`InProcess`] (the package is loaded in this
//! process; a trusted, measured opt-in) and
//! [`Remote`](super::remote::Remote) (the package is served by a `healer
//! worker` process; the default). The engine cannot tell them apart.
//!
//! Every call returns a future the caller may time out and drop: the
//! plugin-side work is then aborted. Errors are plain strings written by
//! the plugin, the SDK or the worker's supervisor (a panic reads `panicked
//! at src/lib.rs:12:5: message`); callers add which plugin and target they
//! concern.
//!
//! The handles are where every answer, from either backend, is held to
//! the plugin limits ([`bounds`]) before the engine sees it.

use std::future::Future;
use std::pin::Pin;

use abi_stable::std_types::{RResult, RStr, RString, RVec};
use async_ffi::FfiFuture;
use healer_plugin_sdk::ffi::{
    Declared, DeclaredFn, DiagnoserBox, FindingFfi, HistoryNeeded, MonitorBox, ObservationFfi,
    PackageRef, PluginKind, RecovererBox,
};
use healer_plugin_sdk::{Finding, Observation, Outcome, Recovery};
use serde_json::Value;
use tokio::runtime::RuntimeFlavor;

use super::bounds::{self, Findings};
use super::loader::Package;
use super::remote::RemoteInstance;
use crate::events::Events;

/// A plugin call under way.
pub type Call<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a package's plugins run.
pub trait Backend: Send + Sync {
    /// Whether `config` (JSON text) is valid for the named plugin, without
    /// keeping anything; when it is, what the plugin declares about it.
    fn check_config<'a>(
        &'a self,
        kind: PluginKind,
        name: &'a str,
        config: &'a str,
    ) -> Call<'a, Result<Declared, String>>;

    /// Creates an instance of the named plugin from its config.
    fn create<'a>(
        &'a self,
        kind: PluginKind,
        name: &'a str,
        config: &'a str,
    ) -> Call<'a, Result<Box<dyn Instance>, String>>;

    /// Answers once the package's own runtime has run a task.
    fn heartbeat(&self) -> Call<'_, Result<(), String>>;

    /// Where the backend reports what happens to it (worker crashes).
    fn report_to(&self, _events: &Events) {}

    /// How its worker stands; `None` in process (nothing to supervise).
    fn health(&self) -> Option<WorkerHealth> {
        None
    }
}

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
}

/// One plugin instance. Only the calls of its kind are ever made.
pub trait Instance: Send + Sync {
    /// A monitor's check.
    fn check(&self) -> Call<'_, Result<Observation, String>>;
    /// A monitor's next pushed observation; `None` once it never will.
    fn next_push(&self) -> Call<'_, Option<Observation>>;
    /// A diagnoser's findings on `latest` after `history` (oldest first).
    fn diagnose<'a>(
        &'a self,
        latest: &'a Observation,
        history: &'a [Observation],
    ) -> Call<'a, Result<Findings, String>>;
    /// A recoverer's attempt.
    fn recover<'a>(&'a self, recovery: &'a Recovery) -> Call<'a, Result<Outcome, String>>;
    /// The instance itself when it lives in this process.
    fn local(&self) -> Option<&Local> {
        None
    }
    /// The instance itself when a worker serves it.
    fn remote(&self) -> Option<&RemoteInstance> {
        None
    }
}

/// How a check went when its diagnosis ran where it ran.
pub enum Checked {
    Seen(Observation),
    Failed(String),
    TimedOut,
}

/// How one diagnoser's diagnosis went, in the worker.
pub enum Diagnosis {
    Found(Findings),
    Failed(String),
    TimedOut,
}

/// A check and its diagnoses; no diagnoses when the check failed or said
/// UNKNOWN.
pub struct Observed {
    pub checked: Checked,
    pub diagnoses: Vec<Diagnosis>,
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
}

impl Package {
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

    /// The next observation the monitor pushes; `None` once it never will.
    pub async fn next_push(&self) -> Option<Observation> {
        self.0.next_push().await.map(bounds::observation)
    }

    /// Whether its checks can be diagnosed by `diagnosers` where they run:
    /// all are served by the same worker.
    pub fn diagnosed_in_place_by(&self, diagnosers: &[&DiagnoserHandle]) -> bool {
        let Some(monitor) = self.0.remote() else {
            return false;
        };
        !diagnosers.is_empty()
            && diagnosers.iter().all(|diagnoser| {
                diagnoser
                    .0
                    .remote()
                    .is_some_and(|remote| remote.same_worker_as(monitor))
            })
    }

    /// A check (or a pushed observation) diagnosed where it ran, by
    /// `diagnosers`; see [`diagnosed_in_place_by`](Self::diagnosed_in_place_by).
    /// An error is healer's own machinery failing (the worker crashed).
    pub async fn observe(
        &self,
        diagnosers: &[&DiagnoserHandle],
        observing: Observing<'_>,
    ) -> Result<Observed, String> {
        let monitor = self
            .0
            .remote()
            .ok_or_else(|| "this monitor is not served by a worker".to_owned())?;
        let diagnosers: Vec<&RemoteInstance> =
            diagnosers.iter().filter_map(|d| d.0.remote()).collect();
        let observed = monitor.observe(&diagnosers, observing).await?;
        Ok(Observed {
            checked: match observed.checked {
                Checked::Seen(seen) => Checked::Seen(bounds::observation(seen)),
                Checked::Failed(error) => Checked::Failed(bounds::error(error)),
                Checked::TimedOut => Checked::TimedOut,
            },
            diagnoses: observed
                .diagnoses
                .into_iter()
                .map(|diagnosis| match diagnosis {
                    Diagnosis::Found(found) => match bounds::findings(found.kept, found.dropped) {
                        Ok(found) => Diagnosis::Found(found),
                        Err(error) => Diagnosis::Failed(error),
                    },
                    Diagnosis::Failed(error) => Diagnosis::Failed(bounds::error(error)),
                    Diagnosis::TimedOut => Diagnosis::TimedOut,
                })
                .collect(),
        })
    }
}

/// A diagnoser instance.
pub struct DiagnoserHandle(Box<dyn Instance>);

impl DiagnoserHandle {
    /// How many observations before the latest it reads, when it lives in
    /// this process; `usize::MAX` (all the target keeps) when that is not
    /// known here (its worker knows when the monitor is there too).
    pub fn history_needed(&self) -> usize {
        history_needed_of(self.0.as_ref())
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

/// How many observations before the latest the diagnoser `instance`
/// reads, when it lives in this process; `usize::MAX` (all the target
/// keeps) otherwise.
pub fn history_needed_of(instance: &dyn Instance) -> usize {
    instance
        .local()
        .and_then(Local::history_needed)
        .unwrap_or(usize::MAX)
}

/// A package loaded in this process: calls go straight through the ABI.
pub struct InProcess {
    pub(super) module: PackageRef,
    /// How much history a diagnoser reads; `None` in packages built
    /// before SDK 1.2 (see `ffi::HISTORY_NEEDED_SYMBOL`).
    pub(super) history_needed: Option<HistoryNeeded>,
    /// What a plugin declares about a config; `None` in packages built
    /// before SDK 1.3 (see `ffi::DECLARED_SYMBOL`).
    pub(super) declared: Option<DeclaredFn>,
}

/// How long a package may take to say how much history a diagnoser reads
/// (it parses the config and calls a pure function of it).
const HISTORY_NEEDED_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

/// Asks the package how much history the diagnoser `name` reads with
/// `config`, on the blocking pool: author code never runs on a runtime
/// thread, where a hang would stop every check of the worker. All the
/// target keeps (`usize::MAX`) when it cannot tell in time.
async fn ask_history_needed(needed: HistoryNeeded, name: &str, config: &str) -> usize {
    let (name, config) = (name.to_owned(), config.to_owned());
    let asked =
        tokio::task::spawn_blocking(move || needed(RStr::from_str(&name), RStr::from_str(&config)));
    match tokio::time::timeout(HISTORY_NEEDED_DEADLINE, asked).await {
        Ok(Ok(needed)) => usize::try_from(needed).unwrap_or(usize::MAX),
        Ok(Err(_)) | Err(_) => usize::MAX,
    }
}

/// Asks the package what the plugin `name` declares about `config`, as
/// [`ask_history_needed`] asks (the same deadline); nothing when it cannot
/// tell in time.
async fn ask_declared(
    declared: DeclaredFn,
    kind: PluginKind,
    name: &str,
    config: &str,
) -> Declared {
    let (name, config) = (name.to_owned(), config.to_owned());
    let asked = tokio::task::spawn_blocking(move || {
        declared(kind, RStr::from_str(&name), RStr::from_str(&config))
    });
    match tokio::time::timeout(HISTORY_NEEDED_DEADLINE, asked).await {
        Ok(Ok(json)) => Declared::from_json(&json),
        Ok(Err(_)) | Err(_) => Declared::default(),
    }
}

/// A package's constructor entry point for one kind of plugin.
type Constructor<T> = extern "C" fn(RStr<'_>, RStr<'_>) -> FfiFuture<RResult<T, RString>>;

async fn create<T>(constructor: Constructor<T>, name: &str, config: &str) -> Result<T, String> {
    let created = constructor(RStr::from(name), RStr::from(config)).await;
    created.into_result().map_err(RString::into_string)
}

impl Backend for InProcess {
    fn check_config<'a>(
        &'a self,
        kind: PluginKind,
        name: &'a str,
        config: &'a str,
    ) -> Call<'a, Result<Declared, String>> {
        // The SDK waits up to 10 s for the plugin's constructor: never on a
        // runtime thread.
        let (module, declared) = (self.module, self.declared);
        let (owned_name, owned_config) = (name.to_owned(), config.to_owned());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                (module.check_config())(
                    kind,
                    RStr::from(owned_name.as_str()),
                    RStr::from(owned_config.as_str()),
                )
                .into_result()
                .map_err(RString::into_string)
            })
            .await
            .unwrap_or_else(|err| Err(format!("checking the config failed: {err}")))?;
            Ok(match declared {
                Some(declared) => ask_declared(declared, kind, name, config).await,
                None => Declared::default(),
            })
        })
    }

    fn create<'a>(
        &'a self,
        kind: PluginKind,
        name: &'a str,
        config: &'a str,
    ) -> Call<'a, Result<Box<dyn Instance>, String>> {
        let module = self.module;
        let history_needed = self.history_needed;
        Box::pin(async move {
            let instance = match kind {
                PluginKind::Monitor => {
                    Local::Monitor(create(module.new_monitor(), name, config).await?)
                }
                PluginKind::Diagnoser => {
                    let diagnoser = create(module.new_diagnoser(), name, config).await?;
                    let needed = match history_needed {
                        Some(needed) => ask_history_needed(needed, name, config).await,
                        None => usize::MAX,
                    };
                    Local::Diagnoser(diagnoser, needed)
                }
                PluginKind::Recoverer => {
                    Local::Recoverer(create(module.new_recoverer(), name, config).await?)
                }
            };
            Ok(Box::new(instance) as Box<dyn Instance>)
        })
    }

    fn heartbeat(&self) -> Call<'_, Result<(), String>> {
        match self.module.heartbeat() {
            // Built before SDK 1.1: nothing to ask.
            None => Box::pin(std::future::ready(Ok(()))),
            Some(heartbeat) => Box::pin(async move {
                heartbeat()
                    .await
                    .into_result()
                    .map_err(RString::into_string)
            }),
        }
    }
}

/// An instance living in this process.
pub enum Local {
    Monitor(MonitorBox),
    /// With how many observations before the latest it reads.
    Diagnoser(DiagnoserBox, usize),
    Recoverer(RecovererBox),
}

fn not_a(kind: &str) -> String {
    format!("this plugin is not a {kind}")
}

impl Local {
    /// A check, as the package answered it (details still JSON text).
    pub async fn check_raw(&self) -> Result<ObservationFfi, String> {
        let Local::Monitor(monitor) = self else {
            return Err(not_a("monitor"));
        };
        monitor
            .check()
            .await
            .into_result()
            .map_err(RString::into_string)
    }

    /// How many observations before the latest a diagnoser reads
    /// (`usize::MAX`: all the target keeps; `None`: not a diagnoser).
    pub fn history_needed(&self) -> Option<usize> {
        match self {
            Local::Diagnoser(_, needed) => Some(*needed),
            _ => None,
        }
    }

    /// A diagnosis of observations as the package gave them.
    pub async fn diagnose_raw(
        &self,
        latest: ObservationFfi,
        history: RVec<ObservationFfi>,
    ) -> Result<RVec<FindingFfi>, String> {
        let Local::Diagnoser(diagnoser, _) = self else {
            return Err(not_a("diagnoser"));
        };
        diagnoser
            .diagnose(latest, history)
            .await
            .into_result()
            .map_err(RString::into_string)
    }
}

impl Instance for Local {
    fn local(&self) -> Option<&Local> {
        Some(self)
    }

    fn check(&self) -> Call<'_, Result<Observation, String>> {
        Box::pin(async move {
            let Local::Monitor(monitor) = self else {
                return Err(not_a("monitor"));
            };
            match monitor.check().await.into_result() {
                Ok(seen) => {
                    bounds::check_details(&seen.details)?;
                    Ok(Observation::from(seen))
                }
                Err(err) => Err(err.into_string()),
            }
        })
    }

    fn next_push(&self) -> Call<'_, Option<Observation>> {
        Box::pin(async move {
            let Local::Monitor(monitor) = self else {
                return None;
            };
            monitor.next_push().await.into_option().map(|seen| {
                match bounds::pushed_details(&seen.details) {
                    Ok(()) => Observation::from(seen),
                    Err(why) => Observation::unknown(why),
                }
            })
        })
    }

    fn diagnose<'a>(
        &'a self,
        latest: &'a Observation,
        history: &'a [Observation],
    ) -> Call<'a, Result<Findings, String>> {
        Box::pin(async move {
            let Local::Diagnoser(diagnoser, needed) = self else {
                return Err(not_a("diagnoser"));
            };
            // Only what it reads is converted and handed over.
            let history = &history[history.len().saturating_sub(*needed)..];
            let history: RVec<ObservationFfi> = history.iter().map(ObservationFfi::from).collect();
            let diagnose = || diagnoser.diagnose(ObservationFfi::from(latest), history);
            // A diagnoser that does not block (`BLOCKS = false`) runs
            // inside this very call: on healer's multi-threaded runtime the
            // thread is handed over first, so a slow one holds up this
            // target only, never the runtime's other tasks.
            let multi_threaded = tokio::runtime::Handle::try_current()
                .is_ok_and(|handle| handle.runtime_flavor() == RuntimeFlavor::MultiThread);
            let diagnosis = if multi_threaded {
                tokio::task::block_in_place(diagnose)
            } else {
                diagnose()
            };
            match diagnosis.await.into_result() {
                // All of them: a worker serving this call sends them all
                // and healer counts what it leaves out as it decodes.
                Ok(findings) => {
                    let mut budget = bounds::DetailsBudget::default();
                    Ok(findings
                        .into_iter()
                        .map(|mut found| {
                            found.details = budget.take(&found.details).as_ref().into();
                            Finding::from(found)
                        })
                        .collect())
                }
                Err(err) => Err(err.into_string()),
            }
        })
    }

    fn recover<'a>(&'a self, recovery: &'a Recovery) -> Call<'a, Result<Outcome, String>> {
        Box::pin(async move {
            let Local::Recoverer(recoverer) = self else {
                return Err(not_a("recoverer"));
            };
            let json = serde_json::to_string(recovery)
                .map_err(|err| format!("cannot encode the recovery request: {err}"))?;
            match recoverer.recover(RString::from(json)).await.into_result() {
                Ok(mut outcome) => {
                    outcome.details = bounds::details_text(&outcome.details, bounds::DETAILS_BYTES)
                        .as_ref()
                        .into();
                    Ok(Outcome::from(outcome))
                }
                Err(err) => Err(err.into_string()),
            }
        })
    }
}
