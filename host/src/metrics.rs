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
//! becomes a label, so the series are bounded. Because the label sets are
//! known, every series is made at zero when its target or package starts
//! ([`Metrics::start_at_zero`]): prometheus-client leaves a family with no
//! series out of the exposition altogether, and a counter that first shows
//! up at 1 is an increase that `rate()` never sees.
//!
//! The exposition is OpenMetrics for a scraper that asks for it (as
//! Prometheus does), else the Prometheus text format 0.0.4 (curl,
//! `promtool check metrics`), where a counter's family is named with its
//! `_total` ([`Format`]).
//!
//! A member of a fleet (`[fleet]`) also exports `healer_fleet_*`: whether
//! it is in touch with etcd, its lease left, the members, the shards
//! needed, owned (with their epochs) and unowned, and its claims and
//! reports by result, read from the fleet's view when scraped.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, MutexGuard};

use healer_plugin_sdk::ffi::PluginKind;
use healer_plugin_sdk::Status;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::board::{CheckTimers, LateCount, Lateness, TargetView};
use crate::config::Config;
use crate::events::{Event, Record, Role, Subscriber};
use crate::fleet::{Counts, View as FleetView};
use crate::issues::State;
use crate::ledger::Verdict;
use crate::model::StoreHealth;
use crate::plugins::Catalog;

/// What the anomaly counter's `outcome` label may be.
const OUTCOMES: [&str; 4] = ["run", "would_run", "suppressed", "no_reflex"];

/// What the recovery counter's `result` label may be.
const RESULTS: [&str; 2] = ["recovered", "failed"];

/// The two text formats `/metrics` speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 (`application/openmetrics-text`), what Prometheus
    /// asks for.
    OpenMetrics,
    /// The Prometheus text format 0.0.4 (`text/plain`), for anything else.
    Prometheus,
}

impl Format {
    /// The format a scraper's `Accept` header asks for.
    pub fn accepted(accept: Option<&str>) -> Format {
        if accept.is_some_and(|accept| accept.contains("application/openmetrics-text")) {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    /// Its `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

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
struct VerdictLabels {
    target: String,
    verdict: String,
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardLabel {
    shard: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

/// The series of a fleet member, registered once its config has a
/// `[fleet]` table. The counters follow the fleet's own counts (each
/// scrape adds what is new), so they count from the daemon's start.
#[derive(Default)]
struct FleetSeries {
    registered: std::sync::atomic::AtomicBool,
    in_touch: Gauge,
    lease_left: Gauge<f64, AtomicU64>,
    members: Gauge,
    shards_needed: Gauge,
    shards_owned: Gauge,
    shards_unowned: Gauge,
    shard_epoch: Family<ShardLabel, Gauge>,
    claims: Family<ResultLabel, Counter>,
    reports: Family<ResultLabel, Counter>,
    /// What of the fleet's counts the counters hold already.
    counted: Mutex<Counts>,
}

impl FleetSeries {
    /// Registers the series in `r` (once) with every counter at zero.
    fn register(&self, r: &mut Registry) {
        if self
            .registered
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        r.register(
            "fleet_in_touch",
            "1 while this member is in touch with etcd and may act on its shards, 0 otherwise",
            self.in_touch.clone(),
        );
        r.register(
            "fleet_lease_remaining_seconds",
            "Seconds until this member stops acting if its lease is not renewed",
            self.lease_left.clone(),
        );
        r.register(
            "fleet_members",
            "Members etcd listed at the latest scan",
            self.members.clone(),
        );
        r.register(
            "fleet_shards_needed",
            "Shards some fleet target of the config needs",
            self.shards_needed.clone(),
        );
        r.register(
            "fleet_shards_owned",
            "Shards this member owns",
            self.shards_owned.clone(),
        );
        r.register(
            "fleet_shards_unowned",
            "Shards some fleet target needs that no member owned at the latest scan",
            self.shards_unowned.clone(),
        );
        r.register(
            "fleet_shard_epoch",
            "The epoch (etcd revision of its owner key) of each shard this member owns",
            self.shard_epoch.clone(),
        );
        r.register(
            "fleet_claims",
            "Claims of fleet targets' recoveries, by result (claimed: etcd accepted; refused: etcd refused or did not answer; held: not sent, the member may not claim now)",
            self.claims.clone(),
        );
        r.register(
            "fleet_reports",
            "Reports a reflex matched, by what the fleet-wide dedup said (acted: first; resent: first, sent again; duplicate: another member was first; unanswered: etcd could not be asked)",
            self.reports.clone(),
        );
        for result in ["claimed", "refused", "held"] {
            let _ = self.claims.get_or_create(&ResultLabel {
                result: result.to_owned(),
            });
        }
        for result in ["acted", "resent", "duplicate", "unanswered"] {
            let _ = self.reports.get_or_create(&ResultLabel {
                result: result.to_owned(),
            });
        }
    }

    /// Sets the gauges and moves the counters to what `view` says.
    fn read(&self, view: &FleetView) {
        self.in_touch.set(i64::from(view.coordinated));
        self.lease_left.set(view.lease_left_ms as f64 / 1000.0);
        self.members.set(count(view.members.len()));
        self.shards_needed.set(count(view.shards_needed));
        self.shards_owned.set(count(view.shards.len()));
        self.shards_unowned.set(count(view.shards_unowned));
        self.shard_epoch.clear();
        for shard in &view.shards {
            self.shard_epoch
                .get_or_create(&ShardLabel {
                    shard: shard.shard.to_string(),
                })
                .set(i64::try_from(shard.epoch).unwrap_or(i64::MAX));
        }
        // Two scrapes may read the fleet's counts in one order and get
        // here in the other: what is counted only grows.
        let mut counted = self.counted.lock().unwrap_or_else(|p| p.into_inner());
        let was = *counted;
        let now = view.counts.max(was);
        let add = |family: &Family<ResultLabel, Counter>, result: &str, now: u64, was: u64| {
            family
                .get_or_create(&ResultLabel {
                    result: result.to_owned(),
                })
                .inc_by(now - was);
        };
        add(&self.claims, "claimed", now.claims_made, was.claims_made);
        add(
            &self.claims,
            "refused",
            now.claims_refused,
            was.claims_refused,
        );
        add(&self.claims, "held", now.claims_held, was.claims_held);
        add(&self.reports, "acted", now.reports_acted, was.reports_acted);
        add(
            &self.reports,
            "resent",
            now.reports_resent,
            was.reports_resent,
        );
        add(
            &self.reports,
            "duplicate",
            now.reports_duplicate,
            was.reports_duplicate,
        );
        add(
            &self.reports,
            "unanswered",
            now.reports_unanswered,
            was.reports_unanswered,
        );
        *counted = now;
    }
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
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
    verdicts: Family<VerdictLabels, Counter>,
    proposals: Family<TargetLabel, Counter>,
    escalations: Family<TargetLabel, Counter>,
    anomalies: Family<OutcomeLabel, Counter>,
    target_status: Family<StatusLabels, Gauge>,
    target_up: Family<TargetLabel, Gauge>,
    last_check_age: Family<TargetLabel, Gauge<f64, AtomicU64>>,
    issues: Family<StateLabel, Gauge>,
    paused: Gauge,
    facts: Gauge,
    store_lag: Gauge<f64, AtomicU64>,
    store_writable: Gauge,
    checks_began: Counter,
    checks_late: Counter,
    /// What of the board's lateness totals the counters hold already.
    late_counted: Mutex<LateCount>,
    behind: Gauge,
    behind_by: Gauge<f64, AtomicU64>,
    fleet: FleetSeries,
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
            verdicts: Family::default(),
            proposals: Family::default(),
            escalations: Family::default(),
            anomalies: Family::default(),
            target_status: Family::default(),
            target_up: Family::default(),
            last_check_age: Family::default(),
            issues: Family::default(),
            paused: Gauge::default(),
            facts: Gauge::default(),
            store_lag: Gauge::default(),
            store_writable: Gauge::default(),
            checks_began: Counter::default(),
            checks_late: Counter::default(),
            late_counted: Mutex::default(),
            behind: Gauge::default(),
            behind_by: Gauge::default(),
            fleet: FleetSeries::default(),
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
                "facts",
                "Facts healer and its plugins know now",
                metrics.facts.clone(),
            );
            r.register(
                "recovery_verdicts",
                "Recovery attempts judged afterwards, by verdict (healed: resolved and stable for stable_after; not_healed; unknown)",
                metrics.verdicts.clone(),
            );
            r.register(
                "recoveries_proposed",
                "Recoveries proposed to an operator instead of run",
                metrics.proposals.clone(),
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
            r.register(
                "checks_began",
                "Scheduled checks begun (by healer or, for a quiet target, by its plugin worker)",
                metrics.checks_began.clone(),
            );
            r.register(
                "checks_late",
                "Scheduled checks that began more than a tenth of their interval after their point of the schedule",
                metrics.checks_late.clone(),
            );
            r.register(
                "behind",
                "1 while healer's checks fall behind their schedules (1 % or more of a 5 s window's checks late), 0 otherwise",
                metrics.behind.clone(),
            );
            r.register(
                "behind_by_seconds",
                "While behind: how late the latest check of the window began",
                metrics.behind_by.clone(),
            );
        }
        metrics
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes, at zero, every series whose labels the config and the
    /// loaded packages know: each target's recoveries (both results),
    /// escalations, and plugin errors and timeouts (its monitor and each
    /// diagnoser), each package's worker crashes and quarantines, and each
    /// anomaly outcome; a fleet member's series. Called at start and
    /// after every applied reload; a series already counting keeps its
    /// count.
    pub fn start_at_zero(&self, config: &Config, catalog: &Catalog) {
        if config.fleet.is_some() {
            self.fleet.register(&mut self.lock());
        }
        for target in config.targets.iter().filter(|t| t.enabled) {
            let name = &target.name;
            for result in RESULTS {
                let _ = self.recoveries.get_or_create_owned(&ResultLabels {
                    target: name.clone(),
                    result: result.to_owned(),
                });
            }
            let _ = self.escalations.get_or_create_owned(&TargetLabel {
                target: name.clone(),
            });
            for verdict in [Verdict::Healed, Verdict::NotHealed, Verdict::Unknown] {
                let _ = self.verdicts.get_or_create_owned(&VerdictLabels {
                    target: name.clone(),
                    verdict: verdict.as_str().to_owned(),
                });
            }
            let _ = self.proposals.get_or_create_owned(&TargetLabel {
                target: name.clone(),
            });
            for used in target.check_plugins() {
                let role = match used.kind {
                    PluginKind::Monitor => Role::Monitor,
                    _ => Role::Diagnoser,
                };
                let labels = PluginLabels {
                    target: name.clone(),
                    role: role.as_str().to_owned(),
                    plugin: used.plugin.clone(),
                };
                let _ = self.plugin_errors.get_or_create_owned(&labels);
                let _ = self.plugin_timeouts.get_or_create_owned(&labels);
            }
        }
        for package in &catalog.packages {
            let label = PackageLabel {
                package: package.file_name(),
            };
            let _ = self.worker_crashes.get_or_create_owned(&label);
            let _ = self.quarantines.get_or_create_owned(&label);
        }
        for outcome in OUTCOMES {
            let _ = self.anomalies.get_or_create_owned(&OutcomeLabel {
                outcome: outcome.to_owned(),
            });
        }
    }

    /// The text exposition, with the gauges read now.
    pub fn render(
        &self,
        targets: &[TargetView],
        store: Option<&dyn StoreHealth>,
        facts: usize,
        lateness: &Lateness,
        fleet: Option<&FleetView>,
        format: Format,
    ) -> String {
        // One scrape at a time: the gauges are reset and read together.
        let registry = self.lock();
        {
            let total = lateness.total();
            let mut counted = self.late_counted.lock().unwrap_or_else(|p| p.into_inner());
            self.checks_began
                .inc_by(total.checks.saturating_sub(counted.checks));
            self.checks_late
                .inc_by(total.late.saturating_sub(counted.late));
            *counted = total;
            let behind = lateness.behind();
            self.behind.set(i64::from(behind.is_some()));
            self.behind_by
                .set(behind.map_or(0.0, |window| window.latest_ms as f64 / 1000.0));
        }
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
        self.facts.set(count(facts));
        if let Some(view) = fleet {
            self.fleet.read(view);
        }
        if let Some(store) = store {
            self.store_lag.set(store.lag().as_secs_f64());
            self.store_writable.set(i64::from(!store.degraded()));
        }
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
            text.clear();
        }
        match format {
            Format::OpenMetrics => text,
            Format::Prometheus => prometheus_text(&text),
        }
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
            Event::RecoveryJudged {
                target, verdict, ..
            } => {
                self.verdicts
                    .get_or_create(&VerdictLabels {
                        target: target.clone(),
                        verdict: verdict.as_str().to_owned(),
                    })
                    .inc();
            }
            Event::RecoveryProposed { target, .. } => {
                self.proposals
                    .get_or_create(&TargetLabel {
                        target: target.clone(),
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

impl CheckTimers for Metrics {
    /// The check-duration histogram of one target, for its loop.
    fn check_timer(&self, target: &str) -> Histogram {
        self.check_seconds.get_or_create_owned(&TargetLabel {
            target: target.to_owned(),
        })
    }

    fn forget(&self, target: &str) {
        let label = TargetLabel {
            target: target.to_owned(),
        };
        self.check_seconds.remove(&label);
        self.target_up.remove(&label);
        self.last_check_age.remove(&label);
    }
}

/// OpenMetrics text as the Prometheus text format 0.0.4: a counter's
/// family is named with its `_total` (OpenMetrics names it without, so a
/// 0.0.4 reader would find samples with no HELP or TYPE), and the
/// OpenMetrics-only lines (`# UNIT`, `# EOF`) are left out.
fn prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len() + 256);
    let mut help: Option<(&str, &str)> = None;
    let flush_help = |out: &mut String, help: &mut Option<(&str, &str)>| {
        if let Some((name, text)) = help.take() {
            out.push_str(&format!("# HELP {name} {text}\n"));
        }
    };
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            flush_help(&mut out, &mut help);
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            match rest.split_once(' ') {
                Some((name, "counter")) => {
                    if let Some((_, text)) = help.take() {
                        out.push_str(&format!("# HELP {name}_total {text}\n"));
                    }
                    out.push_str(&format!("# TYPE {name}_total counter\n"));
                }
                _ => {
                    flush_help(&mut out, &mut help);
                    out.push_str(line);
                    out.push('\n');
                }
            }
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        } else {
            flush_help(&mut out, &mut help);
            out.push_str(line);
            out.push('\n');
        }
    }
    flush_help(&mut out, &mut help);
    out
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// The subscriber that counts events.
pub struct EventCounter(pub std::sync::Arc<Metrics>);

impl Subscriber for EventCounter {
    fn deliver(&mut self, record: &Record) {
        self.0.count(&record.event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(std::path::Path::new("healer.toml"), text.to_owned()).expect("a valid config")
    }

    /// The exposition of `metrics` with no target, store or fact.
    fn render(metrics: &Metrics, fleet: Option<&FleetView>, format: Format) -> String {
        metrics.render(&[], None, 0, &Lateness::default(), fleet, format)
    }

    fn no_packages() -> Catalog {
        Catalog {
            dir: "plugins".into(),
            packages: Vec::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    const TWO_KINDS: &str = r#"
[[target]]
name = "web"
monitor = { plugin = "http", url = "http://127.0.0.1:1/" }
[[target.diagnose]]
plugin = "http"
[[target.recover]]
plugin = "command"
argv = ["true"]
"#;

    #[test]
    fn a_configured_targets_counters_show_at_zero_before_anything_happens() {
        let metrics = Metrics::new();
        metrics.start_at_zero(&config(TWO_KINDS), &no_packages());
        let text = render(&metrics, None, Format::OpenMetrics);

        for line in [
            r#"healer_recoveries_total{target="web",result="recovered"} 0"#,
            r#"healer_recoveries_total{target="web",result="failed"} 0"#,
            r#"healer_escalations_total{target="web"} 0"#,
            r#"healer_plugin_errors_total{target="web",role="monitor",plugin="http"} 0"#,
            r#"healer_plugin_errors_total{target="web",role="diagnoser",plugin="http"} 0"#,
            r#"healer_plugin_timeouts_total{target="web",role="monitor",plugin="http"} 0"#,
            r#"healer_anomalies_total{outcome="no_reflex"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
    }

    #[test]
    fn starting_at_zero_again_after_a_reload_keeps_what_was_counted() {
        let metrics = Metrics::new();
        let config = config(TWO_KINDS);
        metrics.start_at_zero(&config, &no_packages());
        metrics.count(&Event::PluginFailed {
            target: "web".into(),
            role: Role::Monitor,
            plugin: "http".into(),
            error: "refused".into(),
        });
        metrics.start_at_zero(&config, &no_packages());

        let text = render(&metrics, None, Format::OpenMetrics);
        assert!(
            text.lines().any(|l| l
                == r#"healer_plugin_errors_total{target="web",role="monitor",plugin="http"} 1"#),
            "{text}"
        );
    }

    fn fleet_view(claims_made: u64, shards: &[(u32, u64)]) -> FleetView {
        FleetView {
            member: "h1".into(),
            coordinated: true,
            trouble: None,
            lease: Some("694d8f2a".into()),
            lease_left_ms: 4_250,
            members: vec!["h1".into(), "h2".into()],
            etcd: "http://127.0.0.1:2379".into(),
            shards_needed: 5,
            shards_unowned: 1,
            counts: Counts {
                claims_made,
                claims_refused: 1,
                reports_acted: 2,
                reports_duplicate: 7,
                ..Counts::default()
            },
            shards: shards
                .iter()
                .map(|&(shard, epoch)| crate::fleet::ShardView {
                    shard,
                    epoch,
                    owned_for_ms: 1_000,
                    targets: vec![format!("t{shard}")],
                })
                .collect(),
        }
    }

    const IN_A_FLEET: &str = r#"
[fleet]
etcd = ["http://127.0.0.1:2379"]
member = "h1"

[[target]]
name = "edge"
fleet = true
monitor = { plugin = "http", url = "http://127.0.0.1:1/" }
"#;

    #[test]
    fn a_fleet_member_exports_its_shards_lease_claims_and_reports() {
        let metrics = Metrics::new();
        metrics.start_at_zero(&config(IN_A_FLEET), &no_packages());
        let scrape = |view: &FleetView| render(&metrics, Some(view), Format::Prometheus);

        let text = scrape(&fleet_view(3, &[(17, 120), (4000, 131)]));
        for line in [
            "healer_fleet_in_touch 1",
            "healer_fleet_lease_remaining_seconds 4.25",
            "healer_fleet_members 2",
            "healer_fleet_shards_needed 5",
            "healer_fleet_shards_owned 2",
            "healer_fleet_shards_unowned 1",
            r#"healer_fleet_shard_epoch{shard="17"} 120"#,
            r#"healer_fleet_shard_epoch{shard="4000"} 131"#,
            r#"healer_fleet_claims_total{result="claimed"} 3"#,
            r#"healer_fleet_claims_total{result="refused"} 1"#,
            r#"healer_fleet_reports_total{result="duplicate"} 7"#,
            r#"healer_fleet_reports_total{result="unanswered"} 0"#,
            "# TYPE healer_fleet_claims_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }

        // A shard handed back leaves the exposition; counters only grow.
        let text = scrape(&fleet_view(5, &[(4000, 131)]));
        assert!(!text.contains(r#"shard="17""#), "{text}");
        let claimed = |text: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(r#"healer_fleet_claims_total{result="claimed"} "#))
                .map(str::to_owned)
        };
        assert_eq!(claimed(&text).as_deref(), Some("5"), "{text}");
        // Two scrapes that read the counts in one order and render in the
        // other count nothing twice.
        let _ = scrape(&fleet_view(4, &[]));
        let text = scrape(&fleet_view(6, &[]));
        assert_eq!(claimed(&text).as_deref(), Some("6"), "{text}");
    }

    #[test]
    fn a_healer_in_no_fleet_exports_no_fleet_series() {
        let metrics = Metrics::new();
        metrics.start_at_zero(&config(TWO_KINDS), &no_packages());
        let text = render(&metrics, None, Format::Prometheus);
        assert!(!text.contains("healer_fleet"), "{text}");
    }

    #[test]
    fn the_prometheus_text_names_a_counters_family_with_its_total() {
        let openmetrics = "# HELP healer_recoveries Recovery attempts.\n\
                           # TYPE healer_recoveries counter\n\
                           healer_recoveries_total{target=\"web\"} 0\n\
                           # HELP healer_issues Open issues.\n\
                           # TYPE healer_issues gauge\n\
                           healer_issues{state=\"open\"} 0\n\
                           # EOF\n";

        assert_eq!(
            prometheus_text(openmetrics),
            "# HELP healer_recoveries_total Recovery attempts.\n\
             # TYPE healer_recoveries_total counter\n\
             healer_recoveries_total{target=\"web\"} 0\n\
             # HELP healer_issues Open issues.\n\
             # TYPE healer_issues gauge\n\
             healer_issues{state=\"open\"} 0\n"
        );
    }

    #[test]
    fn prometheus_is_answered_in_openmetrics_and_anyone_else_in_text() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::accepted(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::accepted(Some("*/*")), Format::Prometheus);
        assert_eq!(Format::accepted(None), Format::Prometheus);
    }
}
