use serde_json::{Value, json};

use super::*;

const NODE: NodeFacts<'static> = NodeFacts {
    node_name: "n1",
    node_ip: Ipv4Addr::new(10, 99, 1, 11),
    cluster_dns: Ipv4Addr::new(10, 96, 0, 10),
    dns_addr: None,
};

fn view(services: &[Value], slices: &[Value]) -> View {
    let mut view = View::default();
    for s in services {
        let body = serde_json::to_vec(s).expect("service");
        assert!(!view.apply("n1", "Service", false, &body).touched.is_empty());
    }
    for s in slices {
        let body = serde_json::to_vec(s).expect("slice");
        assert!(
            !view
                .apply("n1", "EndpointSlice", false, &body)
                .touched
                .is_empty()
        );
    }
    view
}

fn service(name: &str, spec: &Value) -> Value {
    json!({"metadata": {"namespace": "default", "name": name}, "spec": spec})
}

fn slice(name: &str, service: &str, ports: &Value, endpoints: &Value) -> Value {
    json!({
        "metadata": {"namespace": "default", "name": name,
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": endpoints,
    })
}

fn ep(ip: &str, node: &str, conditions: &Value) -> Value {
    json!({"addresses": [ip], "nodeName": node, "conditions": conditions})
}

fn addr(s: &str) -> SocketAddrV4 {
    s.parse().expect("socket address")
}

fn names(specs: &[ServiceSpec]) -> Vec<String> {
    specs
        .iter()
        .map(|s| format!("{} {}", s.name, s.frontend()))
        .collect()
}

#[test]
fn cluster_ip_ports_get_ready_endpoints_at_the_slice_port_of_the_same_name() {
    let v = view(
        &[service(
            "web",
            &json!({"clusterIP": "10.96.0.20", "ports": [
                {"name": "http", "port": 80, "targetPort": "web"},
                {"name": "metrics", "port": 9100, "protocol": "TCP"},
                {"name": "dns", "port": 53, "protocol": "UDP"}]}),
        )],
        &[slice(
            "web-abc",
            "web",
            // Named target port "web" resolved to 8080 by the endpoints controller.
            &json!([{"name": "http", "port": 8080, "protocol": "TCP"},
                    {"name": "metrics", "port": 9100, "protocol": "TCP"},
                    {"name": "dns", "port": 5353, "protocol": "UDP"}]),
            &json!([
                ep("10.244.1.5", "n1", &json!({"ready": true})),
                ep("10.244.2.5", "n2", &json!({"ready": true}))
            ]),
        )],
    );
    let got = desired(&v, &NODE);
    assert_eq!(
        names(&got),
        [
            "default/web:dns 10.96.0.20:53/UDP",
            "default/web:http 10.96.0.20:80/TCP",
            "default/web:metrics 10.96.0.20:9100/TCP",
        ]
    );
    assert_eq!(
        got[1].backends,
        [addr("10.244.1.5:8080"), addr("10.244.2.5:8080")]
    );
    assert_eq!(
        got[0].backends,
        [addr("10.244.1.5:5353"), addr("10.244.2.5:5353")]
    );
    assert_eq!(
        got[2].backends,
        [addr("10.244.1.5:9100"), addr("10.244.2.5:9100")]
    );
    assert!(
        got.iter()
            .all(|s| !s.external && !s.local_only && s.affinity_timeout.is_none())
    );
}

#[test]
fn only_ready_and_not_terminating_endpoints_are_backends() {
    let v = view(
        &[service(
            "web",
            &json!({"clusterIP": "10.96.0.20", "ports": [{"port": 80}]}),
        )],
        &[slice(
            "web-1",
            "web",
            &json!([{"port": 8080}]),
            &json!([
                ep("10.244.1.1", "n1", &json!({"ready": true})),
                // Unset ready counts as ready (EndpointSlice API).
                ep("10.244.1.2", "n1", &json!({})),
                json!({"addresses": ["10.244.1.3"]}),
                ep("10.244.1.4", "n1", &json!({"ready": false})),
                ep(
                    "10.244.1.5",
                    "n1",
                    &json!({"ready": false, "serving": true, "terminating": true})
                ),
                // Even marked ready, a terminating endpoint gets nothing new.
                ep(
                    "10.244.1.6",
                    "n1",
                    &json!({"ready": true, "terminating": true})
                ),
            ]),
        )],
    );
    let got = desired(&v, &NODE);
    assert_eq!(names(&got), ["default/web:80 10.96.0.20:80/TCP"]);
    assert_eq!(
        got[0].backends,
        [
            addr("10.244.1.1:8080"),
            addr("10.244.1.2:8080"),
            addr("10.244.1.3:8080")
        ]
    );
}

#[test]
fn slices_of_one_service_add_up_and_other_services_slices_do_not_count() {
    let port = json!([{"name": "http", "port": 8080}]);
    let v = view(
        &[
            service(
                "web",
                &json!({"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80}]}),
            ),
            service(
                "api",
                &json!({"clusterIP": "10.96.0.21", "ports": [{"name": "http", "port": 80}]}),
            ),
        ],
        &[
            slice(
                "web-1",
                "web",
                &port,
                &json!([ep("10.244.1.1", "n1", &json!({}))]),
            ),
            // A slice whose port is another one: the endpoints serve 9090 for this port.
            slice(
                "web-2",
                "web",
                &json!([{"name": "http", "port": 9090}]),
                &json!([
                    ep("10.244.2.1", "n2", &json!({})),
                    ep("10.244.1.1", "n1", &json!({}))
                ]),
            ),
            // A slice without the port contributes nothing to it.
            slice(
                "web-3",
                "web",
                &json!([{"name": "other", "port": 1}]),
                &json!([ep("10.244.3.1", "n3", &json!({}))]),
            ),
            slice(
                "api-1",
                "api",
                &port,
                &json!([ep("10.244.9.9", "n1", &json!({}))]),
            ),
            // IPv6 slices are ignored (IPv4 datapath).
            json!({"metadata": {"namespace": "default", "name": "web-v6",
                                "labels": {"kubernetes.io/service-name": "web"}},
                   "addressType": "IPv6", "ports": port,
                   "endpoints": [{"addresses": ["fd00::1"]}]}),
        ],
    );
    let got = desired(&v, &NODE);
    assert_eq!(
        names(&got),
        [
            "default/web:http 10.96.0.20:80/TCP",
            "default/api:http 10.96.0.21:80/TCP"
        ]
    );
    assert_eq!(
        got[0].backends,
        [
            addr("10.244.1.1:8080"),
            addr("10.244.1.1:9090"),
            addr("10.244.2.1:9090")
        ]
    );
    assert_eq!(got[1].backends, [addr("10.244.9.9:8080")]);
}

#[test]
fn a_service_without_endpoints_is_still_programmed_so_it_refuses() {
    let v = view(
        &[service(
            "empty",
            &json!({"clusterIP": "10.96.0.30", "ports": [{"port": 80}]}),
        )],
        &[],
    );
    let got = desired(&v, &NODE);
    assert_eq!(names(&got), ["default/empty:80 10.96.0.30:80/TCP"]);
    assert!(got[0].backends.is_empty());
}

#[test]
fn client_ip_affinity_carries_its_timeout_or_the_default() {
    let v = view(
        &[
            service(
                "a",
                &json!({"clusterIP": "10.96.0.1", "ports": [{"port": 80}],
                "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}),
            ),
            service(
                "b",
                &json!({"clusterIP": "10.96.0.2", "ports": [{"port": 80}],
                "sessionAffinity": "ClientIP"}),
            ),
            service(
                "c",
                &json!({"clusterIP": "10.96.0.3", "ports": [{"port": 80}],
                "sessionAffinity": "None"}),
            ),
        ],
        &[],
    );
    let got = desired(&v, &NODE);
    let timeouts: Vec<Option<u32>> = got.iter().map(|s| s.affinity_timeout).collect();
    assert_eq!(timeouts, [Some(60), Some(10_800), None]);
}

#[test]
fn headless_and_external_name_services_have_no_frontend() {
    let v = view(
        &[
            service(
                "headless",
                &json!({"clusterIP": "None", "ports": [{"port": 80}]}),
            ),
            service(
                "ext",
                &json!({"type": "ExternalName", "externalName": "example.org",
                                   "ports": [{"port": 80}]}),
            ),
            service("pending", &json!({"ports": [{"port": 80}]})),
        ],
        &[slice(
            "headless-1",
            "headless",
            &json!([{"port": 80}]),
            &json!([ep("10.244.1.1", "n1", &json!({}))]),
        )],
    );
    assert!(desired(&v, &NODE).is_empty());
}

#[test]
fn node_ports_and_external_ips_are_external_frontends_local_keeps_this_nodes_endpoints() {
    let endpoints = json!([
        ep("10.244.1.1", "n1", &json!({})),
        ep("10.244.2.1", "n2", &json!({}))
    ]);
    let v = view(
        &[
            service(
                "np",
                &json!({"type": "NodePort", "clusterIP": "10.96.0.40",
                "externalIPs": ["192.0.2.7"],
                "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}),
            ),
            service(
                "local",
                &json!({"type": "NodePort", "clusterIP": "10.96.0.41",
                "externalTrafficPolicy": "Local",
                "ports": [{"name": "http", "port": 80, "nodePort": 30081}]}),
            ),
        ],
        &[
            slice(
                "np-1",
                "np",
                &json!([{"name": "http", "port": 8080}]),
                &endpoints,
            ),
            slice(
                "local-1",
                "local",
                &json!([{"name": "http", "port": 8080}]),
                &endpoints,
            ),
        ],
    );
    let got = desired(&v, &NODE);
    assert_eq!(
        names(&got),
        [
            "default/np:http 10.96.0.40:80/TCP",
            "default/local:http 10.96.0.41:80/TCP",
            "default/np:http 10.99.1.11:30080/TCP",
            "default/local:http 10.99.1.11:30081/TCP",
            "default/np:http 192.0.2.7:80/TCP",
        ]
    );
    let both = [addr("10.244.1.1:8080"), addr("10.244.2.1:8080")];
    let flags: Vec<(bool, bool)> = got.iter().map(|s| (s.external, s.local_only)).collect();
    assert_eq!(
        flags,
        [
            (false, false),
            (false, false),
            (true, false),
            (true, true),
            (true, false)
        ]
    );
    // The ClusterIP of a Local service keeps every endpoint; its NodePort only n1's.
    assert_eq!(got[1].backends, both);
    assert_eq!(got[2].backends, both);
    assert_eq!(got[3].backends, [addr("10.244.1.1:8080")]);
    assert_eq!(got[4].backends, both);
}

#[test]
fn the_cluster_dns_address_points_at_the_nodes_dns_server_once_bound() {
    let v = view(
        &[Value::clone(
            &json!({"metadata": {"namespace": "kube-system", "name": "kube-dns"},
            "spec": {"clusterIP": "10.96.0.10", "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}}),
        )],
        &[],
    );
    let before = desired(&v, &NODE);
    assert!(before.iter().all(|s| s.backends.is_empty()), "{before:?}");
    let dns = addr("10.99.1.11:53");
    let after = desired(
        &v,
        &NodeFacts {
            dns_addr: Some(dns),
            ..NODE
        },
    );
    assert_eq!(
        names(&after),
        [
            "kube-system/kube-dns:dns-tcp 10.96.0.10:53/TCP",
            "kube-system/kube-dns:dns 10.96.0.10:53/UDP",
        ]
    );
    assert!(after.iter().all(|s| s.backends == [dns]), "{after:?}");
    // Without a kube-dns Service at all, the redirect still exists.
    let alone = desired(
        &View::default(),
        &NodeFacts {
            dns_addr: Some(dns),
            ..NODE
        },
    );
    assert_eq!(alone.len(), 2);
}
