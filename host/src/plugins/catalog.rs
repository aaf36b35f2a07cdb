//! Scans a plugins directory: checks that healer may trust it, probes every
//! `*.so` in a short-lived child (in parallel), loads those that probed
//! clean in name order, keeps going past bad files (one line each), and
//! refuses a plugin name that two packages export. Checks a config's
//! plugins against it: each accepts its config, and each target passes
//! the checks of what its plugins declare ([`super::declared`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use healer_plugin_sdk::ffi::{Declared, PluginKind};
use serde::Serialize;

use super::declared;
use super::identity;
use super::loader::{load_opened, LoadError};
use super::package::{Package, PluginInfo, WhenWorkerEnds};
use super::worker::probe::{probe_all, Probed, ToProbe, PROBE_WITHIN};
use crate::config::{
    did_you_mean, Config, ConfigError, Isolation, PackagePolicy, PluginUse, Plugins,
};
use crate::events::Events;
use crate::model::PluginRecord;

/// Whether `file` would load here, as a scan decides it for one file (its
/// symlink resolved, the pin `plugins` sets for its file name, its probe
/// in a child with its sandbox), without loading it in this process.
pub fn probe_one(file: &Path, plugins: &Plugins) -> Result<Probed, String> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let policy = plugins.policy(&name);
    let target = identity::resolve(file)?;
    if let Some(pin) = &policy.sha256 {
        check_pin(&target, pin, &name)?;
    }
    let exe = this_binary()?;
    let probing = ToProbe {
        file: target,
        sandbox: policy.sandbox,
        env: policy.env,
    };
    probe_all(&exe, &[probing], PROBE_WITHIN)
        .pop()
        .unwrap_or_else(|| Err(no_answer()))
        .map_err(|refusal| refusal.reason)
}

/// The binary that probes and serves packages: this very one,
/// `/proc/self/exe` (the running image even after an upgrade replaced the
/// file on disk).
fn this_binary() -> Result<PathBuf, String> {
    let image = Path::new("/proc/self/exe");
    if image.exists() {
        return Ok(image.to_owned());
    }
    std::env::current_exe()
        .map_err(|err| format!("cannot find healer's own binary to probe plugins with: {err}"))
}

fn no_answer() -> super::worker::probe::Refusal {
    super::worker::probe::Refusal {
        reason: "its probe gave no answer".to_owned(),
        detail: None,
    }
}

/// The warning of a reload that found `file` changed and refused: the
/// running package serves on.
fn serving_on(file: &Path, serving: &Package, reason: &str) -> LoadError {
    LoadError::new(
        file,
        format!(
            "the new file is refused ({reason}); the running one (sha256 {}) serves on",
            serving.sha256.as_deref().unwrap_or("-")
        ),
    )
}

/// An operator lifts the quarantine of the package in `file` (its file
/// name, or its path in the plugins directory `dir`) among `packages`.
pub fn lift_quarantine(packages: &[Package], dir: &Path, file: &str) -> Result<(), Unquarantined> {
    let wanted = Path::new(file)
        .file_name()
        .map_or_else(|| file.to_owned(), |n| n.to_string_lossy().into_owned());
    let Some(package) = packages
        .iter()
        .find(|package| package.file_name() == wanted)
    else {
        let known: Vec<String> = packages.iter().map(Package::file_name).collect();
        return Err(Unquarantined::NoSuchPackage(format!(
            "no plugin package {wanted} in {} (loaded: {})",
            dir.display(),
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )));
    };
    package.backend.lift_quarantine().map_err(|why| {
        Unquarantined::Refused(if why.starts_with("plugin package") {
            why
        } else {
            format!("plugin package {wanted}: {why}")
        })
    })
}

/// Why a quarantine was not lifted.
#[derive(Debug, PartialEq, Eq)]
pub enum Unquarantined {
    /// No loaded package has that file name.
    NoSuchPackage(String),
    /// The package is not quarantined, or its quarantine may not be
    /// lifted now (its replaced file is being probed or was refused).
    Refused(String),
}

impl std::fmt::Display for Unquarantined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unquarantined::NoSuchPackage(why) | Unquarantined::Refused(why) => f.write_str(why),
        }
    }
}

/// Config checks (or instance creations) in flight at once at start-up.
pub const CHECKS_IN_FLIGHT: usize = 32;

/// Every package found in a directory, and every file that failed.
#[derive(Debug, Default, Serialize)]
pub struct Catalog {
    /// The directory scanned.
    pub dir: PathBuf,
    /// Packages that loaded, in file-name order.
    pub packages: Vec<Package>,
    /// Files that did not load, one entry each.
    pub errors: Vec<LoadError>,
    /// Packages that loaded with a problem: a plugin name another package
    /// exports (skipped), a sample config its plugin rejects.
    pub warnings: Vec<LoadError>,
}

impl Serialize for Package {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Listed<'a> {
            file: &'a Path,
            name: &'a str,
            version: &'a str,
            sdk_version: &'a str,
            sha256: Option<&'a str>,
            isolation: &'static str,
            plugins: &'a [PluginInfo],
        }
        Listed {
            file: &self.file,
            name: &self.name,
            version: &self.version,
            sdk_version: &self.sdk_version,
            sha256: self.sha256.as_deref(),
            isolation: self.isolation.as_str(),
            plugins: &self.plugins,
        }
        .serialize(s)
    }
}

impl Catalog {
    /// Loads every `*.so` directly in `dir`, each probed first by `healer
    /// worker --probe` (the binary at `exe`), and set up as `plugins` says:
    /// served by a worker (the default) or loaded here. Only a directory
    /// that cannot be read or trusted is an error; bad files are collected
    /// in [`Catalog::errors`].
    pub fn scan_with(dir: &Path, exe: &Path, plugins: &Plugins) -> Result<Catalog, LoadError> {
        Catalog::scan_keeping(dir, exe, plugins, &[])
    }

    /// [`Catalog::scan_with`] on a reload, `running` the packages healer
    /// runs now: a file probed as the same sha256 keeps its running
    /// package (its workers, their crashes and quarantine: no second
    /// worker for the same file); a changed file that probes clean is a
    /// new package (an upgrade, served by new workers); a changed file
    /// that is refused (its probe, its pin) leaves the running package
    /// serving, with a warning that says why.
    pub fn scan_keeping(
        dir: &Path,
        exe: &Path,
        plugins: &Plugins,
        running: &[Package],
    ) -> Result<Catalog, LoadError> {
        let running_as = |file: &Path| running.iter().find(|package| package.file == file);
        identity::check_dir(dir).map_err(|reason| LoadError::new(dir, reason))?;
        let entries = std::fs::read_dir(dir).map_err(|err| {
            LoadError::new(dir, format!("cannot read the plugins directory: {err}"))
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "so"))
            .collect();
        files.sort();

        let mut catalog = Catalog {
            dir: dir.to_owned(),
            ..Catalog::default()
        };
        let mut resolved = Vec::new();
        for file in files {
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let policy = plugins.policy(&name);
            let checked = identity::resolve(&file).and_then(|target| match &policy.sha256 {
                Some(pin) => check_pin(&target, pin, &name).map(|()| target),
                None => Ok(target),
            });
            match (checked, running_as(&file)) {
                (Ok(target), _) => resolved.push((file, target, policy)),
                (Err(reason), Some(serving)) => {
                    catalog.warnings.push(serving_on(&file, serving, &reason));
                    catalog.packages.push(serving.clone());
                }
                (Err(reason), None) => catalog.errors.push(LoadError::new(&file, reason)),
            }
        }
        let targets: Vec<ToProbe> = resolved
            .iter()
            .map(|(_, target, policy)| ToProbe {
                file: target.clone(),
                sandbox: policy.sandbox.clone(),
                env: policy.env.clone(),
            })
            .collect();
        let verdicts = probe_all(exe, &targets, PROBE_WITHIN);
        let mut owners: HashMap<(PluginKind, String), PathBuf> = HashMap::new();
        // Packages kept from `running` have their plugin names already.
        for package in &catalog.packages {
            for plugin in &package.plugins {
                owners.insert((plugin.kind, plugin.name.clone()), package.file.clone());
            }
        }
        for ((file, target, policy), verdict) in resolved.into_iter().zip(verdicts) {
            let serving = running_as(&file);
            let loaded = match (verdict, serving) {
                (Ok(probed), Some(serving))
                    if serving.sha256.as_deref() == Some(probed.identity.sha256.as_str()) =>
                {
                    // Every plugin it exports, checked for clashes anew
                    // below (a package that once shadowed it may be gone).
                    let mut kept = serving.clone();
                    kept.plugins = probed.plugins;
                    Ok((kept, Vec::new()))
                }
                (Ok(probed), serving) => {
                    match (set_up(&file, &target, exe, &policy, probed), serving) {
                        (Err(err), Some(serving)) => {
                            catalog
                                .warnings
                                .push(serving_on(&file, serving, &err.reason));
                            Ok((serving.clone(), Vec::new()))
                        }
                        (set, _) => set,
                    }
                }
                (Err(refusal), Some(serving)) => {
                    catalog
                        .warnings
                        .push(serving_on(&file, serving, &refusal.reason));
                    Ok((serving.clone(), Vec::new()))
                }
                (Err(refusal), None) => Err(LoadError {
                    file: file.clone(),
                    reason: refusal.reason,
                    detail: refusal.detail,
                }),
            };
            match loaded {
                Ok((mut package, problems)) => {
                    package.plugins.retain(|plugin| {
                        let key = (plugin.kind, plugin.name.clone());
                        if let Some(first) = owners.get(&key) {
                            catalog.warnings.push(LoadError::new(
                                &file,
                                format!(
                                    "{} {:?} is also exported by {}; plugin names must be unique, so this one is skipped",
                                    plugin.kind,
                                    plugin.name,
                                    first.display()
                                ),
                            ));
                            return false;
                        }
                        owners.insert(key, file.clone());
                        true
                    });
                    catalog.warnings.extend(
                        problems
                            .into_iter()
                            .map(|problem| LoadError::new(&file, problem)),
                    );
                    catalog.packages.push(package);
                }
                Err(err) => catalog.errors.push(err),
            }
        }
        catalog.packages.sort_by(|a, b| a.file.cmp(&b.file));
        Ok(catalog)
    }

    /// [`Catalog::scan_with`] this very binary as the prober and worker:
    /// `/proc/self/exe`, the running image even after an upgrade replaced
    /// the file on disk.
    pub fn scan(dir: &Path, plugins: &Plugins) -> Result<Catalog, LoadError> {
        Catalog::rescan(dir, plugins, &[])
    }

    /// [`Catalog::scan_keeping`] this very binary as the prober and worker.
    pub fn rescan(
        dir: &Path,
        plugins: &Plugins,
        running: &[Package],
    ) -> Result<Catalog, LoadError> {
        let exe = this_binary().map_err(|reason| LoadError::new(dir, reason))?;
        Catalog::scan_keeping(dir, &exe, plugins, running)
    }

    /// Where every package reports what happens to it (worker crashes,
    /// restarts, quarantines).
    pub fn report_to(&self, events: &Events) {
        for package in &self.packages {
            package.backend.report_to(events);
        }
    }

    /// Every package carries on from what the store remembered of it, by
    /// file name (at start; a reload keeps the running packages).
    pub fn remember(&self, records: &HashMap<String, PluginRecord>) {
        for package in &self.packages {
            if let Some(record) = records.get(&package.file_name()) {
                package.backend.remember(record);
            }
        }
    }

    /// Whom every package tells when a worker serving it ended (see
    /// [`WhenWorkerEnds`]).
    pub fn when_worker_ends(&self, hook: &WhenWorkerEnds) {
        for package in &self.packages {
            package.backend.when_worker_ends(hook);
        }
    }

    /// Checks every plugin the config names: that a loaded package exports
    /// it, and that the plugin accepts its config.
    pub async fn check_config(&self, config: &Config) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut plugin_uses = Vec::new();
        for target in &config.targets {
            plugin_uses.extend(target.plugins());
        }
        for workflow in config.workflows.values() {
            plugin_uses.extend(workflow.steps.iter().map(|step| &step.plugin));
        }
        // Each distinct config is checked once, and the checks run
        // concurrently (a worker gets them in batches): checking 10,000
        // targets is as many calls in flight, not as many round trips.
        let mut checks = Vec::new();
        let mut distinct = HashMap::new();
        let mut found = Vec::new();
        for plugin in plugin_uses {
            let Some(package) = self.find(plugin.kind, &plugin.plugin) else {
                let names = self
                    .packages
                    .iter()
                    .flat_map(|p| &p.plugins)
                    .filter(|p| p.kind == plugin.kind);
                let other_kinds: Vec<&str> = self
                    .packages
                    .iter()
                    .flat_map(|p| &p.plugins)
                    .filter(|p| p.name == plugin.plugin)
                    .map(|p| p.kind.as_str())
                    .collect();
                let hint = if other_kinds.is_empty() {
                    did_you_mean(&plugin.plugin, names.map(|p| p.name.as_str()))
                        .map_or_else(String::new, |guess| format!(" (did you mean \"{guess}\"?)"))
                } else {
                    format!(
                        " (that name is a {}, not a {})",
                        other_kinds.join(" and a "),
                        plugin.kind
                    )
                };
                errors.push(ConfigError {
                    file: config.path.clone(),
                    at: Some(config.key_location(plugin, "plugin")),
                    message: format!(
                        "unknown {} plugin {:?}{hint}; `healer plugins` lists those in {}",
                        plugin.kind,
                        plugin.plugin,
                        self.dir.display()
                    ),
                });
                continue;
            };
            let key = (
                plugin.kind,
                plugin.plugin.as_str(),
                plugin.config.to_string(),
            );
            let next = checks.len();
            let check = *distinct.entry(key).or_insert_with(|| {
                checks.push(package.check_config(plugin.kind, &plugin.plugin, &plugin.config));
                next
            });
            found.push((plugin, check));
        }
        let verdicts: Vec<Result<Declared, String>> = futures_util::stream::iter(checks)
            .buffered(CHECKS_IN_FLIGHT)
            .collect()
            .await;
        for (plugin, check) in found {
            if let Err(err) = &verdicts[check] {
                let mut error = config.plugin_error(plugin, err);
                error.message = format!("{} {:?}: {}", plugin.kind, plugin.plugin, error.message);
                errors.push(error);
            }
        }
        // What the plugins that accepted their configs declare about them:
        // each target checked against it (a plugin that refused its config
        // has its error above).
        errors.extend(declared::check_targets(config, |plugin: &PluginUse| {
            let key = (
                plugin.kind,
                plugin.plugin.as_str(),
                plugin.config.to_string(),
            );
            distinct
                .get(&key)
                .and_then(|&check| verdicts[check].as_ref().ok())
        }));
        // In the order of the file, as before the checks ran concurrently.
        errors.sort_by_key(|error| error.at.map(|at| (at.line, at.column)));
        errors
    }

    /// The package exporting the plugin of this kind and name.
    pub fn find(&self, kind: PluginKind, name: &str) -> Option<&Package> {
        self.packages.iter().find(|package| {
            package
                .plugins
                .iter()
                .any(|p| p.kind == kind && p.name == name)
        })
    }
}

/// Refuses a file whose SHA-256 is not the one the config pins, before
/// anything of it runs.
fn check_pin(target: &Path, pin: &str, name: &str) -> Result<(), String> {
    let opened = identity::open(target)?;
    if opened.identity.sha256.eq_ignore_ascii_case(pin) {
        Ok(())
    } else {
        Err(format!(
            "its sha256 is {}, but [plugins.package.{name:?}] pins {pin}; not loaded (update the pin if the new file is trusted)",
            opened.identity.sha256
        ))
    }
}

/// A package that probed clean, set up to run where its policy says; with
/// the problems the probe found in its sample configs.
fn set_up(
    file: &Path,
    target: &Path,
    exe: &Path,
    policy: &PackagePolicy,
    probed: Probed,
) -> Result<(Package, Vec<String>), LoadError> {
    if let Some(pin) = &policy.sha256 {
        if !probed.identity.sha256.eq_ignore_ascii_case(pin) {
            return Err(LoadError::new(
                file,
                "changed while it was being probed (its sha256 no longer matches the pin); not loaded",
            ));
        }
    }
    let mut problems = probed.problems;
    if !probed.sandbox.is_empty() {
        problems.push(format!(
            "its sandbox is not as configured: {}",
            probed.sandbox.join("; ")
        ));
    }
    let package = match policy.isolation {
        Isolation::InProcess => {
            let opened = identity::open(target).map_err(|reason| LoadError::new(file, reason))?;
            if opened.identity != probed.identity {
                return Err(LoadError::new(
                    file,
                    "changed while it was being probed; not loaded (it is probed again on the next scan)",
                ));
            }
            load_opened(opened, file)?
        }
        Isolation::Process => Package {
            file: file.to_owned(),
            name: probed.name,
            version: probed.version,
            sdk_version: probed.sdk_version,
            plugins: probed.plugins,
            sha256: Some(probed.identity.sha256.clone()),
            isolation: Isolation::Process,
            backend: super::worker::served_by_workers(file, target, probed.identity, exe, policy),
        },
    };
    Ok((package, problems))
}
