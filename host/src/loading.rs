//! What `healer` starts from: the command line's options, the config
//! they name, and the plugin packages that config needs, scanned and
//! checked together, so every problem is said at once, in file order.
//! `run`, `check`, `once` and a reload all load this way.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use crate::config::{Config, ConfigError};
use crate::model::PluginRecord;
use crate::plugins::{Catalog, LoadError, Package};

/// What the command line says about where things are.
#[derive(Clone, Debug)]
pub struct Options {
    /// The config file.
    pub config: PathBuf,
    /// Load plugins from here instead of the config's `plugins_dir`.
    pub plugins_dir: Option<PathBuf>,
    /// `-v` count.
    pub verbose: u8,
}

/// Something wrong with the config or the plugins it needs.
#[derive(Debug)]
pub enum Problem {
    /// A mistake in the config (or a plugin's config in it), with its
    /// file:line:column.
    Config(ConfigError),
    /// The plugins directory cannot be used at all.
    PluginsDir(LoadError),
    /// A package that did not load, or loaded with a problem: not fatal by
    /// itself, said beside the errors (and alone on stderr when nothing
    /// else is wrong).
    Warning(LoadError),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Config(error) => error.fmt(f),
            Problem::PluginsDir(error) => error.fmt(f),
            Problem::Warning(error) => write!(f, "warning: {error}"),
        }
    }
}

/// Every problem, one line each.
pub fn lines(problems: &[Problem]) -> Vec<String> {
    problems.iter().map(ToString::to_string).collect()
}

/// The config, the plugins it needs, and every problem with either: a
/// config with problems of its own still has its plugins' configs checked,
/// and all are said together, in file order. Warnings (packages that
/// failed to load but are not needed) are printed to stderr when
/// everything else is fine.
pub async fn load(options: &Options) -> Result<(Config, Catalog), Vec<Problem>> {
    load_remembering(options, |_| HashMap::new()).await
}

/// [`load`], each package carrying on from what `remembered` says of it
/// (by file name: its crashes, its quarantine) before any of its plugins
/// is asked anything: a quarantined package's worker is not started to
/// check the config.
pub async fn load_remembering(
    options: &Options,
    remembered: impl FnOnce(&Config) -> HashMap<String, PluginRecord>,
) -> Result<(Config, Catalog), Vec<Problem>> {
    let (mut config, problems) = Config::load_with_problems(&options.config).map_err(|errors| {
        errors
            .0
            .into_iter()
            .map(Problem::Config)
            .collect::<Vec<_>>()
    })?;
    if let Some(dir) = &options.plugins_dir {
        config.healer.plugins_dir.clone_from(dir);
    }
    let records = remembered(&config);
    scanned_and_checked(config, problems, &[], &records).await
}

/// The config file, with the command line's plugins directory.
pub fn read_config(options: &Options) -> Result<Config, Vec<Problem>> {
    let mut config = Config::load(&options.config).map_err(|errors| {
        errors
            .0
            .into_iter()
            .map(Problem::Config)
            .collect::<Vec<_>>()
    })?;
    if let Some(dir) = &options.plugins_dir {
        config.healer.plugins_dir.clone_from(dir);
    }
    Ok(config)
}

/// `config` with the plugins it needs, scanned and checked as its
/// `[plugins]` says, keeping the `running` packages whose files did not
/// change (a reload; see [`Catalog::scan_keeping`]); see [`load`].
pub async fn with_plugins(
    config: Config,
    running: &[Package],
) -> Result<(Config, Catalog), Vec<Problem>> {
    scanned_and_checked(config, Vec::new(), running, &HashMap::new()).await
}

async fn scanned_and_checked(
    config: Config,
    problems: Vec<ConfigError>,
    running: &[Package],
    remembered: &HashMap<String, PluginRecord>,
) -> Result<(Config, Catalog), Vec<Problem>> {
    let catalog = match Catalog::rescan(&config.healer.plugins_dir, &config.plugins, running) {
        Ok(catalog) => catalog,
        Err(err) => {
            let mut all: Vec<Problem> = problems.into_iter().map(Problem::Config).collect();
            all.push(Problem::PluginsDir(err));
            return Err(all);
        }
    };
    catalog.remember(remembered);
    let mut errors = problems;
    errors.extend(catalog.check_config(&config).await);
    crate::config::sort_by_place(&mut errors);
    let mut problems: Vec<Problem> = catalog
        .errors
        .iter()
        .chain(&catalog.warnings)
        .cloned()
        .map(Problem::Warning)
        .collect();
    if let Err(err) = config.intake_token() {
        problems.extend(errors.into_iter().map(Problem::Config));
        problems.push(Problem::Config(err));
        return Err(problems);
    }
    if errors.is_empty() {
        for warning in problems {
            eprintln!("healer: {warning}");
        }
        Ok((config, catalog))
    } else {
        problems.extend(errors.into_iter().map(Problem::Config));
        Err(problems)
    }
}
