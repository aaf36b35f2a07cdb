//! The stable ABI between the host and a plugin package: the root module
//! every `.so` exports, the trait objects for plugin instances, and the
//! `#[repr(C)]` mirrors of the author-facing types with their conversions.
//!
//! Plugin authors never use this module; the host uses it through its
//! loader. Everything here is `abi_stable` types, so the layout is checked
//! when a package is loaded. The root module is a *prefix type*: minor SDK
//! versions may append fields after `new_recoverer`. abi_stable's check
//! then lets an older host load a newer package (the host never reaches
//! the fields it does not know), but refuses a package with fewer fields
//! than the host expects ("too many fields", seen with an SDK 1.0 package
//! in an SDK 1.1 host): a package built before a minor that grew the ABI
//! must be rebuilt. So minor versions append nothing there; what they add
//! is an optional entry point of its own (`HISTORY_NEEDED_SYMBOL`,
//! `DECLARED_SYMBOL`), which a host does without when a package lacks it.
//!
//! Shapes that are open-ended (details, recovery requests) cross as JSON
//! strings; fixed shapes cross as `RString`/`RVec` structs.

// abi_stable 0.11's `#[sabi_trait]` emits its impls inside a `const _` block,
// which rustc now flags; the impls are correct and the lint is about style.
#![allow(non_local_definitions)]

use abi_stable::library::RootModule;
use abi_stable::sabi_trait;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RBox, ROption, RResult, RStr, RString, RVec};
use abi_stable::{declare_root_module_statics, StableAbi};
use async_ffi::FfiFuture;
use serde_json::Value;

use crate::finding::{Finding, Outcome};
use crate::observation::{Metric, Observation, Status};

/// The version of this SDK crate, e.g. `1.0.0`.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The ABI version a package declares: the SDK's major version, as
/// `<major>.0.0`. Declaring only the major keeps abi_stable's own version
/// check from refusing older packages of the same major (it wants the
/// library's minor to be at least the host's), which prefix types make safe.
pub const ABI_VERSION: &str = concat!(env!("CARGO_PKG_VERSION_MAJOR"), ".0.0");

/// The three kinds of plugin.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PluginKind {
    /// Checks a target, on a schedule and by push.
    Monitor,
    /// Turns observations into findings.
    Diagnoser,
    /// Fixes findings.
    Recoverer,
}

impl PluginKind {
    /// Lower-case name as used in configs and listings.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Monitor => "monitor",
            PluginKind::Diagnoser => "diagnoser",
            PluginKind::Recoverer => "recoverer",
        }
    }
}

impl std::fmt::Display for PluginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who built a package and against which SDK.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct PackageAbout {
    /// The package's crate name.
    pub name: RString,
    /// The package's crate version.
    pub version: RString,
    /// The full SDK version it was built against.
    pub sdk_version: RString,
}

/// One plugin a package exports.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct PluginAbout {
    /// Monitor, diagnoser or recoverer.
    pub kind: PluginKind,
    /// The name configs use.
    pub name: RString,
    /// One line.
    pub description: RString,
    /// Commented TOML listing every option.
    pub sample_config: RString,
}

/// [`Metric`] across the boundary.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct MetricFfi {
    /// Metric name.
    pub name: RString,
    /// Measured value.
    pub value: f64,
    /// Unit, empty for none.
    pub unit: RString,
}

/// [`Observation`] across the boundary.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct ObservationFfi {
    /// Overall health.
    pub status: Status,
    /// One line.
    pub summary: RString,
    /// Measurements.
    pub metrics: RVec<MetricFfi>,
    /// Details as JSON; empty for `null`.
    pub details: RString,
}

/// [`Finding`] across the boundary.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct FindingFfi {
    /// Dotted problem name.
    pub kind: RString,
    /// Severity.
    pub severity: Status,
    /// One line.
    pub summary: RString,
    /// Details as JSON; empty for `null`.
    pub details: RString,
}

/// [`Outcome`] across the boundary.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct OutcomeFfi {
    /// What was done.
    pub summary: RString,
    /// Details as JSON; empty for `null`.
    pub details: RString,
}

/// A monitor instance living in a package.
#[sabi_trait]
pub trait MonitorFfi: Send + Sync + 'static {
    /// Runs one check.
    fn check(&self) -> FfiFuture<RResult<ObservationFfi, RString>>;

    /// Waits for the next pushed observation; `RNone` once the monitor will
    /// push no more (or never pushes).
    #[sabi(last_prefix_field)]
    fn next_push(&self) -> FfiFuture<ROption<ObservationFfi>>;
}

/// A diagnoser instance living in a package.
#[sabi_trait]
pub trait DiagnoserFfi: Send + Sync + 'static {
    /// Diagnoses `latest` given the `history` before it (oldest first).
    #[sabi(last_prefix_field)]
    fn diagnose(
        &self,
        latest: ObservationFfi,
        history: RVec<ObservationFfi>,
    ) -> FfiFuture<RResult<RVec<FindingFfi>, RString>>;
}

/// A recoverer instance living in a package.
#[sabi_trait]
pub trait RecovererFfi: Send + Sync + 'static {
    /// Attempts a recovery; the request is a JSON [`Recovery`](crate::Recovery).
    #[sabi(last_prefix_field)]
    fn recover(&self, recovery_json: RString) -> FfiFuture<RResult<OutcomeFfi, RString>>;
}

/// An owned monitor instance from a package.
pub type MonitorBox = MonitorFfi_TO<RBox<()>>;
/// An owned diagnoser instance from a package.
pub type DiagnoserBox = DiagnoserFfi_TO<RBox<()>>;
/// An owned recoverer instance from a package.
pub type RecovererBox = RecovererFfi_TO<RBox<()>>;

/// The root module every plugin package exports (through `export_plugins!`).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PackageRef)))]
pub struct Package {
    /// The package's name and versions.
    pub about: extern "C" fn() -> PackageAbout,
    /// Every plugin the package exports.
    pub plugins: extern "C" fn() -> RVec<PluginAbout>,
    /// Validates a plugin config (JSON) without creating anything.
    pub check_config: extern "C" fn(
        kind: PluginKind,
        name: RStr<'_>,
        config_json: RStr<'_>,
    ) -> RResult<(), RString>,
    /// Creates a monitor from its config (JSON).
    pub new_monitor: extern "C" fn(
        name: RStr<'_>,
        config_json: RStr<'_>,
    ) -> FfiFuture<RResult<MonitorBox, RString>>,
    /// Creates a diagnoser from its config (JSON).
    pub new_diagnoser: extern "C" fn(
        name: RStr<'_>,
        config_json: RStr<'_>,
    ) -> FfiFuture<RResult<DiagnoserBox, RString>>,
    /// Creates a recoverer from its config (JSON).
    #[sabi(last_prefix_field)]
    pub new_recoverer: extern "C" fn(
        name: RStr<'_>,
        config_json: RStr<'_>,
    ) -> FfiFuture<RResult<RecovererBox, RString>>,
    /// Runs nothing on the package's own runtime and answers: a plugin
    /// worker asks it every second, so a task that spins and holds the
    /// runtime's thread is noticed. Since SDK 1.1 (a host of 1.1 or later
    /// refuses packages built before).
    pub heartbeat: extern "C" fn() -> FfiFuture<RResult<(), RString>>,
}

/// The name of the package's optional entry point telling how much
/// history a diagnoser reads ([`Diagnoser::history_needed`](crate::Diagnoser::history_needed)). It lives outside the
/// root module on purpose: abi_stable refuses a package whose root module
/// lacks a field the host knows, so a field appended there would make
/// every older package unloadable; a host simply finds no such symbol in
/// a package built before SDK 1.2, and keeps the target's whole history.
pub const HISTORY_NEEDED_SYMBOL: &[u8] = b"healer_plugin_history_needed_v1\0";

/// The signature behind [`HISTORY_NEEDED_SYMBOL`]: a diagnoser's name and
/// config (JSON); `u64::MAX` for all the target keeps, or when it cannot
/// tell (no such diagnoser, a bad config, a panic).
pub type HistoryNeeded = extern "C" fn(name: RStr<'_>, config_json: RStr<'_>) -> u64;

/// The name of the package's optional entry point telling what a plugin
/// declares about a config ([`Declared`]): outside the root module for
/// the reason [`HISTORY_NEEDED_SYMBOL`] is. A package built before SDK
/// 1.3 lacks it, and declares nothing.
pub const DECLARED_SYMBOL: &[u8] = b"healer_plugin_declared_v1\0";

/// The signature behind [`DECLARED_SYMBOL`]: a plugin's kind, name and
/// config (JSON); [`Declared`] as JSON, or empty when it cannot tell (no
/// such plugin, a config it cannot read, a panic).
pub type DeclaredFn =
    extern "C" fn(kind: PluginKind, name: RStr<'_>, config_json: RStr<'_>) -> RString;

/// What a plugin declares about one config, for healer to check a target
/// against before anything runs. It crosses as JSON, so a later SDK may
/// add a declaration without a new entry point: a host ignores what it
/// does not know, and takes what a package does not say as undeclared.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Declared {
    /// A diagnoser's finding kinds ([`Diagnoser::kinds`](crate::Diagnoser::kinds)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kinds: Option<Vec<String>>,
    /// A monitor's own deadline, in milliseconds
    /// ([`Monitor::own_timeout`](crate::Monitor::own_timeout)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub own_timeout_ms: Option<u64>,
}

impl Declared {
    /// Reads what [`DeclaredFn`] answered: empty, or JSON that is not a
    /// declaration, declares nothing.
    pub fn from_json(json: &str) -> Declared {
        serde_json::from_str(json).unwrap_or_default()
    }

    /// A monitor's own deadline.
    pub fn own_timeout(&self) -> Option<std::time::Duration> {
        self.own_timeout_ms.map(std::time::Duration::from_millis)
    }
}

impl RootModule for PackageRef {
    declare_root_module_statics! {PackageRef}
    const BASE_NAME: &'static str = "healer_plugin_package";
    const NAME: &'static str = "healer plugin package";
    const VERSION_STRINGS: VersionStrings = VersionStrings::new(ABI_VERSION);
}

fn details_to_json(details: &Value) -> RString {
    if details.is_null() {
        RString::new()
    } else {
        RString::from(details.to_string())
    }
}

fn details_from_json(json: &str) -> Value {
    if json.is_empty() {
        return Value::Null;
    }
    // A package that sends malformed JSON still gets its text through.
    serde_json::from_str(json).unwrap_or_else(|_| Value::String(json.to_owned()))
}

impl From<Observation> for ObservationFfi {
    fn from(seen: Observation) -> Self {
        ObservationFfi {
            status: seen.status,
            summary: RString::from(seen.summary),
            metrics: seen
                .metrics
                .into_iter()
                .map(|m| MetricFfi {
                    name: RString::from(m.name),
                    value: m.value,
                    unit: RString::from(m.unit),
                })
                .collect(),
            details: details_to_json(&seen.details),
        }
    }
}

impl From<&Observation> for ObservationFfi {
    fn from(seen: &Observation) -> Self {
        ObservationFfi {
            status: seen.status,
            summary: RString::from(seen.summary.as_str()),
            metrics: seen
                .metrics
                .iter()
                .map(|m| MetricFfi {
                    name: RString::from(m.name.as_str()),
                    value: m.value,
                    unit: RString::from(m.unit.as_str()),
                })
                .collect(),
            details: details_to_json(&seen.details),
        }
    }
}

impl From<ObservationFfi> for Observation {
    fn from(seen: ObservationFfi) -> Self {
        Observation {
            status: seen.status,
            summary: seen.summary.into_string(),
            metrics: seen
                .metrics
                .into_iter()
                .map(|m| Metric {
                    name: m.name.into_string(),
                    value: m.value,
                    unit: m.unit.into_string(),
                })
                .collect(),
            details: details_from_json(&seen.details),
        }
    }
}

impl From<Finding> for FindingFfi {
    fn from(found: Finding) -> Self {
        FindingFfi {
            kind: RString::from(found.kind),
            severity: found.severity,
            summary: RString::from(found.summary),
            details: details_to_json(&found.details),
        }
    }
}

impl From<FindingFfi> for Finding {
    fn from(found: FindingFfi) -> Self {
        Finding {
            kind: found.kind.into_string(),
            severity: found.severity,
            summary: found.summary.into_string(),
            details: details_from_json(&found.details),
        }
    }
}

impl From<Outcome> for OutcomeFfi {
    fn from(outcome: Outcome) -> Self {
        OutcomeFfi {
            summary: RString::from(outcome.summary),
            details: details_to_json(&outcome.details),
        }
    }
}

impl From<OutcomeFfi> for Outcome {
    fn from(outcome: OutcomeFfi) -> Self {
        Outcome {
            summary: outcome.summary.into_string(),
            details: details_from_json(&outcome.details),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_observation_survives_the_round_trip() {
        let seen = Observation::warning("slow")
            .metric("latency", 812.5, "ms")
            .metric("status_code", 200.0, "")
            .detail("url", "http://127.0.0.1/");
        assert_eq!(Observation::from(ObservationFfi::from(&seen)), seen);
        assert_eq!(Observation::from(ObservationFfi::from(seen.clone())), seen);
    }

    #[test]
    fn a_finding_and_an_outcome_survive_the_round_trip() {
        let found = Finding::critical("http.status_5xx", "answered 503").detail("code", 503);
        assert_eq!(Finding::from(FindingFfi::from(found.clone())), found);
        let outcome = Outcome::done("restarted").detail("pid", 42);
        assert_eq!(Outcome::from(OutcomeFfi::from(outcome.clone())), outcome);
    }

    #[test]
    fn a_declaration_reads_back_and_what_a_host_does_not_know_is_ignored() {
        let declared = Declared {
            kinds: Some(vec!["disk.filling".to_owned()]),
            own_timeout_ms: Some(5000),
        };
        let json = serde_json::to_string(&declared).unwrap();
        assert_eq!(Declared::from_json(&json), declared);
        assert_eq!(
            Declared::from_json(r#"{"kinds":["a.b"],"from_a_later_sdk":1}"#).kinds,
            Some(vec!["a.b".to_owned()])
        );
        assert_eq!(Declared::from_json(""), Declared::default());
        assert_eq!(Declared::from_json("not json"), Declared::default());
        assert_eq!(
            declared.own_timeout(),
            Some(std::time::Duration::from_secs(5))
        );
    }

    #[test]
    fn abi_version_is_the_major_only() {
        let major = SDK_VERSION.split('.').next().unwrap();
        assert_eq!(ABI_VERSION, format!("{major}.0.0"));
    }
}
