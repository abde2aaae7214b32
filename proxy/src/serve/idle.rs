//! Idle client connections: one lazily re-armed timer per connection, and the busy mark a call's
//! answer holds until it is sent, so that a connection is never cut in the middle of an answer.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::call::ResponseBody;
use crate::error::BoxError;

/// What tells an idle connection from a busy one: how many calls began or ended on it, and how many
/// answers are still being produced or sent.
#[derive(Default)]
pub(super) struct Activity {
    events: AtomicU64,
    open: AtomicU32,
}

impl Activity {
    pub(super) fn begin(self: &Arc<Self>) -> Busy {
        self.events.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }
}

/// Held by a call's answer until it is sent or dropped: its connection is not idle meanwhile.
pub(super) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        self.0.events.fetch_add(1, Ordering::Relaxed);
    }
}

/// One connection's idle timer, looked at lazily: it fires once per idle period, and the connection
/// ends only if no call began or ended during that period and none is open. A connection is thus
/// closed between one and two periods after its last answer, and a client that trickles a request
/// head, whatever it sends, has it cut within two periods.
pub(super) struct IdleWatch {
    activity: Arc<Activity>,
    period: Duration,
    timer: Pin<Box<Sleep>>,
    seen: u64,
    /// Whether the timer holds this task's waker for its current deadline: until it fires, a look
    /// is then one load instead of a poll (reads happen several times per call).
    armed: bool,
}

impl IdleWatch {
    pub(super) fn new(activity: Arc<Activity>, period: Duration) -> Self {
        Self {
            activity,
            period,
            timer: Box::pin(tokio::time::sleep(period)),
            seen: 0,
            armed: false,
        }
    }

    /// Whether the connection has been idle for a whole period; registers for the next look if not.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.armed && !self.timer.is_elapsed() {
            return false;
        }
        // Outside tokio's cooperative budget: a poll refused for budget would not register the waker.
        while Pin::new(&mut tokio::task::unconstrained(self.timer.as_mut()))
            .poll(cx)
            .is_ready()
        {
            let events = self.activity.events.load(Ordering::Relaxed);
            if events == self.seen && self.activity.open.load(Ordering::Relaxed) == 0 {
                return true;
            }
            self.seen = events;
            self.timer.as_mut().reset(Instant::now() + self.period);
        }
        self.armed = true;
        false
    }
}

/// A client connection whose reads end, as if the client had closed it, once [`IdleWatch`] says it
/// is idle. hyper then ends the connection as it would on the client's close: at once when it waits
/// for a request head, including one half received. HTTP/2 connections are not watched: they have
/// their own liveness checks (pings) and end with GOAWAY.
pub(super) struct IdleIo<I> {
    io: I,
    idle: Option<IdleWatch>,
    sniffed: bool,
    ended: bool,
}

impl<I> IdleIo<I> {
    pub(super) fn new(io: I, idle: IdleWatch) -> Self {
        Self {
            io,
            idle: Some(idle),
            sniffed: false,
            ended: false,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for IdleIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.ended || this.idle.as_mut().is_some_and(|idle| idle.expired(cx)) {
            this.ended = true;
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if !this.sniffed && buf.filled().len() > before {
            this.sniffed = true;
            // The HTTP/2 connection preface ("PRI * HTTP/2.0…"), in clear or inside TLS.
            if buf.filled()[before..].starts_with(b"PRI *") {
                this.idle = None;
            }
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for IdleIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A call's answer as the connection sends it: the answer's body and the connection's busy mark, which
/// is let go when the body has been sent or dropped.
pub(super) struct Held {
    body: ResponseBody,
    _busy: Busy,
}

impl Held {
    /// `body`, keeping its connection busy until it is done.
    pub(super) fn new(body: ResponseBody, busy: Busy) -> Self {
        Self { body, _busy: busy }
    }
}

impl Body for Held {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
