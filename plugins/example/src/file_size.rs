//! A diagnoser: names what the `file-exists` monitor saw.
use healer_plugin_sdk::{Bytes, Diagnoser, Error, Finding, Observation, Status};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    max_size: Bytes,
    #[serde(default = "three")]
    for_checks: usize,
}

fn three() -> usize {
    3
}

pub struct FileSize(Config);

impl Diagnoser for FileSize {
    type Config = Config;
    const NAME: &'static str = "file-size";
    const DESCRIPTION: &'static str = "file.missing, or file.too_large when it stays too large";
    const SAMPLE_CONFIG: &'static str = concat!(
        "max_size = \"100MiB\"  # file.too_large above this size...\n",
        "for_checks = 3        # ...for this many checks in a row",
    );
    const BLOCKS: bool = false; // it only reads the observations

    fn new(config: Config) -> Result<Self, Error> {
        if config.for_checks == 0 {
            return Err("for_checks must be at least 1".into());
        }
        Ok(FileSize(config))
    }

    fn history_needed(config: &Config) -> usize {
        config.for_checks.saturating_sub(1) // the checks before the latest
    }

    fn diagnose(&mut self, latest: &Observation, history: &[Observation]) -> Vec<Finding> {
        if latest.status == Status::Critical {
            return vec![Finding::critical("file.missing", latest.summary.clone())];
        }
        let limit = self.0.max_size.0 as f64;
        let too_large = |seen: &Observation| seen.metric_value("size").is_some_and(|b| b > limit);
        // `history` is oldest first: the checks just before the latest are at its end.
        let before = self.0.for_checks - 1;
        let recent = &history[history.len().saturating_sub(before)..];
        if too_large(latest) && recent.len() == before && recent.iter().all(too_large) {
            let summary = format!("above {} for {} checks", self.0.max_size, self.0.for_checks);
            vec![Finding::warning("file.too_large", summary)]
        } else {
            vec![]
        }
    }
}
