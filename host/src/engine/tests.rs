//! The healing loop as a target's owner sees it: real loops, the real
//! issue tracker, event stream and board, driven by plugins that live in
//! memory (`plugins::memory`), so no package is built. Each test says
//! what happened through the events and the board, as a user would see it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use healer_plugin_sdk::{
    Diagnoser, Error, Finding, Monitor, Observation, Outcome, Recoverer, Recovery, Status,
};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::watch;

use super::{build, once, Engine, Settings};
use crate::board::Board;
use crate::clock::Wall;
use crate::config::Config;
use crate::events::witness::{Witness, WITHIN};
use crate::events::{Event, Role, StepResult};
use crate::issues::State;
use crate::metrics::Metrics;
use crate::model::Pause;
use crate::plugins::memory::{self, Memory, Recorder, RecorderReply, Script, Seen};

/// Fast pacing, so that a test takes milliseconds: every target inherits
/// it, and may override any of it.
const PACING: &str = r#"
[healer]
interval = "20ms"
timeout = "1s"
grace = "10ms"
backoff = "10ms"
backoff_max = "40ms"
escalated_interval = "40ms"
recovery_timeout = "1s"
"#;

fn config(targets: &str) -> Config {
    let text = format!("{PACING}\n{targets}");
    Config::parse(Path::new("/healer-test/healer.toml"), text).unwrap_or_else(|err| panic!("{err}"))
}

/// The targets of a config, healing with the plugins of `package`.
pub(super) struct Healing {
    pub(super) engine: Engine,
    pub(super) board: Arc<Board>,
    pub(super) events: Witness,
    stop: watch::Sender<bool>,
}

pub(super) async fn heal(targets: &str, package: Memory) -> Healing {
    let config = config(targets);
    let catalog = memory::catalog([package.package()]);
    let problems = catalog.check_config(&config).await;
    assert!(problems.is_empty(), "{problems:?}");
    let runners = build(&config, &catalog, HashMap::new(), HashMap::new())
        .await
        .unwrap_or_else(|errors| panic!("{errors:?}"));
    let (events, witness) = Witness::stream();
    let board = Board::new(Arc::new(Metrics::new()));
    let (stop, shutdown) = watch::channel(false);
    let settings = Settings {
        max_concurrent_recoveries: 4,
        history: 10,
    };
    let mut engine = Engine::new(settings, events, Arc::clone(&board), shutdown);
    tokio::spawn(engine.sweeping_facts());
    for runner in runners {
        engine.start(runner);
    }
    Healing {
        engine,
        board,
        events: witness,
        stop,
    }
}

impl Healing {
    /// Waits for a few more checks of `target`: the board then shows what
    /// the steps before them wrote.
    async fn settled(&mut self, target: &str) {
        self.events.checks(target, 2).await;
    }

    pub(super) async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(WITHIN, self.engine.wait())
            .await
            .expect("every loop stops at shutdown");
    }
}

pub(super) fn opened(event: &Event, kind: &str) -> bool {
    matches!(event, Event::IssueOpened { issue, .. } if issue.kind == kind)
}

pub(super) fn resolved(event: &Event, kind: &str) -> bool {
    matches!(event, Event::IssueResolved { issue, .. } if issue.kind == kind)
}

pub(super) fn escalated(event: &Event, kind: &str) -> bool {
    matches!(event, Event::IssueEscalated { issue, .. } if issue.kind == kind)
}

fn attempt(event: &Event) -> bool {
    matches!(event, Event::AttemptStarted { .. })
}

fn attempt_finished(event: &Event) -> bool {
    matches!(event, Event::AttemptFinished { .. })
}

fn withheld(event: &Event, kind: &str) -> bool {
    matches!(event, Event::RecoveryWithheld { kind: k, .. } if k == kind)
}

/// `[[target]] web`, checked by the monitor `pid` and recovered by
/// `restart`, with `extra` lines in its table.
fn web(extra: &str) -> String {
    format!(
        "[[target]]\nname = \"web\"\n{extra}\n[target.monitor]\nplugin = \"pid\"\n\n[[target.recover]]\nplugin = \"restart\"\n"
    )
}

/// `db` (checked by the script `db-check`, refused) and `app` (checked by
/// `app-check`, 502, recovered by the recorder `restart`), with
/// `app_extra` lines in `app`'s table and `recover_extra` in its
/// recoverer's: healing, and the scripts and recorder to steer it.
async fn db_and_app(app_extra: &str, recover_extra: &str) -> (Healing, Script, Script, Recorder) {
    let (db, app, restart) = (
        Script::new(Observation::critical("refused")),
        Script::new(Observation::critical("502")),
        Recorder::default(),
    );
    let targets = format!(
        "[[target]]\nname = \"db\"\n[target.monitor]\nplugin = \"db-check\"\n\n\
         [[target]]\nname = \"app\"\n{app_extra}\n[target.monitor]\nplugin = \"app-check\"\n\n\
         [[target.recover]]\nplugin = \"restart\"\n{recover_extra}\n"
    );
    let package = Memory::new("test")
        .monitor_as("db-check", &db)
        .monitor_as("app-check", &app)
        .recoverer_as("restart", &restart);
    (heal(&targets, package).await, db, app, restart)
}

/// A package with the scripted monitor `pid` and the recorder `restart`.
fn scripted(pid: &Script, restart: &Recorder) -> Memory {
    Memory::new("test")
        .monitor_as("pid", pid)
        .recoverer_as("restart", restart)
}

// Plugins written as an author writes them.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    path: PathBuf,
}

/// CRITICAL while a file is missing.
struct FileExists(FileConfig);

impl Monitor for FileExists {
    type Config = FileConfig;
    const NAME: &'static str = "file-exists";
    const DESCRIPTION: &'static str = "CRITICAL while a file is missing";

    fn new(config: FileConfig) -> Result<Self, Error> {
        Ok(FileExists(config))
    }

    async fn check(&mut self) -> Result<Observation, Error> {
        Ok(match tokio::fs::metadata(&self.0.path).await {
            Ok(_) => Observation::ok("present"),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                Observation::critical("missing")
            }
            Err(err) => Observation::unknown(format!("cannot look: {err}")),
        })
    }
}

/// Puts the file back.
struct CreateFile(FileConfig);

impl Recoverer for CreateFile {
    type Config = FileConfig;
    const NAME: &'static str = "create-file";
    const DESCRIPTION: &'static str = "writes the file again";

    fn new(config: FileConfig) -> Result<Self, Error> {
        Ok(CreateFile(config))
    }

    async fn recover(&mut self, recovery: &Recovery) -> Result<Outcome, Error> {
        tokio::fs::write(&self.0.path, "restored").await?;
        Ok(Outcome::done(format!(
            "created it ({})",
            recovery.finding.kind
        )))
    }
}

/// Names what the monitor saw by its summary: a check that says
/// `disk.full` is a finding of kind `disk.full`.
struct BySummary;

impl Diagnoser for BySummary {
    type Config = Value;
    const NAME: &'static str = "by-summary";
    const DESCRIPTION: &'static str = "the summary is the finding's kind";
    const BLOCKS: bool = false;

    fn new(_: Value) -> Result<Self, Error> {
        Ok(BySummary)
    }

    fn diagnose(&mut self, latest: &Observation, _: &[Observation]) -> Vec<Finding> {
        if latest.status == Status::Ok {
            return Vec::new();
        }
        vec![Finding::new(
            latest.summary.clone(),
            latest.status,
            "as seen",
        )]
    }
}

/// A service that its checks watch and a restart mends, on its
/// `heals_on`th restart.
pub(super) struct Service {
    pub(super) up: AtomicBool,
    pub(super) restarts: AtomicU32,
    pub(super) heals_on: u32,
}

/// A monitor of the service.
#[derive(Clone)]
pub(super) struct Probe(pub(super) Arc<Service>);

impl Monitor for Probe {
    type Config = Value;
    const NAME: &'static str = "probe";
    const DESCRIPTION: &'static str = "CRITICAL while the service is down";

    fn new(_: Value) -> Result<Self, Error> {
        Err("a probe watches the test's service".into())
    }

    async fn check(&mut self) -> Result<Observation, Error> {
        Ok(if self.0.up.load(Ordering::SeqCst) {
            Observation::ok("up")
        } else {
            Observation::critical("down")
        })
    }
}

/// Restarts the service.
#[derive(Clone)]
pub(super) struct Restart(pub(super) Arc<Service>);

impl Recoverer for Restart {
    type Config = Value;
    const NAME: &'static str = "restart";
    const DESCRIPTION: &'static str = "restarts the test's service";

    fn new(_: Value) -> Result<Self, Error> {
        Err("a restart mends the test's service".into())
    }

    async fn recover(&mut self, _: &Recovery) -> Result<Outcome, Error> {
        let restarts = self.0.restarts.fetch_add(1, Ordering::SeqCst) + 1;
        if restarts >= self.0.heals_on {
            self.0.up.store(true, Ordering::SeqCst);
        }
        Ok(Outcome::done(format!("restart {restarts}")))
    }
}

#[tokio::test]
async fn a_critical_check_opens_an_issue_and_runs_the_recoverer_and_a_check_verifies_it() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("report.csv");
    let targets = format!(
        "[[target]]\nname = \"report\"\n[target.monitor]\nplugin = \"file-exists\"\npath = {file:?}\n\n[[target.recover]]\nplugin = \"create-file\"\npath = {file:?}\n"
    );
    let package = Memory::new("files")
        .monitor::<FileExists>()
        .recoverer::<CreateFile>();
    let mut healing = heal(&targets, package).await;
    let events = &mut healing.events;
    events
        .wait_for("the issue", |e| opened(e, "file-exists.critical"))
        .await;
    let started = events.wait_for("an attempt", attempt).await;
    let Event::AttemptStarted { issue, .. } = started else {
        unreachable!()
    };
    assert_eq!(issue.attempts, 1);
    let finished = events
        .wait_for("the recoverer", |e| {
            matches!(e, Event::RecovererFinished { .. })
        })
        .await;
    let Event::RecovererFinished {
        recoverer, result, ..
    } = finished
    else {
        unreachable!()
    };
    assert_eq!(recoverer, "create-file");
    assert_eq!(
        result,
        StepResult::success("created it (file-exists.critical)")
    );
    events
        .wait_for("the attempt's end", |e| {
            matches!(
                e,
                Event::AttemptFinished {
                    recovered: true,
                    ..
                }
            )
        })
        .await;
    events
        .wait_for("the verification", |e| resolved(e, "file-exists.critical"))
        .await;
    assert!(file.exists(), "the recoverer put the file back");
    healing.settled("report").await;
    let view = healing.board.target("report").expect("on the board");
    assert_eq!(view.status, Some(Status::Ok), "{view:?}");
    assert!(view.issues.is_empty(), "{view:?}");
    assert_eq!(healing.events.count(attempt), 1);
    healing.stop().await;
}

/// Runs `web` (`extra` lines in its table) on a check that answers
/// `seen` until its issue is withheld and a few checks more have run, and
/// asserts that nothing was attempted; returns why the check could not
/// tell (none for an UNKNOWN observation).
async fn never_recovered(seen: Seen, extra: &str) -> Option<Event> {
    let (pid, restart) = (Script::new(seen), Recorder::default());
    let mut healing = heal(&web(extra), scripted(&pid, &restart)).await;
    let events = &mut healing.events;
    events
        .wait_for("the issue", |e| opened(e, "pid.unknown"))
        .await;
    events
        .wait_for("the recovery withheld", |e| withheld(e, "pid.unknown"))
        .await;
    events.checks("web", 3).await;
    assert_eq!(events.count(attempt), 0);
    assert!(restart.calls().is_empty(), "{:?}", restart.calls());
    let why = events
        .seen()
        .iter()
        .find(|e| matches!(e, Event::PluginFailed { .. } | Event::PluginTimedOut { .. }))
        .cloned();
    healing.stop().await;
    why
}

#[tokio::test]
async fn an_unknown_observation_is_an_issue_that_is_never_recovered() {
    let unknown = Observation::unknown("cannot read the pidfile");
    assert_eq!(never_recovered(unknown.into(), "").await, None);
}

#[tokio::test]
async fn a_monitor_that_fails_is_unknown_and_never_recovered() {
    let failing = Seen::Fails("EMFILE: too many open files".into());
    let why = never_recovered(failing, "").await;
    let Some(Event::PluginFailed {
        role,
        plugin,
        error,
        ..
    }) = why
    else {
        panic!("{why:?}")
    };
    assert_eq!((role, plugin.as_str()), (Role::Monitor, "pid"));
    assert!(error.contains("EMFILE"), "{error}");
}

#[tokio::test]
async fn a_check_past_its_deadline_is_unknown_and_never_recovered() {
    let why = never_recovered(Seen::Hangs, "timeout = \"50ms\"").await;
    let Some(Event::PluginTimedOut { plugin, after, .. }) = why else {
        panic!("{why:?}")
    };
    assert_eq!(plugin, "pid");
    assert_eq!(after, healer_plugin_sdk::Duration::from_millis(50));
}

#[tokio::test]
async fn a_panicking_monitor_is_unknown_and_never_recovered() {
    let why = never_recovered(Seen::Panics("index out of bounds".into()), "").await;
    let Some(Event::PluginFailed { error, .. }) = why else {
        panic!("{why:?}")
    };
    assert!(error.contains("panicked"), "{error}");
    assert!(error.contains("index out of bounds"), "{error}");
}

#[tokio::test]
async fn an_unknown_kind_is_recovered_only_by_a_recoverer_whose_on_names_it() {
    let (pid, restart) = (
        Script::new(Seen::Fails("no such pidfile".into())),
        Recorder::default(),
    );
    let targets = "[[target]]\nname = \"web\"\n[target.monitor]\nplugin = \"pid\"\n\n[[target.recover]]\nplugin = \"restart\"\non = [\"pid.unknown\"]\n";
    let mut healing = heal(targets, scripted(&pid, &restart)).await;
    healing.events.wait_for("an attempt", attempt).await;
    healing
        .events
        .wait_for("the attempt's end", attempt_finished)
        .await;
    let calls = restart.calls();
    assert_eq!(calls[0].finding.kind, "pid.unknown");
    assert_eq!(calls[0].finding.severity, Status::Unknown);
    assert_eq!(calls[0].target, "web");
    healing.stop().await;
}

#[tokio::test]
async fn an_issue_still_failing_after_max_attempts_is_escalated_and_left_alone() {
    let (pid, restart) = (
        Script::new(Observation::critical("no process")),
        Recorder::default(),
    );
    let mut healing = heal(&web("max_attempts = 2"), scripted(&pid, &restart)).await;
    let event = healing
        .events
        .wait_for("the escalation", |e| escalated(e, "pid.critical"))
        .await;
    let Event::IssueEscalated { reason, issue, .. } = event else {
        unreachable!()
    };
    assert!(reason.contains("after 2 recovery attempts"), "{reason}");
    assert_eq!(issue.attempts, 2);
    healing.settled("web").await;
    healing.events.checks("web", 2).await;
    let attempts: Vec<u32> = restart.calls().iter().map(|r| r.attempt).collect();
    assert_eq!(attempts, [1, 2], "no attempt after the escalation");
    let view = healing.board.target("web").expect("on the board");
    assert_eq!(view.status, Some(Status::Critical));
    assert_eq!(view.issues[0].state, State::Escalated, "{view:?}");
    healing.stop().await;
}

#[tokio::test]
async fn a_spent_recovery_budget_escalates_a_new_kind_without_an_attempt() {
    let pid = Script::new(Observation::critical("db.down"));
    pid.then([Observation::critical("disk.full").into()]);
    let restart = Recorder::default();
    let targets = "[[target]]\nname = \"web\"\nrecovery_budget = 1\nmax_attempts = 3\n[target.monitor]\nplugin = \"pid\"\n[[target.monitor.diagnose]]\nplugin = \"by-summary\"\n\n[[target.recover]]\nplugin = \"restart\"\n";
    let package = scripted(&pid, &restart).diagnoser::<BySummary>();
    let mut healing = heal(targets, package).await;
    let events = &mut healing.events;
    events.wait_for("an attempt", attempt).await;
    events
        .wait_for("the first kind gone", |e| resolved(e, "disk.full"))
        .await;
    let event = events
        .wait_for("the escalation", |e| escalated(e, "db.down"))
        .await;
    let Event::IssueEscalated { reason, .. } = event else {
        unreachable!()
    };
    assert!(reason.contains("recovery budget"), "{reason}");
    let kinds: Vec<String> = restart
        .calls()
        .iter()
        .map(|r| r.finding.kind.clone())
        .collect();
    assert_eq!(kinds, ["disk.full"]);
    healing.stop().await;
}

#[tokio::test]
async fn an_issue_no_recoverer_handles_is_escalated_at_once() {
    let (pid, restart) = (
        Script::new(Observation::critical("no process")),
        Recorder::default(),
    );
    let targets = "[[target]]\nname = \"web\"\n[target.monitor]\nplugin = \"pid\"\n\n[[target.recover]]\nplugin = \"restart\"\non = [\"pid.warning\"]\n";
    let mut healing = heal(targets, scripted(&pid, &restart)).await;
    let event = healing
        .events
        .wait_for("the escalation", |e| escalated(e, "pid.critical"))
        .await;
    let Event::IssueEscalated { reason, .. } = event else {
        unreachable!()
    };
    assert_eq!(reason, "no recoverer of this target handles pid.critical");
    assert!(restart.calls().is_empty());
    healing.stop().await;
}

#[tokio::test]
async fn the_ladder_tries_the_next_recoverer_when_one_fails() {
    let pid = Script::new(Observation::critical("no process"));
    let (gentle, firm) = (
        Recorder::new(RecorderReply::Fails("systemctl: unit not found".into())),
        Recorder::default(),
    );
    let targets = "[[target]]\nname = \"web\"\n[target.monitor]\nplugin = \"pid\"\n\n[[target.recover]]\nplugin = \"gentle\"\n\n[[target.recover]]\nplugin = \"firm\"\n";
    let package = Memory::new("test")
        .monitor_as("pid", &pid)
        .recoverer_as("gentle", &gentle)
        .recoverer_as("firm", &firm);
    let mut healing = heal(targets, package).await;
    let events = &mut healing.events;
    let first = events
        .wait_for("the first rung", |e| {
            matches!(e, Event::RecovererFinished { .. })
        })
        .await;
    let second = events
        .wait_for("the second rung", |e| {
            matches!(e, Event::RecovererFinished { .. })
        })
        .await;
    let finished = events.wait_for("the attempt's end", attempt_finished).await;
    let rung = |event: Event| match event {
        Event::RecovererFinished {
            recoverer,
            result,
            attempt,
            ..
        } => (recoverer, result.succeeded(), attempt),
        other => panic!("{other:?}"),
    };
    assert_eq!(rung(first), ("gentle".to_owned(), false, 1));
    assert_eq!(rung(second), ("firm".to_owned(), true, 1));
    assert!(matches!(
        finished,
        Event::AttemptFinished {
            recovered: true,
            ..
        }
    ));
    healing.stop().await;
}

#[tokio::test]
async fn a_paused_target_is_checked_but_not_recovered_until_it_is_resumed() {
    let (pid, restart) = (Script::new(Observation::ok("running")), Recorder::default());
    let mut healing = heal(&web(""), scripted(&pid, &restart)).await;
    healing.events.checks("web", 1).await;
    let handle = healing.engine.handle();
    let now = Wall::now();
    let pause = Pause {
        until: now + std::time::Duration::from_secs(3600),
        reason: "deploy".to_owned(),
        since: now,
    };
    handle.pause("web", pause.clone()).expect("web runs");
    assert_eq!(healing.board.target("web").unwrap().paused, Some(pause));
    pid.always(Observation::critical("no process"));
    let event = healing
        .events
        .wait_for("the recovery paused", |e| {
            matches!(e, Event::RecoveryPaused { .. })
        })
        .await;
    let Event::RecoveryPaused { kind, reason, .. } = event else {
        unreachable!()
    };
    assert_eq!((kind.as_str(), reason.as_str()), ("pid.critical", "deploy"));
    healing.events.checks("web", 3).await;
    assert_eq!(healing.events.count(attempt), 0);
    assert_eq!(
        healing
            .events
            .count(|e| matches!(e, Event::RecoveryPaused { .. })),
        1,
        "said once per pause"
    );
    assert!(restart.calls().is_empty());
    assert!(handle.resume("web").expect("web runs"), "it was paused");
    healing
        .events
        .wait_for("the resumption", |e| {
            matches!(e, Event::TargetResumed { .. })
        })
        .await;
    healing.events.wait_for("an attempt", attempt).await;
    healing.events.wait_for("its end", attempt_finished).await;
    assert_eq!(restart.calls()[0].attempt, 1);
    healing.stop().await;
}

#[tokio::test]
async fn a_second_check_seeing_the_same_failure_waits_for_the_first_ones_recovery() {
    let service = Arc::new(Service {
        up: AtomicBool::new(false),
        restarts: AtomicU32::new(0),
        heals_on: 2,
    });
    let package = Memory::new("service")
        .monitor_as("pid", &Probe(Arc::clone(&service)))
        .monitor_as("port", &Probe(Arc::clone(&service)))
        .recoverer_as("restart", &Restart(Arc::clone(&service)));
    // The backoff outlasts the grace: the verification sees both checks
    // fail before the second attempt is due.
    let targets = "[[target]]\nname = \"web\"\nbackoff = \"500ms\"\nbackoff_max = \"500ms\"\n[[target.monitor]]\nplugin = \"pid\"\n[[target.monitor]]\nplugin = \"port\"\n\n[[target.recover]]\nplugin = \"restart\"\n";
    let mut healing = heal(targets, package).await;
    let events = &mut healing.events;
    for kind in ["pid.critical", "port.critical"] {
        events
            .wait_for("both checks' issues", |e| resolved(e, kind))
            .await;
    }
    let seen = events.seen();
    for kind in ["pid.critical", "port.critical"] {
        assert_eq!(seen.iter().filter(|e| opened(e, kind)).count(), 1, "{kind}");
    }
    let attempted: Vec<&str> = seen
        .iter()
        .filter_map(|e| match e {
            Event::AttemptStarted { issue, .. } => Some(issue.kind.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(attempted.len(), 2, "{attempted:?}");
    assert_eq!(attempted[0], attempted[1], "one issue recovered, for both");
    assert_eq!(service.restarts.load(Ordering::SeqCst), 2);
    healing.stop().await;
}

#[tokio::test]
async fn a_dependent_is_not_recovered_while_its_dependency_is_down() {
    let (mut healing, db, _app, restart) = db_and_app("depends_on = [\"db\"]", "").await;
    healing
        .events
        .wait_for("the recovery held", |e| {
            matches!(e, Event::RecoveryHeld { target, dependency, reason, .. }
                if target == "app" && dependency == "db" && reason == "has an open issue")
        })
        .await;
    healing.settled("app").await;
    let view = healing.board.target("app").expect("on the board");
    assert_eq!(view.held[0].dependency, "db", "{view:?}");
    assert!(restart.calls().is_empty());
    db.always(Observation::ok("accepting connections"));
    healing
        .events
        .wait_for("the dependency healed", |e| {
            resolved(e, "db-check.critical")
        })
        .await;
    healing.events.wait_for("an attempt", attempt).await;
    healing.events.wait_for("its end", attempt_finished).await;
    assert_eq!(restart.calls()[0].target, "app");
    healing.stop().await;
}

#[tokio::test]
async fn an_operator_reset_gives_an_escalated_issue_its_attempts_back() {
    let (pid, restart) = (
        Script::new(Observation::critical("no process")),
        Recorder::default(),
    );
    let mut healing = heal(&web("max_attempts = 1"), scripted(&pid, &restart)).await;
    healing
        .events
        .wait_for("the escalation", |e| escalated(e, "pid.critical"))
        .await;
    let handle = healing.engine.handle();
    let reset = handle
        .reset("web", None, WITHIN)
        .await
        .expect("an escalated issue to reset");
    assert_eq!(reset.len(), 1);
    assert_eq!((reset[0].attempts, reset[0].state), (0, State::Open));
    healing
        .events
        .wait_for("the reset", |e| {
            matches!(e, Event::IssueResetByOperator { .. })
        })
        .await;
    let again = healing.events.wait_for("a new attempt", attempt).await;
    let Event::AttemptStarted { issue, .. } = again else {
        unreachable!()
    };
    assert_eq!(issue.attempts, 1, "attempts start over");
    healing.events.wait_for("its end", attempt_finished).await;
    assert_eq!(restart.calls().len(), 2);
    let nothing = handle
        .reset("web", Some("http.down".to_owned()), WITHIN)
        .await;
    assert!(
        matches!(nothing, Err(super::Refusal::NothingToDo(_))),
        "{nothing:?}"
    );
    healing.stop().await;
}

#[tokio::test]
async fn once_checks_every_target_and_recovers_only_when_asked() {
    let (pid, db, restart) = (
        Script::new(Observation::critical("no process")),
        Script::new(Observation::ok("accepting connections")),
        Recorder::default(),
    );
    let targets = format!(
        "{}\n[[target]]\nname = \"db\"\n[target.monitor]\nplugin = \"db-check\"\n",
        web("")
    );
    let config = config(&targets);
    let catalog = memory::catalog([scripted(&pid, &restart)
        .monitor_as("db-check", &db)
        .package()]);
    let (events, _witness) = Witness::stream();
    for recover in [false, true] {
        let runners = build(&config, &catalog, HashMap::new(), HashMap::new())
            .await
            .expect("instances");
        let mut results = once(runners, recover, 10, events.clone()).await;
        results.sort_by(|a, b| a.target.cmp(&b.target));
        let shown: Vec<(&str, Status, &[String])> = results
            .iter()
            .map(|looked| {
                (
                    looked.target.as_str(),
                    looked.seen.status,
                    looked.kinds.as_slice(),
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                ("db", Status::Ok, &[][..]),
                ("web", Status::Critical, &["pid.critical".to_owned()][..])
            ]
        );
        assert_eq!(restart.calls().len(), usize::from(recover), "{recover}");
    }
}

#[tokio::test]
async fn a_held_recovery_cites_the_fact_it_rests_on_and_healer_publishes_each_targets_health() {
    let (mut healing, db, _app, _restart) = db_and_app("depends_on = [\"db\"]", "").await;
    healing
        .events
        .wait_for("db known to be unhealthy", |e| {
            matches!(e, Event::FactChanged { fact, .. }
                if fact.name() == "target.db.healthy"
                    && fact.value == crate::facts::Value::Bool(false)
                    && fact.source.writer == "healer")
        })
        .await;
    let held = healing
        .events
        .wait_for("the recovery held, citing the fact", |e| {
            matches!(e, Event::RecoveryHeld { target, evidence: Some(_), .. } if target == "app")
        })
        .await;
    let Event::RecoveryHeld {
        evidence: Some(evidence),
        ..
    } = held
    else {
        unreachable!("matched above");
    };
    assert!(
        evidence.starts_with("target.db.healthy = false from healer, ")
            && evidence.ends_with(" s old"),
        "{evidence}"
    );
    let handle = healing.engine.handle();
    let about_db = handle.facts(Some("target.db"));
    let names: Vec<String> = about_db.iter().map(crate::facts::Fact::name).collect();
    assert!(names.contains(&"target.db.healthy".to_owned()), "{names:?}");
    assert!(names.contains(&"target.db.since".to_owned()), "{names:?}");
    db.always(Observation::ok("accepting connections"));
    healing
        .events
        .wait_for("db known to be healthy again", |e| {
            matches!(e, Event::FactChanged { fact, was: Some(crate::facts::Value::Bool(false)) }
                if fact.name() == "target.db.healthy")
        })
        .await;
    healing.events.wait_for("app's attempt", attempt).await;
    healing.stop().await;
}

#[tokio::test]
async fn a_recoverer_gated_on_another_targets_fact_waits_for_it_and_acts_once_it_holds() {
    let (mut healing, db, _app, restart) =
        db_and_app("", "when = [\"target.db.healthy == true\"]").await;
    let gated = healing
        .events
        .wait_for(
            "app's recovery gated on the fact",
            |e| matches!(e, Event::RecoveryGated { target, .. } if target == "app"),
        )
        .await;
    let Event::RecoveryGated {
        recoverer,
        gate,
        evidence,
        ..
    } = gated
    else {
        unreachable!("matched above");
    };
    assert_eq!(
        (recoverer.as_str(), gate.as_str()),
        ("restart", "when target.db.healthy == true")
    );
    // Before db's first step its health is not known: that holds too,
    // never read as false.
    assert!(
        evidence == "target.db.healthy is not known"
            || evidence.starts_with("target.db.healthy = false from healer, "),
        "{evidence}"
    );
    assert!(restart.calls().is_empty(), "no attempt while gated");
    db.always(Observation::ok("accepting connections"));
    healing.events.wait_for("app's attempt", attempt).await;
    healing.events.wait_for("its end", attempt_finished).await;
    assert_eq!(restart.calls()[0].target, "app");
    healing.stop().await;
}

#[tokio::test]
async fn a_monitors_facts_are_kept_until_its_check_cannot_tell_and_a_foreign_key_is_dropped_once() {
    let pid = Script::new(
        Observation::ok("running")
            .fact("pid.pid", 42)
            .fact("pid.started", "10:00")
            .fact("process.pid", 1),
    );
    let restart = Recorder::default();
    let mut healing = heal(&web(""), scripted(&pid, &restart)).await;
    let changed = healing
        .events
        .wait_for(
            "the monitor's fact",
            |e| matches!(e, Event::FactChanged { fact, .. } if fact.name() == "target.web.pid.pid"),
        )
        .await;
    let Event::FactChanged { fact, was: None } = changed else {
        panic!("{changed:?}");
    };
    assert_eq!(fact.value, crate::facts::Value::Number(42.0));
    assert_eq!(fact.source.writer, "pid");
    assert_eq!(fact.source.version.as_deref(), Some("0.0.0"));
    assert!(fact.expires_at.is_some(), "twice the interval");
    let dropped = healing
        .events
        .wait_for("the foreign key dropped", |e| {
            matches!(e, Event::FactsDropped { .. })
        })
        .await;
    let Event::FactsDropped {
        writer,
        dropped,
        reason,
        ..
    } = dropped
    else {
        unreachable!("matched above");
    };
    assert_eq!((writer.as_str(), dropped), ("pid", 1));
    assert!(
        reason.contains("pid writes only its own keys (pid.*)"),
        "{reason}"
    );
    let handle = healing.engine.handle();
    let names: Vec<String> = handle
        .facts(Some("target.web"))
        .iter()
        .map(crate::facts::Fact::name)
        .collect();
    assert!(
        names.contains(&"target.web.pid.started".to_owned()),
        "{names:?}"
    );
    assert!(
        !names.contains(&"target.web.process.pid".to_owned()),
        "{names:?}"
    );
    pid.always(Observation::unknown("cannot read the pidfile"));
    let retracted = healing
        .events
        .wait_for("the facts taken back", |e| {
            matches!(e, Event::FactRetracted { fact, .. } if fact.name() == "target.web.pid.pid")
        })
        .await;
    assert!(matches!(
        retracted,
        Event::FactRetracted {
            why: crate::facts::Retraction::Unknown,
            ..
        }
    ));
    assert_eq!(
        healing
            .events
            .count(|e| matches!(e, Event::FactsDropped { .. })),
        1,
        "said once, not per check"
    );
    healing.stop().await;
}

#[tokio::test]
async fn a_fact_its_monitor_stops_writing_expires_after_twice_the_interval_with_an_event() {
    let pid = Script::new(Observation::ok("running").fact("pid.pid", 42));
    let restart = Recorder::default();
    let mut healing = heal(&web(""), scripted(&pid, &restart)).await;
    healing
        .events
        .wait_for(
            "the fact",
            |e| matches!(e, Event::FactChanged { fact, .. } if fact.name() == "target.web.pid.pid"),
        )
        .await;
    pid.always(Observation::ok("running"));
    healing
        .events
        .wait_for(
            "the fact expired",
            |e| matches!(e, Event::FactExpired { fact } if fact.name() == "target.web.pid.pid"),
        )
        .await;
    assert!(healing
        .engine
        .handle()
        .facts(Some("target.web"))
        .iter()
        .all(|f| f.key != "pid.pid"));
    healing.stop().await;
}

/// Finds `upstream.db_down` on its target while the fact it is granted
/// says db is down; finds nothing when it is not given that fact.
struct Upstream;

impl Diagnoser for Upstream {
    type Config = Value;
    const NAME: &'static str = "upstream";
    const DESCRIPTION: &'static str = "reads target.db.healthy";
    const BLOCKS: bool = false;

    fn new(_: Value) -> Result<Self, Error> {
        Ok(Upstream)
    }

    fn diagnose(&mut self, latest: &Observation, _: &[Observation]) -> Vec<Finding> {
        match latest.read_fact("target.db.healthy") {
            Some((healthy, _age)) if healthy == &Value::Bool(false) => vec![Finding::new(
                "upstream.db_down",
                Status::Warning,
                "db, which this target needs, is down",
            )],
            _ => Vec::new(),
        }
    }
}

#[tokio::test]
async fn a_diagnoser_reads_another_targets_fact_only_when_its_reads_grant_it() {
    let (db, app) = (
        Script::new(Observation::critical("refused")),
        Script::new(Observation::ok("serving")),
    );
    let targets = "[[target]]\nname = \"db\"\n[target.monitor]\nplugin = \"db-check\"\n\n\
                   [[target]]\nname = \"app\"\n[target.monitor]\nplugin = \"app-check\"\n\
                   [[target.monitor.diagnose]]\nplugin = \"upstream\"\nreads = [\"target.db.*\"]\n\n\
                   [[target]]\nname = \"other\"\n[target.monitor]\nplugin = \"app-check\"\n\
                   [[target.monitor.diagnose]]\nplugin = \"upstream\"\n";
    let package = Memory::new("test")
        .monitor_as("db-check", &db)
        .monitor_as("app-check", &app)
        .diagnoser::<Upstream>();
    let mut healing = heal(targets, package).await;
    healing
        .events
        .wait_for("app's diagnoser read db's fact", |e| {
            matches!(e, Event::IssueOpened { target, issue } if target == "app" && issue.kind == "upstream.db_down")
        })
        .await;
    healing.settled("other").await;
    let other = healing.board.target("other").expect("on the board");
    assert!(other.issues.is_empty(), "not granted, not read: {other:?}");
    healing.stop().await;
}

/// A monitor each of whose checks waits for the observation the test
/// sends it: the test decides when a check answers.
#[derive(Clone)]
struct Relay {
    answers: Arc<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<Observation>>>,
    started: Arc<AtomicU32>,
}

impl Monitor for Relay {
    type Config = Value;
    const NAME: &'static str = "relay";
    const DESCRIPTION: &'static str = "answers what the test sends it, when it sends it";

    fn new(_: Value) -> Result<Self, Error> {
        Err("a relay answers for the test".into())
    }

    async fn check(&mut self) -> Result<Observation, Error> {
        self.started.fetch_add(1, Ordering::SeqCst);
        let answer = self.answers.lock().await.recv().await;
        answer.ok_or_else(|| "the test ended".into())
    }
}

fn said(event: &Event) -> Option<&crate::facts::Value> {
    match event {
        Event::FactChanged { fact, .. } if fact.name() == "target.web.pid.said" => {
            Some(&fact.value)
        }
        _ => None,
    }
}

#[tokio::test]
async fn a_workers_end_takes_back_its_facts_at_once_and_its_last_answer_is_not_published() {
    let (send, answers) = tokio::sync::mpsc::unbounded_channel();
    let relay = Relay {
        answers: Arc::new(tokio::sync::Mutex::new(answers)),
        started: Arc::new(AtomicU32::new(0)),
    };
    let restart = Recorder::default();
    let package = Memory::new("test")
        .monitor_as("pid", &relay)
        .recoverer_as("restart", &restart);
    let mut healing = heal(&web(""), package).await;
    let text = |said: &str| crate::facts::Value::Text(said.to_owned());
    let answer = |said: &str| Observation::ok("running").fact("pid.said", said);
    send.send(answer("first")).unwrap();
    healing
        .events
        .wait_for("the fact", |e| said(e) == Some(&text("first")))
        .await;
    // The next check is in flight when the worker ends.
    tokio::time::timeout(WITHIN, async {
        while relay.started.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("a second check starts");
    (healing.engine.when_worker_ends())("libtest.so");
    let retracted = healing
        .events
        .wait_for("the fact taken back", |e| {
            matches!(e, Event::FactRetracted { fact, .. } if fact.name() == "target.web.pid.said")
        })
        .await;
    assert!(
        matches!(
            retracted,
            Event::FactRetracted {
                why: crate::facts::Retraction::WorkerEnded,
                ..
            }
        ),
        "{retracted:?}"
    );
    assert!(healing
        .engine
        .handle()
        .facts(Some("target.web"))
        .iter()
        .all(|f| f.key != "pid.said"));
    // The check in flight answers from the worker that ended; the next
    // from its successor.
    send.send(answer("stale")).unwrap();
    send.send(answer("fresh")).unwrap();
    let written = healing
        .events
        .wait_for("the fact written again", |e| said(e).is_some())
        .await;
    assert_eq!(said(&written), Some(&text("fresh")), "{written:?}");
    assert!(
        matches!(written, Event::FactChanged { was: None, .. }),
        "{written:?}"
    );
    assert_eq!(healing.events.count(|e| said(e) == Some(&text("stale"))), 0);
    drop(send);
    healing.stop().await;
}
