//! A reload applied to running targets, as the operator who edited the
//! config sees it: the real engine, board and event stream, the config
//! read from a file, and plugins in memory (`plugins::memory`) where a
//! rescan would have loaded packages.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use healer_plugin_sdk::{Error, Monitor, Observation};
use serde::Deserialize;
use tokio::sync::watch;

use super::{reload_with, Current, Reloaded};
use crate::board::Board;
use crate::clock::Wall;
use crate::config::Config;
use crate::engine::{self, Engine, Settings};
use crate::events::witness::{Witness, WITHIN};
use crate::events::{Event, Events};
use crate::issues::State;
use crate::loading::Options;
use crate::metrics::Metrics;
use crate::model::Pause;
use crate::plugins::memory::{self, Memory, Recorder, Script};
use crate::plugins::{Catalog, Package};

/// The config file: fast pacing, `healer` more of `[healer]`, then `rest`.
fn text(healer: &str, rest: &str) -> String {
    format!(
        "[healer]\ninterval = \"20ms\"\ngrace = \"10ms\"\nbackoff = \"10ms\"\nescalated_interval = \"40ms\"\n{healer}\n{rest}"
    )
}

/// A target checked by `monitor` (`extra` lines in its table), recovered
/// by `restart` only for `pid.warning` (so a CRITICAL issue is escalated
/// at once, and stays open).
fn target(name: &str, monitor: &str, extra: &str) -> String {
    format!(
        "[[target]]\nname = \"{name}\"\n{extra}\n[target.monitor]\nplugin = \"{monitor}\"\n\n[[target.recover]]\nplugin = \"restart\"\non = [\"{monitor}.warning\"]\n\n"
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PortConfig {
    port: u16,
}

/// A monitor whose config is checked, as an author's is.
struct Port(u16);

impl Monitor for Port {
    type Config = PortConfig;
    const NAME: &'static str = "port";
    const DESCRIPTION: &'static str = "OK: a port's config is all it checks";

    fn new(config: PortConfig) -> Result<Self, Error> {
        Ok(Port(config.port))
    }

    async fn check(&mut self) -> Result<Observation, Error> {
        Ok(Observation::ok(format!("listening on {}", self.0)))
    }
}

/// A daemon's running state, as `daemon::heal` holds it.
struct Daemon {
    options: Options,
    current: Current,
    engine: Engine,
    board: Arc<Board>,
    events: Events,
    witness: Witness,
    package: Package,
    stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

/// Scripts for the monitors `pid` (CRITICAL) and `ok` (OK), and `port`.
fn package(pid: &Script) -> Package {
    Memory::new("test")
        .monitor_as("pid", pid)
        .monitor_as("other-pid", pid)
        .monitor_as("ok", &Script::new(Observation::ok("fine")))
        .monitor::<Port>()
        .recoverer_as("restart", &Recorder::default())
        .package()
}

/// The config's plugins, as a rescan would load them.
async fn loaded(package: Package, config: Config) -> Result<(Config, Catalog), Vec<String>> {
    let catalog = memory::catalog([package]);
    let problems = catalog.check_config(&config).await;
    if problems.is_empty() {
        Ok((config, catalog))
    } else {
        Err(problems.iter().map(ToString::to_string).collect())
    }
}

async fn running(file: &str, package: Package) -> Daemon {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("healer.toml");
    std::fs::write(&path, file).expect("the config written");
    let config = Config::load(&path).unwrap_or_else(|err| panic!("{err}"));
    let (config, catalog) = loaded(package.clone(), config)
        .await
        .unwrap_or_else(|problems| panic!("{problems:?}"));
    let runners = engine::build(&config, &catalog, HashMap::new(), HashMap::new())
        .await
        .unwrap_or_else(|errors| panic!("{errors:?}"));
    let (events, witness) = Witness::stream();
    let board = Board::new(Arc::new(Metrics::new()));
    let (stop, shutdown) = watch::channel(false);
    let settings = Settings {
        max_concurrent_recoveries: 4,
        history: 10,
    };
    let mut engine = Engine::new(settings, events.clone(), Arc::clone(&board), shutdown);
    for runner in runners {
        engine.start(runner);
    }
    Daemon {
        options: Options {
            config: path,
            plugins_dir: None,
            verbose: 0,
        },
        current: Current {
            config,
            catalog,
            token: None,
        },
        engine,
        board,
        events,
        witness,
        package,
        stop,
        _dir: dir,
    }
}

impl Daemon {
    /// Writes `file` as the config and reloads.
    async fn reload(&mut self, file: &str) -> Result<Reloaded, Vec<String>> {
        std::fs::write(&self.options.config, file).expect("the config written");
        let package = self.package.clone();
        let load = move |config| loaded(package, config);
        let reloading = reload_with(
            &self.options,
            &mut self.current,
            &mut self.engine,
            &self.events,
            load,
        );
        tokio::time::timeout(WITHIN, reloading)
            .await
            .expect("the reload ends")
    }

    fn running(&self) -> BTreeSet<String> {
        self.engine.targets().map(|t| t.name.clone()).collect()
    }

    fn configured(&self) -> Vec<&str> {
        let targets = &self.current.config.targets;
        targets.iter().map(|t| t.name.as_str()).collect()
    }

    /// How many times `target` started checking from scratch.
    fn first_checks(&mut self, target: &str) -> usize {
        self.witness
            .count(|e| matches!(e, Event::Checked { target: t, was: None, .. } if t == target))
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(WITHIN, self.engine.wait())
            .await
            .expect("every loop stops at shutdown");
    }
}

fn names(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

fn escalated(event: &Event, target: &str) -> bool {
    matches!(event, Event::IssueEscalated { target: t, .. } if t == target)
}

#[tokio::test]
async fn a_reload_starts_added_targets_stops_removed_ones_and_leaves_the_rest_running() {
    let pid = Script::new(Observation::ok("running"));
    let before = text("", &(target("web", "ok", "") + &target("db", "ok", "")));
    let mut daemon = running(&before, package(&pid)).await;
    daemon.witness.checks("web", 1).await;
    let after = text("", &(target("web", "ok", "") + &target("cache", "ok", "")));
    let reloaded = daemon.reload(&after).await.expect("a good config");
    assert_eq!(
        reloaded,
        Reloaded {
            added: vec!["cache".into()],
            removed: vec!["db".into()],
            changed: Vec::new(),
            unchanged: 1,
            packages_added: Vec::new(),
            plugin_problems: Vec::new(),
            needs_restart: Vec::new(),
        }
    );
    assert_eq!(daemon.running(), names(&["cache", "web"]));
    assert_eq!(daemon.configured(), ["web", "cache"]);
    assert!(daemon.board.target("db").is_none(), "db left the board");
    daemon
        .witness
        .wait_for("the reload's record", |e| {
            matches!(e, Event::ConfigReloaded { added, removed, .. }
                if added == &["cache"] && removed == &["db"])
        })
        .await;
    daemon.witness.checks("cache", 1).await;
    daemon.witness.checks("web", 2).await;
    assert_eq!(daemon.first_checks("web"), 1, "web was never restarted");
    daemon.stop().await;
}

#[tokio::test]
async fn a_changed_target_restarts_and_carries_on_with_its_issues() {
    let pid = Script::new(Observation::critical("no process"));
    let mut daemon = running(&text("", &target("web", "pid", "")), package(&pid)).await;
    daemon
        .witness
        .wait_for("the escalation", |e| escalated(e, "web"))
        .await;
    let changed = text("", &target("web", "pid", "interval = \"30ms\""));
    let reloaded = daemon.reload(&changed).await.expect("a good config");
    assert_eq!(reloaded.changed, ["web"]);
    daemon
        .witness
        .wait_for(
            "the restarted loop's first check",
            |e| matches!(e, Event::Checked { target, was: None, .. } if target == "web"),
        )
        .await;
    daemon.witness.checks("web", 2).await;
    let view = daemon.board.target("web").expect("on the board");
    assert_eq!(view.issues.len(), 1, "{view:?}");
    assert_eq!(view.issues[0].state, State::Escalated);
    let witness = &mut daemon.witness;
    assert_eq!(
        witness.count(|e| matches!(e, Event::IssueOpened { .. })),
        1,
        "the issue carried on, not opened again"
    );
    assert_eq!(
        witness.count(|e| matches!(e, Event::IssueDropped { .. })),
        0
    );
    daemon.stop().await;
}

#[tokio::test]
async fn a_target_whose_monitor_changed_starts_again_without_its_issues() {
    let pid = Script::new(Observation::critical("no process"));
    let mut daemon = running(&text("", &target("web", "pid", "")), package(&pid)).await;
    daemon
        .witness
        .wait_for("the escalation", |e| escalated(e, "web"))
        .await;
    let reloaded = daemon
        .reload(&text("", &target("web", "other-pid", "")))
        .await
        .expect("a good config");
    assert_eq!(reloaded.changed, ["web"]);
    let dropped = daemon
        .witness
        .wait_for("the issue dropped", |e| {
            matches!(e, Event::IssueDropped { .. })
        })
        .await;
    let Event::IssueDropped { issue, reason, .. } = dropped else {
        unreachable!()
    };
    assert_eq!(issue.kind, "pid.critical");
    assert!(reason.contains("monitors changed"), "{reason}");
    daemon
        .witness
        .wait_for(
            "the new monitor's issue",
            |e| matches!(e, Event::IssueOpened { issue, .. } if issue.kind == "other-pid.critical"),
        )
        .await;
    daemon.stop().await;
}

#[tokio::test]
async fn a_config_that_does_not_parse_is_refused_and_the_running_one_carries_on() {
    let pid = Script::new(Observation::ok("running"));
    let before = text("", &(target("web", "ok", "") + &target("db", "ok", "")));
    let mut daemon = running(&before, package(&pid)).await;
    let problems = daemon
        .reload(&format!("{before}\n[[target]\n"))
        .await
        .expect_err("a broken config");
    let file = daemon.options.config.display().to_string();
    assert!(problems[0].starts_with(&file), "{problems:?}");
    daemon
        .witness
        .wait_for("the rejection's record", |e| {
            matches!(e, Event::ConfigRejected { .. })
        })
        .await;
    assert_eq!(daemon.running(), names(&["db", "web"]));
    assert_eq!(daemon.configured(), ["web", "db"]);
    daemon.stop().await;
}

#[tokio::test]
async fn a_plugin_that_refuses_its_config_refuses_the_whole_reload() {
    let pid = Script::new(Observation::ok("running"));
    let before = text("", &(target("web", "ok", "") + &target("db", "ok", "")));
    let mut daemon = running(&before, package(&pid)).await;
    // db removed, and a new target whose port monitor has a typo.
    let after = text(
        "",
        &(target("web", "ok", "")
            + &target("api", "port", "")
                .replace("plugin = \"port\"", "plugin = \"port\"\nprot = 80")),
    );
    let problems = daemon.reload(&after).await.expect_err("a refused plugin");
    assert!(
        problems
            .iter()
            .any(|p| p.contains("monitor \"port\"") && p.contains("prot")),
        "{problems:?}"
    );
    assert_eq!(
        daemon.running(),
        names(&["db", "web"]),
        "nothing was applied"
    );
    assert!(daemon.board.target("db").is_some());
    assert_eq!(
        daemon
            .witness
            .count(|e| matches!(e, Event::ConfigReloaded { .. })),
        0
    );
    daemon.stop().await;
}

#[tokio::test]
async fn settings_only_a_restart_applies_are_named_and_the_running_ones_kept() {
    let pid = Script::new(Observation::ok("running"));
    let targets = target("web", "ok", "");
    let mut daemon = running(&text("", &targets), package(&pid)).await;
    let after = text(
        "history = 20\nmax_concurrent_recoveries = 8",
        &format!("{targets}[store]\nenabled = false\n"),
    );
    for _ in 0..2 {
        let reloaded = daemon.reload(&after).await.expect("a good config");
        assert_eq!(
            reloaded.needs_restart,
            [
                "[healer] history",
                "[healer] max_concurrent_recoveries",
                "[store]"
            ],
            "named by every reload until the restart"
        );
        assert_eq!(reloaded.unchanged, 1);
        let running = &daemon.current.config;
        assert_eq!(running.healer.history, 10);
        assert_eq!(running.healer.max_concurrent_recoveries, 4);
        assert!(running.store.enabled);
    }
    daemon.stop().await;
}

#[tokio::test]
async fn a_removed_target_drops_its_open_issues_and_ends_its_pause() {
    let pid = Script::new(Observation::critical("no process"));
    let before = text("", &(target("web", "pid", "") + &target("db", "ok", "")));
    let mut daemon = running(&before, package(&pid)).await;
    daemon
        .witness
        .wait_for("the escalation", |e| escalated(e, "web"))
        .await;
    let now = Wall::now();
    let pause = Pause {
        until: now + std::time::Duration::from_secs(3600),
        reason: "deploy".to_owned(),
        since: now,
    };
    daemon
        .engine
        .handle()
        .pause("web", pause)
        .expect("web runs");
    let reloaded = daemon
        .reload(&text("", &target("db", "ok", "")))
        .await
        .expect("a good config");
    assert_eq!(reloaded.removed, ["web"]);
    let dropped = daemon
        .witness
        .wait_for(
            "the issue dropped",
            |e| matches!(e, Event::IssueDropped { target, .. } if target == "web"),
        )
        .await;
    let Event::IssueDropped { reason, .. } = dropped else {
        unreachable!()
    };
    assert_eq!(reason, "the target was removed by a reload");
    let resumed = daemon
        .witness
        .wait_for("the pause ended", |e| {
            matches!(e, Event::TargetResumed { .. })
        })
        .await;
    let Event::TargetResumed { reason, .. } = resumed else {
        unreachable!()
    };
    assert!(reason.starts_with("the pause ended"), "{reason}");
    assert!(daemon.board.target("web").is_none());
    assert!(
        daemon.engine.handle().resume("web").is_err(),
        "no such target any more"
    );
    daemon.stop().await;
}
