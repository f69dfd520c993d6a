use serde_json::json;

use super::*;

fn service(ns: &str, name: &str, spec: &serde_json::Value) -> Service {
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name},
        "spec": spec,
    }))
    .expect("test service")
}

fn slice(
    ns: &str,
    service: &str,
    ports: &serde_json::Value,
    endpoints: &serde_json::Value,
) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {
            "namespace": ns,
            "name": format!("{service}-abcde"),
            "labels": {SERVICE_NAME_LABEL: service},
        },
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": endpoints,
    }))
    .expect("test slice")
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("test name")
}

/// The cluster the tests ask about.
fn cluster() -> Records {
    let services = [
        service(
            "default",
            "web",
            &json!({"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"], "ports": [
                {"name": "http", "port": 80, "protocol": "TCP"},
                {"port": 9000, "protocol": "TCP"},
            ]}),
        ),
        service(
            "other",
            "web",
            &json!({"clusterIP": "10.96.0.30", "ports": [{"port": 80}]}),
        ),
        service(
            "default",
            "db",
            &json!({"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}),
        ),
        service(
            "default",
            "ext",
            &json!({"type": "ExternalName", "externalName": "example.com"}),
        ),
        service(
            "default",
            "alias",
            &json!({"type": "ExternalName", "externalName": "web.default.svc.cluster.local"}),
        ),
    ];
    let slices = [
        slice(
            "default",
            "db",
            &json!([{"name": "pg", "port": 5432, "protocol": "TCP"}]),
            &json!([
                {"addresses": ["10.244.1.4"], "hostname": "db-0", "conditions": {"ready": true}},
                {"addresses": ["10.244.2.5"], "conditions": {"ready": true}},
                {"addresses": ["10.244.3.9"], "conditions": {"ready": false}},
            ]),
        ),
        // A slice of a service that does not exist makes no names.
        slice(
            "default",
            "gone",
            &json!([]),
            &json!([{"addresses": ["10.244.9.9"]}]),
        ),
    ];
    Records::build("cluster.local", &services, &slices).expect("records")
}

fn answers(records: &Records, q: &str, qtype: RecordType) -> Vec<RData> {
    match records.lookup(&name(q), qtype) {
        Lookup::Answer { answers, .. } => answers.into_iter().map(|r| r.data).collect(),
        other => panic!("{q} {qtype}: expected an answer, got {other:?}"),
    }
}

fn a(ip: &str) -> RData {
    RData::A(A(ip.parse().expect("test ip")))
}

#[test]
fn cluster_ip_service_has_a_record_and_srv_for_named_ports() {
    let r = cluster();
    assert_eq!(
        answers(&r, "web.default.svc.cluster.local.", RecordType::A),
        vec![a("10.96.0.20")]
    );
    assert_eq!(
        answers(&r, "web.other.svc.cluster.local.", RecordType::A),
        vec![a("10.96.0.30")]
    );
    let Lookup::Answer {
        answers,
        additionals,
    } = r.lookup(
        &name("_http._tcp.web.default.svc.cluster.local."),
        RecordType::SRV,
    )
    else {
        panic!("no SRV answer");
    };
    assert_eq!(
        answers.iter().map(|r| r.data.clone()).collect::<Vec<_>>(),
        vec![RData::SRV(SRV::new(
            0,
            100,
            80,
            name("web.default.svc.cluster.local.")
        ))]
    );
    assert_eq!(answers[0].ttl, TTL);
    assert_eq!(
        additionals.into_iter().map(|r| r.data).collect::<Vec<_>>(),
        vec![a("10.96.0.20")]
    );
    // Unnamed ports have no SRV; the wrong protocol is no name at all.
    assert_eq!(
        r.lookup(
            &name("_9000._tcp.web.default.svc.cluster.local."),
            RecordType::SRV
        ),
        Lookup::NxDomain
    );
    assert_eq!(
        r.lookup(
            &name("_http._udp.web.default.svc.cluster.local."),
            RecordType::SRV
        ),
        Lookup::NxDomain
    );
}

#[test]
fn headless_service_answers_ready_endpoints_and_per_endpoint_names() {
    let r = cluster();
    assert_eq!(
        answers(&r, "db.default.svc.cluster.local.", RecordType::A),
        vec![a("10.244.1.4"), a("10.244.2.5")]
    );
    assert_eq!(
        answers(&r, "db-0.db.default.svc.cluster.local.", RecordType::A),
        vec![a("10.244.1.4")]
    );
    assert_eq!(
        answers(
            &r,
            "10-244-2-5.db.default.svc.cluster.local.",
            RecordType::A
        ),
        vec![a("10.244.2.5")]
    );
    // The endpoint that is not ready has no name.
    assert_eq!(
        r.lookup(
            &name("10-244-3-9.db.default.svc.cluster.local."),
            RecordType::A
        ),
        Lookup::NxDomain
    );
    let Lookup::Answer {
        answers,
        additionals,
    } = r.lookup(
        &name("_pg._tcp.db.default.svc.cluster.local."),
        RecordType::SRV,
    )
    else {
        panic!("no SRV answer");
    };
    assert_eq!(
        answers.into_iter().map(|r| r.data).collect::<Vec<_>>(),
        vec![
            RData::SRV(SRV::new(
                0,
                50,
                5432,
                name("db-0.db.default.svc.cluster.local.")
            )),
            RData::SRV(SRV::new(
                0,
                50,
                5432,
                name("10-244-2-5.db.default.svc.cluster.local.")
            )),
        ]
    );
    assert_eq!(additionals.len(), 2);
}

#[test]
fn publish_not_ready_addresses_includes_every_endpoint() {
    let svc = service(
        "default",
        "db",
        &json!({"clusterIP": "None", "publishNotReadyAddresses": true}),
    );
    let sl = slice(
        "default",
        "db",
        &json!([]),
        &json!([{"addresses": ["10.244.3.9"], "conditions": {"ready": false}}]),
    );
    let r = Records::build("cluster.local", [&svc], [&sl]).expect("records");
    assert_eq!(
        answers(&r, "db.default.svc.cluster.local.", RecordType::A),
        vec![a("10.244.3.9")]
    );
}

#[test]
fn external_name_is_a_cname_chased_inside_the_cluster() {
    let r = cluster();
    assert_eq!(
        answers(&r, "ext.default.svc.cluster.local.", RecordType::A),
        vec![RData::CNAME(CNAME(name("example.com.")))]
    );
    assert_eq!(
        answers(&r, "alias.default.svc.cluster.local.", RecordType::A),
        vec![
            RData::CNAME(CNAME(name("web.default.svc.cluster.local."))),
            a("10.96.0.20")
        ]
    );
}

#[test]
fn pod_names_answer_their_own_address() {
    let r = cluster();
    assert_eq!(
        answers(&r, "10-244-1-7.default.pod.cluster.local.", RecordType::A),
        vec![a("10.244.1.7")]
    );
    assert!(
        answers(
            &r,
            "10-244-1-7.default.pod.cluster.local.",
            RecordType::AAAA
        )
        .is_empty()
    );
    assert!(answers(&r, "default.pod.cluster.local.", RecordType::A).is_empty());
    assert_eq!(
        r.lookup(&name("10-244-1.default.pod.cluster.local."), RecordType::A),
        Lookup::NxDomain
    );
    assert_eq!(
        r.lookup(
            &name("x.10-244-1-7.default.pod.cluster.local."),
            RecordType::A
        ),
        Lookup::NxDomain
    );
}

#[test]
fn nxdomain_nodata_and_forward_are_told_apart() {
    let r = cluster();
    // Exists, but no record of that type: NODATA.
    assert!(answers(&r, "web.default.svc.cluster.local.", RecordType::AAAA).is_empty());
    assert!(answers(&r, "default.svc.cluster.local.", RecordType::A).is_empty());
    assert!(answers(&r, "svc.cluster.local.", RecordType::A).is_empty());
    assert!(answers(&r, "_tcp.web.default.svc.cluster.local.", RecordType::A).is_empty());
    assert!(matches!(
        answers(&r, "cluster.local.", RecordType::SOA).as_slice(),
        [RData::SOA(_)]
    ));
    // Inside the domain and absent: NXDOMAIN.
    assert_eq!(
        r.lookup(&name("nope.default.svc.cluster.local."), RecordType::A),
        Lookup::NxDomain
    );
    assert_eq!(
        r.lookup(&name("nothing.cluster.local."), RecordType::A),
        Lookup::NxDomain
    );
    assert_eq!(
        r.lookup(&name("gone.default.svc.cluster.local."), RecordType::A),
        Lookup::NxDomain
    );
    // Outside: forwarded.
    assert_eq!(
        r.lookup(&name("example.com."), RecordType::A),
        Lookup::Forward
    );
    assert_eq!(r.lookup(&name("local."), RecordType::A), Lookup::Forward);
}

#[test]
fn search_expansions_are_plain_names_that_do_not_exist() {
    // A pod resolving `web` with ndots:5 asks the expansions in turn; the
    // server answers each as the fully qualified name it is.
    let r = cluster();
    for q in [
        "web.default.svc.cluster.local.default.svc.cluster.local.",
        "web.default.svc.cluster.local.svc.cluster.local.",
        "web.default.svc.cluster.local.cluster.local.",
        "web.default.default.svc.cluster.local.",
    ] {
        assert_eq!(r.lookup(&name(q), RecordType::A), Lookup::NxDomain, "{q}");
    }
    assert_eq!(
        r.lookup(
            &name("web.default.svc.cluster.local.corp.example."),
            RecordType::A
        ),
        Lookup::Forward
    );
}

#[test]
fn names_are_case_insensitive() {
    let r = cluster();
    assert_eq!(
        answers(&r, "WEB.Default.SVC.cluster.LOCAL.", RecordType::A),
        vec![a("10.96.0.20")]
    );
    assert_eq!(
        answers(
            &r,
            "_HTTP._Tcp.web.default.svc.cluster.local.",
            RecordType::SRV
        )
        .len(),
        1
    );
    let upper = service("Default", "Web", &json!({"clusterIP": "10.96.0.40"}));
    let r = Records::build("Cluster.Local", [&upper], []).expect("records");
    assert_eq!(
        answers(&r, "web.default.svc.cluster.local.", RecordType::A),
        vec![a("10.96.0.40")]
    );
}

#[test]
fn reverse_names_point_at_services_and_headless_endpoints() {
    let r = cluster();
    assert_eq!(
        answers(&r, "20.0.96.10.in-addr.arpa.", RecordType::PTR),
        vec![RData::PTR(PTR(name("web.default.svc.cluster.local.")))]
    );
    assert_eq!(
        answers(&r, "4.1.244.10.in-addr.arpa.", RecordType::PTR),
        vec![RData::PTR(PTR(name("db-0.db.default.svc.cluster.local.")))]
    );
    assert_eq!(
        r.lookup(&name("1.1.1.1.in-addr.arpa."), RecordType::PTR),
        Lookup::Forward
    );
}

#[test]
fn other_cluster_domains_and_bad_domains() {
    let svc = service("default", "web", &json!({"clusterIP": "10.96.0.20"}));
    let r = Records::build("corp.internal", [&svc], []).expect("records");
    assert_eq!(
        answers(&r, "web.default.svc.corp.internal.", RecordType::A),
        vec![a("10.96.0.20")]
    );
    assert_eq!(
        r.lookup(&name("web.default.svc.cluster.local."), RecordType::A),
        Lookup::Forward
    );
    assert!(Records::build("bad..domain", [&svc], []).is_err());
}
