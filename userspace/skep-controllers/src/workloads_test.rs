//! ReplicaSets and Deployments converging on a real store, with the test
//! playing the kubelet.

use std::cell::Cell;
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, ReplicaSet, ReplicaSetSpec,
    RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{Container, Event, Pod, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::ControllerConfig;
use crate::deployment::{POD_TEMPLATE_HASH, REVISION, REVISION_HISTORY};
use crate::testing::{CONVERGE, Harness, Result, labels, wait_for};
use crate::util::{controller_ref, pod_ready};

fn template(app: &str, image: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(&[("app", app)])),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "main".into(),
                image: Some(image.into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
    }
}

fn selector(app: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels(&[("app", app)])),
        match_expressions: None,
    }
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some("team".into()),
        ..ObjectMeta::default()
    }
}

async fn set_rs_replicas(h: &Harness, name: &str, replicas: i32) -> Result<()> {
    loop {
        let mut rs: ReplicaSet = h.objects.get_typed("team", name).await?;
        rs.spec.get_or_insert_with(Default::default).replicas = Some(replicas);
        match h.objects.update_typed(&rs, "", "test").await {
            Err(err) if err.reason == skep_api::StatusReason::Conflict => {}
            other => return other.map(drop).map_err(Into::into),
        }
    }
}

async fn wait_active(h: &Harness, sel: &str, n: usize) -> Result<Vec<Pod>> {
    wait_for(&format!("{n} pods {sel}"), CONVERGE, || async {
        let pods = h.active_pods(sel).await?;
        Ok((pods.len() == n).then_some(pods))
    })
    .await
}

#[tokio::test]
async fn replicaset_scales_up_and_down_deleting_not_ready_pods_first() -> Result<()> {
    let h = Harness::start(ControllerConfig::default()).await?;
    let rs = ReplicaSet {
        metadata: meta("web"),
        spec: Some(ReplicaSetSpec {
            replicas: Some(3),
            selector: selector("web"),
            template: Some(template("web", "busybox:1")),
            min_ready_seconds: None,
        }),
        status: None,
    };
    h.objects.create_typed(&rs, "test").await?;
    let pods = wait_active(&h, "app=web", 3).await?;
    for p in &pods {
        assert!(
            controller_ref(&p.metadata).is_some_and(|r| r.kind == "ReplicaSet" && r.name == "web")
        );
    }
    set_rs_replicas(&h, "web", 10).await?;
    let pods = wait_active(&h, "app=web", 10).await?;
    // Seven ready, three not.
    let mut ready = Vec::new();
    for (i, p) in pods.iter().take(7).enumerate() {
        ready.push(
            h.mark_ready(p, &format!("10.0.0.{}", i + 1))
                .await?
                .metadata
                .name,
        );
    }
    wait_for("7 ready in status", CONVERGE, || async {
        let rs: ReplicaSet = h.objects.get_typed("team", "web").await?;
        Ok((rs.status.and_then(|s| s.ready_replicas) == Some(7)).then_some(()))
    })
    .await?;
    set_rs_replicas(&h, "web", 2).await?;
    let left = wait_active(&h, "app=web", 2).await?;
    for p in &left {
        assert!(
            pod_ready(p),
            "a not-ready pod survived while ready ones were deleted"
        );
        assert!(ready.contains(&p.metadata.name));
    }
    let rs = wait_for("status of 2", CONVERGE, || async {
        let rs: ReplicaSet = h.objects.get_typed("team", "web").await?;
        let s = rs.status.clone().unwrap_or_default();
        Ok((s.replicas == 2
            && s.ready_replicas == Some(2)
            && s.available_replicas == Some(2)
            && s.fully_labeled_replicas == Some(2))
        .then_some(rs))
    })
    .await?;
    assert_eq!(
        rs.status.and_then(|s| s.observed_generation),
        rs.metadata.generation
    );
    let (events, _) = h.objects.list_typed::<Event>("team", "").await?;
    let created = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("SuccessfulCreate"))
        .ok_or("no SuccessfulCreate event")?;
    assert!(created.count.unwrap_or(0) >= 1);
    assert_eq!(created.involved_object.name.as_deref(), Some("web"));
    assert_eq!(
        created.source.as_ref().and_then(|s| s.component.as_deref()),
        Some("replicaset-controller")
    );
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("SuccessfulDelete"))
    );
    Ok(())
}

#[tokio::test]
async fn replicaset_adopts_orphans_and_releases_pods_that_stop_matching() -> Result<()> {
    let h = Harness::start(ControllerConfig::default()).await?;
    let orphan = Pod {
        metadata: ObjectMeta {
            labels: Some(labels(&[("app", "db")])),
            ..meta("orphan")
        },
        spec: template("db", "busybox:1").spec,
        status: None,
    };
    h.objects.create_typed(&orphan, "test").await?;
    let rs = ReplicaSet {
        metadata: meta("db"),
        spec: Some(ReplicaSetSpec {
            replicas: Some(2),
            selector: selector("db"),
            template: Some(template("db", "busybox:1")),
            min_ready_seconds: None,
        }),
        status: None,
    };
    h.objects.create_typed(&rs, "test").await?;
    wait_active(&h, "app=db", 2).await?;
    let adopted: Pod = h.objects.get_typed("team", "orphan").await?;
    assert!(
        controller_ref(&adopted.metadata).is_some_and(|r| r.name == "db"),
        "orphan not adopted"
    );
    // Relabel it: released, and replaced.
    let mut moved = adopted;
    moved.metadata.labels = Some(labels(&[("app", "elsewhere")]));
    h.objects.update_typed(&moved, "", "test").await?;
    wait_for("release", CONVERGE, || async {
        let p: Pod = h.objects.get_typed("team", "orphan").await?;
        Ok(controller_ref(&p.metadata).is_none().then_some(()))
    })
    .await?;
    wait_active(&h, "app=db", 2).await?;
    Ok(())
}

fn deployment(name: &str, replicas: i32, strategy: DeploymentStrategy) -> Deployment {
    Deployment {
        metadata: meta(name),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: selector(name),
            template: template(name, "busybox:1"),
            strategy: Some(strategy),
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

fn rolling(surge: i32, unavailable: i32) -> DeploymentStrategy {
    DeploymentStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDeployment {
            max_surge: Some(IntOrString::Int(surge)),
            max_unavailable: Some(IntOrString::Int(unavailable)),
        }),
    }
}

/// Read-modify-write of a Deployment, retried when the controller wrote in between.
async fn modify(h: &Harness, name: &str, f: impl Fn(&mut Deployment)) -> Result<()> {
    loop {
        let mut d: Deployment = h.objects.get_typed("team", name).await?;
        f(&mut d);
        match h.objects.update_typed(&d, "", "kubectl").await {
            Err(err) if err.reason == skep_api::StatusReason::Conflict => {}
            other => return other.map(drop).map_err(Into::into),
        }
    }
}

async fn set_image(h: &Harness, name: &str, image: &str) -> Result<()> {
    modify(h, name, |d| {
        if let Some(spec) = d.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
            spec.containers[0].image = Some(image.into());
        }
    })
    .await
}

async fn replica_sets(h: &Harness, app: &str) -> Result<Vec<ReplicaSet>> {
    Ok(h.objects
        .list_typed::<ReplicaSet>("team", &format!("app={app}"))
        .await?
        .0)
}

/// Plays the kubelet: makes every active pod of `app` ready, one per call.
async fn ready_one(h: &Harness, app: &str, ip: &Cell<u32>) -> Result<bool> {
    for p in h.active_pods(&format!("app={app}")).await? {
        if !pod_ready(&p) {
            let n = ip.get() + 1;
            ip.set(n);
            h.mark_ready(&p, &format!("10.1.{}.{}", n / 250, n % 250 + 1))
                .await?;
            return Ok(true);
        }
    }
    Ok(false)
}

async fn deployment_done(h: &Harness, name: &str, replicas: i32) -> Result<Option<Deployment>> {
    let d: Deployment = h.objects.get_typed("team", name).await?;
    let s = d.status.clone().unwrap_or_default();
    let progressed =
        s.conditions.as_deref().unwrap_or_default().iter().any(|c| {
            c.type_ == "Progressing" && c.reason.as_deref() == Some("NewReplicaSetAvailable")
        });
    Ok((s.observed_generation == d.metadata.generation
        && s.updated_replicas == Some(replicas)
        && s.replicas == Some(replicas)
        && s.available_replicas == Some(replicas)
        && progressed)
        .then_some(d))
}

#[tokio::test]
async fn rolling_update_keeps_surge_and_availability_bounds_at_every_step() -> Result<()> {
    let h = Harness::start(ControllerConfig::default()).await?;
    h.objects
        .create_typed(&deployment("web", 4, rolling(1, 1)), "test")
        .await?;
    let ip = Cell::new(0u32);
    wait_for("first rollout", CONVERGE, || async {
        ready_one(&h, "web", &ip).await?;
        deployment_done(&h, "web", 4).await
    })
    .await?;
    set_image(&h, "web", "busybox:2").await?;
    let steps = Cell::new(0);
    let done = wait_for("rolling update", CONVERGE * 3, || async {
        let rss = replica_sets(&h, "web").await?;
        let total: i32 = rss
            .iter()
            .map(|rs| rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0))
            .sum();
        assert!(total <= 5, "maxSurge exceeded: {total} replicas");
        let ready = h
            .active_pods("app=web")
            .await?
            .iter()
            .filter(|p| pod_ready(p))
            .count();
        assert!(ready >= 3, "maxUnavailable exceeded: {ready} ready");
        if ready_one(&h, "web", &ip).await? {
            steps.set(steps.get() + 1);
        }
        deployment_done(&h, "web", 4).await
    })
    .await?;
    assert!(
        steps.get() >= 4,
        "new pods were made ready {} times",
        steps.get()
    );
    let rss = replica_sets(&h, "web").await?;
    assert_eq!(rss.len(), 2);
    let new = rss
        .iter()
        .find(|rs| rs.spec.as_ref().and_then(|s| s.replicas) == Some(4))
        .ok_or("no new rs")?;
    let hash = new
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(POD_TEMPLATE_HASH))
        .ok_or("no hash label")?;
    assert_eq!(
        new.metadata.name.as_deref(),
        Some(format!("web-{hash}").as_str())
    );
    assert_eq!(
        new.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION))
            .map(String::as_str),
        Some("2")
    );
    assert_eq!(
        done.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION))
            .map(String::as_str),
        Some("2")
    );
    for p in h.active_pods("app=web").await? {
        assert_eq!(
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(POD_TEMPLATE_HASH)),
            Some(hash)
        );
    }
    let (events, _) = h.objects.list_typed::<Event>("team", "").await?;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("ScalingReplicaSet")
                && e.involved_object.name.as_deref() == Some("web"))
    );
    Ok(())
}

#[tokio::test]
async fn recreate_never_runs_old_and_new_pods_together() -> Result<()> {
    let h = Harness::start(ControllerConfig::default()).await?;
    let recreate = DeploymentStrategy {
        type_: Some("Recreate".into()),
        rolling_update: None,
    };
    h.objects
        .create_typed(&deployment("batch", 3, recreate), "test")
        .await?;
    let ip = Cell::new(0u32);
    wait_for("first rollout", CONVERGE, || async {
        ready_one(&h, "batch", &ip).await?;
        deployment_done(&h, "batch", 3).await
    })
    .await?;
    let old_hash = h.active_pods("app=batch").await?[0]
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(POD_TEMPLATE_HASH).cloned());
    set_image(&h, "batch", "busybox:2").await?;
    wait_for("recreate", CONVERGE * 2, || async {
        let (pods, _) = h.objects.list_typed::<Pod>("team", "app=batch").await?;
        let hashes: std::collections::BTreeSet<_> = pods
            .iter()
            .map(|p| {
                p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(POD_TEMPLATE_HASH).cloned())
            })
            .collect();
        assert!(hashes.len() <= 1, "old and new pods together: {hashes:?}");
        ready_one(&h, "batch", &ip).await?;
        deployment_done(&h, "batch", 3).await
    })
    .await?;
    let pods = h.active_pods("app=batch").await?;
    assert_eq!(pods.len(), 3);
    assert!(pods.iter().all(|p| {
        p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(POD_TEMPLATE_HASH).cloned())
            != old_hash
    }));
    Ok(())
}

#[tokio::test]
async fn rollback_to_an_old_template_reuses_its_replicaset_with_a_new_revision() -> Result<()> {
    let h = Harness::start(ControllerConfig::default()).await?;
    h.objects
        .create_typed(&deployment("api", 2, rolling(1, 0)), "test")
        .await?;
    let ip = Cell::new(0u32);
    wait_for("rev 1", CONVERGE, || async {
        ready_one(&h, "api", &ip).await?;
        deployment_done(&h, "api", 2).await
    })
    .await?;
    set_image(&h, "api", "busybox:2").await?;
    wait_for("rev 2", CONVERGE, || async {
        ready_one(&h, "api", &ip).await?;
        let d = deployment_done(&h, "api", 2).await?;
        Ok(d.filter(|d| {
            d.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION))
                .map(String::as_str)
                == Some("2")
        }))
    })
    .await?;
    // What `kubectl rollout undo` does: copy revision 1's template back,
    // without the hash label.
    let rss = replica_sets(&h, "api").await?;
    let first = rss
        .iter()
        .find(|rs| {
            rs.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION))
                .map(String::as_str)
                == Some("1")
        })
        .ok_or("no revision 1")?;
    let mut old_template = first
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .ok_or("no template")?;
    if let Some(l) = old_template
        .metadata
        .as_mut()
        .and_then(|m| m.labels.as_mut())
    {
        l.remove(POD_TEMPLATE_HASH);
    }
    modify(&h, "api", |d| {
        d.spec.get_or_insert_with(Default::default).template = old_template.clone();
    })
    .await?;
    let first_name = first.metadata.name.clone();
    wait_for("rollback", CONVERGE, || async {
        ready_one(&h, "api", &ip).await?;
        let d = deployment_done(&h, "api", 2).await?;
        Ok(d.filter(|d| {
            d.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION))
                .map(String::as_str)
                == Some("3")
        }))
    })
    .await?;
    let rss = replica_sets(&h, "api").await?;
    assert_eq!(rss.len(), 2, "rollback made a new replica set");
    let back = rss
        .iter()
        .find(|rs| rs.metadata.name == first_name)
        .ok_or("rev 1 rs gone")?;
    let annotations = back.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(annotations.get(REVISION).map(String::as_str), Some("3"));
    assert_eq!(
        annotations.get(REVISION_HISTORY).map(String::as_str),
        Some("1")
    );
    assert_eq!(back.spec.as_ref().and_then(|s| s.replicas), Some(2));
    let image = |t: &PodTemplateSpec| t.spec.as_ref().and_then(|s| s.containers[0].image.clone());
    let d: Deployment = h.objects.get_typed("team", "api").await?;
    assert_eq!(
        d.spec.as_ref().and_then(|s| image(&s.template)).as_deref(),
        Some("busybox:1")
    );
    Ok(())
}

#[tokio::test]
async fn pause_holds_the_rollout_and_resume_continues_it() -> Result<()> {
    let h = Harness::start(ControllerConfig::default()).await?;
    h.objects
        .create_typed(&deployment("paused", 0, rolling(1, 0)), "test")
        .await?;
    wait_for("rev 1", CONVERGE, || deployment_done(&h, "paused", 0)).await?;
    modify(&h, "paused", |d| {
        d.spec.get_or_insert_with(Default::default).paused = Some(true);
    })
    .await?;
    set_image(&h, "paused", "busybox:2").await?;
    let generation = h
        .objects
        .get_typed::<Deployment>("team", "paused")
        .await?
        .metadata
        .generation;
    wait_for("paused condition", CONVERGE, || async {
        let d: Deployment = h.objects.get_typed("team", "paused").await?;
        let s = d.status.unwrap_or_default();
        let paused = s.conditions.unwrap_or_default().iter().any(|c| {
            c.type_ == "Progressing"
                && c.status == "Unknown"
                && c.reason.as_deref() == Some("DeploymentPaused")
        });
        Ok((paused && s.observed_generation == generation).then_some(()))
    })
    .await?;
    assert_eq!(
        replica_sets(&h, "paused").await?.len(),
        1,
        "a paused deployment rolled out"
    );
    modify(&h, "paused", |d| {
        d.spec.get_or_insert_with(Default::default).paused = Some(false);
    })
    .await?;
    wait_for("resumed rollout", CONVERGE, || async {
        Ok((replica_sets(&h, "paused").await?.len() == 2).then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn revision_history_limit_prunes_the_oldest_replicasets() -> Result<()> {
    let h = Harness::start(ControllerConfig::default()).await?;
    let mut d = deployment("hist", 0, rolling(1, 0));
    d.spec
        .get_or_insert_with(Default::default)
        .revision_history_limit = Some(1);
    h.objects.create_typed(&d, "test").await?;
    for image in ["busybox:2", "busybox:3", "busybox:4"] {
        wait_for("rollout", CONVERGE, || deployment_done(&h, "hist", 0)).await?;
        set_image(&h, "hist", image).await?;
    }
    let revisions = wait_for("pruned", CONVERGE, || async {
        let rss = replica_sets(&h, "hist").await?;
        let revisions: BTreeMap<String, String> = rss
            .iter()
            .map(|rs| {
                let rev = rs
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(REVISION).cloned())
                    .unwrap_or_default();
                (
                    rev,
                    rs.spec
                        .as_ref()
                        .and_then(|s| s.template.as_ref())
                        .and_then(|t| t.spec.as_ref())
                        .and_then(|s| s.containers[0].image.clone())
                        .unwrap_or_default(),
                )
            })
            .collect();
        Ok((revisions.len() == 2 && revisions.contains_key("4")).then_some(revisions))
    })
    .await?;
    assert_eq!(revisions.get("3").map(String::as_str), Some("busybox:3"));
    assert_eq!(revisions.get("4").map(String::as_str), Some("busybox:4"));
    Ok(())
}
