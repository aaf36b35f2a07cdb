//! Recoverers that run programs: `command` runs one command (argv, env,
//! timeout; exit 0 = success), `service-restart` restarts a service through
//! systemd, or with stop/start commands where there is no systemd (the
//! seed's ServiceRestartRecovery).

mod run;

use std::collections::BTreeMap;
use std::path::PathBuf;

use healer_plugin_sdk::{Duration, Error, Outcome, Recoverer, Recovery};
use serde::Deserialize;

use run::{run, Spec};

/// Options of the `command` recoverer.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    /// Program and arguments; no shell is involved (use `["sh", "-c", ...]`).
    argv: Vec<String>,
    /// Extra environment variables.
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
env = { LANG = "C" }                     # extra environment (default none)
# cwd = "/srv/app"                       # working directory (default healer's)
timeout = "30s"                          # killed and failed after this long
detach = false                           # true: start it and do not wait (a foreground service)
detach_grace = "200ms"                   # a detached command must survive this long
"#;

    fn new(config: CommandConfig) -> Result<Self, Error> {
        if config.argv.is_empty() || config.argv[0].is_empty() {
            return Err("`argv` must name a program: argv = [\"program\", \"arg\", ...]".into());
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
        let timeout: std::time::Duration = self.0.timeout.into();
        if let Some(unit) = &self.0.unit {
            let argv = vec!["systemctl".to_owned(), "restart".to_owned(), unit.clone()];
            let spec = Spec {
                argv: &argv,
                env: &no_env,
                cwd: None,
                timeout,
                detach: None,
            };
            return run(&spec, recovery)
                .await
                .map(|_| Outcome::done(format!("restarted {unit}")))
                .map_err(Error::from);
        }
        let mut stopped = String::from("no stop command");
        if !self.0.stop.is_empty() {
            let spec = Spec {
                argv: &self.0.stop,
                env: &no_env,
                cwd: None,
                timeout,
                detach: None,
            };
            stopped = run(&spec, recovery)
                .await
                .unwrap_or_else(|err| format!("stop failed (ignored): {err}"));
        }
        let detach = self.0.detach.then_some(default_grace().into());
        let spec = Spec {
            argv: &self.0.start,
            env: &no_env,
            cwd: None,
            timeout,
            detach,
        };
        let started = run(&spec, recovery).await?;
        Ok(Outcome::done(format!("{stopped}; {started}")))
    }
}

healer_plugin_sdk::export_plugins! {
    recoverers: [Command, ServiceRestart],
}
