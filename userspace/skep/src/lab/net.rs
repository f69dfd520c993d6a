//! The lab's underlay: a bridge in the host namespace, and per node a
//! network namespace joined to it by a veth (`eth0` inside, with the node's
//! address, loopback up, forwarding on, no default route).

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd as _;
use std::path::Path;

use anyhow::Context as _;
use futures::TryStreamExt as _;
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth};

use super::plan::{LabNode, LabState};

/// The IPv4 networks of the host's addresses (address, prefix length).
pub fn host_networks() -> Vec<(Ipv4Addr, u8)> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|ifa| {
            let ip = ifa.address?.as_sockaddr_in()?.ip();
            let mask = ifa.netmask?.as_sockaddr_in()?.ip();
            let prefix = u8::try_from(u32::from(mask).count_ones()).ok()?;
            Some((ip, prefix))
        })
        .collect()
}

fn connect() -> anyhow::Result<Handle> {
    let (conn, handle, _) = rtnetlink::new_connection().context("failed to open netlink")?;
    tokio::spawn(conn);
    Ok(handle)
}

fn is_missing(err: &rtnetlink::Error) -> bool {
    matches!(err, rtnetlink::Error::NetlinkError(msg)
        if matches!(msg.raw_code().abs(), libc::ENODEV | libc::ENOENT | libc::ESRCH))
}

async fn index_of(handle: &Handle, name: &str) -> anyhow::Result<Option<u32>> {
    match handle
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_next()
        .await
    {
        Ok(link) => Ok(link.map(|l| l.header.index)),
        Err(e) if is_missing(&e) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("failed to look up link {name}")),
    }
}

/// Creates the bridge with the host's underlay address, up.
pub async fn create_bridge(state: &LabState) -> anyhow::Result<()> {
    let handle = connect()?;
    let name = &state.bridge;
    handle
        .link()
        .add(LinkBridge::new(name).build())
        .execute()
        .await
        .with_context(|| format!("failed to create bridge {name}"))?;
    let index = index_of(&handle, name)
        .await?
        .with_context(|| format!("bridge {name} vanished"))?;
    handle
        .address()
        .add(index, IpAddr::V4(state.host_ip), state.prefix)
        .execute()
        .await
        .with_context(|| format!("failed to address bridge {name}"))?;
    Ok(())
}

/// Creates node `node`'s namespace and wires it to the bridge.
pub async fn create_node(state: &LabState, node: &LabNode) -> anyhow::Result<()> {
    skep_runtime::netns::create(&node.netns, Path::new("/proc"))
        .with_context(|| format!("failed to create namespace {}", node.netns.display()))?;
    let handle = connect()?;
    let peer = format!("{}p", node.host_veth);
    handle
        .link()
        .add(LinkVeth::new(&node.host_veth, &peer).build())
        .execute()
        .await
        .with_context(|| format!("failed to create veth {}", node.host_veth))?;
    let bridge = index_of(&handle, &state.bridge)
        .await?
        .with_context(|| format!("bridge {} is gone", state.bridge))?;
    handle
        .link()
        .set(
            LinkUnspec::new_with_name(&node.host_veth)
                .controller(bridge)
                .up()
                .build(),
        )
        .execute()
        .await
        .with_context(|| format!("failed to attach {} to the bridge", node.host_veth))?;
    let ns = std::fs::File::open(&node.netns)
        .with_context(|| format!("failed to open {}", node.netns.display()))?;
    handle
        .link()
        .set(
            LinkUnspec::new_with_name(&peer)
                .setns_by_fd(ns.as_raw_fd())
                .build(),
        )
        .execute()
        .await
        .with_context(|| format!("failed to move {peer} into {}", node.name))?;
    let (ip, prefix) = (node.ip, state.prefix);
    skep_runtime::netns::run_in(Some(node.netns.clone()), move || {
        inside_node(peer, ip, prefix)
    })
    .await
    .with_context(|| format!("failed to enter namespace of {}", node.name))?
    .with_context(|| format!("failed to set up the network of {}", node.name))
}

/// Inside the node's namespace: `lo` up, the veth renamed `eth0` with the
/// node's address, forwarding on, and reverse-path filtering off (packets
/// from other nodes' pods arrive with pod source addresses; the routes to
/// them are the agent's business, and a strict filter would drop packets
/// that arrive before a route does).
async fn inside_node(peer: String, ip: Ipv4Addr, prefix: u8) -> anyhow::Result<()> {
    let handle = connect()?;
    handle
        .link()
        .set(LinkUnspec::new_with_name("lo").up().build())
        .execute()
        .await
        .context("failed to bring lo up")?;
    let index = index_of(&handle, &peer)
        .await?
        .with_context(|| format!("{peer} did not arrive"))?;
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(index)
                .name("eth0".to_owned())
                .build(),
        )
        .execute()
        .await
        .context("failed to rename the underlay veth to eth0")?;
    handle
        .address()
        .add(index, IpAddr::V4(ip), prefix)
        .execute()
        .await
        .context("failed to address eth0")?;
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .context("failed to bring eth0 up")?;
    for (key, value) in [
        ("ipv4/ip_forward", "1"),
        ("ipv4/conf/all/rp_filter", "0"),
        ("ipv4/conf/default/rp_filter", "0"),
        ("ipv4/conf/eth0/rp_filter", "0"),
    ] {
        let path = Path::new("/proc/sys/net").join(key);
        std::fs::write(&path, value)
            .with_context(|| format!("failed to write {}", path.display()))?;
    }
    Ok(())
}

/// Deletes link `name` in the host namespace; missing is fine.
pub async fn delete_link(name: &str) -> anyhow::Result<()> {
    let handle = connect()?;
    let Some(index) = index_of(&handle, name).await? else {
        return Ok(());
    };
    match handle.link().del(index).execute().await {
        Ok(()) => Ok(()),
        Err(e) if is_missing(&e) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("failed to delete link {name}")),
    }
}
