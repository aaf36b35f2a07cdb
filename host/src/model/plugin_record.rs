//! What healer remembers of a plugin package across restarts and reloads:
//! how often its workers crashed and whether it is quarantined. The
//! worker client keeps it, the events carry its changes, the store saves
//! it, and a package starts from it again.

use serde::{Deserialize, Serialize};

use crate::clock::Wall;

/// One package's crashes and quarantine, keyed by its file name in the
/// plugins directory (`libhealer_plugin_process.so`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRecord {
    /// Its workers' crashes since healer first ran it (a lifted
    /// quarantine does not clear them).
    pub crashes: u64,
    /// Why the last worker crashed, and when.
    pub last_crash: Option<String>,
    pub last_crash_at: Option<Wall>,
    /// While it is quarantined.
    pub quarantine: Option<Quarantine>,
}

/// A quarantine: of one file, so a replaced file is tried again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantine {
    /// Why, as healer said it when it began.
    pub reason: String,
    /// The sha256 of the file quarantined.
    pub sha256: String,
    /// When it began.
    pub since: Wall,
}

/// Why a package is quarantined after its worker crashed `crashes` times
/// within `within` (`last`: why the last time), as healer says it
/// everywhere: in the worker's refusals, the status and the store.
pub fn crashed_too_often(package: &str, crashes: u32, within: &str, last: &str) -> String {
    format!(
        "plugin package {package} is quarantined: its worker crashed {crashes} times within {within} (last: {last}); replace the file, or lift it with `healer reset --plugin {package}`, to try it again"
    )
}
