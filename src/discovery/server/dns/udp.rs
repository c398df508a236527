//! The UDP side of the DNS server. hickory-server's UDP loop spawns a task
//! for every datagram and routes every answer through a channel to one
//! sending task; here each receiving task parses, answers and sends inline,
//! one receiver per core on the shared socket, and only an answer that has
//! to wait (a recursor) gets a task of its own. What a datagram gets back
//! is hickory's: nothing below a header, nothing for a response, FORMERR
//! for an unreadable question.

use std::future::Future;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Waker};

use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::proto::op::{Header, HeaderCounts, MessageType, Metadata, ResponseCode};
use hickory_server::proto::rr::Record;
use hickory_server::proto::serialize::binary::{
    BinDecodable, BinDecoder, BinEncodable, BinEncoder,
};
use hickory_server::server::{Request, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use super::ConsulDns;

/// Longer datagrams are cut here and then fail to parse (FORMERR); a
/// query, even with EDNS options, is far shorter.
const MAX_QUERY: usize = 4096;
/// Without EDNS an answer is at most 512 bytes (RFC 1035 4.2.1).
const PLAIN_UDP_SIZE: u16 = 512;

/// Answer queries on `socket` until `shutdown`; returns once the
/// receivers and every answer still waiting on a recursor are done.
pub async fn serve(socket: UdpSocket, dns: Arc<ConsulDns>, shutdown: CancellationToken) {
    let socket = Arc::new(socket);
    let waiting = TaskTracker::new();
    let receivers = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..receivers {
        tasks.spawn(receive(
            socket.clone(),
            dns.clone(),
            waiting.clone(),
            shutdown.clone(),
        ));
    }
    while tasks.join_next().await.is_some() {}
    waiting.close();
    waiting.wait().await;
}

async fn receive(
    socket: Arc<UdpSocket>,
    dns: Arc<ConsulDns>,
    waiting: TaskTracker,
    shutdown: CancellationToken,
) {
    let mut buf = vec![0u8; MAX_QUERY];
    loop {
        let (len, src) = tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok(received) => received,
                // ICMP errors of earlier answers surface here; the
                // socket is still fine.
                Err(e) if matches!(
                    e.kind(),
                    ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset | ErrorKind::Interrupted
                ) => {
                    debug!(error = %e, "receiving a dns query");
                    continue;
                }
                Err(e) => {
                    warn!(error = %e, "the dns udp socket failed: no more queries on it");
                    return;
                }
            },
            () = shutdown.cancelled() => return,
        };
        if src.port() == 0 || src.ip().is_unspecified() {
            continue;
        }
        let datagram = &buf[..len];
        let Ok(header) = Header::read(&mut BinDecoder::new(datagram)) else {
            continue;
        };
        if header.metadata.message_type == MessageType::Response {
            continue;
        }
        let reply = Reply {
            socket: socket.clone(),
            dst: src,
        };
        let request = match Request::from_bytes(datagram.to_vec(), src, Protocol::Udp) {
            Ok(request) => request,
            Err(e) => {
                debug!(%src, error = %e, "malformed dns query");
                form_error(&reply, &header.metadata).await;
                continue;
            }
        };
        let dns = dns.clone();
        let mut answer: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async move {
            dns.respond(&request, reply).await;
        });
        // Catalog answers finish in this first poll; an answer that waits
        // (a recursor) continues in its own task, which polls it again with
        // a real waker.
        if answer
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_pending()
        {
            waiting.spawn(answer);
        }
    }
}

/// FORMERR with the query's ID, no question (it could not be read).
async fn form_error(reply: &Reply, request: &Metadata) {
    let mut metadata = Metadata::response_from_request(request);
    metadata.response_code = ResponseCode::FormErr;
    let header = Header {
        metadata,
        counts: HeaderCounts::default(),
    };
    match header.to_bytes() {
        Ok(bytes) => reply.send(&bytes).await,
        Err(e) => debug!(error = %e, "encoding a FORMERR"),
    }
}

/// Where one answer goes: the shared socket and the client's address.
#[derive(Clone)]
struct Reply {
    socket: Arc<UdpSocket>,
    dst: SocketAddr,
}

impl Reply {
    async fn send(&self, bytes: &[u8]) {
        if let Err(e) = self.socket.send_to(bytes, self.dst).await {
            debug!(dst = %self.dst, error = %e, "sending a dns answer");
        }
    }
}

/// hickory's `ResponseHandler` is an `async_trait`; this is its expanded form.
impl ResponseHandler for Reply {
    fn send_response<'a, 'life0, 'life1, 'async_trait>(
        &'life0 mut self,
        response: MessageResponse<
            'life1,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Pin<Box<dyn Future<Output = Result<ResponseInfo, NetError>> + Send + 'async_trait>>
    where
        'a: 'async_trait,
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        // Encode within the client's size; an answer that does not fit (a
        // recursor's, relayed) becomes SERVFAIL, as hickory does.
        Box::pin(async move {
            let max = response
                .edns()
                .map_or(PLAIN_UDP_SIZE, |e| e.max_payload().max(PLAIN_UDP_SIZE));
            let metadata = *response.metadata();
            let mut bytes = Vec::with_capacity(usize::from(PLAIN_UDP_SIZE));
            let mut encoder = BinEncoder::new(&mut bytes);
            encoder.set_max_size(max);
            let info = match response.destructive_emit(&mut encoder) {
                Ok(info) => info,
                Err(e) => {
                    warn!(error = %e, "encoding a dns answer");
                    let mut failed = metadata;
                    failed.response_code = ResponseCode::ServFail;
                    let header = Header {
                        metadata: failed,
                        counts: HeaderCounts::default(),
                    };
                    bytes = header.to_bytes()?;
                    ResponseInfo::from(header)
                }
            };
            self.send(&bytes).await;
            Ok(info)
        })
    }
}
