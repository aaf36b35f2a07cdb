//! Safe handles to plugin instances living in a package, and the calls
//! that create them. Each call returns a future the caller may time out and
//! drop: the plugin-side work is then aborted.
//!
//! Errors are plain strings written by the plugin or the SDK (a panic reads
//! `panicked at src/lib.rs:12:5: message`); callers add which plugin and
//! target they concern.

use abi_stable::std_types::{RResult, RStr, RString, RVec};
use async_ffi::FfiFuture;
use healer_plugin_sdk::ffi::{DiagnoserBox, MonitorBox, ObservationFfi, PluginKind, RecovererBox};
use healer_plugin_sdk::{Finding, Observation, Outcome, Recovery};
use serde_json::Value;

use super::loader::Package;

impl Package {
    /// Whether `config` is a valid config for the named plugin, without
    /// creating anything.
    pub fn check_config(&self, kind: PluginKind, name: &str, config: &Value) -> Result<(), String> {
        let json = config.to_string();
        (self.module.check_config())(kind, RStr::from(name), RStr::from(json.as_str()))
            .into_result()
            .map_err(RString::into_string)
    }

    /// Creates a monitor instance from its config.
    pub async fn new_monitor(&self, name: &str, config: &Value) -> Result<MonitorHandle, String> {
        create(self.module.new_monitor(), name, config)
            .await
            .map(MonitorHandle)
    }

    /// Creates a diagnoser instance from its config.
    pub async fn new_diagnoser(
        &self,
        name: &str,
        config: &Value,
    ) -> Result<DiagnoserHandle, String> {
        create(self.module.new_diagnoser(), name, config)
            .await
            .map(DiagnoserHandle)
    }

    /// Creates a recoverer instance from its config.
    pub async fn new_recoverer(
        &self,
        name: &str,
        config: &Value,
    ) -> Result<RecovererHandle, String> {
        create(self.module.new_recoverer(), name, config)
            .await
            .map(RecovererHandle)
    }
}

/// A package's constructor entry point for one kind of plugin.
type Constructor<T> = extern "C" fn(RStr<'_>, RStr<'_>) -> FfiFuture<RResult<T, RString>>;

async fn create<T>(constructor: Constructor<T>, name: &str, config: &Value) -> Result<T, String> {
    let json = config.to_string();
    let created = constructor(RStr::from(name), RStr::from(json.as_str())).await;
    created.into_result().map_err(RString::into_string)
}

/// A monitor instance. Dropping it drops the plugin's instance.
pub struct MonitorHandle(MonitorBox);

impl MonitorHandle {
    /// Runs one check.
    pub async fn check(&self) -> Result<Observation, String> {
        match self.0.check().await.into_result() {
            Ok(seen) => Ok(Observation::from(seen)),
            Err(err) => Err(err.into_string()),
        }
    }

    /// The next observation the monitor pushes; `None` once it never will.
    pub async fn next_push(&self) -> Option<Observation> {
        self.0
            .next_push()
            .await
            .into_option()
            .map(Observation::from)
    }
}

/// A diagnoser instance.
pub struct DiagnoserHandle(DiagnoserBox);

impl DiagnoserHandle {
    /// Diagnoses `latest` given the observations before it, oldest first.
    pub async fn diagnose(
        &self,
        latest: &Observation,
        history: &[Observation],
    ) -> Result<Vec<Finding>, String> {
        let history: RVec<ObservationFfi> = history.iter().map(ObservationFfi::from).collect();
        match self
            .0
            .diagnose(ObservationFfi::from(latest), history)
            .await
            .into_result()
        {
            Ok(findings) => Ok(findings.into_iter().map(Finding::from).collect()),
            Err(err) => Err(err.into_string()),
        }
    }
}

/// A recoverer instance.
pub struct RecovererHandle(RecovererBox);

impl RecovererHandle {
    /// Attempts a recovery.
    pub async fn recover(&self, recovery: &Recovery) -> Result<Outcome, String> {
        let json = serde_json::to_string(recovery)
            .map_err(|err| format!("cannot encode the recovery request: {err}"))?;
        match self.0.recover(RString::from(json)).await.into_result() {
            Ok(outcome) => Ok(Outcome::from(outcome)),
            Err(err) => Err(err.into_string()),
        }
    }
}
