//! Endpoints and EndpointSlices as kubectl shows them, on hollow nodes: a
//! Service's named targetPort resolves per pod, ready pods are addresses
//! and unready ones notReadyAddresses (`ready: false` in the slice), and
//! both follow readiness changes and deletions.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use skep_e2e::cluster::str_at;
use skep_e2e::hollow::{HollowCluster, HollowNode, READY};

const LONG: Duration = Duration::from_mins(1);

fn pod(name: &str, port: u16, ready: bool) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: svc
  labels: {{app: web}}
  annotations: {{{READY}: "{ready}"}}
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: app
    image: registry.example/web:v1
    ports:
    - {{name: http, containerPort: {port}}}
"#
    )
}

const SERVICE: &str = "\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: svc}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
";

/// Endpoints as (port, ready IPs, not-ready IPs), sorted by port.
type Subsets = Vec<(i64, BTreeSet<String>, BTreeSet<String>)>;

fn ips(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|a| str_at(a, &["ip"]).to_owned())
        .collect()
}

fn endpoints(cluster: &HollowCluster) -> anyhow::Result<Subsets> {
    let ep = cluster
        .server
        .json(&["get", "endpoints", "web", "-n", "svc"])?;
    let mut subsets: Subsets = ep["subsets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["ports"][0]["port"].as_i64().unwrap_or(0),
                ips(&s["addresses"]),
                ips(&s["notReadyAddresses"]),
            )
        })
        .collect();
    subsets.sort();
    Ok(subsets)
}

/// The slices of Service web in the same shape.
fn slices(cluster: &HollowCluster) -> anyhow::Result<Subsets> {
    let items = cluster.server.items(&[
        "endpointslices",
        "-n",
        "svc",
        "-l",
        "kubernetes.io/service-name=web",
    ])?;
    let mut subsets: Subsets = Vec::new();
    for slice in &items {
        let port = slice["ports"][0]["port"].as_i64().unwrap_or(0);
        let (mut ready, mut not_ready) = (BTreeSet::new(), BTreeSet::new());
        for e in slice["endpoints"].as_array().into_iter().flatten() {
            let ip = e["addresses"][0].as_str().unwrap_or_default().to_owned();
            if e["conditions"]["ready"] == true {
                ready.insert(ip);
            } else {
                not_ready.insert(ip);
            }
        }
        if !ready.is_empty() || !not_ready.is_empty() {
            subsets.push((port, ready, not_ready));
        }
    }
    subsets.sort();
    Ok(subsets)
}

fn set(ips: &[&str]) -> BTreeSet<String> {
    ips.iter().map(|s| (*s).to_owned()).collect()
}

/// Waits until both Endpoints and EndpointSlices say `want`.
fn expect(cluster: &HollowCluster, what: &str, want: &Subsets) -> anyhow::Result<()> {
    cluster.wait_for(what, LONG, || {
        let (ep, sl) = (endpoints(cluster)?, slices(cluster)?);
        if ep == *want && sl == *want {
            return Ok(Some(()));
        }
        eprintln!("{what}: endpoints {ep:?}, slices {sl:?}, want {want:?}");
        Ok(None)
    })
}

#[test]
fn endpoints_follow_readiness_and_named_ports() -> anyhow::Result<()> {
    let cluster = HollowCluster::start(&[HollowNode::new("node-a"), HollowNode::new("node-b")])?;
    let server = &cluster.server;
    server.create_namespace("svc")?;
    server.apply(SERVICE)?;
    for (name, port, ready) in [("a", 8080, true), ("b", 9090, true), ("c", 8080, false)] {
        server.apply(&pod(name, port, ready))?;
    }
    let ip = |name: &str| -> anyhow::Result<String> {
        cluster.wait_for(&format!("an IP for pod {name}"), LONG, || {
            let ip = server.kubectl_ok(&[
                "get",
                "pod",
                name,
                "-n",
                "svc",
                "-o",
                "jsonpath={.status.podIP}",
            ])?;
            Ok(Some(ip).filter(|ip| !ip.is_empty()))
        })
    };
    let (a, b, c) = (ip("a")?, ip("b")?, ip("c")?);

    // `targetPort: http` is 8080 on a and c, 9090 on b; c is not ready.
    expect(
        &cluster,
        "named ports resolved per pod, c not ready",
        &vec![(8080, set(&[&a]), set(&[&c])), (9090, set(&[&b]), set(&[]))],
    )?;

    // c turns ready; a goes away.
    server.kubectl_ok(&[
        "annotate",
        "pod",
        "c",
        "-n",
        "svc",
        &format!("{READY}=true"),
        "--overwrite",
    ])?;
    expect(
        &cluster,
        "c ready",
        &vec![
            (8080, set(&[&a, &c]), set(&[])),
            (9090, set(&[&b]), set(&[])),
        ],
    )?;
    server.kubectl_ok(&["delete", "pod", "a", "-n", "svc", "--wait", "--timeout=60s"])?;
    expect(
        &cluster,
        "a removed",
        &vec![(8080, set(&[&c]), set(&[])), (9090, set(&[&b]), set(&[]))],
    )?;
    let described = server.kubectl_ok(&["describe", "service", "web", "-n", "svc"])?;
    assert!(
        described.contains(&format!("{c}:8080")) && described.contains(&format!("{b}:9090")),
        "{described}"
    );
    Ok(())
}
