//! The signals `healer run` handles: SIGTERM and SIGINT stop it (at once
//! while it starts, cleanly once it heals), SIGHUP asks for a reload,
//! SIGUSR1 reopens the log file (logrotate's `postrotate`).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::api::ReloadRequest;

/// The signals healer handles, registered before anything else: a SIGHUP
/// or SIGUSR1 sent while the config and plugins load is then not fatal
/// (their default action is to terminate).
pub(super) struct Signals {
    pub(super) term: io::Result<Signal>,
    pub(super) int: io::Result<Signal>,
    pub(super) hup: io::Result<Signal>,
    pub(super) usr1: io::Result<Signal>,
}

/// What [`heal`] needs to stop: SIGTERM and SIGINT (watched while
/// starting), and SIGHUP.
pub(super) type StopSignals = (WhileStarting, io::Result<Signal>);

/// SIGTERM and SIGINT while healer starts stop it at once (nothing runs
/// yet that needs a clean stop, and loading may take long); once healing
/// starts, [`WhileStarting::hand_over`] passes them on for a clean stop.
pub(super) struct WhileStarting {
    ready: tokio::sync::oneshot::Sender<()>,
    watching: tokio::task::JoinHandle<Option<(Signal, Signal)>>,
}

impl WhileStarting {
    pub(super) fn watch(term: io::Result<Signal>, int: io::Result<Signal>) -> WhileStarting {
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
    pub(super) async fn hand_over(self) -> Option<(Signal, Signal)> {
        let _ = self.ready.send(());
        self.watching.await.ok().flatten()
    }
}

fn stopped_while_starting(signal: &str) -> ! {
    eprintln!("healer: {signal} while starting; stopped before the first check");
    std::process::exit(0)
}

impl Signals {
    pub(super) fn register() -> Signals {
        Signals {
            term: signal(SignalKind::terminate()),
            int: signal(SignalKind::interrupt()),
            hup: signal(SignalKind::hangup()),
            usr1: signal(SignalKind::user_defined1()),
        }
    }
}

/// Reopens the log file and the event log on SIGUSR1 (logrotate's
/// `postrotate`), and says
/// when log lines had to be dropped because a destination was too slow.
pub(super) async fn watch_the_log(
    logging: Arc<crate::log::Logging>,
    event_log: Option<crate::event_log::Reopen>,
    usr1: io::Result<Signal>,
) {
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
                if let Some(event_log) = &event_log {
                    event_log.ask();
                }
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

/// Waits for SIGTERM or SIGINT. SIGHUP does not stop healer: it asks for
/// a reload (whose outcome is an event either way).
pub(super) async fn wait_for_stop_signal(
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
