//! The `healer` command line: argument parsing (clap) and dispatch, like
//! ripgrep's `main.rs`. The commands live beside it (`check.rs`,
//! `plugins.rs`, `reflexes.rs`), in the daemon (`run`) and in the operator
//! (the commands that ask a running daemon); each returns the process exit
//! code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod check;
mod decisions;
mod new_plugin;
mod plugins;
mod reflexes;

use check::{check, once};
use plugins::plugins;
use reflexes::{explain, send};

use crate::config::{self, Config};
use crate::daemon;
use crate::issues::Answer;
use crate::loading::Options;
use crate::operator;
use crate::operator::fail;

/// healer: a self-healing daemon for Linux services.
///
/// Loads monitor, diagnoser and recoverer plugins from shared objects and
/// runs the monitor -> diagnose -> recover loop over the targets its TOML
/// config names.
#[derive(Debug, Parser)]
#[command(name = "healer", version, about, long_about)]
pub struct Cli {
    /// The config file [default: config/healer.toml where it exists (a
    /// checkout), else /etc/healer/healer.toml (installed)].
    #[arg(short, long, global = true, default_value_os_t = config::default_config(), hide_default_value = true, value_name = "FILE")]
    pub config: PathBuf,

    /// Load plugins from this directory instead of the config's `plugins_dir`.
    #[arg(long, global = true, value_name = "DIR")]
    pub plugins_dir: Option<PathBuf>,

    /// Say more: full load diagnostics (layout dumps) and debug logs.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the healing loop over every enabled target until SIGTERM/SIGINT.
    ///
    /// Exits 0 at once when `[healer] enabled = false`, and 1 when the
    /// config or a plugin config is invalid (with one line per problem).
    Run,
    /// Check the config and every plugin config without running anything
    /// (like `nginx -t`). Exits 0 when all is well, 1 otherwise.
    Check,
    /// Check every target once, print a table, and exit with the worst
    /// status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (Nagios codes).
    Once {
        /// Only this target.
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
        /// Also run the recoveries that are due, as `run` would.
        #[arg(long)]
        recover: bool,
    },
    /// Show what an anomaly of this name would start: the reflex that
    /// matches (first match wins) and where it is written, the workflow, its
    /// parameters and rendered steps. Runs nothing; exits 1 when no reflex
    /// matches. For a target's name: what its recoveries wait on (`on`,
    /// `when`, `unless`, `depends_on`), each read on the running daemon's
    /// facts.
    Explain {
        /// The anomaly name, e.g. api_latency.coinbase.high, or a target.
        name: String,
    },
    /// Post an anomaly to the running daemon's intake (`POST /anomaly`, at
    /// the config's `[intake] bind`, with its token), and print the answer.
    Send {
        /// The anomaly name.
        name: String,
        /// A detail as key=value (repeatable); numbers and booleans stay typed.
        #[arg(long = "detail", short = 'd', value_name = "KEY=VALUE")]
        details: Vec<String>,
        /// Only report what would run (`?dry_run=true`).
        #[arg(long)]
        dry_run: bool,
    },
    /// Show every target of the running daemon (status, last check,
    /// issues, pause), like `monit summary`. Exits with the worst status:
    /// 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN or not checked yet; 4 when
    /// the daemon cannot be asked.
    Status {
        /// Print the API's JSON (`GET /api/v1/targets`).
        #[arg(long)]
        json: bool,
    },
    /// Show the fleet as the running daemon sees it (`[fleet]`): the
    /// members etcd lists, the shards this member owns with their epochs
    /// and targets, its lease's time left, or why it is out of touch.
    Fleet {
        /// Print the API's JSON (`GET /api/v1/fleet`).
        #[arg(long)]
        json: bool,
    },
    /// Show what the running daemon knows now, as facts: each target's
    /// `healthy`, `since` and `status`, and what plugins published.
    Facts {
        /// Only the facts about this target.
        target: Option<String>,
        /// Print the API's JSON (`GET /api/v1/facts`).
        #[arg(long)]
        json: bool,
    },
    /// Set or take back an operator's note: a fact (`SUBJECT.note.KEY`)
    /// that gates can read, e.g. `unless = ["target.db.note.migrating"]`.
    Fact {
        #[command(subcommand)]
        action: FactAction,
    },
    /// Show the running daemon's recent events, newest first.
    History {
        /// Only this target's (or anomaly's) events.
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
        /// Only events of this name, or of this prefix (`issue` for every
        /// `issue_*` event).
        #[arg(long, value_name = "EVENT")]
        kind: Option<String>,
        /// Only events since this time (2026-11-23T10:00:00Z) or age (30m).
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// At most this many events.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Reset an issue (TARGET/KIND, or TARGET for every escalated one):
    /// it is open again with its recovery attempts back. With `--plugin
    /// FILE`: lift a quarantined plugin package (its worker starts again
    /// on next use; the quarantine is otherwise kept across restarts).
    Reset {
        /// TARGET/KIND, e.g. web/process.not_running, or TARGET.
        #[arg(required_unless_present = "plugin")]
        issue: Option<String>,
        /// Lift the quarantine of this package: its file name in the
        /// plugins directory, e.g. libhealer_plugin_process.so.
        #[arg(long, value_name = "FILE", conflicts_with = "issue")]
        plugin: Option<String>,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Approve a recovery healer proposed instead of running it
    /// (`mode = "propose"`, or a recoverer under its `min_success`): the
    /// target is checked at once and, while the issue still holds, the
    /// proposed recoverer runs, once.
    Approve {
        /// TARGET/KIND, e.g. web/process.not_running (`healer status`
        /// shows what is proposed).
        issue: String,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Reject a proposed recovery: it does not run, and the issue is
    /// escalated (nothing more is tried until it resolves or is reset).
    Reject {
        /// TARGET/KIND, e.g. web/process.not_running.
        issue: String,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the ledger of outcomes: per target, finding kind and
    /// recoverer, the attempts judged, how many healed (the issue resolved
    /// and stayed resolved for `stable_after`), the median time to
    /// healthy and the latest verdict.
    Outcomes {
        /// Print the API's JSON (`GET /api/v1/outcomes`).
        #[arg(long)]
        json: bool,
    },
    /// Pause a target's recoveries for maintenance: checks go on,
    /// recoveries do not, until the pause ends by itself (it survives a
    /// restart of healer) or `healer resume`.
    Pause {
        /// The target.
        target: String,
        /// How long, e.g. 30m or 2h (at most 30 days).
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
        /// Why (shown in the status, the dashboard and the history).
        #[arg(long, default_value = "maintenance")]
        reason: String,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// End a target's pause: recoveries act again.
    Resume {
        /// The target.
        target: String,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make the running daemon re-read its config and rescan its plugins
    /// directory (as SIGHUP does), and say what changed. A bad config is
    /// rejected with its problems (exit 1); the running one carries on.
    Reload {
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the plugin packages in the plugins directory: each package's
    /// file, name, version and SDK version, each plugin's kind, name,
    /// description and sample config, and every file that failed to load.
    ///
    /// Exits 0 when every file loaded (with warnings or not), 1 when any
    /// did not.
    Plugins {
        /// Scan this directory instead of the config's `plugins_dir`.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Say in one line whether this built `.so` would load here, and
        /// why not (it is loaded in a short-lived probe process, as healer
        /// does before loading a package, never in this one). Exits 0 when
        /// it would load, 1 when not.
        #[arg(long, value_name = "FILE", conflicts_with = "dir")]
        check: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        action: Option<PluginsAction>,
    },
    /// Internal: started by healer itself to load plugin packages away
    /// from the daemon. `--probe FILE` loads one package and answers
    /// whether it loaded; `healer worker NAME` serves the package healer
    /// assigns it on descriptor 3 (NAME, its file name, is what `ps`
    /// shows).
    #[command(hide = true)]
    Worker {
        /// Load this package file, answer one line and exit.
        #[arg(long, value_name = "FILE", conflicts_with = "package")]
        probe: Option<PathBuf>,
        /// What the probe confines itself to before it loads the package
        /// (JSON).
        #[arg(long, value_name = "JSON", requires = "probe")]
        sandbox: Option<String>,
        /// The package's file name: serve the package healer assigns on
        /// descriptor 3.
        #[arg(value_name = "PACKAGE")]
        package: Option<String>,
    },
}

/// What `healer plugins` does besides listing.
#[derive(Debug, Subcommand)]
pub enum PluginsAction {
    /// Write a new plugin package that builds as it is, against the SDK
    /// this healer shipped with: Cargo.toml, src/lib.rs with one plugin
    /// of each kind asked (and their sample configs), a unit test that
    /// drives them as healer does, and a README. Then: `cargo test`,
    /// `cargo build --release`, `healer plugins --check FILE`.
    New {
        /// The plugins' name (and the package's: healer-plugin-NAME), e.g.
        /// disk-probe.
        name: String,
        /// A kind of plugin to write (repeat for more; default monitor).
        #[arg(long, value_enum)]
        kind: Vec<new_plugin::Kind>,
        /// Where to write it (a new or empty directory; default ./NAME).
        #[arg(long, value_name = "DIR")]
        path: Option<PathBuf>,
    },
}

/// What `healer fact` does.
#[derive(Debug, Subcommand)]
pub enum FactAction {
    /// Set a note: `healer fact set target.db.note.migrating true --for 2h`.
    Set {
        /// `SUBJECT.note.KEY`, e.g. target.db.note.migrating.
        name: String,
        /// `true`, `false`, a number, or a text.
        value: String,
        /// How long it holds (at most 30 days).
        #[arg(long = "for", value_name = "DURATION", default_value = "1h")]
        duration: String,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Take a note back before its time.
    Unset {
        /// `SUBJECT.note.KEY`.
        name: String,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Plugins {
            action:
                Some(PluginsAction::New {
                    ref name,
                    ref kind,
                    ref path,
                }),
            ..
        } => new_plugin::new_plugin(name, kind, path.as_deref()),
        Command::Plugins {
            ref dir,
            ref check,
            json,
            action: None,
        } => match check {
            Some(file) => plugins::check_file(&cli, file, json),
            None => plugins(&cli, dir.clone(), json),
        },
        Command::Worker {
            ref probe,
            ref sandbox,
            ref package,
        } => match (probe, package) {
            (Some(file), _) => crate::plugins::worker::entry::probe(file, sandbox.as_deref()),
            (None, Some(package)) => crate::plugins::worker::serve::serve(package),
            (None, None) => fail(
                "healer worker is started by healer itself (--probe FILE, or PACKAGE with its socket on descriptor 3)",
            ),
        },
        Command::Run => {
            crate::memory::for_a_daemon();
            with_runtime(daemon::run(&cli.options()))
        }
        Command::Fleet { json } => match operator::Daemon::of(&cli.config) {
            Ok(daemon) => operator::fleet(&daemon, json),
            Err(err) => {
                eprintln!("healer: {err}");
                ExitCode::from(operator::UNREACHABLE)
            }
        },
        Command::Status { json } => match operator::Daemon::of(&cli.config) {
            Ok(daemon) => operator::status(&daemon, json),
            Err(err) => {
                eprintln!("healer: {err}");
                ExitCode::from(operator::UNREACHABLE)
            }
        },
        Command::History {
            ref target,
            ref kind,
            ref since,
            limit,
            json,
        } => ask(&cli, |d| {
            operator::history(
                d,
                target.as_deref(),
                kind.as_deref(),
                since.as_deref(),
                limit,
                json,
            )
        }),
        Command::Facts { ref target, json } => {
            ask(&cli, |d| operator::facts(d, target.as_deref(), json))
        }
        Command::Reset {
            ref issue,
            ref plugin,
            json,
        } => ask(&cli, |d| match (plugin, issue) {
            (Some(file), _) => operator::reset_plugin(d, file, json),
            (None, Some(issue)) => operator::reset(d, issue, json),
            (None, None) => fail("`healer reset` takes TARGET/KIND, TARGET, or --plugin FILE"),
        }),
        Command::Fact {
            action:
                FactAction::Set {
                    ref name,
                    ref value,
                    ref duration,
                    json,
                },
        } => ask(&cli, |d| operator::set_note(d, name, value, duration, json)),
        Command::Fact {
            action: FactAction::Unset { ref name, json },
        } => ask(&cli, |d| operator::unset_note(d, name, json)),
        Command::Approve { ref issue, json } => {
            ask(&cli, |d| operator::answer(d, issue, Answer::Approve, json))
        }
        Command::Reject { ref issue, json } => {
            ask(&cli, |d| operator::answer(d, issue, Answer::Reject, json))
        }
        Command::Outcomes { json } => ask(&cli, |d| operator::outcomes(d, json)),
        Command::Pause {
            ref target,
            ref duration,
            ref reason,
            json,
        } => ask(&cli, |d| operator::pause(d, target, duration, reason, json)),
        Command::Resume { ref target, json } => ask(&cli, |d| operator::resume(d, target, json)),
        Command::Reload { json } => match Config::load(&cli.config) {
            // Checked here first: a config with problems is not sent.
            Err(errors) => fail(&format!(
                "the config on disk has problems, so it was not sent for reload; the running healer carries on with its config:\n{errors}"
            )),
            Ok(_) => ask(&cli, |d| operator::reload(d, json)),
        },
        Command::Check => with_runtime(check(&cli)),
        Command::Once {
            ref target,
            recover,
        } => with_runtime(once(&cli, target.as_deref(), recover)),
        Command::Explain { ref name } => explain(&cli, name),
        Command::Send {
            ref name,
            ref details,
            dry_run,
        } => send(&cli, name, details, dry_run),
    }
}

/// Runs an operator's command against the daemon the config describes.
fn ask(cli: &Cli, command: impl FnOnce(&operator::Daemon) -> ExitCode) -> ExitCode {
    match operator::Daemon::of(&cli.config) {
        Ok(daemon) => command(&daemon),
        Err(err) => fail(&err),
    }
}

fn with_runtime(work: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(work),
        Err(err) => fail(&format!("cannot start the async runtime: {err}")),
    }
}

impl Cli {
    fn options(&self) -> Options {
        Options {
            config: self.config.clone(),
            plugins_dir: self.plugins_dir.clone(),
            verbose: self.verbose,
        }
    }
}

pub(super) fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
