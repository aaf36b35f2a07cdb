//! The healing loop: creates every target's plugin instances, then runs one
//! task per target (monitor → diagnose → recover) until shut down.
//!
//! Targets never wait on each other: each has its own schedule, jittered so
//! N targets do not fire in the same millisecond, and every plugin call has
//! a deadline. What the targets share is small: a host-wide limit on
//! concurrent recoveries, the set of targets with open issues (for
//! `depends_on`), and a way to ask a dependent to re-check at once.
//!
//! Each target starts from the issues the store saved before a restart
//! (attempts, backoff due times, escalations), and every transition goes
//! out as an event.

mod target;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use healer_plugin_sdk::Observation;
use tokio::sync::{mpsc, watch, Semaphore};

use crate::config::{Config, PluginUse, Target};
use crate::events::Events;
use crate::issues::Issue;
use crate::plugins::{Catalog, DiagnoserHandle, MonitorHandle, PluginKind, RecovererHandle};

pub use target::Cycle;

/// A target with its plugin instances, ready to run.
pub struct Runner {
    target: Target,
    monitor: Arc<MonitorHandle>,
    diagnosers: Vec<(String, DiagnoserHandle)>,
    recoverers: Vec<RecovererHandle>,
    /// Its issues as saved before a restart.
    saved: Vec<Issue>,
}

impl Runner {
    /// How many open (not resolved) issues it carries on from.
    pub fn restored_issues(&self) -> usize {
        self.saved
            .iter()
            .filter(|issue| issue.resolved_at.is_none())
            .count()
    }
}

/// What a dependent knows of a dependency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Health {
    /// Not checked yet since healer started.
    Unchecked,
    /// No open issue.
    Healthy,
    /// Has an open issue.
    Down,
}

/// What targets share.
#[derive(Default)]
pub(crate) struct Shared {
    /// Every target's health; a dependent is recovered only while all its
    /// dependencies are healthy (not down, and not unchecked: at start-up
    /// the app must not be restarted before the database has been seen).
    health: RwLock<HashMap<String, Health>>,
    /// Ask a target to check at once (a dependency of it just healed).
    recheck: HashMap<String, mpsc::Sender<()>>,
    /// Each target's dependents.
    dependents: HashMap<String, Vec<String>>,
    /// The targets that run; a disabled target is not watched, so it never
    /// holds its dependents' recovery.
    watched: std::collections::HashSet<String>,
}

impl Shared {
    /// Records a target's health; returns whether it just became healthy.
    pub(crate) fn set_health(&self, target: &str, down: bool) -> bool {
        let mut health = self
            .health
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        let now = if down { Health::Down } else { Health::Healthy };
        let before = health.insert(target.to_owned(), now);
        now == Health::Healthy && before != Some(Health::Healthy)
    }

    /// The first of `targets` that is not healthy, and how it stands.
    pub(crate) fn first_unhealthy<'a>(&self, targets: &'a [String]) -> Option<(&'a str, Health)> {
        let health = self
            .health
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        targets
            .iter()
            .map(|t| {
                (
                    t.as_str(),
                    health.get(t).copied().unwrap_or(Health::Unchecked),
                )
            })
            .find(|(_, h)| *h != Health::Healthy)
    }

    pub(crate) fn recheck_dependents(&self, target: &str) {
        for dependent in self.dependents.get(target).into_iter().flatten() {
            if let Some(sender) = self.recheck.get(dependent) {
                let _ = sender.try_send(());
            }
        }
    }
}

/// Creates the plugin instances of every enabled target, each with the
/// issues saved for it. Every failure is reported, naming the target and
/// plugin.
pub async fn build(
    config: &Config,
    catalog: &Catalog,
    mut saved: HashMap<String, Vec<Issue>>,
) -> Result<Vec<Runner>, Vec<String>> {
    let mut runners = Vec::new();
    let mut errors = Vec::new();
    for target in config.targets.iter().filter(|t| t.enabled) {
        match build_target(target, catalog).await {
            Ok(mut runner) => {
                runner.saved = saved.remove(&target.name).unwrap_or_default();
                runners.push(runner)
            }
            Err(err) => errors.push(err),
        }
    }
    if errors.is_empty() {
        Ok(runners)
    } else {
        Err(errors)
    }
}

async fn build_target(target: &Target, catalog: &Catalog) -> Result<Runner, String> {
    let fail = |plugin: &PluginUse, err: String| {
        format!(
            "target {:?}: cannot create {} {:?}: {err}",
            target.name, plugin.kind, plugin.plugin
        )
    };
    let package = |plugin: &PluginUse| {
        catalog.find(plugin.kind, &plugin.plugin).ok_or_else(|| {
            fail(
                plugin,
                format!(
                    "no loaded package exports it (in {})",
                    catalog.dir.display()
                ),
            )
        })
    };
    let monitor = package(&target.monitor)?
        .new_monitor(&target.monitor.plugin, &target.monitor.config)
        .await
        .map_err(|err| fail(&target.monitor, err))?;
    let mut diagnosers = Vec::new();
    for plugin in &target.diagnosers {
        let diagnoser = package(plugin)?
            .new_diagnoser(&plugin.plugin, &plugin.config)
            .await
            .map_err(|e| fail(plugin, e))?;
        diagnosers.push((plugin.plugin.clone(), diagnoser));
    }
    let mut recoverers = Vec::new();
    for recoverer in &target.recoverers {
        let plugin = &recoverer.plugin;
        debug_assert_eq!(plugin.kind, PluginKind::Recoverer);
        recoverers.push(
            package(plugin)?
                .new_recoverer(&plugin.plugin, &plugin.config)
                .await
                .map_err(|e| fail(plugin, e))?,
        );
    }
    Ok(Runner {
        target: target.clone(),
        monitor: Arc::new(monitor),
        diagnosers,
        recoverers,
        saved: Vec::new(),
    })
}

/// Runs every target until `shutdown` becomes `true`.
pub async fn run(
    runners: Vec<Runner>,
    max_concurrent_recoveries: usize,
    history: usize,
    events: Events,
    shutdown: watch::Receiver<bool>,
) {
    let limiter = Arc::new(Semaphore::new(max_concurrent_recoveries));
    let mut shared = Shared::default();
    let mut inboxes = HashMap::new();
    for runner in &runners {
        let (sender, inbox) = mpsc::channel(1);
        shared.recheck.insert(runner.target.name.clone(), sender);
        shared.watched.insert(runner.target.name.clone());
        inboxes.insert(runner.target.name.clone(), inbox);
        for dependency in &runner.target.depends_on {
            shared
                .dependents
                .entry(dependency.clone())
                .or_default()
                .push(runner.target.name.clone());
        }
    }
    let shared = Arc::new(shared);
    let tasks: Vec<_> = runners
        .into_iter()
        .filter_map(|runner| {
            let inbox = inboxes.remove(&runner.target.name)?;
            let cycle = Cycle::new(
                runner,
                Arc::clone(&shared),
                Arc::clone(&limiter),
                events.clone(),
                history,
            );
            Some(tokio::spawn(cycle.run(inbox, shutdown.clone())))
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
}

/// One check of every target, concurrently, with recovery if asked: what
/// `healer once` prints.
pub async fn once(
    runners: Vec<Runner>,
    recover: bool,
    history: usize,
    events: Events,
) -> Vec<(String, Observation, Vec<String>)> {
    let limiter = Arc::new(Semaphore::new(runners.len().max(1)));
    let shared = Arc::new(Shared::default());
    let tasks: Vec<_> = runners
        .into_iter()
        .map(|runner| {
            let mut cycle = Cycle::new(
                runner,
                Arc::clone(&shared),
                Arc::clone(&limiter),
                events.clone(),
                history,
            );
            tokio::spawn(async move { cycle.once(recover).await })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        if let Ok(result) = task.await {
            results.push(result);
        }
    }
    results
}
