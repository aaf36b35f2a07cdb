//! Plugin packages: finding them ([`Catalog::scan`]), probing and checking
//! them, serving them from a `healer worker` process or loading them here,
//! and calling the instances they create.
//!
//! This module and the SDK's `ffi` module are the only places that know
//! plugins live in shared objects; the rest of the host sees [`Package`]s
//! and handles with async methods, wherever the package runs.
//!
//! - `package`: a package and the one way to call it (the `Backend` and
//!   `Instance` traits, the typed handles), naming no backend.
//! - `in_process` and `loader`: a package loaded into this process.
//! - [`worker`]: a package run by `healer worker` processes (the default),
//!   both sides.
//! - `catalog`: the plugins directory, scanned, probed and set up;
//!   [`declared`], [`identity`], [`bounds`], [`children`]: what it and the
//!   rest share.

pub mod bounds;
mod catalog;
pub mod children;
pub mod declared;
pub mod identity;
mod in_process;
#[allow(unsafe_code)] // reads a library's header and entry points
mod loader;
mod lock;
#[cfg(test)]
pub mod memory;
mod package;
pub mod worker;

pub use catalog::{lift_quarantine, probe_one, Catalog, Unquarantined, CHECKS_IN_FLIGHT};
pub use healer_plugin_sdk::ffi::PluginKind;
pub use loader::{load, load_opened, LoadError};
pub use package::{
    CheckResult, DiagnoserHandle, DiagnosisResult, MonitorHandle, Observed, Observing, Package,
    PluginInfo, QuietChecks, RecovererHandle, WatchNews, Watching, WhenWorkerEnds, WorkerHealth,
};
