//! A package loaded into this process ([`InProcess`], what `isolation =
//! "in-process"` and every worker use): calls go straight through the
//! ABI, and its instances ([`Local`]) are the package's own boxes. No hop
//! and no protection: author code runs in this very process, so it is
//! kept off the runtime's threads wherever it may block.

use abi_stable::std_types::{RResult, RStr, RString, RVec};
use async_ffi::FfiFuture;
use healer_plugin_sdk::ffi::{
    Declared, DeclaredFn, DiagnoserBox, FindingFfi, HistoryNeeded, MonitorBox, ObservationFfi,
    PackageRef, PluginKind, RecovererBox,
};
use healer_plugin_sdk::{Finding, Observation, Outcome, Recovery};
use tokio::runtime::RuntimeFlavor;

use super::bounds::{self, Findings};
use super::package::{Backend, Instance, Pending};

/// A package loaded in this process: calls go straight through the ABI.
#[derive(Clone, Copy)]
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

impl InProcess {
    /// Creates an instance of the named plugin from its config, here: what
    /// [`Backend::create`] makes, as itself (a worker serves it as such).
    pub async fn create_here(
        &self,
        kind: PluginKind,
        name: &str,
        config: &str,
    ) -> Result<Local, String> {
        let module = self.module;
        Ok(match kind {
            PluginKind::Monitor => {
                Local::Monitor(create(module.new_monitor(), name, config).await?)
            }
            PluginKind::Diagnoser => {
                let diagnoser = create(module.new_diagnoser(), name, config).await?;
                let needed = match self.history_needed {
                    Some(needed) => ask_history_needed(needed, name, config).await,
                    None => usize::MAX,
                };
                Local::Diagnoser(diagnoser, needed)
            }
            PluginKind::Recoverer => {
                Local::Recoverer(create(module.new_recoverer(), name, config).await?)
            }
        })
    }
}

impl Backend for InProcess {
    fn check_config<'a>(
        &'a self,
        kind: PluginKind,
        name: &'a str,
        config: &'a str,
    ) -> Pending<'a, Result<Declared, String>> {
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
    ) -> Pending<'a, Result<Box<dyn Instance>, String>> {
        Box::pin(async move {
            let instance = self.create_here(kind, name, config).await?;
            Ok(Box::new(instance) as Box<dyn Instance>)
        })
    }

    fn heartbeat(&self) -> Pending<'_, Result<(), String>> {
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
    /// How many observations before the latest a diagnoser reads
    /// (`usize::MAX`: all the target keeps; `None`: not a diagnoser).
    fn history_needed(&self) -> Option<usize> {
        match self {
            Local::Diagnoser(_, needed) => Some(*needed),
            _ => None,
        }
    }

    fn check(&self) -> Pending<'_, Result<Observation, String>> {
        Box::pin(async move {
            let Local::Monitor(monitor) = self else {
                return Err(not_a("monitor"));
            };
            match monitor.check().await.into_result() {
                Ok(mut seen) => {
                    let details = bounds::check_details(&seen.details)?;
                    seen.details = RString::new();
                    Ok(Observation {
                        details,
                        ..Observation::from(seen)
                    })
                }
                Err(err) => Err(err.into_string()),
            }
        })
    }

    fn next_push(&self) -> Pending<'_, Option<Observation>> {
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
    ) -> Pending<'a, Result<Findings, String>> {
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

    fn recover<'a>(&'a self, recovery: &'a Recovery) -> Pending<'a, Result<Outcome, String>> {
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
