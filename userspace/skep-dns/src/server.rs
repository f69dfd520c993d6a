//! The DNS server: one UDP socket and one TCP listener on the same address,
//! answering from the current [`Records`] and forwarding other names.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::forward::{Transport, forward, read_framed, write_framed};
use crate::records::{Lookup, Records};

/// The UDP payload a client without EDNS can take (RFC 1035).
const UDP_CLASSIC: usize = 512;
/// The UDP payload this server offers with EDNS (the DNS flag day value).
const UDP_EDNS: u16 = 1232;
/// A TCP connection idle this long is closed (CoreDNS's default).
const TCP_IDLE: Duration = Duration::from_secs(10);

/// Failures starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding the UDP socket or the TCP listener failed.
    #[error("failed to bind DNS {transport} socket on {addr}")]
    Bind {
        /// `udp` or `tcp`.
        transport: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Receiving on the UDP socket or accepting on the listener failed.
    #[error("failed to receive on the DNS {transport} socket")]
    Receive {
        /// `udp` or `tcp`.
        transport: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// How a server is set up.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen (UDP and TCP); port 0 picks one free for both.
    pub listen: SocketAddr,
    /// Resolvers for names outside the cluster domain, tried in order.
    pub upstreams: Vec<SocketAddr>,
    /// How long to wait for each upstream before trying the next (and,
    /// after the last, answering SERVFAIL).
    pub forward_timeout: Duration,
}

/// The records a running server answers from, shared with whoever rebuilds
/// them (the agent, when Services or EndpointSlices move).
#[derive(Debug, Clone)]
pub struct RecordsHandle(Arc<RwLock<Arc<Records>>>);

impl RecordsHandle {
    /// Replaces the records; questions after this see the new ones.
    pub fn set(&self, records: Records) {
        let records = Arc::new(records);
        match self.0.write() {
            Ok(mut guard) => *guard = records,
            Err(poisoned) => *poisoned.into_inner() = records,
        }
    }

    /// The current records.
    pub fn get(&self) -> Arc<Records> {
        match self.0.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }
}

/// A bound DNS server; [`DnsServer::run`] serves it.
#[derive(Debug)]
pub struct DnsServer {
    udp: Arc<UdpSocket>,
    tcp: TcpListener,
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    records: RecordsHandle,
    upstreams: Vec<SocketAddr>,
    forward_timeout: Duration,
}

impl DnsServer {
    /// Binds UDP and TCP on `cfg.listen` (the same port for both) and starts
    /// with `records`.
    pub async fn bind(cfg: ServerConfig, records: Records) -> Result<Self, ServerError> {
        let bind_err = |transport, addr| {
            move |source| ServerError::Bind {
                transport,
                addr,
                source,
            }
        };
        // With port 0 the UDP port may be taken for TCP: try a few.
        let mut attempts = if cfg.listen.port() == 0 { 16 } else { 1 };
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind(cfg.listen)
                .await
                .map_err(bind_err("udp", cfg.listen))?;
            let addr = udp.local_addr().map_err(bind_err("udp", cfg.listen))?;
            match TcpListener::bind(addr).await {
                Ok(tcp) => break (udp, tcp),
                Err(err) if attempts > 1 && err.kind() == std::io::ErrorKind::AddrInUse => {
                    attempts -= 1;
                }
                Err(err) => return Err(bind_err("tcp", addr)(err)),
            }
        };
        Ok(Self {
            udp: Arc::new(udp),
            tcp,
            state: Arc::new(State {
                records: RecordsHandle(Arc::new(RwLock::new(Arc::new(records)))),
                upstreams: cfg.upstreams,
                forward_timeout: cfg.forward_timeout,
            }),
        })
    }

    /// The address it listens on (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.tcp
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The handle that replaces its records.
    pub fn records(&self) -> RecordsHandle {
        self.state.records.clone()
    }

    /// Serves until a socket fails; each question is answered on its own
    /// task, so a slow upstream never holds up cluster names.
    pub async fn run(self) -> Result<(), ServerError> {
        let udp = serve_udp(Arc::clone(&self.udp), Arc::clone(&self.state));
        let tcp = serve_tcp(self.tcp, self.state);
        tokio::select! {
            r = udp => r,
            r = tcp => r,
        }
    }
}

async fn serve_udp(socket: Arc<UdpSocket>, state: Arc<State>) -> Result<(), ServerError> {
    let mut buf = vec![0; 65_535];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            // An ICMP error for an earlier reply; the socket is fine.
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => continue,
            Err(source) => {
                return Err(ServerError::Receive {
                    transport: "udp",
                    source,
                });
            }
        };
        let query = buf[..n].to_vec();
        let socket = Arc::clone(&socket);
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            if let Some(reply) = handle(&state, &query, Transport::Udp).await
                && let Err(err) = socket.send_to(&reply, peer).await
            {
                tracing::debug!(%peer, %err, "failed to send a DNS reply");
            }
        });
    }
}

async fn serve_tcp(listener: TcpListener, state: Arc<State>) -> Result<(), ServerError> {
    loop {
        let (stream, _) = listener
            .accept()
            .await
            .map_err(|source| ServerError::Receive {
                transport: "tcp",
                source,
            })?;
        tokio::spawn(serve_connection(stream, Arc::clone(&state)));
    }
}

/// Answers the questions of one TCP connection in order until it closes or
/// idles.
async fn serve_connection(mut stream: TcpStream, state: Arc<State>) {
    while let Ok(Ok(query)) = tokio::time::timeout(TCP_IDLE, read_framed(&mut stream)).await {
        let Some(reply) = handle(&state, &query, Transport::Tcp).await else {
            return;
        };
        if write_framed(&mut stream, &reply).await.is_err() {
            return;
        }
    }
}

/// The reply to one wire-format question (`None`: send nothing).
async fn handle(state: &State, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
    let Ok(request) = Message::from_vec(query) else {
        let id = u16::from_be_bytes([*query.first()?, *query.get(1)?]);
        return Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
            .to_vec()
            .ok();
    };
    if request.metadata.message_type != MessageType::Query {
        return None;
    }
    let records = state.records.get();
    if let Some(response) = respond(&records, &request) {
        return encode(&request, &response, transport);
    }
    let forwarded = forward(&state.upstreams, query, transport, state.forward_timeout).await;
    if forwarded.is_some() {
        return forwarded;
    }
    let response = reply_to(&request, ResponseCode::ServFail);
    encode(&request, &response, transport)
}

/// The answer from the records, or `None` when the name is to be forwarded.
pub(crate) fn respond(records: &Records, request: &Message) -> Option<Message> {
    if request.metadata.op_code != OpCode::Query {
        return Some(reply_to(request, ResponseCode::NotImp));
    }
    let [query] = request.queries.as_slice() else {
        return Some(reply_to(request, ResponseCode::FormErr));
    };
    let qname = query.name();
    let (answers, additionals, code) = match records.lookup(qname, query.query_type()) {
        Lookup::Forward => return None,
        Lookup::NxDomain => (Vec::new(), Vec::new(), ResponseCode::NXDomain),
        Lookup::Answer {
            answers,
            additionals,
        } => (answers, additionals, ResponseCode::NoError),
    };
    let mut response = reply_to(request, code);
    response.metadata.authoritative = true;
    if answers.is_empty() && query.query_type() != RecordType::SOA {
        response.add_authority(records.soa());
    }
    // Echo the question's spelling of the name (DNS 0x20 case checks).
    response.add_answers(answers.into_iter().map(|mut r| {
        if r.name == *qname {
            r.name = qname.clone();
        }
        r
    }));
    response.add_additionals(additionals);
    Some(response)
}

/// An empty response to `request` with `code`.
fn reply_to(request: &Message, code: ResponseCode) -> Message {
    let mut response = Message::error_msg(request.metadata.id, request.metadata.op_code, code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.add_queries(request.queries.iter().cloned());
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(UDP_EDNS);
        response.set_edns(edns);
    }
    response
}

/// Wire bytes of `response`; over UDP, cut to the header and question with
/// the TC bit when it does not fit, so the client retries over TCP.
fn encode(request: &Message, response: &Message, transport: Transport) -> Option<Vec<u8>> {
    let bytes = response.to_vec().ok()?;
    let limit = request.edns.as_ref().map_or(UDP_CLASSIC, |e| {
        usize::from(e.max_payload().clamp(512, UDP_EDNS))
    });
    if transport == Transport::Udp && bytes.len() > limit {
        return response.truncate().to_vec().ok();
    }
    Some(bytes)
}

#[cfg(test)]
#[path = "server_test.rs"]
mod tests;
