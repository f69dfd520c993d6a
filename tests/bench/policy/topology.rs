//! One node of `bench policy`: a node network namespace with the three
//! measured pods (client, server, control), each in its own namespace on a
//! veth, wired the way skep-node's sandbox wires pods (Calico's scheme:
//! host veth `cali…` with `proxy_arp` and a /32 route, the pod's default
//! route via 169.254.1.1 with a permanent neighbour entry). The kernel
//! forwards between them (`ip_forward=1`) unless skep's TC programs are
//! attached. Namespaces (and with them veths, routes, ipsets and rules)
//! are deleted on drop. Nothing has a route out of the machine.

use std::{net::Ipv4Addr, path::PathBuf};

use skep_e2e::netns::NetNs;

use super::{calico, workload};

/// One measured pod.
pub struct PodNet {
    /// `namespace/name` of its Pod object.
    pub key: (String, String),
    /// Its network namespace.
    pub netns: NetNs,
    /// The host side of its veth, in the node's namespace.
    pub host_veth: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// The pod side's MAC.
    pub pod_mac: [u8; 6],
    /// The host side's MAC.
    pub host_mac: [u8; 6],
}

impl PodNet {
    /// The namespace file the client process enters.
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(self.netns.name())
    }
}

/// The node and its pods. Dropped pods first, then the node.
pub struct Node {
    /// Client, server, control, in that order.
    pub pods: Vec<PodNet>,
    /// The node's namespace.
    pub netns: NetNs,
}

fn mac(last: u8, host: bool) -> [u8; 6] {
    [0x02, 0x5e, 0x00, u8::from(host), 0x01, last]
}

fn fmt_mac(mac: [u8; 6]) -> String {
    skep_datapath::Mac(mac).to_string()
}

impl Node {
    /// Builds the node namespace (`prefix` names it) and the three pods.
    pub fn build(prefix: &str) -> anyhow::Result<Self> {
        let netns = NetNs::new(prefix)?;
        skep_e2e::process::run(
            "ip",
            &[
                "netns",
                "exec",
                netns.name(),
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ],
        )?;
        let mut node = Self {
            pods: Vec::new(),
            netns,
        };
        for (name, ip) in [
            ("client", workload::CLIENT_IP),
            ("server", workload::SERVER_IP),
            ("control", workload::CONTROL_IP),
        ] {
            let pod = node.wire(name, ip)?;
            node.pods.push(pod);
        }
        Ok(node)
    }

    /// The client.
    pub fn client(&self) -> &PodNet {
        &self.pods[0]
    }

    fn wire(&self, name: &str, ip: Ipv4Addr) -> anyhow::Result<PodNet> {
        let pod = PodNet {
            key: (workload::NAMESPACE.to_owned(), name.to_owned()),
            netns: NetNs::new(&format!("{}p", &self.netns.name()[..3]))?,
            host_veth: calico::interface(workload::NAMESPACE, name),
            ip,
            pod_mac: mac(ip.octets()[3], false),
            host_mac: mac(ip.octets()[3], true),
        };
        let (node, host, ns) = (&self.netns, pod.host_veth.as_str(), pod.netns.name());
        node.ip(&[
            "link",
            "add",
            host,
            "address",
            &fmt_mac(pod.host_mac),
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "address",
            &fmt_mac(pod.pod_mac),
            "netns",
            ns,
        ])?;
        skep_e2e::process::run(
            "ip",
            &[
                "netns",
                "exec",
                node.name(),
                "sysctl",
                "-qw",
                &format!("net.ipv4.conf.{host}.proxy_arp=1"),
            ],
        )?;
        node.ip(&["link", "set", host, "up"])?;
        node.ip(&[
            "route",
            "add",
            &format!("{ip}/32"),
            "dev",
            host,
            "scope",
            "link",
        ])?;
        let p = &pod.netns;
        p.ip(&["addr", "add", &format!("{ip}/32"), "dev", "eth0"])?;
        p.ip(&["link", "set", "eth0", "up"])?;
        p.ip(&[
            "neigh",
            "add",
            "169.254.1.1",
            "lladdr",
            &fmt_mac(pod.host_mac),
            "dev",
            "eth0",
            "nud",
            "permanent",
        ])?;
        p.ip(&[
            "route",
            "add",
            "default",
            "via",
            "169.254.1.1",
            "dev",
            "eth0",
            "onlink",
        ])?;
        // Many short connections a second: reuse TIME_WAIT ports, use them all.
        for (key, value) in [
            ("net.ipv4.tcp_tw_reuse", "1"),
            ("net.ipv4.ip_local_port_range", "1024 65535"),
        ] {
            skep_e2e::process::run(
                "ip",
                &[
                    "netns",
                    "exec",
                    ns,
                    "sysctl",
                    "-qw",
                    &format!("{key}={value}"),
                ],
            )?;
        }
        Ok(pod)
    }
}
