//! What one client may hold of the HTTP listener: at most
//! `--http-max-conns-per-client` connections per source address (Consul's
//! `http_max_conns_per_client`; one more is answered `429` and closed, as
//! Consul's connection limiter does), and a client that half-closes its
//! socket after its request ([`ClientIo`]) still gets the answer.
//!
//! Time limits, kept by [`ClientIo`], and only while no request is being
//! answered (a parked blocking query is never cut): a request head must be
//! complete within [`Timeouts::header`] of its first byte (and a new
//! connection must send one that soon: slowloris), and a keep-alive
//! connection may sit idle between requests for [`Timeouts::idle`], longer,
//! so that clients polling every few seconds (Patroni's 10 s loop,
//! Prometheus' 30 s) reuse their connection instead of racing its close.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// Consul's default `http_max_conns_per_client`.
pub const DEFAULT_MAX_CONNS_PER_CLIENT: usize = 200;

/// How long a request whose client has half-closed its socket may still
/// take before the connection is dropped. A quick answer is written well
/// within it; a parked blocking query of a client that went away is
/// released after it instead of at the end of its wait.
const HALF_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// How long a refused connection gets to take its `429` before it is
/// closed.
const REFUSE_LINGER: Duration = Duration::from_millis(500);

/// Live connections per client address.
#[derive(Clone, Default)]
pub struct ClientConns {
    live: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One admitted connection; its client's count drops with it.
pub struct ClientSlot {
    conns: ClientConns,
    ip: IpAddr,
}

impl ClientConns {
    /// A slot for one more connection from `ip`, or `None` when it
    /// already holds `max` (0 = no limit).
    pub fn admit(&self, ip: IpAddr, max: usize) -> Option<ClientSlot> {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let n = live.entry(ip).or_insert(0);
        if max != 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            conns: self.clone(),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut live = self
            .conns
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = live.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                live.remove(&self.ip);
            }
        }
    }
}

/// Answer a connection over its client's limit the way Consul does (a raw
/// `429` on the socket) and close it; what the client sent meanwhile is
/// read and dropped for a moment, so the close does not reset the answer
/// away.
pub async fn refuse(mut stream: TcpStream) {
    const TOO_MANY: &[u8] =
        b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let linger = async {
        stream.write_all(TOO_MANY).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, io::Error>(())
    };
    let _ = tokio::time::timeout(REFUSE_LINGER, linger).await;
}

/// Whether a request is being answered on a connection, and how many were
/// (set by the service around each request), and the reader to wake when
/// an answer is made: hyper may not read again until the socket has data,
/// so without it the idle deadline would never be armed.
#[derive(Clone, Default)]
pub struct InFlight(Arc<InFlightState>);

#[derive(Default)]
struct InFlightState {
    busy: AtomicBool,
    answered: AtomicU64,
    reader: Mutex<Option<std::task::Waker>>,
}

/// Marks a request in flight until dropped.
pub struct Answering(InFlight);

impl InFlight {
    pub fn start(&self) -> Answering {
        self.0.busy.store(true, Ordering::Release);
        Answering(self.clone())
    }

    fn get(&self) -> bool {
        self.0.busy.load(Ordering::Acquire)
    }

    fn answered(&self) -> u64 {
        self.0.answered.load(Ordering::Acquire)
    }

    fn wake_reader_later(&self, waker: &std::task::Waker) {
        let mut reader = self.0.reader.lock().unwrap_or_else(PoisonError::into_inner);
        if !reader.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *reader = Some(waker.clone());
        }
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        let state = &(self.0).0;
        state.answered.fetch_add(1, Ordering::AcqRel);
        state.busy.store(false, Ordering::Release);
        let reader = state
            .reader
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(w) = reader {
            w.wake();
        }
    }
}

/// The client's socket as hyper sees it. hyper either drops a request
/// whose client sent EOF (its default) or never looks at the socket again
/// until the answer is written (`half_close`), which would keep a parked
/// query of a vanished client for its whole wait. Here an EOF that arrives
/// while a request is being answered is held back for
/// [`HALF_CLOSE_GRACE`]: the answer goes out if it is ready by then (Go's
/// server, Consul's, answers a half-closed client too), else hyper gets the
/// EOF and drops the request. Between requests an EOF passes at once.
pub struct ClientIo {
    stream: TcpStream,
    in_flight: InFlight,
    held_eof: Option<Pin<Box<Sleep>>>,
    timeouts: Timeouts,
    /// Where the connection stands between requests.
    phase: Phase,
    /// The deadline of the current phase; none while a request is answered.
    deadline: Option<Pin<Box<Sleep>>>,
    /// Answers made so far, as last seen here.
    answered: u64,
}

/// The HTTP listener's time limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From a head's first byte (or a new connection) to its end.
    pub header: Duration,
    /// A keep-alive connection with no request, after an answer.
    pub idle: Duration,
}

/// A stalled request head is closed after this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// An idle keep-alive connection is closed after this.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            header: HEADER_TIMEOUT,
            idle: IDLE_TIMEOUT,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a head's first byte (a new connection: `header` applies).
    Fresh,
    /// After an answer, waiting for the next head (`idle` applies).
    Idle,
    /// Part of a head arrived (`header` applies from its first byte).
    Head,
    /// A request is being answered: no deadline.
    Answering,
}

impl ClientIo {
    pub fn new(stream: TcpStream, in_flight: InFlight, timeouts: Timeouts) -> ClientIo {
        ClientIo {
            stream,
            in_flight,
            held_eof: None,
            timeouts,
            phase: Phase::Fresh,
            deadline: Some(Box::pin(tokio::time::sleep(timeouts.header))),
            answered: 0,
        }
    }

    /// Move to `phase`, (re)arming or dropping the deadline.
    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        let limit = match phase {
            Phase::Answering => {
                self.deadline = None;
                return;
            }
            Phase::Idle => self.timeouts.idle,
            Phase::Fresh | Phase::Head => self.timeouts.header,
        };
        let at = tokio::time::Instant::now() + limit;
        match self.deadline.as_mut() {
            Some(d) => d.as_mut().reset(at),
            None => self.deadline = Some(Box::pin(tokio::time::sleep_until(at))),
        }
    }

    /// Follow the service: a request is being answered, or an answer was
    /// made since the last look (even one this reader never saw begin).
    fn track(&mut self) {
        if self.in_flight.get() {
            if self.phase != Phase::Answering {
                self.enter(Phase::Answering);
            }
            return;
        }
        let answered = self.in_flight.answered();
        if answered != self.answered {
            self.answered = answered;
            self.enter(Phase::Idle);
        }
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.track();
        if let Some(grace) = this.held_eof.as_mut() {
            if this.in_flight.get() && grace.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // EOF: nothing filled.
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if read.is_pending() {
            if this.phase == Phase::Answering {
                this.in_flight.wake_reader_later(cx.waker());
            }
            if let Some(d) = this.deadline.as_mut() {
                if d.as_mut().poll(cx).is_ready() {
                    let what = match this.phase {
                        Phase::Idle => "idle keep-alive connection",
                        _ => "request head not complete",
                    };
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)));
                }
            }
            return Poll::Pending;
        }
        std::task::ready!(read)?;
        let got = buf.filled().len() - before;
        if got > 0 && matches!(this.phase, Phase::Fresh | Phase::Idle) {
            this.enter(Phase::Head);
        }
        let eof = got == 0 && buf.remaining() > 0;
        if eof && this.in_flight.get() {
            let mut grace = Box::pin(tokio::time::sleep(HALF_CLOSE_GRACE));
            // Registers the waker; a fresh sleep of seconds is pending.
            if grace.as_mut().poll(cx).is_pending() {
                this.held_eof = Some(grace);
                return Poll::Pending;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_address_and_given_back() {
        let conns = ClientConns::default();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let first = conns.admit(a, 2).unwrap();
        let _second = conns.admit(a, 2).unwrap();
        assert!(conns.admit(a, 2).is_none(), "a third from one address");
        assert!(
            conns.admit(b, 2).is_some(),
            "another address has its own count"
        );
        drop(first);
        assert!(
            conns.admit(a, 2).is_some(),
            "a closed connection frees its slot"
        );
        let many: Vec<_> = (0..1000).filter_map(|_| conns.admit(b, 0)).collect();
        assert_eq!(many.len(), 1000, "0 = no limit");
    }
}
