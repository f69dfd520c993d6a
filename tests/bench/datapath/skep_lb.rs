//! skep's side of `bench datapath`: N `ClusterIP` Services written through
//! the API (in parallel, as kube's clients write), and the time until every
//! node's pinned services map holds all of them with every backend. The
//! maps are read the way the socket hooks read them: one lookup of each
//! service's slot-0 key, repeated only for those not there yet, so polling
//! costs little next to what it measures.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use futures::StreamExt as _;
use serde_json::json;
use skep_ebpf_common::{Family, ServiceKey, ServiceValue, map};

use super::backend::{APP, NAMESPACE, PORT};

/// skep's VIPs for round `round` (0, 1, 2 …): `10.(104+round).0.0/16`,
/// inside the service CIDR `10.96.0.0/12` and away from the addresses the
/// allocator hands out first.
#[must_use]
pub fn vip_base(round: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 104 + u8::try_from(round).unwrap_or(0), 0, 0)
}

/// Parallel API writes in flight.
const WRITERS: usize = 32;
/// When not one Service has reached a map by then, none will.
const NOTHING_YET: Duration = Duration::from_secs(20);
/// How often the maps are polled.
const POLL: Duration = Duration::from_millis(5);

/// When the services were written and when every node had them.
pub struct Programmed {
    /// From the first write to the last write's response.
    pub writes: Duration,
    /// From the first write to every node's map holding every service.
    pub ready: Duration,
}

/// The pinned services map of `pin_dir`, or why there is none.
fn open(pin_dir: &Path) -> anyhow::Result<BpfHashMap<MapData, ServiceKey, ServiceValue>> {
    let path = pin_dir.join(map::SERVICES);
    if !path.exists() {
        bail!(
            "no pinned services map at {} (the agent does not load the datapath)",
            path.display()
        );
    }
    let data = MapData::from_pin(&path).with_context(|| format!("open {}", path.display()))?;
    Ok(BpfHashMap::try_from(Map::HashMap(data))?)
}

/// Fails unless every node has a pinned services map.
pub fn check_maps(pin_dirs: &[PathBuf]) -> anyhow::Result<()> {
    for dir in pin_dirs {
        open(dir)?;
    }
    Ok(())
}

fn slot0(vip: Ipv4Addr, port: u16) -> ServiceKey {
    ServiceKey {
        address: u32::from(vip).to_be(),
        port: port.to_be(),
        proto: 6,
        family: Family::Ipv4 as u8,
        slot: 0,
        pad: 0,
    }
}

/// Polls every node's map until each of `vips` (port 80, TCP) is there with
/// `backends` backends; fails after `timeout` saying how far it got.
fn wait_programmed(
    pin_dirs: &[PathBuf],
    vips: &[Ipv4Addr],
    backends: u16,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut nodes = Vec::new();
    for dir in pin_dirs {
        let keys: Vec<ServiceKey> = vips.iter().map(|v| slot0(*v, 80)).collect();
        nodes.push((dir, open(dir)?, keys));
    }
    let started = Instant::now();
    loop {
        for (_, map, pending) in &mut nodes {
            pending.retain(|key| map.get(key, 0).map_or(true, |v| v.count != backends));
        }
        if nodes.iter().all(|(_, _, p)| p.is_empty()) {
            return Ok(());
        }
        if started.elapsed() > NOTHING_YET && nodes.iter().all(|(_, _, p)| p.len() == vips.len()) {
            bail!(
                "no Service reached any node's map {}s after the first write (does the agent program Services?)",
                NOTHING_YET.as_secs()
            );
        }
        if Instant::now() > deadline {
            let missing: Vec<String> = nodes
                .iter()
                .map(|(dir, _, p)| format!("{}: {} missing", dir.display(), p.len()))
                .collect();
            bail!(
                "services not in every node's map after {}s ({})",
                timeout.as_secs(),
                missing.join(", ")
            );
        }
        std::thread::sleep(POLL);
    }
}

fn service(name: &str, vip: Ipv4Addr) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"clusterIP": vip.to_string(), "selector": {"app": APP},
            "ports": [{"name": "tcp", "port": 80, "targetPort": PORT, "protocol": "TCP"}]}})
}

/// Writes `count` Services (`s<count>-<i>`, VIPs from `base`) through the
/// API and waits until every node's map has all of them with `backends`
/// backends.
pub async fn program(
    client: &reqwest::Client,
    api: &str,
    pin_dirs: &[PathBuf],
    count: usize,
    base: Ipv4Addr,
    backends: u16,
) -> anyhow::Result<(Programmed, Vec<SocketAddrV4>)> {
    let vips: Vec<Ipv4Addr> = (0..count)
        .map(|i| super::kube_proxy::vip(base, i))
        .collect();
    let url = format!("{api}/api/v1/namespaces/{NAMESPACE}/services");
    let start = Instant::now();
    let waiter = {
        let (pin_dirs, vips) = (pin_dirs.to_vec(), vips.clone());
        // Generous: this measures, it does not judge.
        let timeout = Duration::from_secs(60 + u64::try_from(count / 50).unwrap_or(0));
        tokio::task::spawn_blocking(move || {
            wait_programmed(&pin_dirs, &vips, backends, timeout).map(|()| start.elapsed())
        })
    };
    let mut writes = futures::stream::iter(vips.iter().enumerate())
        .map(|(i, vip)| {
            let body = service(&format!("s{count}-{i}"), *vip);
            let request = client.post(&url).json(&body).send();
            async move {
                let resp = request.await?;
                if !resp.status().is_success() {
                    let status = resp.status();
                    bail!("creating a Service: {status}: {}", resp.text().await?);
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(WRITERS);
    while let Some(result) = writes.next().await {
        result?;
    }
    let writes = start.elapsed();
    let ready = waiter.await??;
    let targets = vips.iter().map(|v| SocketAddrV4::new(*v, 80)).collect();
    Ok((Programmed { writes, ready }, targets))
}
