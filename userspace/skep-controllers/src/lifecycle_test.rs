//! Node lifecycle, namespace deletion and garbage collection.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, Node, NodeCondition, NodeStatus, Pod, PodSpec,
    PodTemplateSpec, ServiceAccount, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, ObjectMeta, OwnerReference, Time,
};
use skep_api::delete::{DeleteOptions, Propagation};

use crate::ControllerConfig;
use crate::nodelifecycle::UNREACHABLE;
use crate::testing::{CONVERGE, Harness, Result, create_namespace, labels, wait_for};
use crate::util::now;

fn node(name: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(NodeStatus {
            conditions: Some(vec![ready_condition()]),
            ..NodeStatus::default()
        }),
    }
}

fn ready_condition() -> NodeCondition {
    NodeCondition {
        type_: "Ready".into(),
        status: "True".into(),
        reason: Some("KubeletReady".into()),
        last_heartbeat_time: Some(Time(now())),
        ..NodeCondition::default()
    }
}

fn bound_pod(name: &str, node: &str, tolerations: Option<Vec<Toleration>>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("team".into()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            tolerations,
            containers: vec![Container {
                name: "main".into(),
                image: Some("busybox".into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: None,
    }
}

fn unreachable_toleration(seconds: Option<i64>) -> Toleration {
    Toleration {
        key: Some(UNREACHABLE.into()),
        operator: Some("Exists".into()),
        effect: Some("NoExecute".into()),
        toleration_seconds: seconds,
        value: None,
    }
}

#[tokio::test]
async fn silent_node_goes_unknown_is_tainted_and_its_pods_are_evicted() -> Result<()> {
    let config = ControllerConfig {
        node_monitor_period: Duration::from_millis(100),
        node_monitor_grace_period: Duration::from_millis(600),
        ..ControllerConfig::default()
    };
    let h = Harness::start(config).await?;
    h.objects.create_typed(&node("n1"), "test").await?;
    h.objects
        .create_typed(
            &bound_pod("short", "n1", Some(vec![unreachable_toleration(Some(1))])),
            "test",
        )
        .await?;
    h.objects
        .create_typed(
            &bound_pod("forever", "n1", Some(vec![unreachable_toleration(None)])),
            "test",
        )
        .await?;
    // Defaulted toleration: 300s, so it stays for this test.
    h.objects
        .create_typed(&bound_pod("default", "n1", None), "test")
        .await?;

    let tainted = wait_for("node unknown and tainted", CONVERGE, || async {
        let n: Node = h.objects.get_typed("", "n1").await?;
        let ready = n
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let unknown = ready.iter().any(|c| {
            c.type_ == "Ready"
                && c.status == "Unknown"
                && c.reason.as_deref() == Some("NodeStatusUnknown")
        });
        let taints = n
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let both = ["NoSchedule", "NoExecute"].iter().all(|e| {
            taints
                .iter()
                .any(|t| t.key == UNREACHABLE && t.effect == *e)
        });
        Ok((unknown && both).then_some(n))
    })
    .await?;
    assert!(
        tainted
            .spec
            .and_then(|s| s.taints)
            .unwrap_or_default()
            .iter()
            .any(|t| t.effect == "NoExecute" && t.time_added.is_some())
    );
    wait_for("eviction after 1s toleration", CONVERGE, || async {
        let p: Pod = h.objects.get_typed("team", "short").await?;
        Ok(p.metadata.deletion_timestamp.is_some().then_some(()))
    })
    .await?;
    for name in ["forever", "default"] {
        let p: Pod = h.objects.get_typed("team", name).await?;
        assert!(
            p.metadata.deletion_timestamp.is_none(),
            "{name} evicted despite its toleration"
        );
    }

    // The agent comes back: Ready again, taints gone.
    let mut n: Node = h.objects.get_typed("", "n1").await?;
    n.status.get_or_insert_with(Default::default).conditions = Some(vec![ready_condition()]);
    h.objects.update_typed(&n, "status", "kubelet").await?;
    wait_for("taints removed", CONVERGE, || async {
        let n: Node = h.objects.get_typed("", "n1").await?;
        Ok(n.spec
            .and_then(|s| s.taints)
            .is_none_or(|t| t.is_empty())
            .then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn every_namespace_has_a_default_service_account_made_again_when_deleted() -> Result<()> {
    let h = Harness::start(ControllerConfig::default()).await?;
    create_namespace(&h.objects, "fresh").await?;
    let uid_of_default = || async {
        Ok(h.objects
            .try_get_typed::<ServiceAccount>("fresh", "default")
            .await?
            .and_then(|sa| sa.metadata.uid))
    };
    let first = wait_for("default service account", CONVERGE, uid_of_default).await?;
    // The harness's namespace has one too.
    wait_for("default in team", CONVERGE, || async {
        Ok(h.objects
            .try_get_typed::<ServiceAccount>("team", "default")
            .await?
            .map(|_| ()))
    })
    .await?;
    h.objects
        .delete_typed::<ServiceAccount>("fresh", "default", &DeleteOptions::default())
        .await?;
    wait_for("a new default service account", CONVERGE, || async {
        Ok(uid_of_default().await?.filter(|uid| *uid != first))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn every_namespace_has_the_root_ca_config_map_kept_right() -> Result<()> {
    use crate::rootcacert::{DESCRIPTION, DESCRIPTION_ANNOTATION, ROOT_CA_CERT_CONFIG_MAP_NAME};
    const PEM: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    let h = Harness::start(ControllerConfig {
        root_ca: Some(PEM.into()),
        ..ControllerConfig::default()
    })
    .await?;
    create_namespace(&h.objects, "fresh").await?;
    let published = |want_uid: Option<String>| {
        let h = &h;
        async move {
            wait_for("kube-root-ca.crt", CONVERGE, || {
                let want_uid = want_uid.clone();
                async move {
                    let cm = h
                        .objects
                        .try_get_typed::<ConfigMap>("fresh", ROOT_CA_CERT_CONFIG_MAP_NAME)
                        .await?;
                    Ok(cm.filter(|cm| {
                        let data = cm.data.as_ref().and_then(|d| d.get("ca.crt"));
                        let note = cm
                            .metadata
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get(DESCRIPTION_ANNOTATION));
                        data.map(String::as_str) == Some(PEM)
                            && note.map(String::as_str) == Some(DESCRIPTION)
                            && want_uid
                                .as_ref()
                                .is_none_or(|u| cm.metadata.uid.as_ref() != Some(u))
                    }))
                }
            })
            .await
        }
    };
    let first = published(None).await?;
    // Edited: put back.
    let mut edited = first.clone();
    edited.data = Some([("ca.crt".to_owned(), "forged".to_owned())].into());
    edited.metadata.annotations = None;
    h.objects.update_typed(&edited, "", "test").await?;
    let fixed = published(None).await?;
    assert_eq!(fixed.metadata.uid, first.metadata.uid);
    // Deleted: made again.
    h.objects
        .delete_typed::<ConfigMap>(
            "fresh",
            ROOT_CA_CERT_CONFIG_MAP_NAME,
            &DeleteOptions::default(),
        )
        .await?;
    published(first.metadata.uid.clone()).await?;
    Ok(())
}

#[tokio::test]
async fn deleting_a_namespace_empties_and_removes_it() -> Result<()> {
    let h = Harness::start(ControllerConfig::default()).await?;
    create_namespace(&h.objects, "doomed").await?;
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("cfg".into()),
            namespace: Some("doomed".into()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    h.objects.create_typed(&cm, "test").await?;
    let rs = ReplicaSet {
        metadata: ObjectMeta {
            name: Some("rs".into()),
            namespace: Some("doomed".into()),
            ..ObjectMeta::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(2),
            selector: LabelSelector {
                match_labels: Some(labels(&[("app", "x")])),
                match_expressions: None,
            },
            template: Some(PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&[("app", "x")])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "c".into(),
                        image: Some("busybox".into()),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            }),
            min_ready_seconds: None,
        }),
        status: None,
    };
    h.objects.create_typed(&rs, "test").await?;
    wait_for("pods", CONVERGE, || async {
        Ok((h.objects.list_typed::<Pod>("doomed", "").await?.0.len() == 2).then_some(()))
    })
    .await?;
    h.objects
        .delete_typed::<Namespace>("", "doomed", &DeleteOptions::default())
        .await?;
    let marked: Namespace = h.objects.get_typed("", "doomed").await?;
    assert!(marked.metadata.deletion_timestamp.is_some());
    wait_for("namespace gone", CONVERGE, || async {
        Ok(h.objects
            .try_get_typed::<Namespace>("", "doomed")
            .await?
            .is_none()
            .then_some(()))
    })
    .await?;
    assert!(
        h.objects
            .list_typed::<Pod>("doomed", "")
            .await?
            .0
            .is_empty()
    );
    assert!(
        h.objects
            .list_typed::<ConfigMap>("doomed", "")
            .await?
            .0
            .is_empty()
    );
    assert!(
        h.objects
            .list_typed::<ServiceAccount>("doomed", "")
            .await?
            .0
            .is_empty(),
        "the default service account is not made again in a terminating namespace"
    );
    assert!(
        h.objects
            .try_get_typed::<Namespace>("", "team")
            .await?
            .is_some()
    );
    Ok(())
}

async fn config_map(h: &Harness, name: &str, owner: Option<&ConfigMap>) -> Result<ConfigMap> {
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("team".into()),
            owner_references: owner.map(|o| {
                vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "ConfigMap".into(),
                    name: o.metadata.name.clone().unwrap_or_default(),
                    uid: o.metadata.uid.clone().unwrap_or_default(),
                    controller: None,
                    block_owner_deletion: Some(true),
                }]
            }),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    Ok(h.objects.create_typed(&cm, "test").await?)
}

async fn gone(h: &Harness, name: &str) -> Result<Option<()>> {
    Ok(h.objects
        .try_get_typed::<ConfigMap>("team", name)
        .await?
        .is_none()
        .then_some(()))
}

#[tokio::test]
#[expect(clippy::too_many_lines, reason = "one scenario, step by step")]
async fn garbage_collector_cascades_in_background_and_foreground_and_orphans() -> Result<()> {
    let h = Harness::start(ControllerConfig::default()).await?;
    // Background: the owner goes at once, its dependents after.
    let owner = config_map(&h, "bg-owner", None).await?;
    let child = config_map(&h, "bg-child", Some(&owner)).await?;
    config_map(&h, "bg-grandchild", Some(&child)).await?;
    h.objects
        .delete_typed::<ConfigMap>("team", "bg-owner", &DeleteOptions::default())
        .await?;
    wait_for("background cascade", CONVERGE, || async {
        Ok(
            (gone(&h, "bg-child").await?.is_some() && gone(&h, "bg-grandchild").await?.is_some())
                .then_some(()),
        )
    })
    .await?;

    // Foreground: the owner waits, marked, until its dependents are gone.
    let owner = config_map(&h, "fg-owner", None).await?;
    config_map(&h, "fg-child", Some(&owner)).await?;
    let foreground = DeleteOptions {
        propagation: Some(Propagation::Foreground),
        ..DeleteOptions::default()
    };
    let deleted = h
        .objects
        .delete_typed::<ConfigMap>("team", "fg-owner", &foreground)
        .await?;
    assert!(
        matches!(deleted, skep_objects::Deleted::Marked(_)),
        "foreground delete removed the owner at once"
    );
    wait_for("foreground cascade", CONVERGE, || async {
        Ok(
            (gone(&h, "fg-owner").await?.is_some() && gone(&h, "fg-child").await?.is_some())
                .then_some(()),
        )
    })
    .await?;

    // Orphan: the owner goes, the dependent stays without the reference.
    let owner = config_map(&h, "or-owner", None).await?;
    config_map(&h, "or-child", Some(&owner)).await?;
    let orphan = DeleteOptions {
        propagation: Some(Propagation::Orphan),
        ..DeleteOptions::default()
    };
    h.objects
        .delete_typed::<ConfigMap>("team", "or-owner", &orphan)
        .await?;
    wait_for("orphaned", CONVERGE, || async {
        let child = h
            .objects
            .try_get_typed::<ConfigMap>("team", "or-child")
            .await?
            .ok_or("orphan was deleted")?;
        let unowned = child.metadata.owner_references.is_none_or(|r| r.is_empty());
        Ok((gone(&h, "or-owner").await?.is_some() && unowned).then_some(()))
    })
    .await?;
    // It stays (give the collector time to get it wrong).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        h.objects
            .try_get_typed::<ConfigMap>("team", "or-child")
            .await?
            .is_some()
    );

    // A ReplicaSet deleted in the background takes its pods along.
    let rs = ReplicaSet {
        metadata: ObjectMeta {
            name: Some("rs".into()),
            namespace: Some("team".into()),
            ..ObjectMeta::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(2),
            selector: LabelSelector {
                match_labels: Some(labels(&[("app", "gc")])),
                match_expressions: None,
            },
            template: Some(PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&[("app", "gc")])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "c".into(),
                        image: Some("busybox".into()),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            }),
            min_ready_seconds: None,
        }),
        status: None,
    };
    h.objects.create_typed(&rs, "test").await?;
    wait_for("pods", CONVERGE, || async {
        Ok((h.objects.list_typed::<Pod>("team", "app=gc").await?.0.len() == 2).then_some(()))
    })
    .await?;
    h.objects
        .delete_typed::<ReplicaSet>("team", "rs", &DeleteOptions::default())
        .await?;
    wait_for("pods collected", CONVERGE, || async {
        Ok(h.objects
            .list_typed::<Pod>("team", "app=gc")
            .await?
            .0
            .is_empty()
            .then_some(()))
    })
    .await?;
    Ok(())
}
