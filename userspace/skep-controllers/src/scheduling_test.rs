//! The scheduler wired to a real store: pods land on nodes through the
//! binding path; a pod no node fits waits with a reason users can read.

use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, Event, Node, NodeCondition, NodeStatus, Pod, PodSpec, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::ObjectMeta};

use crate::{
    ControllerConfig,
    testing::{Harness, Result, labels, wait_for},
};

fn node(name: &str, cpu: &str) -> Node {
    let resources = [
        ("cpu".to_owned(), Quantity(cpu.into())),
        ("memory".to_owned(), Quantity("8Gi".into())),
        ("pods".to_owned(), Quantity("110".into())),
    ]
    .into_iter()
    .collect::<std::collections::BTreeMap<_, _>>();
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels(&[("kubernetes.io/hostname", name)])),
            ..ObjectMeta::default()
        },
        status: Some(NodeStatus {
            capacity: Some(resources.clone()),
            allocatable: Some(resources),
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..NodeCondition::default()
            }]),
            ..NodeStatus::default()
        }),
        ..Node::default()
    }
}

fn pod(name: &str, cpu: &str, selector: Option<(&str, &str)>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("team".into()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: Some("busybox".into()),
                resources: Some(ResourceRequirements {
                    requests: Some(
                        [("cpu".to_owned(), Quantity(cpu.into()))]
                            .into_iter()
                            .collect(),
                    ),
                    ..ResourceRequirements::default()
                }),
                ..Container::default()
            }],
            node_selector: selector.map(|(k, v)| labels(&[(k, v)])),
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

/// Creates a node and reports its status like an agent would (retrying
/// when a controller touched it in between).
async fn register(h: &Harness, mut node: Node) -> Result<()> {
    let status = node.status.take();
    let name = node.metadata.name.clone().unwrap_or_default();
    h.objects.create_typed(&node, "test").await?;
    wait_for("node status written", Duration::from_secs(5), || async {
        let mut live: Node = h.objects.get_typed("", &name).await?;
        live.status.clone_from(&status);
        match h.objects.update_typed(&live, "status", "test").await {
            Ok(_) => Ok(Some(())),
            Err(e) if e.reason == skep_api::StatusReason::Conflict => Ok(None),
            Err(e) => Err(e.into()),
        }
    })
    .await
}

#[tokio::test]
async fn pods_are_bound_through_the_api_and_unschedulable_ones_say_why() -> Result<()> {
    let h = Harness::start_with(ControllerConfig {
        node_monitor_period: Duration::from_millis(100),
        ..ControllerConfig::default()
    })
    .await?;
    for (name, cpu) in [("n1", "2"), ("n2", "2")] {
        register(&h, node(name, cpu)).await?;
    }
    // New nodes are tainted until they report Ready, as in Kubernetes.
    wait_for("nodes untainted", Duration::from_secs(10), || async {
        let (nodes, _) = h.objects.list_typed::<Node>("", "").await?;
        Ok(nodes
            .iter()
            .all(|n| n.spec.as_ref().and_then(|s| s.taints.as_ref()).is_none())
            .then_some(()))
    })
    .await?;
    for i in 0..4 {
        h.objects
            .create_typed(&pod(&format!("p{i}"), "500m", None), "test")
            .await?;
    }
    h.objects
        .create_typed(&pod("nowhere", "100m", Some(("disk", "ssd"))), "test")
        .await?;

    // Four fitting pods are bound, spread over both nodes.
    let placed = wait_for("4 pods bound", Duration::from_secs(10), || async {
        let (pods, _) = h.objects.list_typed::<Pod>("team", "").await?;
        let nodes: Vec<String> = pods
            .iter()
            .filter_map(|p| p.spec.as_ref()?.node_name.clone())
            .collect();
        Ok((nodes.len() == 4).then_some(nodes))
    })
    .await?;
    assert_eq!(placed.iter().filter(|n| *n == "n1").count(), 2);
    assert_eq!(placed.iter().filter(|n| *n == "n2").count(), 2);

    // The pod no node fits stays Pending with the reason, as an event and a condition.
    let message = wait_for("FailedScheduling", Duration::from_secs(10), || async {
        let (events, _) = h.objects.list_typed::<Event>("team", "").await?;
        Ok(events
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("FailedScheduling"))
            .and_then(|e| e.message))
    })
    .await?;
    assert_eq!(
        message,
        "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
    );
    let (events, _) = h.objects.list_typed::<Event>("team", "").await?;
    assert_eq!(
        events
            .iter()
            .filter(|e| e.reason.as_deref() == Some("Scheduled"))
            .count(),
        4
    );
    wait_for("PodScheduled=False", Duration::from_secs(10), || async {
        let p: Pod = h.objects.get_typed("team", "nowhere").await?;
        let cond = p
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "PodScheduled");
        Ok(cond.filter(|c| c.status == "False" && c.reason.as_deref() == Some("Unschedulable")))
    })
    .await?;

    // A node that fits arrives: the waiting pod is retried and lands there.
    let mut ssd = node("n3", "2");
    ssd.metadata.labels = Some(labels(&[("kubernetes.io/hostname", "n3"), ("disk", "ssd")]));
    register(&h, ssd).await?;
    wait_for("nowhere bound to n3", Duration::from_secs(15), || async {
        let p: Pod = h.objects.get_typed("team", "nowhere").await?;
        Ok(p.spec.and_then(|s| s.node_name).filter(|n| n == "n3"))
    })
    .await?;
    Ok(())
}
