//! The SDK for healer plugins: everything a plugin author uses, and the
//! stable ABI the host loads packages through.
//!
//! A *plugin package* is a `cdylib` crate that implements any number of
//! [`Monitor`]s, [`Diagnoser`]s and [`Recoverer`]s and lists them in one
//! [`export_plugins!`] call. Authors write plain Rust; the SDK converts to
//! and from the FFI types, runs plugin code on the package's own Tokio
//! runtime, and turns panics into errors so a bad plugin cannot take the
//! host down.
//!
//! ```ignore
//! use healer_plugin_sdk::{export_plugins, Error, Monitor, Observation};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! pub struct Config { path: String }
//!
//! pub struct FileExists(Config);
//!
//! impl Monitor for FileExists {
//!     type Config = Config;
//!     const NAME: &'static str = "file-exists";
//!     const DESCRIPTION: &'static str = "CRITICAL while a file is missing";
//!     fn new(config: Config) -> Result<Self, Error> { Ok(FileExists(config)) }
//!     async fn check(&mut self) -> Result<Observation, Error> {
//!         Ok(match std::fs::metadata(&self.0.path) {
//!             Ok(_) => Observation::ok("present"),
//!             // Only "it is not there" is evidence; any other error means
//!             // the monitor could not look: UNKNOWN, which healer never
//!             // acts on.
//!             Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
//!                 Observation::critical("missing")
//!             }
//!             Err(err) => Observation::unknown(format!("cannot look: {err}")),
//!         })
//!     }
//! }
//!
//! export_plugins! { monitors: [FileExists] }
//! ```
//!
//! The SDK's major version is the ABI version: the host refuses a package
//! built against another major. See `docs/PLUGIN_AUTHORS.md`.

mod bytes;
pub mod command;
mod duration;
pub mod events;
mod export;
pub mod ffi;
mod finding;
mod observation;
mod plugin;
pub mod redact;
mod runtime;
pub mod testing;

pub use bytes::Bytes;
pub use duration::Duration;
pub use finding::{check_kind, Fence, Finding, Outcome, Recovery, KIND_BYTES};
pub use observation::{Metric, Observation, Status, FACTS_KEY, READ_FACTS_KEY};
pub use plugin::{Diagnoser, Error, Monitor, Push, Recoverer};

/// The Tokio this SDK runs plugins on, for plugins that spawn tasks or
/// blocking work without a Tokio dependency of their own.
pub use tokio;

/// What `export_plugins!` expands to; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::export::{declared, history_needed, lib_header, root_module, PackageBuilder};
    pub use crate::ffi::{PackageRef, PluginKind};
    pub use abi_stable::library::{
        __call_root_module_loader as call_root_module_loader, LibHeader, RootModuleResult,
    };
    pub use abi_stable::std_types::{RBoxError, RStr, RString};
}
