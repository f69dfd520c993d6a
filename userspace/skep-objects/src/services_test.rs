//! Service cluster IP and node port allocation on a real single-replica
//! store in a temp dir.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use skep_api::service_alloc::ServiceRanges;
use skep_api::{ApiError, StatusReason, decode::Decoded, delete::DeleteOptions, kinds};
use skep_store::{ListRequest, ReadConsistency, Store, StoreConfig};

use crate::{CLUSTER_IP_PREFIX, NODE_PORT_PREFIX, Objects, WriteOptions};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

async fn open(dir: &tempfile::TempDir, cidr: &str, ports: &str) -> Result<Objects> {
    let store = Store::open(StoreConfig::single(dir.path())).await?;
    let ranges = ServiceRanges {
        cluster_ip: cidr.parse()?,
        node_ports: ports.parse()?,
    };
    let objects = Objects::with_service_ranges(store, ranges);
    let ns = &kinds::NAMESPACE;
    let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}});
    objects.create(ns, "", decoded(body), &opts()).await?;
    Ok(objects)
}

fn decoded(value: Value) -> Decoded {
    Decoded {
        value,
        duplicates: Vec::new(),
    }
}

fn opts() -> WriteOptions {
    WriteOptions::by("test")
}

fn service(name: &str, spec: &Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec})
}

async fn create(
    objects: &Objects,
    name: &str,
    spec: &Value,
) -> std::result::Result<Value, ApiError> {
    let info = &kinds::SERVICE;
    let written = objects
        .create(info, "team", decoded(service(name, spec)), &opts())
        .await?;
    Ok(written.object)
}

async fn delete(objects: &Objects, name: &str) -> Result<()> {
    let info = &kinds::SERVICE;
    objects
        .delete(info, "team", name, &DeleteOptions::default(), false)
        .await?;
    Ok(())
}

/// The reservation keys under `prefix`, as their suffixes.
async fn reserved(objects: &Objects, prefix: &str) -> Result<BTreeSet<String>> {
    let page = objects
        .store()
        .list(
            ListRequest {
                prefix: prefix.as_bytes().to_vec().into(),
                ..ListRequest::default()
            },
            ReadConsistency::Linearizable,
        )
        .await?;
    Ok(page
        .items
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key[prefix.len()..]).into_owned())
        .collect())
}

fn cluster_ip(svc: &Value) -> String {
    svc["spec"]["clusterIP"].as_str().unwrap_or("").to_owned()
}

fn node_port(svc: &Value, i: usize) -> i64 {
    svc["spec"]["ports"][i]["nodePort"].as_i64().unwrap_or(0)
}

fn message(err: &ApiError) -> String {
    format!("{:?}: {}", err.reason, err.message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_get_reserved_cluster_ips_with_upstream_errors() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let objects = open(&dir, "10.96.0.0/12", "30000-32767").await?;
    let web = create(&objects, "web", &json!({"ports": [{"port": 80}]})).await?;
    let ip = cluster_ip(&web);
    let parsed: std::net::Ipv4Addr = ip.parse()?;
    assert!(
        objects.service_ranges().cluster_ip.offset(parsed).is_some(),
        "{ip}"
    );
    assert_eq!(web["spec"]["clusterIPs"], json!([ip]));
    assert_eq!(web["spec"]["ipFamilies"], json!(["IPv4"]));
    assert_eq!(web["spec"]["ipFamilyPolicy"], json!("SingleStack"));
    assert_eq!(
        reserved(&objects, CLUSTER_IP_PREFIX).await?,
        BTreeSet::from([ip.clone()])
    );

    let headless = create(
        &objects,
        "hl",
        &json!({"clusterIP": "None", "ports": [{"port": 80}]}),
    )
    .await?;
    assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
    let ext = create(
        &objects,
        "ext",
        &json!({"type": "ExternalName", "externalName": "example.com"}),
    )
    .await?;
    assert_eq!(ext["spec"].get("clusterIP"), None);
    assert_eq!(
        reserved(&objects, CLUSTER_IP_PREFIX).await?.len(),
        1,
        "headless and ExternalName reserve none"
    );

    // Upstream's errors for a taken or out-of-range IP or port.
    let err = create(
        &objects,
        "copy",
        &json!({"clusterIP": ip, "ports": [{"port": 80}]}),
    )
    .await
    .err()
    .ok_or("a taken IP must be refused")?;
    assert_eq!(err.code(), 422);
    assert_eq!(
        err.message,
        format!(
            "Service \"copy\" is invalid: spec.clusterIPs: Invalid value: []string{{\"{ip}\"}}: failed to allocate IP {ip}: provided IP is already allocated"
        )
    );
    let err = create(
        &objects,
        "far",
        &json!({"clusterIP": "10.0.0.5", "ports": [{"port": 80}]}),
    )
    .await
    .err()
    .ok_or("an IP out of range must be refused")?;
    assert!(
        err.message
            .contains("The range of valid IPs is 10.96.0.0/12"),
        "{}",
        message(&err)
    );

    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_ports_follow_the_type_and_are_given_back() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let objects = open(&dir, "10.96.0.0/12", "30000-32767").await?;
    let web = create(&objects, "web", &json!({"ports": [{"port": 80}]})).await?;
    let ip = cluster_ip(&web);
    let np = create(&objects, "np", &json!({"type": "NodePort", "ports": [
        {"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
        {"name": "web", "port": 80, "nodePort": 30080}]})).await?;
    let dns_port = node_port(&np, 0);
    assert!((30000..=32767).contains(&dns_port), "{np}");
    assert_eq!(
        node_port(&np, 1),
        dns_port,
        "ports sharing a number share a node port"
    );
    assert_eq!(node_port(&np, 2), 30080);
    let err = create(
        &objects,
        "np2",
        &json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}),
    )
    .await
    .err()
    .ok_or("a taken node port must be refused")?;
    assert_eq!(
        err.message,
        "Service \"np2\" is invalid: spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"
    );
    assert_eq!(
        reserved(&objects, CLUSTER_IP_PREFIX).await?.len(),
        2,
        "the failed create reserved nothing"
    );
    assert_eq!(reserved(&objects, NODE_PORT_PREFIX).await?.len(), 2);

    // NodePort → ClusterIP gives the node ports back; and back again takes new ones.
    let info = &kinds::SERVICE;
    let mut to_cluster_ip = np.clone();
    to_cluster_ip["spec"]["type"] = json!("ClusterIP");
    let updated = objects
        .replace(info, "", &np, decoded(to_cluster_ip), &opts())
        .await?
        .object;
    assert_eq!(node_port(&updated, 2), 0, "{updated}");
    assert_eq!(
        cluster_ip(&updated),
        cluster_ip(&np),
        "the cluster IP stays"
    );
    assert!(reserved(&objects, NODE_PORT_PREFIX).await?.is_empty());
    create(
        &objects,
        "np2",
        &json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}),
    )
    .await?;
    let mut to_node_port = updated.clone();
    to_node_port["spec"]["type"] = json!("NodePort");
    let back = objects
        .replace(info, "", &updated, decoded(to_node_port), &opts())
        .await?
        .object;
    assert!(
        node_port(&back, 2) >= 30000 && node_port(&back, 2) != 30080,
        "{back}"
    );
    assert_eq!(reserved(&objects, NODE_PORT_PREFIX).await?.len(), 3);

    // A delete gives everything back: the same IP and port can be asked for again.
    delete(&objects, "web").await?;
    delete(&objects, "np2").await?;
    let again = create(
        &objects,
        "again",
        &json!({"type": "NodePort", "clusterIP": ip, "ports": [{"port": 80, "nodePort": 30080}]}),
    )
    .await?;
    assert_eq!(cluster_ip(&again), ip);
    assert_eq!(node_port(&again, 0), 30080);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_range_fails_clearly_and_a_release_is_reused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // A /29: 6 usable addresses.
    let objects = open(&dir, "10.0.0.0/29", "30000-30001").await?;
    for i in 0..6 {
        create(
            &objects,
            &format!("s{i}"),
            &json!({"ports": [{"port": 80}]}),
        )
        .await?;
    }
    let err = create(&objects, "s6", &json!({"ports": [{"port": 80}]}))
        .await
        .err()
        .ok_or("a full range must be refused")?;
    assert_eq!(err.reason, StatusReason::InternalError);
    assert_eq!(
        err.message,
        "Internal error occurred: failed to allocate a serviceIP: range is full"
    );
    let gone = objects.get(&kinds::SERVICE, "team", "s3").await?;
    delete(&objects, "s3").await?;
    let reused = create(&objects, "s6", &json!({"ports": [{"port": 80}]})).await?;
    assert_eq!(cluster_ip(&reused), cluster_ip(&gone));

    create(
        &objects,
        "n0",
        &json!({"type": "NodePort", "ports": [{"port": 80}]}),
    )
    .await
    .err()
    .ok_or("a full IP range fails a NodePort too")?;
    assert!(
        reserved(&objects, NODE_PORT_PREFIX).await?.is_empty(),
        "and reserves no node port"
    );
    delete(&objects, "s0").await?;
    create(&objects, "n1", &json!({"type": "NodePort", "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81}]})).await?;
    delete(&objects, "s1").await?;
    let err = create(
        &objects,
        "n2",
        &json!({"type": "NodePort", "ports": [{"port": 80}]}),
    )
    .await
    .err()
    .ok_or("a full port range must be refused")?;
    assert_eq!(
        err.message,
        "Internal error occurred: failed to allocate a nodePort: range is full"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_never_share_an_ip_and_leak_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // A /27: 30 usable addresses for 40 writers.
    let objects = open(&dir, "10.0.0.0/27", "30000-30099").await?;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let objects = objects.clone();
        tasks.push(tokio::spawn(async move {
            create(
                &objects,
                &format!("c{i}"),
                &json!({"type": "NodePort", "ports": [{"port": 80}]}),
            )
            .await
        }));
    }
    let mut ips = BTreeSet::new();
    let mut ports = BTreeSet::new();
    let mut full = 0;
    for task in tasks {
        match task.await? {
            Ok(svc) => {
                assert!(ips.insert(cluster_ip(&svc)), "IP given twice: {svc}");
                assert!(
                    ports.insert(node_port(&svc, 0).to_string()),
                    "port given twice: {svc}"
                );
            }
            Err(err) if err.message.contains("range is full") => full += 1,
            Err(err) => return Err(format!("unexpected failure: {}", message(&err)).into()),
        }
    }
    assert_eq!(ips.len(), 30, "every usable address is handed out once");
    assert_eq!(full, 10);
    assert_eq!(
        reserved(&objects, CLUSTER_IP_PREFIX).await?,
        ips,
        "no reservation without its Service"
    );
    assert_eq!(reserved(&objects, NODE_PORT_PREFIX).await?, ports);
    Ok(())
}
