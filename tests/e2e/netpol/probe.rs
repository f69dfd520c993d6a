//! All-pairs probing, concurrently: for one port and protocol, every model
//! pod connects to every model pod by pod IP and by Service IP, and the
//! observed tables come back with what each failed probe saw.
//!
//! The probes are sockets of this test process: made inside the source
//! pod's network namespace (per thread) while the process visits a leaf of
//! the source node's cgroup (where the socket load-balancer is attached), so
//! they leave the pod's veth exactly as the pod's own would. All sockets of
//! a step are made first (one cgroup visit per node), then every probe runs
//! on its own thread with short timeouts.

use std::fs::File;
use std::io::Read as _;
use std::net::{SocketAddrV4, TcpStream, UdpSocket};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use nix::sched::{CloneFlags, setns};
use skep_e2e::cgroup::CgroupVisit;
use socket2::{Domain, Protocol, Socket, Type};

use super::model::{ModelPod, Proto};
use super::reach::Table;

/// How long a TCP connect, or a read of the answer, may take.
const TIMEOUT: Duration = Duration::from_secs(1);
/// A UDP probe sends its datagram this often, three times, before it gives up.
const UDP_RESEND: Duration = Duration::from_millis(350);
const IPPROTO_SCTP: i32 = 132;

/// How a probe addresses its destination pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// The pod's own IP.
    PodIp,
    /// The cluster IP of the pod's Service (the socket load-balancer picks
    /// the pod, its only backend).
    ServiceIp,
}

impl Via {
    /// Both ways, in print order.
    pub const BOTH: [Self; 2] = [Self::PodIp, Self::ServiceIp];

    /// How it is printed.
    pub fn name(self) -> &'static str {
        match self {
            Self::PodIp => "pod IP",
            Self::ServiceIp => "service IP",
        }
    }
}

/// What one step observed for one [`Via`].
#[derive(Debug)]
pub struct Observed {
    /// How the probes addressed their destination.
    pub via: Via,
    /// Connected or not, per pair.
    pub table: Table,
    /// `from -> to: what happened`, for every probe that did not connect.
    pub failures: Vec<String>,
}

/// True when this kernel can make SCTP sockets (it has the SCTP module).
pub fn sctp_supported() -> bool {
    Socket::new(
        Domain::IPV4,
        Type::STREAM,
        Some(Protocol::from(IPPROTO_SCTP)),
    )
    .is_ok()
}

fn new_socket(proto: Proto) -> std::io::Result<Socket> {
    match proto {
        Proto::Tcp => Socket::new(Domain::IPV4, Type::STREAM, None),
        Proto::Udp => Socket::new(Domain::IPV4, Type::DGRAM, None),
        Proto::Sctp => Socket::new(
            Domain::IPV4,
            Type::STREAM,
            Some(Protocol::from(IPPROTO_SCTP)),
        ),
    }
}

/// Makes `count` sockets inside `from`'s network namespace. The caller is
/// visiting `from`'s node cgroup.
fn sockets_in(
    from: &ModelPod,
    proto: Proto,
    count: usize,
) -> JoinHandle<anyhow::Result<Vec<Socket>>> {
    let netns = from.netns.clone();
    std::thread::spawn(move || {
        let ns = File::open(&netns).with_context(|| format!("open {}", netns.display()))?;
        setns(&ns, CloneFlags::CLONE_NEWNET).context("enter the pod's namespace")?;
        (0..count)
            .map(|_| new_socket(proto).context("make a probe socket"))
            .collect()
    })
}

/// One probe: connected, and the answer is `want` (the destination pod's key).
fn probe(sock: Socket, proto: Proto, to: SocketAddrV4, want: &str) -> Result<(), String> {
    let answer = match proto {
        Proto::Tcp | Proto::Sctp => {
            sock.connect_timeout(&to.into(), TIMEOUT)
                .map_err(|e| format!("connect: {e}"))?;
            let mut stream: TcpStream = sock.into();
            stream
                .set_read_timeout(Some(TIMEOUT))
                .map_err(|e| e.to_string())?;
            let mut answer = String::new();
            stream
                .read_to_string(&mut answer)
                .map_err(|e| format!("read: {e}"))?;
            answer
        }
        Proto::Udp => {
            sock.connect(&to.into())
                .map_err(|e| format!("connect: {e}"))?;
            let udp: UdpSocket = sock.into();
            udp.set_read_timeout(Some(UDP_RESEND))
                .map_err(|e| e.to_string())?;
            let mut buf = [0u8; 256];
            let mut got = None;
            for _ in 0..3 {
                udp.send(b"who").map_err(|e| format!("send: {e}"))?;
                match udp.recv(&mut buf) {
                    Ok(n) => {
                        got = Some(String::from_utf8_lossy(&buf[..n]).into_owned());
                        break;
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => return Err(format!("recv: {e}")),
                }
            }
            got.ok_or_else(|| "no answer".to_owned())?
        }
    };
    if answer.trim() == want {
        Ok(())
    } else {
        Err(format!("answered {:?}, not {want}", answer.trim()))
    }
}

/// Probes every (from, to) pair of `pods` on `port`/`proto`, once per
/// [`Via`] in `vias`, all at once.
pub fn probe_all(
    pods: &[ModelPod],
    port: u16,
    proto: Proto,
    vias: &[Via],
) -> anyhow::Result<Vec<Observed>> {
    let per_source = pods.len() * vias.len();
    // Sockets, per source pod, made from inside its node's cgroup.
    let mut sockets: Vec<Option<Vec<Socket>>> = (0..pods.len()).map(|_| None).collect();
    let mut nodes: Vec<&str> = pods.iter().map(|p| p.node.as_str()).collect();
    nodes.sort_unstable();
    nodes.dedup();
    for node in nodes {
        let on_node: Vec<usize> = (0..pods.len()).filter(|&i| pods[i].node == node).collect();
        let _visit = CgroupVisit::enter(&pods[on_node[0]].node_cgroup)?;
        let handles: Vec<_> = on_node
            .iter()
            .map(|&i| (i, sockets_in(&pods[i], proto, per_source)))
            .collect();
        for (i, handle) in handles {
            sockets[i] = Some(skep_e2e::netns::join(handle)?);
        }
    }
    let mut jobs = Vec::new();
    for (f, socks) in sockets.into_iter().enumerate() {
        let mut socks = socks.context("a source pod got no sockets")?.into_iter();
        for (v, via) in vias.iter().enumerate() {
            for (t, to) in pods.iter().enumerate() {
                let sock = socks.next().context("too few sockets")?;
                let ip = match via {
                    Via::PodIp => to.ip,
                    Via::ServiceIp => to.service_ip,
                };
                let addr = SocketAddrV4::new(ip, port);
                let want = to.key.clone();
                jobs.push((
                    v,
                    f,
                    t,
                    std::thread::spawn(move || probe(sock, proto, addr, &want)),
                ));
            }
        }
    }
    let mut observed: Vec<Observed> = vias
        .iter()
        .map(|&via| Observed {
            via,
            table: Table::new(
                &pods.iter().map(|p| p.key.clone()).collect::<Vec<_>>(),
                None,
            ),
            failures: Vec::new(),
        })
        .collect();
    for (v, f, t, job) in jobs {
        let result = match job.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        let obs = &mut observed[v];
        obs.table.set_at(f, t, result.is_ok());
        if let Err(what) = result {
            obs.failures
                .push(format!("{} -> {}: {what}", pods[f].key, pods[t].key));
        }
    }
    Ok(observed)
}
