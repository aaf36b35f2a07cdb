//! What healer has to send one worker, bounded by bytes: a frame that
//! does not fit is refused (its call fails, and the engine records it
//! UNKNOWN), and a worker that leaves what it was sent unread for
//! `stuck_after` is stuck ([`Outbox::stuck`]), even if it answers pings.
//!
//! The books count the bytes accepted and not yet written to the socket,
//! and since when nothing has been written while some wait: a worker that
//! reads, however slowly, moves that moment on with every frame.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::SinkExt;
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;
use tokio_util::codec::FramedWrite;

use super::wire;
use crate::plugins::lock::lock;

/// The most bytes waiting for one worker: a frame (at most 16 MiB) always
/// fits when nothing waits.
pub const BUDGET: usize = 16 << 20;

/// Frames for one worker, written by [`write`].
pub struct Outbox {
    frames: mpsc::UnboundedSender<Bytes>,
    books: Arc<Mutex<Books>>,
}

/// A frame the outbox has no room for.
#[derive(Debug, PartialEq, Eq)]
pub struct Full {
    /// Bytes waiting to be written to the worker.
    pub waiting: usize,
}

#[derive(Debug)]
struct Books {
    budget: usize,
    /// Accepted and not yet written.
    waiting: usize,
    /// Since when bytes have waited with nothing written.
    since: Option<Instant>,
}

/// The end [`write`] takes frames from.
pub struct Frames {
    frames: mpsc::UnboundedReceiver<Bytes>,
    books: Arc<Mutex<Books>>,
}

impl Outbox {
    /// An outbox of at most `budget` waiting bytes, and the frames its
    /// writer takes.
    pub fn new(budget: usize) -> (Outbox, Frames) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let books = Arc::new(Mutex::new(Books {
            budget,
            waiting: 0,
            since: None,
        }));
        (
            Outbox {
                frames: sender,
                books: Arc::clone(&books),
            },
            Frames {
                frames: receiver,
                books,
            },
        )
    }

    /// Queues `frame`, unless it does not fit. A frame for a writer that
    /// has ended (the worker is going) is dropped.
    pub fn send(&self, frame: Bytes) -> Result<(), Full> {
        let len = frame.len();
        let mut books = lock(&self.books);
        if books.waiting > 0 && books.waiting + len > books.budget {
            return Err(Full {
                waiting: books.waiting,
            });
        }
        if self.frames.send(frame).is_ok() {
            if books.waiting == 0 {
                books.since = Some(Instant::now());
            }
            books.waiting += len;
        }
        Ok(())
    }

    /// Whether what was sent has waited unread for `after` by `now`.
    pub fn stuck(&self, now: Instant, after: Duration) -> bool {
        let books = lock(&self.books);
        books
            .since
            .is_some_and(|since| books.waiting > 0 && now.saturating_duration_since(since) >= after)
    }

    /// The worker starts reading at `now` (it has loaded its package):
    /// what was sent while it loaded has waited since then.
    pub fn reading_from(&self, now: Instant) {
        let mut books = lock(&self.books);
        if books.waiting > 0 {
            books.since = Some(now);
        }
    }

    /// Bytes waiting to be written.
    pub fn waiting(&self) -> usize {
        lock(&self.books).waiting
    }
}

impl Frames {
    fn written(&self, bytes: usize) {
        let mut books = lock(&self.books);
        books.waiting = books.waiting.saturating_sub(bytes);
        books.since = (books.waiting > 0).then(Instant::now);
    }
}

/// Writes the outbox's frames to the worker, as many as wait per flush,
/// and keeps its books; ends when the outbox is dropped or the socket
/// fails.
pub async fn write<W: AsyncWrite + Unpin>(write: W, mut frames: Frames) {
    let mut sink = FramedWrite::new(write, wire::codec());
    while let Some(frame) = frames.frames.recv().await {
        let mut bytes = frame.len();
        if sink.feed(frame).await.is_err() {
            return;
        }
        // A burst goes as one write; a frame is counted once it is flushed.
        while bytes < 1 << 20 {
            let Ok(more) = frames.frames.try_recv() else {
                break;
            };
            bytes += more.len();
            if sink.feed(more).await.is_err() {
                return;
            }
        }
        if SinkExt::<Bytes>::flush(&mut sink).await.is_err() {
            return;
        }
        frames.written(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_worker_that_stops_reading_fills_its_outbox_and_is_stuck() {
        runtime().block_on(async {
            let (ours, _theirs) = tokio::net::UnixStream::pair().unwrap();
            let (outbox, frames) = Outbox::new(1 << 20);
            tokio::spawn(write(ours, frames));
            let frame = Bytes::from(vec![7u8; 64 << 10]);
            // The socket takes some; then the outbox fills and refuses.
            let mut refused = None;
            for _ in 0..10_000 {
                if let Err(full) = outbox.send(frame.clone()) {
                    refused = Some(full);
                    break;
                }
                tokio::task::yield_now().await;
            }
            let full = refused.expect("a worker that never reads fills its outbox");
            assert!(full.waiting > (1 << 20) - (64 << 10), "{full:?}");
            let now = Instant::now();
            assert!(!outbox.stuck(now, Duration::from_secs(5)));
            assert!(outbox.stuck(now + Duration::from_secs(5), Duration::from_secs(5)));
            // A worker that only now starts reading has its full time.
            let later = now + Duration::from_secs(60);
            outbox.reading_from(later);
            assert!(!outbox.stuck(later + Duration::from_secs(4), Duration::from_secs(5)));
        });
    }

    #[test]
    fn a_worker_that_reads_drains_its_outbox_and_is_never_stuck() {
        runtime().block_on(async {
            let (ours, mut theirs) = tokio::net::UnixStream::pair().unwrap();
            let (outbox, frames) = Outbox::new(1 << 20);
            tokio::spawn(write(ours, frames));
            let total = 64 * (64 << 10);
            let reader = tokio::spawn(async move {
                let mut buffer = vec![0u8; 1 << 16];
                let mut read = 0;
                // Each frame has a 4-byte length before it.
                while read < total + 64 * 4 {
                    read += theirs.read(&mut buffer).await.unwrap();
                }
            });
            for _ in 0..64 {
                while outbox.send(Bytes::from(vec![1u8; 64 << 10])).is_err() {
                    tokio::task::yield_now().await;
                }
            }
            tokio::time::timeout(Duration::from_secs(10), reader)
                .await
                .expect("everything sent is read")
                .unwrap();
            tokio::time::timeout(Duration::from_secs(10), async {
                while outbox.waiting() > 0 {
                    tokio::task::yield_now().await;
                }
            })
            .await
            .expect("the books are balanced");
            let later = Instant::now() + Duration::from_secs(60);
            assert!(!outbox.stuck(later, Duration::from_secs(5)));
        });
    }

    #[test]
    fn one_frame_always_fits_an_empty_outbox() {
        let (outbox, _frames) = Outbox::new(1024);
        assert_eq!(outbox.send(Bytes::from(vec![0u8; 4096])), Ok(()));
        assert_eq!(
            outbox.send(Bytes::from_static(b"more")),
            Err(Full { waiting: 4096 })
        );
    }
}
