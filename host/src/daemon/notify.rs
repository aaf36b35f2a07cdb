//! systemd's notify protocol (`Type=notify`, `WatchdogSec=`): `READY=1`
//! once the first checks are scheduled, `STOPPING=1` on the way out, and
//! `WATCHDOG=1` only while healer's engine is really alive: every target's
//! loop has made progress when it promised to (the board). A loop that
//! stops making progress stops the pings, and systemd restarts healer; a
//! timer that always fires would prove nothing. (A store that cannot write
//! shows in `/healthz`, not here: a restart would not mend a full disk.)
//!
//! Without `NOTIFY_SOCKET` (not run by systemd) every call does nothing.
//! A datagram is sent without blocking: a listener that does not read
//! costs a ping, never a thread of healer's.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::board::Board;

/// Sends `message` (`KEY=VALUE` lines) to `NOTIFY_SOCKET`, a path or an
/// abstract name (`@name`), as `sd_notify(3)` does.
fn send(message: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = (|| -> io::Result<usize> {
        let datagram = UnixDatagram::unbound()?;
        datagram.set_nonblocking(true)?;
        match socket.as_bytes().strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                datagram.send_to_addr(message.as_bytes(), &address)
            }
            None => datagram.send_to(message.as_bytes(), &socket),
        }
    })();
    match sent {
        Ok(_) => {}
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
            tracing::debug!(socket = ?socket, "the notify socket is full; this notification is left out")
        }
        Err(err) => {
            tracing::warn!(error = %err, socket = ?socket, "cannot notify systemd (NOTIFY_SOCKET)")
        }
    }
}

/// healer is ready: its first checks are scheduled.
pub fn ready(targets: usize) {
    send(&format!("READY=1\nSTATUS=healing {targets} targets\n"));
}

/// healer is stopping.
pub fn stopping() {
    send("STOPPING=1\n");
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
            send("WATCHDOG=1\n");
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
        send(&format!("STATUS=not making progress: {why}\n"));
    }
}
