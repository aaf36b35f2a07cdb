//! What events mean for alert sinks. An issue's escalation starts an
//! alert firing; its resolution, or an operator's reset, ends it. An
//! anomaly the intake escalated fires until its alert resolves or it has
//! been quiet for the intake's `stable_after` (the intake's own rule for
//! when it may run again). At start, what was still escalated before a
//! restart fires again. Pure: events and saved state in, [`Notice`]s out.

use std::collections::HashMap;
use std::time::Duration;

use crate::clock::Wall;
use crate::config::Config;
use crate::events::Event;
use crate::issues::{Issue, State};
use crate::model::{AnomalyState, Suppressed};

/// The `kind` of an anomaly's alert; its `target` is the anomaly's name.
pub const ANOMALY: &str = "anomaly";

/// The `kind` of a fleet member's alert that it lost touch with etcd
/// (FLEET.md's `HealerCoordinationLost`); its `target` is the member.
pub const COORDINATION_LOST: &str = "fleet.coordination_lost";

/// The most of a summary an alert carries.
const MAX_SUMMARY: usize = 1024;

/// What an alert is about: one issue of one target, or one anomaly.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub target: String,
    pub kind: String,
}

/// An escalation, as sinks announce it.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    pub key: Key,
    /// The finding's status, lower-case (`critical`, `warning`, `unknown`).
    pub severity: String,
    pub summary: String,
    /// Why it was escalated.
    pub reason: String,
    /// Recovery attempts made (workflow runs, for an anomaly).
    pub attempts: u32,
    /// When it was escalated.
    pub since: Wall,
    /// The anomaly's workflow; none for an issue.
    pub workflow: Option<String>,
}

/// What a sink is told.
#[derive(Clone, Debug, PartialEq)]
pub enum Notice {
    /// An alert starts firing. `quiet_for`: it ends by itself when nothing
    /// was reported for that long after `last_report` (an anomaly).
    /// `restored`: it fired before healer restarted.
    Fire {
        alert: Alert,
        quiet_for: Option<Duration>,
        last_report: Wall,
        restored: bool,
    },
    /// A firing anomaly was reported again: it lasts longer.
    Reported { key: Key, at: Wall },
    /// It is over.
    Resolve { key: Key, at: Wall },
    /// Every alert of `target` is another member's now: no longer
    /// re-announced here, and not resolved (the fleet target's new owner
    /// announces it).
    Forget { target: String },
}

impl Notice {
    /// What `event`, which happened `at`, means for sinks, if anything.
    pub fn of(event: &Event, at: Wall) -> Option<Notice> {
        match event {
            Event::IssueEscalated {
                target,
                issue,
                reason,
            } => Some(Notice::Fire {
                alert: issue_alert(target, issue, reason.clone(), at),
                quiet_for: None,
                last_report: at,
                restored: false,
            }),
            Event::IssueResolved { target, issue } if issue.escalated_at.is_some() => {
                Some(Notice::Resolve {
                    key: key(target, &issue.kind),
                    at: issue.resolved_at.unwrap_or(at),
                })
            }
            Event::IssueForgotten { target, kind, .. } => Some(Notice::Resolve {
                key: key(target, kind),
                at,
            }),
            // An operator gave it its attempts back: no longer escalated.
            Event::IssueResetByOperator { target, issue }
            | Event::IssueDropped { target, issue, .. } => Some(Notice::Resolve {
                key: key(target, &issue.kind),
                at,
            }),
            Event::AnomalyEscalated {
                anomaly,
                workflow,
                attempts,
                quiet_for,
                state,
            } => Some(Notice::Fire {
                alert: anomaly_alert(anomaly, workflow, *attempts, at),
                quiet_for: Some((*quiet_for).into()),
                last_report: state.last_report.unwrap_or(at),
                restored: false,
            }),
            Event::AnomalySuppressed {
                anomaly,
                reason: Suppressed::AttemptsExhausted,
                state,
                ..
            } => Some(Notice::Reported {
                key: key(anomaly, ANOMALY),
                at: state.last_report.unwrap_or(at),
            }),
            Event::AnomalyResolved { anomaly } => Some(Notice::Resolve {
                key: key(anomaly, ANOMALY),
                at,
            }),
            // Fail closed, and say so: no fleet target is acted on here.
            Event::FleetCoordinationLost { member, reason } => Some(Notice::Fire {
                alert: Alert {
                    key: key(member, COORDINATION_LOST),
                    // healer's own machinery, not a target's outage.
                    severity: "unknown".to_owned(),
                    summary: bounded(&format!(
                        "fleet member {member} lost touch with etcd: it checks and recovers no fleet target until it is back"
                    )),
                    reason: reason.clone(),
                    attempts: 0,
                    since: at,
                    workflow: None,
                },
                quiet_for: None,
                last_report: at,
                restored: false,
            }),
            Event::FleetTargetHandedOver { target, .. } => Some(Notice::Forget {
                target: target.clone(),
            }),
            Event::FleetIssueTakenOver {
                member,
                target,
                issue,
            } if issue.state == State::Escalated => Some(Notice::Fire {
                alert: issue_alert(
                    target,
                    issue,
                    format!("escalated; carried on by fleet member {member}"),
                    issue.escalated_at.unwrap_or(at),
                ),
                quiet_for: None,
                last_report: at,
                restored: true,
            }),
            Event::FleetJoined { member, .. } => Some(Notice::Resolve {
                key: key(member, COORDINATION_LOST),
                at,
            }),
            _ => None,
        }
    }
}

/// What was still escalated before a restart: issues of the targets
/// healer runs now (a removed or disabled target's issue never resolves,
/// so it is not announced), and anomalies not yet quiet for `stable_after`.
pub fn restored(
    config: &Config,
    issues: &HashMap<String, Vec<Issue>>,
    anomalies: &[(String, AnomalyState)],
    now: Wall,
) -> Vec<Notice> {
    let mut notices = Vec::new();
    for target in config.targets.iter().filter(|t| t.enabled) {
        for issue in issues.get(&target.name).into_iter().flatten() {
            if issue.state != State::Escalated {
                continue;
            }
            let since = issue.escalated_at.unwrap_or(issue.opened_at);
            let reason = format!(
                "escalated at {since} after {} recovery attempts, before healer restarted",
                issue.attempts
            );
            notices.push(Notice::Fire {
                alert: issue_alert(&target.name, issue, reason, since),
                quiet_for: None,
                last_report: now,
                restored: true,
            });
        }
    }
    if let Some(intake) = &config.intake {
        let quiet_for: Duration = intake.stable_after.into();
        for (name, state) in anomalies {
            let Some(last_report) = state.last_report.filter(|_| state.escalated) else {
                continue;
            };
            if now.since(last_report) >= quiet_for {
                continue;
            }
            let since = state.last_run.unwrap_or(last_report);
            notices.push(Notice::Fire {
                alert: anomaly_alert(name, "", state.attempts, since),
                quiet_for: Some(quiet_for),
                last_report,
                restored: true,
            });
        }
    }
    notices
}

fn key(target: &str, kind: &str) -> Key {
    Key {
        target: target.to_owned(),
        kind: kind.to_owned(),
    }
}

fn issue_alert(target: &str, issue: &Issue, reason: String, at: Wall) -> Alert {
    Alert {
        key: key(target, &issue.kind),
        severity: issue.severity.as_str().to_ascii_lowercase(),
        summary: bounded(&issue.summary),
        reason,
        attempts: issue.attempts,
        since: issue.escalated_at.unwrap_or(at),
        workflow: None,
    }
}

fn anomaly_alert(anomaly: &str, workflow: &str, attempts: u32, since: Wall) -> Alert {
    let ran = if workflow.is_empty() {
        "its workflow".to_owned()
    } else {
        format!("workflow {workflow}")
    };
    Alert {
        key: key(anomaly, ANOMALY),
        severity: "critical".to_owned(),
        summary: bounded(&format!(
            "anomaly {anomaly} is still reported after {ran} ran {attempts} times"
        )),
        reason: "attempts exhausted".to_owned(),
        attempts,
        since,
        workflow: (!workflow.is_empty()).then(|| workflow.to_owned()),
    }
}

/// `text` cut to [`MAX_SUMMARY`] bytes at a character boundary.
fn bounded(text: &str) -> String {
    let mut end = text.len().min(MAX_SUMMARY);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use healer_plugin_sdk::Status;

    fn issue(state: State, escalated_at: Option<Wall>) -> Issue {
        Issue::saved(
            "process.not_running".into(),
            state,
            Status::Critical,
            "not running".into(),
            3,
            [Wall::from_millis(1_000), Wall::from_millis(2_000)],
            [escalated_at, None],
        )
    }

    #[test]
    fn an_escalation_fires_with_the_issues_severity_and_summary() {
        let at = Wall::from_millis(5_000);
        let notice = Notice::of(
            &Event::IssueEscalated {
                target: "web".into(),
                issue: issue(State::Escalated, Some(at)),
                reason: "still failing after 3 recovery attempts".into(),
            },
            at,
        );
        let Some(Notice::Fire {
            alert, quiet_for, ..
        }) = notice
        else {
            panic!("{notice:?}");
        };
        assert_eq!(alert.key, key("web", "process.not_running"));
        assert_eq!(alert.severity, "critical");
        assert_eq!(alert.summary, "not running");
        assert_eq!(alert.since, at);
        assert_eq!(quiet_for, None);
    }

    #[test]
    fn only_an_escalated_issues_resolution_resolves_an_alert() {
        let at = Wall::from_millis(9_000);
        let resolved = |escalated_at| Event::IssueResolved {
            target: "web".into(),
            issue: issue(State::Resolved, escalated_at),
        };
        assert_eq!(Notice::of(&resolved(None), at), None);
        assert_eq!(
            Notice::of(&resolved(Some(Wall::from_millis(5_000))), at),
            Some(Notice::Resolve {
                key: key("web", "process.not_running"),
                at
            })
        );
    }

    #[test]
    fn an_escalated_anomaly_fires_until_quiet_for_stable_after() {
        let at = Wall::from_millis(5_000);
        let mut state = AnomalyState::default();
        state.last_report = Some(Wall::from_millis(4_000));
        let notice = Notice::of(
            &Event::AnomalyEscalated {
                anomaly: "disk.full".into(),
                workflow: "cleanup".into(),
                attempts: 3,
                quiet_for: healer_plugin_sdk::Duration::from_secs(600),
                state: state.clone(),
            },
            at,
        );
        let Some(Notice::Fire {
            alert,
            quiet_for,
            last_report,
            ..
        }) = notice
        else {
            panic!("{notice:?}");
        };
        assert_eq!(alert.key, key("disk.full", ANOMALY));
        assert_eq!(alert.workflow.as_deref(), Some("cleanup"));
        assert_eq!(quiet_for, Some(Duration::from_secs(600)));
        assert_eq!(last_report, Wall::from_millis(4_000));
        let again = Notice::of(
            &Event::AnomalySuppressed {
                anomaly: "disk.full".into(),
                workflow: "cleanup".into(),
                reason: Suppressed::AttemptsExhausted,
                count: 2,
                state,
            },
            at,
        );
        assert_eq!(
            again,
            Some(Notice::Reported {
                key: key("disk.full", ANOMALY),
                at: Wall::from_millis(4_000)
            })
        );
    }

    #[test]
    fn after_a_restart_only_escalated_issues_of_running_targets_fire_again() {
        let config = Config::parse(
            std::path::Path::new("healer.toml"),
            "[[target]]\nname = \"web\"\nmonitor = { plugin = \"http\" }\n".to_owned(),
        )
        .unwrap();
        let escalated = issue(State::Escalated, Some(Wall::from_millis(5_000)));
        let issues = HashMap::from([
            (
                "web".to_owned(),
                vec![escalated.clone(), issue(State::Recovering, None)],
            ),
            ("removed".to_owned(), vec![escalated]),
        ]);
        let notices = restored(&config, &issues, &[], Wall::from_millis(10_000));
        assert_eq!(notices.len(), 1, "{notices:?}");
        let Notice::Fire {
            alert, restored, ..
        } = &notices[0]
        else {
            panic!("{notices:?}");
        };
        assert!(restored);
        assert_eq!(alert.key, key("web", "process.not_running"));
        assert_eq!(alert.since, Wall::from_millis(5_000));
    }
}
