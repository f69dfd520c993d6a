//! The issuer on a real store: TokenRequest, TokenReview, bound objects,
//! legacy tokens and the node's RequestToken rules.

use std::sync::Arc;

use serde_json::{Value, json};
use skep_api::delete::DeleteOptions;
use skep_api::{StatusReason, decode::Decoded, kinds, registry};
use skep_objects::{Objects, WriteOptions};
use skep_store::{Store, StoreConfig};
use skep_tokens::{LegacyClaims, ObjectRef, SigningKey, TokenSigner};

use super::*;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Fixture {
    objects: Objects,
    tokens: ServiceAccountTokens,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Result<Fixture> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(StoreConfig::single(dir.path().join("store"))).await?;
    let objects = Objects::new(store);
    let signer = Arc::new(TokenSigner::new(DEFAULT_ISSUER, SigningKey::generate()?));
    let tokens = ServiceAccountTokens::new(objects.clone(), signer, "10.0.0.1:6443");
    let f = Fixture {
        objects,
        tokens,
        _dir: dir,
    };
    f.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}))
        .await?;
    f.create(json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "default", "namespace": "team"}}))
        .await?;
    Ok(f)
}

impl Fixture {
    async fn create(&self, obj: Value) -> Result<Value> {
        let info = registry::by_kind(
            obj["apiVersion"].as_str().unwrap_or_default(),
            obj["kind"].as_str().unwrap_or_default(),
        )
        .ok_or("unknown kind")?;
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let body = Decoded {
            value: obj,
            duplicates: Vec::new(),
        };
        Ok(self
            .objects
            .create(info, &ns, body, &WriteOptions::by("test"))
            .await?
            .object)
    }

    async fn pod(&self, name: &str, node: Option<&str>) -> Result<Value> {
        let mut spec = json!({"containers": [{"name": "c", "image": "busybox"}]});
        if let Some(node) = node {
            spec["nodeName"] = node.into();
        }
        self.create(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "team"}, "spec": spec}))
            .await
    }

    async fn node(&self, name: &str) -> Result<Value> {
        self.create(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}))
            .await
    }

    async fn delete(&self, info: &ResourceInfo, ns: &str, name: &str) -> Result<()> {
        let options = DeleteOptions {
            grace_period_seconds: Some(0),
            ..DeleteOptions::default()
        };
        self.objects.delete(info, ns, name, &options, false).await?;
        Ok(())
    }

    async fn request(&self, name: &str, spec: Value) -> std::result::Result<Value, ApiError> {
        let body = json!({"apiVersion": API_VERSION, "kind": "TokenRequest", "spec": spec});
        self.tokens
            .token_request("team", name, &body)
            .await
            .map(|(v, _)| v)
    }

    async fn review(&self, token: &str, audiences: Option<Vec<&str>>) -> Result<Value> {
        let mut body = json!({"apiVersion": API_VERSION, "kind": "TokenReview",
            "spec": {"token": token}});
        if let Some(audiences) = audiences {
            body["spec"]["audiences"] = json!(audiences);
        }
        Ok(self.tokens.token_review(&body).await?)
    }
}

fn uid(obj: &Value) -> String {
    obj["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn token(response: &Value) -> String {
    response["status"]["token"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn token_request_defaults_and_the_token_reviews_as_the_service_account() -> Result<()> {
    let f = fixture().await?;
    let response = f.request("default", json!({})).await?;
    assert_eq!(response["kind"], "TokenRequest");
    assert_eq!(response["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(response["metadata"]["name"], "default");
    assert_eq!(response["metadata"]["namespace"], "team");
    assert_eq!(response["spec"]["audiences"], json!([DEFAULT_ISSUER]));
    assert_eq!(response["spec"]["expirationSeconds"], 3600);
    let created = parse_time(
        response["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap_or(""),
    );
    let expires = parse_time(
        response["status"]["expirationTimestamp"]
            .as_str()
            .unwrap_or(""),
    );
    assert_eq!(expires.zip(created).map(|(e, c)| e - c), Some(3600));

    let review = f.review(&token(&response), None).await?;
    assert_eq!(review["kind"], "TokenReview");
    assert_eq!(review["status"]["authenticated"], true);
    assert_eq!(
        review["status"]["user"]["username"],
        "system:serviceaccount:team:default"
    );
    assert_eq!(
        review["status"]["user"]["groups"],
        json!([
            "system:serviceaccounts",
            "system:serviceaccounts:team",
            "system:authenticated"
        ])
    );
    assert_eq!(review["status"]["audiences"], json!([DEFAULT_ISSUER]));
    assert!(
        review["status"]["user"]["extra"]["authentication.kubernetes.io/credential-id"][0]
            .as_str()
            .is_some_and(|c| c.starts_with("JTI="))
    );
    // The authenticator chain's view.
    let user = f.tokens.authenticate(&token(&response)).await?;
    assert_eq!(
        user.map(|u| u.name).as_deref(),
        Some("system:serviceaccount:team:default")
    );
    Ok(())
}

#[tokio::test]
async fn token_request_refuses_what_upstream_refuses() -> Result<()> {
    let f = fixture().await?;
    let err = f
        .request("default", json!({"expirationSeconds": 60}))
        .await
        .err()
        .ok_or("a one-minute token was issued")?;
    assert_eq!(err.reason, StatusReason::Invalid);
    assert_eq!(
        err.message,
        "TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes"
    );
    let err = f
        .request("nobody", json!({}))
        .await
        .err()
        .ok_or("a token for a missing account")?;
    assert_eq!(err.message, "serviceaccounts \"nobody\" not found");
    let err = f
        .request(
            "default",
            json!({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "ghost"}}),
        )
        .await
        .err()
        .ok_or("a token bound to a missing pod")?;
    assert_eq!(err.message, "pods \"ghost\" not found");
    let err = f
        .tokens
        .token_request(
            "team",
            "default",
            &json!({"metadata": {"name": "other"}, "spec": {}}),
        )
        .await
        .err()
        .ok_or("a mismatched name")?;
    assert_eq!(
        err.message,
        "TokenRequest.authentication.k8s.io \"default\" is invalid: metadata.name: Invalid value: \"other\": must match the service account name if specified"
    );
    Ok(())
}

#[tokio::test]
async fn a_pod_bound_token_dies_with_its_pod_and_stays_dead_after_recreation() -> Result<()> {
    let f = fixture().await?;
    let node = f.node("n1").await?;
    let pod = f.pod("web", Some("n1")).await?;
    let response = f
        .request(
            "default",
            json!({"audiences": ["vault"], "boundObjectRef":
                {"kind": "Pod", "apiVersion": "v1", "name": "web", "uid": uid(&pod)}}),
        )
        .await?;
    let token = token(&response);
    // Another audience than the API's.
    let refused = f.review(&token, None).await?;
    assert_eq!(
        refused["status"]["error"],
        format!(
            "[invalid bearer token, token audiences [\"vault\"] is invalid for the target audiences [\"{DEFAULT_ISSUER}\"]]"
        )
    );
    let review = f.review(&token, Some(vec!["vault"])).await?;
    assert_eq!(review["status"]["authenticated"], true);
    assert_eq!(review["status"]["audiences"], json!(["vault"]));
    let extra = &review["status"]["user"]["extra"];
    assert_eq!(
        extra["authentication.kubernetes.io/pod-name"],
        json!(["web"])
    );
    assert_eq!(
        extra["authentication.kubernetes.io/pod-uid"],
        json!([uid(&pod)])
    );
    assert_eq!(
        extra["authentication.kubernetes.io/node-name"],
        json!(["n1"])
    );
    assert_eq!(
        extra["authentication.kubernetes.io/node-uid"],
        json!([uid(&node)])
    );

    f.delete(&kinds::POD, "team", "web").await?;
    let review = f.review(&token, Some(vec!["vault"])).await?;
    assert_eq!(review["status"].get("authenticated"), None);
    assert_eq!(
        review["status"]["error"],
        "[invalid bearer token, service account token has been invalidated]"
    );
    let again = f.pod("web", Some("n1")).await?;
    let err = f
        .tokens
        .review(&token, Some(&["vault".to_owned()]))
        .await
        .err()
        .ok_or("a recreated pod revived the token")?;
    assert_eq!(
        err.to_string(),
        format!(
            "pod UID ({}) does not match service account pod ref claim ({})",
            uid(&again),
            uid(&pod)
        )
    );
    Ok(())
}

#[tokio::test]
async fn a_token_dies_with_a_recreated_service_account() -> Result<()> {
    let f = fixture().await?;
    let token = token(&f.request("default", json!({})).await?);
    f.delete(&kinds::SERVICE_ACCOUNT, "team", "default").await?;
    let err = f
        .tokens
        .authenticate(&token)
        .await
        .err()
        .ok_or("accepted")?;
    assert_eq!(err.0, "serviceaccounts \"default\" not found");
    f.create(json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "default", "namespace": "team"}}))
        .await?;
    let err = f.tokens.authenticate(&token).await.err().ok_or("revived")?;
    assert!(err.0.starts_with("service account UID ("), "{}", err.0);
    // Tokens of other issuers are someone else's.
    assert!(f.tokens.authenticate("not-a-jwt").await?.is_none());
    let review = f.review("not-a-jwt", None).await?;
    assert_eq!(review["status"]["error"], "invalid bearer token");
    Ok(())
}

#[tokio::test]
async fn legacy_secret_tokens_are_accepted_while_their_secret_holds_them() -> Result<()> {
    let f = fixture().await?;
    let sa = f
        .objects
        .get(&kinds::SERVICE_ACCOUNT, "team", "default")
        .await?;
    let claims = LegacyClaims::new("team", &ObjectRef::new("default", uid(&sa)), "legacy");
    let token = f.tokens.signer().sign_legacy(&claims)?;
    f.create(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "legacy", "namespace": "team",
            "annotations": {"kubernetes.io/service-account.name": "default"}},
        "type": "kubernetes.io/service-account-token",
        "data": {"token": STANDARD.encode(&token)}}))
        .await?;
    let user = f.tokens.authenticate(&token).await?.ok_or("not ours")?;
    assert_eq!(user.name, "system:serviceaccount:team:default");
    f.delete(&kinds::SECRET, "team", "legacy").await?;
    let err = f
        .tokens
        .authenticate(&token)
        .await
        .err()
        .ok_or("accepted")?;
    assert_eq!(err.0, "Token has been invalidated");
    Ok(())
}

#[tokio::test]
async fn nodes_get_tokens_only_for_their_own_pods() -> Result<()> {
    let f = fixture().await?;
    f.node("n1").await?;
    let mine = f.pod("mine", Some("n1")).await?;
    let theirs = f.pod("theirs", Some("n2")).await?;
    let ask = |pod: &Value, sa: &str| skep_proto::v1::TokenRequest {
        namespace: "team".into(),
        service_account: sa.into(),
        pod_name: object::name(pod).to_owned(),
        pod_uid: uid(pod),
        audiences: Vec::new(),
        expiration_seconds: 0,
    };

    let issued = node_token(&f.tokens, "n1", &ask(&mine, "default")).await?;
    assert_eq!(issued.expires_at - issued.issued_at, 3607);
    let review = f.review(&issued.token, None).await?;
    assert_eq!(
        review["status"]["user"]["extra"]["authentication.kubernetes.io/pod-name"],
        json!(["mine"])
    );

    let err = node_token(&f.tokens, "n1", &ask(&theirs, "default"))
        .await
        .err()
        .ok_or("a token for another node's pod")?;
    assert_eq!(err.reason, StatusReason::Forbidden);
    assert_eq!(
        err.message,
        "serviceaccounts \"default\" is forbidden: node requested token bound to a pod scheduled on a different node"
    );
    let err = node_token(&f.tokens, "n3", &ask(&theirs, "default"))
        .await
        .err()
        .ok_or("a token for a node without pods")?;
    assert_eq!(
        err.message,
        "serviceaccounts \"default\" is forbidden: User \"system:node:n3\" cannot create resource \"serviceaccounts/token\" in API group \"\" in the namespace \"team\": no relationship found between node 'n3' and this object"
    );
    let mut stale = ask(&mine, "default");
    stale.pod_uid = "0000".into();
    let err = node_token(&f.tokens, "n1", &stale)
        .await
        .err()
        .ok_or("a stale pod UID")?;
    assert!(
        err.message
            .ends_with("The object might have been deleted and then recreated")
    );
    Ok(())
}

#[test]
fn the_signing_key_survives_restarts_and_is_private() -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir()?;
    let first = load_signer(dir.path(), DEFAULT_ISSUER)?;
    let second = load_signer(dir.path(), DEFAULT_ISSUER)?;
    assert_eq!(first.key().key_id(), second.key().key_id());
    let mode = std::fs::metadata(dir.path().join(SIGNING_KEY_FILE))?
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    Ok(())
}

#[tokio::test]
async fn discovery_is_served_with_upstream_headers() -> Result<()> {
    let f = fixture().await?;
    let response = discovery_response(&f.tokens, &Target::OpenIdConfiguration);
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    assert_eq!(
        response.headers()[header::CACHE_CONTROL],
        "public, max-age=3600"
    );
    let config: Value =
        serde_json::from_str(&f.tokens.discovery().ok_or("no discovery")?.config_json)?;
    assert_eq!(config["issuer"], DEFAULT_ISSUER);
    assert_eq!(config["jwks_uri"], "https://10.0.0.1:6443/openid/v1/jwks");
    let response = discovery_response(&f.tokens, &Target::Jwks);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/jwk-set+json"
    );
    Ok(())
}
