//! `healer run`, read top to bottom as it happens, the way
//! linkerd2-proxy's `main` and `app` read: **build** (the config and
//! plugins from `loading`, the event stream and its subscribers: log, event
//! log, store, sinks, metrics, history; the state the store saved),
//! **spawn** (the engine's target loops, the intake and its listener with
//! the API, the reaper, systemd's notify and watchdog), **serve until a
//! signal** (reloads on SIGHUP or from the API), then **drain** (targets
//! stop, running workflows may end, every event is written out).
//!
//! Beside it: `signals.rs` (which signal does what), `limits.rs` (the
//! process limits healer sets for itself), `reload.rs` (a live reload),
//! `notify.rs` (systemd's protocol) and `reaper.rs` (orphans reaped).

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tracing::level_filters::LevelFilter;

use crate::api::{Api, Plugins, ReloadRequest};
use crate::board::{Board, CheckTimers};
use crate::config::Config;
use crate::engine::Engine;
use crate::event_log::EventLog;
use crate::events::{Event, Events, Subscriber};
use crate::fleet::{Change, Fleet};
use crate::history::Recent;
use crate::loading::{load_remembering, Options};
use crate::log::EventLines;
use crate::metrics::Metrics;
use crate::model::StoreHealth;
use crate::plugins::Catalog;
use crate::store::{Saved, Settings, Store};
use crate::{engine, intake};
use reload::Current;
use signals::{wait_for_stop_signal, watch_the_log, Signals, StopSignals, WhileStarting};

mod limits;
pub mod notify;
pub mod reaper;
pub mod reload;
mod signals;

/// How long a stop waits for running workflows to end.
const FINISH_WITHIN: Duration = Duration::from_secs(5);

/// A stop writes out every event that waits (the intake keeps them at
/// most `[intake] max_backlog` behind), and gives up only when nothing
/// was written for this long (a store that cannot write, a hung disk).
const STALL_LIMIT: Duration = Duration::from_secs(5);

/// `healer run`: heals until SIGTERM or SIGINT.
pub async fn run(options: &Options) -> ExitCode {
    let signals = Signals::register();
    let starting = WhileStarting::watch(signals.term, signals.int);
    // What the store remembers of each package (a quarantine) holds before
    // any plugin is asked to check its config.
    let remembered = |config: &Config| {
        if config.store.enabled {
            crate::store::remembered_plugins(&config.store_file())
        } else {
            std::collections::HashMap::new()
        }
    };
    let (config, catalog) = match load_remembering(options, remembered).await {
        Ok(loaded) => loaded,
        Err(problems) => return fail(&crate::loading::lines(&problems).join("\n")),
    };
    let logging = Arc::new(crate::log::init(&config.healer, options.verbose));
    if !config.healer.enabled {
        tracing::info!(config = %config.path.display(), "healer is disabled ([healer] enabled = false); exiting");
        return ExitCode::SUCCESS;
    }
    for error in &catalog.errors {
        tracing::warn!(file = %error.file.display(), reason = %error.reason, "plugin package not loaded");
    }
    for warning in &catalog.warnings {
        tracing::warn!(file = %warning.file.display(), reason = %warning.reason, "plugin package loaded, with a problem");
    }
    reaper::become_subreaper();
    limits::survive_file_size_limit();
    limits::raise_open_files_limit();

    let every_check =
        config.healer.event_log.is_some() || LevelFilter::current() >= LevelFilter::DEBUG;
    let (events, inbox) = Events::channel(every_check);
    catalog.report_to(&events);
    let mut subscribers: Vec<Box<dyn Subscriber>> = vec![Box::new(EventLines)];
    let mut event_log_reopen = None;
    if let Some(path) = &config.healer.event_log {
        match EventLog::open(path) {
            Ok(journal) => {
                event_log_reopen = Some(journal.reopener());
                subscribers.push(Box::new(journal));
            }
            Err(err) => tracing::error!("{err}; events go on to the log and the store"),
        }
    }
    let _state_lock = if config.store.enabled {
        match crate::store::lock_state_dir(&config.healer.state_dir) {
            Ok(lock) => Some(lock),
            Err(err) => {
                tracing::error!("{err}");
                return fail(&err);
            }
        }
    } else {
        None
    };
    let (store, saved) = if config.store.enabled {
        let file = config.store_file();
        let settings = Settings {
            // Events name the file as a person can find it from anywhere.
            file: std::path::absolute(&file).unwrap_or(file),
            keep_for: config.store.keep_events_for.into(),
            keep_events: config.store.keep_events,
            forget_anomalies_after: config
                .intake
                .as_ref()
                .map_or(config.store.keep_events_for, |intake| intake.stable_after)
                .into(),
        };
        let (store, saved) = Store::open(settings, events.clone());
        (Some(store), saved)
    } else {
        (None, Saved::default())
    };
    if let Some(store) = &store {
        subscribers.push(store.subscriber());
    }
    if let Some(alerts) = crate::sinks::Alerts::start(&config, &saved, &events) {
        subscribers.push(Box::new(alerts));
    }
    let metrics = Arc::new(Metrics::new());
    subscribers.push(Box::new(crate::metrics::EventCounter(Arc::clone(&metrics))));
    let mut saved = saved;
    for package in &catalog.packages {
        if let Some(why) = package
            .worker_health()
            .and_then(|health| health.quarantined)
        {
            tracing::warn!(package = %package.file_name(), "starts quarantined: {why}");
        }
    }
    let recent = Recent::new(std::mem::take(&mut saved.recent));
    subscribers.push(recent.subscriber());
    inbox.start(subscribers);

    tokio::spawn(watch_the_log(
        Arc::clone(&logging),
        event_log_reopen,
        signals.usr1,
    ));
    let view = View {
        metrics,
        recent,
        store: store.as_ref().map(Store::health),
    };
    let stop_signals = (starting, signals.hup);
    let code = heal(options, config, catalog, &events, saved, view, stop_signals).await;
    let waiting = events.waiting();
    if !events.finish(STALL_LIMIT) {
        tracing::error!(
            waiting,
            stalled_for = ?STALL_LIMIT,
            "stopping: the log or the store stopped writing; events that still waited are lost"
        );
    }
    code
}

/// What the operator's view reads, made before the event stream starts.
struct View {
    metrics: Arc<Metrics>,
    recent: Recent,
    store: Option<Arc<dyn StoreHealth>>,
}

async fn heal(
    options: &Options,
    config: Config,
    catalog: Catalog,
    events: &Events,
    saved: Saved,
    view: View,
    stop_signals: StopSignals,
) -> ExitCode {
    // Fleet targets start when their shards are taken (below).
    let runners =
        match engine::build_some(&config, &catalog, saved.issues, saved.pauses, |t| !t.fleet).await
        {
            Ok(runners) => runners,
            Err(errors) => {
                for error in &errors {
                    tracing::error!("{error}");
                }
                return ExitCode::FAILURE;
            }
        };
    let intake = match listening_intake(&config, &catalog, events, saved.intake, &view).await {
        Ok(intake) => intake,
        Err(errors) => {
            for error in &errors {
                tracing::error!("{error}");
            }
            return ExitCode::FAILURE;
        }
    };
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(reaper::reap_orphans(shutdown.clone()));
    if crate::memory::CAN_TRIM {
        tokio::spawn(trim_after_large_answers(shutdown.clone()));
    }
    let (reload, reloads) = tokio::sync::mpsc::channel::<ReloadRequest>(4);
    let stopping = events.clone();
    let (starting, hup) = stop_signals;
    let stop_signals = starting.hand_over().await;
    let reload_on_hup = reload.clone();
    tokio::spawn(async move {
        wait_for_stop_signal(stop_signals, hup, reload_on_hup).await;
        stopping.emit(Event::Stopping);
        let _ = stop.send(true);
    });
    let board = Board::new(Arc::clone(&view.metrics) as Arc<dyn CheckTimers>);
    let settings = engine::Settings {
        max_concurrent_recoveries: config.healer.max_concurrent_recoveries,
        history: config.healer.history,
    };
    let mut engine = Engine::new(
        settings,
        events.clone(),
        Arc::clone(&board),
        shutdown.clone(),
    );
    tokio::spawn(engine.sweeping_facts());
    let (fleet, fleet_changes) = match Fleet::start(&config, events, shutdown.clone()).await {
        Ok(Some((fleet, changes))) => (Some(fleet), Some(changes)),
        Ok(None) => (None, None),
        Err(err) => {
            tracing::error!("{err}");
            return ExitCode::FAILURE;
        }
    };
    // Every member serves the intake; the first to be sent a report acts.
    if let (Some(fleet), Some((intake, _))) = (&fleet, &intake) {
        intake.join_fleet(fleet.clone());
        fleet.use_token(intake.required_token().map(str::to_owned));
    }
    // A worker's end takes back its package's facts at once.
    catalog.when_worker_ends(&engine.when_worker_ends());
    let targets = runners.len();
    // Facts about targets the config no longer names go, with an event
    // each (so the store lets go of them too).
    let named: std::collections::HashSet<&str> =
        config.targets.iter().map(|t| t.name.as_str()).collect();
    let (kept, orphaned): (Vec<_>, Vec<_>) = saved.facts.into_iter().partition(|fact| {
        fact.subject
            .strip_prefix("target.")
            .is_none_or(|name| named.contains(name))
    });
    for fact in orphaned {
        events.emit(Event::FactRetracted {
            fact,
            why: crate::facts::Retraction::TargetRemoved,
        });
    }
    engine.make_room_for_facts(targets);
    let restored_facts = engine.restore_facts(kept);
    let restored_outcomes = engine.restore_outcomes(saved.outcomes);
    events.emit(Event::Started {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        config: config.path.clone(),
        targets,
        reflexes: config.reflexes.len(),
        packages: catalog.packages.len(),
        restored_issues: runners.iter().map(engine::Runner::restored_issues).sum(),
        restored_anomalies: intake
            .as_ref()
            .map_or(0, |(intake, _)| intake.restored_anomalies()),
        restored_facts,
        restored_outcomes,
    });
    view.metrics.start_at_zero(&config, &catalog);
    for runner in runners {
        engine.start(runner);
    }
    let serving = intake.map(|(intake, listener)| {
        // The token the intake read: one read, so the API can never run
        // without the token the intake requires.
        let token = intake.required_token().map(str::to_owned);
        let api = Arc::new(Api {
            board: Arc::clone(&board),
            engine: engine.handle(),
            recent: view.recent.clone(),
            plugins: RwLock::new(Plugins::of(&catalog)),
            reload: reload.clone(),
            token,
            store: view.store.clone(),
            metrics: Arc::clone(&view.metrics),
            started: std::time::Instant::now(),
            answer_within: intake.request_timeout(),
            fleet: fleet.clone(),
            confirming: fleet.as_ref().map(|fleet| crate::api::Confirming {
                member: fleet.member().to_owned(),
                targets: config.targets.iter().filter(|t| t.fleet).cloned().collect(),
                catalog: Catalog {
                    dir: catalog.dir.clone(),
                    packages: catalog.packages.clone(),
                    ..Catalog::default()
                },
                history: config.healer.history,
                events: events.clone(),
                slots: Arc::new(tokio::sync::Semaphore::new(crate::api::CONFIRMS_AT_ONCE)),
            }),
        });
        let serving = tokio::spawn(intake::serve(
            listener,
            Arc::clone(&intake),
            crate::api::router(Arc::clone(&api)),
            shutdown.clone(),
        ));
        (intake, api, serving)
    });
    notify::ready(targets);
    if let Some(every) = notify::watchdog_every() {
        tokio::spawn(notify::watchdog(
            every,
            Arc::clone(&board),
            shutdown.clone(),
        ));
    }
    let token = serving
        .as_ref()
        .and_then(|(intake, _, _)| intake.required_token().map(str::to_owned));
    let current = Current {
        config,
        catalog,
        token,
    };
    let api = serving.as_ref().map(|(_, api, _)| Arc::clone(api));
    let reloading = Reloading {
        options,
        current,
        events,
        metrics: &view.metrics,
        api,
    };
    let sharing = fleet.clone().zip(fleet_changes);
    serve_until_stopped(reloading, &mut engine, reloads, sharing, shutdown).await;
    notify::stopping();
    engine.wait().await;
    if let Some(fleet) = &fleet {
        // Its shards are free for the others at once.
        fleet.leave().await;
    }
    if let Some((intake, _, serving)) = serving {
        let _ = serving.await;
        drain(&intake).await;
    }
    ExitCode::SUCCESS
}

/// Hands the heap's free pages back once a second after a large answer
/// was freed (`memory`), until `shutdown`.
async fn trim_after_large_answers(mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => if crate::memory::trim_asked() {
                let _ = tokio::task::spawn_blocking(crate::memory::trim).await;
            },
            changed = shutdown.changed() => if changed.is_err() || *shutdown.borrow() { return },
        }
    }
}

/// The intake (when the config has one) built from its saved state, and
/// its listener bound: every problem of either, for one error each.
async fn listening_intake(
    config: &Config,
    catalog: &Catalog,
    events: &Events,
    saved: intake::Saved,
    view: &View,
) -> Result<Option<(Arc<intake::Intake>, tokio::net::TcpListener)>, Vec<String>> {
    if config.intake.is_none() {
        return Ok(None);
    }
    let store = view.store.clone();
    let intake = intake::Intake::build(config, catalog, events.clone(), saved, store).await?;
    let listener = intake::listen(&intake).await.map_err(|err| vec![err])?;
    Ok(Some((intake, listener)))
}

/// What a reload changes, and whom it tells.
struct Reloading<'a> {
    options: &'a Options,
    current: Current,
    events: &'a Events,
    metrics: &'a Metrics,
    api: Option<Arc<Api>>,
}

/// Serves reloads, and starts and stops the fleet's targets as their
/// shards are taken and lost, until a stop signal.
async fn serve_until_stopped(
    mut reloading: Reloading<'_>,
    engine: &mut Engine,
    mut reloads: tokio::sync::mpsc::Receiver<ReloadRequest>,
    mut fleet: Option<(Fleet, tokio::sync::mpsc::UnboundedReceiver<Change>)>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut running = HashMap::new();
    while !*shutdown.borrow_and_update() {
        let shards = async {
            match &mut fleet {
                Some((_, changes)) => changes.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = shutdown.changed() => if changed.is_err() { break },
            Some(change) = shards => {
                if let Some((fleet, _)) = &fleet {
                    let state = (&reloading.current, reloading.events);
                    shard_changed(fleet, change, engine, state, &mut running).await;
                }
            }
            Some(reply) = reloads.recv() => {
                let Reloading { options, current, events, metrics, api } = &mut reloading;
                let outcome = reload::reload(options, current, engine, events).await;
                if outcome.is_ok() {
                    metrics.start_at_zero(&current.config, &current.catalog);
                    if let Some(api) = api {
                        *api.plugins.write().unwrap_or_else(|p| p.into_inner()) =
                            Plugins::of(&current.catalog);
                    }
                }
                let _ = reply.send(outcome);
            }
        }
    }
}

/// Starts or stops the targets of a shard taken, lost or handed back.
/// `running` is the epoch each shard's loops run under here: a change
/// about another epoch (one that came late) touches none of them.
async fn shard_changed(
    fleet: &Fleet,
    change: Change,
    engine: &mut Engine,
    (current, events): (&Current, &Events),
    running: &mut HashMap<u32, u64>,
) {
    match change {
        Change::Taken {
            shard,
            epoch,
            mut saved,
        } => {
            // Lost again before this was heard: nothing starts.
            if !fleet.owns(shard, epoch) {
                return;
            }
            stop_shard(fleet, shard, engine, running).await;
            for name in fleet.targets_of(shard) {
                let Some(target) = current.config.targets.iter().find(|t| t.name == name) else {
                    continue;
                };
                match engine::build_target(target, &current.catalog).await {
                    Ok(mut runner) => {
                        let fence = fleet.fence(shard, epoch, &name);
                        let saved = saved.remove(&name).unwrap_or_default();
                        for carried in &saved {
                            if carried.issue.state == crate::issues::State::Escalated {
                                events.emit(Event::FleetIssueTakenOver {
                                    member: fleet.member().to_owned(),
                                    target: name.clone(),
                                    issue: carried.issue.clone(),
                                });
                            }
                        }
                        runner.in_fleet(fence, saved);
                        engine.start(runner);
                    }
                    Err(err) => tracing::error!(shard, "fleet: {err}"),
                }
            }
            running.insert(shard, epoch);
        }
        Change::Lost { shard, epoch } => {
            if running.get(&shard) == Some(&epoch) {
                stop_shard(fleet, shard, engine, running).await;
            }
        }
        Change::Release { shard, epoch, done } => {
            if running.get(&shard) == Some(&epoch) {
                stop_shard(fleet, shard, engine, running).await;
            }
            let _ = done.send(());
        }
    }
}

/// Stops every loop of `shard` running here.
async fn stop_shard(
    fleet: &Fleet,
    shard: u32,
    engine: &mut Engine,
    running: &mut HashMap<u32, u64>,
) {
    for name in fleet.targets_of(shard) {
        engine.hand_over(&name, fleet.member()).await;
    }
    running.remove(&shard);
}

/// Lets running workflows end, for at most [`FINISH_WITHIN`].
async fn drain(intake: &intake::Intake) {
    let unfinished = intake.drain(FINISH_WITHIN).await;
    if unfinished > 0 {
        tracing::warn!(
            unfinished,
            "stopping with workflows still running; their ends are not recorded"
        );
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("healer: {message}");
    ExitCode::FAILURE
}
