//! Watching one running worker until it ends: what it sends is delivered
//! to the calls waiting for it; it is pinged every second once it has
//! loaded its package (a ping it answers only once the package's own
//! runtime has run a task, so a plugin task that spins is noticed); and it
//! is judged stuck when it misses its heartbeat for `stuck_after`, leaves
//! what healer sent it unread for as long, or does not finish loading
//! within the probe's deadline and `stuck_after`.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::net::unix::OwnedReadHalf;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

use super::child::{Ending, Exit};
use super::conn::Conn;
use super::probe::PROBE_WITHIN;
use super::wire::{self, FromWorker, ToWorker};

/// How often a worker is pinged.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// A read buffer that grew past this for a large frame is let go once
/// the frame is read, not kept for the life of the worker.
const KEEP_READ_BUFFER: usize = 256 << 10;

/// The room a fresh read buffer starts with, as `FramedRead`'s own does:
/// a burst of small answers is read in a few calls, not one per frame.
const FRESH_READ_BUFFER: usize = 8 << 10;

/// One frame decoded, its bytes freed before the message is handled, and
/// the read buffer let go when a large frame grew it: a worker that
/// answered 10 MiB once does not hold 10 MiB of healer's memory for ever
/// (nor does the next large frame land in a second buffer beside it).
fn decode_and_release(
    frame: bytes::BytesMut,
    frames: &mut FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
) -> Result<FromWorker, String> {
    let message = wire::decode::<FromWorker>(&frame);
    let large = frame.len() > KEEP_READ_BUFFER;
    drop(frame);
    if large {
        // The buffer still shares the frame's allocation (and would grow
        // back into all of it): a fresh one, holding what was read of the
        // next frames, lets it go.
        let buffer = frames.read_buffer_mut();
        let mut fresh = bytes::BytesMut::with_capacity(buffer.len().max(FRESH_READ_BUFFER));
        fresh.extend_from_slice(buffer);
        *buffer = fresh;
        crate::memory::large_answer_freed();
    }
    message
}

/// Reads the worker's messages (`frames`) and watches it (`exit`) until it
/// ends, or until its package is no longer used (`conn.stop`): why.
pub async fn watch(
    stuck_after: Duration,
    conn: &Conn,
    exit: &Exit,
    mut frames: FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
) -> Ending {
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ping: Option<(u64, Instant)> = None;
    let mut seq = 0;
    // Pings start once the worker has loaded its package.
    let (started, mut ready) = (Instant::now(), false);
    loop {
        tokio::select! {
            frame = frames.next() => match frame {
                Some(Ok(bytes)) => match decode_and_release(bytes, &mut frames) {
                    // Said once: a worker that says it again would set
                    // back the clock of what it has not read.
                    Ok(FromWorker::Ready) if ready => {
                        break Ending::Killed("broke the protocol: it said it was ready twice".to_owned());
                    }
                    Ok(FromWorker::Ready) => {
                        ready = true;
                        conn.out.reading_from(Instant::now());
                    }
                    Ok(FromWorker::Pong { seq }) => {
                        if ping.is_some_and(|(sent, _)| sent == seq) {
                            ping = None;
                        }
                    }
                    Ok(message) => conn.deliver(message),
                    Err(err) => break Ending::Killed(format!("broke the protocol: it sent {err}")),
                },
                ended => {
                    // Closed or reset (a worker that dies with a ping
                    // unread resets the socket): one that died says how.
                    let otherwise = match ended {
                        Some(Err(err)) => format!("broke the protocol: {err}"),
                        _ => "closed its socket".to_owned(),
                    };
                    match tokio::time::timeout(Duration::from_millis(500), exit.ended()).await {
                        Ok(()) => break Ending::Exited,
                        Err(_) => break Ending::Killed(otherwise),
                    }
                }
            },
            () = exit.ended() => break Ending::Exited,
            () = conn.stop.notified() => break Ending::Stopped,
            _ = tick.tick() => {
                // While it loads, the rule below judges it instead.
                if ready && conn.out.stuck(Instant::now(), stuck_after) {
                    break Ending::Killed(format!(
                        "stopped reading: {} bytes healer sent it went unread for {}",
                        conn.out.waiting(),
                        humantime::format_duration(stuck_after)
                    ));
                }
                match ping {
                    _ if !ready => {
                        if started.elapsed() >= PROBE_WITHIN + stuck_after {
                            break Ending::Killed(format!(
                                "did not finish loading its package within {}",
                                humantime::format_duration(PROBE_WITHIN + stuck_after)
                            ));
                        }
                    }
                    Some((_, sent)) if sent.elapsed() >= stuck_after => {
                        break Ending::Killed(format!(
                            "stopped answering: no heartbeat for {} (a plugin task that spins or blocks the package's runtime?)",
                            humantime::format_duration(stuck_after)
                        ));
                    }
                    Some(_) => {}
                    None => {
                        seq += 1;
                        // A ping with no room waits for the next tick; a
                        // full outbox is judged above.
                        if conn.send(&ToWorker::Ping { seq }) {
                            ping = Some((seq, Instant::now()));
                        }
                    }
                }
            },
        }
    }
}
