//! Log plugins: the `logscan` monitor reads the lines appended to a file
//! since its last check, across rotation (rename + new file: the rest of
//! the old file is read first, so no line is lost) and truncation; the
//! `logscan` diagnoser matches them against regex patterns, each with its
//! finding kind and severity.

mod tail;

use healer_plugin_sdk::{Diagnoser, Error, Finding, Monitor, Observation, Status};
use regex::Regex;
use serde::Deserialize;

use tail::Tail;

/// Options of the `logscan` monitor.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    path: std::path::PathBuf,
    /// Read the file from its start the first time (default: only new lines).
    #[serde(default)]
    from_start: bool,
    /// At most this many lines per check; the rest wait for the next one.
    #[serde(default = "default_max_lines")]
    max_lines: usize,
}

fn default_max_lines() -> usize {
    1000
}

/// Reads what was appended to a log file.
pub struct LogMonitor {
    tail: Tail,
    max_lines: usize,
}

impl Monitor for LogMonitor {
    type Config = MonitorConfig;
    const NAME: &'static str = "logscan";
    const DESCRIPTION: &'static str =
        "reads lines appended to a file since the last check, across rotation and truncation";
    const SAMPLE_CONFIG: &'static str = r#"path = "/var/log/app.log"
from_start = false   # true: read what is already there the first time
max_lines = 1000     # lines per check; the rest wait for the next check
"#;

    fn new(config: MonitorConfig) -> Result<Self, Error> {
        if config.max_lines == 0 {
            return Err("`max_lines` must be at least 1".into());
        }
        Ok(LogMonitor {
            tail: Tail::new(config.path, config.from_start),
            max_lines: config.max_lines,
        })
    }

    async fn check(&mut self) -> Result<Observation, Error> {
        let read = self.tail.read(self.max_lines);
        let lines = match read {
            Ok(lines) => lines,
            Err(err) => {
                return Ok(Observation::unknown(format!(
                    "{}: {err}",
                    self.tail.path().display()
                )))
            }
        };
        let summary = format!(
            "{} new line{}",
            lines.len(),
            if lines.len() == 1 { "" } else { "s" }
        );
        Ok(Observation::ok(summary)
            .metric("lines", lines.len() as f64, "")
            .metric("rotations", self.tail.rotations() as f64, "")
            .detail("lines", lines))
    }
}

/// One pattern of the `logscan` diagnoser.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pattern {
    regex: String,
    #[serde(default = "default_kind")]
    kind: String,
    #[serde(default = "default_severity")]
    severity: Status,
}

fn default_kind() -> String {
    "log.pattern".to_owned()
}

fn default_severity() -> Status {
    Status::Critical
}

/// Options of the `logscan` diagnoser.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiagnoserConfig {
    patterns: Vec<Pattern>,
}

/// Matches new log lines against patterns.
pub struct LogDiagnoser(Vec<(Regex, Pattern)>);

impl Diagnoser for LogDiagnoser {
    type Config = DiagnoserConfig;
    const NAME: &'static str = "logscan";
    const DESCRIPTION: &'static str =
        "a finding per pattern that new log lines match (kind and severity per pattern)";
    const SAMPLE_CONFIG: &'static str = r#"patterns = [
  { regex = "FATAL|panic", kind = "log.fatal", severity = "CRITICAL" },
  { regex = "(?i)out of memory", kind = "log.oom" },       # severity defaults to CRITICAL
  { regex = "WARN", kind = "log.warning", severity = "WARNING" },
]
"#;

    fn new(config: DiagnoserConfig) -> Result<Self, Error> {
        if config.patterns.is_empty() {
            return Err("`patterns` is empty: give at least one { regex = \"...\" }".into());
        }
        let mut compiled = Vec::new();
        for pattern in config.patterns {
            let regex = Regex::new(&pattern.regex)
                .map_err(|e| format!("pattern {:?}: {e}", pattern.regex))?;
            compiled.push((regex, pattern));
        }
        Ok(LogDiagnoser(compiled))
    }

    fn diagnose(&mut self, latest: &Observation, _history: &[Observation]) -> Vec<Finding> {
        let lines: Vec<&str> = latest
            .details
            .get("lines")
            .and_then(|l| l.as_array())
            .map_or_else(Vec::new, |lines| {
                lines.iter().filter_map(|l| l.as_str()).collect()
            });
        let mut findings: Vec<Finding> = Vec::new();
        for (regex, pattern) in &self.0 {
            let matching: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|line| regex.is_match(line))
                .collect();
            let (Some(first), count) = (matching.first(), matching.len()) else {
                continue;
            };
            let summary = if count == 1 {
                (*first).to_owned()
            } else {
                format!("{first} (and {} more matching lines)", count - 1)
            };
            match findings.iter_mut().find(|f| f.kind == pattern.kind) {
                Some(found) => found.severity = found.severity.max(pattern.severity),
                None => findings.push(
                    Finding::new(pattern.kind.clone(), pattern.severity, summary)
                        .detail("lines", matching),
                ),
            }
        }
        findings
    }
}

healer_plugin_sdk::export_plugins! {
    monitors: [LogMonitor],
    diagnosers: [LogDiagnoser],
}
