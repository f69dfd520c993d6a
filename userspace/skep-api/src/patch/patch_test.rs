use serde_json::json;

use super::*;
use crate::kinds;

fn deployment() -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}, "finalizers": ["a", "b"]},
        "spec": {"replicas": 1,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {"spec": {"containers": [
                {"name": "nginx", "image": "nginx:1.27", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                 "ports": [{"containerPort": 80, "protocol": "TCP"}]},
                {"name": "side", "image": "busybox", "args": ["sleep", "1d"]}]}}}})
}

fn smp(original: &Value, patch: &Value) -> Value {
    strategic::strategic_merge(&kinds::DEPLOYMENT, original, patch)
        .unwrap_or_else(|e| panic!("{}", e.message))
}

#[test]
fn kubectl_set_image() {
    let out = smp(
        &deployment(),
        &json!({"spec": {"template": {"spec": {"containers": [{"image": "nginx:1.28", "name": "nginx"}]}}}}),
    );
    let containers = &out["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers[0]["image"], "nginx:1.28");
    assert_eq!(
        containers[0]["env"][1]["value"], "2",
        "untouched fields of the element stay"
    );
    assert_eq!(containers[1]["name"], "side", "other elements stay");
}

#[test]
fn kubectl_apply_delete_container_and_env() {
    let patch = json!({"spec": {"template": {"spec": {
    "$setElementOrder/containers": [{"name": "nginx"}],
    "containers": [
        {"name": "nginx", "$setElementOrder/env": [{"name": "B"}], "env": [{"$patch": "delete", "name": "A"}, {"name": "B", "value": "3"}]},
        {"$patch": "delete", "name": "side"}
    ]}}}});
    let out = smp(&deployment(), &patch);
    let containers = out["spec"]["template"]["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0]["env"], json!([{"name": "B", "value": "3"}]));
    assert_eq!(containers[0]["ports"][0]["containerPort"], 80);
}

#[test]
fn set_element_order_reorders() {
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "side"}, {"name": "new"}, {"name": "nginx"}],
        "containers": [{"name": "new", "image": "x"}]}}}});
    let out = smp(&deployment(), &patch);
    let names: Vec<&str> = out["spec"]["template"]["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, vec!["side", "new", "nginx"]);
}

#[test]
fn retain_keys_switches_strategy() {
    let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": null, "type": "Recreate"}}});
    let out = smp(&deployment(), &patch);
    assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
}

#[test]
fn replace_and_primitive_lists() {
    let out = smp(
        &deployment(),
        &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "finalizers": ["c"]}}),
    );
    assert_eq!(out["metadata"]["finalizers"], json!(["b", "c"]));
    let out = smp(
        &deployment(),
        &json!({"spec": {"template": {"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "i"}]}}}}),
    );
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"],
        json!([{"name": "only", "image": "i"}])
    );
    let out = smp(
        &deployment(),
        &json!({"spec": {"strategy": {"$patch": "replace", "type": "Recreate"}}}),
    );
    assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    let out = smp(
        &deployment(),
        &json!({"spec": {"template": {"spec": {"containers": [{"name": "side", "args": ["x"]}]}}}}),
    );
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"][1]["args"],
        json!(["x"]),
        "atomic lists replace"
    );
    let err = strategic::strategic_merge(
        &kinds::DEPLOYMENT,
        &deployment(),
        &json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}),
    )
    .err();
    assert_eq!(err.map(|e| e.code()), Some(400));
}

#[test]
fn service_ports_merge_by_port() {
    let svc = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}});
    let out = strategic::strategic_merge(
        &kinds::SERVICE,
        &svc,
        &json!({"spec": {"ports": [{"port": 80, "name": "http"}]}}),
    )
    .unwrap_or_default();
    assert_eq!(
        out["spec"]["ports"],
        json!([{"port": 80, "targetPort": 8080, "name": "http"}, {"port": 443}])
    );
}

#[test]
fn merge_and_json_patches() {
    let d = deployment();
    let out = apply_patch(
        &kinds::DEPLOYMENT,
        &d,
        PatchType::Merge,
        br#"{"metadata":{"labels":{"app":null,"tier":"fe"}},"spec":{"replicas":3}}"#,
    )
    .unwrap_or_default();
    assert_eq!(out["metadata"]["labels"], json!({"tier": "fe"}));
    assert_eq!(out["spec"]["replicas"], 3);
    let out = apply_patch(
        &kinds::DEPLOYMENT,
        &d,
        PatchType::Merge,
        br#"{"spec":{"template":{"spec":{"containers":[{"name":"x"}]}}}}"#,
    )
    .unwrap_or_default();
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"],
        json!([{"name": "x"}]),
        "merge patch replaces lists"
    );
    let out = apply_patch(&kinds::DEPLOYMENT, &d, PatchType::Json, br#"[{"op":"replace","path":"/spec/replicas","value":5},{"op":"add","path":"/metadata/labels/x","value":"y"}]"#)
        .unwrap_or_default();
    assert_eq!(out["spec"]["replicas"], 5);
    assert_eq!(out["metadata"]["labels"]["x"], "y");
    let err = apply_patch(
        &kinds::DEPLOYMENT,
        &d,
        PatchType::Json,
        br#"[{"op":"test","path":"/spec/replicas","value":9}]"#,
    )
    .err();
    assert_eq!(err.map(|e| e.code()), Some(422));
    let err = apply_patch(&kinds::DEPLOYMENT, &d, PatchType::Json, br#"{"op":"x"}"#).err();
    assert_eq!(err.map(|e| e.code()), Some(400));
    assert_eq!(
        PatchType::from_content_type("application/strategic-merge-patch+json").ok(),
        Some(PatchType::Strategic)
    );
    assert_eq!(
        PatchType::from_content_type("text/plain")
            .err()
            .map(|e| e.code()),
        Some(415)
    );
}
