//! `healer plugins`: the packages in the plugins directory, what each
//! exports, and what did not load and why (a table, or JSON); and
//! `healer plugins --check FILE`: whether one built file would load here.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{plural, Cli};
use crate::config;
use crate::operator::fail;
use crate::plugins::{probe_one, Catalog};

pub(super) fn plugins(cli: &Cli, dir: Option<PathBuf>, json: bool) -> ExitCode {
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

/// `healer plugins --check FILE`: one line saying whether `file` would
/// load here (probed in a child, in the sandbox the config gives its file
/// name, as healer probes before it loads), and why not.
pub(super) fn check_file(cli: &Cli, file: &Path, json: bool) -> ExitCode {
    // The config gives the file name its sandbox and pin; without one that
    // loads, the defaults (said, so the answer is not taken for the
    // config's).
    let plugins = match config::Config::load(&cli.config) {
        Ok(config) => config.plugins,
        Err(_) => {
            eprintln!(
                "healer: {} does not load: checked with the default [plugins] settings",
                cli.config.display()
            );
            config::Plugins::default()
        }
    };
    let shown = file.display().to_string();
    let verdict = match std::fs::metadata(file) {
        Ok(meta) if meta.is_file() => probe_one(file, &plugins),
        Ok(_) => Err("not a regular file".to_owned()),
        Err(err) => Err(format!("cannot read it: {err}")),
    };
    if json {
        let answer = match &verdict {
            Ok(probed) => serde_json::json!({
                "file": shown, "loads": true, "name": probed.name,
                "version": probed.version, "sdk_version": probed.sdk_version,
                "sha256": probed.identity.sha256, "plugins": probed.plugins,
                "problems": probed.problems,
            }),
            Err(why) => serde_json::json!({"file": shown, "loads": false, "reason": why}),
        };
        say!("{answer}");
    } else {
        match &verdict {
            Ok(probed) => {
                let plugins: Vec<String> = probed
                    .plugins
                    .iter()
                    .map(|p| format!("{} {}", p.kind.as_str(), p.name))
                    .collect();
                let problems = match probed.problems.as_slice() {
                    [] => String::new(),
                    problems => format!("; with a problem: {}", problems.join("; ")),
                };
                say!(
                    "{shown}: loads here: {} {} (SDK {}), {} plugin{}{}{problems}",
                    probed.name,
                    probed.version,
                    probed.sdk_version,
                    plugins.len(),
                    plural(plugins.len()),
                    if plugins.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", plugins.join(", "))
                    }
                );
            }
            Err(why) => say!("{shown}: does not load here: {why}"),
        }
    }
    if verdict.is_ok() {
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
