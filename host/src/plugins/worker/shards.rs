//! A package served by several worker processes at once, so a package
//! with thousands of targets uses every core instead of one worker's
//! package thread: each target is served by one of them (its monitor, its
//! diagnosers and its recoverers together, so a check is still diagnosed
//! where it ran). A package's targets go to its first worker, then,
//! `targets_per_worker` at a time, to the others in turn, up to `workers`
//! (`[plugins]`); a worker starts on its first use, so a package with a few
//! targets has one. Each worker is a [`Remote`] of its own: it crashes,
//! restarts and is quarantined alone.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use healer_plugin_sdk::ffi::{Declared, PluginKind};

use super::client::Remote;
use crate::config::PackagePolicy;
use crate::events::Events;
use crate::model::PluginRecord;
use crate::plugins::identity::Identity;
use crate::plugins::lock::lock;
use crate::plugins::package::{Backend, Instance, Pending, WhenWorkerEnds, WorkerHealth};

/// A package's workers, and which target each serves.
pub struct Shards {
    workers: Vec<Arc<Remote>>,
    per_worker: usize,
    /// The worker of each target named so far, and how many were named.
    assigned: Mutex<(HashMap<String, usize>, usize)>,
}

/// The backend serving the package at `target` (shown as `shown`) from
/// worker processes: one [`Remote`], or [`Shards`] of them when `policy`
/// allows more than one.
pub fn serve(
    shown: &Path,
    target: &Path,
    identity: Identity,
    exe: &Path,
    policy: &PackagePolicy,
) -> Arc<dyn Backend> {
    let count = policy.limits.workers.max(1);
    if count == 1 {
        return Remote::new(shown, target, identity, exe, policy);
    }
    let workers = (0..count)
        .map(|_| Remote::new(shown, target, identity.clone(), exe, policy))
        .collect();
    Arc::new(Shards {
        workers,
        per_worker: policy.limits.targets_per_worker.max(1),
        assigned: Mutex::default(),
    })
}

impl Shards {
    /// The worker that serves `key` (a target), chosen the first time.
    fn worker_of(&self, key: &str) -> usize {
        let mut assigned = lock(&self.assigned);
        let (by_key, named) = &mut *assigned;
        if let Some(&worker) = by_key.get(key) {
            return worker;
        }
        let worker = worker_for(*named, self.per_worker, self.workers.len());
        *named += 1;
        by_key.insert(key.to_owned(), worker);
        worker
    }

    fn first(&self) -> &Remote {
        &self.workers[0]
    }
}

impl Backend for Shards {
    fn check_config<'a>(
        &'a self,
        kind: PluginKind,
        name: &'a str,
        config: &'a str,
    ) -> Pending<'a, Result<Declared, String>> {
        self.first().check_config(kind, name, config)
    }

    fn create<'a>(
        &'a self,
        kind: PluginKind,
        name: &'a str,
        config: &'a str,
    ) -> Pending<'a, Result<Box<dyn Instance>, String>> {
        self.first().create(kind, name, config)
    }

    fn heartbeat(&self) -> Pending<'_, Result<(), String>> {
        self.first().heartbeat()
    }

    fn report_to(&self, events: &Events) {
        for worker in &self.workers {
            worker.report_to(events);
        }
    }

    fn when_worker_ends(&self, hook: &WhenWorkerEnds) {
        for worker in &self.workers {
            worker.when_worker_ends(hook);
        }
    }

    /// The first worker's pid and state, with every worker's starts and
    /// crashes counted together.
    fn health(&self) -> Option<WorkerHealth> {
        let mut all = self.first().health()?;
        for worker in &self.workers[1..] {
            let Some(health) = worker.health() else {
                continue;
            };
            all.started += health.started;
            all.recent_crashes += health.recent_crashes;
            all.last_crash = all.last_crash.or(health.last_crash);
            all.quarantined = all.quarantined.or(health.quarantined);
            all.crashes += health.crashes;
            all.pids.extend(health.pid);
        }
        Some(all)
    }

    /// Every worker carries on quarantined (a package quarantined by one
    /// of its workers is not trusted by the others after a restart); the
    /// crashes are counted once, by the first.
    fn remember(&self, record: &PluginRecord) {
        self.first().remember(record);
        let quarantine_only = PluginRecord {
            quarantine: record.quarantine.clone(),
            ..PluginRecord::default()
        };
        for worker in &self.workers[1..] {
            worker.remember(&quarantine_only);
        }
    }

    /// Lifted on every worker that was quarantined; said once.
    fn lift_quarantine(&self) -> Result<(), String> {
        let mut lifted = None;
        let mut refused = None;
        for worker in &self.workers {
            match worker.lift() {
                Ok(()) => lifted = lifted.or(Some(worker)),
                Err(why) => refused = refused.or(Some(why)),
            }
        }
        match (lifted, refused) {
            (Some(worker), _) => {
                worker.announce_lift();
                Ok(())
            }
            (None, Some(why)) => Err(why),
            (None, None) => Ok(()),
        }
    }

    fn for_target(&self, target: &str) -> Option<Arc<dyn Backend>> {
        let worker = self.worker_of(target);
        Some(Arc::clone(&self.workers[worker]) as Arc<dyn Backend>)
    }
}

/// The worker of the `named`-th target (counted from 0) of `workers`
/// taking `per_worker` at a time.
fn worker_for(named: usize, per_worker: usize, workers: usize) -> usize {
    (named / per_worker.max(1)) % workers.max(1)
}

#[cfg(test)]
mod tests {
    use super::worker_for;

    #[test]
    fn targets_fill_the_first_worker_then_go_to_the_others_in_blocks() {
        let chosen: Vec<usize> = (0..7).map(|named| worker_for(named, 2, 3)).collect();
        assert_eq!(chosen, [0, 0, 1, 1, 2, 2, 0]);
        // 1,500 targets of 1,000 per worker on 2: 1,000 and 500.
        let second = (0..1500).filter(|&n| worker_for(n, 1000, 2) == 1).count();
        assert_eq!(second, 500);
    }
}
