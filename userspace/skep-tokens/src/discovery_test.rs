use super::*;
use crate::key::SigningKey;

#[test]
fn documents_have_upstream_shapes() {
    let key = SigningKey::generate().expect("key");
    let d = Discovery::new(
        "https://kubernetes.default.svc",
        "",
        "10.0.0.1:6443",
        std::slice::from_ref(key.public_key()),
    )
    .expect("discovery");
    assert_eq!(
        d.config_json,
        r#"{"issuer":"https://kubernetes.default.svc","jwks_uri":"https://10.0.0.1:6443/openid/v1/jwks","response_types_supported":["id_token"],"subject_types_supported":["public"],"id_token_signing_alg_values_supported":["ES256"]}"#
    );
    let jwks: serde_json::Value = serde_json::from_str(&d.keyset_json).expect("json");
    let jwk = &jwks["keys"][0];
    assert_eq!(jwk["use"], "sig");
    assert_eq!(jwk["kty"], "EC");
    assert_eq!(jwk["crv"], "P-256");
    assert_eq!(jwk["alg"], "ES256");
    assert_eq!(jwk["kid"], key.key_id());
    // Field order is go-jose's.
    let order: Vec<usize> = [
        "\"use\"", "\"kty\"", "\"kid\"", "\"crv\"", "\"alg\"", "\"x\"", "\"y\"",
    ]
    .iter()
    .map(|f| d.keyset_json.find(f).expect("field present"))
    .collect();
    assert!(order.is_sorted(), "{}", d.keyset_json);
    // x and y are the point's coordinates.
    let point = key.public_key().spki_der()[26..].to_vec();
    let x = URL_SAFE_NO_PAD
        .decode(jwk["x"].as_str().expect("x"))
        .expect("b64");
    let y = URL_SAFE_NO_PAD
        .decode(jwk["y"].as_str().expect("y"))
        .expect("b64");
    assert_eq!([&[4][..], &x, &y].concat(), point);
}

#[test]
fn issuer_and_jwks_uri_rules() {
    let key = SigningKey::generate().expect("key");
    let keys = std::slice::from_ref(key.public_key());
    let err = |iss: &str, jwks: &str| {
        Discovery::new(iss, jwks, "h", keys)
            .expect_err("refused")
            .to_string()
    };
    assert_eq!(err("", ""), "empty issuer URL");
    assert_eq!(
        err("http://x", ""),
        "issuer URL must use https scheme, got: http://x"
    );
    assert_eq!(
        err("https://x?a=b", ""),
        "issuer URL may not include a query, got: https://x?a=b"
    );
    assert_eq!(
        err("https://x", "http://y/jwks"),
        "jwksURI requires https scheme, parsed as: http://y/jwks"
    );
    let d = Discovery::new("https://x", "https://y/keys", "", keys).expect("ok");
    assert!(d.config_json.contains(r#""jwks_uri":"https://y/keys""#));
    assert_eq!(
        Discovery::new("https://x", "", "h", &[])
            .expect_err("no keys")
            .to_string(),
        "no keys provided for validating keyset"
    );
}
