//! A monitor: CRITICAL while a file is missing.
use healer_plugin_sdk::{tokio, Error, Monitor, Observation};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    path: String,
}

pub struct FileExists(Config);

impl Monitor for FileExists {
    type Config = Config;
    const NAME: &'static str = "file-exists";
    const DESCRIPTION: &'static str = "CRITICAL while a file is missing";
    const SAMPLE_CONFIG: &'static str = "path = \"/etc/hostname\"  # the file that must exist";

    fn new(config: Config) -> Result<Self, Error> {
        Ok(FileExists(config))
    }

    async fn check(&mut self) -> Result<Observation, Error> {
        // tokio::fs, not std::fs: a stat that hangs (a dead NFS server)
        // must not hold the package's one runtime thread.
        Ok(match tokio::fs::metadata(&self.0.path).await {
            Ok(meta) => Observation::ok("present").metric("size", meta.len() as f64, "B"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Observation::critical("missing"),
            Err(e) => Observation::unknown(format!("{}: {e}", self.0.path)), // cannot tell
        })
    }
}
