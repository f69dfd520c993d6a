//! The objects a pod or a persistent volume names, read straight from the
//! stored JSON (`VisitPodSecretNames`/`VisitPodConfigmapNames` in
//! `pkg/api/v1/pod/util.go`, `VisitPVSecretNames` in
//! `pkg/api/v1/persistentvolume/util.go`, `ephemeral.VolumeClaimName`).
//!
//! Empty names are skipped, as upstream's `skipEmptyNames` does.

use serde_json::Value;

/// The annotation marking a mirror pod (`kubernetes.io/config.mirror`).
pub const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    get(v, path).and_then(Value::as_str).unwrap_or("")
}

fn items<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    get(v, path)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn visit(name: &str, visitor: &mut impl FnMut(&str)) {
    if !name.is_empty() {
        visitor(name);
    }
}

/// `metadata.namespace` and `metadata.name`.
pub fn namespace_name(obj: &Value) -> (&str, &str) {
    (
        str_at(obj, &["metadata", "namespace"]),
        str_at(obj, &["metadata", "name"]),
    )
}

/// `metadata.uid`.
pub fn uid(obj: &Value) -> &str {
    str_at(obj, &["metadata", "uid"])
}

/// `spec.nodeName` of a pod.
pub fn pod_node_name(pod: &Value) -> &str {
    str_at(pod, &["spec", "nodeName"])
}

/// `spec.serviceAccountName` of a pod.
pub fn pod_service_account(pod: &Value) -> &str {
    str_at(pod, &["spec", "serviceAccountName"])
}

/// Whether the pod carries the mirror pod annotation.
pub fn is_mirror_pod(pod: &Value) -> bool {
    get(pod, &["metadata", "annotations", MIRROR_POD_ANNOTATION]).is_some()
}

/// Every container of the pod: init containers, containers, then ephemeral
/// containers (`VisitContainers` with `AllContainers`).
fn containers(pod: &Value) -> impl Iterator<Item = &Value> {
    ["initContainers", "containers", "ephemeralContainers"]
        .into_iter()
        .flat_map(move |field| items(pod, &["spec", field]))
}

/// The volume sources of the pod.
fn volumes(pod: &Value) -> &[Value] {
    items(pod, &["spec", "volumes"])
}

/// Pod volume sources naming a secret, after `azureFile`: a volume has
/// exactly one source, and upstream's switch takes the first present in this
/// order.
const POD_SECRET_SOURCES: &[&str] = &[
    "cephfs",
    "cinder",
    "flexVolume",
    "projected",
    "rbd",
    "secret",
    "scaleIO",
    "iscsi",
    "storageos",
    "csi",
];

/// Persistent volume sources naming a secret, after `azureFile`, in
/// upstream's order.
const PV_SECRET_SOURCES: &[&str] = &[
    "cephfs",
    "cinder",
    "flexVolume",
    "rbd",
    "scaleIO",
    "iscsi",
    "storageos",
    "csi",
];

/// Calls `visitor` with the name of every secret the pod references:
/// image pull secrets, `envFrom`/`env` of every container, and secret-bearing
/// volume sources (one source per volume, in upstream's order).
pub fn visit_pod_secret_names(pod: &Value, mut visitor: impl FnMut(&str)) {
    let v = &mut visitor;
    for reference in items(pod, &["spec", "imagePullSecrets"]) {
        visit(str_at(reference, &["name"]), v);
    }
    for c in containers(pod) {
        for env in items(c, &["envFrom"]) {
            if let Some(r) = env.get("secretRef") {
                visit(str_at(r, &["name"]), v);
            }
        }
        for env in items(c, &["env"]) {
            if let Some(r) = get(env, &["valueFrom", "secretKeyRef"]) {
                visit(str_at(r, &["name"]), v);
            }
        }
    }
    for volume in volumes(pod) {
        if let Some(azure) = volume.get("azureFile") {
            visit(str_at(azure, &["secretName"]), v);
            continue;
        }
        let Some((source, body)) = POD_SECRET_SOURCES
            .iter()
            .find_map(|s| volume.get(*s).map(|b| (*s, b)))
        else {
            continue;
        };
        match source {
            "projected" => {
                for p in items(body, &["sources"]) {
                    if let Some(secret) = p.get("secret") {
                        visit(str_at(secret, &["name"]), v);
                    }
                }
            }
            "secret" => visit(str_at(body, &["secretName"]), v),
            "csi" => visit(str_at(body, &["nodePublishSecretRef", "name"]), v),
            _ => visit(str_at(body, &["secretRef", "name"]), v),
        }
    }
}

/// Calls `visitor` with the name of every config map the pod references:
/// `envFrom`/`env` of every container, `configMap` volumes and projected
/// `configMap` sources.
pub fn visit_pod_configmap_names(pod: &Value, mut visitor: impl FnMut(&str)) {
    let v = &mut visitor;
    for c in containers(pod) {
        for env in items(c, &["envFrom"]) {
            if let Some(r) = env.get("configMapRef") {
                visit(str_at(r, &["name"]), v);
            }
        }
        for env in items(c, &["env"]) {
            if let Some(r) = get(env, &["valueFrom", "configMapKeyRef"]) {
                visit(str_at(r, &["name"]), v);
            }
        }
    }
    for volume in volumes(pod) {
        if let Some(projected) = volume.get("projected") {
            for p in items(projected, &["sources"]) {
                if let Some(cm) = p.get("configMap") {
                    visit(str_at(cm, &["name"]), v);
                }
            }
        } else if let Some(cm) = volume.get("configMap") {
            visit(str_at(cm, &["name"]), v);
        }
    }
}

/// Calls `visitor` with the name of every persistent volume claim the pod
/// mounts: `persistentVolumeClaim` volumes and the claims of generic
/// ephemeral volumes (`<pod name>-<volume name>`).
pub fn visit_pod_pvc_names(pod: &Value, mut visitor: impl FnMut(&str)) {
    let pod_name = str_at(pod, &["metadata", "name"]);
    for volume in volumes(pod) {
        if let Some(pvc) = volume.get("persistentVolumeClaim") {
            visit(str_at(pvc, &["claimName"]), &mut visitor);
        } else if volume.get("ephemeral").is_some() {
            let claim = format!("{pod_name}-{}", str_at(volume, &["name"]));
            visitor(&claim);
        }
    }
}

/// Whether any projected volume source of the pod is a `clusterTrustBundle`.
pub fn references_cluster_trust_bundles(pod: &Value) -> bool {
    volumes(pod).iter().any(|volume| {
        volume.get("projected").is_some_and(|p| {
            items(p, &["sources"])
                .iter()
                .any(|s| s.get("clusterTrustBundle").is_some())
        })
    })
}

/// Whether any volume of the pod is a `persistentVolumeClaim`.
pub fn references_pvcs(pod: &Value) -> bool {
    volumes(pod)
        .iter()
        .any(|v| v.get("persistentVolumeClaim").is_some())
}

/// `spec.claimRef` of a persistent volume as (namespace, name), if set.
pub fn pv_claim(pv: &Value) -> Option<(&str, &str)> {
    let claim = get(pv, &["spec", "claimRef"])?;
    Some((str_at(claim, &["namespace"]), str_at(claim, &["name"])))
}

/// Calls `visitor` with (namespace, name) of every secret of a persistent
/// volume the kubelet needs (`VisitPVSecretNames` with `kubeletVisible`):
/// CSI node publish/stage/expand secrets, not the controller ones; for the
/// in-tree sources with a secret reference, its namespace or else the
/// claim's.
pub fn visit_pv_kubelet_secret_names(pv: &Value, mut visitor: impl FnMut(&str, &str)) {
    let Some(spec) = pv.get("spec") else {
        return;
    };
    let claim_ns = pv_claim(pv).map_or("", |(ns, _)| ns);
    let mut emit = |ns: &str, name: &str| {
        if !name.is_empty() {
            visitor(ns, name);
        }
    };
    let or_claim = |ns: &'_ str| -> String {
        if ns.is_empty() {
            claim_ns.to_owned()
        } else {
            ns.to_owned()
        }
    };
    if let Some(azure) = spec.get("azureFile") {
        let ns = or_claim(str_at(azure, &["secretNamespace"]));
        emit(&ns, str_at(azure, &["secretName"]));
        return;
    }
    let Some((source, body)) = PV_SECRET_SOURCES
        .iter()
        .find_map(|s| spec.get(*s).map(|b| (*s, b)))
    else {
        return;
    };
    match source {
        // These two use the reference's own namespace, even when empty.
        "cinder" | "storageos" => {
            if let Some(r) = body.get("secretRef") {
                emit(str_at(r, &["namespace"]), str_at(r, &["name"]));
            }
        }
        "csi" => {
            for field in [
                "nodePublishSecretRef",
                "nodeStageSecretRef",
                "nodeExpandSecretRef",
            ] {
                if let Some(r) = body.get(field) {
                    emit(str_at(r, &["namespace"]), str_at(r, &["name"]));
                }
            }
        }
        _ => {
            if let Some(r) = body.get("secretRef") {
                let ns = or_claim(str_at(r, &["namespace"]));
                emit(&ns, str_at(r, &["name"]));
            }
        }
    }
}
