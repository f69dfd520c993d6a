//! Upstream's `TestClaims` cases (`pkg/serviceaccount/claims_test.go`), as
//! the JSON go-jose writes: keys sorted, one audience as a string.

use super::*;

const NOW: i64 = 1_514_764_800;

fn request(bound: Option<BoundObject>, exp: i64, warnafter: i64, aud: &[&str]) -> ClaimsRequest {
    ClaimsRequest {
        namespace: "myns".to_owned(),
        service_account: ObjectRef::new("mysvcacct", "mysvcacct-uid"),
        bound,
        audiences: aud.iter().map(|&a| a.to_owned()).collect(),
        expiration_seconds: exp,
        warn_after_seconds: warnafter,
        now: NOW,
        jti: String::new(),
    }
}

fn pod() -> BoundObject {
    BoundObject::Pod {
        pod: ObjectRef::new("mypod", "mypod-uid"),
        node: None,
    }
}

fn json(request: &ClaimsRequest) -> String {
    serde_json::to_string(&Claims::new(request)).expect("claims serialize")
}

#[test]
fn upstream_claims_cases() {
    let cases = [
        // pod, empty audience
        (
            request(Some(pod()), 100, 0, &[]),
            r#"{"exp":1514764900,"iat":1514764800,"kubernetes.io":{"namespace":"myns","pod":{"name":"mypod","uid":"mypod-uid"},"serviceaccount":{"name":"mysvcacct","uid":"mysvcacct-uid"}},"nbf":1514764800,"sub":"system:serviceaccount:myns:mysvcacct"}"#,
        ),
        // secret, single member audience (a string)
        (
            request(
                Some(BoundObject::Secret(ObjectRef::new(
                    "mysecret",
                    "mysecret-uid",
                ))),
                100,
                0,
                &["1"],
            ),
            r#"{"aud":"1","exp":1514764900,"iat":1514764800,"kubernetes.io":{"namespace":"myns","secret":{"name":"mysecret","uid":"mysecret-uid"},"serviceaccount":{"name":"mysvcacct","uid":"mysvcacct-uid"}},"nbf":1514764800,"sub":"system:serviceaccount:myns:mysvcacct"}"#,
        ),
        // no binding, multi-member audience
        (
            request(None, 100, 0, &["1", "2"]),
            r#"{"aud":["1","2"],"exp":1514764900,"iat":1514764800,"kubernetes.io":{"namespace":"myns","serviceaccount":{"name":"mysvcacct","uid":"mysvcacct-uid"}},"nbf":1514764800,"sub":"system:serviceaccount:myns:mysvcacct"}"#,
        ),
        // warnafter
        (
            request(Some(pod()), 60 * 60 * 24, 60 * 60, &[]),
            r#"{"exp":1514851200,"iat":1514764800,"kubernetes.io":{"namespace":"myns","pod":{"name":"mypod","uid":"mypod-uid"},"serviceaccount":{"name":"mysvcacct","uid":"mysvcacct-uid"},"warnafter":1514768400},"nbf":1514764800,"sub":"system:serviceaccount:myns:mysvcacct"}"#,
        ),
    ];
    for (i, (req, want)) in cases.iter().enumerate() {
        assert_eq!(json(req), *want, "case {i}");
        let back: Claims = serde_json::from_str(want).expect("fixture decodes");
        assert_eq!(back, Claims::new(req), "case {i} round trip");
    }
}

#[test]
fn pod_binding_carries_its_node_and_jti() {
    let mut req = request(
        Some(BoundObject::Pod {
            pod: ObjectRef::new("mypod", "mypod-uid"),
            node: Some(ObjectRef::new("mynode", "mynode-uid")),
        }),
        100,
        0,
        &["api"],
    );
    req.jti = "jti-1".to_owned();
    assert_eq!(
        json(&req),
        r#"{"aud":"api","exp":1514764900,"iat":1514764800,"jti":"jti-1","kubernetes.io":{"namespace":"myns","node":{"name":"mynode","uid":"mynode-uid"},"pod":{"name":"mypod","uid":"mypod-uid"},"serviceaccount":{"name":"mysvcacct","uid":"mysvcacct-uid"}},"nbf":1514764800,"sub":"system:serviceaccount:myns:mysvcacct"}"#
    );
    let node_bound = request(
        Some(BoundObject::Node(ObjectRef::new("mynode", "mynode-uid"))),
        100,
        0,
        &[],
    );
    let claims = Claims::new(&node_bound);
    assert_eq!(
        claims.kubernetes.node,
        Some(ObjectRef::new("mynode", "mynode-uid"))
    );
    assert_eq!(claims.kubernetes.pod, None);
}

#[test]
fn legacy_claims_use_upstream_field_names() {
    let claims = LegacyClaims::new(
        "myns",
        &ObjectRef::new("mysvcacct", "mysvcacct-uid"),
        "mysecret",
    );
    assert_eq!(
        serde_json::to_string(&claims).expect("serialize"),
        r#"{"iss":"kubernetes/serviceaccount","kubernetes.io/serviceaccount/namespace":"myns","kubernetes.io/serviceaccount/secret.name":"mysecret","kubernetes.io/serviceaccount/service-account.name":"mysvcacct","kubernetes.io/serviceaccount/service-account.uid":"mysvcacct-uid","sub":"system:serviceaccount:myns:mysvcacct"}"#
    );
}

#[test]
fn numeric_dates_accept_floats() {
    let c: Claims = serde_json::from_str(r#"{"exp":1514764900.7,"aud":"x"}"#).expect("decodes");
    assert_eq!(
        (c.exp, c.aud.0),
        (Some(1_514_764_900), vec!["x".to_owned()])
    );
}
