use std::collections::BTreeMap;

use super::*;
use crate::claims::{BoundObject, ClaimsRequest, ObjectRef};
use crate::jwt::TokenSigner;
use crate::key::SigningKey;

const NOW: i64 = 1_514_764_800;
const ISS: &str = "https://kubernetes.default.svc";

#[derive(Default)]
struct Objects {
    sas: BTreeMap<String, ObjectState>,
    pods: BTreeMap<String, ObjectState>,
    secrets: BTreeMap<String, ObjectState>,
    nodes: BTreeMap<String, ObjectState>,
    legacy: BTreeMap<String, LegacySecret>,
}

impl BoundObjects for Objects {
    fn service_account(&self, _: &str, name: &str) -> Option<ObjectState> {
        self.sas.get(name).cloned()
    }
    fn pod(&self, _: &str, name: &str) -> Option<ObjectState> {
        self.pods.get(name).cloned()
    }
    fn secret(&self, _: &str, name: &str) -> Option<ObjectState> {
        self.secrets.get(name).cloned()
    }
    fn node(&self, name: &str) -> Option<ObjectState> {
        self.nodes.get(name).cloned()
    }
    fn legacy_secret(&self, _: &str, name: &str) -> Option<LegacySecret> {
        self.legacy.get(name).cloned()
    }
}

fn live(uid: &str) -> ObjectState {
    ObjectState {
        uid: uid.to_owned(),
        deletion_timestamp: None,
    }
}

fn objects() -> Objects {
    let mut o = Objects::default();
    o.sas.insert("saname".into(), live("sauid"));
    o.pods.insert("podname".into(), live("poduid"));
    o.secrets.insert("secretname".into(), live("secretuid"));
    o.nodes.insert("nodename".into(), live("nodeuid"));
    o
}

fn request(bound: Option<BoundObject>) -> ClaimsRequest {
    ClaimsRequest {
        namespace: "ns".into(),
        service_account: ObjectRef::new("saname", "sauid"),
        bound,
        audiences: vec!["api".into()],
        expiration_seconds: 3600,
        warn_after_seconds: 0,
        now: NOW,
        jti: "the-jti".into(),
    }
}

fn pod() -> BoundObject {
    BoundObject::Pod {
        pod: ObjectRef::new("podname", "poduid"),
        node: Some(ObjectRef::new("nodename", "nodeuid")),
    }
}

fn setup() -> (TokenSigner, Validator) {
    let key = SigningKey::generate().expect("key");
    let validator = Validator::new(
        vec![ISS.into()],
        vec![key.public_key().clone()],
        vec!["api".into()],
    );
    (TokenSigner::new(ISS, key), validator)
}

fn sign(signer: &TokenSigner, req: &ClaimsRequest) -> String {
    signer.sign(&Claims::new(req)).expect("sign")
}

fn auth(
    v: &Validator,
    token: &str,
    now: i64,
    o: &Objects,
) -> Result<Option<Authenticated>, TokenError> {
    v.authenticate(token, None, now, o)
}

fn err(v: &Validator, token: &str, now: i64, o: &Objects) -> String {
    auth(v, token, now, o).expect_err("refused").to_string()
}

#[test]
fn round_trip_gives_upstream_user() {
    let (signer, v) = setup();
    let token = sign(&signer, &request(Some(pod())));
    let got = auth(&v, &token, NOW + 10, &objects())
        .expect("ok")
        .expect("ours");
    assert_eq!(got.user.name, "system:serviceaccount:ns:saname");
    assert_eq!(got.user.uid, "sauid");
    assert_eq!(
        got.user.groups,
        ["system:serviceaccounts", "system:serviceaccounts:ns"]
    );
    let extra: Vec<(&str, &str)> = got
        .user
        .extra
        .iter()
        .map(|(k, v)| (k.as_str(), v[0].as_str()))
        .collect();
    assert_eq!(
        extra,
        [
            ("authentication.kubernetes.io/credential-id", "JTI=the-jti"),
            ("authentication.kubernetes.io/node-name", "nodename"),
            ("authentication.kubernetes.io/node-uid", "nodeuid"),
            ("authentication.kubernetes.io/pod-name", "podname"),
            ("authentication.kubernetes.io/pod-uid", "poduid"),
        ]
    );
    assert_eq!(got.audiences, ["api"]);
    assert_eq!(got.stale, None);
    // Header is {"alg","kid"} only.
    let header = token.split('.').next().expect("header");
    let header = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header)
            .expect("b64"),
    )
    .expect("utf8");
    assert_eq!(
        header,
        format!(r#"{{"alg":"ES256","kid":"{}"}}"#, signer.key().key_id())
    );
}

#[test]
fn tampering_is_refused() {
    let (signer, v) = setup();
    let token = sign(&signer, &request(None));
    let parts: Vec<&str> = token.split('.').collect();
    // The genuine token, checked then remembered: a second use and the
    // forgeries below are judged on their own bytes.
    for _ in 0..2 {
        assert!(matches!(auth(&v, &token, NOW, &objects()), Ok(Some(_))));
    }
    // Another payload under the same signature.
    let other = sign(
        &signer,
        &ClaimsRequest {
            expiration_seconds: 7200,
            ..request(None)
        },
    );
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        other.split('.').nth(1).expect("payload"),
        parts[2]
    );
    assert_eq!(
        err(&v, &forged, NOW, &objects()),
        "go-jose/go-jose: error in cryptographic primitive"
    );
    // A flipped signature byte.
    let mut sig =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, parts[2])
            .expect("b64");
    sig[5] ^= 1;
    let bad = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig)
    );
    assert_eq!(
        err(&v, &bad, NOW, &objects()),
        "go-jose/go-jose: error in cryptographic primitive"
    );
    // Not a JWS, or someone else's issuer: not ours, no error.
    assert_eq!(auth(&v, "not-a-token", NOW, &objects()), Ok(None));
    assert_eq!(
        auth(&v, &format!("{}.{}", parts[0], parts[1]), NOW, &objects()),
        Ok(None)
    );
    let foreign = TokenSigner::new("https://elsewhere", SigningKey::generate().expect("key"));
    assert_eq!(
        auth(&v, &sign(&foreign, &request(None)), NOW, &objects()),
        Ok(None)
    );
}

#[test]
fn unknown_kid_and_other_keys() {
    let (_, v) = setup();
    // Same issuer, a key the validator does not know.
    let stranger = TokenSigner::new(ISS, SigningKey::generate().expect("key"));
    let token = sign(&stranger, &request(None));
    assert_eq!(
        err(&v, &token, NOW, &objects()),
        "invalid signature, no keys found"
    );
    // A validator knowing both keys accepts it (key rotation).
    let both = Validator::new(
        vec![ISS.into()],
        [v.keys(), std::slice::from_ref(stranger.key().public_key())].concat(),
        vec!["api".into()],
    );
    assert!(auth(&both, &token, NOW, &objects()).expect("ok").is_some());
}

#[test]
fn audiences_and_issuers() {
    let (signer, v) = setup();
    let token = sign(
        &signer,
        &ClaimsRequest {
            audiences: vec!["vault".into(), "other".into()],
            ..request(None)
        },
    );
    assert_eq!(
        err(&v, &token, NOW, &objects()),
        r#"token audiences ["vault" "other"] is invalid for the target audiences ["api"]"#
    );
    let target = ["vault".to_owned()];
    let ok = v
        .authenticate(&token, Some(&target), NOW, &objects())
        .expect("ok")
        .expect("ours");
    assert_eq!(ok.audiences, ["vault"]);
    // Several issuers are accepted (issuer migration).
    let multi = Validator::new(
        vec!["https://old".into(), ISS.into()],
        v.keys().to_vec(),
        vec!["api".into()],
    );
    assert!(
        auth(&multi, &sign(&signer, &request(None)), NOW, &objects())
            .expect("ok")
            .is_some()
    );
}

#[test]
fn times_with_leeway() {
    let (signer, v) = setup();
    let token = sign(&signer, &request(None)); // iat = nbf = NOW, exp = NOW + 3600
    let o = objects();
    assert!(auth(&v, &token, NOW + 3600 + 60, &o).is_ok());
    assert_eq!(
        err(&v, &token, NOW + 3600 + 61, &o),
        "service account token has expired"
    );
    assert!(auth(&v, &token, NOW - 60, &o).is_ok());
    assert_eq!(
        err(&v, &token, NOW - 61, &o),
        "service account token is not valid yet"
    );
    let mut claims = Claims::new(&request(None));
    claims.nbf = None;
    claims.iat = Some(NOW + 100);
    let token = signer.sign(&claims).expect("sign");
    assert_eq!(
        err(&v, &token, NOW, &o),
        "service account token is issued in the future"
    );
}

type Case = (Option<BoundObject>, fn(&mut Objects), &'static str);

#[test]
fn bound_object_checks_use_upstream_messages() {
    let (signer, v) = setup();
    let secret = Some(BoundObject::Secret(ObjectRef::new(
        "secretname",
        "secretuid",
    )));
    let node = Some(BoundObject::Node(ObjectRef::new("nodename", "nodeuid")));
    let cases: Vec<Case> = vec![
        (
            None,
            |o| {
                o.sas.clear();
            },
            r#"serviceaccounts "saname" not found"#,
        ),
        (
            None,
            |o| {
                o.sas.insert("saname".into(), live("sauid2"));
            },
            "service account UID (sauid2) does not match claim (sauid)",
        ),
        (
            secret.clone(),
            |o| {
                o.secrets.clear();
            },
            "service account token has been invalidated",
        ),
        (
            secret,
            |o| {
                o.secrets.insert("secretname".into(), live("s2"));
            },
            "secret UID (s2) does not match service account secret ref claim (secretuid)",
        ),
        (
            Some(pod()),
            |o| {
                o.pods.clear();
            },
            "service account token has been invalidated",
        ),
        (
            Some(pod()),
            |o| {
                o.pods.insert("podname".into(), live("p2"));
            },
            "pod UID (p2) does not match service account pod ref claim (poduid)",
        ),
        (
            node.clone(),
            |o| {
                o.nodes.clear();
            },
            "service account token has been invalidated",
        ),
        (
            node,
            |o| {
                o.nodes.insert("nodename".into(), live("n2"));
            },
            "node UID (n2) does not match service account node ref claim (nodeuid)",
        ),
    ];
    for (bound, change, want) in cases {
        let token = sign(&signer, &request(bound));
        let mut o = objects();
        change(&mut o);
        assert_eq!(err(&v, &token, NOW, &o), want);
    }
    // A pod-bound token's node is not looked up.
    let token = sign(&signer, &request(Some(pod())));
    let mut o = objects();
    o.nodes.clear();
    assert!(auth(&v, &token, NOW, &o).is_ok());
}

#[test]
fn deletions_count_after_the_leeway() {
    // Upstream's deletion cases: now, now-1, now+1, now-60 pass; now-61 fails.
    let (signer, v) = setup();
    for (at, fails) in [
        (NOW, false),
        (NOW - 1, false),
        (NOW + 1, false),
        (NOW - 60, false),
        (NOW - 61, true),
    ] {
        let deleted = |uid: &str| ObjectState {
            uid: uid.into(),
            deletion_timestamp: Some(at),
        };
        let mut o = objects();
        o.sas.insert("saname".into(), deleted("sauid"));
        let r = auth(&v, &sign(&signer, &request(None)), NOW, &o);
        assert_eq!(r.is_err(), fails, "sa {at}");
        if fails {
            assert_eq!(
                r.expect_err("deleted").to_string(),
                "service account ns/saname has been deleted"
            );
        }
        let mut o = objects();
        o.pods.insert("podname".into(), deleted("poduid"));
        let r = auth(&v, &sign(&signer, &request(Some(pod()))), NOW, &o);
        assert_eq!(r.is_err(), fails, "pod {at}");
    }
}

#[test]
fn stale_tokens_are_reported_not_refused() {
    let (signer, v) = setup();
    let req = ClaimsRequest {
        expiration_seconds: crate::EXPIRATION_EXTENSION_SECONDS,
        warn_after_seconds: 3607,
        ..request(Some(pod()))
    };
    let token = sign(&signer, &req);
    let fresh = auth(&v, &token, NOW + 3607, &objects())
        .expect("ok")
        .expect("ours");
    assert_eq!(fresh.stale, None);
    let old = auth(&v, &token, NOW + 86_400, &objects())
        .expect("ok")
        .expect("ours");
    let stale = old.stale.expect("stale");
    assert_eq!(
        stale.annotation(),
        format!(
            "subject: system:serviceaccount:ns:saname, seconds after warning threshold: {}",
            86_400 - 3607
        )
    );
}

#[test]
fn legacy_tokens() {
    let (signer, v) = setup();
    let claims = LegacyClaims::new("ns", &ObjectRef::new("saname", "sauid"), "tok");
    let token = signer.sign_legacy(&claims).expect("sign");
    // Refused unless enabled: not ours.
    assert_eq!(auth(&v, &token, NOW, &objects()), Ok(None));
    let v = v.accept_legacy(true);
    assert_eq!(
        err(&v, &token, NOW, &objects()),
        "Token has been invalidated"
    );
    let mut o = objects();
    o.legacy.insert(
        "tok".into(),
        LegacySecret {
            token: token.clone().into_bytes(),
            deleting: false,
            invalid_since: None,
        },
    );
    let ok = auth(&v, &token, NOW + 10 * 365 * 86_400, &o)
        .expect("ok")
        .expect("ours");
    assert_eq!(ok.user.name, "system:serviceaccount:ns:saname");
    assert!(ok.user.extra.is_empty());
    assert_eq!(ok.audiences, ["api"]);
    o.legacy.insert(
        "tok".into(),
        LegacySecret {
            token: b"other".to_vec(),
            deleting: false,
            invalid_since: None,
        },
    );
    assert_eq!(
        err(&v, &token, NOW, &o),
        "Token does not match server's copy"
    );
    o.legacy.insert(
        "tok".into(),
        LegacySecret {
            token: token.clone().into_bytes(),
            deleting: false,
            invalid_since: Some("2024-01-01".into()),
        },
    );
    assert_eq!(
        err(&v, &token, NOW, &o),
        "the token in secret ns/tok for service account ns/saname has been marked invalid. Use tokens from the TokenRequest API or manually created secret-based tokens, or remove the 'kubernetes.io/legacy-token-invalid-since' label from the secret to temporarily allow use of this token"
    );
    o.sas.insert("saname".into(), live("other"));
    assert_eq!(
        err(&v, &token, NOW, &o),
        "ServiceAccount UID (other) does not match claim (sauid)"
    );
}
