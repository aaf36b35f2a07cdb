//! Log plugins: the `logscan` monitor reads the lines appended to a file
//! since its last check, across rotation (rename + new file: the rest of
//! the old file is read first, so no line is lost) and truncation; the
//! `logscan` diagnoser matches them against regex patterns, each with its
//! finding kind and severity.
//!
//! What is kept is bounded: a line at 64 KiB, a check's lines at
//! `max_lines` (at most 10,000) and about 1 MiB, a finding's lines at the
//! first 10 matching, each cut at 1 KiB.

#![forbid(unsafe_code)]

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

/// The largest `max_lines` accepted.
const MAX_LINES: usize = 10_000;

/// A check reads no more once its lines reach this many bytes (newlines
/// counted); the rest waits for the next check, so what one observation
/// (and the host's history of them) holds stays bounded.
pub const MAX_BYTES_PER_CHECK: usize = 1024 * 1024;

/// How many matching lines a finding keeps in its details.
const LINES_PER_FINDING: usize = 10;

/// How much of a matching line a finding keeps (summary and details).
const FINDING_LINE: usize = 1024;

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
max_lines = 1000     # lines per check (at most 10000, and about 1 MiB); the rest wait for the next check
"#;

    fn new(config: MonitorConfig) -> Result<Self, Error> {
        if !(1..=MAX_LINES).contains(&config.max_lines) {
            return Err(format!(
                "`max_lines` must be between 1 and {MAX_LINES}, not {}",
                config.max_lines
            )
            .into());
        }
        Ok(LogMonitor {
            tail: Tail::new(config.path, config.from_start),
            max_lines: config.max_lines,
        })
    }

    async fn check(&mut self) -> Result<Observation, Error> {
        let read = self.tail.read(self.max_lines, MAX_BYTES_PER_CHECK);
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
        let seen = Observation::ok(summary)
            .metric("lines", lines.len() as f64, "")
            .metric("rotations", self.tail.rotations() as f64, "")
            .fact("logscan.rotations", self.tail.rotations());
        Ok(seen.detail("lines", lines))
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
    // Reads only the observations: runs in place, no thread hop.
    const BLOCKS: bool = false;
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
            healer_plugin_sdk::check_kind(&pattern.kind)
                .map_err(|e| format!("pattern {:?}: kind {e}", pattern.regex))?;
            compiled.push((regex, pattern));
        }
        Ok(LogDiagnoser(compiled))
    }

    /// Judges the latest observation alone.
    fn history_needed(_config: &Self::Config) -> usize {
        0
    }

    /// One kind per pattern (`log.pattern` where a pattern names none).
    fn kinds(config: &Self::Config) -> Option<Vec<String>> {
        Some(config.patterns.iter().map(|p| p.kind.clone()).collect())
    }

    fn diagnose(&mut self, latest: &Observation, _history: &[Observation]) -> Vec<Finding> {
        // The file could not be read: no lines, and no evidence either way.
        if latest.status == Status::Unknown {
            return Vec::new();
        }
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
                cut(first)
            } else {
                format!("{} (and {} more matching lines)", cut(first), count - 1)
            };
            let kept: Vec<String> = matching
                .iter()
                .take(LINES_PER_FINDING)
                .map(|line| cut(line))
                .collect();
            match findings.iter_mut().find(|f| f.kind == pattern.kind) {
                Some(found) => found.severity = found.severity.max(pattern.severity),
                None => findings.push(
                    Finding::new(pattern.kind.clone(), pattern.severity, summary)
                        .detail("lines", kept)
                        .detail("matching_lines", count),
                ),
            }
        }
        findings
    }
}

/// `line` cut at [`FINDING_LINE`] bytes (on a character boundary).
fn cut(line: &str) -> String {
    if line.len() <= FINDING_LINE {
        return line.to_owned();
    }
    let mut end = FINDING_LINE;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &line[..end])
}

healer_plugin_sdk::export_plugins! {
    monitors: [LogMonitor],
    diagnosers: [LogDiagnoser],
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<T>(work: impl std::future::Future<Output = T>) -> T {
        healer_plugin_sdk::tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(work)
    }

    fn monitor(path: &std::path::Path) -> LogMonitor {
        let config = serde_json::json!({ "path": path, "from_start": true, "max_lines": 10_000 });
        LogMonitor::new(serde_json::from_value(config).unwrap()).unwrap()
    }

    fn diagnoser() -> LogDiagnoser {
        let config = serde_json::json!({ "patterns": [{ "regex": "FATAL", "kind": "log.fatal" }] });
        LogDiagnoser::new(serde_json::from_value(config).unwrap()).unwrap()
    }

    #[test]
    fn a_log_that_cannot_be_read_is_unknown_and_no_finding() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "FATAL\n").unwrap();
        // A path through a file (ENOTDIR), like EACCES or EMFILE an error of
        // the reading; a log that does not exist yet is only waited for.
        let seen = block_on(monitor(&file.join("app.log")).check()).unwrap();
        assert_eq!(seen.status, Status::Unknown, "{}", seen.summary);
        assert!(diagnoser().diagnose(&seen, &[]).is_empty());
        let missing = block_on(monitor(&dir.path().join("later.log")).check()).unwrap();
        assert_eq!(missing.status, Status::Ok);
    }

    #[test]
    fn a_check_keeps_at_most_about_a_mebibyte_of_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        let line = "x".repeat(1023);
        std::fs::write(&path, format!("{line}\n").repeat(3000)).unwrap();
        let mut watched = monitor(&path);
        let first = block_on(watched.check()).unwrap();
        assert_eq!(first.metric_value("lines"), Some(1024.0));
        let second = block_on(watched.check()).unwrap();
        assert_eq!(second.metric_value("lines"), Some(1024.0));
    }

    #[test]
    fn a_kind_that_cannot_name_an_issue_is_refused_with_the_config() {
        let config = serde_json::json!({ "patterns": [{ "regex": "OOM", "kind": "log oom" }] });
        let err = LogDiagnoser::new(serde_json::from_value(config).unwrap())
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("\"log oom\" cannot name an issue"), "{err}");
    }

    #[test]
    fn max_lines_is_bounded() {
        let config = serde_json::json!({ "path": "/var/log/x", "max_lines": 1_000_000 });
        let refused = LogMonitor::new(serde_json::from_value(config).unwrap());
        assert!(refused.is_err());
    }

    #[test]
    fn a_finding_keeps_ten_matching_lines_cut_at_a_kib() {
        let long = format!("FATAL {}", "y".repeat(5000));
        let lines: Vec<String> = (0..50).map(|_| long.clone()).collect();
        let seen = Observation::ok("50 new lines").detail("lines", lines);
        let findings = diagnoser().diagnose(&seen, &[]);
        let kept = findings[0].details["lines"].as_array().unwrap();
        assert_eq!(kept.len(), 10);
        assert!(kept.iter().all(|l| l.as_str().unwrap().len() <= 1027));
        assert_eq!(findings[0].details["matching_lines"], 50);
        assert!(
            findings[0].summary.len() < 1100,
            "{}",
            findings[0].summary.len()
        );
    }
}
