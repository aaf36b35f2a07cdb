//! Starting and stopping healer: the config and the plugins it needs (what
//! `run`, `check` and `once` share), then, for `run`, the event stream and
//! its subscribers (log, event log, store), the state the store saved, the
//! engine and the intake, and an orderly stop that writes out every event.

use std::io;
use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing::level_filters::LevelFilter;

use crate::api::{Api, Plugins, ReloadRequest};
use crate::board::{Board, CheckTimers};
use crate::config::Config;
use crate::engine::Engine;
use crate::event_log::EventLog;
use crate::events::{Event, Events, Subscriber};
use crate::history::Recent;
use crate::loading::{load, Options};
use crate::log::EventLines;
use crate::metrics::Metrics;
use crate::model::StoreHealth;
use crate::plugins::Catalog;
use crate::reload::Current;
use crate::store::{Saved, Settings, Store};
use crate::{engine, intake};

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
    let (config, catalog) = match load(options).await {
        Ok(loaded) => loaded,
        Err(problems) => return fail(&problems.join("\n")),
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
    crate::reaper::become_subreaper();
    survive_file_size_limit();
    raise_open_files_limit();

    let every_check =
        config.healer.event_log.is_some() || LevelFilter::current() >= LevelFilter::DEBUG;
    let (events, inbox) = Events::channel(every_check);
    catalog.report_to(&events);
    let mut subscribers: Vec<Box<dyn Subscriber>> = vec![Box::new(EventLines)];
    if let Some(path) = &config.healer.event_log {
        match EventLog::open(path) {
            Ok(journal) => subscribers.push(Box::new(journal)),
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
    subscribers.push(Box::new(crate::metrics::Feed(Arc::clone(&metrics))));
    let mut saved = saved;
    let recent = Recent::new(std::mem::take(&mut saved.recent));
    subscribers.push(recent.subscriber());
    inbox.start(subscribers);

    tokio::spawn(watch_the_log(Arc::clone(&logging), signals.usr1));
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
    let runners = match engine::build(&config, &catalog, saved.issues, saved.pauses).await {
        Ok(runners) => runners,
        Err(errors) => {
            for error in &errors {
                tracing::error!("{error}");
            }
            return ExitCode::FAILURE;
        }
    };
    let intake = match &config.intake {
        None => None,
        Some(_) => {
            let store = view.store.clone();
            match intake::Intake::build(&config, &catalog, events.clone(), saved.intake, store)
                .await
            {
                Ok(intake) => match intake::listen(&intake).await {
                    Ok(listener) => Some((intake, listener)),
                    Err(err) => {
                        tracing::error!("{err}");
                        return ExitCode::FAILURE;
                    }
                },
                Err(errors) => {
                    for error in &errors {
                        tracing::error!("{error}");
                    }
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(crate::reaper::reap_orphans(shutdown.clone()));
    let (reload, mut reloads) = tokio::sync::mpsc::channel::<ReloadRequest>(4);
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
    let targets = runners.len();
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
        });
        let serving = tokio::spawn(intake::serve(
            listener,
            Arc::clone(&intake),
            crate::api::router(Arc::clone(&api)),
            shutdown.clone(),
        ));
        (intake, api, serving)
    });
    crate::notify::ready(targets);
    if let Some(every) = crate::notify::watchdog_every() {
        tokio::spawn(crate::notify::watchdog(
            every,
            Arc::clone(&board),
            shutdown.clone(),
        ));
    }
    let token = serving
        .as_ref()
        .and_then(|(intake, _, _)| intake.required_token().map(str::to_owned));
    let mut current = Current {
        config,
        catalog,
        token,
    };
    let mut shutdown = shutdown;
    while !*shutdown.borrow_and_update() {
        tokio::select! {
            changed = shutdown.changed() => if changed.is_err() { break },
            Some(reply) = reloads.recv() => {
                let outcome = crate::reload::reload(options, &mut current, &mut engine, events).await;
                if outcome.is_ok() {
                    view.metrics.start_at_zero(&current.config, &current.catalog);
                    if let Some((_, api, _)) = &serving {
                        *api.plugins.write().unwrap_or_else(|p| p.into_inner()) =
                            Plugins::of(&current.catalog);
                    }
                }
                let _ = reply.send(outcome);
            }
        }
    }
    crate::notify::stopping();
    engine.wait().await;
    if let Some((intake, _, serving)) = serving {
        let _ = serving.await;
        let unfinished = intake.drain(FINISH_WITHIN).await;
        if unfinished > 0 {
            tracing::warn!(
                unfinished,
                "stopping with workflows still running; their ends are not recorded"
            );
        }
    }
    ExitCode::SUCCESS
}

/// The signals healer handles, registered before anything else: a SIGHUP
/// or SIGUSR1 sent while the config and plugins load is then not fatal
/// (their default action is to terminate).
struct Signals {
    term: io::Result<Signal>,
    int: io::Result<Signal>,
    hup: io::Result<Signal>,
    usr1: io::Result<Signal>,
}

/// What [`heal`] needs to stop: SIGTERM and SIGINT (watched while
/// starting), and SIGHUP.
type StopSignals = (WhileStarting, io::Result<Signal>);

/// SIGTERM and SIGINT while healer starts stop it at once (nothing runs
/// yet that needs a clean stop, and loading may take long); once healing
/// starts, [`WhileStarting::hand_over`] passes them on for a clean stop.
struct WhileStarting {
    ready: tokio::sync::oneshot::Sender<()>,
    watching: tokio::task::JoinHandle<Option<(Signal, Signal)>>,
}

impl WhileStarting {
    fn watch(term: io::Result<Signal>, int: io::Result<Signal>) -> WhileStarting {
        let (ready, mut handed_over) = tokio::sync::oneshot::channel();
        let watching = tokio::spawn(async move {
            let (Ok(mut term), Ok(mut int)) = (term, int) else {
                return None;
            };
            tokio::select! {
                _ = term.recv() => stopped_while_starting("SIGTERM"),
                _ = int.recv() => stopped_while_starting("SIGINT"),
                _ = &mut handed_over => Some((term, int)),
            }
        });
        WhileStarting { ready, watching }
    }

    /// Healing starts: the stop signals, from now on for a clean stop.
    async fn hand_over(self) -> Option<(Signal, Signal)> {
        let _ = self.ready.send(());
        self.watching.await.ok().flatten()
    }
}

fn stopped_while_starting(signal: &str) -> ! {
    eprintln!("healer: {signal} while starting; stopped before the first check");
    std::process::exit(0)
}

impl Signals {
    fn register() -> Signals {
        Signals {
            term: signal(SignalKind::terminate()),
            int: signal(SignalKind::interrupt()),
            hup: signal(SignalKind::hangup()),
            usr1: signal(SignalKind::user_defined1()),
        }
    }
}

/// Reopens the log file on SIGUSR1 (logrotate's `postrotate`), and says
/// when log lines had to be dropped because a destination was too slow.
async fn watch_the_log(logging: Arc<crate::log::Logging>, usr1: io::Result<Signal>) {
    let mut usr1 = match usr1 {
        Ok(usr1) => Some(usr1),
        Err(err) => {
            tracing::warn!(error = %err, "cannot watch for SIGUSR1; the log file is not reopened on it");
            None
        }
    };
    let mut reported = 0;
    let mut every = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            Some(()) = next(&mut usr1) => {
                match logging.reopen() {
                    Ok(()) => tracing::info!("SIGUSR1: the log file was reopened"),
                    Err(err) => tracing::error!(error = %err, "SIGUSR1: cannot reopen the log file; logging on to the old one"),
                }
            }
            _ = every.tick() => {
                let dropped = logging.dropped();
                if dropped > reported {
                    tracing::warn!(dropped = dropped - reported, total = dropped, "log lines were dropped: a log destination could not keep up");
                    reported = dropped;
                }
            }
        }
    }
}

/// Raises the soft limit on open files to the hard one: every check,
/// recovery and intake connection takes descriptors, and running out
/// (EMFILE) must not be what stops healer from seeing.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::info!(
                from = soft,
                to = hard,
                "raised the open files limit (RLIMIT_NOFILE) to the hard limit"
            ),
            Err(err) => {
                tracing::warn!(limit = soft, hard, error = %err, "cannot raise the open files limit (RLIMIT_NOFILE)")
            }
        },
        Ok((soft, _)) => tracing::info!(
            limit = soft,
            "open files limit (RLIMIT_NOFILE), already the hard limit"
        ),
        Err(err) => {
            tracing::warn!(error = %err, "cannot read the open files limit (RLIMIT_NOFILE)")
        }
    }
}

/// With a file size limit (RLIMIT_FSIZE) set, a write past it sends
/// SIGXFSZ, which would kill healer; handled, the write fails with EFBIG
/// instead, and the store reports it and retries.
fn survive_file_size_limit() {
    match signal(SignalKind::from_raw(nix::libc::SIGXFSZ)) {
        Ok(mut signals) => {
            tokio::spawn(async move { while signals.recv().await.is_some() {} });
        }
        Err(err) => {
            tracing::warn!(error = %err, "cannot handle SIGXFSZ; a file size limit would stop healer")
        }
    }
}

/// Waits for SIGTERM or SIGINT. SIGHUP does not stop healer: it asks for
/// a reload (whose outcome is an event either way).
async fn wait_for_stop_signal(
    stop: Option<(Signal, Signal)>,
    hup: io::Result<Signal>,
    reload: tokio::sync::mpsc::Sender<ReloadRequest>,
) {
    let Some((mut term, mut int)) = stop else {
        tracing::warn!("cannot watch for SIGTERM and SIGINT; stop healer with SIGKILL");
        return std::future::pending().await;
    };
    let mut hup = match hup {
        Ok(hup) => Some(hup),
        Err(err) => {
            tracing::warn!(error = %err, "cannot watch for SIGHUP; it is ignored");
            None
        }
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            Some(()) = next(&mut hup) => {
                let (reply, _outcome) = tokio::sync::oneshot::channel();
                if reload.try_send(reply).is_err() {
                    tracing::warn!("SIGHUP: a reload is already waiting; this one is left out");
                }
            }
        }
    }
}

/// The next delivery of `signal`; never, when it could not be watched.
async fn next(signal: &mut Option<Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("healer: {message}");
    ExitCode::FAILURE
}
