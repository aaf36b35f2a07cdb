//! What keeps the intake's connections from being used against healer: a
//! cap on open connections, and a total deadline per request.
//!
//! - **Cap.** At most `max_connections` are open. A connection that would
//!   go over it evicts the oldest one (the client that has held a slot the
//!   longest, which is what a slow-loris attack does), so a flood can
//!   neither queue without bound nor hold out a good client: a request
//!   sent promptly is answered. Descriptors stay bounded too, so a flood
//!   never makes healer's own checks fail with EMFILE.
//! - **Deadline.** From the first byte of a request until its head and
//!   body are read, at most `request_timeout` may pass, however the bytes
//!   trickle in; an idle keep-alive connection is closed by hyper's header
//!   timeout after the same time.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// The open connections, oldest first.
pub struct Connections {
    max: usize,
    open: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    next: u64,
    oldest_first: VecDeque<(u64, CancellationToken)>,
}

/// One admitted connection's place; leaves when dropped.
pub struct Slot {
    id: u64,
    connections: Arc<Connections>,
    evicted: CancellationToken,
}

impl Connections {
    /// At most `max` open at once.
    pub fn new(max: usize) -> Arc<Connections> {
        Arc::new(Connections {
            max: max.max(1),
            open: Mutex::new(Slots::default()),
        })
    }

    /// Admits a new connection, evicting the oldest ones beyond the cap.
    /// Returns the slot and how many were evicted.
    pub fn admit(self: &Arc<Self>) -> (Slot, usize) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mut evicted = 0;
        while open.oldest_first.len() >= self.max {
            if let Some((_, token)) = open.oldest_first.pop_front() {
                token.cancel();
                evicted += 1;
            }
        }
        open.next += 1;
        let id = open.next;
        let token = CancellationToken::new();
        open.oldest_first.push_back((id, token.clone()));
        let slot = Slot {
            id,
            connections: Arc::clone(self),
            evicted: token,
        };
        (slot, evicted)
    }

    /// How many are open.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .oldest_first
            .len()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .connections
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        open.oldest_first.retain(|(id, _)| *id != self.id);
    }
}

/// A connection under the cap and the per-request deadline.
pub struct Guarded {
    stream: TcpStream,
    _slot: Slot,
    evicted: Pin<Box<WaitForCancellationFutureOwned>>,
    request_timeout: Duration,
    /// The deadline of the request being read; none between requests.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl Guarded {
    /// Guards `stream`, which holds `slot`.
    pub fn new(stream: TcpStream, slot: Slot, request_timeout: Duration) -> Guarded {
        let evicted = Box::pin(slot.evicted.clone().cancelled_owned());
        Guarded {
            stream,
            _slot: slot,
            evicted,
            request_timeout,
            deadline: None,
        }
    }

    fn closed(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        if self.evicted.as_mut().poll(cx).is_ready() {
            return Some(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "evicted: too many connections",
            ));
        }
        let deadline = self.deadline.as_mut()?;
        deadline.as_mut().poll(cx).is_ready().then(|| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                "the request was not read within request_timeout",
            )
        })
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(err) = this.closed(cx) {
            return Poll::Ready(Err(err));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(())))
            && buf.filled().len() > before
            && this.deadline.is_none()
        {
            // The first byte of a request: its deadline starts now.
            let mut deadline = Box::pin(sleep_until(Instant::now() + this.request_timeout));
            // Register the timer with this task, so it wakes a stalled read.
            let _ = deadline.as_mut().poll(cx);
            this.deadline = Some(deadline);
        }
        read
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.evicted.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "evicted: too many connections",
            )));
        }
        // Writing means the request was read and is being answered: the
        // next bytes read start the next request.
        this.deadline = None;
        Pin::new(&mut this.stream).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_over_the_cap_evicts_the_oldest() {
        let connections = Connections::new(2);
        let (first, _) = connections.admit();
        let (second, _) = connections.admit();
        let (third, evicted) = connections.admit();
        assert_eq!(evicted, 1);
        assert!(first.evicted.is_cancelled());
        assert!(!second.evicted.is_cancelled() && !third.evicted.is_cancelled());
        drop(first);
        assert_eq!(connections.len(), 2);
        drop(second);
        assert_eq!(connections.len(), 1);
    }
}
