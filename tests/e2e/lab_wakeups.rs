//! Who wakes whom, counted on a 3-node lab: each agent's
//! `skep_agent_sync_runs_total{loop,cause="change"}` says how often its
//! services, policy, DNS and routes loops ran for a change of what they
//! read. A pod on node 1 that is annotated and whose container restarts
//! (status writes by node 1's worker, echoed back down its stream) moves
//! no service, policy or DNS run on any node; a label change (a policy
//! fact) runs policy on every node, and still no service or DNS sync.

use std::collections::BTreeMap;
use std::time::Duration;

use skep_e2e::lab::{Lab, LabNode};
use skep_e2e::require_root;

const IMAGE: &str = "lab/busybox:wake";
const NS: &str = "wake";
const LOOPS: [&str; 4] = ["services", "policy", "dns", "routes"];

fn manifests(n1: &str) -> String {
    format!(
        r"apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: p, namespace: {NS}, labels: {{app: wake}}}}
spec:
  nodeName: {n1}
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {IMAGE}
    imagePullPolicy: Never
    command: [sh, -c, 'while [ ! -e /tmp/stop ]; do sleep 0.2; done; rm -f /tmp/stop; exit 3']
    ports: [{{name: http, containerPort: 80}}]
"
    )
}

/// Change-caused runs per loop, per node.
type Runs = Vec<BTreeMap<String, u64>>;

/// The change-caused runs of every loop of `node`'s agent.
fn runs_of(lab: &Lab, node: &LabNode) -> anyhow::Result<BTreeMap<String, u64>> {
    let text = lab.metrics(node)?;
    let mut out = BTreeMap::new();
    for l in LOOPS {
        let prefix = format!(r#"skep_agent_sync_runs_total{{loop="{l}",cause="change"}} "#);
        let n = text
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .ok_or_else(|| anyhow::anyhow!("no {prefix} on {} in:\n{text}", node.name))?;
        out.insert(l.to_owned(), n);
    }
    Ok(out)
}

fn runs(lab: &Lab) -> anyhow::Result<Runs> {
    lab.nodes.iter().map(|n| runs_of(lab, n)).collect()
}

/// Waits until no counter moved for 3 s; returns them.
fn settled(lab: &Lab) -> anyhow::Result<Runs> {
    let mut last = runs(lab)?;
    lab.wait("the sync loops to settle", Duration::from_mins(1), || {
        std::thread::sleep(Duration::from_secs(3));
        let now = runs(lab)?;
        let still = now == last;
        last = now;
        Ok(still.then(|| last.clone()))
    })
}

/// `jsonpath` of the pod.
fn pod_field(lab: &Lab, jsonpath: &str) -> anyhow::Result<String> {
    Ok(lab
        .kubectl_ok(&[
            "get",
            "pod",
            "-n",
            NS,
            "p",
            "-o",
            &format!("jsonpath={jsonpath}"),
        ])?
        .trim()
        .to_owned())
}

fn show(label: &str, lab: &Lab, before: &Runs, after: &Runs) {
    for (i, node) in lab.nodes.iter().enumerate() {
        eprintln!(
            "{label}: node {} ({}): before {:?} after {:?}",
            i + 1,
            node.name,
            before[i],
            after[i]
        );
    }
}

fn moved(before: &Runs, after: &Runs, node: usize, l: &str) -> u64 {
    after[node][l]
        .checked_sub(before[node][l])
        .expect("a run counter went backwards: did an agent restart?")
}

#[test]
fn lab_a_pods_status_and_annotations_wake_no_other_loop_its_labels_wake_policy()
-> anyhow::Result<()> {
    require_root!();
    let dir = tempfile::tempdir()?;
    let mut lab = Lab::up(dir.path(), 3)?;
    let tar = dir.path().join("image.tar");
    skep_image::busybox_image(IMAGE, &["sh"])?.write_oci_tarball(&tar)?;
    lab.image_import(&tar)?;
    let n1 = lab.nodes[0].name.clone();
    lab.kubectl_ok_with(&["apply", "-f", "-"], &manifests(&n1))?;
    let pod = lab.running_pod(NS, "p", Duration::from_mins(2))?;
    assert_eq!(pod.node, n1);

    eprintln!("--- quiet: the pod runs, nothing changes");
    let before = settled(&lab)?;
    let rv_before: u64 = pod_field(&lab, "{.metadata.resourceVersion}")?.parse()?;

    eprintln!("--- an annotation and a container restart on node 1");
    lab.kubectl_ok(&["annotate", "pod", "-n", NS, "p", "skep.test/note=touched"])?;
    lab.kubectl_ok(&["exec", "-n", NS, "p", "--", "touch", "/tmp/stop"])?;
    lab.wait(
        "the container to restart and be ready again",
        Duration::from_mins(1),
        || {
            let got = pod_field(
                &lab,
                "{.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].ready}",
            )?;
            Ok((got == "1 true").then_some(()))
        },
    )?;
    // Longer than the loops' debounce and the stream's delivery.
    std::thread::sleep(Duration::from_secs(2));
    let after = runs(&lab)?;
    let rv_after: u64 = pod_field(&lab, "{.metadata.resourceVersion}")?.parse()?;
    eprintln!(
        "pod p: resourceVersion {rv_before} -> {rv_after} (annotation + node 1's status writes)"
    );
    show("annotation + restart", &lab, &before, &after);
    for (i, node) in lab.nodes.iter().enumerate() {
        for l in ["services", "policy", "dns", "routes"] {
            assert_eq!(
                moved(&before, &after, i, l),
                0,
                "{l} on node {} ({}) woke for a pod's status or annotation",
                i + 1,
                node.name
            );
        }
    }

    eprintln!("--- a label is a policy fact: policy runs on every node");
    let before = after;
    lab.kubectl_ok(&["label", "pod", "-n", NS, "p", "tier=x"])?;
    let after = lab.wait(
        "every node's policy sync to run",
        Duration::from_secs(30),
        || {
            let now = runs(&lab)?;
            let all = (0..lab.nodes.len()).all(|i| moved(&before, &now, i, "policy") > 0);
            Ok(all.then_some(now))
        },
    )?;
    std::thread::sleep(Duration::from_secs(2));
    let after = {
        let late = runs(&lab)?;
        assert!(
            late.iter()
                .zip(&after)
                .all(|(a, b)| a["policy"] >= b["policy"])
        );
        late
    };
    show("label", &lab, &before, &after);
    for (i, node) in lab.nodes.iter().enumerate() {
        for l in ["services", "dns", "routes"] {
            assert_eq!(
                moved(&before, &after, i, l),
                0,
                "{l} on node {} ({}) woke for a pod's label",
                i + 1,
                node.name
            );
        }
    }
    lab.down()?;
    Ok(())
}
