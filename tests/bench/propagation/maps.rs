//! Every node's pinned policy maps, read back whole with the agent's own
//! [`skep_node::policy::read_state`] and judged with the compiler's
//! [`skep_policy::allows`] (the TC programs' lookups done on the read-back
//! state): a node "shows" a change once its maps give the flow from the
//! client to the node's own server the new verdict.

use std::{
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use skep_datapath::policy::PolicyMaps;
use skep_node::policy::read_state;
use skep_policy::PROTO_TCP;

/// How often the maps are read.
pub const POLL: Duration = Duration::from_millis(5);

/// One node's maps and the server pod on it.
pub struct NodeMaps {
    maps: PolicyMaps,
    server: Ipv4Addr,
}

impl NodeMaps {
    /// Opens the maps pinned in `pin_dir`, for the flows to `server`.
    pub fn open(pin_dir: &Path, server: Ipv4Addr) -> anyhow::Result<Self> {
        let maps = PolicyMaps::open(pin_dir)
            .with_context(|| format!("failed to open the policy maps in {}", pin_dir.display()))?;
        Ok(Self { maps, server })
    }

    /// Whether the maps let a new TCP flow `client` → server:`port` pass.
    fn passes(&self, client: Ipv4Addr, port: u16) -> anyhow::Result<bool> {
        let state = read_state(&self.maps)?;
        Ok(skep_policy::allows(
            &state,
            client,
            self.server,
            PROTO_TCP,
            port,
        ))
    }
}

/// Polls every node until its maps judge `client` → its server:`port` as
/// `passed`; returns the longest time from `since` (`None` when `timeout`
/// passed first).
pub fn wait(
    nodes: &[NodeMaps],
    client: Ipv4Addr,
    port: u16,
    passed: bool,
    since: Instant,
    timeout: Duration,
) -> anyhow::Result<Option<Duration>> {
    let mut shown: Vec<Option<Duration>> = vec![None; nodes.len()];
    loop {
        for (node, shown) in nodes.iter().zip(&mut shown) {
            if shown.is_none() && node.passes(client, port)? == passed {
                *shown = Some(since.elapsed());
            }
        }
        if shown.iter().all(Option::is_some) {
            return Ok(shown.into_iter().flatten().max());
        }
        if since.elapsed() > timeout {
            return Ok(None);
        }
        std::thread::sleep(POLL);
    }
}
