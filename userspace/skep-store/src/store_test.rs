//! Single-replica store tests: revisions, preconditions, MVCC pages, watch,
//! compaction, restart.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use tempfile::TempDir;

use crate::{
    CompactionConfig, EventKind, ListRequest, ReadConsistency, Store, StoreConfig, StoreError,
    WatchStream,
};

pub(crate) fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "skep_store=info,openraft=warn".into()),
        )
        .try_init();
}

fn config(dir: &TempDir) -> StoreConfig {
    let mut config = StoreConfig::single(dir.path());
    config.compaction = CompactionConfig {
        retain_revisions: None,
        retain_for: None,
        interval: Duration::from_secs(3600),
    };
    config
}

async fn open(dir: &TempDir) -> Result<Store> {
    Ok(Store::open(config(dir)).await?)
}

const L: ReadConsistency = ReadConsistency::Linearizable;

async fn next_event(watch: &mut WatchStream) -> Result<crate::Event> {
    match tokio::time::timeout(Duration::from_secs(10), watch.next()).await {
        Ok(Some(event)) => Ok(event?),
        Ok(None) => bail!("watch ended"),
        Err(_) => bail!("no watch event within 10s"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_take_consecutive_revisions_and_failed_preconditions_take_none() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let store = open(&dir).await?;

    let a = store
        .create("/registry/pods/default/a", "{\"v\":1}")
        .await?;
    assert_eq!((a.create_revision, a.mod_revision, a.version), (1, 1, 1));
    assert!(matches!(
        store.create("/registry/pods/default/a", "{}").await,
        Err(StoreError::AlreadyExists { .. })
    ));
    let b = store.create("/registry/pods/default/b", "{}").await?;
    assert_eq!(
        b.mod_revision, 2,
        "a failed create must not consume a revision"
    );

    match store
        .update("/registry/pods/default/a", "{\"v\":2}", Some(7))
        .await
    {
        Err(StoreError::Conflict {
            current, expected, ..
        }) => assert_eq!((current, expected), (1, 7)),
        other => bail!("expected a conflict, got {other:?}"),
    }
    let a2 = store
        .update("/registry/pods/default/a", "{\"v\":2}", Some(1))
        .await?;
    assert_eq!((a2.create_revision, a2.mod_revision, a2.version), (1, 3, 2));
    let a3 = store
        .update("/registry/pods/default/a", "{\"v\":3}", None)
        .await?;
    assert_eq!(a3.mod_revision, 4);

    assert!(matches!(
        store
            .update("/registry/pods/default/nope", "{}", None)
            .await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.delete("/registry/pods/default/a", Some(3)).await,
        Err(StoreError::Conflict { current: 4, .. })
    ));
    let deleted = store.delete("/registry/pods/default/a", Some(4)).await?;
    assert_eq!(deleted.revision, 5);
    assert_eq!(deleted.prev.value, Bytes::from_static(b"{\"v\":3}"));
    assert_eq!(store.get("/registry/pods/default/a", L).await?, None);
    assert!(matches!(
        store.delete("/registry/pods/default/a", None).await,
        Err(StoreError::NotFound { .. })
    ));

    let recreated = store
        .create("/registry/pods/default/a", "{\"v\":4}")
        .await?;
    assert_eq!((recreated.create_revision, recreated.version), (6, 1));
    assert_eq!(store.current_revision(), 6);
    let many = store
        .get_many(
            &[
                Bytes::from_static(b"/registry/pods/default/b"),
                Bytes::from_static(b"/registry/pods/default/nope"),
                Bytes::from_static(b"/registry/pods/default/a"),
            ],
            L,
        )
        .await?;
    assert_eq!(many, vec![Some(b), None, Some(recreated.clone())]);
    let got = store
        .get("/registry/pods/default/a", ReadConsistency::Local)
        .await?
        .context("recreated key")?;
    assert_eq!(got, recreated);
    store.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_stay_consistent_at_the_first_page_revision() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let store = open(&dir).await?;
    for i in 0..10 {
        store
            .create(format!("/registry/pods/ns/p{i}"), format!("v{i}"))
            .await?;
    }
    store.create("/registry/pods/ns2/other", "x").await?;
    store.create("/registry/pods/n", "x").await?;

    let prefix = Bytes::from_static(b"/registry/pods/ns/");
    let first = store
        .list(
            ListRequest {
                prefix: prefix.clone(),
                limit: 4,
                ..ListRequest::default()
            },
            L,
        )
        .await?;
    assert_eq!(first.revision, 12);
    assert!(first.more);
    let keys: Vec<_> = first.items.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(
        keys,
        ["p0", "p1", "p2", "p3"].map(|k| Bytes::from(format!("/registry/pods/ns/{k}")))
    );

    // Changes after the first page must not show in later pages.
    store
        .update("/registry/pods/ns/p5", "changed", None)
        .await?;
    store.delete("/registry/pods/ns/p6", None).await?;
    store.create("/registry/pods/ns/p45", "new").await?;

    let mut all = first.items.clone();
    let mut start_after = first.items.last().map(|kv| kv.key.clone());
    loop {
        let page = store
            .list(
                ListRequest {
                    prefix: prefix.clone(),
                    start_after: start_after.clone(),
                    limit: 4,
                    revision: Some(first.revision),
                },
                L,
            )
            .await?;
        assert_eq!(page.revision, first.revision);
        all.extend(page.items.iter().cloned());
        start_after = page.items.last().map(|kv| kv.key.clone());
        if !page.more {
            break;
        }
    }
    let values: Vec<_> = all
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
        .collect();
    assert_eq!(values, (0..10).map(|i| format!("v{i}")).collect::<Vec<_>>());

    let now = store
        .list(
            ListRequest {
                prefix,
                ..ListRequest::default()
            },
            L,
        )
        .await?;
    assert_eq!(now.revision, 15);
    assert_eq!(now.items.len(), 10, "p6 deleted, p45 added");
    assert!(
        now.items
            .iter()
            .any(|kv| kv.key.as_ref() == b"/registry/pods/ns/p45")
    );
    assert!(
        !now.items
            .iter()
            .any(|kv| kv.key.as_ref() == b"/registry/pods/ns/p6")
    );

    assert!(matches!(
        store
            .list(
                ListRequest {
                    revision: Some(99),
                    ..ListRequest::default()
                },
                L
            )
            .await,
        Err(StoreError::FutureRevision {
            requested: 99,
            current: 15
        })
    ));
    store.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_replays_history_then_follows_live_in_order() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let store = open(&dir).await?;
    store.create("/registry/pods/ns/a", "1").await?;
    store.create("/registry/services/ns/s", "x").await?;
    store.update("/registry/pods/ns/a", "2", None).await?;

    let mut watch = store.watch("/registry/pods/", 0)?;
    let first = next_event(&mut watch).await?;
    assert_eq!(
        (first.kind, first.revision(), first.prev_kv.clone()),
        (EventKind::Put, 1, None)
    );
    let second = next_event(&mut watch).await?;
    assert_eq!(second.revision(), 3);
    assert_eq!(
        second.prev_kv.context("prev of update")?.value,
        Bytes::from_static(b"1")
    );

    store.delete("/registry/pods/ns/a", None).await?;
    store.create("/registry/services/ns/t", "x").await?;
    store.create("/registry/pods/ns/b", "1").await?;
    let deleted = next_event(&mut watch).await?;
    assert_eq!((deleted.kind, deleted.revision()), (EventKind::Delete, 4));
    assert_eq!(deleted.kv.key, Bytes::from_static(b"/registry/pods/ns/a"));
    assert_eq!(deleted.prev_kv.context("prev of delete")?.mod_revision, 3);
    let created = next_event(&mut watch).await?;
    assert_eq!(created.revision(), 6);

    // A watch from the middle sees only later events.
    let mut later = store.watch("/registry/", 4)?;
    let revisions = [
        next_event(&mut later).await?.revision(),
        next_event(&mut later).await?.revision(),
    ];
    assert_eq!(revisions, [5, 6]);
    store.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_watcher_loses_nothing() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let mut config = config(&dir);
    config.watch_hub_capacity = 2;
    let store = Store::open(config).await?;
    let mut watch = store.watch("/k/", 0)?;
    // Far more than the hub (2 batches) and the stream buffer hold.
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..300 {
                    store.create(format!("/k/{w}/{i}"), "v").await?;
                }
                Ok::<_, StoreError>(())
            })
        })
        .collect();
    for writer in writers {
        writer.await??;
    }
    assert_eq!(store.current_revision(), 2400);
    for expected in 1..=2400 {
        let event = next_event(&mut watch).await?;
        ensure!(
            event.revision() == expected,
            "got revision {} expecting {expected}",
            event.revision()
        );
    }
    store.create("/k/live", "v").await?;
    assert_eq!(next_event(&mut watch).await?.revision(), 2401);
    store.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_drops_old_history_and_keeps_current_state() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let store = open(&dir).await?;
    store.create("/a", "1").await?; // 1
    store.create("/b", "1").await?; // 2
    store.update("/a", "2", None).await?; // 3
    store.delete("/b", None).await?; // 4
    store.create("/c", "1").await?; // 5
    store.update("/a", "3", None).await?; // 6

    assert_eq!(store.compact(4).await?, 4);
    assert_eq!(store.compacted_revision(), 4);
    assert_eq!(store.compact(2).await?, 4, "an older compaction is a no-op");
    assert!(matches!(
        store.compact(100).await,
        Err(StoreError::FutureRevision { .. })
    ));

    assert!(matches!(
        store
            .list(
                ListRequest {
                    revision: Some(3),
                    ..ListRequest::default()
                },
                L
            )
            .await,
        Err(StoreError::Compacted {
            requested: 3,
            compacted: 4
        })
    ));
    let at4 = store
        .list(
            ListRequest {
                revision: Some(4),
                ..ListRequest::default()
            },
            L,
        )
        .await?;
    let at4: Vec<_> = at4
        .items
        .iter()
        .map(|kv| (kv.key.clone(), kv.mod_revision))
        .collect();
    assert_eq!(at4, vec![(Bytes::from_static(b"/a"), 3)]);
    let now = store.list(ListRequest::default(), L).await?;
    assert_eq!(now.items.len(), 2);

    assert!(matches!(
        store.watch("", 3),
        Err(StoreError::Compacted { .. })
    ));
    let mut watch = store.watch("", 4)?;
    let event = next_event(&mut watch).await?;
    assert_eq!(event.revision(), 5);
    let event = next_event(&mut watch).await?;
    assert_eq!(event.revision(), 6);
    assert_eq!(
        event
            .prev_kv
            .context("prev kept by compaction")?
            .mod_revision,
        3
    );

    // Only the versions needed at revision 4 and later remain.
    let versions = crate::mvcc::Reader::latest(&store.inner_db()).list(b"", None, 0, 3)?;
    assert_eq!(
        versions.0.len(),
        1,
        "history below the compaction point is gone"
    );
    store.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_compacted_automatically_after_the_window() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let mut config = config(&dir);
    config.compaction = CompactionConfig {
        retain_revisions: Some(5),
        retain_for: None,
        interval: Duration::from_millis(50),
    };
    let store = Store::open(config).await?;
    for i in 0..20 {
        store.create(format!("/k{i}"), "v").await?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.compacted_revision() < 15 {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "not compacted: {}",
            store.compacted_revision()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(store.compacted_revision(), 15);
    assert!(matches!(
        store.watch("", 14),
        Err(StoreError::Compacted { .. })
    ));
    store.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_data_history_and_revisions() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    {
        let store = open(&dir).await?;
        for i in 0..50 {
            store.create(format!("/k/{i}"), format!("{i}")).await?;
        }
        store.delete("/k/7", None).await?;
        store.compact(10).await?;
        store.shutdown().await?;
    }
    tracing::info!("--- reopening");
    let store = open(&dir).await?;
    assert_eq!(store.current_revision(), 51);
    assert_eq!(store.compacted_revision(), 10);
    let kv = store.update("/k/3", "again", None).await?;
    assert_eq!(kv.mod_revision, 52, "revisions continue where they were");
    let list = store.list(ListRequest::default(), L).await?;
    assert_eq!(list.items.len(), 49);
    let mut watch = store.watch("/k/", 49)?;
    assert_eq!(next_event(&mut watch).await?.revision(), 50);
    let delete = next_event(&mut watch).await?;
    assert_eq!((delete.kind, delete.revision()), (EventKind::Delete, 51));
    assert_eq!(next_event(&mut watch).await?.revision(), 52);
    store.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_share_log_entries_but_get_their_own_results() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let store = open(&dir).await?;
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let same = store.create("/same", format!("{i}")).await;
                let own = store.create(format!("/own/{i}"), "v").await;
                (same, own)
            })
        })
        .collect();
    let mut winners = 0;
    let mut revisions = Vec::new();
    for task in tasks {
        let (same, own) = task.await?;
        match same {
            Ok(kv) => {
                winners += 1;
                revisions.push(kv.mod_revision);
            }
            Err(StoreError::AlreadyExists { .. }) => {}
            Err(err) => bail!("unexpected error {err}"),
        }
        revisions.push(own?.mod_revision);
    }
    assert_eq!(winners, 1, "exactly one create of the same key wins");
    revisions.sort_unstable();
    assert_eq!(
        revisions,
        (1..=65).collect::<Vec<u64>>(),
        "no revision skipped or reused"
    );

    let response = store
        .write(crate::Request::Batch(vec![
            crate::Request::Create {
                key: Bytes::from_static(b"/b1"),
                value: Bytes::new(),
            },
            crate::Request::Compact { revision: 1 },
            crate::Request::Delete {
                key: Bytes::from_static(b"/missing"),
                expected_mod_revision: None,
            },
        ]))
        .await?;
    let crate::Response::Batch(responses) = response else {
        bail!("expected a batch response, got {response:?}");
    };
    assert!(matches!(responses[0], crate::Response::Put { ref kv, .. } if kv.mod_revision == 66));
    assert_eq!(
        responses[1],
        crate::Response::Failed(crate::WriteFailure::NotBatchable)
    );
    assert_eq!(
        responses[2],
        crate::Response::Failed(crate::WriteFailure::NotFound)
    );
    assert_eq!(store.compacted_revision(), 0);
    store.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_txn_writes_all_of_its_ops_or_none() -> Result<()> {
    init_tracing();
    let dir = TempDir::new()?;
    let store = open(&dir).await?;
    let taken = store.create("/ip/10.96.0.5", "a").await?;
    let create = |key: &'static str| crate::Request::Create {
        key: Bytes::from_static(key.as_bytes()),
        value: Bytes::from_static(b"v"),
    };

    tracing::info!("--- a txn whose second op fails writes nothing");
    let before = store.current_revision();
    let err = store
        .txn(vec![create("/svc/a"), create("/ip/10.96.0.5")])
        .await
        .err()
        .context("a txn creating a taken key must fail")?;
    ensure!(
        matches!(&err, StoreError::AlreadyExists { key } if key == "/ip/10.96.0.5"),
        "the failure names the taken key: {err}"
    );
    ensure!(store.current_revision() == before, "no revision taken");
    ensure!(
        store.get("/svc/a", L).await?.is_none(),
        "first op not written"
    );

    tracing::info!("--- a stale expected revision fails the whole txn");
    let err = store
        .txn(vec![
            create("/svc/b"),
            crate::Request::Delete {
                key: Bytes::from_static(b"/ip/10.96.0.5"),
                expected_mod_revision: Some(taken.mod_revision + 100),
            },
        ])
        .await
        .err()
        .context("a stale delete must fail")?;
    ensure!(matches!(err, StoreError::Conflict { .. }), "{err}");
    ensure!(store.get("/svc/b", L).await?.is_none());

    tracing::info!("--- a key twice is refused");
    ensure!(
        store
            .txn(vec![create("/svc/c"), create("/svc/c")])
            .await
            .is_err()
    );
    ensure!(store.get("/svc/c", L).await?.is_none());

    tracing::info!("--- a good txn applies every op, each with its own revision");
    let responses = store
        .txn(vec![
            create("/svc/a"),
            crate::Request::Delete {
                key: Bytes::from_static(b"/ip/10.96.0.5"),
                expected_mod_revision: Some(taken.mod_revision),
            },
            create("/ip/10.96.0.6"),
        ])
        .await?;
    ensure!(responses.len() == 3);
    ensure!(store.current_revision() == before + 3);
    ensure!(store.get("/svc/a", L).await?.is_some());
    ensure!(store.get("/ip/10.96.0.5", L).await?.is_none());
    ensure!(store.get("/ip/10.96.0.6", L).await?.is_some());
    store.shutdown().await?;
    Ok(())
}
