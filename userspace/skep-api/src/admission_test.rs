use serde_json::json;

use super::*;
use crate::kinds;

fn decoded(v: Value) -> Decoded {
    Decoded {
        value: v,
        duplicates: Vec::new(),
    }
}

fn strict() -> AdmitOptions {
    AdmitOptions {
        field_validation: FieldValidation::Strict,
        now: Timestamp::UNIX_EPOCH,
    }
}

fn create(info: &ResourceInfo, ns: &str, v: Value) -> Result<Admitted, ApiError> {
    admit_create(info, ns, decoded(v), &strict())
}

fn pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
           "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}})
}

fn deployment() -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
}

fn ok(r: Result<Admitted, ApiError>) -> Value {
    match r {
        Ok(a) => a.object,
        Err(e) => panic!("unexpected error: {}", e.message),
    }
}

fn err(r: Result<Admitted, ApiError>) -> ApiError {
    match r {
        Ok(a) => panic!("unexpected success: {}", a.object),
        Err(e) => e,
    }
}

#[test]
fn create_pod_sets_server_fields_and_defaults() {
    let p = ok(create(&kinds::POD, "default", pod()));
    assert_eq!(p["metadata"]["namespace"], "default");
    assert_eq!(p["metadata"]["creationTimestamp"], "1970-01-01T00:00:00Z");
    assert_eq!(p["metadata"]["uid"].as_str().map(str::len), Some(36));
    assert!(
        p["metadata"].get("generation").is_none(),
        "pods do not track generation in 1.32"
    );
    assert_eq!(
        p["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );
    assert_eq!(
        p["status"],
        json!({"phase": "Pending", "qosClass": "BestEffort"})
    );
    let d = ok(create(&kinds::DEPLOYMENT, "default", deployment()));
    assert_eq!(d["metadata"]["generation"], 1);
    assert_eq!(d["spec"]["replicas"], 1);
}

#[test]
fn create_fills_and_checks_type_meta() {
    let mut body = pod();
    body.as_object_mut()
        .map(|m| (m.remove("apiVersion"), m.remove("kind")));
    let p = ok(create(&kinds::POD, "default", body));
    assert_eq!(
        (p["apiVersion"].as_str(), p["kind"].as_str()),
        (Some("v1"), Some("Pod"))
    );
    let e = err(create(&kinds::SERVICE, "default", pod()));
    assert_eq!(e.code(), 400);
    let mut other_ns = pod();
    other_ns["metadata"]["namespace"] = json!("kube-system");
    let e = err(create(&kinds::POD, "default", other_ns));
    assert_eq!(
        e.message,
        "the namespace of the provided object does not match the namespace sent on the request"
    );
    let mut with_rv = pod();
    with_rv["metadata"]["resourceVersion"] = json!("5");
    assert_eq!(
        err(create(&kinds::POD, "default", with_rv)).message,
        "resourceVersion should not be set on objects to be created"
    );
}

#[test]
fn strict_warn_ignore() {
    let mut body = deployment();
    body["spec"]["foo"] = json!(1);
    body["spec"]["template"]["spec"]["containers"][0]["imagePullPolic"] = json!("Always");
    let e = err(create(&kinds::DEPLOYMENT, "default", body.clone()));
    assert_eq!(e.code(), 400);
    assert_eq!(e.reason, StatusReason::BadRequest);
    assert!(e.message.starts_with("strict decoding error: "));
    assert!(e.message.contains("unknown field \"spec.foo\""));
    assert!(
        e.message
            .contains("unknown field \"spec.template.spec.containers[0].imagePullPolic\"")
    );
    let warn = AdmitOptions {
        field_validation: FieldValidation::Warn,
        ..strict()
    };
    let admitted = admit_create(&kinds::DEPLOYMENT, "default", decoded(body.clone()), &warn);
    let admitted = admitted.unwrap_or_else(|e| panic!("{}", e.message));
    assert_eq!(admitted.warnings.len(), 2);
    assert!(admitted.object["spec"].get("foo").is_none());
    let dup = Decoded {
        value: pod(),
        duplicates: vec!["metadata.name".into()],
    };
    let e = admit_create(&kinds::POD, "default", dup, &strict()).err();
    assert_eq!(
        e.map(|e| e.message),
        Some("strict decoding error: duplicate field \"metadata.name\"".into())
    );
}

#[test]
fn type_errors_are_bad_requests() {
    let mut body = deployment();
    body["spec"]["replicas"] = json!("3");
    let e = err(create(&kinds::DEPLOYMENT, "default", body));
    assert_eq!(e.code(), 400);
    assert_eq!(
        e.message,
        "Deployment in version \"v1\" cannot be handled as a Deployment: json: cannot unmarshal string into Go struct field .spec.replicas of type int32"
    );
}

#[test]
fn invalid_names_and_required_fields() {
    let mut body = pod();
    body["metadata"]["name"] = json!("Foo_bar");
    let e = err(create(&kinds::POD, "default", body));
    assert_eq!(e.code(), 422);
    assert_eq!(
        e.message,
        "Pod \"Foo_bar\" is invalid: metadata.name: Invalid value: \"Foo_bar\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    );
    let status = e.to_status();
    assert_eq!(status["details"]["kind"], "Pod");
    assert_eq!(
        status["details"]["causes"][0]["reason"],
        "FieldValueInvalid"
    );
    assert_eq!(status["details"]["causes"][0]["field"], "metadata.name");

    let no_image = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}});
    assert_eq!(
        err(create(&kinds::POD, "default", no_image)).message,
        "Pod \"p\" is invalid: spec.containers[0].image: Required value"
    );
    let no_name = json!({"metadata": {}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
    assert_eq!(
        err(create(&kinds::POD, "default", no_name)).message,
        "Pod \"\" is invalid: metadata.name: Required value: name or generateName is required"
    );
}

#[test]
fn oversized_config_map_is_invalid() {
    let big = "x".repeat(2 * 1024 * 1024);
    let cm = json!({"metadata": {"name": "big"}, "data": {"blob": big}});
    let e = err(create(&kinds::CONFIG_MAP, "default", cm));
    assert_eq!(e.code(), 422);
    assert_eq!(
        e.message,
        "ConfigMap \"big\" is invalid: []: Too long: must have at most 1048576 bytes"
    );
    let bad_key = json!({"metadata": {"name": "c"}, "data": {"a/b": "x"}});
    let e = err(create(&kinds::CONFIG_MAP, "default", bad_key));
    assert!(e.message.starts_with("ConfigMap \"c\" is invalid: data[a/b]: Invalid value: \"a/b\": a valid config key must consist of alphanumeric characters"));
}

#[test]
fn oversized_other_object_is_too_large() {
    let ann = "x".repeat(100 * 1024);
    let mut p = pod();
    p["spec"]["containers"][0]["args"] = json!(vec![ann; 17]);
    let e = err(create(&kinds::POD, "default", p));
    assert_eq!(e.code(), 413);
}

#[test]
fn deployment_selector_must_match_template() {
    let mut d = deployment();
    d["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
    let e = err(create(&kinds::DEPLOYMENT, "default", d));
    assert_eq!(
        e.message,
        "Deployment.apps \"web\" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"other\"}: `selector` does not match template `labels`"
    );
    let mut no_sel = deployment();
    no_sel["spec"].as_object_mut().map(|s| s.remove("selector"));
    let e = err(create(&kinds::DEPLOYMENT, "default", no_sel));
    assert!(
        e.message.contains("spec.selector: Required value"),
        "{}",
        e.message
    );
    let mut neg = deployment();
    neg["spec"]["replicas"] = json!(-1);
    let e = err(create(&kinds::DEPLOYMENT, "default", neg));
    assert_eq!(
        e.message,
        "Deployment.apps \"web\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0"
    );
}

#[test]
fn generate_name_adds_suffix() {
    let body = json!({"metadata": {"generateName": "web-"}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
    let p = ok(create(&kinds::POD, "default", body));
    let name = p["metadata"]["name"].as_str().unwrap_or("");
    assert_eq!(name.len(), 9);
    assert!(name.starts_with("web-"));
    assert!(
        name[4..]
            .chars()
            .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c))
    );
}

fn stored(info: &ResourceInfo, v: Value, rv: u64) -> Value {
    let mut obj = ok(create(info, "default", v));
    object::set_resource_version(&mut obj, rv);
    obj
}

#[test]
fn update_keeps_status_and_bumps_generation_on_spec_change() {
    let mut old = stored(&kinds::DEPLOYMENT, deployment(), 10);
    old["status"] = json!({"replicas": 1});
    let mut new = old.clone();
    new["status"] = json!({"replicas": 99});
    new["metadata"]["labels"] = json!({"x": "y"});
    let d = ok(admit_update(
        &kinds::DEPLOYMENT,
        "default",
        "web",
        decoded(new.clone()),
        &old,
        &strict(),
    ));
    assert_eq!(d["status"], json!({"replicas": 1}));
    assert_eq!(
        d["metadata"]["generation"], 1,
        "label change keeps generation"
    );
    new["spec"]["replicas"] = json!(3);
    let admitted = admit_update(
        &kinds::DEPLOYMENT,
        "default",
        "web",
        decoded(new),
        &old,
        &strict(),
    );
    let admitted = admitted.unwrap_or_else(|e| panic!("{}", e.message));
    assert_eq!(admitted.object["metadata"]["generation"], 2);
    assert_eq!(admitted.precondition, Some(10));
}

#[test]
fn stale_resource_version_conflicts() {
    let old = stored(
        &kinds::CONFIG_MAP,
        json!({"metadata": {"name": "x"}, "data": {"a": "1"}}),
        7,
    );
    let mut new = old.clone();
    new["metadata"]["resourceVersion"] = json!("6");
    let e = err(admit_update(
        &kinds::CONFIG_MAP,
        "default",
        "x",
        decoded(new),
        &old,
        &strict(),
    ));
    assert_eq!(e.code(), 409);
    assert_eq!(
        e.message,
        "Operation cannot be fulfilled on configmaps \"x\": the object has been modified; please apply your changes to the latest version and try again"
    );
}

#[test]
fn immutable_fields_on_update() {
    let old = stored(&kinds::DEPLOYMENT, deployment(), 3);
    let mut new = old.clone();
    new["spec"]["selector"] = json!({"matchLabels": {"app": "web", "v": "2"}});
    new["spec"]["template"]["metadata"]["labels"] = json!({"app": "web", "v": "2"});
    let e = err(admit_update(
        &kinds::DEPLOYMENT,
        "default",
        "web",
        decoded(new),
        &old,
        &strict(),
    ));
    assert_eq!(
        e.message,
        "Deployment.apps \"web\" is invalid: spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"web\", \"v\":\"2\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"
    );

    let old_pod = stored(&kinds::POD, pod(), 3);
    let mut image = old_pod.clone();
    image["spec"]["containers"][0]["image"] = json!("nginx:1.28");
    ok(admit_update(
        &kinds::POD,
        "default",
        "web",
        decoded(image),
        &old_pod,
        &strict(),
    ));
    let mut restart = old_pod.clone();
    restart["spec"]["restartPolicy"] = json!("Never");
    let e = err(admit_update(
        &kinds::POD,
        "default",
        "web",
        decoded(restart),
        &old_pod,
        &strict(),
    ));
    assert!(e.message.starts_with("Pod \"web\" is invalid: spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`"));

    let old_cm = stored(
        &kinds::CONFIG_MAP,
        json!({"metadata": {"name": "c"}, "data": {"a": "1"}, "immutable": true}),
        3,
    );
    let mut cm = old_cm.clone();
    cm["data"]["a"] = json!("2");
    let e = err(admit_update(
        &kinds::CONFIG_MAP,
        "default",
        "c",
        decoded(cm),
        &old_cm,
        &strict(),
    ));
    assert_eq!(
        e.message,
        "ConfigMap \"c\" is invalid: data: Forbidden: field is immutable when `immutable` is set"
    );

    let svc = json!({"metadata": {"name": "s"}, "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}});
    let old_svc = stored(&kinds::SERVICE, svc, 3);
    let mut no_ip = old_svc.clone();
    no_ip["spec"].as_object_mut().map(|s| s.remove("clusterIP"));
    let kept = ok(admit_update(
        &kinds::SERVICE,
        "default",
        "s",
        decoded(no_ip),
        &old_svc,
        &strict(),
    ));
    assert_eq!(kept["spec"]["clusterIP"], "10.96.0.10");
    let mut other_ip = old_svc.clone();
    other_ip["spec"]["clusterIP"] = json!("10.96.0.11");
    let e = err(admit_update(
        &kinds::SERVICE,
        "default",
        "s",
        decoded(other_ip),
        &old_svc,
        &strict(),
    ));
    assert_eq!(
        e.message,
        "Service \"s\" is invalid: spec.clusterIPs[0]: Invalid value: []string{\"10.96.0.11\"}: may not change once set"
    );
}

#[test]
fn status_update_keeps_spec_and_metadata() {
    let old = stored(&kinds::DEPLOYMENT, deployment(), 4);
    let mut new = old.clone();
    new["spec"]["replicas"] = json!(5);
    new["metadata"]["labels"] = json!({"sneaky": "yes"});
    new["status"] = json!({"replicas": 1, "readyReplicas": 1});
    let d = ok(admit_status_update(
        &kinds::DEPLOYMENT,
        "default",
        "web",
        decoded(new),
        &old,
        &strict(),
    ));
    assert_eq!(d["spec"]["replicas"], 1);
    assert!(d["metadata"].get("labels").is_none());
    assert_eq!(d["status"]["readyReplicas"], 1);
    let cm = stored(&kinds::CONFIG_MAP, json!({"metadata": {"name": "c"}}), 1);
    let e = err(admit_status_update(
        &kinds::CONFIG_MAP,
        "default",
        "c",
        decoded(cm.clone()),
        &cm,
        &strict(),
    ));
    assert_eq!(e.code(), 404);
}

#[test]
fn scale_and_binding() {
    let old = stored(&kinds::DEPLOYMENT, deployment(), 4);
    let scale = scale_of(&old);
    assert_eq!(scale["status"]["selector"], "app=web");
    assert_eq!(scale["spec"]["replicas"], 1);
    let mut body = scale.clone();
    body["spec"]["replicas"] = json!(3);
    let d = ok(admit_scale_update(
        &kinds::DEPLOYMENT,
        "default",
        "web",
        decoded(body),
        &old,
        &strict(),
    ));
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["metadata"]["generation"], 2);

    let p = stored(&kinds::POD, pod(), 2);
    let binding = decoded(
        json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "web"}, "target": {"kind": "Node", "name": "n1"}}),
    );
    let bound = bind_pod(&p, &binding, Timestamp::UNIX_EPOCH).unwrap_or_default();
    assert_eq!(bound["spec"]["nodeName"], "n1");
    assert_eq!(bound["status"]["conditions"][0]["type"], "PodScheduled");
    let again = bind_pod(&bound, &binding, Timestamp::UNIX_EPOCH).err();
    assert_eq!(again.map(|e| e.message), Some("Operation cannot be fulfilled on pods/binding \"web\": pod web is already assigned to node \"n1\"".into()));
}

#[test]
fn secret_string_data_folds_into_data() {
    let s = ok(create(
        &kinds::SECRET,
        "default",
        json!({"metadata": {"name": "s"}, "stringData": {"user": "admin"}}),
    ));
    assert_eq!(s["data"]["user"], "YWRtaW4=");
    assert!(s.get("stringData").is_none());
    assert_eq!(s["type"], "Opaque");
    let tls = json!({"metadata": {"name": "t"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}});
    assert_eq!(
        err(create(&kinds::SECRET, "default", tls)).message,
        "Secret \"t\" is invalid: data[tls.key]: Required value"
    );
}

#[test]
fn cluster_scoped_objects_drop_namespace() {
    let ns = ok(create(
        &kinds::NAMESPACE,
        "",
        json!({"metadata": {"name": "team-a", "namespace": "x"}}),
    ));
    assert!(ns["metadata"].get("namespace").is_none());
    assert_eq!(ns["status"]["phase"], "Active");
    let e = err(create(
        &kinds::NAMESPACE,
        "",
        json!({"metadata": {"name": "Team.A"}}),
    ));
    assert!(e.message.starts_with("Namespace \"Team.A\" is invalid: metadata.name: Invalid value: \"Team.A\": a lowercase RFC 1123 label"));
}

#[test]
fn oversized_secret_reports_data() {
    let blob = "QUFB".repeat(400 * 1024);
    let s = json!({"metadata": {"name": "s"}, "data": {"blob": blob}});
    assert_eq!(
        err(create(&kinds::SECRET, "default", s)).message,
        "Secret \"s\" is invalid: data: Too long: must have at most 1048576 bytes"
    );
}

#[test]
fn kubectl_generated_bodies_pass_strict() {
    let deploy = json!({"kind": "Deployment", "apiVersion": "apps/v1",
        "metadata": {"name": "web", "creationTimestamp": null, "labels": {"app": "web"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx", "resources": {}}]}},
            "strategy": {}},
        "status": {}});
    let d = admit_create(&kinds::DEPLOYMENT, "default", decoded(deploy), &strict())
        .unwrap_or_else(|e| panic!("{}", e.message));
    assert!(d.warnings.is_empty());
    assert_eq!(d.object["spec"]["strategy"]["type"], "RollingUpdate");
    assert!(d.object.get("status").is_none_or(|s| s == &json!({})));
    let run = json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p", "creationTimestamp": null, "labels": {"run": "p"}},
        "spec": {"containers": [{"name": "p", "image": "busybox", "resources": {}}], "restartPolicy": "Always", "dnsPolicy": "ClusterFirst"},
        "status": {}});
    let p = ok(create(&kinds::POD, "default", run));
    assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "Always");
    let svc = json!({"kind": "Service", "apiVersion": "v1", "metadata": {"name": "web", "creationTimestamp": null, "labels": {"app": "web"}},
        "spec": {"ports": [{"name": "80-80", "protocol": "TCP", "port": 80, "targetPort": 80}], "selector": {"app": "web"}, "type": "ClusterIP"},
        "status": {"loadBalancer": {}}});
    let s = ok(create(&kinds::SERVICE, "default", svc));
    assert_eq!(s["spec"]["sessionAffinity"], "None");
    assert_eq!(s["status"], json!({"loadBalancer": {}}));
}

#[test]
fn patch_then_update_flow() {
    let old = stored(&kinds::DEPLOYMENT, deployment(), 8);
    let patched = crate::patch::apply_patch(
        &kinds::DEPLOYMENT,
        &old,
        crate::patch::PatchType::Strategic,
        br#"{"spec":{"template":{"spec":{"containers":[{"name":"c","image":"nginx:1.28"}]}}}}"#,
    )
    .unwrap_or_default();
    let d = ok(admit_update(
        &kinds::DEPLOYMENT,
        "default",
        "web",
        decoded(patched),
        &old,
        &strict(),
    ));
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.28"
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"], "Always",
        "kept from the stored object"
    );
    assert_eq!(d["metadata"]["generation"], 2);
}

#[test]
fn create_only_kinds_are_admitted_without_server_metadata() {
    let sar = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "LocalSubjectAccessReview",
        "spec": {"user": "alice", "resourceAttributes": {"namespace": "team", "verb": "get", "resource": "pods"}}});
    let admitted = admit_create_only(
        &kinds::LOCAL_SUBJECT_ACCESS_REVIEW,
        "team",
        decoded(sar),
        &strict(),
    );
    let obj = admitted.map(|a| a.object).unwrap_or_default();
    assert_eq!(obj["metadata"], json!({"namespace": "team"}));

    let named = json!({"kind": "SubjectAccessReview", "metadata": {"name": "x"},
        "spec": {"user": "alice", "nonResourceAttributes": {"path": "/healthz", "verb": "get"}}});
    let err = admit_create_only(&kinds::SUBJECT_ACCESS_REVIEW, "", decoded(named), &strict()).err();
    assert_eq!(
        err.map(|e| e.message),
        Some("SubjectAccessReview.authorization.k8s.io \"x\" is invalid: metadata: Invalid value: {\"name\":\"x\"}: must be empty".to_owned())
    );

    let token = json!({"kind": "TokenRequest", "spec": {"audiences": []}});
    let admitted = admit_create_only(&kinds::TOKEN_REQUEST, "team", decoded(token), &strict());
    let obj = admitted.map(|a| a.object).unwrap_or_default();
    assert_eq!(obj["spec"]["expirationSeconds"], 3600);

    let stored = admit_create_only(&kinds::POD, "team", decoded(pod()), &strict()).err();
    assert_eq!(stored.map(|e| e.code()), Some(405));
}

#[test]
fn rbac_names_are_path_segments() {
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "system:controller:foo"},
        "rules": [{"verbs": ["get"], "nonResourceURLs": ["/healthz"]}]});
    assert!(create(&kinds::CLUSTER_ROLE, "", role).is_ok());
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "system:reader"},
        "rules": [{"verbs": ["get"], "nonResourceURLs": ["/healthz"]}]});
    let err = create(&kinds::ROLE, "team", role).err().map(|e| e.message);
    assert_eq!(
        err.as_deref(),
        Some(
            "Role.rbac.authorization.k8s.io \"system:reader\" is invalid: rules[0].nonResourceURLs: Invalid value: []string{\"/healthz\"}: namespaced rules cannot apply to non-resource URLs"
        )
    );
}
