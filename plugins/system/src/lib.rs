//! System plugins: the `system` monitor measures this machine's CPU,
//! memory, every real disk and the load per core, against thresholds that
//! must hold for N samples in a row (one busy second is not an incident);
//! the `system` diagnoser names each breach: `system.cpu_high`,
//! `system.memory_high`, `system.disk_full`, `system.load_high`.
//!
//! sysinfo keeps its last figures when it cannot read the kernel's (EMFILE,
//! EACCES), so the monitor first reads those files itself: a check that
//! cannot is UNKNOWN, never a breach made of stale or zero figures.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use healer_plugin_sdk::{Diagnoser, Error, Finding, Monitor, Observation, Status};
use serde::Deserialize;
use sysinfo::{Disks, System};

/// A WARNING and a CRITICAL level, in the unit the option's name says.
#[derive(Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Levels {
    warning: f64,
    critical: f64,
}

/// Options of the `system` monitor.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    cpu_percent: Option<Levels>,
    memory_percent: Option<Levels>,
    disk_percent: Option<Levels>,
    /// Mount points to watch; empty means every real file system.
    #[serde(default)]
    mounts: Vec<String>,
    load_per_core: Option<Levels>,
    /// A level counts only when exceeded this many checks in a row.
    #[serde(default = "one")]
    for_samples: u32,
}

fn one() -> u32 {
    1
}

/// Watches this machine.
pub struct SystemMonitor {
    config: Config,
    system: System,
    disks: Disks,
    /// Consecutive checks above its WARNING level, per measurement.
    streaks: BTreeMap<String, u32>,
    /// The kernel files the figures come from, read first.
    sources: Vec<PathBuf>,
}

impl Monitor for SystemMonitor {
    type Config = Config;
    const NAME: &'static str = "system";
    const DESCRIPTION: &'static str =
        "this machine's cpu, memory, disks and load against thresholds held for N samples";
    const SAMPLE_CONFIG: &'static str = r#"cpu_percent = { warning = 90.0, critical = 98.0 }     # all cores together
memory_percent = { warning = 90.0, critical = 97.0 }  # used / total
disk_percent = { warning = 85.0, critical = 95.0 }    # used / total, per mount
mounts = []                                           # mount points; empty = every real file system
load_per_core = { warning = 2.0, critical = 4.0 }     # 1-minute load average / cores
for_samples = 3                                       # a level counts after this many checks in a row
"#;

    fn new(config: Config) -> Result<Self, Error> {
        if config.for_samples == 0 {
            return Err("`for_samples` must be at least 1".into());
        }
        for (name, levels) in [
            ("cpu_percent", config.cpu_percent),
            ("memory_percent", config.memory_percent),
            ("disk_percent", config.disk_percent),
            ("load_per_core", config.load_per_core),
        ] {
            if let Some(levels) = levels {
                if levels.warning > levels.critical {
                    return Err(format!(
                        "`{name}`: warning ({}) must not be above critical ({})",
                        levels.warning, levels.critical
                    )
                    .into());
                }
            }
        }
        let system = System::new().map_err(|e| format!("cannot read system statistics: {e}"))?;
        let disks =
            Disks::new_with_refreshed_list().map_err(|e| format!("cannot list disks: {e}"))?;
        Ok(SystemMonitor {
            config,
            system,
            disks,
            streaks: BTreeMap::new(),
            sources: ["/proc/stat", "/proc/meminfo"]
                .into_iter()
                .map(PathBuf::from)
                .collect(),
        })
    }

    async fn check(&mut self) -> Result<Observation, Error> {
        for source in &self.sources {
            if let Err(err) = std::fs::read(source) {
                let why = format!("cannot tell: cannot read {}: {err}", source.display());
                return Ok(Observation::unknown(why));
            }
        }
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        if self.system.total_memory() == 0 {
            return Ok(Observation::unknown(
                "cannot tell: no memory figures could be read",
            ));
        }
        self.disks.refresh(true);
        let mut measured: Vec<(String, f64, &'static str, Option<Levels>)> = Vec::new();
        measured.push((
            "cpu".into(),
            f64::from(self.system.global_cpu_usage()),
            "%",
            self.config.cpu_percent,
        ));
        let total = self.system.total_memory().max(1) as f64;
        let used = total - self.system.available_memory() as f64;
        measured.push((
            "memory".into(),
            used / total * 100.0,
            "%",
            self.config.memory_percent,
        ));
        for disk in self.disks.iter() {
            let mount = disk.mount_point().to_string_lossy().into_owned();
            let real = disk.total_space() > 0
                && !matches!(
                    disk.file_system().to_str(),
                    Some("tmpfs" | "devtmpfs" | "overlay" | "squashfs")
                );
            let wanted = if self.config.mounts.is_empty() {
                real
            } else {
                self.config.mounts.contains(&mount)
            };
            if wanted {
                let used = disk.total_space() - disk.available_space();
                measured.push((
                    format!("disk:{mount}"),
                    used as f64 / disk.total_space() as f64 * 100.0,
                    "%",
                    self.config.disk_percent,
                ));
            }
        }
        let cores = self.system.cpus().len().max(1) as f64;
        if let Ok(load) = System::load_average() {
            measured.push((
                "load_per_core".into(),
                load.one / cores,
                "",
                self.config.load_per_core,
            ));
        }

        let mut status = Status::Ok;
        let mut breaches = Vec::new();
        let mut observation_metrics = Vec::new();
        for (name, value, unit, levels) in measured {
            observation_metrics.push((name.clone(), value, unit));
            let Some(levels) = levels else { continue };
            let streak = self.streaks.entry(name.clone()).or_insert(0);
            *streak = if value > levels.warning {
                *streak + 1
            } else {
                0
            };
            if *streak < self.config.for_samples {
                continue;
            }
            let level = if value > levels.critical {
                Status::Critical
            } else {
                Status::Warning
            };
            status = status.max(level);
            breaches.push(format!(
                "{name} {value:.1}{unit} above {:.1}{unit}",
                if level == Status::Critical {
                    levels.critical
                } else {
                    levels.warning
                }
            ));
        }
        let summary = if breaches.is_empty() {
            let get = |n: &str| {
                observation_metrics
                    .iter()
                    .find(|m| m.0 == n)
                    .map_or(0.0, |m| m.1)
            };
            format!("cpu {:.0}%, memory {:.0}%", get("cpu"), get("memory"))
        } else {
            breaches.join("; ")
        };
        let mut seen = Observation::new(status, summary).detail("breaches", breaches);
        for (name, value, unit) in observation_metrics {
            // Facts in whole percent, so a fact changes (an event) when the
            // use does, not with every sample's noise; CPU use moves with
            // every sample, and is no fact.
            if unit == "%" && name != "cpu" {
                let key = match name.strip_prefix("disk:") {
                    Some(mount) => format!("system.disk.{mount}.used_percent"),
                    None => format!("system.{name}_percent"),
                };
                seen = seen.fact(key, value.round());
            }
            seen = seen.metric(name, value, unit);
        }
        Ok(seen)
    }
}

/// Names each threshold breach the monitor reported.
pub struct SystemDiagnoser;

/// The `system` diagnoser has no options.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoOptions {}

impl Diagnoser for SystemDiagnoser {
    type Config = NoOptions;
    const NAME: &'static str = "system";
    // Reads only the observations: runs in place, no thread hop.
    const BLOCKS: bool = false;
    const DESCRIPTION: &'static str = "system.cpu_high, .memory_high, .disk_full, .load_high";

    fn new(_: NoOptions) -> Result<Self, Error> {
        Ok(SystemDiagnoser)
    }

    /// Judges the latest observation alone.
    fn history_needed(_config: &Self::Config) -> usize {
        0
    }

    fn kinds(_config: &Self::Config) -> Option<Vec<String>> {
        let kinds = [
            "system.cpu_high",
            "system.memory_high",
            "system.disk_full",
            "system.load_high",
        ];
        Some(kinds.map(str::to_owned).to_vec())
    }

    fn diagnose(&mut self, latest: &Observation, _history: &[Observation]) -> Vec<Finding> {
        // Figures that could not be read are no breach.
        if latest.status == Status::Unknown {
            return Vec::new();
        }
        let breaches = latest
            .details
            .get("breaches")
            .and_then(|b| b.as_array())
            .cloned()
            .unwrap_or_default();
        breaches
            .iter()
            .filter_map(|b| b.as_str())
            .map(|breach| {
                let kind = match breach.split(' ').next().unwrap_or("") {
                    "cpu" => "system.cpu_high",
                    "memory" => "system.memory_high",
                    "load_per_core" => "system.load_high",
                    _ => "system.disk_full",
                };
                Finding::new(kind, latest.status, breach.to_owned())
            })
            .collect()
    }
}

healer_plugin_sdk::export_plugins! {
    monitors: [SystemMonitor],
    diagnosers: [SystemDiagnoser],
}

#[cfg(test)]
mod tests {
    use super::*;

    fn monitor(config: serde_json::Value) -> SystemMonitor {
        SystemMonitor::new(serde_json::from_value(config).unwrap()).unwrap()
    }

    fn check(monitor: &mut SystemMonitor) -> Observation {
        let runtime = healer_plugin_sdk::tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(monitor.check()).unwrap()
    }

    #[test]
    fn measures_cpu_memory_disks_and_load() {
        let seen = check(&mut monitor(serde_json::json!({})));
        assert_eq!(seen.status, Status::Ok);
        assert!(
            seen.metric_value("memory")
                .is_some_and(|m| m > 0.0 && m <= 100.0),
            "{seen:?}"
        );
        assert!(
            seen.metrics.iter().any(|m| m.name.starts_with("disk:")),
            "{seen:?}"
        );
        assert!(seen.metric_value("load_per_core").is_some(), "{seen:?}");
    }

    #[test]
    fn a_level_counts_only_after_for_samples_checks() {
        let mut watched = monitor(
            serde_json::json!({"memory_percent": {"warning": 0.0, "critical": 100.0}, "for_samples": 2}),
        );
        assert_eq!(check(&mut watched).status, Status::Ok);
        let seen = check(&mut watched);
        assert_eq!(seen.status, Status::Warning);
        let findings = SystemDiagnoser.diagnose(&seen, &[]);
        assert_eq!(findings[0].kind, "system.memory_high");
    }

    #[test]
    fn kernel_figures_that_cannot_be_read_are_unknown_and_keep_the_streaks() {
        let dir = tempfile::tempdir().unwrap();
        let mut watched = monitor(
            serde_json::json!({"memory_percent": {"warning": 0.0, "critical": 100.0}, "for_samples": 2}),
        );
        assert_eq!(check(&mut watched).status, Status::Ok);
        // A directory where the file should be: EISDIR, like EMFILE or
        // EACCES an error of the reading, not a figure.
        let sources = std::mem::replace(&mut watched.sources, vec![dir.path().to_owned()]);
        let seen = check(&mut watched);
        assert_eq!(seen.status, Status::Unknown);
        assert!(
            seen.summary.starts_with("cannot tell: cannot read "),
            "{}",
            seen.summary
        );
        assert!(SystemDiagnoser.diagnose(&seen, &[]).is_empty());
        watched.sources = sources;
        assert_eq!(check(&mut watched).status, Status::Warning);
    }

    #[test]
    fn an_unknown_observation_is_no_finding() {
        let seen = Observation::unknown("cannot tell")
            .detail("breaches", vec!["memory 100.0% above 90.0%"]);
        assert!(SystemDiagnoser.diagnose(&seen, &[]).is_empty());
    }

    #[test]
    fn warning_above_critical_is_refused() {
        let config = serde_json::from_value(
            serde_json::json!({"cpu_percent": {"warning": 99.0, "critical": 90.0}}),
        )
        .unwrap();
        assert!(SystemMonitor::new(config)
            .err()
            .unwrap()
            .to_string()
            .contains("must not be above critical"));
    }
}
