//! What the store has to write, kept in memory between the event stream
//! and the database: the current state that events describe (each issue,
//! each anomaly's storm state, Alertmanager occurrences acted on and alerts
//! firing) with the keys changed since the last write, and the history rows
//! and workflow runs not yet written.
//!
//! State is keyed, so however long the database cannot be written, it
//! takes no more memory than healer's own state: a key changed a thousand
//! times is written once, with its latest value. History is capped: past
//! [`MAX_PENDING`] rows or [`MAX_PENDING_BYTES`] of text the oldest are
//! dropped and counted.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;

use crate::clock::Wall;
use crate::events::{Event, Record, Run};
use crate::facts::Fact;
use crate::issues::Issue;
use crate::ledger::{self, Outcomes};
use crate::model::AnomalyState;
use crate::model::Pause;
use crate::model::{crashed_too_often, PluginRecord, Quarantine};

/// History rows (and workflow runs) held while the database cannot be
/// written; beyond it the oldest are dropped.
pub const MAX_PENDING: usize = 100_000;

/// The most history text held while the database cannot be written.
pub const MAX_PENDING_BYTES: usize = 32 << 20;

/// Anomaly names, occurrences and firing alerts kept: what the intake
/// itself keeps at most.
const MAX_INTAKE: usize = crate::intake::MAX_TRACKED;

/// Plugin package records kept (by file name).
const MAX_PLUGINS: usize = 1_000;

/// A key of two names: (target, kind), (fingerprint, startsAt) or
/// (alert name, fingerprint).
pub type Pair = (String, String);

/// Who an Alertmanager occurrence was acted on for (the alert name), and when.
pub type ActedOn = (String, Wall);

/// One event for the history table.
#[derive(Clone, Debug)]
pub struct HistoryRow {
    pub at: Wall,
    pub event: &'static str,
    pub subject: Option<String>,
    pub body: String,
}

/// One workflow run as the runs table keeps it.
#[derive(Clone, Debug)]
pub struct RunRow {
    pub run: Run,
    /// `started`, `would_run`, `succeeded` or `failed`.
    pub status: &'static str,
    pub started_at: Option<Wall>,
    pub finished_at: Option<Wall>,
    pub error: Option<String>,
}

/// A keyed map whose changed keys are tracked; a changed key with no value
/// is a deletion.
#[derive(Debug)]
pub struct Tracked<K, V> {
    current: HashMap<K, V>,
    dirty: HashSet<K>,
}

impl<K, V> Default for Tracked<K, V> {
    fn default() -> Self {
        Tracked {
            current: HashMap::new(),
            dirty: HashSet::new(),
        }
    }
}

impl<K: Clone + Eq + Hash, V: Clone> Tracked<K, V> {
    /// Starts from what was loaded: nothing to write.
    pub fn load(&mut self, key: K, value: V) {
        self.current.insert(key, value);
    }

    fn set(&mut self, key: K, value: V) {
        self.dirty.insert(key.clone());
        self.current.insert(key, value);
    }

    fn remove(&mut self, key: K) {
        self.current.remove(&key);
        self.dirty.insert(key);
    }

    /// Changes the value of `key` in place, starting from the default
    /// when it has none; always a change.
    fn upsert(&mut self, key: K, change: impl FnOnce(&mut V))
    where
        V: Default,
    {
        change(self.current.entry(key.clone()).or_default());
        self.dirty.insert(key);
    }

    /// Changes the value of `key` in place, when there is one and
    /// `change` says it changed.
    fn update(&mut self, key: K, change: impl FnOnce(&mut V) -> bool) {
        if let Some(value) = self.current.get_mut(&key) {
            if change(value) {
                self.dirty.insert(key);
            }
        }
    }

    /// Drops every entry `stale` says is old (and deletes it from the
    /// database with the next write).
    pub fn prune(&mut self, mut stale: impl FnMut(&V) -> bool) {
        let old: Vec<K> = self
            .current
            .iter()
            .filter(|(_, value)| stale(value))
            .map(|(key, _)| key.clone())
            .collect();
        for key in old {
            self.remove(key);
        }
    }

    /// Beyond `max` entries, forgets the oldest by `when` (down to 90 %):
    /// the same bound as the intake's own state. Selects the oldest
    /// without sorting, and clones only the keys it forgets.
    fn keep_newest<O: Ord + Copy>(&mut self, max: usize, when: impl Fn(&V) -> O) {
        if self.current.len() <= max {
            return;
        }
        let excess = self.current.len().saturating_sub(max * 9 / 10);
        let mut oldest: Vec<(O, &K)> = self
            .current
            .iter()
            .map(|(key, value)| (when(value), key))
            .collect();
        if excess < oldest.len() {
            oldest.select_nth_unstable_by_key(excess, |(at, _)| *at);
        }
        let forget: Vec<K> = oldest
            .into_iter()
            .take(excess)
            .map(|(_, key)| key.clone())
            .collect();
        for key in forget {
            self.remove(key);
        }
    }

    /// The changed keys with their values, forgetting that they changed.
    fn take(&mut self) -> Vec<(K, Option<V>)> {
        self.dirty
            .drain()
            .map(|key| {
                let value = self.current.get(&key).cloned();
                (key, value)
            })
            .collect()
    }

    /// Marks keys changed again after a failed write; their values are
    /// re-read at the next write, so a newer value is never overwritten.
    fn retry(&mut self, keys: impl IntoIterator<Item = K>) {
        self.dirty.extend(keys);
    }

    /// Marks every key changed (a new database file needs all of it).
    fn rewrite_all(&mut self) {
        self.dirty.extend(self.current.keys().cloned());
    }
}

/// Everything the store knows and has yet to write.
#[derive(Debug, Default)]
pub struct Projection {
    /// (target, kind) → the issue.
    pub issues: Tracked<Pair, Issue>,
    /// Anomaly name → its storm state.
    pub anomalies: Tracked<String, AnomalyState>,
    /// (fingerprint, startsAt) → (alert name, when acted on).
    pub acted: Tracked<Pair, ActedOn>,
    /// (alert name, fingerprint) → last heard of, firing.
    pub firing: Tracked<Pair, Wall>,
    /// Target → its maintenance pause.
    pub pauses: Tracked<String, Pause>,
    /// Fact name → the fact.
    pub facts: Tracked<String, Fact>,
    /// (target, kind, recoverer) → the ledger's row.
    pub outcomes: Tracked<ledger::Key, Outcomes>,
    /// Package file name → its crashes and quarantine.
    pub plugins: Tracked<String, PluginRecord>,
    history: VecDeque<HistoryRow>,
    /// The text of `history`, in bytes.
    history_bytes: usize,
    runs: VecDeque<RunRow>,
    /// History rows and runs dropped since the last successful write.
    pub dropped: u64,
}

/// One write's worth: taken from the projection, given back if it fails.
#[derive(Debug, Default)]
pub struct Batch {
    pub history: Vec<HistoryRow>,
    pub runs: Vec<RunRow>,
    pub issues: Vec<(Pair, Option<Issue>)>,
    pub anomalies: Vec<(String, Option<AnomalyState>)>,
    pub acted: Vec<(Pair, Option<ActedOn>)>,
    pub firing: Vec<(Pair, Option<Wall>)>,
    pub pauses: Vec<(String, Option<Pause>)>,
    pub facts: Vec<(String, Option<Fact>)>,
    pub outcomes: Vec<(ledger::Key, Option<Outcomes>)>,
    pub plugins: Vec<(String, Option<PluginRecord>)>,
}

impl Batch {
    /// How many events and runs it writes (for the catch-up figure).
    pub fn rows(&self) -> u64 {
        (self.history.len() + self.runs.len()) as u64
    }
}

impl Projection {
    /// Whether there is nothing to write.
    pub fn is_clean(&self) -> bool {
        self.history.is_empty()
            && self.runs.is_empty()
            && self.issues.dirty.is_empty()
            && self.anomalies.dirty.is_empty()
            && self.acted.dirty.is_empty()
            && self.firing.dirty.is_empty()
            && self.pauses.dirty.is_empty()
            && self.facts.dirty.is_empty()
            && self.outcomes.dirty.is_empty()
            && self.plugins.dirty.is_empty()
    }

    /// History rows held, not yet taken for writing.
    pub fn pending(&self) -> usize {
        self.history.len()
    }

    /// When the oldest event not yet written happened.
    pub fn oldest_pending(&self) -> Option<Wall> {
        self.history.front().map(|row| row.at)
    }

    /// Takes in one event: its history row (unless routine) and the state
    /// it changes.
    pub fn apply(&mut self, record: &Record) {
        let at = record.at;
        match &record.event {
            Event::IssueOpened { target, issue }
            | Event::AttemptStarted { target, issue, .. }
            | Event::AttemptFinished { target, issue, .. }
            | Event::IssueResolved { target, issue }
            | Event::IssueEscalated { target, issue, .. }
            | Event::IssueResetByOperator { target, issue }
            | Event::RecoveryProposed { target, issue, .. }
            | Event::ProposalAnswered { target, issue, .. }
            | Event::ProposalWithdrawn { target, issue, .. } => {
                self.issues
                    .set((target.clone(), issue.kind.clone()), issue.clone());
            }
            Event::IssueForgotten { target, kind, .. } => {
                self.issues.remove((target.clone(), kind.clone()));
            }
            Event::IssueDropped { target, issue, .. } => {
                self.issues.remove((target.clone(), issue.kind.clone()));
            }
            Event::WorkflowStarted { run, state } | Event::WouldRun { run, state } => {
                self.anomalies.set(run.anomaly.clone(), state.clone());
                let started = matches!(record.event, Event::WorkflowStarted { .. });
                self.push_run(RunRow {
                    run: run.clone(),
                    status: if started { "started" } else { "would_run" },
                    started_at: Some(at),
                    finished_at: (!started).then_some(at),
                    error: None,
                });
            }
            Event::WorkflowFinished {
                run,
                succeeded,
                error,
            } => self.push_run(RunRow {
                run: run.clone(),
                status: if *succeeded { "succeeded" } else { "failed" },
                started_at: None,
                finished_at: Some(at),
                error: error.clone(),
            }),
            Event::AnomalySuppressed { anomaly, state, .. }
            | Event::AnomalyEscalated { anomaly, state, .. } => {
                self.anomalies.set(anomaly.clone(), state.clone());
            }
            Event::AnomalyResolved { anomaly } => self.anomalies.remove(anomaly.clone()),
            Event::TargetPaused { target, pause } | Event::PauseShortened { target, pause, .. } => {
                self.pauses.set(target.clone(), pause.clone())
            }
            Event::TargetResumed { target, .. } => self.pauses.remove(target.clone()),
            Event::FactChanged { fact, .. } => self.facts.set(fact.name(), fact.clone()),
            Event::RecoveryJudged {
                target,
                kind,
                recoverer,
                attempt,
                outcomes,
                forgot,
                ..
            } => {
                if let Some(key) = forgot {
                    self.outcomes.remove((**key).clone());
                }
                let key = (target.clone(), kind.clone(), recoverer.clone());
                self.outcomes.set(key, (**outcomes).clone());
                // The attempt judged no longer waits on its issue's row,
                // whatever follows (a gate may hold the next attempt): a
                // restart must not judge it again.
                self.issues.update((target.clone(), kind.clone()), |issue| {
                    let judged = issue.judging.as_ref().is_some_and(|judging| {
                        judging.recoverer == *recoverer && judging.attempt == *attempt
                    });
                    if judged {
                        issue.judging = None;
                    }
                    judged
                });
            }
            Event::FactRetracted { fact, .. } | Event::FactExpired { fact } => {
                self.facts.remove(fact.name())
            }
            Event::AlertReceived {
                alertname,
                fingerprint,
                starts_at,
                acted_on,
                ..
            } => {
                // When it was last heard of: Alertmanager re-sends a firing
                // alert, so one not heard of for long is stale.
                self.firing
                    .set((alertname.clone(), fingerprint.clone()), at);
                if *acted_on {
                    self.acted.set(
                        (fingerprint.clone(), starts_at.clone()),
                        (alertname.clone(), at),
                    );
                }
            }
            Event::AlertResolved {
                alertname,
                fingerprint,
                ..
            } => self.firing.remove((alertname.clone(), fingerprint.clone())),
            Event::PluginWorkerCrashed {
                package, reason, ..
            } => self.plugins.upsert(package.clone(), |record| {
                record.crashes += 1;
                record.last_crash = Some(reason.clone());
                record.last_crash_at = Some(at);
            }),
            Event::PluginQuarantined {
                package,
                sha256,
                reason,
                crashes,
                within,
                ..
            } => self.plugins.upsert(package.clone(), |record| {
                record.quarantine = Some(Quarantine {
                    reason: crashed_too_often(package, *crashes, &within.to_string(), reason),
                    sha256: sha256.clone(),
                    since: at,
                });
            }),
            Event::PluginQuarantineLifted { package, .. } => self
                .plugins
                .update(package.clone(), |record| record.quarantine.take().is_some()),
            _ => {}
        }
        self.bound();
        if record.event.is_routine() {
            return;
        }
        let body = serde_json::to_string(record).unwrap_or_else(|err| {
            format!(
                r#"{{"event":"{}","unencodable":"{err}"}}"#,
                record.event.name()
            )
        });
        self.history_bytes += body.len();
        self.history.push_back(HistoryRow {
            at,
            event: record.event.name(),
            subject: record.event.subject().map(str::to_owned),
            body,
        });
        self.trim_history();
    }

    /// Drops the oldest history past [`MAX_PENDING`] rows or
    /// [`MAX_PENDING_BYTES`].
    fn trim_history(&mut self) {
        while self.history.len() > MAX_PENDING || self.history_bytes > MAX_PENDING_BYTES {
            let Some(row) = self.history.pop_front() else {
                break;
            };
            self.history_bytes -= row.body.len();
            self.dropped += 1;
        }
    }

    /// Keeps the intake's state no larger than the intake keeps it.
    fn bound(&mut self) {
        let oldest = Wall::from_millis(0);
        // As the intake forgets: escalated names last.
        self.anomalies.keep_newest(MAX_INTAKE, |state| {
            (state.escalated, state.last_report.unwrap_or(oldest))
        });
        self.acted.keep_newest(MAX_INTAKE, |(_, at)| *at);
        self.firing.keep_newest(MAX_INTAKE, |seen_at| *seen_at);
        // One row per package file name ever served: the most recently
        // crashed are kept (a quarantine is a crash's).
        self.plugins.keep_newest(MAX_PLUGINS, |record| {
            (
                record.quarantine.is_some(),
                record.last_crash_at.unwrap_or(oldest),
            )
        });
    }

    fn push_run(&mut self, row: RunRow) {
        self.runs.push_back(row);
        while self.runs.len() > MAX_PENDING {
            self.runs.pop_front();
            self.dropped += 1;
        }
    }

    /// Everything to write now.
    pub fn take(&mut self) -> Batch {
        self.history_bytes = 0;
        Batch {
            history: self.history.drain(..).collect(),
            runs: self.runs.drain(..).collect(),
            issues: self.issues.take(),
            anomalies: self.anomalies.take(),
            acted: self.acted.take(),
            firing: self.firing.take(),
            pauses: self.pauses.take(),
            facts: self.facts.take(),
            outcomes: self.outcomes.take(),
            plugins: self.plugins.take(),
        }
    }

    /// A write failed: what it held is written next time, ahead of what
    /// came since (history keeps its order; state keys re-read their
    /// latest values).
    pub fn give_back(&mut self, batch: Batch) {
        for row in batch.history.into_iter().rev() {
            self.history_bytes += row.body.len();
            self.history.push_front(row);
        }
        for row in batch.runs.into_iter().rev() {
            self.runs.push_front(row);
        }
        self.trim_history();
        while self.runs.len() > MAX_PENDING {
            self.runs.pop_front();
            self.dropped += 1;
        }
        self.issues.retry(batch.issues.into_iter().map(|(k, _)| k));
        self.anomalies
            .retry(batch.anomalies.into_iter().map(|(k, _)| k));
        self.acted.retry(batch.acted.into_iter().map(|(k, _)| k));
        self.firing.retry(batch.firing.into_iter().map(|(k, _)| k));
        self.pauses.retry(batch.pauses.into_iter().map(|(k, _)| k));
        self.facts.retry(batch.facts.into_iter().map(|(k, _)| k));
        self.outcomes
            .retry(batch.outcomes.into_iter().map(|(k, _)| k));
        self.plugins
            .retry(batch.plugins.into_iter().map(|(k, _)| k));
    }

    /// A new database file: all current state is written to it.
    pub fn rewrite_all(&mut self) {
        self.issues.rewrite_all();
        self.anomalies.rewrite_all();
        self.acted.rewrite_all();
        self.firing.rewrite_all();
        self.pauses.rewrite_all();
        self.facts.rewrite_all();
        self.outcomes.rewrite_all();
        self.plugins.rewrite_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use healer_plugin_sdk::Status;

    fn checked(n: u64, status: Status, was: Status) -> Record {
        Record {
            at: Wall::from_millis(n),
            event: Event::Checked {
                target: "t".into(),
                check: String::new(),
                status,
                was: Some(was),
                summary: String::new(),
                pushed: false,
                took_us: 0,
            },
        }
    }

    fn forgotten(kind: &str) -> Record {
        Record {
            at: Wall::from_millis(0),
            event: Event::IssueForgotten {
                target: "t".into(),
                kind: kind.into(),
                reason: String::new(),
            },
        }
    }

    #[test]
    fn routine_checks_stay_out_of_the_history() {
        let mut projection = Projection::default();
        projection.apply(&checked(1, Status::Ok, Status::Ok));
        assert!(projection.is_clean());
        projection.apply(&checked(2, Status::Critical, Status::Ok));
        assert_eq!(projection.take().history.len(), 1);
    }

    #[test]
    fn a_failed_write_is_retried_in_order_and_history_is_capped() {
        let mut projection = Projection::default();
        for n in 0..3 {
            projection.apply(&checked(n, Status::Critical, Status::Ok));
        }
        let batch = projection.take();
        projection.apply(&checked(3, Status::Critical, Status::Ok));
        projection.give_back(batch);
        let order: Vec<u64> = projection
            .take()
            .history
            .iter()
            .map(|row| row.at.millis())
            .collect();
        assert_eq!(order, [0, 1, 2, 3]);

        for n in 0..(MAX_PENDING as u64 + 10) {
            projection.apply(&checked(n, Status::Critical, Status::Ok));
        }
        assert_eq!(projection.dropped, 10);
        assert_eq!(projection.take().history[0].at.millis(), 10);
    }

    #[test]
    fn pending_history_is_capped_by_its_size_too() {
        let mut projection = Projection::default();
        for n in 0..40 {
            let mut record = checked(n, Status::Critical, Status::Ok);
            if let Event::Checked { summary, .. } = &mut record.event {
                *summary = "x".repeat(1 << 20);
            }
            projection.apply(&record);
        }
        assert!(projection.history_bytes <= MAX_PENDING_BYTES);
        assert!(projection.dropped >= 8, "{}", projection.dropped);
        let batch = projection.take();
        assert_eq!(batch.history.last().map(|row| row.at.millis()), Some(39));
        projection.give_back(batch);
        assert!(projection.history_bytes <= MAX_PENDING_BYTES);
    }

    #[test]
    fn a_key_changed_many_times_is_written_once_with_its_last_value() {
        let mut projection = Projection::default();
        projection
            .anomalies
            .load("gone".into(), AnomalyState::default());
        for _ in 0..1000 {
            projection.apply(&forgotten("k"));
        }
        projection.apply(&Record {
            at: Wall::from_millis(0),
            event: Event::AnomalyResolved {
                anomaly: "gone".into(),
            },
        });
        let batch = projection.take();
        assert_eq!(batch.issues.len(), 1);
        assert_eq!(batch.anomalies, [("gone".to_owned(), None)]);
    }
}
