//! Live reload (SIGHUP, `healer reload`, `POST /api/v1/reload`): read the
//! config again, rescan the plugins directory, and apply the difference
//! to the running engine. Added targets start, removed ones stop, changed
//! ones restart, keeping their issues (attempts, escalations, flap memory)
//! and pause where the target is still the same one (same name and
//! monitor). A new `.so` is probed and loaded with the rescan; a package
//! whose file is unchanged keeps its workers; a replaced file that probes
//! clean is an upgrade in place (its targets restart on its new workers,
//! the old ones end), and one that is refused leaves the running package
//! serving, with one line in `plugin_problems`.
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

use std::collections::{BTreeMap, HashMap, HashSet};

use healer_plugin_sdk::redact;

use crate::api::Reloaded;
use crate::config::{Config, Target};
use crate::engine::{Engine, Runner};
use crate::events::{Event, Events};
use crate::loading::{lines, Options};
use crate::plugins::{Catalog, PluginKind};

/// The config and plugins healer runs on now.
pub struct Current {
    pub config: Config,
    pub catalog: Catalog,
    /// The token the listener checks (read once, at start).
    pub token: Option<String>,
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
    let running = current.catalog.packages.clone();
    reload_with(options, current, engine, events, |config| async move {
        crate::loading::with_plugins(config, &running)
            .await
            .map_err(|problems| lines(&problems))
    })
    .await
}

/// [`reload`], with the plugins a config needs loaded by `load` (the
/// plugins directory's; a test's in memory).
async fn reload_with<Loaded>(
    options: &Options,
    current: &mut Current,
    engine: &mut Engine,
    events: &Events,
    load: impl FnOnce(Config) -> Loaded,
) -> Result<Reloaded, Vec<String>>
where
    Loaded: std::future::Future<Output = Result<(Config, Catalog), Vec<String>>>,
{
    let config_path = options.config.clone();
    let outcome = prepare(options, current, engine, load).await;
    let Prepared {
        config,
        catalog,
        plan,
        needs_restart,
    } = match outcome {
        Ok(prepared) => prepared,
        Err(problems) => {
            let problems: Vec<String> = problems
                .iter()
                .map(|problem| redact::text(problem))
                .collect();
            events.emit(Event::ConfigRejected {
                config: config_path,
                problems: problems.clone(),
            });
            return Err(problems);
        }
    };
    catalog.when_worker_ends(&engine.when_worker_ends());
    let plugin_problems: Vec<String> = catalog
        .errors
        .iter()
        .chain(&catalog.warnings)
        .map(ToString::to_string)
        .collect();
    for problem in &plugin_problems {
        tracing::warn!("reload: {problem}");
    }
    let mut reloaded = Reloaded {
        unchanged: plan.unchanged,
        packages_added: new_packages(&current.catalog, &catalog),
        plugin_problems,
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
            engine.drop_issues(
                &name,
                tracker,
                "its monitors changed in a reload (none is left from before)",
            );
        }
        engine.start(runner);
        reloaded.changed.push(name);
    }
    for runner in plan.added {
        reloaded.added.push(runner.target().name.clone());
        engine.start(runner);
    }
    catalog.report_to(events);
    let mut config = config;
    keep_running(&mut config, &current.config);
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

/// A reload ready to apply: nothing running was touched yet.
struct Prepared {
    /// The new config, with the running `[plugins]`.
    config: Config,
    /// Its plugins.
    catalog: Catalog,
    plan: Plan,
    /// Settings that changed but take a restart.
    needs_restart: Vec<String>,
}

/// The new config (with the running `[plugins]`), its plugins, the plan
/// and the settings that need a restart.
async fn prepare<Loaded>(
    options: &Options,
    running_now: &Current,
    engine: &Engine,
    load: impl FnOnce(Config) -> Loaded,
) -> Result<Prepared, Vec<String>>
where
    Loaded: std::future::Future<Output = Result<(Config, Catalog), Vec<String>>>,
{
    let mut config = crate::loading::read_config(options).map_err(|p| lines(&p))?;
    let mut restart = needs_restart(&running_now.config, &config);
    if token_changed(running_now.token.as_deref(), &config) {
        restart.push("[intake] token".to_owned());
    }
    config.plugins = running_now.config.plugins.clone();
    let (config, catalog) = load(config).await?;
    // Fleet targets start and stop with their shards, not with a reload:
    // a change to them takes a restart.
    let running: HashMap<&str, &Target> = engine
        .targets()
        .filter(|t| !t.fleet)
        .map(|t| (t.name.as_str(), t))
        .collect();
    let mut plan = Plan {
        added: Vec::new(),
        changed: Vec::new(),
        removed: Vec::new(),
        unchanged: 0,
    };
    let mut problems = Vec::new();
    let wanted: Vec<&Target> = config
        .targets
        .iter()
        .filter(|t| t.enabled && !t.fleet)
        .collect();
    let fleet_targets = |c: &Config| {
        c.targets
            .iter()
            .filter(|t| t.fleet)
            .cloned()
            .collect::<Vec<_>>()
    };
    let (before, now) = (fleet_targets(&running_now.config), fleet_targets(&config));
    if running_now.config.fleet != config.fleet
        || before.len() != now.len()
        || before.iter().zip(&now).any(|(a, b)| !a.same_as(b))
    {
        restart.push("[fleet] and the fleet's targets".to_owned());
    }
    let upgraded = upgraded(&running_now.catalog, &catalog);
    // Workflow steps keep the instances they were built with until a
    // restart (the intake is not rebuilt by a reload).
    let mut in_workflows: Vec<String> = config
        .workflows
        .values()
        .flat_map(|workflow| &workflow.steps)
        .filter(|step| upgraded.contains(&(step.plugin.kind, step.plugin.plugin.clone())))
        .map(|step| {
            format!(
                "workflow steps of plugin {:?} (its package changed)",
                step.plugin.plugin
            )
        })
        .collect();
    in_workflows.sort();
    in_workflows.dedup();
    restart.extend(in_workflows);
    for target in &wanted {
        let was = running.get(target.name.as_str());
        // A target of an upgraded package restarts on its new workers,
        // keeping its issues and pause as any target that is the same one.
        let upgrades = target
            .plugins()
            .any(|plugin| upgraded.contains(&(plugin.kind, plugin.plugin.clone())));
        if was.is_some_and(|was| was.same_as(target)) && !upgrades {
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
        Ok(Prepared {
            config,
            catalog,
            plan,
            needs_restart: restart,
        })
    } else {
        Err(problems)
    }
}

/// The plugins (kind, name) that `new` serves from another package than
/// `old` did: a file upgraded in place, renamed, or a plugin moved from
/// one file to another. Their targets restart on the new package.
fn upgraded(old: &Catalog, new: &Catalog) -> HashSet<(PluginKind, String)> {
    let mut moved = HashSet::new();
    for package in &new.packages {
        for plugin in &package.plugins {
            let before = old.find(plugin.kind, &plugin.name);
            if before.is_some_and(|before| !before.same_as(package)) {
                moved.insert((plugin.kind, plugin.name.clone()));
            }
        }
    }
    moved
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
            ("[intake]", format!("{:?}", c.intake)),
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
    let mut changed: Vec<String> = before
        .iter()
        .filter(|(key, value)| after.get(*key) != Some(*value))
        .map(|(key, _)| (*key).to_owned())
        .collect();
    // By value: where a key was written (its span) is no change.
    if old.plugins != new.plugins {
        changed.push("[plugins]".to_owned());
        changed.sort();
    }
    changed
}

/// `new` with the settings only a restart applies as healer runs them now:
/// `current` is what runs, so a later reload still names what this one
/// could not apply (the same settings [`needs_restart`] compares).
fn keep_running(new: &mut Config, running: &Config) {
    let (to, from) = (&mut new.healer, &running.healer);
    to.state_dir.clone_from(&from.state_dir);
    to.log_file.clone_from(&from.log_file);
    to.log_format = from.log_format;
    to.log_level.clone_from(&from.log_level);
    to.event_log.clone_from(&from.event_log);
    to.enabled = from.enabled;
    to.max_concurrent_recoveries = from.max_concurrent_recoveries;
    to.history = from.history;
    new.store.clone_from(&running.store);
    new.intake.clone_from(&running.intake);
    new.alerts.clone_from(&running.alerts);
    new.reflexes.clone_from(&running.reflexes);
    new.workflows.clone_from(&running.workflows);
    new.plugins.clone_from(&running.plugins);
    new.fleet.clone_from(&running.fleet);
    new.targets.retain(|t| !t.fleet);
    new.targets
        .extend(running.targets.iter().filter(|t| t.fleet).cloned());
}

/// Whether the token `config` names (a file rewritten in place, an
/// environment variable) is not the one the listener checks.
fn token_changed(running: Option<&str>, config: &Config) -> bool {
    config.intake_token().ok().flatten().as_deref() != running
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every setting a reload names as needing a restart is kept as it
    /// runs, so the next reload names it again.
    #[test]
    fn what_a_reload_could_not_apply_is_named_again_by_the_next() {
        let path = std::path::Path::new("/tmp/healer-reload-test.toml");
        let before = "[healer]\nhistory = 10\nmax_concurrent_recoveries = 4\n";
        let after = "[healer]\nstate_dir = \"elsewhere\"\nlog_file = \"other.log\"\nlog_format = \"json\"\n\
                     log_level = \"debug\"\nevent_log = \"events.jsonl\"\nenabled = true\nhistory = 20\n\
                     max_concurrent_recoveries = 8\n[store]\nkeep_events = 5\n[plugins]\nuser = \"nobody\"\n\
                     [intake]\nbind = \"127.0.0.1:8123\"\n";
        let running = Config::parse(path, before.to_owned()).expect("parses");
        let mut new = Config::parse(path, after.to_owned()).expect("parses");
        let named = needs_restart(&running, &new);
        assert!(named.len() >= 10, "{named:?}");
        keep_running(&mut new, &running);
        assert_eq!(needs_restart(&running, &new), Vec::<String>::new());
    }

    /// A comment added above `[plugins]` changes nothing, though where its
    /// keys are written (their spans) does.
    #[test]
    fn a_comment_above_plugins_is_not_a_plugins_change() {
        let path = std::path::Path::new("/tmp/healer-review.toml");
        let body = "[plugins]\nuser = \"nobody\"\n";
        let old = Config::parse(path, body.to_owned()).expect("parses");
        let new = Config::parse(path, format!("# a comment\n{body}")).expect("parses");
        assert_eq!(needs_restart(&old, &new), Vec::<String>::new());
    }

    /// A token file rewritten in place with another valid token: the
    /// running listener keeps the old token until a restart, so the reload
    /// says "[intake] token" needs one.
    #[test]
    fn a_token_file_rewritten_in_place_needs_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "first-token-0123456789\n").unwrap();
        let path = dir.path().join("healer.toml");
        let body = format!(
            "[intake]\nbind = \"127.0.0.1:8000\"\ntoken_file = \"{}\"\n",
            token.display()
        );
        let running = Config::parse(&path, body.clone()).expect("parses");
        assert_eq!(
            running.intake_token().unwrap().as_deref(),
            Some("first-token-0123456789")
        );
        let held = running.intake_token().unwrap();
        std::fs::write(&token, "second-token-0123456789\n").unwrap();
        let new = Config::parse(&path, body).expect("parses");
        assert!(token_changed(held.as_deref(), &new));
        assert!(!token_changed(Some("second-token-0123456789"), &new));
    }
}

/// A reload applied to running targets, with plugins in memory.
#[cfg(test)]
mod running;
