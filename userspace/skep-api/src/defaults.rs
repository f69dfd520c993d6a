//! Kubernetes defaulting (`pkg/apis/*/v1/defaults.go`, plus what create
//! strategies and default admission plugins add), applied to JSON objects:
//! the entry points dispatch to each kind's [`crate::kinds::Strategy`]; the
//! pod spec and container defaults the Pod and workload kinds share live here.

use serde_json::{Map, Value, json};

use crate::object::{default_field, ensure_object, get};
use crate::registry::ResourceInfo;

/// Apply the defaults Kubernetes applies to a new or updated object of `info`'s kind.
pub fn apply_defaults(info: &ResourceInfo, obj: &mut Value) {
    info.strategy().defaults(obj);
}

/// Status fields a create strategy initialises (Pod `Pending` with its QoS class,
/// Namespace `Active`, PV/PVC `Pending`, empty Service load-balancer status).
pub fn initial_status(info: &ResourceInfo, obj: &mut Value) {
    info.strategy().initial_status(obj);
}

/// The object itself as a map.
pub(crate) fn root(obj: &mut Value) -> &mut Map<String, Value> {
    ensure_object(obj, &[])
}

/// A value as a map (made one if it is not).
pub(crate) fn as_map(v: &mut Value) -> &mut Map<String, Value> {
    ensure_object(v, &[])
}

/// The elements of the array at `map[key]` (none if absent or not an array).
pub(crate) fn array_mut<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
) -> std::slice::IterMut<'a, Value> {
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
pub(crate) fn default_pod_spec(spec: &mut Map<String, Value>) {
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

/// Defaults of a workload's pod template.
pub(crate) fn default_template(obj: &mut Value) {
    default_pod_spec(ensure_object(obj, &["spec", "template", "spec"]));
}

#[cfg(test)]
#[path = "defaults_test.rs"]
mod tests;
