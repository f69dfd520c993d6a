use serde_json::json;

use super::*;
use crate::kinds;

#[test]
fn pull_policy_by_tag() {
    assert_eq!(default_pull_policy("nginx"), "Always");
    assert_eq!(default_pull_policy("nginx:latest"), "Always");
    assert_eq!(default_pull_policy("nginx:1.27"), "IfNotPresent");
    assert_eq!(default_pull_policy("localhost:5000/busybox"), "Always");
    assert_eq!(
        default_pull_policy("localhost:5000/busybox:1"),
        "IfNotPresent"
    );
    assert_eq!(default_pull_policy("busybox@sha256:abc"), "IfNotPresent");
}

#[test]
fn pod_defaults_match_kubectl_get_o_yaml() {
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80}]}]}});
    apply_defaults(&kinds::POD, &mut pod);
    initial_status(&kinds::POD, &mut pod);
    let spec = &pod["spec"];
    assert_eq!(spec["restartPolicy"], "Always");
    assert_eq!(spec["dnsPolicy"], "ClusterFirst");
    assert_eq!(spec["terminationGracePeriodSeconds"], 30);
    assert_eq!(spec["schedulerName"], "default-scheduler");
    assert_eq!(spec["enableServiceLinks"], true);
    assert_eq!(spec["securityContext"], json!({}));
    assert_eq!(
        spec["tolerations"],
        json!([
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
        ])
    );
    let c = &spec["containers"][0];
    assert_eq!(c["imagePullPolicy"], "Always");
    assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
    assert_eq!(c["terminationMessagePolicy"], "File");
    assert_eq!(c["ports"][0]["protocol"], "TCP");
    assert_eq!(c["resources"], json!({}));
    assert_eq!(
        pod["status"],
        json!({"phase": "Pending", "qosClass": "BestEffort"})
    );
}

#[test]
fn qos_classes() {
    let guaranteed = json!({"spec": {"containers": [{"resources": {
        "limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}}}]}});
    assert_eq!(qos_class(&guaranteed), "Guaranteed");
    let burstable = json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "1"}}}]}});
    assert_eq!(qos_class(&burstable), "Burstable");
    let mut limits_only = json!({"spec": {"containers": [{"name": "c", "image": "i", "resources": {
        "limits": {"cpu": "1", "memory": "1Gi"}}}]}});
    apply_defaults(&kinds::POD, &mut limits_only);
    assert_eq!(
        limits_only["spec"]["containers"][0]["resources"]["requests"],
        json!({"cpu": "1", "memory": "1Gi"})
    );
    assert_eq!(qos_class(&limits_only), "Guaranteed");
}

#[test]
fn deployment_defaults() {
    let mut d = json!({"spec": {"selector": {"matchLabels": {"app": "a"}},
        "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}}});
    apply_defaults(&kinds::DEPLOYMENT, &mut d);
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
    assert_eq!(
        d["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
    );
    let t = &d["spec"]["template"]["spec"];
    assert_eq!(t["containers"][0]["imagePullPolicy"], "IfNotPresent");
    assert_eq!(t["restartPolicy"], "Always");
    assert!(
        t.get("tolerations").is_none(),
        "admission defaults only apply to pods"
    );

    let mut recreate = json!({"spec": {"strategy": {"type": "Recreate"}}});
    apply_defaults(&kinds::DEPLOYMENT, &mut recreate);
    assert_eq!(recreate["spec"]["strategy"], json!({"type": "Recreate"}));
}

#[test]
fn service_defaults() {
    let mut s = json!({"spec": {"selector": {"app": "a"}, "ports": [{"port": 80}]}});
    apply_defaults(&kinds::SERVICE, &mut s);
    assert_eq!(s["spec"]["type"], "ClusterIP");
    assert_eq!(s["spec"]["sessionAffinity"], "None");
    assert_eq!(
        s["spec"]["ports"][0],
        json!({"port": 80, "protocol": "TCP", "targetPort": 80})
    );
    assert_eq!(s["spec"]["internalTrafficPolicy"], "Cluster");
    assert!(s["spec"].get("externalTrafficPolicy").is_none());
    let mut np =
        json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "targetPort": "http"}]}});
    apply_defaults(&kinds::SERVICE, &mut np);
    assert_eq!(np["spec"]["externalTrafficPolicy"], "Cluster");
    assert_eq!(np["spec"]["ports"][0]["targetPort"], "http");
    let mut unset =
        json!({"spec": {"ports": [{"port": 80, "targetPort": ""}, {"port": 81, "targetPort": 0}]}});
    apply_defaults(&kinds::SERVICE, &mut unset);
    assert_eq!(unset["spec"]["ports"][0]["targetPort"], 80);
    assert_eq!(unset["spec"]["ports"][1]["targetPort"], 81);
}

#[test]
fn namespace_secret_netpol() {
    let mut ns = json!({"metadata": {"name": "team-a"}});
    apply_defaults(&kinds::NAMESPACE, &mut ns);
    initial_status(&kinds::NAMESPACE, &mut ns);
    assert_eq!(
        ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "team-a"
    );
    assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
    assert_eq!(ns["status"]["phase"], "Active");
    let mut secret = json!({"metadata": {"name": "s"}});
    apply_defaults(&kinds::SECRET, &mut secret);
    assert_eq!(secret["type"], "Opaque");
    let mut np = json!({"spec": {"podSelector": {}, "egress": [{"ports": [{"port": 53}]}]}});
    apply_defaults(&kinds::NETWORK_POLICY, &mut np);
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(np["spec"]["egress"][0]["ports"][0]["protocol"], "TCP");
}
