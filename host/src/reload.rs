//! Live reload (SIGHUP, `healer reload`, `POST /api/v1/reload`): read the
//! config again, rescan the plugins directory, and apply the difference
//! to the running engine. Added targets start, removed ones stop, changed
//! ones restart, keeping their issues (attempts, escalations, flap memory)
//! and pause where the target is still the same one (same name and
//! monitor). A new `.so` is probed and loaded with the rescan.
//!
//! All or nothing: the new config, every plugin config in it and every new
//! plugin instance must be good before anything running is touched; a bad
//! one is rejected with its problems and the running config carries on.
//! Settings the running daemon cannot change in place (the listener, the
//! store, the log, `[plugins]`) are named in the answer: they take a
//! restart, and until then healer goes on with the running ones. For
//! `[plugins]` that means the rescan too: its packages are probed, pinned,
//! isolated and limited as the running healer does it, never as a new
//! config would (an `isolation = "in-process"` must not load a package into
//! the daemon without the restart it asks for).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::config::{Config, Target};
use crate::daemon::Options;
use crate::engine::{Engine, Runner};
use crate::events::{Event, Events};
use crate::plugins::Catalog;

/// What a reload did, as `healer reload` prints it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloaded {
    /// Targets started.
    pub added: Vec<String>,
    /// Targets stopped.
    pub removed: Vec<String>,
    /// Targets restarted with their new config.
    pub changed: Vec<String>,
    /// Targets left running as they were.
    pub unchanged: usize,
    /// Plugin package files loaded that were not loaded before.
    pub packages_added: Vec<String>,
    /// Settings that changed but take effect only after a restart.
    pub needs_restart: Vec<String>,
}

/// The config and plugins healer runs on now.
pub struct Current {
    pub config: Config,
    pub catalog: Catalog,
}

/// Reloads: on success the engine runs the new config and `current` is
/// it; on failure nothing changed and the problems are returned. Either
/// way the outcome is an event.
pub async fn reload(
    options: &Options,
    current: &mut Current,
    engine: &mut Engine,
    events: &Events,
) -> Result<Reloaded, Vec<String>> {
    let config_path = options.config.clone();
    let outcome = prepare(options, &current.config, engine).await;
    let (config, catalog, plan, needs_restart) = match outcome {
        Ok(prepared) => prepared,
        Err(problems) => {
            let problems: Vec<String> = problems
                .iter()
                .map(|problem| crate::redact::text_of(problem))
                .collect();
            events.emit(Event::ConfigRejected {
                config: config_path,
                problems: problems.clone(),
            });
            return Err(problems);
        }
    };
    let mut reloaded = Reloaded {
        unchanged: plan.unchanged,
        packages_added: new_packages(&current.catalog, &catalog),
        needs_restart,
        ..Reloaded::default()
    };
    for name in plan.removed {
        engine
            .remove(&name, "the target was removed by a reload")
            .await;
        reloaded.removed.push(name);
    }
    for (mut runner, was) in plan.changed {
        let name = runner.target().name.clone();
        let tracker = engine.stop(&name).await;
        if was.same_identity(runner.target()) {
            if let Some(tracker) = tracker {
                // Its pause stays where it is (the engine keeps it).
                runner.carry_on(&tracker);
            }
        } else {
            engine.drop_issues(&name, tracker, "its monitor changed in a reload");
        }
        engine.start(runner);
        reloaded.changed.push(name);
    }
    for runner in plan.added {
        reloaded.added.push(runner.target().name.clone());
        engine.start(runner);
    }
    catalog.report_to(events);
    current.config = config;
    current.catalog = catalog;
    events.emit(Event::ConfigReloaded {
        config: config_path,
        added: reloaded.added.clone(),
        removed: reloaded.removed.clone(),
        changed: reloaded.changed.clone(),
        packages_added: reloaded.packages_added.clone(),
        needs_restart: reloaded.needs_restart.clone(),
    });
    Ok(reloaded)
}

/// What a reload will do, with every new plugin instance already made.
struct Plan {
    added: Vec<Runner>,
    /// New runners, with the target config they replace.
    changed: Vec<(Runner, Target)>,
    removed: Vec<String>,
    unchanged: usize,
}

/// The new config (with the running `[plugins]`), its plugins, the plan
/// and the settings that need a restart.
async fn prepare(
    options: &Options,
    running_config: &Config,
    engine: &Engine,
) -> Result<(Config, Catalog, Plan, Vec<String>), Vec<String>> {
    let mut config = crate::daemon::read_config(options)?;
    let restart = needs_restart(running_config, &config);
    config.plugins = running_config.plugins.clone();
    let (config, catalog) = crate::daemon::with_plugins(config).await?;
    let running: HashMap<&str, &Target> = engine.targets().map(|t| (t.name.as_str(), t)).collect();
    let mut plan = Plan {
        added: Vec::new(),
        changed: Vec::new(),
        removed: Vec::new(),
        unchanged: 0,
    };
    let mut problems = Vec::new();
    let wanted: Vec<&Target> = config.targets.iter().filter(|t| t.enabled).collect();
    for target in &wanted {
        let was = running.get(target.name.as_str());
        if was.is_some_and(|was| was.same_as(target)) {
            plan.unchanged += 1;
            continue;
        }
        match crate::engine::build_target(target, &catalog).await {
            Ok(runner) => match was {
                Some(was) => plan.changed.push((runner, (*was).clone())),
                None => plan.added.push(runner),
            },
            Err(err) => problems.push(err),
        }
    }
    plan.removed = running
        .keys()
        .filter(|name| !wanted.iter().any(|t| t.name == **name))
        .map(|name| (*name).to_owned())
        .collect();
    plan.removed.sort();
    if problems.is_empty() {
        Ok((config, catalog, plan, restart))
    } else {
        Err(problems)
    }
}

/// Package files in `new` that `old` did not load (or loaded another
/// version of: a different sha256).
fn new_packages(old: &Catalog, new: &Catalog) -> Vec<String> {
    let before: HashMap<_, _> = old
        .packages
        .iter()
        .map(|p| (p.file.clone(), p.sha256.clone()))
        .collect();
    new.packages
        .iter()
        .filter(|p| before.get(&p.file) != Some(&p.sha256))
        .map(|p| p.file.display().to_string())
        .collect()
}

/// The settings that changed and that only a restart applies.
fn needs_restart(old: &Config, new: &Config) -> Vec<String> {
    let healer = |c: &Config| {
        let h = &c.healer;
        BTreeMap::from([
            ("[healer] state_dir", format!("{:?}", h.state_dir)),
            ("[healer] log_file", format!("{:?}", h.log_file)),
            ("[healer] log_format", format!("{:?}", h.log_format)),
            ("[healer] log_level", format!("{:?}", h.log_level)),
            ("[healer] event_log", format!("{:?}", h.event_log)),
            ("[healer] enabled", format!("{:?}", h.enabled)),
            (
                "[healer] max_concurrent_recoveries",
                format!("{:?}", h.max_concurrent_recoveries),
            ),
            ("[healer] history", format!("{:?}", h.history)),
            ("[store]", format!("{:?}", c.store)),
            ("[plugins]", format!("{:?}", c.plugins)),
            ("[intake]", format!("{:?}", c.intake)),
            // The token itself (a file rewritten in place), compared only.
            (
                "[intake] token",
                format!("{:?}", c.intake_token().ok().flatten()),
            ),
            (
                "[[alert]]",
                format!(
                    "{:?}",
                    c.alerts
                        .iter()
                        .map(|a| (
                            &a.name,
                            &a.url,
                            a.timeout,
                            a.retries,
                            a.retry_backoff,
                            &a.headers,
                            format!("{:?}", a.kind)
                        ))
                        .collect::<Vec<_>>()
                ),
            ),
            (
                "[[reflex]] and the reflex map",
                format!(
                    "{:?}",
                    c.reflexes
                        .iter()
                        .map(|r| (&r.pattern, &r.workflow, &r.params, r.max_runs_per_minute))
                        .collect::<Vec<_>>()
                ),
            ),
            (
                "[workflow]",
                format!(
                    "{:?}",
                    c.workflows
                        .values()
                        .map(|w| (
                            &w.name,
                            w.steps.iter().map(|s| s.fingerprint()).collect::<Vec<_>>()
                        ))
                        .collect::<Vec<_>>()
                ),
            ),
        ])
    };
    let (before, after) = (healer(old), healer(new));
    before
        .iter()
        .filter(|(key, value)| after.get(*key) != Some(*value))
        .map(|(key, _)| (*key).to_owned())
        .collect()
}
