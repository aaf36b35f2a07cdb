//! The config file, `healer.toml`: its schema, defaults, and every check
//! that needs no plugin. Only this module parses TOML.
//!
//! Errors name the file, line and column, say what is wrong, and suggest
//! the right name where there is a close one. Validation collects every
//! error instead of stopping at the first, like a compiler. Checking plugin
//! names and plugin configs needs the loaded packages: the layer above
//! does it (`plugins::Catalog::check_config`); this one names no plugin
//! code.

mod checks;
mod fleet;
pub mod http;
mod intake;
mod plugins;
mod sinks;
mod source;
mod template;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};
use healer_plugin_sdk::ffi::PluginKind;
use healer_plugin_sdk::Duration;
use serde::Deserialize;
use serde_json::Value;
use toml::Spanned;

pub use checks::{Check, MAX_CHECKS};
pub use fleet::{host_name, Fleet, LEASE_AT_LEAST};
pub use intake::{HostName, Intake, Reflex, Step, Workflow, MIN_TOKEN_CHARS};
pub use plugins::{
    Account, Capabilities, Isolation, PackagePolicy, PackageSettings, Plugins, Sandbox, Size,
    WorkerLimits, DROPPED_BY_DEFAULT,
};
pub use sinks::{AlertSink, SinkKind, DEFAULT_RESEND_EVERY};
pub use source::did_you_mean;
pub use source::Location;
use source::{with_hint, Source};
pub use template::{Template, PLACEHOLDERS};

use crate::facts::Gate;
use crate::one_line::OneLine;

/// The state database's file name inside `state_dir`.
pub const STORE_FILE_NAME: &str = "healer.db";

/// Where the default config lives in a checkout, relative to the working
/// directory.
pub const DEFAULT_CONFIG: &str = "config/healer.toml";

/// Where the Debian package installs the config.
pub const INSTALLED_CONFIG: &str = "/etc/healer/healer.toml";

/// The config read without `--config`: [`DEFAULT_CONFIG`] where it exists
/// (a checkout), else [`INSTALLED_CONFIG`] (an installed healer, run from
/// anywhere).
pub fn default_config() -> std::path::PathBuf {
    let here = std::path::Path::new(DEFAULT_CONFIG);
    if here.is_file() {
        here.to_owned()
    } else {
        std::path::PathBuf::from(INSTALLED_CONFIG)
    }
}

/// A config that parsed and passed every check that needs no plugin.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// `[healer]`, with paths resolved against the config's directory.
    pub healer: Healer,
    /// `[[target]]` entries, in file order.
    pub targets: Vec<Target>,
    /// `[intake]`, when the file has one: the anomaly endpoint runs.
    pub intake: Option<Intake>,
    /// Reflexes in priority order: `[[reflex]]` entries, then the reflex map file's.
    pub reflexes: Vec<Reflex>,
    /// `[workflow.NAME]` entries.
    pub workflows: std::collections::BTreeMap<String, Workflow>,
    /// `[store]`.
    pub store: Store,
    /// `[plugins]`.
    pub plugins: Plugins,
    /// `[[alert]]` entries: where escalations are announced, in file order.
    pub alerts: Vec<AlertSink>,
    /// `[fleet]`, when the file has one: the etcd cluster `fleet = true`
    /// targets are shared through.
    pub fleet: Option<Fleet>,
    source: Source,
}

/// `[store]`: the SQLite database in `state_dir` that carries issues,
/// intake state and the event history across restarts.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Store {
    /// `false` keeps all state in memory: nothing survives a restart.
    pub enabled: bool,
    /// Events older than this are deleted from the history.
    pub keep_events_for: Duration,
    /// At most this many events are kept in the history.
    pub keep_events: u64,
}

impl Default for Store {
    fn default() -> Store {
        Store {
            enabled: true,
            keep_events_for: Duration::from_secs(14 * 86_400),
            keep_events: 1_000_000,
        }
    }
}

/// How the log is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Declares the pacing keys once. Each becomes a field of [`Policy`] (what
/// a target runs with, with its default), of `[healer]` (the defaults every
/// target inherits) and of `[[target]]` (an override); the merge comes with
/// them, and [`Policy::problems`] checks every merged policy, so a rule
/// holds the same for `[healer]` and for a target's own value.
macro_rules! pacing {
    ($( $(#[doc = $doc:literal])* $key:ident: $ty:ty = $default:expr, )*) => {
        /// How one target's checks and recoveries are paced: `[healer]`'s
        /// values, overridden per target.
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub struct Policy {
            $( $(#[doc = $doc])* pub $key: $ty, )*
        }

        impl Default for Policy {
            fn default() -> Policy {
                Policy { $( $key: $default, )* }
            }
        }

        /// `[healer]`: host-wide settings and the pacing defaults targets
        /// inherit.
        #[derive(Clone, Debug, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct Healer {
            /// The master switch: `false` makes `healer run` exit at once.
            pub enabled: bool,
            /// Recoveries running at once, host-wide.
            pub max_concurrent_recoveries: usize,
            /// Observations kept per target for diagnosers.
            pub history: usize,
            /// Where plugin packages are loaded from.
            pub plugins_dir: PathBuf,
            /// Where state (the SQLite database) is kept.
            pub state_dir: PathBuf,
            /// The log file (besides stderr).
            pub log_file: PathBuf,
            /// Every event as one JSON object per line, appended (none by default).
            pub event_log: Option<PathBuf>,
            /// `human` or `json`.
            pub log_format: LogFormat,
            /// `error`, `warn`, `info`, `debug` or `trace` (or a tracing filter).
            pub log_level: String,
            $( $(#[doc = $doc])* pub $key: $ty, )*
        }

        impl Default for Healer {
            fn default() -> Healer {
                let policy = Policy::default();
                Healer {
                    enabled: true,
                    max_concurrent_recoveries: 4,
                    history: 10,
                    plugins_dir: PathBuf::from("plugins"),
                    state_dir: PathBuf::from("state"),
                    log_file: PathBuf::from("logs/healer.log"),
                    event_log: None,
                    log_format: LogFormat::Human,
                    log_level: "info".to_owned(),
                    $( $key: policy.$key, )*
                }
            }
        }

        impl Healer {
            /// The pacing every target starts from.
            pub fn policy(&self) -> Policy {
                Policy { $( $key: self.$key, )* }
            }
        }

        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct RawTarget {
            name: Spanned<String>,
            #[serde(default = "enabled_by_default")]
            enabled: bool,
            #[serde(default)]
            depends_on: Vec<Spanned<String>>,
            monitor: Spanned<checks::RawMonitors>,
            #[serde(default)]
            diagnose: Vec<Spanned<toml::Table>>,
            #[serde(default)]
            recover: Vec<Spanned<toml::Table>>,
            #[serde(default)]
            order: Order,
            #[serde(default = "default_learn_after")]
            learn_after: u32,
            #[serde(default)]
            fleet: bool,
            #[serde(default)]
            confirm: u32,
            $( $key: Option<$ty>, )*
        }

        impl RawTarget {
            /// `defaults` with this target's own values.
            fn policy(&self, defaults: Policy) -> Policy {
                Policy { $( $key: self.$key.unwrap_or(defaults.$key), )* }
            }

            /// The pacing keys this target writes itself.
            fn overrides(&self) -> Vec<&'static str> {
                let mut written = Vec::new();
                $( if self.$key.is_some() { written.push(stringify!($key)); } )*
                written
            }
        }
    };
}

pacing! {
    /// How often each target is checked (a check may have its own).
    interval: Duration = Duration::from_secs(5),
    /// Deadline of every check and diagnosis (a check may have its own).
    timeout: Duration = Duration::from_secs(10),
    /// Recovery attempts per issue before it is escalated.
    max_attempts: u32 = 3,
    /// Consecutive failed checks before an issue opens (1 = at once).
    fail_after: u32 = 1,
    /// Consecutive healthy checks before an issue resolves.
    resolve_after: u32 = 1,
    /// Healthy time after which a resolved issue's attempt count is forgotten.
    stable_after: Duration = Duration::from_secs(300),
    /// Wait before the second attempt; doubles after each attempt.
    backoff: Duration = Duration::from_secs(1),
    /// The longest wait between attempts.
    backoff_max: Duration = Duration::from_secs(300),
    /// How often a target whose issues are all escalated is re-probed.
    escalated_interval: Duration = Duration::from_secs(60),
    /// Pause after a recovery before the check that verifies it.
    grace: Duration = Duration::from_millis(500),
    /// Deadline of one recovery attempt (each recoverer in the ladder).
    recovery_timeout: Duration = Duration::from_secs(60),
    /// Recovery attempts one target may make within `stable_after`, all
    /// its issues together, whatever their kinds; unset: `max_attempts`.
    recovery_budget: Option<u32> = None,
}

impl Policy {
    /// Recovery attempts one target may make within `stable_after`.
    pub fn recovery_budget(&self) -> u32 {
        self.recovery_budget.unwrap_or(self.max_attempts)
    }

    /// What is wrong with this policy, each as (the key to blame, why).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if self.recovery_budget == Some(0) {
            problems.push((
                "recovery_budget",
                "recovery_budget must be at least 1 (leave it out to allow max_attempts)"
                    .to_owned(),
            ));
        }
        for (key, value) in [
            ("max_attempts", self.max_attempts),
            ("fail_after", self.fail_after),
            ("resolve_after", self.resolve_after),
        ] {
            if value == 0 {
                problems.push((key, format!("{key} must be at least 1")));
            }
        }
        for (key, value) in [
            ("interval", self.interval),
            ("timeout", self.timeout),
            ("escalated_interval", self.escalated_interval),
            ("recovery_timeout", self.recovery_timeout),
        ] {
            if value.is_zero() {
                problems.push((key, format!("{key} must be longer than zero")));
            }
        }
        // A `backoff` longer than `backoff_max` is not an error: every wait
        // is held to `backoff_max`, so a target may raise one without the
        // other.
        problems
    }
}

/// One `[[target]]`: what to watch and how to heal it.
#[derive(Clone, Debug)]
pub struct Target {
    /// Unique name.
    pub name: String,
    /// `false` skips the target.
    pub enabled: bool,
    /// Pacing, with `[healer]` defaults filled in.
    pub policy: Policy,
    /// Targets that must be healthy before this one is recovered.
    pub depends_on: Vec<String>,
    /// Its checks: a monitor each, with its diagnosers; at least one.
    pub checks: Vec<Check>,
    /// Recoverers, tried in order (a ladder).
    pub recoverers: Vec<RecovererUse>,
    /// The order they are tried in: as written, or learned.
    pub order: Order,
    /// Judged tries each recoverer needs before the ledger decides
    /// anything (`order = "learned"`, `min_success`).
    pub learn_after: u32,
    /// Shared by the fleet (`fleet = true`): checked and recovered only
    /// by the member that owns its shard now.
    pub fleet: bool,
    /// A fleet target's confirmations: before its owner opens an issue,
    /// this many other members check it from where they are; 0 = none.
    pub confirm: u32,
    /// Where `[[target]]` starts.
    pub at: Location,
}

/// A plugin named in the config, with its own config as JSON.
#[derive(Clone, Debug)]
pub struct PluginUse {
    /// Monitor, diagnoser or recoverer.
    pub kind: PluginKind,
    /// The plugin's name.
    pub plugin: String,
    /// Its table minus healer's own keys (`plugin`, `on`), as JSON.
    pub config: Value,
    /// Where its table starts.
    pub at: Location,
    span: Range<usize>,
    /// A diagnoser's grant: globs on the names of the facts it is given
    /// with each observation (`reads = ["target.db.*"]`); none by default.
    pub reads: Vec<String>,
}

impl Target {
    /// Whether `other` configures the same target the same way (where in
    /// the file it is aside): a reload leaves such a target running.
    pub fn same_as(&self, other: &Target) -> bool {
        self.name == other.name
            && self.enabled == other.enabled
            && self.policy == other.policy
            && self.depends_on == other.depends_on
            && self.checks.len() == other.checks.len()
            && self
                .checks
                .iter()
                .zip(&other.checks)
                .all(|(a, b)| a.same_as(b))
            && self.recoverers.len() == other.recoverers.len()
            && self.recoverers.iter().zip(&other.recoverers).all(|(a, b)| {
                a.plugin.same_as(&b.plugin)
                    && a.on == b.on
                    && a.when == b.when
                    && a.unless == b.unless
                    && a.mode == b.mode
                    && a.propose_for == b.propose_for
                    && a.min_success == b.min_success
            })
            && self.order == other.order
            && self.learn_after == other.learn_after
            && self.fleet == other.fleet
            && self.confirm == other.confirm
    }

    /// Whether `other` is still the same target for its issues: the same
    /// name, and a monitor plugin in common (a check added, removed or
    /// moved keeps them; the checks whose plugins name an issue's kind
    /// hold it again). A reload that changes anything else restarts the
    /// target with its issues kept.
    pub fn same_identity(&self, other: &Target) -> bool {
        self.name == other.name
            && self.checks.iter().any(|check| {
                other
                    .checks
                    .iter()
                    .any(|theirs| theirs.monitor.plugin == check.monitor.plugin)
            })
    }

    /// Every plugin its checks use: each monitor, then its diagnosers.
    pub fn check_plugins(&self) -> impl Iterator<Item = &PluginUse> {
        self.checks
            .iter()
            .flat_map(|check| std::iter::once(&check.monitor).chain(&check.diagnosers))
    }

    /// Every plugin it uses: its checks' and its recoverers'.
    pub fn plugins(&self) -> impl Iterator<Item = &PluginUse> {
        self.check_plugins()
            .chain(self.recoverers.iter().map(|recoverer| &recoverer.plugin))
    }

    /// Its monitors' plugin names, joined with `+` (`process+http`).
    pub fn monitors(&self) -> String {
        let names: Vec<&str> = self
            .checks
            .iter()
            .map(|check| check.monitor.plugin.as_str())
            .collect();
        names.join("+")
    }
}

impl PluginUse {
    fn same_as(&self, other: &PluginUse) -> bool {
        self.kind == other.kind
            && self.plugin == other.plugin
            && self.config == other.config
            && self.reads == other.reads
    }
}

/// A recoverer and the finding kinds it handles.
#[derive(Clone, Debug)]
pub struct RecovererUse {
    /// The recoverer.
    pub plugin: PluginUse,
    /// What events, the ledger and proposals call it: its plugin's name,
    /// with `#2`, `#3`... on the second and later use of the same plugin
    /// in one target's ladder.
    pub name: String,
    /// Globs on finding kinds, e.g. `process.*`; default `*`.
    pub on: Vec<String>,
    matcher: GlobSet,
    /// Only the globs that name an UNKNOWN kind (end in `.unknown`).
    unknown_matcher: GlobSet,
    /// Conditions on facts that must all be true for it to act (`when`),
    /// and that must all be false (`unless`); a fact nobody vouches for
    /// holds it either way.
    pub when: Vec<Gate>,
    pub unless: Vec<Gate>,
    /// `act` (the default) or `propose`: record what it would do and wait
    /// for an operator's `healer approve`.
    pub mode: Mode,
    /// How long a proposal waits for an answer before the issue is
    /// escalated.
    pub propose_for: Duration,
    /// The share of its judged attempts (0 to 1) that must have healed,
    /// once it has `learn_after` of them, for it to act; below, it
    /// proposes instead. None: it always acts.
    pub min_success: Option<f64>,
}

/// Whether a recoverer acts or asks first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// It runs when its issue is due.
    #[default]
    Act,
    /// It proposes: healer records what it would do and an operator
    /// approves or rejects it.
    Propose,
}

/// The order a target's recoverers are tried in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// As written.
    #[default]
    Config,
    /// The one that heals the kind most often first, once each
    /// has `learn_after` judged tries (until then, the least tried first).
    Learned,
}

/// How long a proposal waits for an answer by default.
pub const DEFAULT_PROPOSE_FOR: Duration = Duration::from_secs(3600);

/// Judged tries each recoverer needs before `order = "learned"` and
/// `min_success` read its record, by default.
pub const DEFAULT_LEARN_AFTER: u32 = 3;

impl RecovererUse {
    /// Whether this recoverer handles findings of `kind`. An `unknown`
    /// finding (healer could not tell) is handled only by a glob that names
    /// an `*.unknown` kind itself: `on = ["*"]` never acts on UNKNOWN.
    pub fn handles(&self, kind: &str, unknown: bool) -> bool {
        if unknown {
            self.unknown_matcher.is_match(kind)
        } else {
            self.matcher.is_match(kind)
        }
    }
}

/// The text of the config file at `path`.
fn read(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|err| {
        ConfigErrors(vec![ConfigError {
            file: path.to_owned(),
            at: None,
            message: format!("cannot read the config: {err}"),
        }])
    })
}

/// `source` as TOML of type `T`; a syntax or type error with its place.
fn from_toml<T: serde::de::DeserializeOwned>(
    path: &Path,
    source: &Source,
) -> Result<T, ConfigErrors> {
    toml::from_str(source.text()).map_err(|err| {
        ConfigErrors(vec![ConfigError {
            file: path.to_owned(),
            at: err.span().map(|span| source.locate(span.start)),
            message: with_hint(err.message().trim()),
        }])
    })
}

/// `errors` in file order: by file, line and column.
pub fn sort_by_place(errors: &mut [ConfigError]) {
    errors.sort_by_key(|e| (e.file.clone(), e.at.map(|at| (at.line, at.column))));
}

/// One problem in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// Where in it, when known.
    pub at: Option<Location>,
    /// What is wrong and what would be right.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display().to_string();
        // A newline in a quoted key, a YAML key or a file name, which an
        // error quotes, must not break its line.
        let (file, message) = (OneLine(&file), OneLine(&self.message));
        match self.at {
            Some(at) => write!(f, "{file}:{at}: {message}"),
            None => write!(f, "{file}: {message}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Every error found in one config, in file order.
#[derive(Clone, Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, err) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{err}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    healer: Healer,
    #[serde(default, rename = "target")]
    targets: Vec<Spanned<RawTarget>>,
    intake: Option<Intake>,
    #[serde(default)]
    reflex: Vec<intake::RawReflex>,
    #[serde(default)]
    workflow: std::collections::BTreeMap<String, Spanned<intake::RawWorkflow>>,
    #[serde(default)]
    store: Store,
    #[serde(default)]
    plugins: Plugins,
    #[serde(default, rename = "alert")]
    alerts: Vec<Spanned<sinks::RawAlert>>,
    fleet: Option<Fleet>,
}

fn enabled_by_default() -> bool {
    true
}

impl Config {
    /// Reads and checks the config at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Config::parse(path, read(path)?)
    }

    /// Checks config `text` as if read from `path`.
    pub fn parse(path: &Path, text: String) -> Result<Config, ConfigErrors> {
        match Config::parse_with_problems(path, text)? {
            (config, problems) if problems.is_empty() => Ok(config),
            (_, problems) => Err(ConfigErrors(problems)),
        }
    }

    /// Reads the config at `path` as far as it can be read: the config, and
    /// the problems found in it that need no plugin (names, dependencies,
    /// zero values, ...), in file order. `healer check` goes on to check
    /// the plugins' configs of such a config, so that one run names every
    /// problem. `Err` when it cannot be read as a config at all (no file,
    /// TOML syntax, a value of the wrong type).
    pub fn load_with_problems(path: &Path) -> Result<(Config, Vec<ConfigError>), ConfigErrors> {
        Config::parse_with_problems(path, read(path)?)
    }

    /// [`Config::load_with_problems`] of `text`, as if read from `path`.
    pub fn parse_with_problems(
        path: &Path,
        text: String,
    ) -> Result<(Config, Vec<ConfigError>), ConfigErrors> {
        let source = Source::new(text);
        let raw: RawConfig = from_toml(path, &source)?;
        let mut check = Checker {
            file: path,
            source: &source,
            errors: Vec::new(),
        };
        let mut healer = raw.healer;
        check.healer(&healer);
        check.store(&raw.store);
        if let Some(fleet) = &raw.fleet {
            // The table's header line (not a comment that names it).
            let text = check.source.text();
            let at = text
                .match_indices("[fleet]")
                .map(|(at, _)| at)
                .find(|&at| at == 0 || text[..at].ends_with('\n'))
                .unwrap_or(0);
            for problem in fleet.problems() {
                check.error(at, problem);
            }
        }
        let plugins_at = check.source.text().find("[plugins").unwrap_or(0);
        for (at, problem) in raw.plugins.problems() {
            check.error(at.unwrap_or(plugins_at), problem);
        }
        let targets: Vec<Target> = raw
            .targets
            .into_iter()
            .filter_map(|t| check.target(t, &healer))
            .collect();
        check.names_and_dependencies(&targets);
        check.fleet_targets(&targets, raw.fleet.as_ref());
        let workflows = check.workflows(raw.workflow);
        let alerts = check.alerts(raw.alerts);
        let mut reflexes = check.reflexes(raw.reflex, &workflows);
        let base = path.parent().unwrap_or(Path::new("."));
        let mut intake = raw.intake;
        if let Some(intake) = &intake {
            check.intake(intake);
        }
        if let Some(intake) = &mut intake {
            for file in [&mut intake.reflex_map, &mut intake.token_file]
                .into_iter()
                .flatten()
            {
                *file = base.join(&*file);
            }
            if let Some(map) = &intake.reflex_map {
                reflexes.extend(check.seed_map(map, &workflows));
            }
        } else if !reflexes.is_empty() {
            let at = check.source.text().find("[[reflex]]").unwrap_or(0);
            check.error(at, "reflexes need the anomaly endpoint: add an [intake] table (bind = \"127.0.0.1:8000\" by default)".to_owned());
        }
        let mut problems = check.errors;
        sort_by_place(&mut problems);
        for dir in [
            &mut healer.plugins_dir,
            &mut healer.state_dir,
            &mut healer.log_file,
        ]
        .into_iter()
        .chain(healer.event_log.as_mut())
        {
            *dir = base.join(&*dir);
        }
        let config = Config {
            path: path.to_owned(),
            healer,
            targets,
            intake,
            reflexes,
            workflows,
            store: raw.store,
            plugins: raw.plugins,
            alerts,
            fleet: raw.fleet,
            source,
        };
        Ok((config, problems))
    }

    /// The state database: `state_dir/healer.db` ([`STORE_FILE_NAME`]).
    pub fn store_file(&self) -> PathBuf {
        self.healer.state_dir.join(STORE_FILE_NAME)
    }

    /// Where `key` is written in `plugin`'s table (the table when absent).
    pub fn key_location(&self, plugin: &PluginUse, key: &str) -> Location {
        self.source.key_in_table(plugin.span.clone(), key)
    }

    /// An error located at `plugin`'s table, or at `key` inside it when the
    /// plugin's message names a field (`unknown field `x``).
    pub fn plugin_error(&self, plugin: &PluginUse, message: &str) -> ConfigError {
        let field = source::unknown_field(message).or_else(|| {
            message
                .strip_prefix("invalid value for `")?
                .split('`')
                .next()
        });
        let at = match field {
            Some(key) => self.source.key_in_table(plugin.span.clone(), key),
            None => plugin.at,
        };
        ConfigError {
            file: self.path.clone(),
            at: Some(at),
            message: with_hint(message),
        }
    }
}

/// Collects the errors of one config.
struct Checker<'a> {
    file: &'a Path,
    source: &'a Source,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn error(&mut self, span_start: usize, message: String) {
        self.errors.push(ConfigError {
            file: self.file.to_owned(),
            at: Some(self.source.locate(span_start)),
            message,
        });
    }

    fn healer(&mut self, healer: &Healer) {
        let at = self.source.text().find("[healer]").unwrap_or(0);
        for (_, problem) in healer.policy().problems() {
            self.error(at, format!("[healer] {problem}"));
        }
        if healer.max_concurrent_recoveries == 0 {
            self.error(
                at,
                "[healer] max_concurrent_recoveries must be at least 1".to_owned(),
            );
        }
    }

    /// `fleet = true` needs a `[fleet]`; `confirm` needs `fleet = true`;
    /// no dependency crosses between a fleet target and anything else
    /// (the other may be checked on another member, and would hold the
    /// recovery here for good).
    fn fleet_targets(&mut self, targets: &[Target], fleet: Option<&Fleet>) {
        let in_fleet: HashSet<&str> = targets
            .iter()
            .filter(|t| t.fleet)
            .map(|t| t.name.as_str())
            .collect();
        for target in targets {
            let table = target.at;
            for dependency in &target.depends_on {
                if target.fleet || in_fleet.contains(dependency.as_str()) {
                    self.push(table, format!("target {:?}: depends_on {dependency:?} crosses the fleet: a fleet target may be checked on another member, so neither may depend on the other (drop depends_on, or make both local)", target.name));
                }
            }
            if target.fleet && fleet.is_none() {
                self.push(table, format!("target {:?}: fleet = true needs a [fleet] table naming the etcd cluster (etcd = [\"http://HOST:2379\"])", target.name));
            }
            if target.confirm > 0 && !target.fleet {
                self.push(table, format!("target {:?}: confirm asks other members of the fleet, so it needs fleet = true", target.name));
            }
            if target.confirm > 16 {
                self.push(
                    table,
                    format!(
                        "target {:?}: confirm = {} asks too many members; at most 16",
                        target.name, target.confirm
                    ),
                );
            }
        }
    }

    fn store(&mut self, store: &Store) {
        let at = self.source.text().find("[store]").unwrap_or(0);
        if store.keep_events_for.is_zero() {
            self.error(
                at,
                "[store] keep_events_for must be longer than zero".to_owned(),
            );
        }
        if store.keep_events == 0 {
            self.error(at, "[store] keep_events must be at least 1".to_owned());
        }
    }

    fn target(&mut self, raw: Spanned<RawTarget>, healer: &Healer) -> Option<Target> {
        let span = raw.span();
        let at = span.start;
        let raw = raw.into_inner();
        let name = raw.name.get_ref().clone();
        // Checked after merging: the target's own values are blamed here,
        // the inherited ones at [healer].
        let policy = raw.policy(healer.policy());
        let written = raw.overrides();
        for (key, problem) in policy.problems() {
            if written.contains(&key) {
                let key_at = self.source.key_in_table(span.clone(), key);
                self.push(key_at, format!("target {name:?}: {problem}"));
            }
        }
        if raw.learn_after == 0 {
            let key_at = self.source.key_in_table(span.clone(), "learn_after");
            self.push(
                key_at,
                format!("target {name:?}: learn_after must be at least 1"),
            );
        }
        let checks = self.checks(&name, raw.monitor, raw.diagnose, &policy);
        let mut recoverers: Vec<RecovererUse> = raw
            .recover
            .into_iter()
            .filter_map(|t| self.recoverer_use(t))
            .collect();
        let mut uses: HashMap<String, usize> = HashMap::new();
        for recoverer in &mut recoverers {
            let seen = uses.entry(recoverer.plugin.plugin.clone()).or_default();
            *seen += 1;
            if *seen > 1 {
                recoverer.name = format!("{}#{seen}", recoverer.plugin.plugin);
            }
        }
        Some(Target {
            name,
            enabled: raw.enabled,
            policy,
            depends_on: raw
                .depends_on
                .into_iter()
                .map(Spanned::into_inner)
                .collect(),
            checks: checks?,
            recoverers,
            order: raw.order,
            learn_after: raw.learn_after,
            fleet: raw.fleet,
            confirm: raw.confirm,
            at: self.source.locate(at),
        })
    }

    fn plugin_use(
        &mut self,
        kind: PluginKind,
        table: Spanned<toml::Table>,
        allow_on: bool,
    ) -> Option<PluginUse> {
        let span = table.span();
        let mut table = table.into_inner();
        let plugin = match table.remove("plugin") {
            Some(toml::Value::String(name)) => name,
            Some(_) => {
                self.error(
                    span.start,
                    format!("the {kind}'s `plugin` must be a string naming a {kind} plugin"),
                );
                return None;
            }
            None => {
                self.error(span.start, format!("this {kind} names no plugin: add `plugin = \"NAME\"` (`healer plugins` lists them)"));
                return None;
            }
        };
        let reads = if kind == PluginKind::Diagnoser {
            self.reads(&span, table.remove("reads"))?
        } else {
            Vec::new()
        };
        if !allow_on && table.contains_key("on") {
            let at = self.source.key_in_table(span.clone(), "on");
            self.errors.push(ConfigError {
                file: self.file.to_owned(),
                at: Some(at),
                message: format!("`on` selects findings for recoverers; a {kind} has no `on`"),
            });
        }
        let config = match serde_json::to_value(&table) {
            Ok(config) => config,
            Err(err) => {
                self.error(
                    span.start,
                    format!("the {kind}'s config cannot be passed to its plugin: {err}"),
                );
                return None;
            }
        };
        Some(PluginUse {
            kind,
            plugin,
            config,
            at: self.source.locate(span.start),
            span,
            reads,
        })
    }

    /// A diagnoser's `reads`: a list of globs on fact names.
    fn reads(&mut self, span: &Range<usize>, value: Option<toml::Value>) -> Option<Vec<String>> {
        let refuse = |this: &mut Self, message: String| {
            let at = this.source.key_in_table(span.clone(), "reads");
            this.errors.push(ConfigError {
                file: this.file.to_owned(),
                at: Some(at),
                message,
            });
            None
        };
        let items =
            match value {
                None => return Some(Vec::new()),
                Some(toml::Value::Array(items)) if items.iter().all(toml::Value::is_str) => items,
                Some(_) => return refuse(
                    self,
                    "`reads` must be a list of globs on fact names, e.g. reads = [\"target.db.*\"]"
                        .to_owned(),
                ),
            };
        let patterns: Vec<String> = items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect();
        for pattern in &patterns {
            if let Err(err) = Glob::new(pattern) {
                return refuse(
                    self,
                    format!(
                        "`reads` pattern {pattern:?} is not a valid glob: {}",
                        err.kind()
                    ),
                );
            }
        }
        Some(patterns)
    }

    fn recoverer_use(&mut self, table: Spanned<toml::Table>) -> Option<RecovererUse> {
        let span = table.span();
        let on: Vec<String> = match table.get_ref().get("on") {
            None => vec!["*".to_owned()],
            Some(toml::Value::Array(items)) if items.iter().all(toml::Value::is_str) => items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect(),
            Some(_) => {
                let at = self.source.key_in_table(span.clone(), "on");
                self.errors.push(ConfigError {
                    file: self.file.to_owned(),
                    at: Some(at),
                    message:
                        "`on` must be a list of globs on finding kinds, e.g. on = [\"process.*\"]"
                            .to_owned(),
                });
                return None;
            }
        };
        let mut builder = GlobSetBuilder::new();
        let mut unknown_builder = GlobSetBuilder::new();
        for pattern in &on {
            match Glob::new(pattern) {
                Ok(glob) => {
                    if pattern.ends_with(".unknown") {
                        unknown_builder.add(glob.clone());
                    }
                    builder.add(glob);
                }
                Err(err) => {
                    let at = self.source.key_in_table(span.clone(), "on");
                    self.errors.push(ConfigError {
                        file: self.file.to_owned(),
                        at: Some(at),
                        message: format!(
                            "`on` pattern {pattern:?} is not a valid glob: {}",
                            err.kind()
                        ),
                    });
                    return None;
                }
            }
        }
        let matcher = builder.build().ok()?;
        let unknown_matcher = unknown_builder.build().ok()?;
        let when = self.gates(&table, "when")?;
        let unless = self.gates(&table, "unless")?;
        let (mode, propose_for, min_success) = self.asking_first(&table)?;
        let mut table = table.into_inner();
        for key in ["on", "when", "unless", "mode", "propose_for", "min_success"] {
            table.remove(key);
        }
        let plugin = self.plugin_use(PluginKind::Recoverer, Spanned::new(span, table), true)?;
        Some(RecovererUse {
            name: plugin.plugin.clone(),
            plugin,
            on,
            matcher,
            unknown_matcher,
            when,
            unless,
            mode,
            propose_for,
            min_success,
        })
    }

    /// A recoverer's `mode`, `propose_for` and `min_success`.
    fn asking_first(
        &mut self,
        table: &Spanned<toml::Table>,
    ) -> Option<(Mode, Duration, Option<f64>)> {
        let span = table.span();
        let refuse = |this: &mut Self, key: &str, message: String| {
            let at = this.source.key_in_table(span.clone(), key);
            this.errors.push(ConfigError {
                file: this.file.to_owned(),
                at: Some(at),
                message,
            });
        };
        let mode = match table.get_ref().get("mode") {
            None => Mode::Act,
            Some(toml::Value::String(mode)) if mode == "act" => Mode::Act,
            Some(toml::Value::String(mode)) if mode == "propose" => Mode::Propose,
            Some(other) => {
                refuse(
                    self,
                    "mode",
                    format!("`mode` must be \"act\" or \"propose\", not {other}"),
                );
                return None;
            }
        };
        let propose_for = match table.get_ref().get("propose_for") {
            None => DEFAULT_PROPOSE_FOR,
            Some(toml::Value::String(text)) => match Duration::parse(text) {
                Ok(duration) if !duration.is_zero() => duration,
                Ok(_) => {
                    refuse(
                        self,
                        "propose_for",
                        "`propose_for` must be longer than zero".to_owned(),
                    );
                    return None;
                }
                Err(err) => {
                    refuse(self, "propose_for", format!("`propose_for`: {err}"));
                    return None;
                }
            },
            Some(_) => {
                refuse(
                    self,
                    "propose_for",
                    "`propose_for` must be a duration, e.g. propose_for = \"1h\"".to_owned(),
                );
                return None;
            }
        };
        let min_success = match table.get_ref().get("min_success") {
            None => None,
            Some(value) => match value
                .as_float()
                .or_else(|| value.as_integer().map(|i| i as f64))
            {
                Some(share) if (0.0..=1.0).contains(&share) => Some(share),
                _ => {
                    refuse(
                        self,
                        "min_success",
                        "`min_success` must be a share between 0 and 1, e.g. min_success = 0.5"
                            .to_owned(),
                    );
                    return None;
                }
            },
        };
        Some((mode, propose_for, min_success))
    }

    /// A recoverer's `when` or `unless`: a list of conditions on facts.
    fn gates(&mut self, table: &Spanned<toml::Table>, key: &str) -> Option<Vec<Gate>> {
        let span = table.span();
        let items = match table.get_ref().get(key) {
            None => return Some(Vec::new()),
            Some(toml::Value::Array(items)) if items.iter().all(toml::Value::is_str) => items,
            Some(_) => {
                let at = self.source.key_in_table(span, key);
                self.errors.push(ConfigError {
                    file: self.file.to_owned(),
                    at: Some(at),
                    message: format!(
                        "`{key}` must be a list of conditions on facts, e.g. {key} = [\"target.db.healthy == true\"]"
                    ),
                });
                return None;
            }
        };
        let mut gates = Vec::new();
        for text in items.iter().filter_map(toml::Value::as_str) {
            match Gate::parse(text) {
                Ok(gate) => gates.push(gate),
                Err(err) => {
                    let at = self.source.key_in_table(span.clone(), key);
                    self.errors.push(ConfigError {
                        file: self.file.to_owned(),
                        at: Some(at),
                        message: format!("`{key}`: {err}"),
                    });
                    return None;
                }
            }
        }
        Some(gates)
    }

    /// Unique names, known dependencies, no cycles.
    fn names_and_dependencies(&mut self, targets: &[Target]) {
        let mut first_at: HashMap<&str, Location> = HashMap::new();
        for target in targets {
            let valid = !target.name.is_empty()
                && target.name.len() <= 64
                && target
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !valid {
                self.push(
                    target.at,
                    format!(
                        "target name {:?} must be 1 to 64 of A-Z a-z 0-9 - _ .",
                        target.name
                    ),
                );
            }
            if let Some(first) = first_at.get(target.name.as_str()) {
                self.push(target.at, format!("a second target is named {:?} (the first is at line {}); names must be unique", target.name, first.line));
            } else {
                first_at.insert(&target.name, target.at);
            }
        }
        for target in targets {
            for dependency in &target.depends_on {
                if dependency == &target.name {
                    self.push(
                        target.at,
                        format!("target {:?} depends on itself", target.name),
                    );
                } else if !first_at.contains_key(dependency.as_str()) {
                    let hint = did_you_mean(dependency, first_at.keys().copied())
                        .map(|guess| format!(" (did you mean \"{guess}\"?)"))
                        .unwrap_or_default();
                    self.push(
                        target.at,
                        format!(
                            "target {:?} depends on {dependency:?}, which is not a target{hint}",
                            target.name
                        ),
                    );
                }
            }
        }
        if let Some(cycle) = find_cycle(targets) {
            let at = targets
                .iter()
                .find(|t| t.name == cycle[0])
                .map_or(Location { line: 1, column: 1 }, |t| t.at);
            self.push(
                at,
                format!("depends_on forms a cycle: {}", cycle.join(" -> ")),
            );
        }
    }

    fn push(&mut self, at: Location, message: String) {
        self.errors.push(ConfigError {
            file: self.file.to_owned(),
            at: Some(at),
            message,
        });
    }
}

/// A dependency cycle as target names, first repeated at the end.
fn find_cycle(targets: &[Target]) -> Option<Vec<String>> {
    let edges: HashMap<&str, &[String]> = targets
        .iter()
        .map(|t| (t.name.as_str(), t.depends_on.as_slice()))
        .collect();
    let mut done: HashSet<&str> = HashSet::new();
    for target in targets {
        let mut path: Vec<&str> = Vec::new();
        if let Some(cycle) = visit(&target.name, &edges, &mut path, &mut done) {
            return Some(cycle);
        }
    }
    None
}

fn visit<'a>(
    name: &'a str,
    edges: &HashMap<&'a str, &'a [String]>,
    path: &mut Vec<&'a str>,
    done: &mut HashSet<&'a str>,
) -> Option<Vec<String>> {
    if let Some(at) = path.iter().position(|n| *n == name) {
        let mut cycle: Vec<String> = path[at..].iter().map(|n| (*n).to_owned()).collect();
        cycle.push(name.to_owned());
        return Some(cycle);
    }
    if done.contains(name) {
        return None;
    }
    path.push(name);
    for next in edges.get(name).copied().unwrap_or_default() {
        if let Some(cycle) = visit(next, edges, path, done) {
            return Some(cycle);
        }
    }
    path.pop();
    done.insert(name);
    None
}

/// A plugin's config as written in TOML (e.g. its sample config), as the
/// JSON object the plugin's package deserializes.
pub fn plugin_table_to_json(toml_text: &str) -> Result<Value, String> {
    let table: toml::Table =
        toml::from_str(toml_text).map_err(|err| err.message().trim().to_owned())?;
    serde_json::to_value(table).map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests;

fn default_learn_after() -> u32 {
    DEFAULT_LEARN_AFTER
}
