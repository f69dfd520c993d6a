//! Three replicas in one process on loopback gRPC and temp dirs: replication,
//! follower reads and forwarded writes, leader failover, catch-up.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use tempfile::TempDir;

use crate::store_test::init_tracing;
use crate::{CompactionConfig, RaftTuning, ReadConsistency, Store, StoreConfig};

struct Replica {
    id: u64,
    dir: TempDir,
    addr: SocketAddr,
}

fn free_addr() -> Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

fn config(replica: &Replica, peers: &BTreeMap<u64, String>) -> StoreConfig {
    let mut config = StoreConfig::single(replica.dir.path());
    config.node_id = replica.id;
    config.listen_addr = Some(replica.addr);
    config.peers = peers.clone();
    config.compaction = CompactionConfig {
        retain_revisions: None,
        retain_for: None,
        interval: Duration::from_secs(3600),
    };
    config.raft = RaftTuning {
        heartbeat_interval: Duration::from_millis(50),
        election_timeout_min: Duration::from_millis(300),
        election_timeout_max: Duration::from_millis(600),
        snapshot_after_logs: 1000,
    };
    config
}

/// Waits until every store agrees on a leader among them; returns its id.
async fn agreed_leader(stores: &[&Store]) -> Result<u64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let leaders: Vec<_> = stores.iter().map(|s| s.leader()).collect();
        if let Some(Some(leader)) = leaders.first()
            && leaders.iter().all(|l| *l == Some(*leader))
            && stores.iter().any(|s| s.node_id() == *leader)
        {
            return Ok(*leader);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("no agreed leader: {leaders:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for_revision(store: &Store, revision: u64) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while store.current_revision() < revision {
        if tokio::time::Instant::now() > deadline {
            bail!(
                "node {} stuck at revision {}",
                store.node_id(),
                store.current_revision()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_replicate_and_survive_a_leader_kill() -> Result<()> {
    init_tracing();
    let replicas: Vec<Replica> = (1..=3)
        .map(|id| {
            Ok(Replica {
                id,
                dir: tempfile::tempdir()?,
                addr: free_addr()?,
            })
        })
        .collect::<Result<_>>()?;
    let peers: BTreeMap<u64, String> = replicas
        .iter()
        .map(|r| (r.id, r.addr.to_string()))
        .collect();

    tracing::info!("--- starting three replicas");
    let opened = futures_join(replicas.iter().map(|r| Store::open(config(r, &peers)))).await;
    let mut stores: BTreeMap<u64, Store> = BTreeMap::new();
    for (replica, store) in replicas.iter().zip(opened) {
        stores.insert(replica.id, store?);
    }
    let all: Vec<&Store> = stores.values().collect();
    let leader_id = agreed_leader(&all).await?;
    tracing::info!(leader_id, "--- leader elected");

    let leader = &stores[&leader_id];
    let kv = leader
        .create("/registry/pods/default/a", "{\"n\":1}")
        .await?;
    assert_eq!(kv.mod_revision, 1);

    tracing::info!("--- reading on followers");
    for (id, store) in &stores {
        if *id == leader_id {
            continue;
        }
        // Linearizable on a follower: read index from the leader, then wait.
        let got = store
            .get("/registry/pods/default/a", ReadConsistency::Linearizable)
            .await?
            .with_context(|| format!("key missing on follower {id}"))?;
        assert_eq!(got.value, Bytes::from_static(b"{\"n\":1}"));
        assert_eq!(got.mod_revision, 1);
    }

    tracing::info!("--- writing through a follower");
    let follower_id = *stores
        .keys()
        .find(|id| **id != leader_id)
        .context("a follower")?;
    let follower = &stores[&follower_id];
    let mut watch = follower.watch("/registry/pods/", 0)?;
    let kv = follower
        .update("/registry/pods/default/a", "{\"n\":2}", Some(1))
        .await?;
    assert_eq!(kv.mod_revision, 2);
    for expected in [1, 2] {
        let event = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await?
            .context("watch ended")??;
        assert_eq!(event.revision(), expected);
    }

    tracing::info!(leader_id, "--- killing the leader");
    let old_leader = stores.remove(&leader_id).context("leader store")?;
    old_leader.shutdown().await?;
    drop(old_leader);
    let survivors: Vec<&Store> = stores.values().collect();
    let new_leader_id = agreed_leader(&survivors).await?;
    assert_ne!(new_leader_id, leader_id);
    tracing::info!(new_leader_id, "--- new leader elected");
    let kv = stores[&new_leader_id]
        .create("/registry/pods/default/b", "{}")
        .await?;
    assert_eq!(kv.mod_revision, 3, "revisions continue across leaders");
    for store in stores.values() {
        wait_for_revision(store, 3).await?;
        let got = store
            .get("/registry/pods/default/b", ReadConsistency::Linearizable)
            .await?;
        assert!(
            got.is_some(),
            "node {} misses the write after failover",
            store.node_id()
        );
    }

    tracing::info!(leader_id, "--- restarting the old leader");
    let replica = replicas
        .iter()
        .find(|r| r.id == leader_id)
        .context("replica")?;
    let restarted = Store::open(config(replica, &peers)).await?;
    wait_for_revision(&restarted, 3).await?;
    let got = restarted
        .get("/registry/pods/default/b", ReadConsistency::Local)
        .await?
        .context("restarted replica caught up")?;
    assert_eq!(got.mod_revision, 3);
    stores.insert(leader_id, restarted);

    tracing::info!("--- shutting down");
    for store in stores.values() {
        store.shutdown().await?;
    }
    Ok(())
}

/// Runs futures concurrently and returns their outputs in order.
async fn futures_join<F: Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.expect("store open task panicked"));
    }
    outputs
}
