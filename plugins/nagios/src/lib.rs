//! The `nagios` monitor runs any Nagios-plugin-compatible check (exit code
//! 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN; `TEXT | perfdata` on the first
//! line), so the whole `monitoring-plugins` collection (check_http,
//! check_disk, check_procs, ...) works as healer monitors. Perfdata becomes
//! metrics with their units. The check runs through
//! [`healer_plugin_sdk::command`]: a cleared environment, its own process
//! group killed at the timeout, and only the first 16 KiB of its stdout read.

#![forbid(unsafe_code)]

mod perfdata;

use std::collections::BTreeMap;

use healer_plugin_sdk::command::{Command, Output, STDOUT_HEAD};
use healer_plugin_sdk::{Duration, Error, Monitor, Observation, Status};
use serde::Deserialize;

/// Options of the `nagios` monitor.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The check and its arguments (no shell).
    command: Vec<String>,
    /// Added to the cleared environment (see `healer_plugin_sdk::command`).
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// UNKNOWN, and the check killed, after this long.
    #[serde(default = "default_timeout")]
    timeout: Duration,
}

/// Below healer's default check deadline (10 s), which must leave the
/// check room to time out by itself.
fn default_timeout() -> Duration {
    Duration::from_secs(8)
}

/// Runs a Nagios check.
pub struct NagiosMonitor(Config);

impl Monitor for NagiosMonitor {
    type Config = Config;
    const NAME: &'static str = "nagios";
    const DESCRIPTION: &'static str =
        "runs a Nagios-compatible check: exit 0..3 is the status, perfdata become metrics";
    const SAMPLE_CONFIG: &'static str = r#"command = ["/usr/lib/nagios/plugins/check_disk", "-w", "20%", "-c", "10%", "-p", "/"]
env = {}             # added to the cleared environment (default none)
timeout = "8s"       # UNKNOWN, and the check killed, after this long (below the target's timeout)
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

    /// The check is killed after `timeout`: healer's deadline must come
    /// later, or the check never reports its own timeout.
    fn own_timeout(config: &Config) -> Option<Duration> {
        Some(config.timeout)
    }

    async fn check(&mut self) -> Result<Observation, Error> {
        let (program, args) = self.0.command.split_first().ok_or("empty command")?;
        let run = Command::new(program.as_str())
            .args(args)
            .env(&self.0.env)
            .timeout(self.0.timeout.into())
            .run()
            .await;
        // Cannot start, timed out, killed by a signal: the check said nothing.
        Ok(match run {
            Ok(output) => observe(&output),
            Err(err) => Observation::unknown(err.to_string()),
        })
    }
}

/// What a check that exited says: its status, first line and perfdata.
fn observe(output: &Output) -> Observation {
    let mut stdout = output.stdout_text();
    if output.stdout_cut() {
        // A line cut in the middle could hold a cut number: drop it.
        if let Some(end) = stdout.rfind('\n') {
            stdout.truncate(end + 1);
        }
    }
    let mut seen = match output.code {
        0..=3 => perfdata::parse_output(Status::from_exit_code(output.code), &stdout),
        code => {
            let said = stdout.lines().next().unwrap_or("").trim();
            Observation::unknown(format!(
                "exit code {code} is not a Nagios status (0 to 3): {}",
                if said.is_empty() { "no output" } else { said }
            ))
        }
    };
    if output.stdout_head.is_empty() {
        if let Some(line) = output.last_stderr_line() {
            seen.summary = format!(
                "{} (the check printed nothing; stderr: {line})",
                seen.status
            );
        }
    }
    if output.stdout_cut() {
        seen = seen
            .detail("stdout_bytes", output.stdout_bytes)
            .detail("stdout_read", STDOUT_HEAD);
    }
    seen
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
        block_on(NagiosMonitor::new(config).unwrap().check()).unwrap()
    }

    fn block_on<T>(work: impl std::future::Future<Output = T>) -> T {
        healer_plugin_sdk::tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(work)
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
    fn an_exit_code_outside_0_to_3_is_unknown_saying_so() {
        let seen = run("echo weird; exit 7");
        assert_eq!(seen.status, Status::Unknown);
        assert_eq!(
            seen.summary,
            "exit code 7 is not a Nagios status (0 to 3): weird"
        );
    }

    #[test]
    fn a_check_killed_by_a_signal_is_unknown() {
        let seen = run("echo 'OK - fine'; kill -9 $$");
        assert_eq!(seen.status, Status::Unknown);
        assert_eq!(seen.summary, "\"sh\" was killed by signal 9");
    }

    #[test]
    fn only_the_first_16_kib_of_output_are_read() {
        let seen = run("echo 'OK - big | a=1'; head -c 100000000 /dev/zero | tr '\\000' x; exit 0");
        assert_eq!(seen.status, Status::Ok);
        assert_eq!(seen.summary, "OK - big");
        assert_eq!(seen.details["stdout_bytes"], 100_000_015);
        assert!(
            seen.details.get("long_output").is_none(),
            "{:?}",
            seen.details
        );
    }

    #[test]
    fn a_check_that_prints_nothing_is_summarized_with_its_stderr() {
        let seen = run("echo 'cannot reach the database' >&2; exit 2");
        assert_eq!(seen.status, Status::Critical);
        assert_eq!(
            seen.summary,
            "CRITICAL (the check printed nothing; stderr: cannot reach the database)"
        );
    }

    #[test]
    fn the_check_gets_a_cleared_environment_and_its_configured_env() {
        let config = Config {
            command: vec![
                "sh".into(),
                "-c".into(),
                "echo \"$PATH $GREETING $HOME\"".into(),
            ],
            env: BTreeMap::from([("GREETING".to_owned(), "hello".to_owned())]),
            timeout: Duration::from_secs(5),
        };
        let seen = block_on(NagiosMonitor::new(config).unwrap().check()).unwrap();
        assert_eq!(
            seen.summary,
            format!("{} hello", healer_plugin_sdk::command::PATH)
        );
    }

    #[test]
    fn a_check_past_its_timeout_is_unknown() {
        let seen = check(&["sleep", "5"], Duration::from_millis(100));
        assert_eq!(seen.status, Status::Unknown);
        assert!(
            seen.summary.contains("timed out after 100ms"),
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
                .starts_with("cannot start \"/nonexistent/check_x\""),
            "{}",
            seen.summary
        );
    }
}
