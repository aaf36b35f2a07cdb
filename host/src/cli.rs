//! The `healer` command line: argument parsing (clap) and the output of
//! each command. Commands return the process exit code.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use healer_plugin_sdk::Status;

use crate::config::{self, Config};
use crate::engine;
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
    /// List the plugin packages in the plugins directory: each package's
    /// file, name, version and SDK version, each plugin's kind, name,
    /// description and sample config, and every file that failed to load.
    ///
    /// Exits 0 when every file loaded, 1 when any did not.
    Plugins {
        /// Scan this directory instead of the config's `plugins_dir`.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Plugins { ref dir, json } => plugins(&cli, dir.clone(), json),
        Command::Run => with_runtime(daemon(&cli)),
        Command::Check => check(&cli),
        Command::Once {
            ref target,
            recover,
        } => with_runtime(once(&cli, target.as_deref(), recover)),
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

/// The config, the plugins it needs, and every problem with either.
fn load(cli: &Cli) -> Result<(Config, Catalog), Vec<String>> {
    let mut config = Config::load(&cli.config)
        .map_err(|errors| errors.0.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    if let Some(dir) = &cli.plugins_dir {
        config.healer.plugins_dir.clone_from(dir);
    }
    let catalog = Catalog::scan(&config.healer.plugins_dir).map_err(|err| vec![err.to_string()])?;
    let mut problems: Vec<String> = catalog
        .errors
        .iter()
        .map(|e| format!("warning: {e}"))
        .collect();
    let errors = catalog.check_config(&config);
    if errors.is_empty() {
        for warning in problems {
            eprintln!("healer: {warning}");
        }
        Ok((config, catalog))
    } else {
        problems.extend(errors.iter().map(ToString::to_string));
        Err(problems)
    }
}

fn check(cli: &Cli) -> ExitCode {
    match load(cli) {
        Ok((config, catalog)) => {
            let enabled = config.targets.iter().filter(|t| t.enabled).count();
            let plugins: usize = catalog.packages.iter().map(|p| p.plugins.len()).sum();
            println!(
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

async fn daemon(cli: &Cli) -> ExitCode {
    let (config, catalog) = match load(cli) {
        Ok(loaded) => loaded,
        Err(problems) => return fail(&problems.join("\n")),
    };
    crate::log::init(&config.healer, cli.verbose);
    if !config.healer.enabled {
        tracing::info!(config = %config.path.display(), "healer is disabled ([healer] enabled = false); exiting");
        return ExitCode::SUCCESS;
    }
    for error in &catalog.errors {
        tracing::warn!(file = %error.file.display(), reason = %error.reason, "plugin package not loaded");
    }
    crate::reaper::become_subreaper();
    let runners = match engine::build(&config, &catalog).await {
        Ok(runners) => runners,
        Err(errors) => {
            for error in &errors {
                tracing::error!("{error}");
            }
            return ExitCode::FAILURE;
        }
    };
    let intake = match &config.intake {
        None => None,
        Some(_) => match crate::intake::Intake::build(&config, &catalog).await {
            Ok(intake) => match crate::intake::listen(&intake).await {
                Ok(listener) => Some((intake, listener)),
                Err(err) => {
                    tracing::error!("{err}");
                    return ExitCode::FAILURE;
                }
            },
            Err(errors) => {
                for error in &errors {
                    tracing::error!("{error}");
                }
                return ExitCode::FAILURE;
            }
        },
    };
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(crate::reaper::reap_orphans(shutdown.clone()));
    tokio::spawn(async move {
        wait_for_stop_signal().await;
        tracing::info!("stopping");
        let _ = stop.send(true);
    });
    tracing::info!(
        config = %config.path.display(),
        targets = runners.len(),
        reflexes = config.reflexes.len(),
        packages = catalog.packages.len(),
        pid = std::process::id(),
        "healer running"
    );
    let serving = intake.map(|(intake, listener)| {
        tokio::spawn(crate::intake::serve(listener, intake, shutdown.clone()))
    });
    engine::run(
        runners,
        config.healer.max_concurrent_recoveries,
        config.healer.history,
        shutdown.clone(),
    )
    .await;
    let mut shutdown = shutdown;
    while !*shutdown.borrow_and_update() {
        if shutdown.changed().await.is_err() {
            break;
        }
    }
    if let Some(serving) = serving {
        let _ = serving.await;
    }
    ExitCode::SUCCESS
}

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

async fn once(cli: &Cli, only: Option<&str>, recover: bool) -> ExitCode {
    let (mut config, catalog) = match load(cli) {
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
    if recover {
        crate::log::init(&config.healer, cli.verbose);
    }
    let runners = match engine::build(&config, &catalog).await {
        Ok(runners) => runners,
        Err(errors) => return fail(&errors.join("\n")),
    };
    let mut results = engine::once(runners, recover, config.healer.history).await;
    results.sort_by(|a, b| a.0.cmp(&b.0));
    let width = results.iter().map(|r| r.0.len()).max().unwrap_or(6).max(6);
    println!("{:<width$}  {:<8}  SUMMARY", "TARGET", "STATUS");
    let mut worst = Status::Ok;
    for (name, seen, findings) in &results {
        worst = worst.max(seen.status);
        let findings = if findings.is_empty() {
            String::new()
        } else {
            format!("  [{}]", findings.join(", "))
        };
        println!(
            "{name:<width$}  {:<8}  {}{findings}",
            seen.status.as_str(),
            seen.summary
        );
    }
    ExitCode::from(worst.exit_code() as u8)
}

fn plugins(cli: &Cli, dir: Option<PathBuf>, json: bool) -> ExitCode {
    let dir = match dir.or_else(|| cli.plugins_dir.clone()) {
        Some(dir) => dir,
        None => match config::Config::load(&cli.config) {
            Ok(config) => config.healer.plugins_dir,
            Err(errors) => {
                return fail(&format!(
                    "{errors}\n(or name a plugins directory with --dir)"
                ))
            }
        },
    };
    let catalog = match Catalog::scan(&dir) {
        Ok(catalog) => catalog,
        Err(err) => return fail(&err.to_string()),
    };
    if json {
        match serde_json::to_string_pretty(&catalog) {
            Ok(text) => println!("{text}"),
            Err(err) => return fail(&format!("cannot encode the listing as JSON: {err}")),
        }
    } else {
        print!("{}", render_catalog(&catalog, cli.verbose > 0));
    }
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
        "{}: {} package{}, {} plugin{}, {} error{}",
        catalog.dir.display(),
        catalog.packages.len(),
        plural(catalog.packages.len()),
        plugin_count,
        plural(plugin_count),
        catalog.errors.len(),
        plural(catalog.errors.len()),
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
    if !catalog.errors.is_empty() {
        let _ = writeln!(out, "\nerrors:");
        for err in &catalog.errors {
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

fn fail(message: &str) -> ExitCode {
    eprintln!("healer: {message}");
    ExitCode::FAILURE
}
