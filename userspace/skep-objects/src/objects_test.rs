//! The object layer on a real single-replica store in a temp dir.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;
use skep_api::{StatusReason, decode::Decoded, delete::DeleteOptions, object::WatchEventType};
use skep_store::{Store, StoreConfig};

use crate::{Deleted, Objects};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

async fn open(dir: &tempfile::TempDir) -> Result<Objects> {
    let store = Store::open(StoreConfig::single(dir.path())).await?;
    let objects = Objects::new(store);
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some("team".into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    objects.create_typed(&ns, "test").await?;
    Ok(objects)
}

fn pod(name: &str, labels: &[(&str, &str)]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("team".into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "main".into(),
                image: Some("busybox".into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

#[tokio::test]
async fn typed_writes_are_admitted_and_compare_and_swap() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let objects = open(&dir).await?;
    let created = objects
        .create_typed(&pod("web", &[("app", "web")]), "test")
        .await?;
    // Admission defaulted and stamped it.
    assert!(created.metadata.uid.is_some());
    let spec = created.spec.clone().ok_or("no spec")?;
    assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
    assert_eq!(
        spec.containers[0].image_pull_policy.as_deref(),
        Some("Always")
    );
    // Invalid objects are refused with the API's reason.
    let err = objects
        .create_typed(&pod("Bad_Name", &[]), "test")
        .await
        .err()
        .ok_or("invalid name accepted")?;
    assert_eq!(err.reason, StatusReason::Invalid);
    // A status write through the status subresource, then a stale one.
    let mut running = created.clone();
    running.status = Some(PodStatus {
        phase: Some("Running".into()),
        ..PodStatus::default()
    });
    let updated = objects.update_typed(&running, "status", "kubelet").await?;
    assert_ne!(
        updated.metadata.resource_version,
        created.metadata.resource_version
    );
    let err = objects
        .update_typed(&running, "status", "kubelet")
        .await
        .err()
        .ok_or("stale resourceVersion accepted")?;
    assert_eq!(err.reason, StatusReason::Conflict);
    let read: Pod = objects.get_typed("team", "web").await?;
    assert_eq!(
        read.status.and_then(|s| s.phase).as_deref(),
        Some("Running")
    );
    Ok(())
}

#[tokio::test]
async fn lists_select_by_label_and_watches_follow_in_order() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let objects = open(&dir).await?;
    objects
        .create_typed(&pod("a", &[("app", "web")]), "test")
        .await?;
    objects
        .create_typed(&pod("b", &[("app", "db")]), "test")
        .await?;
    let (web, revision) = objects.list_typed::<Pod>("team", "app=web").await?;
    assert_eq!(web.len(), 1);
    assert_eq!(web[0].metadata.name.as_deref(), Some("a"));

    let mut watch = objects.watch_typed::<Pod>("team", Some(revision)).await?;
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("other".into()),
            namespace: Some("team".into()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    objects.create_typed(&cm, "test").await?;
    objects.create_typed(&pod("c", &[]), "test").await?;
    let binding = Decoded {
        value: json!({"apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": "c", "namespace": "team"},
            "target": {"kind": "Node", "name": "node-1"}}),
        duplicates: Vec::new(),
    };
    objects
        .bind("team", "c", &binding, skep_api::admission::now())
        .await?;
    // A bound pod is deleted gracefully: marked, left for its node to stop.
    let deleted = objects
        .delete_typed::<Pod>("team", "c", &DeleteOptions::default())
        .await?;
    assert!(matches!(deleted, Deleted::Marked(_)));

    let mut seen = Vec::new();
    for _ in 0..3 {
        let (kind, pod) = watch.next().await.ok_or("watch ended")??;
        seen.push((
            kind,
            pod.metadata.name.unwrap_or_default(),
            pod.spec.and_then(|s| s.node_name),
            pod.metadata.deletion_timestamp.is_some(),
        ));
    }
    let bound = Some("node-1".to_owned());
    assert_eq!(seen[0], (WatchEventType::Added, "c".into(), None, false));
    assert_eq!(
        seen[1],
        (WatchEventType::Modified, "c".into(), bound.clone(), false)
    );
    assert_eq!(seen[2], (WatchEventType::Modified, "c".into(), bound, true));
    // Binding again fails: the pod is bound already.
    assert!(
        objects
            .bind("team", "c", &binding, skep_api::admission::now())
            .await
            .is_err()
    );
    Ok(())
}

#[tokio::test]
async fn finalizers_hold_a_delete_until_they_are_removed() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let objects = open(&dir).await?;
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("held".into()),
            namespace: Some("team".into()),
            finalizers: Some(vec!["example.com/hold".into()]),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    objects.create_typed(&cm, "test").await?;
    let Deleted::Marked(_) = objects
        .delete_typed::<ConfigMap>("team", "held", &DeleteOptions::default())
        .await?
    else {
        return Err("a finalizer did not hold the delete".into());
    };
    let mut marked: ConfigMap = objects.get_typed("team", "held").await?;
    assert!(marked.metadata.deletion_timestamp.is_some());
    marked.metadata.finalizers = None;
    objects.update_typed(&marked, "", "test").await?;
    assert!(
        objects
            .try_get_typed::<ConfigMap>("team", "held")
            .await?
            .is_none()
    );
    Ok(())
}

#[tokio::test]
async fn pods_get_their_service_account_and_its_token_volume() -> Result<()> {
    use k8s_openapi::api::core::v1::ServiceAccount;
    let dir = tempfile::tempdir()?;
    let objects = open(&dir).await?.with_service_account_admission(true);
    let account = |name: &str, automount: Option<bool>| ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("team".into()),
            ..ObjectMeta::default()
        },
        automount_service_account_token: automount,
        ..ServiceAccount::default()
    };
    // A ServiceAccount that does not exist refuses the pod.
    let mut robot = pod("robot", &[]);
    if let Some(spec) = robot.spec.as_mut() {
        spec.service_account_name = Some("robot".into());
    }
    let err = objects
        .create_typed(&robot, "test")
        .await
        .err()
        .ok_or("a pod of a missing ServiceAccount was admitted")?;
    assert_eq!(err.reason, StatusReason::Forbidden);
    assert_eq!(
        err.message,
        "pods \"robot\" is forbidden: error looking up service account team/robot: serviceaccount \"robot\" not found"
    );
    // Once it exists (saying no automount), the pod goes in without a token.
    objects
        .create_typed(&account("robot", Some(false)), "test")
        .await?;
    let created = objects.create_typed(&robot, "test").await?;
    let spec = created.spec.ok_or("no spec")?;
    assert!(spec.volumes.unwrap_or_default().is_empty());
    // The default one, named by defaulting, mounts the token everywhere.
    objects
        .create_typed(&account("default", None), "test")
        .await?;
    let created = objects.create_typed(&pod("web", &[]), "test").await?;
    let spec = created.spec.ok_or("no spec")?;
    assert_eq!(spec.service_account_name.as_deref(), Some("default"));
    let volume = spec
        .volumes
        .unwrap_or_default()
        .into_iter()
        .next()
        .ok_or("no token volume")?;
    assert!(volume.name.starts_with("kube-api-access-"));
    let projected = volume.projected.ok_or("not projected")?;
    assert_eq!(projected.default_mode, Some(420));
    assert_eq!(projected.sources.as_ref().map(Vec::len), Some(3));
    let mount = &spec.containers[0]
        .volume_mounts
        .as_ref()
        .ok_or("no mount")?[0];
    assert_eq!(mount.name, volume.name);
    assert_eq!(
        mount.mount_path,
        "/var/run/secrets/kubernetes.io/serviceaccount"
    );
    assert_eq!(mount.read_only, Some(true));
    Ok(())
}
