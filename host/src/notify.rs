//! systemd's notify protocol (`Type=notify`, `WatchdogSec=`): `READY=1`
//! once the first checks are scheduled, `STOPPING=1` on the way out, and
//! `WATCHDOG=1` only while healer's engine is really alive: every target's
//! loop has made progress when it promised to (the board). A loop that
//! stops making progress stops the pings, and systemd restarts healer; a
//! timer that always fires would prove nothing. (A store that cannot write
//! shows in `/healthz`, not here: a restart would not mend a full disk.)
//!
//! Without `NOTIFY_SOCKET` (not run by systemd) every call does nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tokio::sync::watch;

use crate::board::Board;

/// Whether systemd (or anything else) listens.
fn listening() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

fn send(states: &[NotifyState]) {
    if !listening() {
        return;
    }
    if let Err(err) = sd_notify::notify(false, states) {
        tracing::warn!(error = %err, socket = ?std::env::var_os("NOTIFY_SOCKET"), "cannot notify systemd (NOTIFY_SOCKET)");
    }
}

/// healer is ready: its first checks are scheduled.
pub fn ready(targets: usize) {
    let status = format!("healing {targets} targets");
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// healer is stopping.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// How often to ping the watchdog: half of `WATCHDOG_USEC`, when it is
/// set for this process (`WATCHDOG_PID` unset or ours), as
/// `sd_watchdog_enabled(3)` reads it.
pub fn watchdog_every() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec) / 2)
}

/// Pings the watchdog every `every` while healer is alive, until
/// `shutdown`; says (once per spell) why it stopped pinging.
pub async fn watchdog(every: Duration, board: Arc<Board>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    let mut withheld = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let stalled = board.stalled(Instant::now());
        if stalled.is_empty() {
            if withheld {
                tracing::info!("healer is making progress again: watchdog pings resume");
                withheld = false;
            }
            send(&[NotifyState::Watchdog]);
            continue;
        }
        let names: Vec<String> = stalled
            .iter()
            .map(|(name, late)| format!("{name} (late by {} ms)", late.as_millis()))
            .collect();
        let why = format!("target loops stalled: {}", names.join(", "));
        if !withheld {
            tracing::error!(reason = %why, "healer is not making progress: watchdog pings withheld (systemd restarts healer when WatchdogSec passes)");
            withheld = true;
        }
        let status = format!("not making progress: {why}");
        send(&[NotifyState::Status(&status)]);
    }
}
