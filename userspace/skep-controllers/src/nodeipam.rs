//! The node IPAM controller (kube-controller-manager's `nodeipam` with the
//! range allocator): every node gets a pod CIDR (`spec.podCIDR`,
//! `spec.podCIDRs`) carved out of the cluster CIDR, one `/24` each by
//! default. The allocation lives only in the Node objects themselves: a CIDR
//! is taken while some node carries it, and free again once that node is
//! deleted. One worker, reading the nodes from the store on each step, so
//! two nodes never get the same range.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use skep_objects::Objects;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{ControllerError, is_not_found};
use crate::informer::{Informers, object_key};
use crate::{ControllerConfig, Reconciler, Requeue, WorkQueue, spawn_workers};

/// The cluster CIDR pods are addressed from unless configured otherwise.
pub const DEFAULT_CLUSTER_CIDR: &str = "10.244.0.0/16";
/// The prefix length of each node's pod CIDR unless configured otherwise.
pub const DEFAULT_NODE_MASK: u8 = 24;

/// Hands each node a pod CIDR.
pub struct NodeIpamController {
    objects: Objects,
    network: u32,
    cluster_prefix: u8,
    node_prefix: u8,
}

/// Parses `a.b.c.d/n` into the network (host bits cleared) and the prefix.
fn parse_cidr(cidr: &str) -> Option<(u32, u8)> {
    let (addr, prefix) = cidr.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    Some((u32::from(addr) & mask, prefix))
}

impl NodeIpamController {
    /// Registers with the node informer and starts one worker.
    pub fn start(
        objects: &Objects,
        informers: &Informers,
        config: &ControllerConfig,
        shutdown: &CancellationToken,
    ) -> Vec<JoinHandle<()>> {
        let queue = WorkQueue::new();
        let nodes = informers.of_type::<Node>();
        {
            let queue = queue.clone();
            nodes.add_handler(Box::new(move |_old, new| {
                if let Some(obj) = new.filter(|o| {
                    skep_api::object::get_str(o, &["spec", "podCIDR"]).is_none_or(str::is_empty)
                }) {
                    queue.add(object_key(obj));
                }
            }));
        }
        let (network, cluster_prefix) = parse_cidr(&config.cluster_cidr).unwrap_or_else(|| {
            tracing::error!(cidr = %config.cluster_cidr, "invalid cluster CIDR; using the default");
            (u32::from(Ipv4Addr::new(10, 244, 0, 0)), 16)
        });
        let controller = Arc::new(Self {
            objects: objects.clone(),
            network,
            cluster_prefix,
            node_prefix: config.node_cidr_mask.max(cluster_prefix).min(30),
        });
        // One worker: allocation reads all nodes and must not race itself.
        spawn_workers(&controller, &queue, vec![nodes], 1, shutdown)
    }
}

/// The first `/node_prefix` range of `network/cluster_prefix` no node in
/// `taken` holds.
fn first_free(
    network: u32,
    cluster_prefix: u8,
    node_prefix: u8,
    taken: &BTreeSet<String>,
) -> Option<String> {
    let count = 1u64 << (node_prefix - cluster_prefix);
    let step = 1u64 << (32 - node_prefix);
    (0..count).find_map(|i| {
        let start = u32::try_from(u64::from(network) + i * step).ok()?;
        let cidr = format!("{}/{node_prefix}", Ipv4Addr::from(start));
        (!taken.contains(&cidr)).then_some(cidr)
    })
}

impl Reconciler for NodeIpamController {
    const NAME: &'static str = "node-ipam-controller";

    #[tracing::instrument(skip_all, fields(node = %key))]
    async fn reconcile(&self, key: &str) -> Result<Requeue, ControllerError> {
        let (nodes, _) = self
            .objects
            .list_typed::<Node>("", "")
            .await
            .map_err(|e| ControllerError::api("list nodes", key, e))?;
        let Some(node) = nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(key))
        else {
            return Ok(None);
        };
        if node
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_deref())
            .is_some_and(|c| !c.is_empty())
        {
            return Ok(None);
        }
        let taken: BTreeSet<String> = nodes
            .iter()
            .filter_map(|n| n.spec.as_ref()?.pod_cidr.clone())
            .collect();
        let Some(cidr) = first_free(self.network, self.cluster_prefix, self.node_prefix, &taken)
        else {
            tracing::error!(node = %key, "cluster CIDR exhausted; node gets no pod CIDR");
            return Ok(Some(std::time::Duration::from_secs(30)));
        };
        let mut updated = node.clone();
        let spec = updated.spec.get_or_insert_default();
        spec.pod_cidr = Some(cidr.clone());
        spec.pod_cidrs = Some(vec![cidr.clone()]);
        match self.objects.update_typed(&updated, "", Self::NAME).await {
            Ok(_) => tracing::info!(node = %key, %cidr, "allocated pod CIDR"),
            Err(err) if is_not_found(&err) => {}
            Err(err) => return Err(ControllerError::api("set pod CIDR of", key, err)),
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::testing::{CONVERGE, Harness, Result, wait_for};

    fn node(name: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            ..Node::default()
        }
    }

    async fn cidr_of(h: &Harness, name: &str) -> Result<String> {
        wait_for(&format!("pod CIDR of {name}"), CONVERGE, || async {
            let n = h.objects.get_typed::<Node>("", name).await?;
            Ok(n.spec.and_then(|s| s.pod_cidr))
        })
        .await
    }

    #[test]
    fn ranges_are_carved_in_order() {
        let net = u32::from(Ipv4Addr::new(10, 244, 0, 0));
        let mut taken = BTreeSet::new();
        assert_eq!(
            first_free(net, 16, 24, &taken).as_deref(),
            Some("10.244.0.0/24")
        );
        taken.insert("10.244.0.0/24".to_owned());
        assert_eq!(
            first_free(net, 16, 24, &taken).as_deref(),
            Some("10.244.1.0/24")
        );
        assert_eq!(first_free(net, 24, 24, &taken), None);
        assert_eq!(parse_cidr("10.244.7.9/16"), Some((0x0af4_0000, 16)));
        assert_eq!(parse_cidr("nonsense"), None);
    }

    #[tokio::test]
    async fn nodes_get_distinct_cidrs_and_freed_ones_are_reused() -> Result<()> {
        let h = Harness::start(ControllerConfig::default()).await?;
        for n in ["a", "b", "c"] {
            h.objects.create_typed(&node(n), "test").await?;
        }
        let (a, b, c) = (
            cidr_of(&h, "a").await?,
            cidr_of(&h, "b").await?,
            cidr_of(&h, "c").await?,
        );
        let all: BTreeSet<_> = [&a, &b, &c].into_iter().collect();
        assert_eq!(all.len(), 3, "{a} {b} {c}");
        for cidr in &all {
            assert!(
                cidr.starts_with("10.244.") && cidr.ends_with(".0/24"),
                "{cidr}"
            );
        }
        // Deleting b frees its range for the next node.
        h.objects
            .delete_typed::<Node>("", "b", &skep_api::delete::DeleteOptions::default())
            .await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
        h.objects.create_typed(&node("d"), "test").await?;
        assert_eq!(cidr_of(&h, "d").await?, b);
        // A node's range does not change once set.
        assert_eq!(cidr_of(&h, "a").await?, a);
        Ok(())
    }
}
