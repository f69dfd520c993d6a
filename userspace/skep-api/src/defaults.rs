//! Kubernetes defaulting (`pkg/apis/*/v1/defaults.go`, plus what create
//! strategies and default admission plugins add), applied to JSON objects.

use serde_json::{Map, Value, json};

use crate::object::{default_field, ensure_object, get, get_str};
use crate::registry::Kind;

/// Apply the defaults Kubernetes applies to a new or updated object of `kind`.
pub fn apply_defaults(kind: Kind, obj: &mut Value) {
    match kind {
        Kind::Pod => default_pod(obj),
        Kind::Deployment => default_deployment(obj),
        Kind::ReplicaSet => default_replicaset(obj),
        Kind::Service => default_service(obj),
        Kind::Namespace => default_namespace(obj),
        Kind::Secret => default_field(root(obj), "type", "Opaque"),
        Kind::PersistentVolume => default_pv(obj),
        Kind::PersistentVolumeClaim => {
            default_field(ensure_object(obj, &["spec"]), "volumeMode", "Filesystem");
        }
        Kind::Endpoints => {
            for subset in array_mut(root(obj), "subsets") {
                for port in array_mut(as_map(subset), "ports") {
                    default_field(as_map(port), "protocol", "TCP");
                }
            }
        }
        Kind::EndpointSlice => {
            for port in array_mut(root(obj), "ports") {
                default_field(as_map(port), "protocol", "TCP");
            }
        }
        Kind::NetworkPolicy => default_network_policy(obj),
        Kind::ConfigMap | Kind::Node | Kind::Event | Kind::Binding | Kind::Scale => {}
    }
}

/// Status fields a create strategy initialises (Pod `Pending` with its QoS class,
/// Namespace `Active`, PV/PVC `Pending`, empty Service load-balancer status).
pub fn initial_status(kind: Kind, obj: &mut Value) {
    match kind {
        Kind::Pod => {
            let qos = qos_class(obj);
            let status = ensure_object(obj, &["status"]);
            default_field(status, "phase", "Pending");
            default_field(status, "qosClass", qos);
        }
        Kind::Namespace => default_field(ensure_object(obj, &["status"]), "phase", "Active"),
        Kind::PersistentVolume | Kind::PersistentVolumeClaim => {
            default_field(ensure_object(obj, &["status"]), "phase", "Pending");
        }
        Kind::Service => {
            default_field(ensure_object(obj, &["status"]), "loadBalancer", json!({}));
        }
        _ => {}
    }
}

fn root(obj: &mut Value) -> &mut Map<String, Value> {
    ensure_object(obj, &[])
}

fn as_map(v: &mut Value) -> &mut Map<String, Value> {
    ensure_object(v, &[])
}

/// The elements of the array at `map[key]` (none if absent or not an array).
fn array_mut<'a>(map: &'a mut Map<String, Value>, key: &str) -> std::slice::IterMut<'a, Value> {
    match map.get_mut(key) {
        Some(Value::Array(items)) => items.iter_mut(),
        _ => [].iter_mut(),
    }
}

/// Kubernetes' image pull policy default: `Always` for `:latest` or no tag, else `IfNotPresent`.
pub fn default_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn default_container(c: &mut Value) {
    let c = as_map(c);
    let image = c
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    default_field(c, "imagePullPolicy", default_pull_policy(&image));
    default_field(c, "terminationMessagePath", "/dev/termination-log");
    default_field(c, "terminationMessagePolicy", "File");
    default_field(c, "resources", json!({}));
    for port in array_mut(c, "ports") {
        default_field(as_map(port), "protocol", "TCP");
    }
    for env in array_mut(c, "env") {
        if let Some(Value::Object(field_ref)) = env.pointer_mut("/valueFrom/fieldRef") {
            default_field(field_ref, "apiVersion", "v1");
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(Value::Object(p)) = c.get_mut(probe) {
            default_field(p, "timeoutSeconds", 1);
            default_field(p, "periodSeconds", 10);
            default_field(p, "successThreshold", 1);
            default_field(p, "failureThreshold", 3);
            if let Some(Value::Object(http)) = p.get_mut("httpGet") {
                default_field(http, "path", "/");
                default_field(http, "scheme", "HTTP");
            }
        }
    }
}

/// Defaults of a `PodSpec` (also inside Deployment/ReplicaSet templates).
fn default_pod_spec(spec: &mut Map<String, Value>) {
    default_field(spec, "restartPolicy", "Always");
    default_field(spec, "dnsPolicy", "ClusterFirst");
    default_field(spec, "terminationGracePeriodSeconds", 30);
    default_field(spec, "securityContext", json!({}));
    default_field(spec, "schedulerName", "default-scheduler");
    for key in ["containers", "initContainers"] {
        for c in array_mut(spec, key) {
            default_container(c);
        }
    }
    for vol in array_mut(spec, "volumes") {
        let vol = as_map(vol);
        let has_source = vol.keys().any(|k| k != "name");
        if !has_source {
            vol.insert("emptyDir".into(), json!({}));
        }
        for source in ["configMap", "secret", "projected", "downwardAPI"] {
            if let Some(Value::Object(src)) = vol.get_mut(source) {
                default_field(src, "defaultMode", 420);
            }
        }
        if let Some(Value::Object(host_path)) = vol.get_mut("hostPath") {
            default_field(host_path, "type", "");
        }
    }
}

fn default_pod(obj: &mut Value) {
    let spec = ensure_object(obj, &["spec"]);
    default_pod_spec(spec);
    default_field(spec, "enableServiceLinks", true);
    // Priority and DefaultTolerationSeconds admission plugins.
    default_field(spec, "priority", 0);
    default_field(spec, "preemptionPolicy", "PreemptLowerPriority");
    // ServiceAccount admission (without the token volume).
    default_field(spec, "serviceAccountName", "default");
    let sa = spec.get("serviceAccountName").cloned().unwrap_or_default();
    default_field(spec, "serviceAccount", sa);
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    if let Value::Array(list) = tolerations {
        for key in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
        ] {
            let present = list.iter().any(|t| {
                (t.get("key").and_then(Value::as_str) == Some(key)
                    && matches!(
                        t.get("effect").and_then(Value::as_str),
                        Some("NoExecute") | None
                    ))
                    || (t.get("operator").and_then(Value::as_str) == Some("Exists")
                        && t.get("key").is_none())
            });
            if !present {
                list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
            }
        }
    }
    // Requests default to limits.
    for key in ["containers", "initContainers"] {
        for c in array_mut(spec, key) {
            let resources = ensure_object(c, &["resources"]);
            if let Some(Value::Object(limits)) = resources.get("limits").cloned() {
                let requests = resources.entry("requests").or_insert_with(|| json!({}));
                if let Value::Object(requests) = requests {
                    for (k, v) in limits {
                        requests.entry(k).or_insert(v);
                    }
                }
            }
        }
    }
}

/// The pod's QoS class from its containers' requests and limits.
pub fn qos_class(pod: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .flat_map(|k| crate::object::array(pod, &["spec", k]))
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in containers {
        let requests = get(c, &["resources", "requests"]).and_then(Value::as_object);
        let limits = get(c, &["resources", "limits"]).and_then(Value::as_object);
        let relevant = |m: Option<&Map<String, Value>>| {
            m.map(|m| {
                m.iter()
                    .filter(|(k, _)| *k == "cpu" || *k == "memory")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<Map<String, Value>>()
            })
            .unwrap_or_default()
        };
        let (req, lim) = (relevant(requests), relevant(limits));
        if !req.is_empty() || !lim.is_empty() {
            any = true;
        }
        if lim.len() < 2 || req.iter().any(|(k, v)| lim.get(k) != Some(v)) {
            guaranteed = false;
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn default_template(obj: &mut Value) {
    default_pod_spec(ensure_object(obj, &["spec", "template", "spec"]));
}

fn default_deployment(obj: &mut Value) {
    default_template(obj);
    let spec = ensure_object(obj, &["spec"]);
    default_field(spec, "replicas", 1);
    default_field(spec, "revisionHistoryLimit", 10);
    default_field(spec, "progressDeadlineSeconds", 600);
    let strategy = spec.entry("strategy").or_insert_with(|| json!({}));
    let strategy = as_map(strategy);
    default_field(strategy, "type", "RollingUpdate");
    if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
        let rolling = strategy.entry("rollingUpdate").or_insert_with(|| json!({}));
        let rolling = as_map(rolling);
        default_field(rolling, "maxUnavailable", "25%");
        default_field(rolling, "maxSurge", "25%");
    }
}

fn default_replicaset(obj: &mut Value) {
    default_template(obj);
    default_field(ensure_object(obj, &["spec"]), "replicas", 1);
}

fn default_service(obj: &mut Value) {
    let spec = ensure_object(obj, &["spec"]);
    default_field(spec, "type", "ClusterIP");
    default_field(spec, "sessionAffinity", "None");
    let svc_type = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if svc_type != "ExternalName" {
        default_field(spec, "internalTrafficPolicy", "Cluster");
        default_field(spec, "ipFamilyPolicy", "SingleStack");
        default_field(spec, "ipFamilies", json!(["IPv4"]));
    }
    if svc_type == "NodePort" || svc_type == "LoadBalancer" {
        default_field(spec, "externalTrafficPolicy", "Cluster");
    }
    if svc_type == "LoadBalancer" {
        default_field(spec, "allocateLoadBalancerNodePorts", true);
    }
    if spec.get("sessionAffinity").and_then(Value::as_str) == Some("ClientIP") {
        default_field(
            spec,
            "sessionAffinityConfig",
            json!({"clientIP": {"timeoutSeconds": 10800}}),
        );
    }
    for port in array_mut(spec, "ports") {
        let port = as_map(port);
        default_field(port, "protocol", "TCP");
        if let Some(p) = port.get("port").cloned() {
            // Go's `SetDefaults_Service`: a zero or empty targetPort is unset.
            if port
                .get("targetPort")
                .is_some_and(|t| *t == json!(0) || *t == json!(""))
            {
                port.remove("targetPort");
            }
            default_field(port, "targetPort", p);
        }
    }
}

fn default_namespace(obj: &mut Value) {
    let name = get_str(obj, &["metadata", "name"]).unwrap_or("").to_owned();
    if !name.is_empty() {
        ensure_object(obj, &["metadata", "labels"])
            .insert("kubernetes.io/metadata.name".into(), name.into());
    }
    default_field(
        ensure_object(obj, &["spec"]),
        "finalizers",
        json!(["kubernetes"]),
    );
}

fn default_pv(obj: &mut Value) {
    let spec = ensure_object(obj, &["spec"]);
    default_field(spec, "persistentVolumeReclaimPolicy", "Retain");
    default_field(spec, "volumeMode", "Filesystem");
}

fn default_network_policy(obj: &mut Value) {
    let spec = ensure_object(obj, &["spec"]);
    default_field(spec, "podSelector", json!({}));
    for dir in ["ingress", "egress"] {
        for rule in array_mut(spec, dir) {
            for port in array_mut(as_map(rule), "ports") {
                default_field(as_map(port), "protocol", "TCP");
            }
        }
    }
    if spec.get("policyTypes").is_none_or(Value::is_null) {
        let mut types = vec![json!("Ingress")];
        if spec.get("egress").is_some_and(|e| !e.is_null()) {
            types.push(json!("Egress"));
        }
        spec.insert("policyTypes".into(), Value::Array(types));
    }
}

#[cfg(test)]
#[path = "defaults_test.rs"]
mod tests;
