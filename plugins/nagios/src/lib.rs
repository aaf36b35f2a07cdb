//! The `nagios` monitor runs any Nagios-plugin-compatible check (exit code
//! 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN; `TEXT | perfdata` on the first
//! line), so the whole `monitoring-plugins` collection (check_http,
//! check_disk, check_procs, ...) works as healer monitors. Perfdata becomes
//! metrics with their units.

mod perfdata;

use std::collections::BTreeMap;
use std::process::Stdio;

use healer_plugin_sdk::{Duration, Error, Monitor, Observation, Status};
use serde::Deserialize;
use tokio::process::Command;

/// Options of the `nagios` monitor.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The check and its arguments (no shell).
    command: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// UNKNOWN, and the check killed, after this long.
    #[serde(default = "default_timeout")]
    timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Runs a Nagios check.
pub struct NagiosMonitor(Config);

impl Monitor for NagiosMonitor {
    type Config = Config;
    const NAME: &'static str = "nagios";
    const DESCRIPTION: &'static str =
        "runs a Nagios-compatible check: exit 0..3 is the status, perfdata become metrics";
    const SAMPLE_CONFIG: &'static str = r#"command = ["/usr/lib/nagios/plugins/check_disk", "-w", "20%", "-c", "10%", "-p", "/"]
env = {}             # extra environment (default none)
timeout = "10s"      # UNKNOWN, and the check killed, after this long
"#;

    fn new(config: Config) -> Result<Self, Error> {
        if config.command.is_empty() || config.command[0].is_empty() {
            return Err(
                "`command` must name a check: command = [\"/path/to/check_x\", \"arg\", ...]"
                    .into(),
            );
        }
        Ok(NagiosMonitor(config))
    }

    async fn check(&mut self) -> Result<Observation, Error> {
        let (program, args) = self.0.command.split_first().ok_or("empty command")?;
        let child = Command::new(program)
            .args(args)
            .envs(&self.0.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(err) => {
                return Ok(Observation::unknown(format!(
                    "cannot run {program:?}: {err}"
                )))
            }
        };
        let output =
            match tokio::time::timeout(self.0.timeout.into(), child.wait_with_output()).await {
                Ok(Ok(output)) => output,
                Ok(Err(err)) => return Ok(Observation::unknown(format!("{program:?}: {err}"))),
                Err(_) => {
                    return Ok(Observation::unknown(format!(
                        "{program:?} did not finish within {}",
                        self.0.timeout
                    )))
                }
            };
        let status = match output.status.code() {
            Some(code) => Status::from_exit_code(code),
            None => {
                return Ok(Observation::unknown(format!(
                    "{program:?} was killed by a signal ({})",
                    output.status
                )))
            }
        };
        Ok(perfdata::parse_output(
            status,
            &String::from_utf8_lossy(&output.stdout),
        ))
    }
}

healer_plugin_sdk::export_plugins! {
    monitors: [NagiosMonitor],
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(command: &[&str], timeout: Duration) -> Observation {
        let command = command.iter().map(|s| (*s).to_owned()).collect();
        let config = Config {
            command,
            env: BTreeMap::new(),
            timeout,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime
            .block_on(NagiosMonitor::new(config).unwrap().check())
            .unwrap()
    }

    fn run(script: &str) -> Observation {
        check(&["sh", "-c", script], Duration::from_secs(5))
    }

    #[test]
    fn the_exit_code_is_the_status_and_perfdata_are_metrics() {
        let seen =
            run("echo 'DISK WARNING - free space: / 15% | /=85%;80;90;0;100 time=0.012s'; exit 1");
        assert_eq!(seen.status, Status::Warning);
        assert_eq!(seen.summary, "DISK WARNING - free space: / 15%");
        assert_eq!(seen.metric_value("/"), Some(85.0));
        assert_eq!(seen.metrics[1].unit, "s");
    }

    #[test]
    fn an_exit_code_outside_0_to_3_is_unknown() {
        assert_eq!(run("echo weird; exit 7").status, Status::Unknown);
    }

    #[test]
    fn a_check_past_its_timeout_is_unknown() {
        let seen = check(&["sleep", "5"], Duration::from_millis(100));
        assert_eq!(seen.status, Status::Unknown);
        assert!(
            seen.summary.contains("did not finish within 100ms"),
            "{}",
            seen.summary
        );
    }

    #[test]
    fn a_missing_check_is_unknown_naming_it() {
        let seen = check(&["/nonexistent/check_x"], Duration::from_secs(1));
        assert_eq!(seen.status, Status::Unknown);
        assert!(
            seen.summary
                .starts_with("cannot run \"/nonexistent/check_x\""),
            "{}",
            seen.summary
        );
    }
}
