//! The workload controllers driven by the real kubectl, on hollow nodes:
//! Deployments roll (`rollout status|history|undo|pause|resume|restart`,
//! `maxSurge`/`maxUnavailable`, Recreate, `revisionHistoryLimit`, the
//! progress deadline), ReplicaSets scale, adopt and release pods, deletes
//! cascade the three ways, a namespace takes its content with it, and the
//! pods of a node that dies are rescheduled elsewhere.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::Value;
use skep_e2e::cluster::{Server, pod_ready, str_at};
use skep_e2e::hollow::{HollowCluster, HollowNode, READY};

/// Generous: the machine is small and may be busy.
const LONG: Duration = Duration::from_mins(1);

fn three_nodes() -> Vec<HollowNode> {
    ["node-a", "node-b", "node-c"]
        .into_iter()
        .map(HollowNode::new)
        .collect()
}

/// A Deployment `name` in `ns` of `replicas` pods of image `web:VERSION`,
/// recorded with a change-cause; its pods are Ready unless `ready` is false.
struct Spec<'a> {
    ns: &'a str,
    name: &'a str,
    replicas: u32,
    version: &'a str,
    ready: bool,
    strategy: &'a str,
    deadline: u32,
}

impl Spec<'_> {
    fn manifest(&self) -> String {
        let Spec {
            ns,
            name,
            replicas,
            version,
            ready,
            strategy,
            deadline,
        } = self;
        format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {ns}
  annotations:
    kubernetes.io/change-cause: "deploy {version}"
spec:
  replicas: {replicas}
  revisionHistoryLimit: 2
  progressDeadlineSeconds: {deadline}
  strategy: {strategy}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
      annotations: {{{READY}: "{ready}"}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: app
        image: registry.example/{name}:{version}
"#
        )
    }
}

/// The image of a pod's or template's first container.
fn image(pod_spec: &Value) -> &str {
    pod_spec["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
}

/// The ReplicaSets of Deployment `name`, oldest revision first.
fn replica_sets(server: &Server, ns: &str, name: &str) -> anyhow::Result<Vec<Value>> {
    let mut rss = server.items(&["replicasets", "-n", ns, "-l", &format!("app={name}")])?;
    rss.sort_by_key(revision);
    Ok(rss)
}

fn revision(rs: &Value) -> u32 {
    str_at(
        rs,
        &[
            "metadata",
            "annotations",
            "deployment.kubernetes.io/revision",
        ],
    )
    .parse()
    .unwrap_or(0)
}

fn replicas(rs: &Value) -> i64 {
    rs["spec"]["replicas"].as_i64().unwrap_or(-1)
}

/// `kubectl rollout status` waits for the rollout and succeeds; then every
/// active pod runs `version` from the ReplicaSet the Deployment names, and
/// the other ReplicaSets are scaled to zero.
fn rolled_out(cluster: &HollowCluster, spec: &Spec, version: &str) -> anyhow::Result<Value> {
    let server = &cluster.server;
    let (ns, name) = (spec.ns, spec.name);
    let status = server.kubectl_ok(&[
        "rollout",
        "status",
        &format!("deployment/{name}"),
        "-n",
        ns,
        "--timeout=60s",
    ])?;
    assert!(status.contains("successfully rolled out"), "{status}");
    let want = format!("registry.example/{name}:{version}");
    cluster.wait_for(
        &format!("{name}: {} pods of {want}", spec.replicas),
        LONG,
        || {
            let rss = replica_sets(server, ns, name)?;
            // The newest revision is the Deployment's current template.
            let Some(current) = rss.last() else {
                return Ok(None);
            };
            if image(&current["spec"]["template"]["spec"]) != want {
                return Ok(None);
            }
            let hash = str_at(current, &["metadata", "labels", "pod-template-hash"]);
            let others_idle = rss
                .iter()
                .filter(|rs| rs["metadata"]["uid"] != current["metadata"]["uid"])
                .all(|rs| replicas(rs) == 0);
            let pods = server.active_pods(ns, &format!("app={name}"))?;
            let all_new = pods.iter().all(|p| {
                image(&p["spec"]) == want
                    && str_at(p, &["metadata", "labels", "pod-template-hash"]) == hash
                    && pod_ready(p)
            });
            let count = u32::try_from(pods.len())?;
            Ok((others_idle && all_new && count == spec.replicas).then(|| current.clone()))
        },
    )
}

/// `kubectl rollout history`: (revision, change-cause) rows.
fn history(server: &Server, ns: &str, name: &str) -> anyhow::Result<Vec<(u32, String)>> {
    let out = server.kubectl_ok(&[
        "rollout",
        "history",
        &format!("deployment/{name}"),
        "-n",
        ns,
    ])?;
    let mut rows = Vec::new();
    for line in out
        .lines()
        .skip_while(|l| !l.starts_with("REVISION"))
        .skip(1)
    {
        let mut parts = line.split_whitespace();
        let Some(rev) = parts.next().and_then(|r| r.parse().ok()) else {
            continue;
        };
        rows.push((rev, parts.collect::<Vec<_>>().join(" ")));
    }
    Ok(rows)
}

fn rows(list: &[(u32, &str)]) -> Vec<(u32, String)> {
    list.iter().map(|(r, c)| (*r, (*c).to_owned())).collect()
}

const ROLLING: &str = "{type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}";

#[test]
fn deployments_roll_undo_pause_and_restart_with_kubectl() -> anyhow::Result<()> {
    let cluster = HollowCluster::start(&three_nodes())?;
    let server = &cluster.server;
    server.create_namespace("roll")?;
    let mut spec = Spec {
        ns: "roll",
        name: "web",
        replicas: 4,
        version: "v1",
        ready: true,
        strategy: ROLLING,
        deadline: 600,
    };
    for version in ["v1", "v2", "v3"] {
        spec.version = version;
        server.apply(&spec.manifest())?;
        rolled_out(&cluster, &spec, version)?;
    }
    assert_eq!(
        history(server, "roll", "web")?,
        rows(&[(1, "deploy v1"), (2, "deploy v2"), (3, "deploy v3")])
    );

    undo_restores_templates(&cluster, &spec)?;

    // A fourth template: four ReplicaSets, and revisionHistoryLimit 2 keeps
    // two old ones: the oldest revision (v3's, 3) is pruned.
    spec.version = "v4";
    server.apply(&spec.manifest())?;
    rolled_out(&cluster, &spec, "v4")?;
    cluster.wait_for("v3's ReplicaSet pruned", LONG, || {
        let rss = replica_sets(server, "roll", "web")?;
        let revisions: Vec<u32> = rss.iter().map(revision).collect();
        Ok((revisions == [4, 5, 6]).then_some(()))
    })?;
    let rows_now = history(server, "roll", "web")?;
    assert_eq!(
        rows_now.iter().map(|r| r.0).collect::<Vec<_>>(),
        [4, 5, 6],
        "{rows_now:?}"
    );

    pause_resume_restart(&cluster, &spec)?;
    stuck_rollout_surges_and_times_out(&cluster, &mut spec)
}

/// `rollout undo` goes back to the previous template (reusing its
/// ReplicaSet, with a new revision) and `--to-revision` to any kept one.
fn undo_restores_templates(cluster: &HollowCluster, spec: &Spec) -> anyhow::Result<()> {
    let server = &cluster.server;
    let before = replica_sets(server, "roll", "web")?;
    let v2_rs = before
        .iter()
        .find(|rs| revision(rs) == 2)
        .context("no revision 2")?
        .clone();
    let undone = server.kubectl_ok(&["rollout", "undo", "deployment/web", "-n", "roll"])?;
    assert!(undone.contains("rolled back"), "{undone}");
    let current = rolled_out(cluster, spec, "v2")?;
    assert_eq!(
        current["metadata"]["uid"], v2_rs["metadata"]["uid"],
        "undo reuses the old ReplicaSet"
    );
    assert_eq!(revision(&current), 4);
    let template = server.json(&["get", "deployment", "web", "-n", "roll"])?;
    assert_eq!(
        image(&template["spec"]["template"]["spec"]),
        "registry.example/web:v2"
    );
    assert_eq!(
        template["spec"]["template"]["metadata"]["labels"]
            .as_object()
            .map(|l| l.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["app".to_owned()]),
        "the rolled-back template carries no pod-template-hash"
    );

    server.kubectl_ok(&[
        "rollout",
        "undo",
        "deployment/web",
        "-n",
        "roll",
        "--to-revision=1",
    ])?;
    let current = rolled_out(cluster, spec, "v1")?;
    assert_eq!(revision(&current), 5);
    // Revisions 1 and 2 became 5 and 4.
    assert_eq!(
        history(server, "roll", "web")?,
        rows(&[(3, "deploy v3"), (4, "deploy v2"), (5, "deploy v1")])
    );
    Ok(())
}

/// A paused Deployment does not roll a template change; resumed it does.
/// `rollout restart` rolls a new ReplicaSet stamped `restartedAt`.
fn pause_resume_restart(cluster: &HollowCluster, spec: &Spec) -> anyhow::Result<()> {
    let server = &cluster.server;
    server.kubectl_ok(&["rollout", "pause", "deployment/web", "-n", "roll"])?;
    server.kubectl_ok(&[
        "set",
        "image",
        "deployment/web",
        "-n",
        "roll",
        "app=registry.example/web:v5",
    ])?;
    let paused = cluster.wait_for("the paused change observed", LONG, || {
        let d = server.json(&["get", "deployment", "web", "-n", "roll"])?;
        let observed = d["status"]["observedGeneration"] == d["metadata"]["generation"];
        Ok(observed.then_some(d))
    })?;
    let progressing = paused["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Progressing")
        .cloned()
        .unwrap_or_default();
    assert_eq!(progressing["reason"], "DeploymentPaused", "{progressing}");
    let rss = replica_sets(server, "roll", "web")?;
    assert!(
        rss.iter()
            .all(|rs| image(&rs["spec"]["template"]["spec"]) != "registry.example/web:v5"),
        "a paused Deployment rolled: {rss:?}"
    );
    let pods = server.active_pods("roll", "app=web")?;
    assert!(
        pods.iter()
            .all(|p| image(&p["spec"]) == "registry.example/web:v4"),
        "pods changed while paused"
    );

    server.kubectl_ok(&["rollout", "resume", "deployment/web", "-n", "roll"])?;
    rolled_out(cluster, spec, "v5")?;

    server.kubectl_ok(&["rollout", "restart", "deployment/web", "-n", "roll"])?;
    let restarted = cluster.wait_for("a restarted ReplicaSet", LONG, || {
        let rss = replica_sets(server, "roll", "web")?;
        Ok(rss
            .into_iter()
            .find(|rs| {
                !str_at(
                    rs,
                    &[
                        "spec",
                        "template",
                        "metadata",
                        "annotations",
                        "kubectl.kubernetes.io/restartedAt",
                    ],
                )
                .is_empty()
            })
            .map(|rs| revision(&rs)))
    })?;
    assert_eq!(restarted, 8);
    let current = rolled_out(cluster, spec, "v5")?;
    assert_eq!(revision(&current), 8);
    for pod in server.active_pods("roll", "app=web")? {
        assert!(
            !str_at(
                &pod,
                &[
                    "metadata",
                    "annotations",
                    "kubectl.kubernetes.io/restartedAt"
                ]
            )
            .is_empty(),
            "pod without restartedAt: {pod}"
        );
    }
    Ok(())
}

/// A template whose pods never get Ready: with maxSurge 1 and
/// maxUnavailable 0 the rollout stops at one extra pod with all old ones
/// kept, the progress deadline passes (Progressing=False,
/// ProgressDeadlineExceeded, and `rollout status` says so), and `rollout
/// undo` gets back to the working template.
fn stuck_rollout_surges_and_times_out(
    cluster: &HollowCluster,
    spec: &mut Spec,
) -> anyhow::Result<()> {
    let server = &cluster.server;
    spec.version = "v6";
    spec.ready = false;
    spec.deadline = 3;
    server.apply(&spec.manifest())?;
    cluster.wait_for("ProgressDeadlineExceeded", LONG, || {
        let d = server.json(&["get", "deployment", "web", "-n", "roll"])?;
        let exceeded = d["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| {
                c["type"] == "Progressing"
                    && c["status"] == "False"
                    && c["reason"] == "ProgressDeadlineExceeded"
            });
        Ok(exceeded.then_some(()))
    })?;
    let rss = replica_sets(server, "roll", "web")?;
    let spec_counts: Vec<(String, i64)> = rss
        .iter()
        .filter(|rs| replicas(rs) > 0)
        .map(|rs| {
            (
                image(&rs["spec"]["template"]["spec"]).to_owned(),
                replicas(rs),
            )
        })
        .collect();
    assert_eq!(
        spec_counts,
        [
            ("registry.example/web:v5".to_owned(), 4),
            ("registry.example/web:v6".to_owned(), 1)
        ],
        "maxSurge 1 / maxUnavailable 0 allow exactly one extra pod"
    );
    let pods = server.active_pods("roll", "app=web")?;
    assert_eq!(pods.len(), 5);
    assert_eq!(pods.iter().filter(|p| pod_ready(p)).count(), 4);
    let out = server.kubectl(&[
        "rollout",
        "status",
        "deployment/web",
        "-n",
        "roll",
        "--timeout=30s",
    ])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("exceeded its progress deadline"),
        "rollout status of a stuck Deployment: {stderr}"
    );

    server.kubectl_ok(&["rollout", "undo", "deployment/web", "-n", "roll"])?;
    spec.ready = true;
    rolled_out(cluster, spec, "v5")?;
    Ok(())
}

#[test]
fn deployment_strategies_honour_max_unavailable_and_recreate() -> anyhow::Result<()> {
    let cluster = HollowCluster::start(&three_nodes())?;
    let server = &cluster.server;
    server.create_namespace("strat")?;

    // maxSurge 0, maxUnavailable 2: a template that never gets Ready may
    // take two of four pods, no more, and no extra pod is made.
    let mut spec = Spec {
        ns: "strat",
        name: "batch",
        replicas: 4,
        version: "v1",
        ready: true,
        strategy: "{type: RollingUpdate, rollingUpdate: {maxSurge: 0, maxUnavailable: 2}}",
        deadline: 600,
    };
    server.apply(&spec.manifest())?;
    rolled_out(&cluster, &spec, "v1")?;
    spec.version = "v2";
    spec.ready = false;
    server.apply(&spec.manifest())?;
    cluster.wait_for("old 2 / new 2", LONG, || {
        let rss = replica_sets(server, "strat", "batch")?;
        let counts: Vec<i64> = rss.iter().map(replicas).collect();
        let pods = server.active_pods("strat", "app=batch")?;
        let ready = pods.iter().filter(|p| pod_ready(p)).count();
        Ok((counts == [2, 2] && pods.len() == 4 && ready == 2).then_some(()))
    })?;
    // Fixed template: the unready pods go first, the rollout completes.
    spec.version = "v3";
    spec.ready = true;
    server.apply(&spec.manifest())?;
    rolled_out(&cluster, &spec, "v3")?;

    // Recreate: every old pod is gone before a new one is made.
    let mut spec = Spec {
        ns: "strat",
        name: "single",
        replicas: 3,
        version: "v1",
        ready: true,
        strategy: "{type: Recreate}",
        deadline: 600,
    };
    server.apply(&spec.manifest())?;
    rolled_out(&cluster, &spec, "v1")?;
    spec.version = "v2";
    spec.ready = false;
    server.apply(&spec.manifest())?;
    // Polled while it happens: never an old pod and a new one at once.
    let old_hash = str_at(
        &replica_sets(server, "strat", "single")?[0],
        &["metadata", "labels", "pod-template-hash"],
    )
    .to_owned();
    let mut overlap = None;
    cluster.wait_for("old scaled to 0, new to 3", LONG, || {
        let rss = replica_sets(server, "strat", "single")?;
        let counts: Vec<i64> = rss.iter().map(replicas).collect();
        // Terminating pods count: an old pod must be gone, not going.
        let pods = server.items(&["pods", "-n", "strat", "-l", "app=single"])?;
        let old = pods
            .iter()
            .filter(|p| str_at(p, &["metadata", "labels", "pod-template-hash"]) == old_hash)
            .count();
        if old > 0 && old < pods.len() {
            overlap = Some(pods.clone());
        }
        Ok((counts == [0, 3] && pods.len() == 3 && old == 0).then_some(()))
    })?;
    assert!(
        overlap.is_none(),
        "Recreate ran old and new pods together: {overlap:?}"
    );
    spec.version = "v3";
    spec.ready = true;
    server.apply(&spec.manifest())?;
    rolled_out(&cluster, &spec, "v3")?;
    Ok(())
}

const POOL: &str = "\
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: pool, namespace: rs}
spec:
  replicas: 3
  selector:
    matchLabels: {app: pool}
  template:
    metadata:
      labels: {app: pool}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - {name: app, image: registry.example/pool:v1}
";

/// Waits until `selector` has exactly `count` active pods, all Ready.
fn ready_pods(
    cluster: &HollowCluster,
    ns: &str,
    selector: &str,
    count: usize,
) -> anyhow::Result<Vec<Value>> {
    cluster.wait_for(&format!("{count} ready pods {selector}"), LONG, || {
        let pods = cluster.server.active_pods(ns, selector)?;
        Ok((pods.len() == count && pods.iter().all(pod_ready)).then_some(pods))
    })
}

fn uids(pods: &[Value]) -> BTreeSet<String> {
    pods.iter()
        .map(|p| str_at(p, &["metadata", "uid"]).to_owned())
        .collect()
}

#[test]
fn replicasets_scale_adopt_release_and_deletes_cascade() -> anyhow::Result<()> {
    let cluster = HollowCluster::start(&three_nodes())?;
    let server = &cluster.server;
    server.create_namespace("rs")?;
    server.apply(POOL)?;
    ready_pods(&cluster, "rs", "app=pool", 3)?;
    for n in [10, 2] {
        if n == 2 {
            // Scaling down takes the pods that are not ready first.
            let sick = server.active_pods("rs", "app=pool")?[3]["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            server.kubectl_ok(&[
                "annotate",
                "pod",
                &sick,
                "-n",
                "rs",
                &format!("{READY}=false"),
            ])?;
            cluster.wait_for(&format!("{sick} not ready"), LONG, || {
                let pod = server.json(&["get", "pod", &sick, "-n", "rs"])?;
                Ok((!pod_ready(&pod)).then_some(()))
            })?;
        }
        server.kubectl_ok(&["scale", "rs/pool", "-n", "rs", &format!("--replicas={n}")])?;
        // (all Ready: with 2 left, the unready one is among those deleted)
        ready_pods(&cluster, "rs", "app=pool", n)?;
        cluster.wait_for(&format!("status of {n} ready replicas"), LONG, || {
            let rs = server.json(&["get", "rs", "pool", "-n", "rs"])?;
            Ok((rs["status"]["readyReplicas"] == n && rs["status"]["replicas"] == n).then_some(()))
        })?;
    }
    let kept = uids(&server.active_pods("rs", "app=pool")?);

    // Orphaned, then adopted by a new ReplicaSet with the same selector.
    server.kubectl_ok(&["delete", "rs", "pool", "-n", "rs", "--cascade=orphan"])?;
    let orphans = server.active_pods("rs", "app=pool")?;
    assert_eq!(uids(&orphans), kept, "orphaning deleted pods");
    for pod in &orphans {
        assert!(
            pod["metadata"]["ownerReferences"]
                .as_array()
                .is_none_or(Vec::is_empty),
            "still owned: {pod}"
        );
    }
    server.apply(&POOL.replace("replicas: 3", "replicas: 2"))?;
    let rs_uid = server.kubectl_ok(&[
        "get",
        "rs",
        "pool",
        "-n",
        "rs",
        "-o",
        "jsonpath={.metadata.uid}",
    ])?;
    cluster.wait_for("the orphans adopted", LONG, || {
        let pods = server.active_pods("rs", "app=pool")?;
        let adopted = pods.iter().all(|p| {
            p["metadata"]["ownerReferences"][0]["uid"] == rs_uid.as_str()
                && p["metadata"]["ownerReferences"][0]["controller"] == true
        });
        Ok((adopted && uids(&pods) == kept).then_some(()))
    })?;

    // A pod relabelled out of the selector is released and replaced.
    let released = kept.iter().next().context("no pod")?.clone();
    let name = orphans
        .iter()
        .find(|p| str_at(p, &["metadata", "uid"]) == released)
        .map(|p| str_at(p, &["metadata", "name"]).to_owned())
        .context("no name")?;
    server.kubectl_ok(&[
        "label",
        "pod",
        &name,
        "-n",
        "rs",
        "app=debug",
        "--overwrite",
    ])?;
    let pods = ready_pods(&cluster, "rs", "app=pool", 2)?;
    assert!(!uids(&pods).contains(&released));
    cluster.wait_for("the released pod without owner", LONG, || {
        let pod = server.json(&["get", "pod", &name, "-n", "rs"])?;
        Ok(pod["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(Vec::is_empty)
            .then_some(()))
    })?;

    cascading_deletes(&cluster)?;
    namespace_deletion_takes_everything(&cluster)
}

/// `kubectl delete --cascade=background|foreground|orphan` on Deployments.
fn cascading_deletes(cluster: &HollowCluster) -> anyhow::Result<()> {
    let server = &cluster.server;
    for name in ["bg", "fg", "or"] {
        let spec = Spec {
            ns: "rs",
            name,
            replicas: 2,
            version: "v1",
            ready: true,
            strategy: ROLLING,
            deadline: 600,
        };
        server.apply(&spec.manifest())?;
        rolled_out(cluster, &spec, "v1")?;
    }
    let dependents = |name: &str| -> anyhow::Result<(usize, usize)> {
        let rss = server.items(&["rs", "-n", "rs", "-l", &format!("app={name}")])?;
        let pods = server.items(&["pods", "-n", "rs", "-l", &format!("app={name}")])?;
        Ok((rss.len(), pods.len()))
    };

    // Background: the Deployment goes at once, the collector follows.
    server.kubectl_ok(&[
        "delete",
        "deployment",
        "bg",
        "-n",
        "rs",
        "--cascade=background",
    ])?;
    cluster.wait_for("bg's ReplicaSet and pods collected", LONG, || {
        Ok((dependents("bg")? == (0, 0)).then_some(()))
    })?;

    // Foreground: the Deployment stays (foregroundDeletion) until its
    // dependents are gone; kubectl --wait returns once it is.
    server.kubectl_ok(&[
        "delete",
        "deployment",
        "fg",
        "-n",
        "rs",
        "--cascade=foreground",
        "--wait",
        "--timeout=60s",
    ])?;
    assert_eq!(
        dependents("fg")?,
        (0, 0),
        "foreground deletion removed the owner before its dependents"
    );

    // Orphan: the ReplicaSet and pods stay, owned by nobody.
    server.kubectl_ok(&["delete", "deployment", "or", "-n", "rs", "--cascade=orphan"])?;
    let rs = cluster.wait_for("or's ReplicaSet orphaned", LONG, || {
        let rss = server.items(&["rs", "-n", "rs", "-l", "app=or"])?;
        Ok(rss.into_iter().find(|rs| {
            rs["metadata"]["ownerReferences"]
                .as_array()
                .is_none_or(Vec::is_empty)
        }))
    })?;
    assert_eq!(replicas(&rs), 2);
    ready_pods(cluster, "rs", "app=or", 2)?;
    let gone = server.kubectl(&["get", "deployment", "or", "-n", "rs"])?;
    assert!(
        !gone.status.success(),
        "the orphaning delete kept the owner"
    );
    Ok(())
}

/// Deleting a namespace deletes what is in it (running pods included),
/// then the namespace.
fn namespace_deletion_takes_everything(cluster: &HollowCluster) -> anyhow::Result<()> {
    let server = &cluster.server;
    server.apply(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: rs}\ndata: {a: b}\n",
    )?;
    server.kubectl_ok(&["delete", "namespace", "rs", "--wait", "--timeout=60s"])?;
    let gone = server.kubectl(&["get", "namespace", "rs"])?;
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("NotFound"),
        "{gone:?}"
    );
    let left = server.kubectl_ok(&[
        "get",
        "deployments,replicasets,pods,configmaps",
        "-n",
        "rs",
        "-o",
        "name",
    ])?;
    assert_eq!(left.trim(), "", "left behind: {left}");
    Ok(())
}

const HA: &str = r"apiVersion: apps/v1
kind: Deployment
metadata: {name: ha, namespace: ha}
spec:
  replicas: 3
  selector:
    matchLabels: {app: ha}
  template:
    metadata:
      labels: {app: ha}
    spec:
      tolerations:
      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}
      - {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 2}
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            podAffinityTerm:
              labelSelector:
                matchLabels: {app: ha}
              topologyKey: kubernetes.io/hostname
      containers:
      - {name: app, image: registry.example/ha:v1}
---
apiVersion: v1
kind: Pod
metadata: {name: patient, namespace: ha, labels: {app: patient}}
spec:
  nodeName: node-a
  tolerations:
  - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 3600}
  containers:
  - {name: app, image: registry.example/patient:v1}
---
apiVersion: v1
kind: Service
metadata: {name: patient, namespace: ha}
spec:
  selector: {app: patient}
  ports:
  - {port: 80}
";

#[test]
fn a_dead_node_is_tainted_and_its_pods_move() -> anyhow::Result<()> {
    let cluster = HollowCluster::start(&three_nodes())?;
    let server = &cluster.server;
    server.create_namespace("ha")?;
    server.apply(HA)?;
    let pods = ready_pods(&cluster, "ha", "app=ha", 3)?;
    ready_pods(&cluster, "ha", "app=patient", 1)?;
    let victim = "node-a";
    let evicted: BTreeSet<String> = pods
        .iter()
        .filter(|p| str_at(p, &["spec", "nodeName"]) == victim)
        .map(|p| str_at(p, &["metadata", "name"]).to_owned())
        .collect();
    assert!(!evicted.is_empty(), "anti-affinity left {victim} empty");

    cluster.nodes.kill(victim)?;
    cluster.wait_for(&format!("{victim} NotReady and tainted"), LONG, || {
        let node = server.json(&["get", "node", victim])?;
        let unknown = node["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "Unknown");
        let tainted = node["spec"]["taints"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoExecute");
        Ok((unknown && tainted).then_some(()))
    })?;
    let listed = server.kubectl_ok(&["get", "node", victim, "--no-headers"])?;
    assert!(listed.contains("NotReady"), "{listed}");

    // The pods there are evicted after their 2s toleration, and the
    // ReplicaSet makes replacements on the nodes that are alive.
    let moved = cluster.wait_for("3 ready pods off the dead node", LONG, || {
        let pods = server.active_pods("ha", "app=ha")?;
        let elsewhere = pods.iter().all(|p| {
            str_at(p, &["spec", "nodeName"]) != victim
                && !evicted.contains(str_at(p, &["metadata", "name"]))
        });
        Ok((pods.len() == 3 && elsewhere && pods.iter().all(pod_ready)).then_some(pods))
    })?;
    assert_eq!(moved.len(), 3);
    let events = server.kubectl_ok(&["get", "events", "-n", "ha"])?;
    if !events.contains("TaintManagerEviction") {
        bail!("no eviction event:\n{events}");
    }

    // A pod tolerating the taint for an hour stays, marked not ready, and
    // its Service stops counting it as ready.
    let patient = cluster.wait_for("patient marked not ready", LONG, || {
        let pod = server.json(&["get", "pod", "patient", "-n", "ha"])?;
        Ok((!pod_ready(&pod)).then_some(pod))
    })?;
    assert!(
        patient["metadata"]["deletionTimestamp"].is_null(),
        "a pod tolerating the taint for 1h was evicted"
    );
    let ip = str_at(&patient, &["status", "podIP"]).to_owned();
    cluster.wait_for("patient's endpoint not ready", LONG, || {
        let ep = server.json(&["get", "endpoints", "patient", "-n", "ha"])?;
        let not_ready = ep["subsets"][0]["notReadyAddresses"][0]["ip"] == ip.as_str();
        Ok((not_ready && ep["subsets"][0]["addresses"].is_null()).then_some(()))
    })?;
    Ok(())
}
