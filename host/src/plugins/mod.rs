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
mod outbox;
mod output;
pub mod probe;
mod remote;
pub mod sandbox;
pub mod serve;
pub mod wire;

pub use crate::config::{Isolation, WorkerLimits};
pub use catalog::{Catalog, CHECKS_IN_FLIGHT};
pub use healer_plugin_sdk::ffi::PluginKind;
pub use instance::{
    Checked, DiagnoserHandle, Diagnosis, MonitorHandle, Observing, RecovererHandle, WorkerHealth,
};
pub use loader::{load, load_opened, LoadError, Package, PluginInfo};
