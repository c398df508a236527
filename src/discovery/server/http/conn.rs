//! What one client may hold of the HTTP listener: at most
//! `--http-max-conns-per-client` connections per source address (Consul's
//! `http_max_conns_per_client`; one more is answered `429` and closed, as
//! Consul's connection limiter does), and a client that half-closes its
//! socket after its request ([`ClientIo`]) still gets the answer.
//!
//! Time limits are hyper's `header_read_timeout` (see `http1()` in the
//! parent): its timer runs only while hyper waits for a request head, so it
//! closes stalled heads and idle keep-alive connections alike, and never a
//! connection whose request is being answered (a parked blocking query).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// Whether a request is being answered on a connection (set by the
/// service around each request).
#[derive(Clone, Default)]
pub struct InFlight(Arc<AtomicBool>);

/// Marks a request in flight until dropped.
pub struct Answering(InFlight);

impl InFlight {
    pub fn start(&self) -> Answering {
        self.0.store(true, Ordering::Release);
        Answering(self.clone())
    }

    fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        (self.0).0.store(false, Ordering::Release);
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
}

impl ClientIo {
    pub fn new(stream: TcpStream, in_flight: InFlight) -> ClientIo {
        ClientIo {
            stream,
            in_flight,
            held_eof: None,
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
        if let Some(grace) = this.held_eof.as_mut() {
            if this.in_flight.get() && grace.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // EOF: nothing filled.
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        std::task::ready!(Pin::new(&mut this.stream).poll_read(cx, buf))?;
        let eof = buf.filled().len() == before && buf.remaining() > 0;
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
