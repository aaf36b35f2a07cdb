//! A recoverer: puts a file back from a known-good copy.
use healer_plugin_sdk::{tokio, Error, Outcome, Recoverer, Recovery};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    from: String,
    to: String,
}

pub struct RestoreFile(Config);

impl Recoverer for RestoreFile {
    type Config = Config;
    const NAME: &'static str = "restore-file";
    const DESCRIPTION: &'static str = "copies a known-good file over a missing or broken one";
    const SAMPLE_CONFIG: &'static str = concat!(
        "from = \"/var/backups/report.csv\"  # the known-good copy\n",
        "to = \"/srv/app/report.csv\"        # the file it puts back",
    );

    fn new(config: Config) -> Result<Self, Error> {
        // The config's shape only: the sample above is checked on every host
        // that loads the package, where neither file need exist.
        if config.from == config.to {
            return Err(format!("`from` and `to` are the same file: {}", config.to).into());
        }
        Ok(RestoreFile(config))
    }

    async fn recover(&mut self, recovery: &Recovery) -> Result<Outcome, Error> {
        // What to copy comes from the config alone. In a workflow step,
        // `recovery.params` are whatever the reflex says, and the finding
        // whatever the anomaly's poster sent: neither picks a file here.
        let (from, to) = (&self.0.from, &self.0.to);
        let bytes = tokio::fs::copy(from, to)
            .await
            .map_err(|err| format!("cannot copy {from} to {to}: {err}"))?;
        let summary = format!("restored {to} from {from} ({})", recovery.finding.kind);
        Ok(Outcome::done(summary).detail("bytes", bytes))
    }
}
