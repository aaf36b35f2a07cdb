//! The `process` diagnoser.

use healer_plugin_sdk::{Bytes, Diagnoser, Error, Finding, Observation, Status};
use serde::Deserialize;

/// Options of the `process` diagnoser.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `process.memory_high` when rss stays above this.
    max_rss: Option<Bytes>,
    /// `process.cpu_high` when CPU (% of one core) stays above this.
    max_cpu: Option<f64>,
    /// How many samples in a row a limit must be exceeded.
    #[serde(default = "one")]
    for_samples: usize,
    /// `process.restart_loop` when the pid changed this many times within the
    /// kept history (0 = never).
    #[serde(default)]
    max_restarts: usize,
}

fn one() -> usize {
    1
}

/// Turns process observations into findings.
pub struct ProcessDiagnoser(Config);

impl Diagnoser for ProcessDiagnoser {
    type Config = Config;
    const NAME: &'static str = "process";
    // Reads only the observations: runs in place, no thread hop.
    const BLOCKS: bool = false;
    const DESCRIPTION: &'static str =
        "process.not_running, .stopped, .memory_high, .cpu_high (for N samples), .restart_loop";
    const SAMPLE_CONFIG: &'static str = r#"max_rss = "512MiB"   # process.memory_high above this (units required)
max_cpu = 90.0       # process.cpu_high above this % of one core
for_samples = 3      # limits must be exceeded this many checks in a row
max_restarts = 5     # process.restart_loop after this many pid changes in the history (0 = off)
"#;

    fn new(config: Config) -> Result<Self, Error> {
        if config.for_samples == 0 {
            return Err("`for_samples` must be at least 1".into());
        }
        Ok(ProcessDiagnoser(config))
    }

    /// Every kind it may return, whatever its limits: a recoverer waiting
    /// for `process.memory_high` where no `max_rss` is set is no typo.
    fn kinds(_config: &Config) -> Option<Vec<String>> {
        let kinds = [
            "process.not_running",
            "process.stopped",
            "process.memory_high",
            "process.cpu_high",
            "process.restart_loop",
        ];
        Some(kinds.map(str::to_owned).to_vec())
    }

    fn diagnose(&mut self, latest: &Observation, history: &[Observation]) -> Vec<Finding> {
        let mut findings = Vec::new();
        // The monitor could not look: that is no evidence of anything (the
        // host reports it as `process.unknown`).
        if latest.status == Status::Unknown {
            return findings;
        }
        if latest.details.get("running") == Some(&serde_json::Value::Bool(false)) {
            findings.push(Finding::critical(
                "process.not_running",
                latest.summary.clone(),
            ));
            return findings;
        }
        // Stopped for the monitor's `stopped_for`: it exists and does
        // nothing, a hang.
        if latest.status == Status::Critical
            && latest.details.get("stopped") == Some(&serde_json::Value::Bool(true))
        {
            // Its pid, for a recoverer to continue or kill it (a stopped
            // process ends on SIGKILL, or on SIGTERM only once continued).
            let mut stopped = Finding::critical("process.stopped", latest.summary.clone())
                .detail("stopped", true);
            if let Some(pid) = latest.details.get("pid") {
                stopped = stopped.detail("pid", pid.clone());
            }
            findings.push(stopped);
            return findings;
        }
        let recent: Vec<&Observation> = history
            .iter()
            .rev()
            .take(self.0.for_samples - 1)
            .chain([latest])
            .collect();
        let held = |metric: &str, limit: f64| {
            recent.len() == self.0.for_samples
                && recent
                    .iter()
                    .all(|seen| seen.metric_value(metric).is_some_and(|v| v > limit))
        };
        if let Some(limit) = self.0.max_rss {
            if held("rss", limit.0 as f64) {
                let rss = Bytes(latest.metric_value("rss").unwrap_or(0.0) as u64);
                findings.push(Finding::warning(
                    "process.memory_high",
                    format!("rss {rss} above {limit} for {} checks", self.0.for_samples),
                ));
            }
        }
        if let Some(limit) = self.0.max_cpu {
            if held("cpu", limit) {
                findings.push(Finding::warning(
                    "process.cpu_high",
                    format!("cpu above {limit}% for {} checks", self.0.for_samples),
                ));
            }
        }
        if self.0.max_restarts > 0 {
            let pids: Vec<f64> = history
                .iter()
                .chain([latest])
                .filter_map(|seen| seen.metric_value("pid"))
                .collect();
            let restarts = pids.windows(2).filter(|pair| pair[0] != pair[1]).count();
            if restarts >= self.0.max_restarts {
                findings.push(Finding::critical(
                    "process.restart_loop",
                    format!(
                        "pid changed {restarts} times in the last {} checks",
                        pids.len()
                    ),
                ));
            }
        }
        findings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(pid: u32, rss: u64) -> Observation {
        Observation::ok("running")
            .metric("pid", pid as f64, "")
            .metric("rss", rss as f64, "B")
            .detail("running", true)
    }

    fn diagnoser(toml: serde_json::Value) -> ProcessDiagnoser {
        ProcessDiagnoser::new(serde_json::from_value(toml).unwrap()).unwrap()
    }

    #[test]
    fn a_process_that_is_gone_is_not_running() {
        let seen = Observation::critical("not running: pid 4 exited").detail("running", false);
        let findings = diagnoser(serde_json::json!({})).diagnose(&seen, &[]);
        assert_eq!(findings[0].kind, "process.not_running");
    }

    #[test]
    fn a_process_stopped_too_long_is_stopped_with_its_pid_and_a_short_stop_is_nothing() {
        let long = Observation::critical("stopped: pid 7 stopped for 5.0s (stopped_for = 5s)")
            .detail("running", true)
            .detail("pid", 7)
            .detail("stopped", true);
        let findings = diagnoser(serde_json::json!({})).diagnose(&long, &[]);
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].kind, "process.stopped");
        assert_eq!(findings[0].details["pid"], 7);
        let short = running(7, 0).detail("stopped", true);
        assert!(diagnoser(serde_json::json!({}))
            .diagnose(&short, &[])
            .is_empty());
    }

    #[test]
    fn it_declares_every_kind_it_may_return_whatever_its_limits() {
        let kinds = |config| ProcessDiagnoser::kinds(&serde_json::from_value(config).unwrap());
        let bare = kinds(serde_json::json!({})).unwrap();
        let all = kinds(serde_json::json!({"max_rss": "1MiB", "max_cpu": 50.0, "max_restarts": 3}))
            .unwrap();
        assert_eq!(bare, all);
        assert_eq!(all.len(), 5, "{all:?}");
    }

    #[test]
    fn an_unknown_observation_is_no_finding() {
        // Even one that (wrongly) says it is not running.
        let seen = Observation::unknown("cannot tell: cannot read pidfile x: Too many open files")
            .detail("running", false);
        let findings = diagnoser(serde_json::json!({"max_restarts": 1})).diagnose(&seen, &[]);
        assert!(findings.is_empty(), "{findings:?}");
    }

    #[test]
    fn memory_must_stay_high_for_n_samples() {
        let mut d = diagnoser(serde_json::json!({"max_rss": "1MiB", "for_samples": 3}));
        let big = 2 << 20;
        assert!(d
            .diagnose(&running(1, big), &[running(1, 10), running(1, big)])
            .is_empty());
        let findings = d.diagnose(&running(1, big), &[running(1, big), running(1, big)]);
        assert_eq!(findings[0].kind, "process.memory_high");
    }

    #[test]
    fn many_pid_changes_are_a_restart_loop() {
        let mut d = diagnoser(serde_json::json!({"max_restarts": 3}));
        let history = [running(1, 0), running(2, 0), running(3, 0)];
        assert!(d.diagnose(&running(3, 0), &history).is_empty());
        assert_eq!(
            d.diagnose(&running(4, 0), &history)[0].kind,
            "process.restart_loop"
        );
    }
}
