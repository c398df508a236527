//! Forwarding names outside the Consul domain to the configured recursors
//! (consul-wire.md §8.5): in order, over the client's transport, each with
//! Consul's 2 s `recursor_timeout`; an answer other than NOERROR/NXDOMAIN or a
//! network error moves on to the next one. Messages are hickory-proto's; the
//! only framing done here is TCP's two-byte length prefix.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tracing::debug;

/// Consul's `recursor_timeout` default.
const RECURSOR_TIMEOUT: Duration = Duration::from_secs(2);

/// The transport a query came in on, and so goes out on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Ask each recursor in turn; the first acceptable answer, or `None` when
/// all failed (the caller answers SERVFAIL).
pub async fn forward(
    recursors: &[SocketAddr],
    query: &Query,
    edns: Option<&Edns>,
    transport: Transport,
) -> Option<Message> {
    let mut request = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    request.metadata.recursion_desired = true;
    request.add_query(query.clone());
    if let Some(edns) = edns {
        let mut out = Edns::new();
        out.set_max_payload(edns.max_payload().max(512));
        out.set_dnssec_ok(edns.flags().dnssec_ok);
        request.set_edns(out);
    }
    let bytes = match request.to_vec() {
        Ok(bytes) => bytes,
        Err(e) => {
            debug!(error = %e, "encoding a recursor query");
            return None;
        }
    };
    for recursor in recursors {
        let exchange = async {
            match transport {
                Transport::Udp => exchange_udp(*recursor, &bytes, request.metadata.id).await,
                Transport::Tcp => exchange_tcp(*recursor, &bytes).await,
            }
        };
        let reply = match tokio::time::timeout(RECURSOR_TIMEOUT, exchange).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => {
                debug!(%recursor, error = %e, "recursor failed");
                continue;
            }
            Err(_) => {
                debug!(%recursor, "recursor timed out");
                continue;
            }
        };
        match Message::from_vec(&reply) {
            Ok(msg)
                if msg.metadata.id == request.metadata.id
                    && matches!(
                        msg.metadata.response_code,
                        ResponseCode::NoError | ResponseCode::NXDomain
                    ) =>
            {
                return Some(msg);
            }
            Ok(msg) => {
                debug!(%recursor, code = %msg.metadata.response_code, "recursor refused the query");
            }
            Err(e) => debug!(%recursor, error = %e, "recursor sent a malformed answer"),
        }
    }
    None
}

async fn exchange_udp(recursor: SocketAddr, query: &[u8], id: u16) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = if recursor.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(recursor).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = socket.recv(&mut buf).await?;
        // Anything that is not the answer to our ID is stray: keep waiting.
        if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn exchange_tcp(recursor: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(recursor).await?;
    let len = u16::try_from(query.len())
        .map_err(|_| std::io::Error::other("query longer than 65535 bytes"))?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    let len = stream.read_u16().await?;
    let mut reply = vec![0u8; usize::from(len)];
    stream.read_exact(&mut reply).await?;
    Ok(reply)
}
