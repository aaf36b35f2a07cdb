//! A complete monitor plugin: CRITICAL while a file is missing.
use healer_plugin_sdk::{export_plugins, Error, Monitor, Observation};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    path: String,
}

pub struct FileExists(pub Config);

impl Monitor for FileExists {
    type Config = Config;
    const NAME: &'static str = "file-exists";
    const DESCRIPTION: &'static str = "CRITICAL while a file is missing";
    const SAMPLE_CONFIG: &'static str = "path = \"/etc/hostname\"  # the file that must exist";

    fn new(config: Config) -> Result<Self, Error> {
        Ok(FileExists(config))
    }

    async fn check(&mut self) -> Result<Observation, Error> {
        Ok(match std::fs::metadata(&self.0.path) {
            Ok(meta) => Observation::ok("present").metric("size", meta.len() as f64, "B"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Observation::critical("missing"),
            Err(e) => Observation::unknown(format!("{}: {e}", self.0.path)), // cannot tell
        })
    }
}

export_plugins! { monitors: [FileExists] }
