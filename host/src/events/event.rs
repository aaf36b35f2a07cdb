//! The vocabulary: every transition healer makes is one [`Event`], closed
//! and typed, stamped with its time in a [`Record`]. What subscribers
//! match on, the event log stores and tests read back.

use std::path::PathBuf;

use healer_plugin_sdk::redact;
use healer_plugin_sdk::{Duration as HumanDuration, Status};
use serde::{Deserialize, Serialize};

use super::Json;
use crate::clock::Wall;
use crate::facts::{Change, Fact, Retraction, Value as FactValue};
use crate::issues::Issue;
use crate::ledger::{Outcomes, Verdict};
use crate::model::{AlertState, AnomalyState, Pause, Suppressed};

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
        /// Facts carried over from before the restart (not expired).
        #[serde(default)]
        restored_facts: usize,
        /// Rows of the ledger of outcomes carried over.
        #[serde(default)]
        restored_outcomes: usize,
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
        after: HumanDuration,
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
        /// The fact the hold rests on, cited (`target.db.healthy = false
        /// from healer, 12 s old`); none when it is not known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        evidence: Option<String>,
    },
    /// An issue is due, but every recoverer that would act on it waits for
    /// a fact: its `when` is not true, or its `unless` not false, or the
    /// fact is not known (never read as false). `evidence` cites the fact
    /// (`target.db.healthy = false from healer, 12 s old`).
    RecoveryGated {
        target: String,
        kind: String,
        recoverer: String,
        /// `when target.db.healthy == true`.
        gate: String,
        evidence: String,
    },
    /// An attempt that said it succeeded (or failed) was judged: the
    /// verdict, why, and the ledger's row for its recoverer as it now
    /// stands (`forgot`: a row let go to make room).
    RecoveryJudged {
        target: String,
        kind: String,
        recoverer: String,
        attempt: u32,
        verdict: Verdict,
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        time_to_healthy: Option<HumanDuration>,
        /// Boxed, as is `forgot`: an event stays small in the stream.
        outcomes: Box<Outcomes>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        forgot: Option<Box<(String, String, String)>>,
    },
    /// A recovery healer asks an operator for instead of running it: the
    /// issue carries the proposal (the exact action, until when).
    RecoveryProposed {
        target: String,
        issue: Issue,
        /// The command that approves it.
        approve: String,
    },
    /// An operator approved (the next attempt runs it) or rejected (the
    /// issue is escalated) a proposal.
    ProposalAnswered {
        target: String,
        issue: Issue,
        approved: bool,
    },
    /// A proposal was taken back: the recoverer it names is no longer
    /// configured as it was (a reload changed the ladder). The issue is
    /// recovered as the config now says.
    ProposalWithdrawn {
        target: String,
        issue: Issue,
        reason: String,
    },
    /// Under `order = "learned"`, the ladder of `kind` is tried in a new
    /// order.
    RecoveryOrderLearned {
        target: String,
        kind: String,
        order: Vec<String>,
        reason: String,
    },
    /// A recoverer heals `kind` less often than its `min_success`: it
    /// proposes instead of acting (`demoted`), or acts again.
    RecovererDemoted {
        target: String,
        kind: String,
        recoverer: String,
        healed: u32,
        judged: u32,
        min_success: f64,
        demoted: bool,
    },
    /// A fact is new, or has a new value (`was`: the one before).
    FactChanged {
        fact: Fact,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        was: Option<FactValue>,
    },
    /// A fact's writer took it back (its check UNKNOWN, its worker ended,
    /// its target removed).
    FactRetracted { fact: Fact, why: Retraction },
    /// A fact's time ran out.
    FactExpired { fact: Fact },
    /// Facts a writer published that healer did not keep (outside its
    /// namespace, over its quota, too long): how many, and the first
    /// reason.
    FactsDropped {
        subject: String,
        writer: String,
        dropped: usize,
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
        quiet_for: HumanDuration,
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
    /// flight, and the checks it made on their grids, ended as UNKNOWN
    /// (`in_flight` counts both); it is started again on next use, after
    /// a backoff. `crashes` counts those within `within`.
    PluginWorkerCrashed {
        package: String,
        file: PathBuf,
        reason: String,
        in_flight: usize,
        crashes: u32,
        within: HumanDuration,
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
        within: HumanDuration,
        reason: String,
        /// The sha256 of the file quarantined: the quarantine holds for
        /// this file across restarts (empty in older events).
        #[serde(default)]
        sha256: String,
    },
    /// A quarantined package is served again: its file changed and probed
    /// clean, or an operator lifted the quarantine (`how` says which).
    PluginQuarantineLifted {
        package: String,
        file: PathBuf,
        #[serde(default)]
        how: String,
    },

    /// This member is in the fleet (`[fleet]`): its lease granted, its
    /// member key written; it takes shards from now on. Also said when
    /// it is in touch with etcd again after losing it.
    FleetJoined {
        member: String,
        etcd: Vec<String>,
        lease: HumanDuration,
    },
    /// This member lost touch with etcd (no renewal acknowledged in time,
    /// or etcd cannot be asked): it acts on no fleet target until it is
    /// back; local targets go on.
    FleetCoordinationLost { member: String, reason: String },
    /// This member took `shard` at `epoch` (the revision of its owner
    /// key), carrying on from `issues` open issues etcd held.
    FleetShardTaken {
        member: String,
        shard: u32,
        epoch: u64,
        targets: Vec<String>,
        issues: usize,
    },
    /// This member no longer owns `shard`: its targets stopped here.
    FleetShardLost {
        member: String,
        shard: u32,
        epoch: u64,
        reason: String,
    },
    /// A fleet target stopped here: its shard went to another member (or
    /// back to the fleet), which carries on its issues. Alert sinks stop
    /// re-announcing its escalations (the new owner does), resolving
    /// nothing.
    FleetTargetHandedOver { member: String, target: String },
    /// This member took over an escalated issue of a fleet target with
    /// its shard: alert sinks announce it as the previous owner did.
    FleetIssueTakenOver {
        member: String,
        target: String,
        issue: Issue,
    },
    /// A recovery of a fleet target was not claimed, so it did not run.
    RecoveryNotClaimed {
        target: String,
        kind: String,
        reason: String,
    },

    /// healer's checks fell behind their schedules: `late` of the `checks`
    /// that began within `window` began more than a tenth of their
    /// interval late, the latest by `latest_ms`. healer's own state: no
    /// target's issue, and no check is UNKNOWN for it.
    ChecksBehind {
        checks: u64,
        late: u64,
        latest_ms: u64,
        window: HumanDuration,
    },
    /// healer's checks keep to their schedules again.
    ChecksCaughtUp {
        checks: u64,
        late: u64,
        window: HumanDuration,
    },

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
    TimedOut { after: HumanDuration },
}

impl StepResult {
    /// Success, with what the plugin said (credentials in URLs redacted).
    pub fn success(summary: &str) -> StepResult {
        StepResult::Succeeded {
            summary: redact::text(summary),
        }
    }

    /// Failure, with the plugin's error (credentials in URLs redacted).
    pub fn failure(error: &str) -> StepResult {
        StepResult::Failed {
            error: redact::text(error),
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

/// What facts' changes say, as events.
pub fn fact_events(changes: Vec<Change>) -> impl Iterator<Item = Event> {
    changes.into_iter().map(|change| match change {
        Change::Changed { fact, was } => Event::FactChanged { fact, was },
        Change::Retracted { fact, why } => Event::FactRetracted { fact, why },
        Change::Expired { fact } => Event::FactExpired { fact },
    })
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
            Event::RecoveryGated { .. } => "recovery_gated",
            Event::RecoveryJudged { .. } => "recovery_judged",
            Event::RecoveryProposed { .. } => "recovery_proposed",
            Event::ProposalAnswered { .. } => "proposal_answered",
            Event::ProposalWithdrawn { .. } => "proposal_withdrawn",
            Event::RecoveryOrderLearned { .. } => "recovery_order_learned",
            Event::RecovererDemoted { .. } => "recoverer_demoted",
            Event::FactChanged { .. } => "fact_changed",
            Event::FactRetracted { .. } => "fact_retracted",
            Event::FactExpired { .. } => "fact_expired",
            Event::FactsDropped { .. } => "facts_dropped",
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
            Event::ChecksBehind { .. } => "checks_behind",
            Event::ChecksCaughtUp { .. } => "checks_caught_up",
            Event::FleetJoined { .. } => "fleet_joined",
            Event::FleetCoordinationLost { .. } => "fleet_coordination_lost",
            Event::FleetShardTaken { .. } => "fleet_shard_taken",
            Event::FleetShardLost { .. } => "fleet_shard_lost",
            Event::RecoveryNotClaimed { .. } => "recovery_not_claimed",
            Event::FleetTargetHandedOver { .. } => "fleet_target_handed_over",
            Event::FleetIssueTakenOver { .. } => "fleet_issue_taken_over",
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
            | Event::RecoveryGated { target, .. }
            | Event::RecoveryJudged { target, .. }
            | Event::RecoveryProposed { target, .. }
            | Event::ProposalAnswered { target, .. }
            | Event::ProposalWithdrawn { target, .. }
            | Event::RecoveryOrderLearned { target, .. }
            | Event::RecovererDemoted { target, .. }
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
            | Event::AlertFailed { target, .. }
            | Event::RecoveryNotClaimed { target, .. }
            | Event::FleetTargetHandedOver { target, .. }
            | Event::FleetIssueTakenOver { target, .. } => Some(target),
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
            | Event::StoreMovedAside { .. }
            | Event::ChecksBehind { .. }
            | Event::ChecksCaughtUp { .. } => None,
            Event::FleetJoined { member, .. }
            | Event::FleetCoordinationLost { member, .. }
            | Event::FleetShardTaken { member, .. }
            | Event::FleetShardLost { member, .. } => Some(member),
            Event::FactChanged { fact, .. }
            | Event::FactRetracted { fact, .. }
            | Event::FactExpired { fact } => Some(&fact.subject),
            Event::FactsDropped { subject, .. } => Some(subject),
            Event::PluginWorkerCrashed { package, .. }
            | Event::PluginWorkerRestarted { package, .. }
            | Event::PluginQuarantined { package, .. }
            | Event::PluginQuarantineLifted { package, .. } => Some(package),
        }
    }

    /// Whether it is routine, frequent and kept out of the history: a
    /// check whose status did not change, the reports of a storm after
    /// the first (one in a hundred is kept, with the count so far), a
    /// firing alert re-sent as it should be, and a known fact's new value
    /// (the store still keeps the fact).
    pub fn is_routine(&self) -> bool {
        match self {
            Event::Checked { status, was, .. } => *was == Some(*status),
            Event::AlertSent { resent, .. } => *resent,
            Event::AnomalySuppressed { count, .. } => *count != 1 && count % 100 != 0,
            // A new value of a fact already known: the store keeps the
            // fact, the history only its first value (a plugin's value may
            // move at every check).
            Event::FactChanged { was, .. } => was.is_some(),
            _ => false,
        }
    }

    /// Whether it may be left out when the stream is flooded (more than
    /// [`HIGH_WATER`] events waiting): routine checks and the intake's
    /// repeats, which outside input can produce at any rate. Transitions
    /// (issues, attempts, workflows run) are never left out.
    pub fn is_sheddable(&self) -> bool {
        // A fact's change is state the store keeps: never left out.
        self.is_routine() && !matches!(self, Event::FactChanged { .. })
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

/// An event and when it happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub at: Wall,
    #[serde(flatten)]
    pub event: Event,
}
