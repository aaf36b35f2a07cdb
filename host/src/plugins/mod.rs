//! Plugin packages: finding them ([`Catalog::scan`]), loading and checking
//! them ([`load`]), and calling the instances they create.
//!
//! This module and the SDK's `ffi` module are the only places that know
//! plugins live in shared objects; the rest of the host sees [`Package`]s
//! and handles with async methods.

mod catalog;
pub mod identity;
mod instance;
mod loader;
pub mod probe;

pub use catalog::Catalog;
pub use healer_plugin_sdk::ffi::PluginKind;
pub use instance::{DiagnoserHandle, MonitorHandle, RecovererHandle};
pub use loader::{load, load_opened, LoadError, Package, PluginInfo};
