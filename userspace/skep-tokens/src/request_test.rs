use super::*;

fn settings() -> TokenSettings {
    TokenSettings {
        api_audiences: vec!["https://kubernetes.default.svc".into()],
        max_expiration_seconds: 0,
        extend_expiration: true,
    }
}

fn spec(exp: Option<i64>, kind: Option<&str>) -> TokenRequestSpec {
    TokenRequestSpec {
        audiences: Vec::new(),
        expiration_seconds: exp,
        bound_object_ref: kind.map(|k| BoundObjectRef {
            kind: k.into(),
            api_version: "v1".into(),
            name: "mypod".into(),
            uid: String::new(),
        }),
    }
}

fn fetched_pod(sa: &str) -> FetchedObject {
    FetchedObject::Pod {
        pod: ObjectRef::new("mypod", "poduid"),
        service_account_name: sa.into(),
        node: Some(ObjectRef::new("n1", "")),
    }
}

fn admit(
    spec: &TokenRequestSpec,
    fetched: Option<FetchedObject>,
    s: &TokenSettings,
) -> Result<Admitted, RequestError> {
    prepare(spec, s)?.admit("ns", ObjectRef::new("default", "sauid"), fetched, s, 1000)
}

#[test]
fn defaults_and_validation_messages() {
    let p = prepare(&spec(None, None), &settings()).expect("ok");
    assert_eq!(p.expiration_seconds, 3600);
    assert_eq!(p.audiences, ["https://kubernetes.default.svc"]);
    assert_eq!(
        prepare(&spec(Some(599), None), &settings())
            .expect_err("short")
            .to_string(),
        r#"TokenRequest.authentication.k8s.io "" is invalid: spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 10 minutes"#
    );
    assert!(prepare(&spec(Some(600), None), &settings()).is_ok());
    assert_eq!(
        prepare(&spec(Some((1 << 32) + 1), None), &settings())
            .expect_err("long")
            .to_string(),
        r#"TokenRequest.authentication.k8s.io "" is invalid: spec.expirationSeconds: Invalid value: 4294967297: may not specify a duration larger than 2^32 seconds"#
    );
    let mut deployment = spec(None, Some("Deployment"));
    if let Some(r) = deployment.bound_object_ref.as_mut() {
        "apps/v1".clone_into(&mut r.api_version);
    }
    assert_eq!(
        prepare(&deployment, &settings())
            .expect_err("kind")
            .to_string(),
        "cannot bind token to object of type apps/v1, Kind=Deployment"
    );
    assert_eq!(
        check_metadata("default", "ns", "other", "")
            .expect_err("name")
            .to_string(),
        r#"TokenRequest.authentication.k8s.io "default" is invalid: metadata.name: Invalid value: "other": must match the service account name if specified"#
    );
}

#[test]
fn binding_checks() {
    let s = settings();
    assert_eq!(
        admit(&spec(None, Some("Pod")), Some(fetched_pod("builder")), &s)
            .expect_err("sa")
            .to_string(),
        r#"cannot bind token for serviceaccount "default" to pod running with different serviceaccount name."#
    );
    let mut with_uid = spec(None, Some("Pod"));
    if let Some(r) = with_uid.bound_object_ref.as_mut() {
        "olduid".clone_into(&mut r.uid);
    }
    assert_eq!(
        admit(&with_uid, Some(fetched_pod("default")), &s)
            .expect_err("uid")
            .to_string(),
        r#"Operation cannot be fulfilled on Pod "mypod": the UID in the bound object reference (olduid) does not match the UID in record. The object might have been deleted and then recreated"#
    );
    let ok = admit(&spec(None, Some("Pod")), Some(fetched_pod("default")), &s).expect("ok");
    assert_eq!(
        ok.claims.bound,
        Some(BoundObject::Pod {
            pod: ObjectRef::new("mypod", "poduid"),
            node: Some(ObjectRef::new("n1", ""))
        })
    );
}

#[test]
fn kubelet_requests_are_extended() {
    let s = settings();
    let kubelet = spec(Some(WARN_ONLY_BOUND_TOKEN_EXPIRATION_SECONDS), Some("Pod"));
    let a = admit(&kubelet, Some(fetched_pod("default")), &s).expect("ok");
    assert_eq!(a.claims.expiration_seconds, EXPIRATION_EXTENSION_SECONDS);
    assert_eq!(a.claims.warn_after_seconds, 3607);
    assert_eq!(a.status_expiration_seconds, 3607);
    // Not when off, not for other lifetimes, not without a pod, not for
    // foreign audiences.
    let off = TokenSettings {
        extend_expiration: false,
        ..settings()
    };
    assert_eq!(
        admit(&kubelet, Some(fetched_pod("default")), &off)
            .expect("ok")
            .claims
            .expiration_seconds,
        3607
    );
    let hour = spec(Some(3600), Some("Pod"));
    assert_eq!(
        admit(&hour, Some(fetched_pod("default")), &s)
            .expect("ok")
            .claims
            .warn_after_seconds,
        0
    );
    let unbound = spec(Some(3607), None);
    assert_eq!(
        admit(&unbound, None, &s)
            .expect("ok")
            .claims
            .expiration_seconds,
        3607
    );
    let mut vault = kubelet.clone();
    vault.audiences = vec!["vault".into()];
    assert_eq!(
        admit(&vault, Some(fetched_pod("default")), &s)
            .expect("ok")
            .claims
            .expiration_seconds,
        3607
    );
}

#[test]
fn max_expiration_clamps_with_a_warning() {
    let s = TokenSettings {
        max_expiration_seconds: 7200,
        ..settings()
    };
    let a = admit(&spec(Some(86_400), None), None, &s).expect("ok");
    assert_eq!(a.claims.expiration_seconds, 7200);
    assert_eq!(a.status_expiration_seconds, 7200);
    assert_eq!(
        a.warnings,
        ["requested expiration of 86400 seconds shortened to 7200 seconds"]
    );
    assert!(s.validate().is_ok());
    assert_eq!(
        TokenSettings {
            max_expiration_seconds: 3599,
            ..settings()
        }
        .validate()
        .expect_err("low")
        .to_string(),
        "the service-account-max-token-expiration must be between 1 hour and 2^32 seconds"
    );
}
