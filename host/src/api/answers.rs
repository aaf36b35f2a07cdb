//! What the API answers, as the CLI reads it back: the shapes `healer
//! status`, `reload`, `reset`, `pause` and `resume` share with the routes.

use serde::{Deserialize, Serialize};

use crate::board::TargetView;
use crate::issues::Issue;
use crate::model::Pause;
use crate::plugins::{Catalog, WorkerHealth};

/// The plugin packages as the API shows them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Plugins {
    pub dir: String,
    pub packages: Vec<PackageView>,
    /// Files that did not load, and why.
    pub errors: Vec<FileProblem>,
    /// Packages loaded with a problem.
    pub warnings: Vec<FileProblem>,
    #[serde(skip)]
    live: Vec<crate::plugins::Package>,
}

impl Plugins {
    /// The catalog's packages (their worker health read when shown).
    pub fn of(catalog: &Catalog) -> Plugins {
        let problem = |e: &crate::plugins::LoadError| FileProblem {
            file: e.file.display().to_string(),
            reason: e.reason.clone(),
        };
        Plugins {
            dir: catalog.dir.display().to_string(),
            packages: Vec::new(),
            errors: catalog.errors.iter().map(problem).collect(),
            warnings: catalog.warnings.iter().map(problem).collect(),
            live: catalog.packages.clone(),
        }
    }

    /// An operator lifts the quarantine of the package in `file`.
    pub(super) fn lift_quarantine(&self, file: &str) -> Result<(), crate::plugins::Unquarantined> {
        crate::plugins::lift_quarantine(&self.live, std::path::Path::new(&self.dir), file)
    }

    pub(super) fn now(&self) -> Plugins {
        let packages = self
            .live
            .iter()
            .map(|p| PackageView {
                file: p.file.display().to_string(),
                name: p.name.clone(),
                version: p.version.clone(),
                sdk_version: p.sdk_version.clone(),
                sha256: p.sha256.clone(),
                isolation: p.isolation.as_str().to_owned(),
                plugins: p
                    .plugins
                    .iter()
                    .map(|info| format!("{} {}", info.kind, info.name))
                    .collect(),
                worker: p.worker_health(),
            })
            .collect();
        Plugins {
            packages,
            live: Vec::new(),
            ..self.clone()
        }
    }
}

/// One loaded package.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PackageView {
    pub file: String,
    pub name: String,
    pub version: String,
    pub sdk_version: String,
    pub sha256: Option<String>,
    pub isolation: String,
    pub plugins: Vec<String>,
    /// Its worker, when it runs in one.
    pub worker: Option<WorkerHealth>,
}

/// A file and what is wrong with it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileProblem {
    pub file: String,
    pub reason: String,
}

/// `GET /healthz`: healer's own liveness.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Health {
    /// `ok`; `behind` when its checks fall behind their schedules (it
    /// works, slower than configured: still 200); `stalled` when something
    /// of healer's own does not work.
    pub status: String,
    /// While healer is behind: the latest window of checks, how many of
    /// them began late, and the latest by how much.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behind: Option<crate::board::LateCount>,
    /// Targets whose loop has not made progress when it should have, with
    /// how late, e.g. `db (late by 12s)`.
    pub stalled: Vec<String>,
    /// Whether the store can write (none without a store).
    pub store_writable: Option<bool>,
    /// How far behind the event stream the store is, in milliseconds.
    pub store_lag_ms: Option<u64>,
    pub targets: usize,
    pub uptime_s: u64,
}

/// One target in `/api/v1/targets`: its view, and how old its last check is.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TargetRow {
    #[serde(flatten)]
    pub view: TargetView,
    /// Milliseconds since the last check; none before the first.
    pub age_ms: Option<u64>,
}

/// One open issue in `/api/v1/issues`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IssueRow {
    /// `target/kind`: what `healer reset` takes.
    pub id: String,
    pub target: String,
    #[serde(flatten)]
    pub issue: Issue,
    /// Whether its target is paused (nothing recovers it until it ends).
    pub paused: bool,
    /// The dependency its recovery waits for, and since when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<crate::board::Held>,
}

/// The answer to a command.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Done {
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issues: Vec<Issue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<Pause>,
}

/// What a reload did, as `healer reload` prints it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloaded {
    /// Targets started.
    pub added: Vec<String>,
    /// Targets stopped.
    pub removed: Vec<String>,
    /// Targets restarted with their new config.
    pub changed: Vec<String>,
    /// Targets left running as they were.
    pub unchanged: usize,
    /// Plugin package files loaded that were not loaded before (or
    /// loaded another sha256: upgraded in place).
    pub packages_added: Vec<String>,
    /// Plugin package files that did not load, or loaded with a problem
    /// (a replaced file refused while the running one serves on), one
    /// line each.
    #[serde(default)]
    pub plugin_problems: Vec<String>,
    /// Settings that changed but take effect only after a restart.
    pub needs_restart: Vec<String>,
}
