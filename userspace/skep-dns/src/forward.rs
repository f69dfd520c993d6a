//! Forwarding questions outside the cluster domain to the node's own
//! resolvers, over the transport the client used. Each upstream is tried in
//! turn with a bounded wait; when none answers the caller sends SERVFAIL, so
//! a node with no route out fails fast instead of hanging its pods.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// The transport a question came in on (and is forwarded over).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// One datagram each way.
    Udp,
    /// Length-prefixed messages on a stream.
    Tcp,
}

/// Sends `query` (a whole DNS message) to each upstream in turn and returns
/// the first answer whose ID matches, or `None` when none answered within
/// `timeout` each.
pub async fn forward(
    upstreams: &[SocketAddr],
    query: &[u8],
    transport: Transport,
    timeout: Duration,
) -> Option<Vec<u8>> {
    for upstream in upstreams {
        let attempt = match transport {
            Transport::Udp => tokio::time::timeout(timeout, udp(*upstream, query)).await,
            Transport::Tcp => tokio::time::timeout(timeout, tcp(*upstream, query)).await,
        };
        match attempt {
            Ok(Ok(reply)) if reply.get(..2) == query.get(..2) => return Some(reply),
            Ok(Ok(_)) => tracing::debug!(%upstream, "upstream answered another question"),
            Ok(Err(err)) => tracing::debug!(%upstream, %err, "failed to forward a question"),
            Err(_) => tracing::debug!(%upstream, "upstream did not answer in time"),
        }
    }
    None
}

async fn udp(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = if upstream.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    // A connected socket: an ICMP unreachable comes back as an error at once.
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buf = vec![0; 65_535];
    let n = socket.recv(&mut buf).await?;
    buf.truncate(n);
    Ok(buf)
}

async fn tcp(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await?;
    write_framed(&mut stream, query).await?;
    read_framed(&mut stream).await
}

/// Writes one length-prefixed DNS message (RFC 1035 4.2.2).
pub(crate) async fn write_framed(
    stream: &mut (impl AsyncWriteExt + Unpin),
    message: &[u8],
) -> std::io::Result<()> {
    let len = u16::try_from(message.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "message too long"))?;
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(message);
    stream.write_all(&framed).await
}

/// Reads one length-prefixed DNS message.
pub(crate) async fn read_framed(
    stream: &mut (impl AsyncReadExt + Unpin),
) -> std::io::Result<Vec<u8>> {
    let len = stream.read_u16().await?;
    let mut buf = vec![0; usize::from(len)];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}
