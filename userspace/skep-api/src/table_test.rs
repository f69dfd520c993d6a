use serde_json::json;

use super::*;
use crate::kinds;
use crate::object::ListMeta;

fn at(s: &str) -> Timestamp {
    s.parse().unwrap_or(Timestamp::UNIX_EPOCH)
}

#[test]
fn human_durations_like_kubectl() {
    let cases = [
        (5, "5s"),
        (119, "119s"),
        (182, "3m2s"),
        (300, "5m"),
        (11 * 60 + 5, "11m"),
        (3 * 3600 + 60 * 5, "3h5m"),
        (10 * 3600, "10h"),
        (2 * 86400, "2d"),
        (3 * 86400 + 3600, "3d1h"),
        (30 * 86400, "30d"),
        (3 * 365 * 86400 + 86400, "3y1d"),
        (9 * 365 * 86400, "9y"),
        (-1, "0s"),
        (-5, "<invalid>"),
    ];
    for (secs, want) in cases {
        assert_eq!(human_duration(secs), want, "{secs}");
    }
    assert_eq!(age(None, Timestamp::UNIX_EPOCH), "<unknown>");
}

fn pod_status(pod: &Value) -> String {
    row_cells(&kinds::POD, pod, at("2024-01-01T00:10:00Z"))[2]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

#[test]
fn pod_status_column() {
    let base = json!({"metadata": {"name": "p", "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"containers": [{"name": "c"}]}});
    let mut pending = base.clone();
    pending["status"] = json!({"phase": "Pending"});
    assert_eq!(pod_status(&pending), "Pending");
    let mut creating = base.clone();
    creating["status"] = json!({"phase": "Pending", "containerStatuses": [{"name": "c", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]});
    assert_eq!(pod_status(&creating), "ContainerCreating");
    let mut running = base.clone();
    running["status"] = json!({"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [{"name": "c", "ready": true, "restartCount": 2, "state": {"running": {}},
        "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-01-01T00:09:00Z"}}}]});
    let cells = row_cells(&kinds::POD, &running, at("2024-01-01T00:10:00Z"));
    assert_eq!(
        cells,
        vec![
            json!("p"),
            json!("1/1"),
            json!("Running"),
            json!("2 (60s ago)"),
            json!("10m"),
            json!("10.0.0.5"),
            json!("<none>"),
            json!("<none>"),
            json!("<none>")
        ]
    );
    let mut crash = base.clone();
    crash["status"] = json!({"phase": "Running", "containerStatuses": [{"name": "c", "ready": false, "restartCount": 5, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]});
    assert_eq!(pod_status(&crash), "CrashLoopBackOff");
    let mut done = base.clone();
    done["status"] = json!({"phase": "Succeeded", "containerStatuses": [{"name": "c", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]});
    assert_eq!(pod_status(&done), "Completed");
    let mut init = base.clone();
    init["spec"]["initContainers"] = json!([{"name": "i"}]);
    init["status"] = json!({"phase": "Pending", "initContainerStatuses": [{"name": "i", "ready": false, "restartCount": 0, "state": {"running": {}}}]});
    assert_eq!(pod_status(&init), "Init:0/1");
    let mut terminating = base.clone();
    terminating["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:09:00Z");
    terminating["status"] = json!({"phase": "Running"});
    assert_eq!(pod_status(&terminating), "Terminating");
}

#[test]
fn deployment_service_configmap_rows() {
    let now = at("2024-01-01T00:00:30Z");
    let d = json!({"metadata": {"name": "web", "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}, {"name": "side", "image": "busybox"}]}}},
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
    assert_eq!(
        row_cells(&kinds::DEPLOYMENT, &d, now),
        vec![
            json!("web"),
            json!("2/3"),
            json!(3),
            json!(2),
            json!("30s"),
            json!("nginx,side"),
            json!("nginx:1.27,busybox"),
            json!("app=web")
        ]
    );
    let svc = json!({"metadata": {"name": "s", "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "selector": {"app": "web"},
                 "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}, {"port": 53, "protocol": "UDP"}]}});
    assert_eq!(
        row_cells(&kinds::SERVICE, &svc, now),
        vec![
            json!("s"),
            json!("NodePort"),
            json!("10.96.0.10"),
            json!("<none>"),
            json!("80:30080/TCP,53/UDP"),
            json!("30s"),
            json!("app=web")
        ]
    );
    let cm = json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}});
    assert_eq!(
        row_cells(&kinds::CONFIG_MAP, &cm, now),
        vec![json!("c"), json!(2), json!("<unknown>")]
    );
}

#[test]
fn node_and_endpoints_rows() {
    let node = json!({"metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/control-plane": ""}},
        "spec": {"unschedulable": true},
        "status": {"conditions": [{"type": "Ready", "status": "True"}], "nodeInfo": {"kubeletVersion": "v1.32.4"},
                   "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}});
    let cells = row_cells(&kinds::NODE, &node, Timestamp::UNIX_EPOCH);
    assert_eq!(
        &cells[..5],
        &[
            json!("n1"),
            json!("Ready,SchedulingDisabled"),
            json!("control-plane"),
            json!("<unknown>"),
            json!("v1.32.4")
        ]
    );
    assert_eq!(cells[5], "10.0.0.1");
    let ep = json!({"metadata": {"name": "e"}, "subsets": [{"addresses": [{"ip": "1.1.1.1"}, {"ip": "1.1.1.2"}, {"ip": "1.1.1.3"}, {"ip": "1.1.1.4"}], "ports": [{"port": 80}]}]});
    assert_eq!(
        row_cells(&kinds::ENDPOINTS, &ep, Timestamp::UNIX_EPOCH)[1],
        "1.1.1.1:80,1.1.1.2:80,1.1.1.3:80 + 1 more..."
    );
}

#[test]
fn table_shape() {
    let cm = json!({"kind": "ConfigMap", "metadata": {"name": "c", "resourceVersion": "5"}, "data": {"a": "1"}});
    let meta = ListMeta {
        resource_version: 9,
        ..ListMeta::default()
    };
    let t = table(
        &kinds::CONFIG_MAP,
        std::slice::from_ref(&cm),
        &meta,
        IncludeObject::Metadata,
        Timestamp::UNIX_EPOCH,
    );
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(t["metadata"]["resourceVersion"], "9");
    let names: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, vec!["Name", "Data", "Age"]);
    assert_eq!(t["columnDefinitions"][0]["format"], "name");
    assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(t["rows"][0]["object"]["metadata"]["name"], "c");
    let t = table(
        &kinds::CONFIG_MAP,
        &[cm],
        &meta,
        IncludeObject::Object,
        Timestamp::UNIX_EPOCH,
    );
    assert_eq!(t["rows"][0]["object"]["data"]["a"], "1");
    let pods = column_definitions(&kinds::POD);
    let wide: Vec<&str> = pods
        .iter()
        .filter(|c| c["priority"] == 1)
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        wide,
        vec!["IP", "Node", "Nominated Node", "Readiness Gates"]
    );
}
