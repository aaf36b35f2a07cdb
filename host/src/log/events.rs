//! The log subscriber: each event as one `tracing` line, human or JSON as
//! the log is set up. Escalations and the seed's `auto_healer_action`
//! records are written at ERROR with `severity="CRITICAL"`, as the seed
//! wrote them at CRITICAL.
//!
//! This is the only place where event wording lives: tests read events,
//! not these lines, so the wording may change freely.
//!
//! Outside text (pause reasons, plugin summaries and errors, anomaly names
//! and details) goes into fields and messages here as it is: the log's
//! field formatter ([`crate::log::EscapedFields`]) escapes its newlines and
//! other control characters for every line, so no text here, nor in any
//! other `tracing` line, can start a line of its own.

use tracing::{debug, error, info, warn};

use crate::events::{Event, Events, Record, Role, StepResult, Subscriber};

/// A stream delivered only to the log: for commands that run checks
/// without the daemon's other subscribers (`healer once`).
pub fn log_only() -> Events {
    let (events, inbox) = Events::channel(false);
    inbox.start(vec![Box::new(EventLines)]);
    events
}

/// Writes every event to the log.
#[derive(Default)]
pub struct EventLines;

impl Subscriber for EventLines {
    /// Lines of a burst are held and handed to the log's writers together
    /// at its end.
    fn deliver(&mut self, record: &Record) {
        super::hold();
        write(&record.event);
    }

    fn flush(&mut self) {
        super::release();
    }
}

fn write(event: &Event) {
    match event {
        Event::Started {
            pid,
            version,
            config,
            targets,
            reflexes,
            packages,
            restored_issues,
            restored_anomalies,
            restored_facts,
            restored_outcomes,
        } => info!(
            config = %config.display(),
            targets,
            reflexes,
            packages,
            restored_issues,
            restored_anomalies,
            restored_facts,
            restored_outcomes,
            pid,
            version = %version,
            "healer running"
        ),
        Event::Stopping => info!("stopping"),
        Event::ConfigReloaded {
            config,
            added,
            removed,
            changed,
            packages_added,
            needs_restart,
        } => {
            info!(config = %config.display(), added = ?added, removed = ?removed, changed = ?changed, packages_added = ?packages_added, "config reloaded");
            if !needs_restart.is_empty() {
                warn!(config = %config.display(), settings = %needs_restart.join(", "), "reload: these settings changed and take effect only when healer restarts");
            }
        }
        Event::ConfigRejected { config, problems } => {
            error!(config = %config.display(), problems = %problems.join("; "), "reload refused: the new config has problems; the running config carries on");
        }
        Event::Checked {
            target,
            check,
            status,
            was,
            summary,
            pushed,
            took_us,
        } => {
            // Named when the target has several checks (else omitted).
            let check = (!check.is_empty()).then_some(check.as_str());
            if *was == Some(*status) {
                debug!(target = %target, check, status = %status, summary = %summary, pushed, took_us, "checked");
                return;
            }
            let ok = *status == healer_plugin_sdk::Status::Ok;
            // Its first check (since start, or since a reload restarted
            // it) changes nothing it had: there is no `was` to name.
            match (was, ok) {
                (None, true) => {
                    info!(target = %target, check, status = %status, summary = %summary, pushed, "first check")
                }
                (None, false) => {
                    warn!(target = %target, check, status = %status, summary = %summary, pushed, "first check")
                }
                (Some(was), true) => {
                    info!(target = %target, check, status = %status, was = %was, summary = %summary, pushed, "status changed")
                }
                (Some(was), false) => {
                    warn!(target = %target, check, status = %status, was = %was, summary = %summary, pushed, "status changed")
                }
            }
        }
        Event::PluginFailed {
            target,
            role,
            plugin,
            error,
        } => {
            warn!(target = %target, role = role.as_str(), plugin = %plugin, error = %error, "{} failed", check_or_diagnosis(*role))
        }
        Event::PluginTimedOut {
            target,
            role,
            plugin,
            after,
        } => {
            warn!(target = %target, role = role.as_str(), plugin = %plugin, timeout = %after, "{} timed out", check_or_diagnosis(*role))
        }
        Event::FindingSeen {
            target,
            kind,
            failures,
            needed,
        } => info!(
            target = %target, kind = %kind, failures, needed,
            "finding seen; an issue opens after {needed} consecutive failed checks"
        ),
        Event::IssueOpened { target, issue } => warn!(
            target = %target, kind = %issue.kind, attempts = issue.attempts, summary = %issue.summary,
            "issue opened"
        ),
        Event::RecoveryHeld {
            target,
            kind,
            dependency,
            reason,
            evidence,
        } => match evidence {
            Some(evidence) => warn!(
                target = %target, kind = %kind, dependency = %dependency, evidence = %evidence,
                "recovery held: the finding is caused upstream, {dependency} {reason} ({evidence})"
            ),
            None => warn!(
                target = %target, kind = %kind, dependency = %dependency,
                "recovery held: the finding is caused upstream, {dependency} {reason}"
            ),
        },
        Event::RecoveryGated {
            target,
            kind,
            recoverer,
            gate,
            evidence,
        } => warn!(
            target = %target, kind = %kind, recoverer = %recoverer, gate = %gate, evidence = %evidence,
            "recovery held: {recoverer} acts only {gate}; {evidence}"
        ),
        Event::RecoveryJudged {
            target,
            kind,
            recoverer,
            attempt,
            verdict,
            reason,
            time_to_healthy,
            outcomes,
            ..
        } => {
            let took =
                time_to_healthy.map_or_else(String::new, |took| format!(", {took} to healthy"));
            info!(
                target = %target, kind = %kind, recoverer = %recoverer, attempt, verdict = %verdict,
                "attempt {attempt} by {recoverer} judged {verdict}: {reason}{took} ({} of {} healed)",
                outcomes.healed, outcomes.tries
            )
        }
        Event::RecoveryProposed {
            target,
            issue,
            approve,
        } => {
            let (recoverer, action) = issue
                .proposal
                .as_ref()
                .map_or(("?", "?"), |p| (p.recoverer.as_str(), p.action.as_str()));
            warn!(
                target = %target, kind = %issue.kind, recoverer = %recoverer, action = %action,
                "recovery proposed, not run: approve with `{approve}`"
            )
        }
        Event::ProposalAnswered {
            target,
            issue,
            approved,
        } => warn!(
            target = %target, kind = %issue.kind, approved,
            "{} by an operator", if *approved { "proposal approved: it runs now" } else { "proposal rejected" }
        ),
        Event::ProposalWithdrawn {
            target,
            issue,
            reason,
        } => warn!(
            target = %target, kind = %issue.kind,
            "proposal withdrawn: {reason}"
        ),
        Event::RecoveryOrderLearned {
            target,
            kind,
            order,
            reason,
        } => info!(
            target = %target, kind = %kind, order = %order.join(", "),
            "recoverers reordered by what healed: {reason}"
        ),
        Event::RecovererDemoted {
            target,
            kind,
            recoverer,
            healed,
            judged,
            min_success,
            demoted,
        } => warn!(
            target = %target, kind = %kind, recoverer = %recoverer, healed, judged, min_success,
            "{}",
            if *demoted {
                format!("{recoverer} healed {healed} of {judged} attempts, under its min_success {min_success}: it proposes instead of acting")
            } else {
                format!("{recoverer} healed {healed} of {judged} attempts, at least its min_success {min_success}: it acts again")
            }
        ),
        Event::FactChanged { fact, was } => debug!(
            fact = %fact.name(), value = %fact.value, source = %fact.source,
            was = ?was.as_ref().map(ToString::to_string),
            "fact changed"
        ),
        Event::FactRetracted { fact, why } => info!(
            fact = %fact.name(), source = %fact.source, why = ?why,
            "fact retracted"
        ),
        Event::FactExpired { fact } => debug!(
            fact = %fact.name(), source = %fact.source,
            "fact expired"
        ),
        Event::FactsDropped {
            subject,
            writer,
            dropped,
            reason,
        } => warn!(
            subject = %subject, writer = %writer, dropped,
            "facts dropped: {reason}"
        ),
        Event::RecoveryWithheld {
            target,
            kind,
            reason,
        } => warn!(
            target = %target, kind = %kind,
            "recovery withheld: {reason}"
        ),
        Event::AttemptStarted {
            target,
            issue,
            max_attempts,
        } => match &issue.fence {
            None => warn!(
                target = %target, kind = %issue.kind, attempt = %format!("{}/{max_attempts}", issue.attempts),
                "recovery attempt"
            ),
            Some(fence) => warn!(
                target = %target, kind = %issue.kind, attempt = %format!("{}/{max_attempts}", issue.attempts),
                fence = fence.claim, epoch = fence.epoch, shard = fence.shard,
                "recovery attempt, claimed in the fleet"
            ),
        },
        Event::RecovererFinished {
            target,
            kind,
            attempt,
            recoverer,
            result,
        } => match result {
            StepResult::Succeeded { summary } => info!(
                target = %target, kind = %kind, recoverer = %recoverer, attempt, summary = %summary,
                "recovery succeeded"
            ),
            StepResult::Failed { error } => warn!(
                target = %target, kind = %kind, recoverer = %recoverer, attempt, error = %error,
                "recoverer failed"
            ),
            StepResult::TimedOut { after } => warn!(
                target = %target, kind = %kind, recoverer = %recoverer, attempt, timeout = %after,
                "recoverer timed out"
            ),
        },
        Event::AttemptFinished {
            target,
            issue,
            recovered,
        } => {
            if !recovered {
                warn!(target = %target, kind = %issue.kind, attempt = issue.attempts, "recovery attempt failed: no recoverer succeeded");
            }
        }
        Event::IssueResolved { target, issue } => {
            info!(target = %target, kind = %issue.kind, attempts = issue.attempts, "issue resolved")
        }
        Event::IssueEscalated {
            target,
            issue,
            reason,
        } => error!(
            target = %target,
            kind = %issue.kind,
            attempts = issue.attempts,
            reason = %reason,
            severity = "CRITICAL",
            "issue escalated: no further recovery until it resolves or an operator resets it"
        ),
        Event::IssueForgotten {
            target,
            kind,
            reason,
        } => {
            debug!(target = %target, kind = %kind, reason = %reason, "issue forgotten: its attempts no longer count")
        }
        Event::IssueDropped {
            target,
            issue,
            reason,
        } => {
            warn!(target = %target, kind = %issue.kind, state = issue.state.as_str(), reason = %reason, "issue dropped: no longer watched")
        }
        Event::FindingsDropped {
            target,
            count,
            reason,
        } => {
            warn!(target = %target, count, reason = %reason, "findings left out: more than healer takes from a plugin")
        }
        Event::IssueResetByOperator { target, issue } => {
            warn!(target = %target, kind = %issue.kind, "issue reset by an operator: recovery starts over")
        }
        Event::TargetPaused { target, pause } => {
            warn!(target = %target, until = %pause.until, reason = %pause.reason, "target paused: checks go on, recoveries do not")
        }
        Event::PauseShortened {
            target,
            pause,
            reason,
        } => {
            warn!(target = %target, until = %pause.until, reason = %reason, "pause shortened")
        }
        Event::TargetResumed { target, reason } => {
            info!(target = %target, reason = %reason, "target resumed: recoveries act again")
        }
        Event::RecoveryPaused {
            target,
            kind,
            until,
            reason,
        } => {
            warn!(target = %target, kind = %kind, until = %until, reason = %reason, "recovery paused: the target is in maintenance")
        }
        Event::NoReflex {
            anomaly,
            details,
            reason,
            left_out,
        } => warn!(
            event = "auto_healer_action", status = "no_reflex", anomaly = anomaly.as_str(), details = %details, reason = %reason,
            left_out,
            "no reflex matches this anomaly; nothing runs"
        ),
        Event::WorkflowStarted { run, .. } | Event::WouldRun { run, .. } => {
            let started = matches!(event, Event::WorkflowStarted { .. });
            error!(
                event = "auto_healer_action",
                status = if started { "started" } else { "would_run" },
                severity = "CRITICAL",
                anomaly = run.anomaly.as_str(),
                details = %run.details,
                workflow = %run.workflow,
                params = %run.params,
                reflex = %run.reflex,
                run_id = %run.run_id,
                attempt = run.attempt,
                "auto-healer action: {}",
                if started { "workflow started" } else { "kill switch on: the workflow would have run" }
            );
        }
        Event::WorkflowStep {
            run_id,
            workflow,
            step,
            plugin,
            result,
        } => match result {
            StepResult::Succeeded { summary } => info!(
                run_id = %run_id, workflow = %workflow, step, plugin = %plugin, summary = %summary,
                "workflow step succeeded"
            ),
            _ => warn!(
                run_id = %run_id, workflow = %workflow, step, plugin = %plugin,
                error = %result.error().unwrap_or_default(),
                "workflow step failed"
            ),
        },
        Event::WorkflowFinished {
            run,
            succeeded,
            error,
        } => {
            let status = if *succeeded { "succeeded" } else { "failed" };
            error!(
                event = "auto_healer_action",
                status,
                severity = "CRITICAL",
                anomaly = run.anomaly.as_str(),
                details = %run.details,
                workflow = run.workflow.as_str(),
                params = %run.params,
                run_id = run.run_id.as_str(),
                attempt = run.attempt,
                error = error.as_deref().unwrap_or(""),
                "auto-healer action: workflow {status}"
            );
        }
        Event::AnomalySuppressed {
            anomaly,
            workflow,
            reason,
            count,
            ..
        } => {
            // A storm is counted, not logged line by line.
            if *count == 1 || count % 100 == 0 {
                info!(anomaly = anomaly.as_str(), workflow = %workflow, reason = reason.as_str(), suppressed = count, "anomaly suppressed");
            }
        }
        Event::AnomalyEscalated {
            anomaly,
            workflow,
            attempts,
            quiet_for,
            ..
        } => error!(
            event = "auto_healer_action",
            status = "escalated",
            severity = "CRITICAL",
            anomaly = anomaly.as_str(),
            workflow = %workflow,
            attempts,
            "anomaly escalated: its workflow ran {attempts} times and it is still reported; no further runs until it is quiet for {quiet_for} or its alert resolves"
        ),
        Event::AnomalyResolved { anomaly } => {
            info!(
                anomaly = anomaly.as_str(),
                "issue resolved: the alert resolved"
            )
        }
        Event::AlertReceived {
            alertname,
            fingerprint,
            starts_at,
            duplicate,
            acted_on,
        } => {
            if *duplicate {
                info!(alertname = %alertname, fingerprint = %fingerprint, starts_at = %starts_at, "alert already acted on (Alertmanager re-sent it); nothing runs");
            } else {
                debug!(alertname = %alertname, fingerprint = %fingerprint, starts_at = %starts_at, acted_on, "alert received");
            }
        }
        Event::AlertResolved {
            alertname,
            fingerprint,
            anomaly_resolved,
        } => {
            debug!(alertname = %alertname, fingerprint = %fingerprint, anomaly_resolved, "alert resolved")
        }
        Event::ReportsRefused {
            refused,
            waiting,
            limit,
            reason,
        } => warn!(
            refused, waiting, limit, reason = %reason,
            "intake: {refused} reports refused (503, Retry-After) while too many events wait to be recorded"
        ),
        Event::AlertSent {
            sink,
            target,
            kind,
            state,
            tries,
            resent,
        } => {
            if *resent {
                debug!(sink = %sink, target = %target, kind = %kind, tries, "firing alert re-sent");
            } else {
                info!(sink = %sink, target = %target, kind = %kind, state = state.as_str(), tries, "alert sent");
            }
        }
        Event::AlertFailed {
            sink,
            target,
            kind,
            state,
            tries,
            error,
            resent,
        } => match state {
            crate::model::AlertState::Firing => error!(
                sink = %sink, target = %target, kind = %kind, tries, resent, error = %error,
                "alert not delivered: the sink did not take the escalation after {tries} tries"
            ),
            crate::model::AlertState::Resolved => warn!(
                sink = %sink, target = %target, kind = %kind, tries, error = %error,
                "alert resolution not delivered after {tries} tries"
            ),
        },
        Event::PluginWorkerCrashed {
            package,
            file,
            reason,
            in_flight,
            crashes,
            within,
        } => error!(
            package = %package, file = %file.display(), reason = %reason, in_flight, crashes, within = %within,
            "plugin worker crashed; its calls in flight are UNKNOWN, and it restarts on next use"
        ),
        Event::PluginWorkerRestarted { package, file, pid } => {
            info!(package = %package, file = %file.display(), pid, "plugin worker restarted")
        }
        Event::PluginQuarantined {
            package,
            file,
            crashes,
            within,
            reason,
            ..
        } => error!(
            package = %package, file = %file.display(), crashes, within = %within, last = %reason,
            severity = "CRITICAL",
            "plugin package quarantined: its targets are UNKNOWN until its file changes or an operator lifts it (healer reset --plugin)"
        ),
        Event::ChecksBehind {
            checks,
            late,
            latest_ms,
            window,
        } => warn!(
            checks, late, latest_ms, window = %window,
            "healer is behind: {late} of {checks} checks in the last {window} began late (the latest by {latest_ms} ms); each target waits its turn, no check is skipped as failed"
        ),
        Event::ChecksCaughtUp {
            checks,
            late,
            window,
        } => info!(
            checks, late, window = %window,
            "healer caught up: its checks keep to their schedules again"
        ),
        Event::PluginQuarantineLifted { package, file, how } => info!(
            package = %package, file = %file.display(),
            "plugin package quarantine lifted: {how}"
        ),
        Event::FleetJoined {
            member,
            etcd,
            lease,
        } => info!(
            member = %member, etcd = %etcd.join(","), lease = %lease,
            "fleet: in touch with etcd; taking shards"
        ),
        Event::FleetCoordinationLost { member, reason } => error!(
            member = %member, reason = %reason,
            "fleet: lost touch with etcd; no fleet target is checked or recovered here until it is back (local targets go on)"
        ),
        Event::FleetShardTaken {
            member,
            shard,
            epoch,
            targets,
            issues,
        } => info!(
            member = %member, shard, epoch, targets = targets.len(), issues,
            "fleet: shard taken"
        ),
        Event::FleetShardLost {
            member,
            shard,
            epoch,
            reason,
        } => {
            warn!(member = %member, shard, epoch, reason = %reason, "fleet: shard no longer owned here")
        }
        Event::FleetTargetHandedOver { member, target } => info!(
            member = %member, target = %target,
            "fleet: target handed over to its shard's next owner"
        ),
        Event::FleetIssueTakenOver {
            member,
            target,
            issue,
        } => info!(
            member = %member, target = %target, kind = %issue.kind, state = %issue.state.as_str(),
            attempts = issue.attempts,
            "fleet: escalated issue taken over with its shard"
        ),
        Event::RecoveryNotClaimed {
            target,
            kind,
            reason,
        } => warn!(
            target = %target, kind = %kind, reason = %reason,
            "recovery not run: the fleet's claim on it failed"
        ),
        Event::StoreDegraded { file, error } => error!(
            file = %file.display(), error = %error,
            "store: cannot write the database; healing goes on from memory and the store retries"
        ),
        Event::StoreRecovered {
            file,
            written,
            dropped,
        } => info!(file = %file.display(), written, dropped, "store: writing again, caught up"),
        Event::StoreMovedAside {
            file,
            moved_to,
            error,
        } => error!(
            file = %file.display(), moved_to = %moved_to.display(), error = %error,
            "store: the database is corrupt; moved it aside and started a new one"
        ),
    }
}

fn check_or_diagnosis(role: Role) -> &'static str {
    match role {
        Role::Monitor => "check",
        Role::Diagnoser => "diagnoser",
    }
}
