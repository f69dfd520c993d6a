use serde_json::json;

use super::*;
use crate::kinds;

fn opts(manager: &str, force: bool) -> ApplyOptions<'_> {
    ApplyOptions {
        field_manager: manager,
        force,
        now: Timestamp::UNIX_EPOCH,
    }
}

fn config(replicas: i64, image: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "nginx", "image": image}]}}}})
}

#[test]
fn fields_v1_matches_kubernetes_shape() {
    let set = field_set(&kinds::DEPLOYMENT, &config(2, "nginx"));
    let v1 = to_fields_v1(&set);
    assert_eq!(
        v1,
        json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {"f:replicas": {}, "f:selector": {},
                "f:template": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {".": {}, "f:image": {}, "f:name": {}}}}}}
        })
    );
    assert_eq!(from_fields_v1(&v1), set);
}

#[test]
fn apply_creates_then_updates_and_removes_dropped_fields() {
    let info = &kinds::DEPLOYMENT;
    let created =
        apply(info, None, &config(2, "nginx"), &opts("kubectl", false)).unwrap_or_default();
    assert_eq!(
        created["metadata"]["managedFields"][0]["manager"],
        "kubectl"
    );
    assert_eq!(
        created["metadata"]["managedFields"][0]["operation"],
        "Apply"
    );
    let mut smaller = config(3, "nginx:1.28");
    smaller["metadata"]
        .as_object_mut()
        .map(|m| m.remove("labels"));
    let updated =
        apply(info, Some(&created), &smaller, &opts("kubectl", false)).unwrap_or_default();
    assert_eq!(updated["spec"]["replicas"], 3);
    assert_eq!(
        updated["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.28"
    );
    assert!(
        updated["metadata"]
            .get("labels")
            .is_none_or(|l| l.get("app").is_none()),
        "fields the applier dropped are removed"
    );
}

#[test]
fn conflicts_with_other_managers_unless_forced() {
    let info = &kinds::DEPLOYMENT;
    let created =
        apply(info, None, &config(2, "nginx"), &opts("kubectl", false)).unwrap_or_default();
    // Another client scales with an ordinary update.
    let mut scaled = created.clone();
    scaled["spec"]["replicas"] = json!(5);
    record_update(
        info,
        Some(&created),
        &mut scaled,
        "kubectl-scale",
        "",
        Timestamp::UNIX_EPOCH,
    );
    let managers: Vec<&str> = scaled["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["manager"].as_str())
        .collect();
    assert_eq!(managers, vec!["kubectl", "kubectl-scale"]);
    // Re-applying replicas 2 now conflicts with kubectl-scale; the same value would not.
    let err = apply(
        info,
        Some(&scaled),
        &config(2, "nginx"),
        &opts("kubectl", false),
    )
    .err();
    let err = err.unwrap_or_else(|| ApiError::internal("expected conflict"));
    assert_eq!(err.code(), 409);
    assert_eq!(
        err.message,
        "Apply failed with 1 conflict: conflict with \"kubectl-scale\" using apps/v1: .spec.replicas"
    );
    assert_eq!(
        err.to_status()["details"]["causes"][0]["reason"],
        "FieldManagerConflict"
    );
    assert!(
        apply(
            info,
            Some(&scaled),
            &config(5, "nginx"),
            &opts("kubectl", false)
        )
        .is_ok()
    );
    let forced = apply(
        info,
        Some(&scaled),
        &config(2, "nginx"),
        &opts("kubectl", true),
    )
    .unwrap_or_default();
    assert_eq!(forced["spec"]["replicas"], 2);
    let entries = managed_fields(&forced);
    assert!(
        entries.iter().all(|e| e.manager != "kubectl-scale"),
        "kubectl-scale lost its only field"
    );
}

#[test]
fn apply_requires_field_manager() {
    let err = apply(&kinds::CONFIG_MAP, None, &json!({}), &opts("", false)).err();
    assert_eq!(err.map(|e| e.code()), Some(400));
}

#[test]
fn display_paths() {
    let p: FieldPathV1 = vec![
        "f:spec".into(),
        "f:containers".into(),
        "k:{\"name\":\"c\"}".into(),
        "f:image".into(),
    ];
    assert_eq!(display_path(&p), ".spec.containers[name=\"c\"].image");
}

#[test]
fn ports_are_keyed_by_port_and_protocol() {
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
        "spec": {"ports": [{"port": 80, "targetPort": 8080}]}});
    let set = field_set(&kinds::SERVICE, &svc);
    let v1 = to_fields_v1(&set);
    assert_eq!(
        v1["f:spec"]["f:ports"]["k:{\"port\":80,\"protocol\":\"TCP\"}"],
        json!({".": {}, "f:port": {}, "f:targetPort": {}})
    );
    let live = json!({"spec": {"ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}]}});
    let path: FieldPathV1 = vec![
        "f:spec".into(),
        "f:ports".into(),
        "k:{\"port\":80,\"protocol\":\"TCP\"}".into(),
        "f:targetPort".into(),
    ];
    assert_eq!(value_at(&live, &path), Some(&json!(8080)));
}
