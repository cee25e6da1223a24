//! Accepting and serving HTTP/1.1 connections so that slow or hostile clients cannot
//! hold the daemon: every connection has a deadline in each phase, their number is
//! capped, and a failing `accept` backs off instead of spinning.
//!
//! `axum::serve` has none of this: a client that sends half a header, stops in the
//! middle of a body or opens connections and says nothing keeps them open for good,
//! and once the descriptors are gone no webhook is answered again. Here:
//! - the headers of a request must arrive within `header_timeout` of its first byte
//!   (of the accept, on a new connection: a client connects to send a request), its
//!   body within `body_timeout` of its headers (else 408, by the handler), and a
//!   keep-alive connection must start its next request within `idle_timeout`; a
//!   connection past its deadline is closed and counted;
//! - at most `max_connections` are open; the next client waits in the kernel's accept
//!   queue until one closes;
//! - when `accept` fails for want of descriptors or memory, the loop sleeps (10 ms,
//!   doubling to 1 s) and counts it, so the timeouts can free some.

use std::{
    convert::Infallible,
    io,
    pin::Pin,
    sync::{
        Arc, LazyLock,
        atomic::{AtomicU8, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, body::Body};
use http_body::Frame;
use hyper::{Request, body::Incoming, server::conn::http1};
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Notify, Semaphore},
    time::{Instant, Sleep},
};
use tokio_util::sync::CancellationToken;

use super::summary::{self, Event};
use crate::metrics::{self, AcceptError, ConnectionTimeout, Listener};

/// The limits one listener enforces.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// The first pause after a failed `accept`; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Serves `app` on `listener` until `shutdown`, then lets open connections finish their
/// requests (idle ones are closed at once) and returns when the last one is closed.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    which: Listener,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut backoff = MIN_BACKOFF;
    loop {
        if slots.available_permits() == 0 {
            metrics::connection_limit_reached(which);
            if summary::note(Event::LimitReached(which)) {
                tracing::warn!(
                    listener = which.as_str(),
                    max_connections = limits.max_connections,
                    "connection cap reached: new clients wait until a connection closes"
                );
            }
        }
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            _ = shutdown.cancelled() => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => break,
        };
        match accepted {
            Ok((stream, _peer)) => {
                backoff = MIN_BACKOFF;
                let app = app.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    metrics::connection_open(which, true);
                    serve_connection(stream, app, limits, which, shutdown).await;
                    metrics::connection_open(which, false);
                    drop(slot);
                });
            }
            // The client gave up before we took its connection: nothing to wait for.
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                let kind = AcceptError::of(&e);
                metrics::accept_failed(which, kind);
                if summary::note(Event::AcceptFailed(which, kind)) {
                    tracing::warn!(
                        listener = which.as_str(),
                        error = %e,
                        "cannot accept connections; retrying with backoff until some close"
                    );
                }
                drop(slot);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => break,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    drop(listener);
    // Every connection holds a slot until it is closed.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
}

/// Errors of one connection that died in the queue, not of the listener.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    ) || matches!(e.raw_os_error(), Some(libc::EPROTO | libc::EPERM))
}

async fn serve_connection(
    stream: TcpStream,
    app: Router,
    limits: Limits,
    which: Listener,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let clock = Arc::new(Clock::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        clock: clock.clone(),
    });
    let app = TowerToHyperService::new(app);
    let service = {
        let clock = clock.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| {
            clock.set(Phase::Busy);
            let request =
                request.map(|body| Body::new(DeadlineBody::new(body, limits.body_timeout, which)));
            let answer = hyper::service::Service::call(&app, request);
            let clock = clock.clone();
            async move {
                let answer: Result<_, Infallible> = answer.await;
                clock.set(Phase::Idle);
                answer
            }
        })
    };
    let connection = http1::Builder::new()
        .keep_alive(true)
        .header_read_timeout(None)
        .serve_connection(io, service);
    tokio::pin!(connection);
    let mut stopping = false;
    loop {
        let deadline = clock.deadline(&limits);
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(listener = which.as_str(), error = %e, "connection ended with an error");
                }
                return;
            }
            _ = tokio::time::sleep_until(deadline) => {
                if let Some(timeout) = clock.expired(&limits, Instant::now()) {
                    metrics::connection_timed_out(which, timeout);
                    if timeout == ConnectionTimeout::Header
                        && summary::note(Event::TimedOut(which, timeout))
                    {
                        tracing::warn!(
                            listener = which.as_str(),
                            timeout_secs = limits.header_timeout.as_secs_f64(),
                            "closed a connection whose request headers did not arrive in time"
                        );
                    }
                    return;
                }
            }
            _ = clock.sooner.notified() => {}
            _ = shutdown.cancelled(), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Where a connection is in its request cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    /// Waiting for a request's first byte.
    Idle = 0,
    /// A request's first byte came; its headers have not all arrived.
    Head = 1,
    /// A request is being answered (its body deadline is [`DeadlineBody`]'s).
    Busy = 2,
}

/// A connection's phase and when it began, shared by its socket and its service.
struct Clock {
    phase: AtomicU8,
    /// Milliseconds since [`EPOCH`].
    since: AtomicU64,
    /// Wakes the connection's watch when a request's first byte brings its deadline
    /// closer (the only change that does).
    sooner: Notify,
}

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn millis(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(*EPOCH).as_millis()).unwrap_or(u64::MAX)
}

impl Clock {
    /// A new connection, whose first request's headers are due.
    fn new() -> Clock {
        Clock {
            phase: AtomicU8::new(Phase::Head as u8),
            since: AtomicU64::new(millis(Instant::now())),
            sooner: Notify::new(),
        }
    }

    fn set(&self, phase: Phase) {
        self.since.store(millis(Instant::now()), Ordering::Relaxed);
        self.phase.store(phase as u8, Ordering::Release);
    }

    fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Idle,
            1 => Phase::Head,
            _ => Phase::Busy,
        }
    }

    /// The first byte of a request: an idle connection starts reading headers.
    fn first_byte(&self) {
        if self
            .phase
            .compare_exchange(
                Phase::Idle as u8,
                Phase::Head as u8,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            self.since.store(millis(Instant::now()), Ordering::Relaxed);
            self.sooner.notify_one();
        }
    }

    fn started(&self) -> Instant {
        *EPOCH + Duration::from_millis(self.since.load(Ordering::Relaxed))
    }

    /// When to look again: the current phase's deadline (a busy connection has none of
    /// its own, so it is looked at again after the idle timeout).
    fn deadline(&self, limits: &Limits) -> Instant {
        match self.phase() {
            Phase::Idle => self.started() + limits.idle_timeout,
            Phase::Head => self.started() + limits.header_timeout,
            Phase::Busy => Instant::now() + limits.idle_timeout,
        }
    }

    /// Which timeout, if any, the connection has passed at `now`.
    fn expired(&self, limits: &Limits, now: Instant) -> Option<ConnectionTimeout> {
        let (timeout, limit) = match self.phase() {
            Phase::Idle => (ConnectionTimeout::Idle, limits.idle_timeout),
            Phase::Head => (ConnectionTimeout::Header, limits.header_timeout),
            Phase::Busy => return None,
        };
        (now >= self.started() + limit).then_some(timeout)
    }
}

/// The socket, telling its [`Clock`] when a request's first byte arrives.
struct Watched {
    inner: TcpStream,
    clock: Arc<Clock>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.clock.first_byte();
        }
        read
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The request body did not arrive within the listener's body timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub(crate) struct BodyTimedOut(pub Duration);

/// A request body that fails with [`BodyTimedOut`] once its time is up. The timer is
/// only set when the body is not already all there (the usual small webhook arrives
/// with its headers).
struct DeadlineBody {
    inner: Incoming,
    deadline: Instant,
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    which: Listener,
}

impl DeadlineBody {
    fn new(inner: Incoming, timeout: Duration, which: Listener) -> DeadlineBody {
        DeadlineBody {
            inner,
            deadline: Instant::now() + timeout,
            timeout,
            sleep: None,
            which,
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = axum::body::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.as_mut().poll(cx).is_ready() {
            metrics::connection_timed_out(this.which, ConnectionTimeout::Body);
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut(this.timeout)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(95),
            max_connections: 4,
        }
    }

    #[test]
    fn each_phase_has_its_own_deadline_and_a_busy_one_none() {
        let limits = limits();
        let clock = Clock::new();
        let accepted = clock.started();
        assert_eq!(
            clock.phase(),
            Phase::Head,
            "a new connection owes its headers"
        );
        assert_eq!(
            clock.expired(&limits, accepted + Duration::from_secs(10)),
            Some(ConnectionTimeout::Header)
        );
        clock.set(Phase::Idle);
        let start = clock.started();
        assert_eq!(
            clock.expired(&limits, start + Duration::from_secs(94)),
            None
        );
        assert_eq!(
            clock.expired(&limits, start + Duration::from_secs(95)),
            Some(ConnectionTimeout::Idle)
        );
        clock.first_byte();
        let head = clock.started();
        assert_eq!(clock.phase(), Phase::Head);
        assert_eq!(
            clock.expired(&limits, head + Duration::from_secs(10)),
            Some(ConnectionTimeout::Header)
        );
        // More bytes of the same headers do not move the deadline.
        clock.first_byte();
        assert_eq!(clock.started(), head);
        clock.set(Phase::Busy);
        assert_eq!(
            clock.expired(&limits, head + Duration::from_secs(3600)),
            None
        );
        clock.set(Phase::Idle);
        assert_eq!(clock.phase(), Phase::Idle);
    }

    #[test]
    fn only_descriptor_and_memory_shortages_are_listener_failures() {
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert!(!is_per_connection(&io::Error::from_raw_os_error(errno)));
        }
        assert_eq!(
            AcceptError::of(&io::Error::from_raw_os_error(libc::EMFILE)),
            AcceptError::Descriptors
        );
        assert_eq!(
            AcceptError::of(&io::Error::from_raw_os_error(libc::ENOBUFS)),
            AcceptError::Memory
        );
        for errno in [libc::ECONNABORTED, libc::ECONNRESET, libc::EPROTO] {
            assert!(is_per_connection(&io::Error::from_raw_os_error(errno)));
        }
    }
}
