//! The one way out of the engine and the intake: a closed, typed [`Event`]
//! for every transition, sent into one channel and handed, in order, to
//! every subscriber: the log (human or JSON lines, and the seed's
//! `auto_healer_action` record at CRITICAL), the event log file (one JSON
//! object per line, what tests read), the store, and the alert sinks.
//!
//! Emitting never blocks and never fails: [`Events::emit`] stamps the
//! event with the wall-clock time and sends it to the dispatcher thread,
//! which delivers it. A slow subscriber (a slow disk) delays other
//! subscribers, never a check. How many events wait ([`Events::waiting`])
//! is what the intake reads to refuse reports instead of queueing without
//! bound; on stop, [`Events::finish`] waits for what waits as long as it
//! is being written.
//!
//! What outside input puts into events (an anomaly's details, a reflex's
//! params) is encoded as JSON once, when the event is made ([`Json`]), and
//! shared by the log, the event log and the store.
//!
//! Invariant: the engine and the intake write no transition anywhere else.
//! They may still write `debug!` lines about their own mechanics.

mod journal;
mod to_log;
#[cfg(test)]
pub mod witness;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use healer_plugin_sdk::{Duration as Written, Status};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::alerts::AlertState;
use crate::board::Pause;
use crate::clock::Wall;
use crate::intake::{AnomalyState, Suppressed};
use crate::issues::Issue;

pub use journal::Journal;
pub use to_log::Log;

/// Everything that happens in healer that anyone outside the engine and
/// the intake may need to know.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// healer started (its state restored from the store, if any).
    Started {
        pid: u32,
        version: String,
        config: PathBuf,
        targets: usize,
        reflexes: usize,
        packages: usize,
        restored_issues: usize,
        restored_anomalies: usize,
    },
    /// healer is stopping (SIGTERM or SIGINT).
    Stopping,
    /// A reload (SIGHUP, `healer reload`) applied a new config: targets
    /// added, removed and restarted (changed), plugin packages newly
    /// loaded, and settings that only a restart applies.
    ConfigReloaded {
        config: PathBuf,
        added: Vec<String>,
        removed: Vec<String>,
        changed: Vec<String>,
        packages_added: Vec<String>,
        needs_restart: Vec<String>,
    },
    /// A reload was refused: the new config (or a plugin config in it) has
    /// problems; the running config carries on.
    ConfigRejected {
        config: PathBuf,
        problems: Vec<String>,
    },

    /// A check of a target finished (by schedule, or pushed by its monitor).
    /// Emitted on every status change; on every check only when a
    /// subscriber asked for every check (the event log, debug logs).
    Checked {
        target: String,
        /// Which of the target's checks, when it has more than one.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        check: String,
        status: Status,
        /// The status before; none for the target's first check (since
        /// start, or since a reload restarted it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        was: Option<Status>,
        summary: String,
        /// The monitor pushed it (a process exited) rather than being asked.
        pushed: bool,
        /// How long the check took, in microseconds (0 when pushed).
        #[serde(default)]
        took_us: u64,
    },
    /// A monitor or diagnoser call failed; the check is inconclusive.
    PluginFailed {
        target: String,
        role: Role,
        plugin: String,
        error: String,
    },
    /// A monitor or diagnoser call passed its deadline; the check is
    /// inconclusive.
    PluginTimedOut {
        target: String,
        role: Role,
        plugin: String,
        after: Written,
    },
    /// A finding was seen, but has not failed `fail_after` checks in a row yet.
    FindingSeen {
        target: String,
        kind: String,
        failures: u32,
        needed: u32,
    },
    /// A finding became an issue.
    IssueOpened { target: String, issue: Issue },
    /// An issue is due for recovery, but a dependency is not healthy.
    RecoveryHeld {
        target: String,
        kind: String,
        dependency: String,
        reason: String,
    },
    /// An issue is due, but nothing may act on it: its evidence is UNKNOWN
    /// (healer could not tell) and no recoverer asked for UNKNOWN kinds.
    RecoveryWithheld {
        target: String,
        kind: String,
        reason: String,
    },
    /// A recovery attempt started; `issue.attempts` is its number.
    AttemptStarted {
        target: String,
        issue: Issue,
        max_attempts: u32,
    },
    /// One recoverer of the ladder was tried.
    RecovererFinished {
        target: String,
        kind: String,
        attempt: u32,
        recoverer: String,
        #[serde(flatten)]
        result: StepResult,
    },
    /// A recovery attempt ended; `issue.next_attempt_at` is when the next
    /// may start.
    AttemptFinished {
        target: String,
        issue: Issue,
        recovered: bool,
    },
    /// An issue's target was healthy for `resolve_after` checks.
    IssueResolved { target: String, issue: Issue },
    /// No more recovery until the issue resolves or an operator resets it.
    IssueEscalated {
        target: String,
        issue: Issue,
        reason: String,
    },
    /// The flap memory let a resolved issue go: it stayed resolved for
    /// `stable_after`, so its attempts no longer count and a new issue of
    /// this kind starts from attempt 1. Not an operator's reset
    /// ([`Event::IssueResetByOperator`]). Written `issue_reset` before
    /// store schema 4, which renamed the saved ones.
    IssueForgotten {
        target: String,
        kind: String,
        reason: String,
    },
    /// An operator reset an issue: it is open again with no attempts made
    /// (an escalated issue is recovered again).
    IssueResetByOperator { target: String, issue: Issue },
    /// An open issue nobody carries on: its target was removed, or its
    /// monitor changed, in a reload. Not resolved: no longer watched.
    IssueDropped {
        target: String,
        issue: Issue,
        reason: String,
    },
    /// Findings of a target's check were left out: a diagnoser answered
    /// more than healer takes from one answer, or the target already holds
    /// as many open issues as it may. Emitted when a check starts leaving
    /// findings out, not again while each check goes on doing so.
    FindingsDropped {
        target: String,
        /// Findings left out by the check that said so.
        count: usize,
        reason: String,
    },
    /// An operator paused a target's recoveries (maintenance): checks go on.
    TargetPaused { target: String, pause: Pause },
    /// A pause now ends sooner: it ended further away than the longest
    /// pause allows (the clock was set back since it began).
    PauseShortened {
        target: String,
        pause: Pause,
        reason: String,
    },
    /// A target's pause ended: `reason` is "resumed by an operator" or
    /// "the pause expired".
    TargetResumed { target: String, reason: String },
    /// An issue was due for recovery while its target is paused: nothing
    /// acts on it until the pause ends (said once per issue and pause).
    RecoveryPaused {
        target: String,
        kind: String,
        until: Wall,
        reason: String,
    },

    /// An anomaly matched no reflex; nothing runs. Recorded at most once
    /// per name every 10 s (100 for all names): `left_out` says how many
    /// such reports were only counted since the last recorded one.
    NoReflex {
        anomaly: String,
        details: Json,
        reason: String,
        #[serde(default)]
        left_out: u64,
    },
    /// An anomaly started its workflow.
    WorkflowStarted {
        #[serde(flatten)]
        run: Run,
        state: AnomalyState,
    },
    /// The kill switch is on: the workflow would have started.
    WouldRun {
        #[serde(flatten)]
        run: Run,
        state: AnomalyState,
    },
    /// One step of a workflow ran.
    WorkflowStep {
        run_id: String,
        workflow: String,
        step: usize,
        plugin: String,
        #[serde(flatten)]
        result: StepResult,
    },
    /// A workflow ended.
    WorkflowFinished {
        #[serde(flatten)]
        run: Run,
        succeeded: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A report was counted, not run (running, cooldown, attempts
    /// exhausted, rate limited).
    AnomalySuppressed {
        anomaly: String,
        workflow: String,
        reason: Suppressed,
        /// Reports suppressed so far.
        count: u64,
        state: AnomalyState,
    },
    /// An anomaly's workflow ran `max_attempts` times and it is still
    /// reported: no further runs until it is quiet or its alert resolves.
    AnomalyEscalated {
        anomaly: String,
        workflow: String,
        attempts: u32,
        /// How long it must be quiet before it may run again.
        quiet_for: Written,
        state: AnomalyState,
    },
    /// An anomaly is over (its alert resolved): its attempts are forgotten.
    AnomalyResolved { anomaly: String },
    /// A firing Alertmanager alert arrived.
    AlertReceived {
        alertname: String,
        fingerprint: String,
        starts_at: String,
        /// This occurrence was acted on before (Alertmanager re-sends).
        duplicate: bool,
        /// Its anomaly ran (or would have run) its workflow now.
        acted_on: bool,
    },
    /// A resolved Alertmanager alert arrived.
    AlertResolved {
        alertname: String,
        fingerprint: String,
        /// No other alert of this name is firing: the anomaly resolved.
        anomaly_resolved: bool,
    },
    /// The intake refused reports (503) because too many events wait to
    /// be recorded: `refused` since the last such event. Said when
    /// refusing starts, at most every 10 s while it lasts, and once when
    /// reports are taken again.
    ReportsRefused {
        refused: u64,
        /// Events waiting to be recorded when it was said.
        waiting: usize,
        /// `[intake] max_backlog`.
        limit: usize,
        reason: String,
    },

    /// An alert sink delivered an escalation (`firing`) or its end
    /// (`resolved`); `tries`: the requests it took (not an issue's
    /// recovery attempts). `resent`: a firing alert sent again so
    /// Alertmanager keeps it.
    AlertSent {
        sink: String,
        target: String,
        kind: String,
        state: AlertState,
        tries: u32,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        resent: bool,
    },
    /// An alert sink gave up delivering: every try failed, or an answer
    /// said another would not help (a redirect, a 4xx).
    AlertFailed {
        sink: String,
        target: String,
        kind: String,
        state: AlertState,
        tries: u32,
        error: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        resent: bool,
    },

    /// A plugin worker ended without being asked to: it crashed, was
    /// killed, missed its heartbeat or broke the protocol. Its calls in
    /// flight ended as UNKNOWN; it is started again on next use, after a
    /// backoff. `crashes` counts those within `within`.
    PluginWorkerCrashed {
        package: String,
        file: PathBuf,
        reason: String,
        in_flight: usize,
        crashes: u32,
        within: Written,
    },
    /// A plugin worker was started again after a crash.
    PluginWorkerRestarted {
        package: String,
        file: PathBuf,
        pid: u32,
    },
    /// A package's worker crashed `crashes` times within `within`: its
    /// plugins are not called (their targets are UNKNOWN, nothing recovers
    /// on their word) until its file changes or healer restarts.
    PluginQuarantined {
        package: String,
        file: PathBuf,
        crashes: u32,
        within: Written,
        reason: String,
    },
    /// A quarantined package's file changed and probed clean: it is
    /// served again.
    PluginQuarantineLifted { package: String, file: PathBuf },

    /// The store cannot write: healing goes on from memory, and the store
    /// retries and catches up.
    StoreDegraded { file: PathBuf, error: String },
    /// The store writes again; `written` events were caught up, `dropped`
    /// were lost while it could not (the oldest beyond its memory limit).
    StoreRecovered {
        file: PathBuf,
        written: u64,
        dropped: u64,
    },
    /// The database file was corrupt: moved aside (never deleted) and a new
    /// one started.
    StoreMovedAside {
        file: PathBuf,
        moved_to: PathBuf,
        error: String,
    },
}

/// Which plugin of a target a failure concerns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Monitor,
    Diagnoser,
}

impl Role {
    /// Lower-case name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Monitor => "monitor",
            Role::Diagnoser => "diagnoser",
        }
    }
}

/// How a recoverer or a workflow step ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum StepResult {
    Succeeded { summary: String },
    Failed { error: String },
    TimedOut { after: Written },
}

impl StepResult {
    /// Success, with what the plugin said (credentials in URLs redacted).
    pub fn success(summary: &str) -> StepResult {
        StepResult::Succeeded {
            summary: crate::redact::text_of(summary),
        }
    }

    /// Failure, with the plugin's error (credentials in URLs redacted).
    pub fn failure(error: &str) -> StepResult {
        StepResult::Failed {
            error: crate::redact::text_of(error),
        }
    }

    /// Whether it succeeded.
    pub fn succeeded(&self) -> bool {
        matches!(self, StepResult::Succeeded { .. })
    }

    /// The error (or timeout) as one line; `None` on success.
    pub fn error(&self) -> Option<String> {
        match self {
            StepResult::Succeeded { .. } => None,
            StepResult::Failed { error } => Some(error.clone()),
            StepResult::TimedOut { after } => Some(format!("timed out after {after}")),
        }
    }
}

/// One workflow run: the seed's `auto_healer_action` record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub run_id: String,
    pub anomaly: String,
    pub details: Json,
    pub workflow: String,
    pub params: Json,
    pub reflex: String,
    pub attempt: u32,
}

impl Event {
    /// The event's name, as in its `"event"` field.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Started { .. } => "started",
            Event::Stopping => "stopping",
            Event::ConfigReloaded { .. } => "config_reloaded",
            Event::ConfigRejected { .. } => "config_rejected",
            Event::Checked { .. } => "checked",
            Event::PluginFailed { .. } => "plugin_failed",
            Event::PluginTimedOut { .. } => "plugin_timed_out",
            Event::FindingSeen { .. } => "finding_seen",
            Event::IssueOpened { .. } => "issue_opened",
            Event::RecoveryHeld { .. } => "recovery_held",
            Event::RecoveryWithheld { .. } => "recovery_withheld",
            Event::AttemptStarted { .. } => "attempt_started",
            Event::RecovererFinished { .. } => "recoverer_finished",
            Event::AttemptFinished { .. } => "attempt_finished",
            Event::IssueResolved { .. } => "issue_resolved",
            Event::IssueEscalated { .. } => "issue_escalated",
            Event::IssueForgotten { .. } => "issue_forgotten",
            Event::IssueResetByOperator { .. } => "issue_reset_by_operator",
            Event::IssueDropped { .. } => "issue_dropped",
            Event::FindingsDropped { .. } => "findings_dropped",
            Event::TargetPaused { .. } => "target_paused",
            Event::PauseShortened { .. } => "pause_shortened",
            Event::TargetResumed { .. } => "target_resumed",
            Event::RecoveryPaused { .. } => "recovery_paused",
            Event::NoReflex { .. } => "no_reflex",
            Event::WorkflowStarted { .. } => "workflow_started",
            Event::WouldRun { .. } => "would_run",
            Event::WorkflowStep { .. } => "workflow_step",
            Event::WorkflowFinished { .. } => "workflow_finished",
            Event::AnomalySuppressed { .. } => "anomaly_suppressed",
            Event::AnomalyEscalated { .. } => "anomaly_escalated",
            Event::AnomalyResolved { .. } => "anomaly_resolved",
            Event::AlertReceived { .. } => "alert_received",
            Event::AlertResolved { .. } => "alert_resolved",
            Event::ReportsRefused { .. } => "reports_refused",
            Event::AlertSent { .. } => "alert_sent",
            Event::AlertFailed { .. } => "alert_failed",
            Event::StoreDegraded { .. } => "store_degraded",
            Event::StoreRecovered { .. } => "store_recovered",
            Event::StoreMovedAside { .. } => "store_moved_aside",
            Event::PluginWorkerCrashed { .. } => "plugin_worker_crashed",
            Event::PluginWorkerRestarted { .. } => "plugin_worker_restarted",
            Event::PluginQuarantined { .. } => "plugin_quarantined",
            Event::PluginQuarantineLifted { .. } => "plugin_quarantine_lifted",
        }
    }

    /// The target (or, for the intake, the anomaly) it concerns.
    pub fn subject(&self) -> Option<&str> {
        match self {
            Event::Checked { target, .. }
            | Event::PluginFailed { target, .. }
            | Event::PluginTimedOut { target, .. }
            | Event::FindingSeen { target, .. }
            | Event::IssueOpened { target, .. }
            | Event::RecoveryHeld { target, .. }
            | Event::RecoveryWithheld { target, .. }
            | Event::AttemptStarted { target, .. }
            | Event::RecovererFinished { target, .. }
            | Event::AttemptFinished { target, .. }
            | Event::IssueResolved { target, .. }
            | Event::IssueEscalated { target, .. }
            | Event::IssueForgotten { target, .. }
            | Event::IssueResetByOperator { target, .. }
            | Event::IssueDropped { target, .. }
            | Event::FindingsDropped { target, .. }
            | Event::TargetPaused { target, .. }
            | Event::PauseShortened { target, .. }
            | Event::TargetResumed { target, .. }
            | Event::RecoveryPaused { target, .. }
            | Event::AlertSent { target, .. }
            | Event::AlertFailed { target, .. } => Some(target),
            Event::NoReflex { anomaly, .. }
            | Event::AnomalySuppressed { anomaly, .. }
            | Event::AnomalyEscalated { anomaly, .. }
            | Event::AnomalyResolved { anomaly } => Some(anomaly),
            Event::WorkflowStarted { run, .. }
            | Event::WouldRun { run, .. }
            | Event::WorkflowFinished { run, .. } => Some(&run.anomaly),
            Event::AlertReceived { alertname, .. } | Event::AlertResolved { alertname, .. } => {
                Some(alertname)
            }
            Event::WorkflowStep { .. }
            | Event::Started { .. }
            | Event::Stopping
            | Event::ConfigReloaded { .. }
            | Event::ConfigRejected { .. }
            | Event::ReportsRefused { .. }
            | Event::StoreDegraded { .. }
            | Event::StoreRecovered { .. }
            | Event::StoreMovedAside { .. } => None,
            Event::PluginWorkerCrashed { package, .. }
            | Event::PluginWorkerRestarted { package, .. }
            | Event::PluginQuarantined { package, .. }
            | Event::PluginQuarantineLifted { package, .. } => Some(package),
        }
    }

    /// Whether it is routine, frequent and kept out of the history: a
    /// check whose status did not change, the reports of a storm after
    /// the first (one in a hundred is kept, with the count so far), and a
    /// firing alert re-sent as it should be.
    pub fn is_routine(&self) -> bool {
        match self {
            Event::Checked { status, was, .. } => *was == Some(*status),
            Event::AlertSent { resent, .. } => *resent,
            Event::AnomalySuppressed { count, .. } => *count != 1 && count % 100 != 0,
            _ => false,
        }
    }

    /// Whether it may be left out when the stream is flooded (more than
    /// [`HIGH_WATER`] events waiting): routine checks and the intake's
    /// repeats, which outside input can produce at any rate. Transitions
    /// (issues, attempts, workflows run) are never left out.
    pub fn is_sheddable(&self) -> bool {
        self.is_routine()
            || matches!(
                self,
                Event::NoReflex { .. }
                    | Event::AnomalySuppressed { .. }
                    | Event::AlertReceived {
                        acted_on: false,
                        ..
                    }
            )
    }
}

/// Events waiting for the dispatcher beyond which sheddable ones are left
/// out (and counted) instead of queued: a flood of reports cannot grow
/// healer's memory without bound while a subscriber (a slow disk) lags.
pub const HIGH_WATER: usize = 10_000;

/// The most of a sender's details an event keeps, as JSON text.
pub const MAX_DETAILS: usize = 1024;

/// `details` as an event keeps them, encoded once: whole up to
/// [`MAX_DETAILS`] bytes of JSON, else a note of their size with the start
/// of their text. The work itself (a workflow's steps) always gets them
/// whole.
pub fn bounded(details: &Value) -> Json {
    let whole = Json::encode(details);
    let text = whole.as_str();
    if text.len() <= MAX_DETAILS {
        return whole;
    }
    let mut cut = MAX_DETAILS / 2;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    Json::encode(
        &serde_json::json!({"truncated": true, "bytes": text.len(), "start": &text[..cut]}),
    )
}

/// A JSON value encoded once and shared (cloning it is cheap): written as
/// it is by the log, the event log and the store, instead of each encoding
/// the value again. Read back from any JSON value.
#[derive(Clone)]
pub struct Json(Arc<RawValue>);

impl Json {
    /// Encodes `value`.
    pub fn encode(value: &Value) -> Json {
        // A `Value` always encodes (its map keys are strings).
        let raw = serde_json::value::to_raw_value(value).unwrap_or_else(|_| Json::null_raw());
        Json(Arc::from(raw))
    }

    /// `{}`.
    pub fn empty_object() -> Json {
        Json::encode(&Value::Object(serde_json::Map::new()))
    }

    fn null_raw() -> Box<RawValue> {
        RawValue::from_string("null".to_owned()).unwrap_or_else(|_| unreachable!("null is JSON"))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// Decoded again (for reading, not on a hot path).
    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.as_str()).unwrap_or(Value::Null)
    }
}

impl From<&Value> for Json {
    fn from(value: &Value) -> Json {
        Json::encode(value)
    }
}

impl PartialEq for Json {
    fn eq(&self, other: &Json) -> bool {
        self.as_str() == other.as_str()
    }
}

impl std::fmt::Debug for Json {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for Json {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Json {
    /// Through a `Value`: events are internally tagged and flattened, which
    /// serde reads through its own buffer, where a raw value cannot be
    /// borrowed.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Json, D::Error> {
        Value::deserialize(deserializer).map(|value| Json::encode(&value))
    }
}

/// An event and when it happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub at: Wall,
    #[serde(flatten)]
    pub event: Event,
}

/// Where events go: the log, the event log file, the store, a test.
pub trait Subscriber: Send {
    /// One event, in order.
    fn deliver(&mut self, record: &Record);
    /// The end of a burst of events: write out what is buffered.
    fn flush(&mut self) {}
    /// Write out everything delivered so far, within `limit`, and go on;
    /// whether it was.
    fn sync(&mut self, limit: Duration) -> bool {
        let _ = limit;
        self.flush();
        true
    }
    /// healer is stopping: finish everything; give up once nothing has
    /// been written for `stall`.
    fn finish(&mut self, stall: Duration) {
        self.sync(stall);
    }
}

enum Message {
    Record(Record),
    Sync(Duration, mpsc::SyncSender<bool>),
    Finish(Duration, mpsc::SyncSender<bool>),
}

/// The sending end of the event stream: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Events {
    sender: mpsc::Sender<Message>,
    every_check: bool,
    load: Arc<Load>,
}

/// How full the stream is: events sent and not yet delivered, and
/// sheddable events left out since the last warning.
#[derive(Default)]
struct Load {
    queued: AtomicUsize,
    shed: AtomicU64,
    /// The dispatcher has delivered everything before a finish request and
    /// is letting the subscribers finish.
    finishing: AtomicBool,
}

/// The longest the subscribers may take to finish once everything is
/// delivered to them; each gives up sooner when it stops making progress
/// (the store: when it cannot write, or writes nothing for the stall
/// limit given to [`Events::finish`]).
const FINISH_AT_MOST: Duration = Duration::from_secs(120);

/// A burst of at least this many events means load: the dispatcher then
/// waits [`GATHER`] before the next instead of sleeping until woken.
const BUSY_BURST: usize = 8;
const GATHER: Duration = Duration::from_millis(1);

/// The receiving end, until [`Inbox::start`] hands it to the dispatcher.
pub struct Inbox(mpsc::Receiver<Message>, Arc<Load>);

impl Events {
    /// A new stream. With `every_check`, every check is an event (for the
    /// event log and debug logs); without, only status changes are.
    /// Events emitted before [`Inbox::start`] wait in the channel.
    pub fn channel(every_check: bool) -> (Events, Inbox) {
        let (sender, receiver) = mpsc::channel();
        let load = Arc::new(Load::default());
        (
            Events {
                sender,
                every_check,
                load: Arc::clone(&load),
            },
            Inbox(receiver, load),
        )
    }

    /// A stream delivered only to the log: for commands that run checks
    /// without the daemon's other subscribers (`healer once`).
    pub fn log_only() -> Events {
        let (events, inbox) = Events::channel(false);
        inbox.start(vec![Box::new(Log)]);
        events
    }

    /// Sends an event, stamped now; a sheddable one is left out (and
    /// counted) while [`HIGH_WATER`] events are waiting.
    pub fn emit(&self, event: Event) {
        if self.load.queued.load(Ordering::Relaxed) >= HIGH_WATER && event.is_sheddable() {
            self.load.shed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.load.queued.fetch_add(1, Ordering::Relaxed);
        let record = Record {
            at: Wall::now(),
            event,
        };
        // The dispatcher lives as long as any sender; a send fails only
        // while the process exits, or if the dispatcher died: then the
        // event is not waiting either.
        if self.sender.send(Message::Record(record)).is_err() {
            self.load.queued.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Events emitted and not yet delivered to every subscriber.
    pub fn waiting(&self) -> usize {
        self.load.queued.load(Ordering::Relaxed)
    }

    /// Whether checks whose status did not change are wanted too.
    pub fn wants_every_check(&self) -> bool {
        self.every_check
    }

    /// Delivers everything emitted so far and waits (at most `limit`)
    /// until every subscriber has written it out (the store has committed
    /// it); the stream goes on. Returns whether all of it was written in
    /// time (not, for one, while the store cannot write).
    pub fn sync(&self, limit: Duration) -> bool {
        self.ask(limit, Message::Sync)
    }

    /// Delivers everything emitted so far and lets every subscriber finish
    /// (the store writes what it holds and closes the database). Waits as
    /// long as that makes progress: it gives up only when nothing was
    /// delivered or written for `stall` (a subscriber that hangs, a store
    /// that cannot write), so a backlog of acknowledged events is written
    /// out whatever its size; the intake keeps that backlog small. Returns
    /// whether all of it was done.
    pub fn finish(&self, stall: Duration) -> bool {
        let (done, wait) = mpsc::sync_channel(1);
        if self.sender.send(Message::Finish(stall, done)).is_err() {
            return false;
        }
        let started = Instant::now();
        let mut left = self.waiting();
        let mut progressed = Instant::now();
        loop {
            match wait.recv_timeout(Duration::from_millis(100)) {
                Ok(done) => return done,
                Err(mpsc::RecvTimeoutError::Disconnected) => return false,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if self.load.finishing.load(Ordering::Relaxed) {
                // Each subscriber bounds its own finish by its progress.
                if started.elapsed() > FINISH_AT_MOST {
                    return false;
                }
                continue;
            }
            let now = self.waiting();
            if now < left {
                left = now;
                progressed = Instant::now();
            } else if progressed.elapsed() > stall {
                return false;
            }
        }
    }

    fn ask(
        &self,
        limit: Duration,
        message: fn(Duration, mpsc::SyncSender<bool>) -> Message,
    ) -> bool {
        let (done, wait) = mpsc::sync_channel(1);
        if self.sender.send(message(limit, done)).is_err() {
            return false;
        }
        wait.recv_timeout(limit + Duration::from_millis(500))
            .unwrap_or(false)
    }
}

impl Inbox {
    /// Starts the dispatcher thread: every event goes to every subscriber,
    /// in the order emitted.
    pub fn start(self, mut subscribers: Vec<Box<dyn Subscriber>>) {
        let Inbox(receiver, load) = self;
        let spawned = std::thread::Builder::new()
            .name("healer-events".into())
            .spawn(move || {
                let mut first = receiver.recv().ok();
                while let Some(message) = first.take() {
                    let mut next = Some(message);
                    // Deliver a burst, then flush once.
                    let mut burst = 0;
                    while let Some(message) = next.take() {
                        match message {
                            Message::Record(record) => {
                                load.queued.fetch_sub(1, Ordering::Relaxed);
                                for subscriber in &mut subscribers {
                                    subscriber.deliver(&record);
                                }
                            }
                            Message::Sync(limit, done) => {
                                let mut written = true;
                                for subscriber in &mut subscribers {
                                    written &= subscriber.sync(limit);
                                }
                                let _ = done.send(written);
                            }
                            Message::Finish(limit, done) => {
                                load.finishing.store(true, Ordering::Relaxed);
                                for subscriber in &mut subscribers {
                                    subscriber.finish(limit);
                                }
                                load.finishing.store(false, Ordering::Relaxed);
                                let _ = done.send(true);
                            }
                        }
                        burst += 1;
                        if burst < 4096 {
                            next = receiver.try_recv().ok();
                        }
                    }
                    for subscriber in &mut subscribers {
                        subscriber.flush();
                    }
                    let shed = load.shed.swap(0, Ordering::Relaxed);
                    if shed > 0 {
                        tracing::warn!(
                            left_out = shed,
                            "healer's event stream was flooded: {shed} routine events (unchanged checks, repeated reports) were left out of the log and the store"
                        );
                    }
                    // Under load, let the next burst gather for a moment
                    // rather than be woken for each event: waking the
                    // dispatcher costs the emitter a system call.
                    first = if burst >= BUSY_BURST {
                        std::thread::sleep(GATHER);
                        match receiver.try_recv() {
                            Ok(message) => Some(message),
                            Err(mpsc::TryRecvError::Empty) => receiver.recv().ok(),
                            Err(mpsc::TryRecvError::Disconnected) => None,
                        }
                    } else {
                        receiver.recv().ok()
                    };
                }
            });
        if let Err(err) = spawned {
            tracing::error!(error = %err, "cannot start the event dispatcher thread; events are not delivered");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Collect(Arc<Mutex<Vec<Record>>>);

    impl Subscriber for Collect {
        fn deliver(&mut self, record: &Record) {
            self.0.lock().unwrap().push(record.clone());
        }
    }

    #[test]
    fn every_subscriber_gets_every_event_in_order() {
        let (events, inbox) = Events::channel(false);
        let (a, b) = (Arc::default(), Arc::default());
        inbox.start(vec![
            Box::new(Collect(Arc::clone(&a))),
            Box::new(Collect(Arc::clone(&b))),
        ]);
        for n in 0..100 {
            events.emit(Event::AnomalyResolved {
                anomaly: format!("a{n}"),
            });
        }
        assert!(events.finish(Duration::from_secs(5)));
        for seen in [a, b] {
            let seen = seen.lock().unwrap();
            let names: Vec<_> = seen.iter().filter_map(|r| r.event.subject()).collect();
            assert_eq!(names.len(), 100);
            assert_eq!(names[0], "a0");
            assert_eq!(names[99], "a99");
        }
    }

    #[test]
    fn a_flooded_stream_leaves_out_repeats_but_never_a_transition() {
        let (events, inbox) = Events::channel(false);
        let resolved = |n: usize| Event::AnomalyResolved {
            anomaly: format!("a{n}"),
        };
        for n in 0..HIGH_WATER {
            events.emit(resolved(n));
        }
        for n in 0..50 {
            events.emit(Event::NoReflex {
                anomaly: format!("flood{n}"),
                details: Json::encode(&Value::Null),
                reason: "no reflex".into(),
                left_out: 0,
            });
        }
        events.emit(resolved(HIGH_WATER));
        let seen = Arc::default();
        inbox.start(vec![Box::new(Collect(Arc::clone(&seen)))]);
        assert!(events.finish(Duration::from_secs(30)));
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), HIGH_WATER + 1);
        assert!(seen
            .iter()
            .all(|r| matches!(r.event, Event::AnomalyResolved { .. })));
        assert_eq!(events.load.shed.load(Ordering::Relaxed), 0, "warned of");
    }

    #[test]
    fn an_event_reads_back_from_its_json_line() {
        let record = Record {
            at: Wall::from_millis(1_000),
            event: Event::RecovererFinished {
                target: "web".into(),
                kind: "http.refused".into(),
                attempt: 2,
                recoverer: "command".into(),
                result: StepResult::TimedOut {
                    after: Written::from_secs(5),
                },
            },
        };
        let line = serde_json::to_string(&record).unwrap();
        assert!(line.contains(r#""event":"recoverer_finished""#), "{line}");
        assert!(line.contains(r#""result":"timed_out""#), "{line}");
        assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), record);
    }

    #[test]
    fn details_encoded_once_are_written_as_they_are_and_read_back() {
        let details = serde_json::json!({"latency_ms": 5000, "region": "us-east-1"});
        let record = Record {
            at: Wall::from_millis(1_000),
            event: Event::WouldRun {
                run: Run {
                    run_id: "run-1".into(),
                    anomaly: "api.high".into(),
                    details: bounded(&details),
                    workflow: "w".into(),
                    params: Json::empty_object(),
                    reflex: "api.*".into(),
                    attempt: 1,
                },
                state: AnomalyState::default(),
            },
        };
        let line = serde_json::to_string(&record).unwrap();
        assert!(
            line.contains(r#""details":{"latency_ms":5000,"region":"us-east-1"}"#),
            "{line}"
        );
        // Read back through the tagged, flattened event.
        assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), record);
        let Ok(Value::Object(fields)) = serde_json::to_value(&record.event) else {
            panic!("an event is a JSON object")
        };
        assert_eq!(fields["details"], details);
    }

    #[test]
    fn details_past_a_kib_are_kept_as_a_note_of_their_size() {
        let big = serde_json::json!({"blob": "x".repeat(4 * MAX_DETAILS)});
        let kept = bounded(&big).to_value();
        assert_eq!(kept["truncated"], true);
        assert_eq!(kept["bytes"], big.to_string().len());
        assert!(bounded(&big).as_str().len() < MAX_DETAILS);
    }
}
