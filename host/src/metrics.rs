//! `/metrics`: healer's figures in the Prometheus text format, with
//! `prometheus-client`. Counters come from the event stream (plugin
//! errors, timeouts and worker crashes, recoveries by result, anomalies by
//! outcome, alerts); check durations are observed by each target's loop
//! (every check, not only status changes); gauges (each target's status,
//! open issues by state, store lag) are read from the board and the store
//! when scraped.
//!
//! Every label comes from the config (targets, plugins, packages) or from
//! a closed set (states, results, outcomes): nothing an outsider sends
//! becomes a label, so the series are bounded.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, MutexGuard};

use healer_plugin_sdk::Status;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::board::TargetView;
use crate::events::{Event, Record, Subscriber};
use crate::issues::State;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabel {
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    target: String,
    role: String,
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PackageLabel {
    package: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    target: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    target: String,
    status: String,
}

fn check_histogram() -> Histogram {
    // 100 µs to ~13 s.
    Histogram::new(exponential_buckets(0.0001, 4.0, 9))
}

/// Every series healer exports.
pub struct Metrics {
    registry: Mutex<Registry>,
    check_seconds: Family<TargetLabel, Histogram, fn() -> Histogram>,
    plugin_errors: Family<PluginLabels, Counter>,
    plugin_timeouts: Family<PluginLabels, Counter>,
    worker_crashes: Family<PackageLabel, Counter>,
    quarantines: Family<PackageLabel, Counter>,
    recoveries: Family<ResultLabels, Counter>,
    escalations: Family<TargetLabel, Counter>,
    anomalies: Family<OutcomeLabel, Counter>,
    target_status: Family<StatusLabels, Gauge>,
    target_up: Family<TargetLabel, Gauge>,
    last_check_age: Family<TargetLabel, Gauge<f64, AtomicU64>>,
    issues: Family<StateLabel, Gauge>,
    paused: Gauge,
    store_lag: Gauge<f64, AtomicU64>,
    store_writable: Gauge,
}

impl Metrics {
    /// Every series, registered.
    pub fn new() -> Metrics {
        let metrics = Metrics {
            registry: Mutex::new(Registry::with_prefix("healer")),
            check_seconds: Family::new_with_constructor(check_histogram),
            plugin_errors: Family::default(),
            plugin_timeouts: Family::default(),
            worker_crashes: Family::default(),
            quarantines: Family::default(),
            recoveries: Family::default(),
            escalations: Family::default(),
            anomalies: Family::default(),
            target_status: Family::default(),
            target_up: Family::default(),
            last_check_age: Family::default(),
            issues: Family::default(),
            paused: Gauge::default(),
            store_lag: Gauge::default(),
            store_writable: Gauge::default(),
        };
        {
            let mut r = metrics.lock();
            r.register(
                "check_duration_seconds",
                "How long each scheduled check took",
                metrics.check_seconds.clone(),
            );
            r.register(
                "target_status",
                "1 for each target's status: the worst of its checks and open issues (ok, warning, critical, unknown, unchecked)",
                metrics.target_status.clone(),
            );
            r.register(
                "target_healthy",
                "1 when the target is OK (its checks OK, no open issue), 0 otherwise",
                metrics.target_up.clone(),
            );
            r.register(
                "target_last_check_age_seconds",
                "Seconds since each target was last checked",
                metrics.last_check_age.clone(),
            );
            r.register("issues", "Open issues by state", metrics.issues.clone());
            r.register(
                "targets_paused",
                "Targets paused for maintenance",
                metrics.paused.clone(),
            );
            r.register(
                "recoveries",
                "Recovery attempts by result (recovered, failed)",
                metrics.recoveries.clone(),
            );
            r.register(
                "escalations",
                "Issues escalated",
                metrics.escalations.clone(),
            );
            r.register(
                "plugin_errors",
                "Plugin calls that failed",
                metrics.plugin_errors.clone(),
            );
            r.register(
                "plugin_timeouts",
                "Plugin calls past their deadline",
                metrics.plugin_timeouts.clone(),
            );
            r.register(
                "plugin_worker_crashes",
                "Plugin worker processes that crashed",
                metrics.worker_crashes.clone(),
            );
            r.register(
                "plugin_quarantines",
                "Plugin packages quarantined",
                metrics.quarantines.clone(),
            );
            r.register(
                "anomalies",
                "Anomaly reports by outcome (run, would_run, suppressed, no_reflex)",
                metrics.anomalies.clone(),
            );
            r.register(
                "store_write_lag_seconds",
                "How long the oldest event not yet written to the store has waited",
                metrics.store_lag.clone(),
            );
            r.register(
                "store_writable",
                "1 when the store can write, 0 when degraded",
                metrics.store_writable.clone(),
            );
        }
        metrics
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The check-duration histogram of one target, for its loop.
    pub fn check_timer(&self, target: &str) -> Histogram {
        self.check_seconds.get_or_create_owned(&TargetLabel {
            target: target.to_owned(),
        })
    }

    /// A target removed by a reload: its series go.
    pub fn forget(&self, target: &str) {
        let label = TargetLabel {
            target: target.to_owned(),
        };
        self.check_seconds.remove(&label);
        self.target_up.remove(&label);
        self.last_check_age.remove(&label);
    }

    /// The text exposition, with the gauges read now.
    pub fn render(&self, targets: &[TargetView], store: Option<&crate::store::Gauge>) -> String {
        // One scrape at a time: the gauges are reset and read together.
        let registry = self.lock();
        let now = crate::clock::Wall::now();
        self.target_status.clear();
        let mut by_state: HashMap<State, i64> = HashMap::new();
        let mut paused = 0;
        for view in targets {
            let status = view.status.map_or("unchecked", |s| match s {
                Status::Ok => "ok",
                Status::Warning => "warning",
                Status::Critical => "critical",
                Status::Unknown => "unknown",
            });
            self.target_status
                .get_or_create(&StatusLabels {
                    target: view.name.clone(),
                    status: status.to_owned(),
                })
                .set(1);
            let label = TargetLabel {
                target: view.name.clone(),
            };
            self.target_up
                .get_or_create(&label)
                .set(i64::from(view.status == Some(Status::Ok)));
            if let Some(at) = view.last_check {
                self.last_check_age
                    .get_or_create(&label)
                    .set(now.since(at).as_secs_f64());
            }
            for issue in &view.issues {
                *by_state.entry(issue.state).or_default() += 1;
            }
            if view.paused.as_ref().is_some_and(|p| p.holds(now)) {
                paused += 1;
            }
        }
        for state in [State::Open, State::Recovering, State::Escalated] {
            self.issues
                .get_or_create(&StateLabel {
                    state: state.as_str().to_owned(),
                })
                .set(by_state.get(&state).copied().unwrap_or(0));
        }
        self.paused.set(paused);
        if let Some(store) = store {
            self.store_lag.set(store.lag().as_secs_f64());
            self.store_writable.set(i64::from(!store.degraded()));
        }
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
            text.clear();
        }
        text
    }

    /// Counts what one event says.
    fn count(&self, event: &Event) {
        let inc =
            |family: &Family<PluginLabels, Counter>, target: &str, role: &str, plugin: &str| {
                family
                    .get_or_create(&PluginLabels {
                        target: target.to_owned(),
                        role: role.to_owned(),
                        plugin: plugin.to_owned(),
                    })
                    .inc();
            };
        let outcome = |name: &str| {
            self.anomalies
                .get_or_create(&OutcomeLabel {
                    outcome: name.to_owned(),
                })
                .inc();
        };
        match event {
            Event::PluginFailed {
                target,
                role,
                plugin,
                ..
            } => inc(&self.plugin_errors, target, role.as_str(), plugin),
            Event::PluginTimedOut {
                target,
                role,
                plugin,
                ..
            } => inc(&self.plugin_timeouts, target, role.as_str(), plugin),
            Event::PluginWorkerCrashed { package, .. } => {
                self.worker_crashes
                    .get_or_create(&PackageLabel {
                        package: package.clone(),
                    })
                    .inc();
            }
            Event::PluginQuarantined { package, .. } => {
                self.quarantines
                    .get_or_create(&PackageLabel {
                        package: package.clone(),
                    })
                    .inc();
            }
            Event::AttemptFinished {
                target, recovered, ..
            } => {
                self.recoveries
                    .get_or_create(&ResultLabels {
                        target: target.clone(),
                        result: if *recovered { "recovered" } else { "failed" }.to_owned(),
                    })
                    .inc();
            }
            Event::IssueEscalated { target, .. } => {
                self.escalations
                    .get_or_create(&TargetLabel {
                        target: target.clone(),
                    })
                    .inc();
            }
            Event::WorkflowStarted { .. } => outcome("run"),
            Event::WouldRun { .. } => outcome("would_run"),
            Event::NoReflex { left_out, .. } => {
                self.anomalies
                    .get_or_create(&OutcomeLabel {
                        outcome: "no_reflex".to_owned(),
                    })
                    .inc_by(1 + *left_out);
            }
            Event::AnomalySuppressed { .. } => outcome("suppressed"),
            _ => {}
        }
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// The subscriber that counts events.
pub struct Feed(pub std::sync::Arc<Metrics>);

impl Subscriber for Feed {
    fn deliver(&mut self, record: &Record) {
        self.0.count(&record.event);
    }
}
