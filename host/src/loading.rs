//! What `healer` starts from: the command line's options, the config
//! they name, and the plugin packages that config needs, scanned and
//! checked together, so every problem is said at once, in file order.
//! `run`, `check`, `once` and a reload all load this way.

use std::path::PathBuf;

use crate::config::Config;
use crate::plugins::Catalog;

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

/// The config, the plugins it needs, and every problem with either: a
/// config with problems of its own still has its plugins' configs checked,
/// and all are said together, in file order. Warnings (packages that
/// failed to load but are not needed) are printed to stderr when
/// everything else is fine.
pub async fn load(options: &Options) -> Result<(Config, Catalog), Vec<String>> {
    let (mut config, problems) = Config::load_with_problems(&options.config)
        .map_err(|errors| errors.0.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    if let Some(dir) = &options.plugins_dir {
        config.healer.plugins_dir.clone_from(dir);
    }
    checked_with_plugins(config, problems).await
}

/// The config file, with the command line's plugins directory.
pub fn read_config(options: &Options) -> Result<Config, Vec<String>> {
    let mut config = Config::load(&options.config)
        .map_err(|errors| errors.0.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    if let Some(dir) = &options.plugins_dir {
        config.healer.plugins_dir.clone_from(dir);
    }
    Ok(config)
}

/// `config` with the plugins it needs, scanned and checked as its
/// `[plugins]` says; see [`load`].
pub async fn with_plugins(config: Config) -> Result<(Config, Catalog), Vec<String>> {
    checked_with_plugins(config, Vec::new()).await
}

/// [`with_plugins`] of a config with these `problems` of its own.
async fn checked_with_plugins(
    config: Config,
    problems: Vec<crate::config::ConfigError>,
) -> Result<(Config, Catalog), Vec<String>> {
    let catalog = Catalog::scan(&config.healer.plugins_dir, &config.plugins).map_err(|err| {
        let mut all: Vec<String> = problems.iter().map(ToString::to_string).collect();
        all.push(err.to_string());
        all
    })?;
    let mut errors = problems;
    errors.extend(catalog.check_config(&config).await);
    crate::config::sort_by_place(&mut errors);
    let mut problems: Vec<String> = catalog
        .errors
        .iter()
        .chain(&catalog.warnings)
        .map(|e| format!("warning: {e}"))
        .collect();
    if let Err(err) = config.intake_token() {
        problems.extend(errors.iter().map(ToString::to_string));
        problems.push(err.to_string());
        return Err(problems);
    }
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
