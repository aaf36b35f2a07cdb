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
//! (attempts, backoff due times, escalations, its maintenance pause), and
//! every transition goes out as an event. A reload stops, starts and
//! restarts targets one by one ([`Engine`]); a restarted target hands its
//! tracker to its successor. Operators reach the loops through a
//! [`Handle`]: pause and resume (read by the loop before it recovers) and
//! reset (a command the loop carries out between steps). Each loop writes
//! what it sees, and when it will next make progress, on the [`Board`].

mod check;
mod target;

use futures_util::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::board::Board;
use crate::clock::Wall;
use crate::config::{Config, PluginUse, Target};
use crate::events::{fact_events, Event, Events};
use crate::facts::{self, Fact, Facts, Retraction, Source, Value as FactValue};
use crate::fleet::ShardFence;
use crate::issues::{Answer, Issue, Tracker};
use crate::ledger::{self, Ledger, Outcomes};
use crate::model::Pause;
use crate::plugins::{
    Catalog, DiagnoserHandle, MonitorHandle, PluginKind, RecovererHandle, WhenWorkerEnds,
};
use healer_plugin_sdk::Duration as HumanDuration;

/// Why a pause was shortened.
pub(crate) const PAUSE_TOO_LONG: &str =
    "it ended more than 30 days from now (the clock was set back since it began)";

pub use target::{Cycle, Looked};

/// A target with its plugin instances, ready to run.
pub struct Runner {
    /// Shared with the engine's record of what runs (one copy per target).
    target: Arc<Target>,
    /// One per check of the target, in config order (the loop takes them).
    checks: Vec<CheckRunner>,
    recoverers: Vec<RecovererHandle>,
    /// Its issues as saved before a restart (or handed on by a reload).
    saved: Vec<Issue>,
    /// When the attempts of its recovery budget started, handed on by a
    /// reload (after a restart, `saved` spends it again).
    spent: Vec<Wall>,
    /// Its maintenance pause, as saved.
    pause: Option<Pause>,
    /// A fleet target's writes to etcd (its claims and open issues),
    /// fenced on the epoch its shard is owned since.
    fence: Option<ShardFence>,
}

/// One check's plugin instances.
struct CheckRunner {
    monitor: Arc<MonitorHandle>,
    diagnosers: Vec<(String, DiagnoserHandle)>,
    /// The monitor as the writer of the facts its checks publish.
    source: Source,
}

impl Runner {
    /// How many open (not resolved) issues it carries on from.
    pub fn restored_issues(&self) -> usize {
        self.saved
            .iter()
            .filter(|issue| issue.resolved_at.is_none())
            .count()
    }

    /// The target it runs.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Runs it as a fleet target of the shard owned since `fence`'s epoch,
    /// carrying on from the open issues etcd held for it.
    pub fn in_fleet(&mut self, mut fence: ShardFence, saved: Vec<crate::fleet::Saved>) {
        fence.carry_on(&saved);
        self.saved = saved.into_iter().map(|saved| saved.issue).collect();
        self.fence = Some(fence);
    }

    /// Carries on from its predecessor's tracker (a restarted target's):
    /// its issues and the recovery budget it spent (its pause stays with
    /// the engine).
    pub fn carry_on(&mut self, tracker: &Tracker) {
        self.saved = tracker.save();
        self.spent = tracker.spent();
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

/// What a target's loop is asked to do, besides its schedule.
pub(crate) enum Command {
    /// Check at once (a dependency of it just healed).
    Recheck,
    /// An operator's reset of one issue (or, with no kind, of every
    /// escalated one); the reply is the issues reset.
    Reset(Box<Reset>),
    /// An operator's answer to a proposal.
    Answer(Box<Answering>),
    /// Stop, and hand on the issues (a reload restarts or removes it).
    Stop,
}

/// An operator's reset, as a target's loop is asked it: boxed, so a
/// command is small (each target's channel holds room for 32).
pub(crate) struct Reset {
    pub kind: Option<String>,
    pub reply: oneshot::Sender<Vec<Issue>>,
}

/// An operator's answer to the proposal of one issue, as a target's loop
/// is asked it.
pub(crate) struct Answering {
    pub kind: String,
    pub answer: Answer,
    pub reply: oneshot::Sender<Result<Issue, String>>,
}

/// What targets share, and what the engine's handle reaches.
#[derive(Default)]
pub(crate) struct Shared {
    /// Every target's health; a dependent is recovered only while all its
    /// dependencies are healthy (not down, and not unchecked: at start-up
    /// the app must not be restarted before the database has been seen).
    health: RwLock<HashMap<String, Health>>,
    /// Each running target's loop.
    commands: RwLock<HashMap<String, mpsc::Sender<Command>>>,
    /// Each target's dependents.
    dependents: RwLock<HashMap<String, Vec<String>>>,
    /// Each target's maintenance pause (read by its loop before recovering).
    pauses: RwLock<HashMap<String, Pause>>,
    /// What healer and its plugins know (`facts`), shared by every target.
    facts: Mutex<Facts>,
    /// What each recoverer's attempts came to.
    ledger: Mutex<Ledger>,
}

impl Shared {
    /// The facts, locked.
    pub(crate) fn facts(&self) -> MutexGuard<'_, Facts> {
        self.facts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The ledger of outcomes, locked.
    pub(crate) fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a target's health; returns whether it just became healthy.
    pub(crate) fn set_health(&self, target: &str, down: bool) -> bool {
        let mut health = write(&self.health);
        let now = if down { Health::Down } else { Health::Healthy };
        let before = health.insert(target.to_owned(), now);
        now == Health::Healthy && before != Some(Health::Healthy)
    }

    /// The first of `targets` that is not healthy, and how it stands.
    pub(crate) fn first_unhealthy<'a>(&self, targets: &'a [String]) -> Option<(&'a str, Health)> {
        let health = read(&self.health);
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
        let dependents = read(&self.dependents);
        let commands = read(&self.commands);
        for dependent in dependents.get(target).into_iter().flatten() {
            if let Some(sender) = commands.get(dependent) {
                let _ = sender.try_send(Command::Recheck);
            }
        }
    }

    /// The pause of a target, while it holds.
    pub(crate) fn pause_of(&self, target: &str) -> Option<Pause> {
        read(&self.pauses).get(target).cloned()
    }

    /// Ends a pause that expired (its loop says so); `false` when it was
    /// ended already or replaced by a newer one.
    /// Replaces `target`'s pause by `shorter` if it is still `pause`.
    pub(crate) fn shorten_pause(&self, target: &str, pause: &Pause, shorter: Pause) -> bool {
        let mut pauses = write(&self.pauses);
        match pauses.get_mut(target) {
            Some(now) if now == pause => {
                *now = shorter;
                true
            }
            _ => false,
        }
    }

    pub(crate) fn end_pause(&self, target: &str, pause: &Pause) -> bool {
        let mut pauses = write(&self.pauses);
        if pauses.get(target) == Some(pause) {
            pauses.remove(target);
            true
        } else {
            false
        }
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poison| poison.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|poison| poison.into_inner())
}

/// Creates the plugin instances of every enabled target, each with the
/// issues saved for it. Every failure is reported, naming the target and
/// plugin.
pub async fn build(
    config: &Config,
    catalog: &Catalog,
    saved: HashMap<String, Vec<Issue>>,
    pauses: HashMap<String, Pause>,
) -> Result<Vec<Runner>, Vec<String>> {
    build_some(config, catalog, saved, pauses, |_| true).await
}

/// [`build`] of the enabled targets `which` picks (`healer run` builds
/// its local targets at start, a fleet target when its shard is taken).
pub async fn build_some(
    config: &Config,
    catalog: &Catalog,
    mut saved: HashMap<String, Vec<Issue>>,
    mut pauses: HashMap<String, Pause>,
    which: impl Fn(&Target) -> bool,
) -> Result<Vec<Runner>, Vec<String>> {
    let mut runners = Vec::new();
    let mut errors = Vec::new();
    // Concurrently: a worker gets the creations in batches.
    let enabled: Vec<&Target> = config
        .targets
        .iter()
        .filter(|t| t.enabled && which(t))
        .collect();
    let built: Vec<_> =
        futures_util::stream::iter(enabled.iter().map(|t| build_target(t, catalog)))
            .buffered(crate::plugins::CHECKS_IN_FLIGHT)
            .collect()
            .await;
    for (target, built) in enabled.into_iter().zip(built) {
        match built {
            Ok(mut runner) => {
                runner.saved = saved.remove(&target.name).unwrap_or_default();
                runner.pause = pauses.remove(&target.name);
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

/// Creates one target's plugin instances; an error names the target and
/// plugin.
pub async fn build_target(target: &Target, catalog: &Catalog) -> Result<Runner, String> {
    let fail = |plugin: &PluginUse, err: String| {
        format!(
            "target {:?}: cannot create {} {:?}: {err}",
            target.name, plugin.kind, plugin.plugin
        )
    };
    let package = |plugin: &PluginUse| {
        let found = catalog
            .find(plugin.kind, &plugin.plugin)
            .map(|p| p.for_target(&target.name));
        found.ok_or_else(|| {
            fail(
                plugin,
                format!(
                    "no loaded package exports it (in {})",
                    catalog.dir.display()
                ),
            )
        })
    };
    let mut checks = Vec::new();
    for check in &target.checks {
        let monitor_package = package(&check.monitor)?;
        let source = Source {
            writer: check.monitor.plugin.clone(),
            package: monitor_package
                .file
                .file_name()
                .map(|name| name.to_string_lossy().into_owned()),
            version: Some(monitor_package.version.clone()),
        };
        let monitor = monitor_package
            .new_monitor(&check.monitor.plugin, &check.monitor.config)
            .await
            .map_err(|err| fail(&check.monitor, err))?;
        let mut diagnosers = Vec::new();
        for plugin in &check.diagnosers {
            let diagnoser = package(plugin)?
                .new_diagnoser(&plugin.plugin, &plugin.config)
                .await
                .map_err(|e| fail(plugin, e))?;
            diagnosers.push((plugin.plugin.clone(), diagnoser));
        }
        checks.push(CheckRunner {
            monitor: Arc::new(monitor),
            diagnosers,
            source,
        });
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
        target: Arc::new(target.clone()),
        checks,
        recoverers,
        saved: Vec::new(),
        spent: Vec::new(),
        pause: None,
        fence: None,
    })
}

/// How the engine runs its targets.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Recoveries at once, host-wide.
    pub max_concurrent_recoveries: usize,
    /// Observations kept per target for diagnosers.
    pub history: usize,
}

/// A target's loop, running.
struct Running {
    target: Arc<Target>,
    commands: mpsc::Sender<Command>,
    task: JoinHandle<Tracker>,
}

/// Says when healer's checks fall behind their schedules, and when they
/// catch up (see [`crate::board::Lateness`]), until shut down.
async fn say_lateness(board: Arc<Board>, events: Events, mut shutdown: watch::Receiver<bool>) {
    use crate::board::{Keeping, LATE_WINDOW};
    loop {
        tokio::select! {
            _ = tokio::time::sleep(LATE_WINDOW) => {}
            _ = shutdown.changed() => return,
        }
        match board.lateness.close_window() {
            Some(Keeping::FellBehind(window)) => events.emit(Event::ChecksBehind {
                checks: window.checks,
                late: window.late,
                latest_ms: window.latest_ms,
                window: HumanDuration(LATE_WINDOW),
            }),
            Some(Keeping::CaughtUp(window)) => events.emit(Event::ChecksCaughtUp {
                checks: window.checks,
                late: window.late,
                window: HumanDuration(LATE_WINDOW),
            }),
            None => {}
        }
    }
}

/// The running targets: started, stopped and restarted one by one (a
/// reload), each as its own task, until shut down.
pub struct Engine {
    shared: Arc<Shared>,
    limiter: Arc<Semaphore>,
    settings: Settings,
    events: Events,
    board: Arc<Board>,
    shutdown: watch::Receiver<bool>,
    running: BTreeMap<String, Running>,
}

impl Engine {
    /// An engine with no targets yet.
    pub fn new(
        settings: Settings,
        events: Events,
        board: Arc<Board>,
        shutdown: watch::Receiver<bool>,
    ) -> Engine {
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(say_lateness(
                Arc::clone(&board),
                events.clone(),
                shutdown.clone(),
            ));
        }
        Engine {
            shared: Arc::new(Shared::default()),
            limiter: Arc::new(Semaphore::new(settings.max_concurrent_recoveries)),
            settings,
            events,
            board,
            shutdown,
            running: BTreeMap::new(),
        }
    }

    /// What the API reaches: pause, resume, reset.
    pub fn handle(&self) -> Handle {
        Handle {
            shared: Arc::clone(&self.shared),
            events: self.events.clone(),
            board: Arc::clone(&self.board),
        }
    }

    /// The targets running.
    pub fn targets(&self) -> impl Iterator<Item = &Target> {
        self.running.values().map(|running| &*running.target)
    }

    /// Starts a target's loop (a target of that name must not be running).
    pub fn start(&mut self, mut runner: Runner) {
        let name = runner.target.name.clone();
        let (sender, inbox) = mpsc::channel(16);
        let running = {
            let mut commands = write(&self.shared.commands);
            commands.insert(name.clone(), sender.clone());
            commands.len()
        };
        self.make_room_for_facts(running);
        // Unchecked until its own first check (not its predecessor's
        // verdict): dependents wait for it.
        write(&self.shared.health).remove(&name);
        // A saved pause applies (its end within MAX_PAUSE of now); a
        // restarted target keeps the one it had.
        if let Some(mut pause) = runner.pause.take() {
            if let Some(shorter) = pause.shortened(Wall::now()) {
                pause = shorter;
                self.events.emit(Event::PauseShortened {
                    target: name.clone(),
                    pause: pause.clone(),
                    reason: PAUSE_TOO_LONG.to_owned(),
                });
            }
            write(&self.shared.pauses).insert(name.clone(), pause);
        }
        let first_by = runner
            .target
            .checks
            .iter()
            .map(|check| Duration::from(check.interval) + Duration::from(check.deadline))
            .max()
            .unwrap_or_default();
        let target = Arc::clone(&runner.target);
        let cycle = Cycle::new(
            runner,
            Arc::clone(&self.shared),
            Arc::clone(&self.limiter),
            self.events.clone(),
            self.settings.history,
        );
        let slot = self
            .board
            .enter(cycle.view(), std::time::Instant::now() + first_by);
        let run = Box::new(cycle).run(inbox, self.shutdown.clone(), slot);
        let task = tokio::spawn(run);
        self.running.insert(
            name,
            Running {
                target,
                commands: sender,
                task,
            },
        );
        self.link_dependents();
    }

    /// Stops a target's loop (after the step it is in, if any) to start
    /// it again: its tracker, to hand its issues on; its pause and its
    /// place on the board stay. `None` when it was not running.
    pub async fn stop(&mut self, name: &str) -> Option<Tracker> {
        let running = self.running.remove(name)?;
        let left = {
            let mut commands = write(&self.shared.commands);
            commands.remove(name);
            commands.len()
        };
        self.make_room_for_facts(left);
        self.link_dependents();
        let _ = running.commands.send(Command::Stop).await;
        let tracker = running.task.await.ok();
        // After the loop's last step, which may have set it.
        write(&self.shared.health).remove(name);
        tracker
    }

    /// Stops a target for good (a reload removed it, or its monitor
    /// changed): its open issues are dropped (an event each, so the store
    /// and the alert sinks let go of them), its pause ends, and it leaves
    /// the board.
    pub async fn remove(&mut self, name: &str, reason: &str) {
        let tracker = self.stop(name).await;
        self.drop_issues(name, tracker, reason);
        self.leave(name);
        if write(&self.shared.pauses).remove(name).is_some() {
            self.events.emit(Event::TargetResumed {
                target: name.to_owned(),
                reason: format!("the pause ended: {reason}"),
            });
        }
    }

    /// Stops a fleet target whose shard this member no longer owns: its
    /// open issues live on in etcd for the next owner (no event drops
    /// them), it leaves the board, and its facts are taken back.
    pub async fn hand_over(&mut self, name: &str, member: &str) {
        if self.stop(name).await.is_none() {
            return;
        }
        self.events.emit(Event::FleetTargetHandedOver {
            member: member.to_owned(),
            target: name.to_owned(),
        });
        self.leave(name);
    }

    /// A stopped target leaves the board, and its facts are taken back.
    fn leave(&mut self, name: &str) {
        self.board.leave(name);
        let gone =
            self.shared
                .facts()
                .retract(&format!("target.{name}"), None, Retraction::TargetRemoved);
        for event in fact_events(gone) {
            self.events.emit(event);
        }
    }

    /// Whether a target of this name is running.
    pub fn runs(&self, name: &str) -> bool {
        self.running.contains_key(name)
    }

    /// Drops the open issues of a tracker nobody carries on from.
    pub fn drop_issues(&self, name: &str, tracker: Option<Tracker>, reason: &str) {
        for issue in tracker.iter().flat_map(Tracker::issues) {
            self.events.emit(Event::IssueDropped {
                target: name.to_owned(),
                issue: issue.clone(),
                reason: reason.to_owned(),
            });
        }
    }

    /// Waits for every loop to end (after shutdown).
    pub async fn wait(self) {
        for (_, running) in self.running {
            let _ = running.task.await;
        }
    }

    fn link_dependents(&self) {
        let mut dependents: HashMap<String, Vec<String>> = HashMap::new();
        for running in self.running.values() {
            for dependency in &running.target.depends_on {
                dependents
                    .entry(dependency.clone())
                    .or_default()
                    .push(running.target.name.clone());
            }
            // A recoverer gated on another target's facts waits for it as
            // a dependent does: it is checked again when that one heals.
            let gates = running
                .target
                .recoverers
                .iter()
                .flat_map(|r| r.when.iter().chain(&r.unless));
            for gate in gates {
                // The longest name that fits: `target.api.v2.healthy` is
                // about `api.v2`, not `api`.
                let about = self
                    .running
                    .keys()
                    .filter(|name| {
                        gate.fact
                            .strip_prefix("target.")
                            .and_then(|rest| rest.strip_prefix(name.as_str()))
                            .is_some_and(|rest| rest.starts_with('.'))
                    })
                    .max_by_key(|name| name.len());
                if let Some(about) = about.filter(|about| **about != running.target.name) {
                    let waiting = dependents.entry(about.clone()).or_default();
                    if !waiting.contains(&running.target.name) {
                        waiting.push(running.target.name.clone());
                    }
                }
            }
        }
        *write(&self.shared.dependents) = dependents;
    }
}

/// Why an operator's command was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No running target has this name.
    #[error("no target named {0:?} is running (see `healer status`)")]
    NoSuchTarget(String),
    /// Nothing matched.
    #[error("{0}")]
    NothingToDo(String),
    /// The loop did not answer in time (a long check or recovery); the
    /// command is applied when it ends.
    #[error("target {0:?} is busy (a check or recovery is running); the command is applied when it ends")]
    Busy(String),
    /// The loop has too many commands waiting: this one was not taken.
    #[error("target {0:?} has too many commands waiting; nothing was done, try again")]
    Crowded(String),
}

/// The engine as the API reaches it: pause, resume and reset, each a
/// command to one target's loop (or the pause it reads), and an event.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
    events: Events,
    board: Arc<Board>,
}

/// How often facts whose time ran out are swept (and said).
pub const FACT_SWEEP: Duration = Duration::from_secs(1);

impl Engine {
    /// Sweeps the facts whose time ran out every [`FACT_SWEEP`], an event
    /// each (`fact_expired`), until `shutdown`: a fact past its expiry is
    /// never read meanwhile, this only says it went.
    pub fn sweeping_facts(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (shared, events) = (Arc::clone(&self.shared), self.events.clone());
        let mut shutdown = self.shutdown.clone();
        async move {
            let mut every = tokio::time::interval(FACT_SWEEP);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = every.tick() => {
                        let gone = shared.facts().expire(Wall::now());
                        for event in fact_events(gone) {
                            events.emit(event);
                        }
                    }
                    changed = shutdown.changed() => if changed.is_err() || *shutdown.borrow() { return },
                }
            }
        }
    }

    /// What the plugins call when a worker that served a package ended
    /// (crashed, or its package quarantined): every fact the package's
    /// plugins published is taken back at once, an event each
    /// (`fact_retracted`, `worker_ended`), and what that worker answered
    /// before it ended is not published after. Its plugins write their
    /// facts again on their next good check, from the next worker.
    pub fn when_worker_ends(&self) -> WhenWorkerEnds {
        let (shared, events) = (Arc::clone(&self.shared), self.events.clone());
        Arc::new(move |package: &str| {
            let gone = shared.facts().worker_ended(package);
            for event in fact_events(gone) {
                events.emit(event);
            }
        })
    }

    /// Keeps room in the facts for `targets` (their own and their
    /// plugins'); called before the saved facts are restored, and as
    /// targets start and stop.
    pub fn make_room_for_facts(&self, targets: usize) {
        self.shared.facts().make_room_for(targets);
    }

    /// Carries on from the facts saved before a restart: those not expired
    /// are kept, marked as from the previous run until written again.
    /// Returns how many.
    pub fn restore_facts(&self, saved: Vec<Fact>) -> usize {
        self.shared.facts().restore(saved, Wall::now())
    }

    /// Carries on from the ledger saved before a restart.
    pub fn restore_outcomes(&self, saved: Vec<(ledger::Key, Outcomes)>) -> usize {
        self.shared.ledger().restore(saved)
    }
}

impl Handle {
    /// How many facts healer holds now.
    pub fn facts_held(&self) -> usize {
        self.shared.facts().len()
    }

    /// The facts that hold now, by name; those about `subject` only when
    /// given.
    pub fn facts(&self, subject: Option<&str>) -> Vec<Fact> {
        self.shared.facts().all(subject, Wall::now())
    }

    /// An operator's note (`healer fact set`): `name` is
    /// `SUBJECT.note.KEY`, kept `ttl` (at most
    /// [`facts::NOTE_FOR_AT_MOST`]). The note as held; `Err` says why not.
    pub fn set_note(&self, name: &str, value: FactValue, ttl: Duration) -> Result<Fact, String> {
        let (subject, key) = facts::note_name(name)?;
        if ttl.is_zero() || ttl > facts::NOTE_FOR_AT_MOST {
            return Err("a note lives longer than zero and at most 30 days".to_owned());
        }
        let now = Wall::now();
        let source = Source {
            writer: facts::OPERATOR.to_owned(),
            package: None,
            version: None,
        };
        let (changes, held) = {
            let mut facts = self.shared.facts();
            let published = facts.publish(&subject, &source, vec![(key, value)], Some(ttl), now);
            if let Some((_, why)) = published.dropped {
                return Err(format!("the note was not kept: {why}"));
            }
            (published.changes, facts.read(name, now).cloned())
        };
        for event in fact_events(changes) {
            self.events.emit(event);
        }
        held.ok_or_else(|| format!("the note {name:?} was not kept"))
    }

    /// Takes back an operator's note (`healer fact unset`); only notes
    /// may be.
    pub fn unset_note(&self, name: &str) -> Result<(), String> {
        facts::note_name(name)?;
        let gone = {
            let mut facts = self.shared.facts();
            match facts.read(name, Wall::now()) {
                None => return Err(format!("no note {name:?} is held")),
                Some(fact) if fact.source.writer != facts::OPERATOR => {
                    return Err(format!(
                        "{name:?} was written by {}, not an operator",
                        fact.source
                    ))
                }
                Some(_) => facts.retract_one(name, Retraction::Unset),
            }
        };
        for event in fact_events(gone.into_iter().collect()) {
            self.events.emit(event);
        }
        Ok(())
    }

    /// The ledger: what each recoverer's attempts came to.
    pub fn outcomes(&self) -> Vec<ledger::Row> {
        self.shared.ledger().rows()
    }

    /// Answers the proposal of `target`'s issue of `kind`: approved, it
    /// runs at once (after a check confirms the issue still holds);
    /// rejected, the issue is escalated. Waits for the target's loop at
    /// most `within`.
    pub async fn answer(
        &self,
        target: &str,
        kind: &str,
        answer: Answer,
        within: std::time::Duration,
    ) -> Result<Issue, Refusal> {
        let answering = |reply| {
            Command::Answer(Box::new(Answering {
                kind: kind.to_owned(),
                answer,
                reply,
            }))
        };
        match self.ask(target, answering, within).await? {
            Ok(issue) => Ok(issue),
            Err(why) => Err(Refusal::NothingToDo(format!("target {target:?}: {why}"))),
        }
    }

    /// Pauses a target's recoveries until `pause.until`; checks go on.
    pub fn pause(&self, target: &str, pause: Pause) -> Result<(), Refusal> {
        if !read(&self.shared.commands).contains_key(target) {
            return Err(Refusal::NoSuchTarget(target.to_owned()));
        }
        write(&self.shared.pauses).insert(target.to_owned(), pause.clone());
        self.board.pause(target, Some(pause.clone()));
        self.events.emit(Event::TargetPaused {
            target: target.to_owned(),
            pause,
        });
        Ok(())
    }

    /// Ends a target's pause; whether it was paused.
    pub fn resume(&self, target: &str) -> Result<bool, Refusal> {
        if !read(&self.shared.commands).contains_key(target) {
            return Err(Refusal::NoSuchTarget(target.to_owned()));
        }
        let was = write(&self.shared.pauses).remove(target).is_some();
        self.board.pause(target, None);
        if was {
            self.events.emit(Event::TargetResumed {
                target: target.to_owned(),
                reason: "resumed by an operator".to_owned(),
            });
        }
        Ok(was)
    }

    /// Resets one issue of a target (or every escalated one): it is open
    /// again with its attempts back. Waits for the target's loop at most
    /// `within`.
    pub async fn reset(
        &self,
        target: &str,
        kind: Option<String>,
        within: std::time::Duration,
    ) -> Result<Vec<Issue>, Refusal> {
        let what = kind.clone();
        let reset = |reply| Command::Reset(Box::new(Reset { kind, reply }));
        let issues = self.ask(target, reset, within).await?;
        if issues.is_empty() {
            return Err(Refusal::NothingToDo(match what {
                Some(kind) => format!("target {target:?} has no open issue of kind {kind:?}"),
                None => format!("target {target:?} has no escalated issue"),
            }));
        }
        Ok(issues)
    }

    /// Sends `target`'s loop the command `command` makes with its reply
    /// channel, and waits for the reply at most `within`: a loop with too
    /// many commands waiting did not take it, one that does not answer in
    /// time (a long check or recovery) applies it when it is free.
    async fn ask<T>(
        &self,
        target: &str,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
        within: std::time::Duration,
    ) -> Result<T, Refusal> {
        let sender = read(&self.shared.commands)
            .get(target)
            .cloned()
            .ok_or_else(|| Refusal::NoSuchTarget(target.to_owned()))?;
        let (reply, answer) = oneshot::channel();
        sender.try_send(command(reply)).map_err(|err| match err {
            mpsc::error::TrySendError::Full(_) => Refusal::Crowded(target.to_owned()),
            mpsc::error::TrySendError::Closed(_) => Refusal::NoSuchTarget(target.to_owned()),
        })?;
        match tokio::time::timeout(within, answer).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(Refusal::NoSuchTarget(target.to_owned())),
            Err(_) => Err(Refusal::Busy(target.to_owned())),
        }
    }
}

/// One check of every target, concurrently, with recovery if asked: what
/// `healer once` prints.
pub async fn once(
    runners: Vec<Runner>,
    recover: bool,
    history: usize,
    events: Events,
) -> Vec<Looked> {
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

#[cfg(test)]
mod learning_tests;
#[cfg(test)]
mod tests;
