//! Plugin packages: finding them ([`Catalog::scan`]), probing and checking
//! them, serving them from a `healer worker` process or loading them here,
//! and calling the instances they create.
//!
//! This module and the SDK's `ffi` module are the only places that know
//! plugins live in shared objects; the rest of the host sees [`Package`]s
//! and handles with async methods, wherever the package runs.

mod assignment;
pub mod bounds;
mod catalog;
pub mod children;
pub mod declared;
pub mod identity;
mod instance;
mod loader;
#[cfg(test)]
pub mod memory;
mod outbox;
mod output;
pub mod probe;
mod remote;
pub mod sandbox;
pub mod serve;
pub mod wire;

use serde::{Deserialize, Serialize};

pub use catalog::{Catalog, CHECKS_IN_FLIGHT};
pub use healer_plugin_sdk::ffi::PluginKind;
pub use instance::{
    Checked, DiagnoserHandle, Diagnosis, MonitorHandle, Observing, RecovererHandle, WorkerHealth,
};
pub use loader::{load, load_opened, LoadError, Package, PluginInfo};
pub use remote::WorkerLimits;

/// Where a package's plugins run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// In a `healer worker` process of its own: a crash, a hang or a leak
    /// in plugin code ends that process, never healer.
    #[default]
    Process,
    /// Loaded into healer itself: no hop per call, and no protection.
    InProcess,
}

impl Isolation {
    /// As written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Process => "process",
            Isolation::InProcess => "in-process",
        }
    }
}
