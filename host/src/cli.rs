//! The `healer` command line: argument parsing (clap) and the output of
//! each command. Commands return the process exit code.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config;
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

    /// Say more: full load diagnostics (layout dumps) and debug logs.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
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
    }
}

fn plugins(cli: &Cli, dir: Option<PathBuf>, json: bool) -> ExitCode {
    let dir = match dir {
        Some(dir) => dir,
        None => match config::Config::load(&cli.config) {
            Ok(config) => config.healer.plugins_dir,
            Err(errors) => return fail(&format!("{errors}\n(or name a plugins directory with --dir)")),
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
