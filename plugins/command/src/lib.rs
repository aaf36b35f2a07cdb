//! Recoverers that run programs: `command` runs one command (argv, env,
//! timeout; exit 0 = success), `service-restart` restarts a service through
//! systemd, or with stop/start commands where there is no systemd (the
//! seed's ServiceRestartRecovery). Both run programs through
//! [`healer_plugin_sdk::command`]: a cleared environment, their own process
//! group killed at the timeout, bounded output. `command` with
//! `systemd_run = "NAME"` has systemd start the program as the transient
//! service NAME instead, so it inherits nothing of healer.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use healer_plugin_sdk::command;
use healer_plugin_sdk::{Duration, Error, Outcome, Recoverer, Recovery};
use serde::Deserialize;

/// Options of the `command` recoverer.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    /// Program and arguments; no shell is involved (use `["sh", "-c", ...]`).
    argv: Vec<String>,
    /// Added to the cleared environment (see `healer_plugin_sdk::command`).
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Working directory.
    cwd: Option<PathBuf>,
    /// Kill the command and fail after this long.
    #[serde(default = "default_timeout")]
    timeout: Duration,
    /// Start it and do not wait: for a service that runs in the foreground.
    /// Success means it was still running after `detach_grace`.
    #[serde(default)]
    detach: bool,
    /// How long a detached command must survive to count as started.
    #[serde(default = "default_grace")]
    detach_grace: Duration,
    /// Have systemd start it as this transient service (`systemd-run
    /// --unit=NAME`), not healer.
    systemd_run: Option<String>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_grace() -> Duration {
    Duration::from_millis(200)
}

/// Runs one command.
pub struct Command(CommandConfig);

impl Recoverer for Command {
    type Config = CommandConfig;
    const NAME: &'static str = "command";
    const DESCRIPTION: &'static str =
        "runs a command; exit 0 is success (HEALER_TARGET, HEALER_FINDING, HEALER_DETAILS, ... in its env)";
    const SAMPLE_CONFIG: &'static str = r#"argv = ["systemctl", "reload", "nginx"]  # no shell; use ["sh", "-c", "..."] for one
env = { LANG = "C" }                     # added to the cleared environment (default none)
# cwd = "/srv/app"                       # working directory (default healer's)
timeout = "30s"                          # killed and failed after this long
detach = false                           # true: start it and do not wait (a foreground service)
detach_grace = "200ms"                   # a detached command must survive this long
# systemd_run = "myapp"                  # systemd starts it as the transient service myapp.service
"#;

    fn new(mut config: CommandConfig) -> Result<Self, Error> {
        if config.argv.is_empty() || config.argv[0].is_empty() {
            return Err("`argv` must name a program: argv = [\"program\", \"arg\", ...]".into());
        }
        if let Some(unit) = &config.systemd_run {
            let unit =
                command::service_name(unit).map_err(|err| format!("`systemd_run`: {err}"))?;
            if config.detach {
                return Err(format!(
                    "`detach` and `systemd_run` exclude each other: systemd starts {unit} and healer waits only for systemd-run; remove `detach`"
                )
                .into());
            }
            config.systemd_run = Some(unit);
        }
        Ok(Command(config))
    }

    async fn recover(&mut self, recovery: &Recovery) -> Result<Outcome, Error> {
        let spec = Spec {
            argv: &self.0.argv,
            env: &self.0.env,
            cwd: self.0.cwd.as_deref(),
            timeout: self.0.timeout.into(),
            detach: self.0.detach.then_some(self.0.detach_grace.into()),
            service: self.0.systemd_run.as_deref(),
        };
        run(&spec, recovery)
            .await
            .map(Outcome::done)
            .map_err(Error::from)
    }
}

/// Options of the `service-restart` recoverer.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// A systemd unit: `systemctl restart UNIT`.
    unit: Option<String>,
    /// Without systemd: stop command (its failure is ignored: the service may be down).
    #[serde(default)]
    stop: Vec<String>,
    /// Without systemd: start command.
    #[serde(default)]
    start: Vec<String>,
    /// Start the `start` command detached (a service that stays in the foreground).
    #[serde(default)]
    detach: bool,
    /// Per command.
    #[serde(default = "default_timeout")]
    timeout: Duration,
}

/// Restarts a service.
pub struct ServiceRestart(ServiceConfig);

impl Recoverer for ServiceRestart {
    type Config = ServiceConfig;
    const NAME: &'static str = "service-restart";
    const DESCRIPTION: &'static str = "restarts a systemd unit, or runs stop then start commands";
    const SAMPLE_CONFIG: &'static str = r#"unit = "nginx.service"   # systemctl restart UNIT
# Without systemd, instead of unit:
# stop = ["/etc/init.d/nginx", "stop"]   # failure ignored
# start = ["/etc/init.d/nginx", "start"]
# detach = false                          # true: start runs in the foreground, do not wait
timeout = "30s"                           # per command
"#;

    fn new(config: ServiceConfig) -> Result<Self, Error> {
        match (&config.unit, config.start.is_empty()) {
            (Some(_), true) if config.stop.is_empty() => Ok(ServiceRestart(config)),
            (None, false) => Ok(ServiceRestart(config)),
            _ => Err(
                "give either `unit` (systemd) or `start` (and optionally `stop`), not both".into(),
            ),
        }
    }

    async fn recover(&mut self, recovery: &Recovery) -> Result<Outcome, Error> {
        let no_env = BTreeMap::new();
        let spec = |argv| Spec {
            argv,
            env: &no_env,
            cwd: None,
            timeout: self.0.timeout.into(),
            detach: None,
            service: None,
        };
        if let Some(unit) = &self.0.unit {
            let argv = ["systemctl".to_owned(), "restart".to_owned(), unit.clone()];
            return run(&spec(&argv), recovery)
                .await
                .map(|_| Outcome::done(format!("restarted {unit}")))
                .map_err(Error::from);
        }
        let mut stopped = String::from("no stop command");
        if !self.0.stop.is_empty() {
            let continued = continue_stopped(&recovery.finding);
            stopped = run(&spec(&self.0.stop), recovery)
                .await
                .unwrap_or_else(|err| format!("stop failed (ignored): {err}"));
            if let Some(continued) = continued {
                stopped = format!("{continued}; {stopped}");
            }
        }
        let start = Spec {
            detach: self.0.detach.then_some(default_grace().into()),
            ..spec(&self.0.start)
        };
        let started = run(&start, recovery).await?;
        Ok(Outcome::done(format!("{stopped}; {started}")))
    }
}

/// Continues the process a finding says is stopped (its details hold
/// `"stopped": true` and its `pid`, as the `process` diagnoser's
/// `process.stopped` does): a stopped process keeps SIGTERM pending until
/// it is continued, so a stop command that sends SIGTERM would wait out
/// its timeout, and the start find the old process still there. SIGCONT
/// is the one signal that harms no process the pid may name by now.
/// What was done, when anything was.
fn continue_stopped(finding: &healer_plugin_sdk::Finding) -> Option<String> {
    let stopped = finding
        .details
        .get("stopped")
        .and_then(|stopped| stopped.as_bool());
    if stopped != Some(true) {
        return None;
    }
    let pid = finding.details.get("pid")?.as_u64()?;
    let pid = i32::try_from(pid).ok().filter(|&pid| pid > 1)?;
    // Only a process still stopped: the pid comes from a plugin's finding,
    // and by now may name a process someone stopped on purpose.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
    if !matches!(state, 'T' | 't') {
        return None;
    }
    let pid = nix::unistd::Pid::from_raw(pid);
    Some(
        match nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT) {
            Ok(()) => format!("continued stopped pid {pid}"),
            Err(err) => format!("could not continue stopped pid {pid}: {err}"),
        },
    )
}

/// What to run.
struct Spec<'a> {
    argv: &'a [String],
    env: &'a BTreeMap<String, String>,
    cwd: Option<&'a Path>,
    timeout: std::time::Duration,
    /// Do not wait; succeed if it still runs after this long.
    detach: Option<std::time::Duration>,
    /// Have systemd start it as this transient service.
    service: Option<&'a str>,
}

/// Runs `spec` for `recovery`; `Ok` is a one-line summary of what ran, `Err`
/// one line saying why it failed (for a failed exit, the last line of
/// stderr).
async fn run(spec: &Spec<'_>, recovery: &Recovery) -> Result<String, String> {
    let (program, args) = spec.argv.split_first().ok_or("empty argv")?;
    let mut command = command::Command::new(program.as_str())
        .args(args)
        .env(spec.env)
        .timeout(spec.timeout)
        .recovery(recovery);
    if let Some(cwd) = spec.cwd {
        command = command.cwd(cwd);
    }
    let shown = spec.argv.join(" ");
    if let Some(unit) = spec.service {
        let output = command
            .systemd_run(unit)
            .run()
            .await
            .map_err(|err| err.to_string())?;
        if output.code == 0 {
            return Ok(format!("systemd started `{shown}` as {unit}"));
        }
        // systemd-run gives its reason in a line or two ("System has not
        // been booted with systemd...", then "Failed to connect to bus").
        let stderr = String::from_utf8_lossy(&output.stderr_tail);
        let lines: Vec<&str> = stderr
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect();
        let last = match lines.len() {
            0 => "no output on stderr".to_owned(),
            n => lines[n.saturating_sub(3)..].join("; "),
        };
        return Err(format!(
            "systemd did not start `{shown}` as {unit}: systemd-run failed (exit code {}): {last}",
            output.code
        ));
    }
    if let Some(grace) = spec.detach {
        let pid = command
            .start_detached(grace)
            .await
            .map_err(|err| err.to_string())?;
        return Ok(format!("started `{shown}` (pid {pid})"));
    }
    let output = command.run().await.map_err(|err| err.to_string())?;
    if output.code == 0 {
        return Ok(format!("ran `{shown}`"));
    }
    let last = output
        .last_stderr_line()
        .unwrap_or_else(|| "no output on stderr".to_owned());
    Err(format!(
        "`{shown}` failed (exit code {}): {last}",
        output.code
    ))
}

healer_plugin_sdk::export_plugins! {
    recoverers: [Command, ServiceRestart],
}

#[cfg(test)]
mod tests {
    use super::*;
    use healer_plugin_sdk::Finding;
    use std::time::Instant;

    fn recovery() -> Recovery {
        Recovery {
            target: "web".into(),
            finding: Finding::critical("http.status_5xx", "503"),
            attempt: 2,
            params: serde_json::Value::Null,
            fence: None,
        }
    }

    fn command(config: serde_json::Value) -> Command {
        Command::new(serde_json::from_value(config).unwrap()).unwrap()
    }

    async fn run_sh(script: &str, timeout: &str) -> Result<Outcome, String> {
        command(serde_json::json!({"argv": ["sh", "-c", script], "timeout": timeout}))
            .recover(&recovery())
            .await
            .map_err(|err| err.to_string())
    }

    #[tokio::test]
    async fn a_stop_command_sending_sigterm_ends_a_service_found_stopped() {
        let mut service = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = service.id();
        let sent = std::process::Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let restart = ServiceRestart::new(
            serde_json::from_value(serde_json::json!({
                "stop": ["kill", "-TERM", pid.to_string()],
                "start": ["true"],
                "timeout": "5s",
            }))
            .unwrap(),
        )
        .unwrap()
        .recover(&Recovery {
            finding: Finding::critical("process.stopped", "stopped: pid 1 stopped for 5.0s")
                .detail("stopped", true)
                .detail("pid", pid),
            ..recovery()
        })
        .await
        .unwrap();
        let started = Instant::now();
        let ended = loop {
            if let Some(status) = service.try_wait().unwrap() {
                break Some(status);
            }
            if started.elapsed() > std::time::Duration::from_secs(2) {
                let _ = service.kill();
                let _ = service.wait();
                break None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        };
        assert!(ended.is_some(), "the stopped service outlived its SIGTERM");
        assert!(
            restart
                .summary
                .starts_with(&format!("continued stopped pid {pid}; ran `kill -TERM")),
            "{restart:?}"
        );
    }

    #[tokio::test]
    async fn exit_zero_is_success_and_the_finding_is_in_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("seen");
        let script = format!(
            "echo $HEALER_TARGET $HEALER_FINDING $HEALER_ATTEMPT $GREETING > {}",
            out.display()
        );
        let outcome = command(serde_json::json!({
            "argv": ["sh", "-c", script],
            "env": {"GREETING": "hello"},
        }))
        .recover(&recovery())
        .await
        .unwrap();
        assert!(outcome.summary.starts_with("ran `sh -c"), "{outcome:?}");
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "web http.status_5xx 2 hello\n"
        );
    }

    #[tokio::test]
    async fn a_failure_reports_the_exit_code_and_the_last_stderr_line() {
        let err = run_sh("echo first >&2; echo disk full >&2; exit 3", "5s")
            .await
            .unwrap_err();
        assert!(err.ends_with("failed (exit code 3): disk full"), "{err}");
    }

    #[tokio::test]
    async fn a_background_child_holding_the_output_does_not_stall_the_result() {
        let started = Instant::now();
        assert!(run_sh("sleep 5 & exit 0", "4s").await.is_ok());
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_command_past_its_timeout_is_killed_and_fails() {
        let err = run_sh("sleep 5", "100ms").await.unwrap_err();
        assert_eq!(
            err,
            "\"sh\" timed out after 100ms (its process group was killed)"
        );
    }

    #[tokio::test]
    async fn the_parents_environment_does_not_reach_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        let script = format!("env > {}", out.display());
        run_sh(&script, "5s").await.unwrap();
        let seen = std::fs::read_to_string(&out).unwrap();
        // The shell sets PWD, SHLVL and `_` itself.
        let allowed = ["LANG", "PATH", "PWD", "SHLVL", "_"];
        for (name, _) in std::env::vars() {
            if !allowed.contains(&name.as_str()) {
                assert!(!seen.contains(&format!("\n{name}=")), "{name} leaked");
            }
        }
        assert!(seen.contains(&format!("PATH={}", command::PATH)), "{seen}");
    }

    fn config_error(config: serde_json::Value) -> String {
        match Command::new(serde_json::from_value(config).unwrap()) {
            Ok(_) => panic!("accepted"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn systemd_run_needs_a_service_name_and_no_detach() {
        assert_eq!(
            config_error(serde_json::json!({"argv": ["myapp"], "systemd_run": "my app"})),
            "`systemd_run`: \"my app\" is no service name: ' ' is not allowed (letters, digits and :_.-\\ only)"
        );
        assert_eq!(
            config_error(serde_json::json!({"argv": ["myapp"], "systemd_run": "myapp", "detach": true})),
            "`detach` and `systemd_run` exclude each other: systemd starts myapp.service and healer waits only for systemd-run; remove `detach`"
        );
        let accepted = command(serde_json::json!({"argv": ["myapp"], "systemd_run": "myapp"}));
        assert_eq!(accepted.0.systemd_run.as_deref(), Some("myapp.service"));
    }

    /// Whether systemd is PID 1 here (sd_booted(3)'s test).
    fn systemd_is_pid_1() -> bool {
        std::path::Path::new("/run/systemd/system").is_dir()
    }

    #[tokio::test]
    async fn systemd_run_starts_a_transient_service_or_says_why_it_cannot() {
        let unit = format!("healer-test-{}.service", std::process::id());
        let result = command(serde_json::json!({
            "argv": ["sleep", "600"],
            "systemd_run": unit,
            "timeout": "20s",
        }))
        .recover(&recovery())
        .await;
        if systemd_is_pid_1() {
            let outcome = result.unwrap();
            assert_eq!(
                outcome.summary,
                format!("systemd started `sleep 600` as {unit}")
            );
            let stopped = std::process::Command::new("systemctl")
                .args(["stop", &unit])
                .status()
                .unwrap();
            assert!(stopped.success());
        } else if std::path::Path::new("/usr/bin/systemd-run").exists() {
            // systemd installed but not PID 1, as on these test machines.
            let err = result.unwrap_err().to_string();
            assert!(
                err.starts_with(&format!(
                    "systemd did not start `sleep 600` as {unit}: systemd-run failed (exit code 1): System has not been booted with systemd"
                )),
                "{err}"
            );
            assert_eq!(err.lines().count(), 1, "{err}");
        } else {
            let err = result.unwrap_err().to_string();
            assert!(err.starts_with("cannot start \"systemd-run\""), "{err}");
        }
    }

    #[tokio::test]
    async fn systemd_run_missing_is_a_clear_error() {
        let nowhere = tempfile::tempdir().unwrap();
        let err = command(serde_json::json!({
            "argv": ["/usr/bin/myapp"],
            "env": {"PATH": nowhere.path()},
            "systemd_run": "myapp",
        }))
        .recover(&recovery())
        .await
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("cannot start \"systemd-run\": No such file or directory")
                && err.ends_with("starting myapp.service needs systemd's systemd-run in PATH (`apt install systemd`), and systemd as PID 1"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn service_restart_ignores_a_failed_stop_and_starts_detached() {
        let restart = ServiceRestart::new(
            serde_json::from_value(serde_json::json!({
                "stop": ["sh", "-c", "echo not running >&2; exit 1"],
                "start": ["sh", "-c", "exec sleep 30"],
                "detach": true,
            }))
            .unwrap(),
        );
        let outcome = restart.unwrap().recover(&recovery()).await.unwrap();
        assert!(
            outcome
                .summary
                .starts_with("stop failed (ignored): `sh -c echo not running >&2; exit 1` failed (exit code 1): not running; started `sh -c exec sleep 30` (pid "),
            "{}",
            outcome.summary
        );
        let pid: i32 = outcome
            .summary
            .rsplit("(pid ")
            .next()
            .unwrap()
            .trim_end_matches(')')
            .parse()
            .unwrap();
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
    }
}
