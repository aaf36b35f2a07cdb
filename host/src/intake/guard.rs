//! Slow clients: every intake connection must make read progress within
//! `client_timeout`, or it is closed. This covers clients that trickle
//! their headers or body (slowloris) and idle keep-alive connections;
//! axum's `serve` sets no such timeout of its own.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{sleep, Instant, Sleep};

/// A listener whose connections time out when reads stall.
pub struct Guarded {
    pub listener: TcpListener,
    pub timeout: Duration,
}

impl Listener for Guarded {
    type Io = Deadline;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Deadline, std::net::SocketAddr) {
        let (stream, address) = Listener::accept(&mut self.listener).await;
        (
            Deadline {
                stream,
                timeout: self.timeout,
                expires: Box::pin(sleep(self.timeout)),
            },
            address,
        )
    }

    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }
}

/// A connection that fails a read which makes no progress in time.
pub struct Deadline {
    stream: TcpStream,
    timeout: Duration,
    expires: Pin<Box<Sleep>>,
}

impl AsyncRead for Deadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.expires.as_mut().reset(Instant::now() + this.timeout);
                Poll::Ready(result)
            }
            Poll::Pending => match this.expires.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "client too slow",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Deadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
