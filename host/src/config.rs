//! The config file, `healer.toml`. Only this module parses TOML.
//!
//! So far it knows where plugins live (`[healer] plugins_dir`, relative to
//! the config file, default `plugins/` beside it) and how a plugin's TOML
//! table becomes the JSON its package deserializes.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

/// Where the default config lives, relative to the working directory.
pub const DEFAULT_CONFIG: &str = "config/healer.toml";

#[derive(Deserialize, Default)]
struct File {
    #[serde(default)]
    healer: Healer,
}

#[derive(Deserialize, Default)]
struct Healer {
    plugins_dir: Option<PathBuf>,
}

/// The plugins directory named by the config at `config_path`, resolved
/// against the config file's own directory.
pub fn plugins_dir(config_path: &Path) -> Result<PathBuf, String> {
    let text = std::fs::read_to_string(config_path)
        .map_err(|err| format!("{}: cannot read the config: {err}", config_path.display()))?;
    let file: File = toml::from_str(&text)
        .map_err(|err| format!("{}: {}", config_path.display(), err.to_string().trim_end()))?;
    let base = config_path.parent().unwrap_or(Path::new("."));
    Ok(base.join(
        file.healer
            .plugins_dir
            .unwrap_or_else(|| PathBuf::from("plugins")),
    ))
}

/// A plugin's config as written in TOML (e.g. its sample config), as the
/// JSON object the plugin's package deserializes.
pub fn plugin_table_to_json(toml_text: &str) -> Result<Value, String> {
    let table: toml::Table =
        toml::from_str(toml_text).map_err(|err| err.to_string().trim_end().to_owned())?;
    serde_json::to_value(table).map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugins_dir_is_relative_to_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("healer.toml");
        std::fs::write(&config, "[healer]\nplugins_dir = \"../lib/plugins\"\n").unwrap();
        assert_eq!(
            plugins_dir(&config).unwrap(),
            dir.path().join("../lib/plugins")
        );
        std::fs::write(&config, "").unwrap();
        assert_eq!(plugins_dir(&config).unwrap(), dir.path().join("plugins"));
    }

    #[test]
    fn a_broken_config_names_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("healer.toml");
        std::fs::write(&config, "[healer]\nplugins_dir = \n").unwrap();
        let err = plugins_dir(&config).unwrap_err();
        assert!(
            err.starts_with(&format!("{}: TOML parse error at line 2", config.display())),
            "{err}"
        );
    }

    #[test]
    fn toml_tables_become_json_objects() {
        let json = plugin_table_to_json("url = \"http://x\"\ntimeout = 2\n# comment\n").unwrap();
        assert_eq!(json, serde_json::json!({"url": "http://x", "timeout": 2}));
    }
}
