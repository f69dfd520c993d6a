use serde_json::json;

use super::*;
use crate::field::FieldPath;
use crate::kinds;

fn messages(errs: &[FieldError]) -> Vec<String> {
    errs.iter().map(ToString::to_string).collect()
}

#[test]
fn service_rules() {
    let info = &kinds::SERVICE;
    let svc = json!({"metadata": {"name": "1svc", "namespace": "default"},
        "spec": {"type": "Foo", "ports": [{"port": 80}, {"port": 70000, "name": "b"}]}});
    let got = messages(&validate_create(info, &svc));
    assert!(
        got[0].starts_with("metadata.name: Invalid value: \"1svc\": a DNS-1035 label must consist")
    );
    assert!(got.contains(&"spec.type: Unsupported value: \"Foo\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"".to_owned()));
    assert!(got.contains(&"spec.ports[0].name: Required value".to_owned()));
    assert!(
        got.contains(
            &"spec.ports[1].port: Invalid value: 70000: must be between 1 and 65535, inclusive"
                .to_owned()
        )
    );
    let no_ports =
        json!({"metadata": {"name": "s", "namespace": "d"}, "spec": {"type": "ClusterIP"}});
    assert_eq!(
        messages(&validate_create(info, &no_ports)),
        vec!["spec.ports: Required value"]
    );
    let headless =
        json!({"metadata": {"name": "s", "namespace": "d"}, "spec": {"clusterIP": "None"}});
    assert!(validate_create(info, &headless).is_empty());
}

#[test]
fn storage_rules() {
    let pvc = json!({"metadata": {"name": "c", "namespace": "d"}, "spec": {}});
    assert_eq!(
        messages(&validate_create(&kinds::PERSISTENT_VOLUME_CLAIM, &pvc)),
        vec![
            "spec.accessModes: Required value",
            "spec.resources[storage]: Required value"
        ]
    );
    let pv = json!({"metadata": {"name": "v"}, "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}}});
    assert_eq!(
        messages(&validate_create(&kinds::PERSISTENT_VOLUME, &pv)),
        vec!["spec: Required value: must specify a volume type"]
    );
    let old = json!({"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
    let grown = json!({"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}}});
    assert!(storage::validate_pvc_update(&grown, &old).is_empty());
    let changed = json!({"spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}});
    assert_eq!(storage::validate_pvc_update(&changed, &old).len(), 1);
}

#[test]
fn label_and_selector_rules() {
    let obj = json!({"metadata": {"name": "c", "namespace": "d", "labels": {"bad key": "v", "ok": "-bad"}}});
    let got = messages(&validate_create(&kinds::CONFIG_MAP, &obj));
    assert_eq!(got.len(), 2);
    assert!(got[0].starts_with("metadata.labels: Invalid value: \"bad key\": name part must consist of alphanumeric characters"));
    assert!(got[1].starts_with("metadata.labels: Invalid value: \"-bad\": a valid label must be an empty string or consist of"));
    let sel = json!({"matchExpressions": [{"key": "a", "operator": "In"}, {"key": "b", "operator": "Exists", "values": ["x"]}, {"key": "c", "operator": "Foo"}]});
    let got = messages(&meta::validate_label_selector(
        &sel,
        &FieldPath::new("spec").child("selector"),
    ));
    assert_eq!(
        got,
        vec![
            "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
            "spec.selector.matchExpressions[1].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            "spec.selector.matchExpressions[2].operator: Invalid value: \"Foo\": not a valid selector operator",
        ]
    );
    let big = json!({"metadata": {"name": "c", "namespace": "d", "annotations": {"a": "x".repeat(300 * 1024)}}});
    assert_eq!(
        messages(&validate_create(&kinds::CONFIG_MAP, &big)),
        vec!["metadata.annotations: Too long: must have at most 262144 bytes"]
    );
}

#[test]
fn pod_spec_rules() {
    let pod = json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {
    "restartPolicy": "Sometimes",
    "containers": [
        {"name": "a", "image": "i", "ports": [{"containerPort": 0}], "volumeMounts": [{"name": "missing", "mountPath": "/x"}]},
        {"name": "a", "image": "i"}
    ]}});
    let got = messages(&validate_create(&kinds::POD, &pod));
    assert_eq!(
        got,
        vec![
            "spec.containers[0].ports[0].containerPort: Invalid value: 0: must be between 1 and 65535, inclusive",
            "spec.containers[0].volumeMounts[0].name: Not found: \"missing\"",
            "spec.containers[1].name: Duplicate value: \"a\"",
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"Never\", \"OnFailure\"",
        ]
    );
    let none = json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {"containers": []}});
    assert_eq!(
        messages(&validate_create(&kinds::POD, &none)),
        vec!["spec.containers: Required value"]
    );
}

#[test]
fn network_policy_and_slices() {
    let np = json!({"metadata": {"name": "n", "namespace": "d"}, "spec": {"podSelector": {}, "policyTypes": ["Sideways"],
        "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]}});
    let got = messages(&validate_create(&kinds::NETWORK_POLICY, &np));
    assert_eq!(got.len(), 2);
    let slice = json!({"metadata": {"name": "s", "namespace": "d"}, "addressType": "IPv4", "endpoints": [{"addresses": ["nope"]}]});
    assert_eq!(
        messages(&validate_create(&kinds::ENDPOINT_SLICE, &slice)),
        vec![
            "endpoints[0].addresses[0]: Invalid value: \"nope\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
        ]
    );
}
