//! The three traits a plugin author implements: [`Monitor`], [`Diagnoser`]
//! and [`Recoverer`]. They are plain Rust: no FFI types, no `unsafe`.
//!
//! Each has a typed `Config` (deserialized from the plugin's table in
//! `healer.toml`; use `#[serde(deny_unknown_fields)]` so typos are caught),
//! a `NAME` used in configs, a one-line `DESCRIPTION` and a commented
//! `SAMPLE_CONFIG` that `healer plugins` prints.
//!
//! Async methods run on a Tokio runtime the package owns (one worker thread),
//! never on the host's threads; blocking work belongs in
//! [`tokio::task::spawn_blocking`], which this runtime also provides.

use std::future::Future;

use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::duration::Duration;
use crate::finding::{Finding, Outcome, Recovery};
use crate::observation::Observation;

/// The error type plugin methods return: any error converts into it with `?`,
/// and a string becomes one with `.into()`.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Watches one target: the host calls [`check`](Monitor::check) on the
/// target's schedule, and the monitor may also [`Push`] observations the
/// moment something happens (a process exits, a file changes).
///
/// One instance serves one target and keeps its state between checks (a log
/// scanner keeps its file offset). Checks of one instance never overlap.
pub trait Monitor: Sized + Send + 'static {
    /// The plugin's options, deserialized from its table in the config.
    type Config: DeserializeOwned;
    /// The name configs use to pick this plugin, e.g. `"http"`.
    const NAME: &'static str;
    /// One line for `healer plugins`.
    const DESCRIPTION: &'static str;
    /// A commented TOML sample listing every option with its default.
    const SAMPLE_CONFIG: &'static str = "";

    /// Creates an instance for one target, or says why the config is wrong.
    /// `healer check` also calls it to validate configs and drops the
    /// result, so start nothing here: spawn watchers in
    /// [`watch`](Monitor::watch), open connections in the first `check`.
    fn new(config: Self::Config) -> Result<Self, Error>;

    /// Checks the target once. An `Err` becomes an UNKNOWN observation.
    fn check(&mut self) -> impl Future<Output = Result<Observation, Error>> + Send;

    /// Called once after [`new`](Monitor::new): keep `push` (or move it into a
    /// spawned task) to report observations as events happen, between
    /// scheduled checks. The default drops it: a polling-only monitor.
    fn watch(&mut self, push: Push) {
        drop(push);
    }

    /// The longest a check waits, with this config, before it answers by
    /// itself: a service that hangs then is this monitor's own CRITICAL
    /// observation (the `http` monitor's `timeout`). healer refuses a
    /// config in which this is not below the target's check deadline (its
    /// `timeout`): healer's deadline would fire first, and a hang would be
    /// UNKNOWN, which healer never acts on. Name the option `timeout`, as
    /// the shipped monitors do: healer's message tells people to lower the
    /// monitor's `timeout`. Asked by `healer check` and whenever healer
    /// loads a config, possibly with a config [`new`](Self::new) then
    /// refuses: keep it a quick, pure function of the config that never
    /// panics. The default: none (no deadline of its own).
    fn own_timeout(config: &Self::Config) -> Option<Duration> {
        let _ = config;
        None
    }
}

/// Turns observations into findings: named problems that issues are opened
/// for and recoverers are chosen by.
pub trait Diagnoser: Sized + Send + 'static {
    /// The plugin's options.
    type Config: DeserializeOwned;
    /// The name configs use to pick this plugin.
    const NAME: &'static str;
    /// One line for `healer plugins`.
    const DESCRIPTION: &'static str;
    /// A commented TOML sample listing every option with its default.
    const SAMPLE_CONFIG: &'static str = "";

    /// Creates an instance for one target.
    fn new(config: Self::Config) -> Result<Self, Error>;

    /// Whether [`diagnose`](Self::diagnose) may block (read a file, run a
    /// program): then it runs on the package's blocking pool, under the
    /// host's deadline. A diagnoser that only reads the observations says
    /// `false` and runs in the host's call itself, with no hop to another
    /// thread (in a plugin worker: right after the check, in the worker
    /// that ran it): at thousands of targets the hop costs more than the
    /// diagnosis. No deadline can interrupt it then: one that hangs stops
    /// its worker's heartbeat, and healer restarts the worker.
    const BLOCKS: bool = true;

    /// Diagnoses the latest observation; `history` holds the ones before it,
    /// oldest first. No findings means healthy as far as this diagnoser knows.
    /// Runs on the package's blocking pool unless [`BLOCKS`](Self::BLOCKS)
    /// is `false`.
    fn diagnose(&mut self, latest: &Observation, history: &[Observation]) -> Vec<Finding>;

    /// How many observations before the latest [`diagnose`](Self::diagnose)
    /// reads, with this config: `history` holds no more than this, and
    /// healer keeps no more than the most any of a target's diagnosers
    /// needs when it knows (they are in the monitor's package, or loaded
    /// in-process; never more than the target's `history` setting). A
    /// diagnoser that judges the latest observation alone says `0` and
    /// costs no memory or copying per check. Asked when an instance is
    /// created, possibly with a config [`new`](Self::new) then refuses:
    /// keep it a quick, pure function of the config that never panics.
    /// The default: all the target keeps.
    fn history_needed(config: &Self::Config) -> usize {
        let _ = config;
        usize::MAX
    }

    /// Every finding kind [`diagnose`](Self::diagnose) may return with
    /// this config (a `logscan` diagnoser's come from its patterns).
    /// healer then refuses a recoverer whose `on` glob matches none of
    /// the kinds its target can have, with a "did you mean": a typo in
    /// `on` would otherwise pass every check and leave the issue to be
    /// escalated at once, with nothing to recover it. healer checks a
    /// target only when each of its diagnosers declares; the kinds healer
    /// makes itself (`<monitor>.warning`, `.critical`, `.unknown`) it
    /// knows. Asked like [`history_needed`](Self::history_needed): a
    /// quick, pure function of the config that never panics. The default,
    /// `None`: not declared (nothing is checked).
    fn kinds(config: &Self::Config) -> Option<Vec<String>> {
        let _ = config;
        None
    }
}

/// Fixes a finding: restarts a service, runs a command, calls a webhook.
pub trait Recoverer: Sized + Send + 'static {
    /// The plugin's options.
    type Config: DeserializeOwned;
    /// The name configs use to pick this plugin.
    const NAME: &'static str;
    /// One line for `healer plugins`.
    const DESCRIPTION: &'static str;
    /// A commented TOML sample listing every option with its default.
    const SAMPLE_CONFIG: &'static str = "";

    /// Creates an instance for one target or workflow step.
    fn new(config: Self::Config) -> Result<Self, Error>;

    /// Attempts the recovery. `Ok` means the action was carried out (the
    /// next check tells whether it helped); `Err` means it failed.
    fn recover(
        &mut self,
        recovery: &Recovery,
    ) -> impl Future<Output = Result<Outcome, Error>> + Send;
}

/// How many pushed observations may wait for the host before new ones are
/// dropped; a monitor that floods cannot grow the host's memory.
pub(crate) const PUSH_BACKLOG: usize = 64;

/// A handle a [`Monitor`] uses to report observations between checks.
/// Cheap to clone; dropping every clone tells the host no more will come.
#[derive(Clone, Debug)]
pub struct Push {
    sender: Sender,
}

/// Where pushed observations go: boxed on the way to the host (a
/// channel's slots are allocated 32 at a time, one channel per monitor,
/// thousands of monitors), unboxed to a test's [`Push::channel`].
#[derive(Clone, Debug)]
enum Sender {
    ToHost(mpsc::Sender<Box<Observation>>),
    ToTest(mpsc::Sender<Observation>),
}

impl Push {
    pub(crate) fn new(sender: mpsc::Sender<Box<Observation>>) -> Push {
        Push {
            sender: Sender::ToHost(sender),
        }
    }

    /// A `Push` whose observations arrive on the returned receiver (up to
    /// the host's backlog of 64): to test a monitor's `watch` without the
    /// host.
    pub fn channel() -> (Push, mpsc::Receiver<Observation>) {
        let (sender, pushed) = mpsc::channel(PUSH_BACKLOG);
        let push = Push {
            sender: Sender::ToTest(sender),
        };
        (push, pushed)
    }

    /// Reports an observation now. Returns `false` if it was dropped because
    /// the host is not keeping up or no longer listens.
    pub fn send(&self, observation: Observation) -> bool {
        match &self.sender {
            Sender::ToHost(sender) => sender.try_send(Box::new(observation)).is_ok(),
            Sender::ToTest(sender) => sender.try_send(observation).is_ok(),
        }
    }

    /// Whether the host has stopped listening (the instance was dropped).
    pub fn is_closed(&self) -> bool {
        match &self.sender {
            Sender::ToHost(sender) => sender.is_closed(),
            Sender::ToTest(sender) => sender.is_closed(),
        }
    }
}
