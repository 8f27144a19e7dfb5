//! When an opaque TCP connection last moved a byte, so one idle both ways can be closed; and
//! resetting a client connection, so an upstream's abort reaches the client as an abort.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::prefixed::PrefixedIo;

/// The last time any tracked stream read a byte.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    /// Milliseconds after `start`.
    last_ms: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// When the connection will have been idle for `idle`, as things stand.
    fn due(&self, idle: Duration) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle
    }

    /// Resolves once nothing has been read for `idle`.
    pub async fn idle_for(&self, idle: Duration) {
        loop {
            let due = self.due(idle);
            if Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due.into()).await;
        }
    }
}

/// A stream whose reads count as activity.
pub struct Tracked<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I> Tracked<I> {
    pub fn new(inner: I, activity: Arc<Activity>) -> Self {
        Tracked { inner, activity }
    }

    pub fn get_ref(&self) -> &I {
        &self.inner
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A client stream whose TCP connection can end with a reset (RST) instead of a FIN, so that an
/// aborted upstream does not look like a complete stream.
pub trait Resettable {
    /// Makes the coming close a reset.
    fn reset_on_close(&self);
}

impl Resettable for TcpStream {
    fn reset_on_close(&self) {
        if let Err(e) = self.set_zero_linger() {
            tracing::debug!(error = %e, "SO_LINGER 0 failed");
        }
    }
}

impl<I: Resettable> Resettable for PrefixedIo<I> {
    fn reset_on_close(&self) {
        self.get_ref().reset_on_close();
    }
}

impl<I: Resettable> Resettable for tokio_rustls::server::TlsStream<I> {
    fn reset_on_close(&self) {
        self.get_ref().0.reset_on_close();
    }
}

impl<I: Resettable> Resettable for Tracked<I> {
    fn reset_on_close(&self) {
        self.inner.reset_on_close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_postpone_the_idle_deadline_and_nothing_else_does() {
        let activity = Activity::new();
        let idle = Duration::from_secs(60);
        let first = activity.due(idle);
        assert_eq!(first, activity.start + idle);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(activity.due(idle), first, "time alone moved the deadline");
        activity.touch();
        assert!(activity.due(idle) > first);
    }

    #[tokio::test]
    async fn tracked_reads_count_as_activity() {
        use tokio::io::AsyncReadExt;
        let activity = Activity::new();
        std::thread::sleep(Duration::from_millis(5));
        let before = activity.due(Duration::ZERO);
        let mut tracked = Tracked::new(&b"bytes"[..], activity.clone());
        let mut out = Vec::new();
        tracked.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"bytes");
        assert!(activity.due(Duration::ZERO) > before);
    }
}
