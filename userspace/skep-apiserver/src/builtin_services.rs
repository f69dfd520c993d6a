//! The Services every cluster has, kept by the API server like
//! kube-apiserver's `kubernetes` service controller: `default/kubernetes`
//! (the first cluster IP, port 443 to this server, with its Endpoints and
//! `EndpointSlice`) and `kube-system/kube-dns` (the tenth cluster IP, answered
//! by every node agent). Both are recreated when deleted.

use std::time::Duration;

use serde_json::{Value, json};
use skep_api::{ApiError, ResourceInfo, decode::Decoded, kinds, object};
use skep_objects::{Objects, WriteOptions};

/// Who writes the built-in Services (`managedFields[].manager`).
const MANAGER: &str = "skep-apiserver";
/// How often a deleted built-in Service is noticed and recreated.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(2);

/// The built-in objects for a server answering at `ip:port`.
fn desired(objects: &Objects, ip: &str, port: u16) -> Vec<(&'static ResourceInfo, Value)> {
    let ranges = objects.service_ranges();
    let https = json!([{"name": "https", "port": port, "protocol": "TCP"}]);
    vec![
        (
            &kinds::SERVICE,
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "kubernetes", "namespace": "default",
                    "labels": {"component": "apiserver", "provider": "kubernetes"}},
                "spec": {"type": "ClusterIP", "clusterIP": ranges.kubernetes_ip().to_string(),
                    "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]},
            }),
        ),
        (
            &kinds::ENDPOINTS,
            json!({
                "apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": "kubernetes", "namespace": "default",
                    "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
                "subsets": [{"addresses": [{"ip": ip}], "ports": https}],
            }),
        ),
        (
            &kinds::ENDPOINT_SLICE,
            json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "kubernetes", "namespace": "default",
                    "labels": {"kubernetes.io/service-name": "kubernetes"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
                "ports": https,
            }),
        ),
        (
            &kinds::SERVICE,
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "kube-dns", "namespace": "kube-system",
                    "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true",
                        "kubernetes.io/name": "CoreDNS"}},
                "spec": {"type": "ClusterIP", "clusterIP": ranges.dns_ip().to_string(), "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                    {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153},
                ]},
            }),
        ),
    ]
}

/// The part of an Endpoints or `EndpointSlice` that names the server.
fn addresses(obj: &Value) -> Vec<Option<&Value>> {
    ["subsets", "endpoints", "ports"]
        .iter()
        .map(|k| obj.get(*k))
        .collect()
}

/// Creates each built-in object that is missing, and points the
/// `kubernetes` Endpoints and `EndpointSlice` at `ip:port` if they moved.
pub async fn ensure(objects: &Objects, ip: &str, port: u16) -> Result<(), ApiError> {
    for (info, want) in desired(objects, ip, port) {
        let (ns, name) = (object::namespace(&want), object::name(&want));
        let body = |value: Value| Decoded {
            value,
            duplicates: Vec::new(),
        };
        let opts = WriteOptions::by(MANAGER);
        match objects.try_get(info, ns, name).await? {
            None => {
                match objects.create(info, ns, body(want.clone()), &opts).await {
                    Ok(_) => tracing::info!(
                        kind = info.kind,
                        namespace = ns,
                        name,
                        "created built-in object"
                    ),
                    // Another replica (or a client) was quicker.
                    Err(err) if err.reason == skep_api::StatusReason::AlreadyExists => {}
                    Err(err) => return Err(err),
                }
            }
            Some(live) if *info != kinds::SERVICE && addresses(&live) != addresses(&want) => {
                let mut next = want.clone();
                if let (Some(meta), Some(rv)) = (
                    next.get_mut("metadata").and_then(Value::as_object_mut),
                    live.get("metadata").and_then(|m| m.get("resourceVersion")),
                ) {
                    meta.insert("resourceVersion".into(), rv.clone());
                }
                objects.replace(info, "", &live, body(next), &opts).await?;
                tracing::info!(kind = info.kind, namespace = ns, name, %ip, port, "pointed at this server");
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Keeps the built-in objects present until the task is dropped.
pub async fn keep(objects: Objects, ip: String, port: u16) {
    loop {
        tokio::time::sleep(RECONCILE_INTERVAL).await;
        if let Err(err) = ensure(&objects, &ip, port).await {
            tracing::warn!(%err, "failed to recreate the built-in Services");
        }
    }
}
