//! The intake part of the config: `[intake]` (with the names its listener
//! answers to and its token, read and checked here), `[[reflex]]` (and the
//! seed's `reflex_map.yml`), `[workflow.NAME]`.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use globset::{Glob, GlobMatcher};
use healer_plugin_sdk::ffi::PluginKind;
use healer_plugin_sdk::Duration;
use serde::Deserialize;
use serde_json::Value;
use toml::Spanned;

use super::source::{did_you_mean, Source};
use super::{from_toml, read, Config, ConfigError, ConfigErrors, Location, PluginUse};

/// The shortest token accepted, in characters: a guessable token is no
/// lock, and an empty one is satisfied by `curl -u x:`.
pub const MIN_TOKEN_CHARS: usize = 16;
/// The longest token accepted (it travels in a request head of 16 KiB).
pub const MAX_TOKEN_CHARS: usize = 1024;
/// At most this many `allowed_hosts`.
pub const MAX_ALLOWED_HOSTS: usize = 64;
/// The most of a token file read: its first line must end before this.
const TOKEN_FILE_HEAD: u64 = 4096;

/// `[intake]`: the HTTP endpoint anomalies are posted to.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Intake {
    /// Where to listen. Beyond loopback only with a token.
    pub bind: SocketAddr,
    /// Host names the listener answers to besides its bind address (and,
    /// on loopback, `localhost`): a request naming any other `Host` is
    /// refused with 421, so a web page cannot reach it by DNS rebinding.
    pub allowed_hosts: Vec<String>,
    /// The bearer token write endpoints require, from this environment variable...
    pub token_env: Option<String>,
    /// ...or from this file (first line).
    pub token_file: Option<PathBuf>,
    /// The seed's reflex map file (`anomalies: [{name, workflow, params}]`).
    pub reflex_map: Option<PathBuf>,
    /// The same anomaly within this time of its last run is counted, not re-run.
    pub cooldown: Duration,
    /// Runs per anomaly name before further reports are suppressed...
    pub max_attempts: u32,
    /// ...until it has been quiet (or resolved) this long.
    pub stable_after: Duration,
    /// Runs started per minute, all reflexes together (0 = no limit).
    pub max_runs_per_minute: u32,
    /// The kill switch: `false` turns every run into a "would have run" record.
    pub actions: bool,
    /// Deadline of each workflow step.
    pub step_timeout: Duration,
    /// A request's head and body must arrive within this, from its first
    /// byte, however they trickle; an idle connection is closed after it.
    #[serde(alias = "client_timeout")]
    pub request_timeout: Duration,
    /// Open connections at most; a new one beyond it closes the oldest.
    pub max_connections: usize,
    /// Reports that would act are refused (503, Retry-After) while more
    /// than this many events wait to be recorded (delivered to the log and
    /// written to the store): what healer answers 2xx it records, and a
    /// stop writes out at most this much.
    pub max_backlog: usize,
}

impl Default for Intake {
    fn default() -> Intake {
        Intake {
            bind: SocketAddr::from(([127, 0, 0, 1], 8000)),
            allowed_hosts: Vec::new(),
            token_env: None,
            token_file: None,
            reflex_map: None,
            cooldown: Duration::from_secs(60),
            max_attempts: 3,
            stable_after: Duration::from_secs(600),
            max_runs_per_minute: 60,
            actions: true,
            step_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            max_connections: 256,
            max_backlog: 20_000,
        }
    }
}

/// A name or address the listener answers to: what a `Host` header names,
/// without its port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostName {
    /// An IP literal (an IPv6 one is written in brackets in `Host`).
    Ip(IpAddr),
    /// A DNS name, lowercased, without a trailing dot.
    Name(String),
}

impl HostName {
    /// `healer.example.com`, `192.0.2.7` or `[2001:db8::1]` (in the config
    /// also `2001:db8::1`). Names compare case-insensitively and with or
    /// without a trailing dot, as DNS does.
    pub fn parse(text: &str) -> Result<HostName, String> {
        if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            return inner
                .parse::<std::net::Ipv6Addr>()
                .map(|ip| HostName::Ip(ip.into()))
                .map_err(|_| format!("{text:?} is not an IPv6 address"));
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(HostName::Ip(ip));
        }
        let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
        let label_ok = |label: &str| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(format!(
                "{:?} is not a host name: labels of 1 to 63 letters, digits, `-` or `_`, joined by dots, 253 characters at most",
                text.chars().take(100).collect::<String>()
            ));
        }
        Ok(HostName::Name(name))
    }
}

impl std::fmt::Display for HostName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostName::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            HostName::Ip(ip) => write!(f, "{ip}"),
            HostName::Name(name) => f.write_str(name),
        }
    }
}

/// What is wrong with one `allowed_hosts` entry, and what would be right.
fn allowed_host_problem(entry: &str) -> Option<String> {
    let shown = entry.chars().take(100).collect::<String>();
    if entry.contains("://") || entry.contains('/') {
        let host = entry
            .split("://")
            .last()
            .and_then(|rest| rest.split('/').next())
            .unwrap_or("");
        return Some(format!(
            "{shown:?} is a URL; give the host name alone, e.g. {host:?}"
        ));
    }
    if entry.contains('*') {
        return Some(format!(
            "{shown:?}: wildcards are not allowed; list each name"
        ));
    }
    let with_port = match entry.rsplit_once(':') {
        _ if entry.starts_with('[') => entry.contains("]:"),
        Some((host, port)) => !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    };
    if with_port {
        return Some(format!(
            "{shown:?}: give the name without a port (the name is compared, any port is fine)"
        ));
    }
    HostName::parse(entry).err()
}

impl Intake {
    /// The token the listener requires, from `token_env` or `token_file`
    /// (its first line), checked; none without either on loopback. An
    /// error names the key to blame and says what is wrong and what
    /// would be right.
    fn read_token(&self) -> Result<Option<String>, (&'static str, String)> {
        let token = format!(
            "a token of {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS} printable ASCII characters without spaces"
        );
        match (&self.token_env, &self.token_file) {
            (Some(var), _) => {
                let value = match std::env::var(var) {
                    Ok(value) => value,
                    Err(std::env::VarError::NotPresent) => {
                        return Err((
                            "token_env",
                            format!("token_env: the environment variable {var} is not set; set it to {token}, e.g. the output of `openssl rand -hex 32`"),
                        ))
                    }
                    Err(std::env::VarError::NotUnicode(_)) => {
                        return Err((
                            "token_env",
                            format!("token_env: the environment variable {var} is not text; set it to {token}, e.g. the output of `openssl rand -hex 32`"),
                        ))
                    }
                };
                checked_token(&value).map(Some).map_err(|why| {
                    (
                        "token_env",
                        format!("token_env: the environment variable {var} {why}; set it to {token}, e.g. the output of `openssl rand -hex 32`"),
                    )
                })
            }
            (None, Some(file)) => {
                let shown = file.display();
                token_file_line(file)
                    .and_then(|first| {
                        checked_token(&first).map_err(|why| format!("the token on its first line {why}"))
                    })
                    .map(Some)
                    .map_err(|why| {
                        (
                            "token_file",
                            format!("token_file {shown}: {why}; write {token} on its first line, e.g. `openssl rand -hex 32 > {shown}`"),
                        )
                    })
            }
            (None, None) if !self.bind.ip().is_loopback() => Err((
                "bind",
                format!(
                    "bind = \"{}\" reaches beyond this machine, so it needs a token: set token_env or token_file, or bind to 127.0.0.1",
                    self.bind
                ),
            )),
            (None, None) => Ok(None),
        }
    }
}

/// The first line of a token file, read bounded (a token file that is a
/// pipe or `/dev/zero` cannot hold healer up); an empty, blank-first-line
/// or whitespace-only file is an error here, naming which.
fn token_file_line(file: &Path) -> Result<String, String> {
    let mut head = Vec::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(TOKEN_FILE_HEAD).read_to_end(&mut head))
        .map_err(|err| format!("cannot read it ({err})"))?;
    let text = std::str::from_utf8(&head).map_err(|_| "the file is not text".to_owned())?;
    let Some(first) = text.split('\n').next().filter(|_| !text.is_empty()) else {
        return Err("the file is empty".to_owned());
    };
    if text.trim().is_empty() {
        return Err("the file holds only whitespace".to_owned());
    }
    if first.trim().is_empty() {
        return Err(
            "its first line is blank, and the token is read from the first line only".to_owned(),
        );
    }
    if !text.contains('\n') && head.len() as u64 >= TOKEN_FILE_HEAD {
        return Err(format!(
            "its first line is longer than {TOKEN_FILE_HEAD} bytes"
        ));
    }
    Ok(first.to_owned())
}

/// The token in `text` (surrounding whitespace dropped), or why it will
/// not do: empty, whitespace only, a character a header cannot carry as
/// written, too short or too long.
fn checked_token(text: &str) -> Result<String, String> {
    let token = text.trim();
    if text.is_empty() {
        return Err("is empty".to_owned());
    }
    if token.is_empty() {
        return Err("holds only whitespace".to_owned());
    }
    if let Some(bad) = token.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!("holds {bad:?}"));
    }
    let count = token.chars().count();
    if count < MIN_TOKEN_CHARS {
        return Err(format!(
            "has {count} characters, fewer than {MIN_TOKEN_CHARS}"
        ));
    }
    if count > MAX_TOKEN_CHARS {
        return Err(format!(
            "has {count} characters, more than {MAX_TOKEN_CHARS}"
        ));
    }
    Ok(token.to_owned())
}

/// Where the header line `[intake]` starts, if the file has one.
fn intake_header(source: &Source) -> Option<std::ops::Range<usize>> {
    let text = source.text();
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if trimmed.starts_with("[intake]") {
            let start = at + (line.len() - trimmed.len());
            return Some(start..start + "[intake]".len());
        }
        at += line.len();
    }
    None
}

/// Where `key` is written in `[intake]` (the header when it is not).
fn intake_key(source: &Source, key: &str) -> Option<Location> {
    intake_header(source).map(|header| source.key_in_table(header, key))
}

/// The token of `intake`, as read from the config at `file`; an error
/// located at the key to blame.
fn token_of(file: &Path, source: &Source, intake: &Intake) -> Result<Option<String>, ConfigError> {
    intake.read_token().map_err(|(key, message)| ConfigError {
        file: file.to_owned(),
        at: intake_key(source, key),
        message: format!("[intake] {message}"),
    })
}

impl Config {
    /// The token the listener requires (none on loopback without
    /// `token_env` or `token_file`), read now and checked: `healer
    /// check`, start and reload refuse a config whose token is missing,
    /// blank, whitespace or shorter than [`MIN_TOKEN_CHARS`], with the
    /// file and line of the key.
    pub fn intake_token(&self) -> Result<Option<String>, ConfigError> {
        match &self.intake {
            Some(intake) => token_of(&self.path, &self.source, intake),
            None => Ok(None),
        }
    }

    /// Only the `[intake]` table of the config at `path` (its paths
    /// resolved) and its token, for the commands that ask the running
    /// daemon: they work while another part of the file is being edited.
    /// `None` when the file has none.
    pub fn listener_only(path: &Path) -> Result<Option<(Intake, Option<String>)>, ConfigErrors> {
        #[derive(Deserialize)]
        struct Partial {
            intake: Option<Intake>,
        }
        let source = Source::new(read(path)?);
        let partial: Partial = from_toml(path, &source)?;
        let Some(mut intake) = partial.intake else {
            return Ok(None);
        };
        if let Some(file) = &mut intake.token_file {
            *file = path.parent().unwrap_or(Path::new(".")).join(&*file);
        }
        let token = token_of(path, &source, &intake).map_err(|err| ConfigErrors(vec![err]))?;
        Ok(Some((intake, token)))
    }
}

/// One reflex: anomaly names matching `pattern` start `workflow`.
#[derive(Clone, Debug)]
pub struct Reflex {
    /// The glob as written, e.g. `api_latency.*.high`.
    pub pattern: String,
    /// The workflow to run.
    pub workflow: String,
    /// Parameters handed to every step.
    pub params: Value,
    /// Runs of this reflex per minute (0 = only the global limit).
    pub max_runs_per_minute: u32,
    /// Where it was written (`file:line`).
    pub origin: String,
    matcher: GlobMatcher,
}

impl Reflex {
    /// Whether an anomaly of this name triggers this reflex.
    pub fn matches(&self, name: &str) -> bool {
        self.matcher.is_match(name)
    }
}

/// `[workflow.NAME]`: steps run in order.
#[derive(Clone, Debug)]
pub struct Workflow {
    /// The workflow's name.
    pub name: String,
    /// Its steps.
    pub steps: Vec<Step>,
}

/// One step: a recoverer with its config.
#[derive(Clone, Debug)]
pub struct Step {
    /// The recoverer.
    pub plugin: PluginUse,
    /// Go on with the next step when this one fails.
    pub continue_on_error: bool,
}

impl Step {
    /// What the step does, where in the file it is aside.
    pub fn fingerprint(&self) -> StepFingerprint {
        StepFingerprint {
            plugin: self.plugin.plugin.clone(),
            config: self.plugin.config.to_string(),
            continue_on_error: self.continue_on_error,
        }
    }
}

/// What a workflow step does, to tell whether a reload changed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepFingerprint {
    pub plugin: String,
    /// Its config as JSON text.
    pub config: String,
    pub continue_on_error: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReflex {
    #[serde(rename = "match")]
    pattern: Spanned<String>,
    workflow: Spanned<String>,
    #[serde(default)]
    params: toml::Table,
    #[serde(default)]
    max_runs_per_minute: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWorkflow {
    steps: Vec<Spanned<toml::Table>>,
}

/// The seed's `reflex_map.yml`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedMap {
    anomalies: Vec<SeedReflex>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedReflex {
    name: String,
    workflow: String,
    #[serde(default)]
    params: Option<Value>,
}

impl super::Checker<'_> {
    pub(super) fn intake(&mut self, intake: &Intake) {
        let header = intake_header(self.source);
        let at = header.as_ref().map_or(0, |h| h.start);
        for (key, zero) in [
            ("max_attempts", intake.max_attempts == 0),
            ("max_connections", intake.max_connections == 0),
            ("max_backlog", intake.max_backlog == 0),
        ] {
            if zero {
                self.error(at, format!("[intake] {key} must be at least 1"));
            }
        }
        for (key, value) in [
            ("request_timeout", intake.request_timeout),
            ("step_timeout", intake.step_timeout),
        ] {
            if value.is_zero() {
                self.error(at, format!("[intake] {key} must be longer than zero"));
            }
        }
        let hosts_at = intake_key(self.source, "allowed_hosts");
        let mut problems = Vec::new();
        if intake.allowed_hosts.len() > MAX_ALLOWED_HOSTS {
            problems.push(format!(
                "lists {} names, more than {MAX_ALLOWED_HOSTS}",
                intake.allowed_hosts.len()
            ));
        }
        problems.extend(
            intake
                .allowed_hosts
                .iter()
                .filter_map(|entry| allowed_host_problem(entry)),
        );
        for problem in problems {
            self.errors.push(ConfigError {
                file: self.file.to_owned(),
                at: hosts_at,
                message: format!("[intake] allowed_hosts: {problem}"),
            });
        }
    }

    pub(super) fn workflows(
        &mut self,
        raw: BTreeMap<String, Spanned<RawWorkflow>>,
    ) -> BTreeMap<String, Workflow> {
        let mut workflows = BTreeMap::new();
        for (name, raw) in raw {
            let at = raw.span().start;
            let mut steps = Vec::new();
            for table in raw.into_inner().steps {
                let span = table.span();
                let mut table = table.into_inner();
                let continue_on_error = match table.remove("continue_on_error") {
                    None => false,
                    Some(toml::Value::Boolean(value)) => value,
                    Some(_) => {
                        self.error(
                            span.start,
                            "`continue_on_error` must be true or false".to_owned(),
                        );
                        false
                    }
                };
                if let Some(plugin) =
                    self.plugin_use(PluginKind::Recoverer, Spanned::new(span, table), false)
                {
                    steps.push(Step {
                        plugin,
                        continue_on_error,
                    });
                }
            }
            if steps.is_empty() {
                self.error(at, format!("workflow {name:?} has no steps: add steps = [{{ plugin = \"webhook\", url = \"...\" }}]"));
            }
            workflows.insert(name.clone(), Workflow { name, steps });
        }
        workflows
    }

    pub(super) fn reflexes(
        &mut self,
        raw: Vec<RawReflex>,
        workflows: &BTreeMap<String, Workflow>,
    ) -> Vec<Reflex> {
        let mut reflexes = Vec::new();
        for reflex in raw {
            let at = reflex.pattern.span().start;
            let origin = format!("{}:{}", self.file.display(), self.source.locate(at).line);
            let workflow_at = reflex.workflow.span().start;
            let params = serde_json::to_value(&reflex.params).unwrap_or(Value::Null);
            match self.reflex(
                reflex.pattern.into_inner(),
                reflex.workflow.into_inner(),
                params,
                reflex.max_runs_per_minute,
                origin,
                workflows,
            ) {
                Ok(reflex) => reflexes.push(reflex),
                Err((in_workflow, message)) => {
                    self.error(if in_workflow { workflow_at } else { at }, message)
                }
            }
        }
        reflexes
    }

    /// Reads the seed's `reflex_map.yml`; its reflexes come after the TOML ones.
    pub(super) fn seed_map(
        &mut self,
        path: &Path,
        workflows: &BTreeMap<String, Workflow>,
    ) -> Vec<Reflex> {
        let fail = |message: String, line: Option<usize>| ConfigError {
            file: path.to_owned(),
            at: line.map(|line| Location { line, column: 1 }),
            message,
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) => {
                self.errors
                    .push(fail(format!("cannot read the reflex map: {err}"), None));
                return Vec::new();
            }
        };
        let map: SeedMap = match serde_yaml_ng::from_str(&text) {
            Ok(map) => map,
            Err(err) => {
                // libyaml puts the end of a file without a final newline
                // on the line after its last: the end is on its last line.
                let end = text.split('\n').count();
                let line = err.location().map(|l| l.line().min(end));
                let message = err.to_string();
                let message = message
                    .split(" at line ")
                    .next()
                    .unwrap_or(&message)
                    .to_owned();
                self.errors.push(fail(message, line));
                return Vec::new();
            }
        };
        let mut reflexes = Vec::new();
        for (index, seed) in map.anomalies.into_iter().enumerate() {
            let line = text
                .lines()
                .position(|l| l.contains(&seed.name))
                .map(|l| l + 1);
            let origin = format!("{}:{}", path.display(), line.unwrap_or(0));
            let params = seed.params.unwrap_or_else(|| serde_json::json!({}));
            match self.reflex(seed.name, seed.workflow, params, 0, origin, workflows) {
                Ok(reflex) => reflexes.push(reflex),
                Err((_, message)) => self
                    .errors
                    .push(fail(format!("anomalies[{index}]: {message}"), line)),
            }
        }
        reflexes
    }

    fn reflex(
        &mut self,
        pattern: String,
        workflow: String,
        params: Value,
        max_runs_per_minute: u32,
        origin: String,
        workflows: &BTreeMap<String, Workflow>,
    ) -> Result<Reflex, (bool, String)> {
        let matcher = Glob::new(&pattern)
            .map_err(|err| {
                (
                    false,
                    format!(
                        "reflex pattern {pattern:?} is not a valid glob: {}",
                        err.kind()
                    ),
                )
            })?
            .compile_matcher();
        if !workflows.contains_key(&workflow) {
            let hint = did_you_mean(&workflow, workflows.keys().map(String::as_str))
                .map_or_else(String::new, |guess| format!(" (did you mean \"{guess}\"?)"));
            return Err((true, format!("reflex {pattern:?} names workflow {workflow:?}, which is not defined{hint}; define it as [workflow.{workflow}]")));
        }
        if !params.is_object() {
            return Err((
                false,
                format!("reflex {pattern:?}: `params` must be a table"),
            ));
        }
        Ok(Reflex {
            pattern,
            workflow,
            params,
            max_runs_per_minute,
            origin,
            matcher,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The errors of `text` as a config at `path`, one line each.
    fn errors(path: &Path, text: &str) -> Vec<String> {
        match Config::parse(path, text.to_owned()) {
            Ok(config) => config
                .intake_token()
                .err()
                .map(|err| err.to_string())
                .into_iter()
                .collect(),
            Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_token_file_that_is_blank_whitespace_or_short_is_refused_at_the_key_with_what_is_right() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("healer.toml");
        let text = "[healer]\n\n[intake]\nbind = \"127.0.0.1:8000\"\ntoken_file = \"token\"\n";
        for (content, why) in [
            ("", "the file is empty"),
            ("\n0123456789abcdef\n", "its first line is blank"),
            ("  \t\n \n", "the file holds only whitespace"),
            ("s3cret\n", "has 6 characters, fewer than 16"),
            ("0123456789 abcdef\n", "holds ' '"),
        ] {
            std::fs::write(dir.path().join("token"), content).unwrap();
            let errors = errors(&config, text);
            assert_eq!(errors.len(), 1, "{content:?}: {errors:?}");
            let expected = format!(
                "{}:5:1: [intake] token_file {}",
                config.display(),
                dir.path().join("token").display()
            );
            assert!(
                errors[0].starts_with(&expected),
                "{content:?}: {}",
                errors[0]
            );
            assert!(errors[0].contains(why), "{content:?}: {}", errors[0]);
            assert!(
                errors[0].contains("at least 16") || errors[0].contains("16 to 1024"),
                "{}",
                errors[0]
            );
        }
        std::fs::write(
            dir.path().join("token"),
            " 0123456789abcdef \r\nsecond line\n",
        )
        .unwrap();
        let config = Config::parse(&config, text.to_owned()).unwrap();
        assert_eq!(
            config.intake_token().unwrap().as_deref(),
            Some("0123456789abcdef")
        );
    }

    #[test]
    fn a_missing_token_file_and_an_unset_token_env_are_refused_at_their_key() {
        let config = Path::new("/etc/healer/healer.toml");
        let missing = errors(config, "[intake]\ntoken_file = \"/nonexistent/token\"\n");
        assert!(
            missing[0].starts_with(
                "/etc/healer/healer.toml:2:1: [intake] token_file /nonexistent/token: "
            ),
            "{missing:?}"
        );
        let unset = errors(
            config,
            "[intake]\nbind = \"127.0.0.1:8000\"\ntoken_env = \"HEALER_TEST_UNSET_TOKEN_9F2\"\n",
        );
        assert!(unset[0].starts_with("/etc/healer/healer.toml:3:1: [intake] token_env: the environment variable HEALER_TEST_UNSET_TOKEN_9F2 is not set"), "{unset:?}");
    }

    #[test]
    fn a_bind_beyond_loopback_without_a_token_is_refused_at_bind() {
        let errors = errors(
            Path::new("healer.toml"),
            "# a comment\n[intake]\n\nbind = \"0.0.0.0:8000\"\n",
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(
                "healer.toml:4:1: [intake] bind = \"0.0.0.0:8000\" reaches beyond this machine"
            ),
            "{errors:?}"
        );
    }

    #[test]
    fn allowed_hosts_takes_names_and_addresses_and_refuses_urls_ports_and_wildcards() {
        let ok = "[intake]\nallowed_hosts = [\"healer.example.com\", \"Healer.Internal.\", \"203.0.113.5\", \"[2001:db8::1]\", \"2001:db8::2\"]\n";
        assert_eq!(errors(Path::new("healer.toml"), ok), Vec::<String>::new());
        for (entry, why) in [
            (
                "http://healer.example.com/",
                "is a URL; give the host name alone, e.g. \"healer.example.com\"",
            ),
            ("healer.example.com:8000", "without a port"),
            ("[::1]:8000", "without a port"),
            ("*.example.com", "wildcards are not allowed"),
            ("bad name", "is not a host name"),
            ("", "is not a host name"),
        ] {
            let text =
                format!("[intake]\nbind = \"127.0.0.1:8000\"\nallowed_hosts = [\"{entry}\"]\n");
            let errors = errors(Path::new("healer.toml"), &text);
            assert_eq!(errors.len(), 1, "{entry}: {errors:?}");
            assert!(
                errors[0].starts_with("healer.toml:3:1: [intake] allowed_hosts: "),
                "{errors:?}"
            );
            assert!(errors[0].contains(why), "{entry}: {errors:?}");
        }
    }

    #[test]
    fn host_names_compare_as_dns_does() {
        assert_eq!(
            HostName::parse("Healer.Example.COM.").unwrap(),
            HostName::parse("healer.example.com").unwrap()
        );
        assert_eq!(HostName::parse("[::1]").unwrap().to_string(), "[::1]");
        assert_eq!(
            HostName::parse("127.0.0.1").unwrap().to_string(),
            "127.0.0.1"
        );
        assert!(HostName::parse(&"a".repeat(64)).is_err());
        assert!(HostName::parse("a..b").is_err());
    }
}
