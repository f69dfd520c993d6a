//! What the `NodePort` programs treat as "this node": the address SNAT'd
//! traffic leaves with, in the pinned node-config map.

use std::{net::Ipv4Addr, path::Path};

use aya::maps::{Array, Map};
use skep_ebpf_common::{NodeConfig, map};

use crate::{DatapathError, pinned};

/// Sets this node's underlay address (`None` clears it: flows to backends on
/// other nodes are then dropped instead of SNAT'd). The agent calls it at
/// start, before traffic can arrive; the value survives restarts in the pin.
#[tracing::instrument(skip(pin_dir))]
pub fn set_node_address(pin_dir: &Path, address: Option<Ipv4Addr>) -> Result<(), DatapathError> {
    let mut config: Array<_, NodeConfig> =
        Array::try_from(Map::Array(pinned::open(pin_dir, map::NODE_CONFIG)?))
            .map_err(|e| pinned::map_err(map::NODE_CONFIG, e))?;
    let value = NodeConfig {
        ipv4: address.map_or(0, |a| u32::from(a).to_be()),
        flags: 0,
    };
    config
        .set(0, value, 0)
        .map_err(|e| pinned::map_err(map::NODE_CONFIG, e))?;
    tracing::info!("node address set for NodePort SNAT");
    Ok(())
}

/// This node's address as the pinned node-config map holds it.
pub fn node_address(pin_dir: &Path) -> Result<Option<Ipv4Addr>, DatapathError> {
    let config: Array<_, NodeConfig> =
        Array::try_from(Map::Array(pinned::open(pin_dir, map::NODE_CONFIG)?))
            .map_err(|e| pinned::map_err(map::NODE_CONFIG, e))?;
    let value = config
        .get(&0, 0)
        .map_err(|e| pinned::map_err(map::NODE_CONFIG, e))?;
    Ok((value.ipv4 != 0).then(|| Ipv4Addr::from(u32::from_be(value.ipv4))))
}
