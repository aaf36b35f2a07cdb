//! The `healer` command line: argument parsing (clap) and the output of
//! each command. Commands return the process exit code.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use healer_plugin_sdk::Status;

use crate::config::{self, Config};
use crate::daemon;
use crate::engine;
use crate::events::Events;
use crate::loading::Options;
use crate::operator;
use crate::operator::fail;
use crate::plugins::Catalog;

/// healer: a self-healing daemon for Linux services.
///
/// Loads monitor, diagnoser and recoverer plugins from shared objects and
/// runs the monitor -> diagnose -> recover loop over the targets its TOML
/// config names.
#[derive(Debug, Parser)]
#[command(name = "healer", version, about, long_about)]
pub struct Cli {
    /// The config file.
    #[arg(short, long, global = true, default_value = config::DEFAULT_CONFIG, value_name = "FILE")]
    pub config: PathBuf,

    /// Load plugins from this directory instead of the config's `plugins_dir`.
    #[arg(long, global = true, value_name = "DIR")]
    pub plugins_dir: Option<PathBuf>,

    /// Say more: full load diagnostics (layout dumps) and debug logs.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the healing loop over every enabled target until SIGTERM/SIGINT.
    ///
    /// Exits 0 at once when `[healer] enabled = false`, and 1 when the
    /// config or a plugin config is invalid (with one line per problem).
    Run,
    /// Check the config and every plugin config without running anything
    /// (like `nginx -t`). Exits 0 when all is well, 1 otherwise.
    Check,
    /// Check every target once, print a table, and exit with the worst
    /// status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (Nagios codes).
    Once {
        /// Only this target.
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
        /// Also run the recoveries that are due, as `run` would.
        #[arg(long)]
        recover: bool,
    },
    /// Show what an anomaly of this name would start: the reflex that
    /// matches (first match wins) and where it is written, the workflow, its
    /// parameters and rendered steps. Runs nothing; exits 1 when no reflex
    /// matches.
    Explain {
        /// The anomaly name, e.g. api_latency.coinbase.high.
        name: String,
    },
    /// Post an anomaly to the running daemon's intake (`POST /anomaly`, at
    /// the config's `[intake] bind`, with its token), and print the answer.
    Send {
        /// The anomaly name.
        name: String,
        /// A detail as key=value (repeatable); numbers and booleans stay typed.
        #[arg(long = "detail", short = 'd', value_name = "KEY=VALUE")]
        details: Vec<String>,
        /// Only report what would run (`?dry_run=true`).
        #[arg(long)]
        dry_run: bool,
    },
    /// Show every target of the running daemon (status, last check,
    /// issues, pause), like `monit summary`. Exits with the worst status:
    /// 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN or not checked yet; 4 when
    /// the daemon cannot be asked.
    Status {
        /// Print the API's JSON (`GET /api/v1/targets`).
        #[arg(long)]
        json: bool,
    },
    /// Show the running daemon's recent events, newest first.
    History {
        /// Only this target's (or anomaly's) events.
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
        /// Only events of this name, or of this prefix (`issue` for every
        /// `issue_*` event).
        #[arg(long, value_name = "EVENT")]
        kind: Option<String>,
        /// Only events since this time (2026-11-23T10:00:00Z) or age (30m).
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// At most this many events.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Reset an issue (TARGET/KIND, or TARGET for every escalated one):
    /// it is open again with its recovery attempts back.
    Reset {
        /// TARGET/KIND, e.g. web/process.not_running, or TARGET.
        issue: String,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Pause a target's recoveries for maintenance: checks go on,
    /// recoveries do not, until the pause ends by itself (it survives a
    /// restart of healer) or `healer resume`.
    Pause {
        /// The target.
        target: String,
        /// How long, e.g. 30m or 2h (at most 30 days).
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
        /// Why (shown in the status, the dashboard and the history).
        #[arg(long, default_value = "maintenance")]
        reason: String,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// End a target's pause: recoveries act again.
    Resume {
        /// The target.
        target: String,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make the running daemon re-read its config and rescan its plugins
    /// directory (as SIGHUP does), and say what changed. A bad config is
    /// rejected with its problems (exit 1); the running one carries on.
    Reload {
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the plugin packages in the plugins directory: each package's
    /// file, name, version and SDK version, each plugin's kind, name,
    /// description and sample config, and every file that failed to load.
    ///
    /// Exits 0 when every file loaded (with warnings or not), 1 when any
    /// did not.
    Plugins {
        /// Scan this directory instead of the config's `plugins_dir`.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Internal: started by healer itself to load plugin packages away
    /// from the daemon. `--probe FILE` loads one package and answers
    /// whether it loaded; `healer worker NAME` serves the package healer
    /// assigns it on descriptor 3 (NAME, its file name, is what `ps`
    /// shows).
    #[command(hide = true)]
    Worker {
        /// Load this package file, answer one line and exit.
        #[arg(long, value_name = "FILE", conflicts_with = "package")]
        probe: Option<PathBuf>,
        /// What the probe confines itself to before it loads the package
        /// (JSON).
        #[arg(long, value_name = "JSON", requires = "probe")]
        sandbox: Option<String>,
        /// The package's file name: serve the package healer assigns on
        /// descriptor 3.
        #[arg(value_name = "PACKAGE")]
        package: Option<String>,
    },
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Plugins { ref dir, json } => plugins(&cli, dir.clone(), json),
        Command::Worker {
            ref probe,
            ref sandbox,
            ref package,
        } => match (probe, package) {
            (Some(file), _) => crate::plugins::worker::entry::probe(file, sandbox.as_deref()),
            (None, Some(package)) => crate::plugins::worker::serve::serve(package),
            (None, None) => fail(
                "healer worker is started by healer itself (--probe FILE, or PACKAGE with its socket on descriptor 3)",
            ),
        },
        Command::Run => with_runtime(daemon::run(&cli.options())),
        Command::Status { json } => match operator::Daemon::of(&cli.config) {
            Ok(daemon) => operator::status(&daemon, json),
            Err(err) => {
                eprintln!("healer: {err}");
                ExitCode::from(operator::UNREACHABLE)
            }
        },
        Command::History {
            ref target,
            ref kind,
            ref since,
            limit,
            json,
        } => ask(&cli, |d| {
            operator::history(
                d,
                target.as_deref(),
                kind.as_deref(),
                since.as_deref(),
                limit,
                json,
            )
        }),
        Command::Reset { ref issue, json } => ask(&cli, |d| operator::reset(d, issue, json)),
        Command::Pause {
            ref target,
            ref duration,
            ref reason,
            json,
        } => ask(&cli, |d| operator::pause(d, target, duration, reason, json)),
        Command::Resume { ref target, json } => ask(&cli, |d| operator::resume(d, target, json)),
        Command::Reload { json } => match Config::load(&cli.config) {
            // Checked here first: a config with problems is not sent.
            Err(errors) => fail(&format!(
                "the config on disk has problems, so it was not sent for reload; the running healer carries on with its config:\n{errors}"
            )),
            Ok(_) => ask(&cli, |d| operator::reload(d, json)),
        },
        Command::Check => with_runtime(check(&cli)),
        Command::Once {
            ref target,
            recover,
        } => with_runtime(once(&cli, target.as_deref(), recover)),
        Command::Explain { ref name } => explain(&cli, name),
        Command::Send {
            ref name,
            ref details,
            dry_run,
        } => send(&cli, name, details, dry_run),
    }
}

/// Runs an operator's command against the daemon the config describes.
fn ask(cli: &Cli, command: impl FnOnce(&operator::Daemon) -> ExitCode) -> ExitCode {
    match operator::Daemon::of(&cli.config) {
        Ok(daemon) => command(&daemon),
        Err(err) => fail(&err),
    }
}

fn with_runtime(work: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(work),
        Err(err) => fail(&format!("cannot start the async runtime: {err}")),
    }
}

impl Cli {
    fn options(&self) -> Options {
        Options {
            config: self.config.clone(),
            plugins_dir: self.plugins_dir.clone(),
            verbose: self.verbose,
        }
    }
}

async fn load(cli: &Cli) -> Result<(Config, Catalog), Vec<String>> {
    crate::loading::load(&cli.options()).await
}

fn explain(cli: &Cli, name: &str) -> ExitCode {
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(errors) => return fail(&errors.to_string()),
    };
    let Some(reflex) = config.reflexes.iter().find(|r| r.matches(name)) else {
        let patterns: Vec<&str> = config.reflexes.iter().map(|r| r.pattern.as_str()).collect();
        say!(
            "{name}: no reflex matches, so nothing would run ({} reflexes: {})",
            patterns.len(),
            patterns.join(", ")
        );
        return ExitCode::FAILURE;
    };
    say!("{name}");
    say!("  reflex    {} ({})", reflex.pattern, reflex.origin);
    say!("  workflow  {}", reflex.workflow);
    say!("  params    {}", crate::redact::config(&reflex.params));
    if let Some(workflow) = config.workflows.get(&reflex.workflow) {
        for (index, step) in crate::intake::explain_steps(workflow).iter().enumerate() {
            let step = serde_json::to_string(step).unwrap_or_default();
            say!("  step {}    {step}", index + 1);
        }
    }
    if config.intake.as_ref().is_some_and(|intake| !intake.actions) {
        say!("  (the kill switch is on: [intake] actions = false, so it would only be recorded)");
    }
    ExitCode::SUCCESS
}

fn send(cli: &Cli, name: &str, details: &[String], dry_run: bool) -> ExitCode {
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(errors) => return fail(&errors.to_string()),
    };
    let Some(intake) = &config.intake else {
        return fail(&format!(
            "{}: there is no [intake] table, so no daemon listens for anomalies",
            config.path.display()
        ));
    };
    let mut map = serde_json::Map::new();
    for pair in details {
        match crate::intake::client::detail(pair) {
            Ok((key, value)) => {
                map.insert(key, value);
            }
            Err(err) => return fail(&err),
        }
    }
    let token = match config.intake_token() {
        Ok(token) => token,
        Err(err) => return fail(&err.to_string()),
    };
    let body = serde_json::json!({"name": name, "details": map}).to_string();
    let path = if dry_run {
        "/anomaly?dry_run=true"
    } else {
        "/anomaly"
    };
    match crate::intake::client::post_json(intake.bind, path, &body, token.as_deref()) {
        Ok((status, answer)) => {
            say!("{answer}");
            if (200..300).contains(&status) {
                ExitCode::SUCCESS
            } else {
                eprintln!("healer: the intake answered {status}");
                ExitCode::FAILURE
            }
        }
        Err(err) => fail(&err),
    }
}

async fn check(cli: &Cli) -> ExitCode {
    match load(cli).await {
        Ok((config, catalog)) => {
            let enabled = config.targets.iter().filter(|t| t.enabled).count();
            let plugins: usize = catalog.packages.iter().map(|p| p.plugins.len()).sum();
            say!(
                "{}: OK, {} target{} ({enabled} enabled), {plugins} plugin{} in {} package{}",
                config.path.display(),
                config.targets.len(),
                plural(config.targets.len()),
                plural(plugins),
                catalog.packages.len(),
                plural(catalog.packages.len()),
            );
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for problem in &problems {
                eprintln!("{problem}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn once(cli: &Cli, only: Option<&str>, recover: bool) -> ExitCode {
    let (mut config, catalog) = match load(cli).await {
        Ok(loaded) => loaded,
        Err(problems) => return fail(&problems.join("\n")),
    };
    if let Some(only) = only {
        if !config.targets.iter().any(|t| t.name == only) {
            let names = config.targets.iter().map(|t| t.name.as_str());
            let hint = config::did_you_mean(only, names)
                .map_or_else(String::new, |g| format!(" (did you mean \"{g}\"?)"));
            return fail(&format!(
                "{}: no target is named {only:?}{hint}",
                config.path.display()
            ));
        }
        config.targets.retain(|t| t.name == only);
    }
    let _logging = recover.then(|| crate::log::init(&config.healer, cli.verbose));
    let runners =
        match engine::build(&config, &catalog, Default::default(), Default::default()).await {
            Ok(runners) => runners,
            Err(errors) => return fail(&errors.join("\n")),
        };
    // `once` keeps no state: its issues start fresh and are not stored.
    let events = Events::log_only();
    catalog.report_to(&events);
    let mut results = engine::once(runners, recover, config.healer.history, events.clone()).await;
    events.finish(std::time::Duration::from_secs(1));
    results.sort_by(|a, b| a.0.cmp(&b.0));
    let width = results.iter().map(|r| r.0.len()).max().unwrap_or(6).max(6);
    say!("{:<width$}  {:<8}  SUMMARY", "TARGET", "STATUS");
    let mut worst = Status::Ok;
    for (name, seen, findings) in &results {
        worst = worst.max(seen.status);
        let findings = if findings.is_empty() {
            String::new()
        } else {
            format!("  [{}]", findings.join(", "))
        };
        say!(
            "{name:<width$}  {:<8}  {}{findings}",
            seen.status.as_str(),
            seen.summary
        );
    }
    ExitCode::from(worst.exit_code() as u8)
}

fn plugins(cli: &Cli, dir: Option<PathBuf>, json: bool) -> ExitCode {
    // The config says where the plugins are and pins their sha256; with
    // --dir, a config that does not load is no reason not to list.
    let config = config::Config::load(&cli.config);
    let dir = match (dir.or_else(|| cli.plugins_dir.clone()), &config) {
        (Some(dir), _) => dir,
        (None, Ok(config)) => config.healer.plugins_dir.clone(),
        (None, Err(errors)) => {
            return fail(&format!(
                "{errors}\n(or name a plugins directory with --dir)"
            ))
        }
    };
    let plugins = config.map(|config| config.plugins).unwrap_or_default();
    let catalog = match Catalog::scan(&dir, &plugins) {
        Ok(catalog) => catalog,
        Err(err) => return fail(&err.to_string()),
    };
    if json {
        match serde_json::to_string_pretty(&catalog) {
            Ok(text) => say!("{text}"),
            Err(err) => return fail(&format!("cannot encode the listing as JSON: {err}")),
        }
    } else {
        say!("{}", render_catalog(&catalog, cli.verbose > 0).trim_end());
    }
    // A warning is about a package that loaded: listed, not failed.
    if catalog.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The human listing of `healer plugins`.
fn render_catalog(catalog: &Catalog, verbose: bool) -> String {
    let plugin_count: usize = catalog.packages.iter().map(|p| p.plugins.len()).sum();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {} package{}, {} plugin{}, {} error{}{}",
        catalog.dir.display(),
        catalog.packages.len(),
        plural(catalog.packages.len()),
        plugin_count,
        plural(plugin_count),
        catalog.errors.len(),
        plural(catalog.errors.len()),
        match catalog.warnings.len() {
            0 => String::new(),
            n => format!(", {n} warning{}", plural(n)),
        }
    );
    for package in &catalog.packages {
        let _ = writeln!(
            out,
            "\n{} {} (SDK {})  {}",
            package.name,
            package.version,
            package.sdk_version,
            package.file.display()
        );
        let _ = writeln!(
            out,
            "  sha256 {}  isolation {}",
            package.sha256.as_deref().unwrap_or("-"),
            package.isolation.as_str()
        );
        for plugin in &package.plugins {
            let _ = writeln!(
                out,
                "  {:<10} {:<20} {}",
                plugin.kind.as_str(),
                plugin.name,
                plugin.description
            );
            if !plugin.sample_config.trim().is_empty() {
                let _ = writeln!(out, "  {:<10} sample config:", "");
                for line in plugin.sample_config.trim_end().lines() {
                    let _ = writeln!(out, "  {:<10}   {line}", "");
                }
            }
        }
    }
    for (title, problems) in [
        ("errors (not loaded)", &catalog.errors),
        ("warnings (loaded)", &catalog.warnings),
    ] {
        if problems.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{title}:");
        for err in problems {
            let _ = writeln!(out, "  {err}");
            if let (true, Some(detail)) = (verbose, &err.detail) {
                for line in detail.lines() {
                    let _ = writeln!(out, "      {line}");
                }
            }
        }
    }
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
