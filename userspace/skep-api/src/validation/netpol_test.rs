use serde_json::{Value, json};

use super::*;
use crate::field::FieldErrorType;
use crate::kinds;
use crate::validation::cidr::CIDR_DETAIL;
use crate::validation::{validate_create, validate_update};

fn errors(spec: &Value) -> Vec<String> {
    validate_network_policy(&json!({ "spec": spec }))
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn ingress_port(port: &Value) -> Value {
    json!({"podSelector": {}, "ingress": [{"ports": [port]}]})
}

fn ingress_peer(peer: &Value) -> Value {
    json!({"podSelector": {}, "ingress": [{"from": [peer]}]})
}

fn block(cidr: &str, except: &[&str]) -> Value {
    ingress_peer(&json!({"ipBlock": {"cidr": cidr, "except": except}}))
}

/// Each spec gives exactly the errors kube-apiserver reports, in its order.
fn check(cases: Vec<(Value, Vec<String>)>) {
    for (spec, want) in cases {
        assert_eq!(errors(&spec), want, "spec: {spec}");
    }
}

/// Ports: protocol, number, name, and `endPort` rules.
#[test]
fn invalid_ports() {
    let p = "spec.ingress[0].ports[0]";
    let cases: Vec<(Value, Vec<String>)> = vec![
        (
            ingress_port(&json!({"protocol": "ICMP", "port": 80})),
            vec![format!(
                "{p}.protocol: Unsupported value: \"ICMP\": supported values: \"TCP\", \"UDP\", \"SCTP\""
            )],
        ),
        (
            ingress_port(&json!({"port": 0})),
            vec![format!(
                "{p}.port: Invalid value: 0: must be between 1 and 65535, inclusive"
            )],
        ),
        (
            ingress_port(&json!({"port": "web_1"})),
            vec![format!(
                "{p}.port: Invalid value: \"web_1\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"
            )],
        ),
        (
            ingress_port(&json!({"port": "a-very-long-port-name"})),
            vec![format!(
                "{p}.port: Invalid value: \"a-very-long-port-name\": must be no more than 15 characters"
            )],
        ),
        (
            ingress_port(&json!({"port": "8080"})),
            vec![format!(
                "{p}.port: Invalid value: \"8080\": must contain at least one letter (a-z)"
            )],
        ),
        (
            ingress_port(&json!({"port": ""})),
            vec![
                format!(
                    "{p}.port: Invalid value: \"\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"
                ),
                format!("{p}.port: Invalid value: \"\": must contain at least one letter (a-z)"),
            ],
        ),
        (
            ingress_port(&json!({"port": "http", "endPort": 90})),
            vec![format!(
                "{p}.endPort: Invalid value: 90: may not be specified when `port` is non-numeric"
            )],
        ),
        (
            ingress_port(&json!({"protocol": "TCP", "endPort": 90})),
            vec![format!(
                "{p}.endPort: Invalid value: 90: may not be specified when `port` is not specified"
            )],
        ),
        (
            ingress_port(&json!({"port": 80, "endPort": 79})),
            vec![format!(
                "{p}.endPort: Invalid value: 79: must be greater than or equal to `port`"
            )],
        ),
        (
            ingress_port(&json!({"port": 80, "endPort": 70000})),
            vec![format!(
                "{p}.endPort: Invalid value: 70000: must be between 1 and 65535, inclusive"
            )],
        ),
        (
            ingress_port(&json!({"port": 80, "endPort": 0})),
            vec![
                format!("{p}.endPort: Invalid value: 0: must be greater than or equal to `port`"),
                format!("{p}.endPort: Invalid value: 0: must be between 1 and 65535, inclusive"),
            ],
        ),
    ];
    check(cases);
}

/// Peers: exactly one kind, selectors checked.
#[test]
fn invalid_peers() {
    let f = "spec.ingress[0].from[0]";
    let cases: Vec<(Value, Vec<String>)> = vec![
        (
            ingress_peer(&json!({})),
            vec![format!("{f}: Required value: must specify a peer")],
        ),
        (
            ingress_peer(&json!({"podSelector": null, "ipBlock": null})),
            vec![format!("{f}: Required value: must specify a peer")],
        ),
        (
            ingress_peer(&json!({"podSelector": {}, "ipBlock": {"cidr": "10.0.0.0/8"}})),
            vec![format!(
                "{f}: Forbidden: may not specify both ipBlock and another peer"
            )],
        ),
        (
            ingress_peer(
                &json!({"namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "Foo"}]}}),
            ),
            vec![format!(
                "{f}.namespaceSelector.matchExpressions[0].operator: Invalid value: \"Foo\": not a valid selector operator"
            )],
        ),
    ];
    check(cases);
}

/// ipBlocks: `cidr` required and valid, each `except` a valid strict subset (IPv4 and IPv6).
#[test]
fn invalid_ip_blocks() {
    let b = "spec.ingress[0].from[0].ipBlock";
    let cidr_detail = CIDR_DETAIL;
    let cases: Vec<(Value, Vec<String>)> = vec![
        (
            ingress_peer(&json!({"ipBlock": {"except": ["10.0.0.0/8"]}})),
            vec![format!("{b}.cidr: Required value")],
        ),
        (
            block("10.0.0.0/33", &[]),
            vec![format!(
                "{b}.cidr: Invalid value: \"10.0.0.0/33\": {cidr_detail}"
            )],
        ),
        (
            block("10.0.0.0", &["10.1.0.0/16"]),
            vec![format!(
                "{b}.cidr: Invalid value: \"10.0.0.0\": {cidr_detail}"
            )],
        ),
        (
            block("2001:db8::/129", &[]),
            vec![format!(
                "{b}.cidr: Invalid value: \"2001:db8::/129\": {cidr_detail}"
            )],
        ),
        (
            block(
                "10.0.0.0/8",
                &[
                    "11.0.0.0/16",
                    "10.0.0.0/8",
                    "10.1.0.0/16",
                    "bogus",
                    "2001:db8::/64",
                    "10.0.0.0/7",
                ],
            ),
            vec![
                format!(
                    "{b}.except[0]: Invalid value: \"11.0.0.0/16\": must be a strict subset of `cidr`"
                ),
                format!(
                    "{b}.except[1]: Invalid value: \"10.0.0.0/8\": must be a strict subset of `cidr`"
                ),
                format!("{b}.except[3]: Invalid value: \"bogus\": {cidr_detail}"),
                format!(
                    "{b}.except[4]: Invalid value: \"2001:db8::/64\": must be a strict subset of `cidr`"
                ),
                format!(
                    "{b}.except[5]: Invalid value: \"10.0.0.0/7\": must be a strict subset of `cidr`"
                ),
            ],
        ),
        (
            block(
                "2001:db8::/32",
                &["2001:db8:1::/48", "2001:db9::/48", "10.0.0.0/8"],
            ),
            vec![
                format!(
                    "{b}.except[1]: Invalid value: \"2001:db9::/48\": must be a strict subset of `cidr`"
                ),
                format!(
                    "{b}.except[2]: Invalid value: \"10.0.0.0/8\": must be a strict subset of `cidr`"
                ),
            ],
        ),
    ];
    check(cases);
}

/// Policy types and the pod selector.
#[test]
fn invalid_policy_types_and_pod_selector() {
    let cases: Vec<(Value, Vec<String>)> = vec![
        (
            json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress", "Sideways"]}),
            vec![
                "spec.policyTypes: Invalid value: []networking.PolicyType{\"Ingress\", \"Egress\", \"Sideways\"}: may not specify more than two policyTypes".to_owned(),
            ],
        ),
        (
            json!({"podSelector": {}, "policyTypes": ["Ingress", "Sideways"]}),
            vec![
                "spec.policyTypes[1]: Unsupported value: \"Sideways\": supported values: \"Ingress\", \"Egress\"".to_owned(),
            ],
        ),
        (
            json!({"podSelector": {"matchLabels": {"bad key": "x"}}}),
            vec![
                "spec.podSelector.matchLabels: Invalid value: \"bad key\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".to_owned(),
            ],
        ),
    ];
    check(cases);
}

/// Errors come in upstream's order: pod selector, ingress rules (ports
/// before peers), egress rules, policy types.
#[test]
fn errors_in_upstream_order() {
    let spec = json!({
        "podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]},
        "policyTypes": ["Sideways"],
        "egress": [{"to": [{}], "ports": [{"port": 0}]}],
        "ingress": [{"from": [{}], "ports": [{"protocol": "ICMP"}]}],
    });
    let paths: Vec<String> = validate_network_policy(&json!({ "spec": spec }))
        .iter()
        .map(|e| e.field.to_string())
        .collect();
    assert_eq!(
        paths,
        [
            "spec.podSelector.matchExpressions[0].values",
            "spec.ingress[0].ports[0].protocol",
            "spec.ingress[0].from[0]",
            "spec.egress[0].ports[0].port",
            "spec.egress[0].to[0]",
            "spec.policyTypes[0]",
        ]
    );
}

/// The error types behind the messages (what `details.causes[].reason` carries).
#[test]
fn error_types_and_causes() {
    let kinds = |spec: &Value| -> Vec<FieldErrorType> {
        validate_network_policy(&json!({ "spec": spec }))
            .iter()
            .map(|e| e.kind)
            .collect()
    };
    assert_eq!(kinds(&ingress_peer(&json!({}))), [FieldErrorType::Required]);
    assert_eq!(
        kinds(&ingress_peer(
            &json!({"namespaceSelector": {}, "ipBlock": {"cidr": "10.0.0.0/8"}})
        )),
        [FieldErrorType::Forbidden]
    );
    assert_eq!(
        kinds(&block("10.0.0.0/8", &["10.0.0.0/8"])),
        [FieldErrorType::Invalid]
    );
    assert_eq!(
        kinds(&ingress_port(&json!({"protocol": "ICMP"}))),
        [FieldErrorType::NotSupported]
    );
    let errs = validate_network_policy(&json!({"spec": block("10.0.0.0/8", &["11.0.0.0/8"])}));
    let cause = errs[0].to_cause();
    assert_eq!(cause.reason, "FieldValueInvalid");
    assert_eq!(cause.field, "spec.ingress[0].from[0].ipBlock.except[0]");
    assert_eq!(
        cause.message,
        "Invalid value: \"11.0.0.0/8\": must be a strict subset of `cidr`"
    );
}

/// Edge cases Kubernetes accepts.
#[test]
fn valid_edge_cases_accepted() {
    let valid = [
        block("10.0.0.0/8", &[]),
        ingress_peer(&json!({"ipBlock": {"cidr": "10.0.0.0/8"}})),
        block("0.0.0.0/0", &["10.0.0.0/8", "0.0.0.0/1"]),
        block("::/0", &["2001:db8::/32"]),
        block("2001:db8::/32", &["2001:db8::/33", "2001:db8::1/128"]),
        block("10.0.0.1/24", &["10.0.0.128/25"]),
        block("010.000.0.0/08", &["10.1.0.0/016"]),
        block("10.0.0.0/31", &["10.0.0.1/32"]),
        ingress_port(&json!({"port": 80, "endPort": 80})),
        ingress_port(&json!({"protocol": "TCP", "port": 1, "endPort": 65535})),
        ingress_port(&json!({"protocol": "UDP", "port": "http"})),
        ingress_port(&json!({"protocol": "SCTP"})),
        ingress_port(&json!({"port": "dns-tcp"})),
        ingress_peer(&json!({"podSelector": {}, "namespaceSelector": {}})),
        ingress_peer(
            &json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "x"}}}),
        ),
        json!({"podSelector": {}, "ingress": [{}], "egress": [{}]}),
        json!({"podSelector": {}, "ingress": [{"from": [], "ports": []}]}),
        json!({"podSelector": {}, "policyTypes": ["Egress", "Ingress"]}),
        json!({"podSelector": {}, "policyTypes": []}),
        json!({"podSelector": {}}),
    ];
    for spec in valid {
        assert_eq!(errors(&spec), Vec::<String>::new(), "spec: {spec}");
    }
}

/// Create and update both run the spec checks, after the metadata ones.
#[test]
fn create_and_update_share_the_spec_checks() {
    let info = &kinds::NETWORK_POLICY;
    let meta = json!({"name": "np", "namespace": "x", "resourceVersion": "1", "uid": "u"});
    let good = json!({"metadata": meta, "spec": block("10.0.0.0/8", &["10.1.0.0/16"])});
    let bad = json!({"metadata": meta, "spec": block("10.0.0.0/8", &["11.0.0.0/16"])});
    let want = vec![
        "spec.ingress[0].from[0].ipBlock.except[0]: Invalid value: \"11.0.0.0/16\": must be a strict subset of `cidr`".to_owned(),
    ];
    let strings =
        |errs: Vec<FieldError>| -> Vec<String> { errs.iter().map(ToString::to_string).collect() };
    assert!(validate_create(info, &good).is_empty());
    assert_eq!(strings(validate_create(info, &bad)), want);
    assert!(validate_update(info, &good, &good).is_empty());
    assert_eq!(strings(validate_update(info, &bad, &good)), want);
    let unnamed = json!({"metadata": {"namespace": "x"}, "spec": ingress_peer(&json!({}))});
    assert_eq!(
        strings(validate_create(info, &unnamed)),
        [
            "metadata.name: Required value: name or generateName is required",
            "spec.ingress[0].from[0]: Required value: must specify a peer",
        ]
    );
}
