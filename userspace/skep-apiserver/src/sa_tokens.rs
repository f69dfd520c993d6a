//! ServiceAccount tokens on the API server: the issuer's signing key, the
//! bearer-token authenticator for tokens it signed, and issuing tokens
//! (TokenRequest over REST and node sync), as kube-apiserver does with
//! `--service-account-issuer`, `--service-account-signing-key-file` and
//! `--api-audiences` left to their kubeadm defaults.
//!
//! - The key is `<data_dir>/pki/sa.key` (ES256, made on first start, 0600).
//! - [`ServiceAccountTokens::authenticate`] is what the authenticator chain
//!   calls; it looks the token's ServiceAccount, pod, secret and node up by
//!   name and compares UIDs, so a token dies with the object it is bound to.
//! - [`Endpoint`] routes `POST …/serviceaccounts/NAME/token` (TokenRequest)
//!   and `POST /apis/authentication.k8s.io/v1/tokenreviews` (TokenReview).
//! - [`ServiceAccountTokens::discovery`] holds the OIDC documents served at
//!   `/.well-known/openid-configuration` and `/openid/v1/jwks`.
#![expect(
    clippy::doc_markdown,
    reason = "Kubernetes kind names (ServiceAccount, TokenRequest, TokenReview, NodeRestriction) are plain words in these docs"
)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};
use skep_api::field::{FieldError, FieldPath};
use skep_api::{ApiError, ResourceInfo, admission, kinds, object};
use skep_objects::Objects;
use skep_tokens::request::{
    self, BoundKind, BoundObjectRef, BoundTarget, FetchedObject, RequestError, TokenRequestSpec,
    TokenSettings,
};
use skep_tokens::validate::{LegacySecret, VerifiedClaims};
use skep_tokens::{
    Authenticated, BoundObjects, Claims, Discovery, ObjectRef, ObjectState, SigningKey, TokenError,
    TokenSigner, Validator,
};
use skep_user::{ALL_AUTHENTICATED, ALL_UNAUTHENTICATED, UserInfo};

use crate::request::{ResourceRequest, Target, Verb};

/// The issuer kubeadm and k3s configure (`--service-account-issuer`), and
/// so the API audience.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The signing key's file name in the PKI directory.
pub const SIGNING_KEY_FILE: &str = "sa.key";
/// The `authentication.k8s.io` group.
const GROUP: &str = "authentication.k8s.io";
/// TokenRequest and TokenReview are served at this version.
const API_VERSION: &str = "authentication.k8s.io/v1";
/// The bearer authenticator's error when no token authenticator accepted a
/// token (`bearertoken.invalidToken`).
const INVALID_BEARER_TOKEN: &str = "invalid bearer token";
/// A secret's `data` key holding a legacy token.
const TOKEN_KEY: &str = "token";
/// Marks a legacy token secret as no longer accepted.
const INVALID_SINCE_LABEL: &str = skep_tokens::validate::INVALID_SINCE_LABEL;

/// Why the issuer could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SaTokensError {
    /// The signing key could not be read or made.
    #[error("failed to load or create the service account signing key")]
    Key(#[from] skep_tokens::KeyError),
}

/// Why a bearer token that this issuer signed was refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TokenRefused(pub String);

/// Why a token review failed: the token was refused, or a lookup of the
/// objects it is bound to failed.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The token is ours but not valid (upstream's message).
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The store could not be read.
    #[error("failed to look up {objects}: {source}")]
    Lookup {
        /// What was looked up: `Kind namespace/name, …`.
        objects: String,
        /// What the store answered.
        #[source]
        source: ApiError,
    },
}

/// Reads the issuer's key at `<pki_dir>/sa.key`, or makes an ES256 key and
/// saves it there (mode 0600) on first start, and signs for `issuer`.
pub fn load_signer(pki_dir: &Path, issuer: &str) -> Result<TokenSigner, SaTokensError> {
    let key = SigningKey::load_or_generate(&pki_dir.join(SIGNING_KEY_FILE))?;
    Ok(TokenSigner::new(issuer, key))
}

/// The API server's ServiceAccount token issuer and authenticator. Cheap to
/// clone.
#[derive(Clone)]
pub struct ServiceAccountTokens {
    inner: Arc<Inner>,
}

struct Inner {
    objects: Objects,
    signer: Arc<TokenSigner>,
    validator: Validator,
    settings: TokenSettings,
    discovery: Option<Discovery>,
    /// Uses of extended tokens past their `warnafter` (upstream's
    /// `stale_tokens_total`).
    stale: AtomicU64,
}

/// A signed token and what the TokenRequest response reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The JWT.
    pub token: String,
    /// `spec.audiences` as defaulted.
    pub audiences: Vec<String>,
    /// `spec.expirationSeconds` as defaulted and clamped.
    pub expiration_seconds: i64,
    /// When it was issued (Unix seconds): the response's `creationTimestamp`.
    pub issued_at: i64,
    /// `status.expirationTimestamp` (Unix seconds): the requested lifetime,
    /// not an extended one.
    pub expires_at: i64,
    /// `Warning` headers for the response.
    pub warnings: Vec<String>,
}

impl ServiceAccountTokens {
    /// The issuer over `objects`, signing with `signer` and accepting its
    /// own tokens (API audiences = the issuer) and legacy secret-based
    /// tokens. `external_address` (`host:port`) makes the JWKS URI of the
    /// discovery document; discovery is off (and logged) when the issuer is
    /// not an https URL, as upstream skips it.
    pub fn new(objects: Objects, signer: Arc<TokenSigner>, external_address: &str) -> Self {
        let issuer = signer.issuer().to_owned();
        let keys = vec![signer.key().public_key().clone()];
        let api_audiences = vec![issuer.clone()];
        let validator = Validator::new(vec![issuer.clone()], keys.clone(), api_audiences.clone())
            .accept_legacy(true);
        let discovery = match Discovery::new(&issuer, "", external_address, &keys) {
            Ok(discovery) => Some(discovery),
            Err(err) => {
                tracing::warn!(%err, %issuer, "service account issuer discovery is not served");
                None
            }
        };
        Self {
            inner: Arc::new(Inner {
                objects,
                signer,
                validator,
                settings: TokenSettings {
                    api_audiences,
                    max_expiration_seconds: 0,
                    extend_expiration: true,
                },
                discovery,
                stale: AtomicU64::new(0),
            }),
        }
    }

    /// The signer (the legacy token controller signs with it too).
    #[must_use]
    pub fn signer(&self) -> &Arc<TokenSigner> {
        &self.inner.signer
    }

    /// The issuer URL.
    #[must_use]
    pub fn issuer(&self) -> &str {
        self.inner.signer.issuer()
    }

    /// The API audiences (`--api-audiences`: the issuer).
    #[must_use]
    pub fn api_audiences(&self) -> &[String] {
        &self.inner.settings.api_audiences
    }

    /// The OIDC discovery documents, when the issuer allows serving them.
    #[must_use]
    pub fn discovery(&self) -> Option<&Discovery> {
        self.inner.discovery.as_ref()
    }

    /// How many times an extended token was used past its `warnafter`.
    #[must_use]
    pub fn stale_token_uses(&self) -> u64 {
        self.inner.stale.load(Ordering::Relaxed)
    }

    /// Authenticates a bearer token: `Ok(None)` when it is not a token this
    /// issuer signed (another authenticator may know it), an error when it is
    /// one but no longer valid. The user has the service account groups; the
    /// chain adds `system:authenticated`.
    pub async fn authenticate(&self, token: &str) -> Result<Option<UserInfo>, TokenRefused> {
        match self.review(token, None).await {
            Ok(found) => Ok(found.map(|a| a.user)),
            Err(err) => Err(TokenRefused(err.to_string())),
        }
    }

    /// Authenticates `token` for `audiences` (`None`: the API audiences),
    /// giving the accepted audiences and what the token is bound to.
    #[tracing::instrument(skip_all)]
    pub async fn review(
        &self,
        token: &str,
        audiences: Option<&[String]>,
    ) -> Result<Option<Authenticated>, ReviewError> {
        let now = unix_now();
        let Some(verified) = self.inner.validator.verify(token, audiences, now)? else {
            return Ok(None);
        };
        let snapshot = Snapshot::fetch(&self.inner.objects, &verified.claims).await?;
        let authenticated = verified.validate(&snapshot, now)?;
        if let Some(stale) = &authenticated.stale {
            let uses = self.inner.stale.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::debug!(uses, annotation = %stale.annotation(), "stale service account token used");
        }
        Ok(Some(authenticated))
    }

    /// TokenRequest for `namespace/name` as `TokenREST.Create` does it: the
    /// service account (404 if missing), validation, the bound object (404
    /// if missing, 400/409 if it does not match), the lifetime (a kubelet's
    /// pod-bound 3607 s request is extended to a year), then the token.
    #[tracing::instrument(skip_all, fields(%namespace, service_account = %name))]
    pub async fn issue(
        &self,
        namespace: &str,
        name: &str,
        spec: &TokenRequestSpec,
    ) -> Result<IssuedToken, ApiError> {
        let objects = &self.inner.objects;
        let settings = &self.inner.settings;
        let account = objects
            .get(&kinds::SERVICE_ACCOUNT, namespace, name)
            .await?;
        let prepared = request::prepare(spec, settings).map_err(|e| request_error(&e))?;
        let fetched = match &prepared.target {
            Some(target) => Some(fetch_bound(objects, namespace, target).await?),
            None => None,
        };
        let audiences = prepared.audiences.clone();
        let now = unix_now();
        let account = ObjectRef::new(name, object::str_or_empty(&account, &["metadata", "uid"]));
        let admitted = prepared
            .admit(namespace, account, fetched, settings, now)
            .map_err(|e| request_error(&e))?;
        let token = self
            .inner
            .signer
            .sign(&Claims::new(&admitted.claims))
            .map_err(|e| ApiError::internal(error_chain(&e)))?;
        tracing::debug!(jti = %admitted.claims.jti, "service account token issued");
        Ok(IssuedToken {
            token,
            audiences,
            expiration_seconds: admitted.status_expiration_seconds,
            issued_at: now,
            expires_at: now.saturating_add(admitted.status_expiration_seconds),
            warnings: admitted.warnings,
        })
    }

    /// `POST /api/v1/namespaces/NS/serviceaccounts/NAME/token`: the
    /// `authentication.k8s.io/v1 TokenRequest` answered, and warnings.
    pub async fn token_request(
        &self,
        namespace: &str,
        name: &str,
        body: &Value,
    ) -> Result<(Value, Vec<String>), ApiError> {
        request::check_metadata(
            name,
            namespace,
            object::str_or_empty(body, &["metadata", "name"]),
            object::str_or_empty(body, &["metadata", "namespace"]),
        )
        .map_err(|e| request_error(&e))?;
        let spec = token_request_spec(body)?;
        let issued = self.issue(namespace, name, &spec).await?;

        let mut metadata = match body.get("metadata") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        metadata.insert("name".into(), name.into());
        metadata.insert("namespace".into(), namespace.into());
        metadata.insert("creationTimestamp".into(), time_value(issued.issued_at));
        let mut out_spec = Map::new();
        out_spec.insert("audiences".into(), json!(issued.audiences));
        out_spec.insert("expirationSeconds".into(), issued.expiration_seconds.into());
        out_spec.insert(
            "boundObjectRef".into(),
            spec.bound_object_ref.as_ref().map_or(Value::Null, |r| {
                let mut out = Map::new();
                for (key, value) in [
                    ("kind", &r.kind),
                    ("apiVersion", &r.api_version),
                    ("name", &r.name),
                    ("uid", &r.uid),
                ] {
                    if !value.is_empty() {
                        out.insert(key.into(), value.clone().into());
                    }
                }
                Value::Object(out)
            }),
        );
        let response = json!({
            "kind": "TokenRequest",
            "apiVersion": API_VERSION,
            "metadata": metadata,
            "spec": out_spec,
            "status": {
                "token": issued.token,
                "expirationTimestamp": time_value(issued.expires_at),
            },
        });
        Ok((response, issued.warnings))
    }

    /// `POST /apis/authentication.k8s.io/v1/tokenreviews`, as upstream's
    /// TokenReview REST: the token authenticated for `spec.audiences` (or the
    /// API audiences), the chain's `system:authenticated` group added, and
    /// the error as the bearer authenticator reports it.
    #[tracing::instrument(skip_all)]
    pub async fn token_review(&self, body: &Value) -> Result<Value, ApiError> {
        let token = object::str_or_empty(body, &["spec", "token"]);
        if token.is_empty() {
            return Err(ApiError::bad_request(
                "token is required for TokenReview in authentication",
            ));
        }
        let requested = string_list(body, &["spec", "audiences"])?;
        let audiences = (!requested.is_empty()).then_some(requested.as_slice());
        let mut status = Map::new();
        match self.review(token, audiences).await {
            Ok(Some(authenticated)) => {
                let requested = audiences.unwrap_or(self.api_audiences());
                if !authenticated
                    .audiences
                    .iter()
                    .any(|a| requested.contains(a))
                {
                    tracing::error!(want = ?requested, got = ?authenticated.audiences, "error validating audience");
                    return Err(ApiError::internal("error validating audiences"));
                }
                status.insert("authenticated".into(), true.into());
                status.insert(
                    "user".into(),
                    user_json(&authenticated_user(authenticated.user)),
                );
                status.insert("audiences".into(), json!(authenticated.audiences));
            }
            Ok(None) => {
                status.insert("user".into(), json!({}));
                status.insert("error".into(), INVALID_BEARER_TOKEN.into());
            }
            Err(err) => {
                if let ReviewError::Lookup { .. } = &err {
                    tracing::error!(err = %error_chain(&err), "token review lookup failed");
                }
                status.insert("user".into(), json!({}));
                status.insert(
                    "error".into(),
                    format!("[{INVALID_BEARER_TOKEN}, {err}]").into(),
                );
            }
        }
        let mut review = match body {
            Value::Object(m) => m.clone(),
            _ => Map::new(),
        };
        review.insert("kind".into(), "TokenReview".into());
        review.insert("apiVersion".into(), API_VERSION.into());
        let mut metadata = match review.remove("metadata") {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        metadata.entry("creationTimestamp").or_insert(Value::Null);
        review.insert("metadata".into(), Value::Object(metadata));
        review.insert("status".into(), Value::Object(status));
        Ok(Value::Object(review))
    }
}

/// The endpoints routed here ahead of the registry (they are not stored
/// kinds): one early branch in `api::resource`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /api/v1/namespaces/NS/serviceaccounts/NAME/token`.
    TokenRequest,
    /// `POST /apis/authentication.k8s.io/v1/tokenreviews`.
    TokenReview,
}

impl Endpoint {
    /// The endpoint `req` asks for, if it is one of these.
    #[must_use]
    pub fn of(req: &ResourceRequest) -> Option<Self> {
        if req.verb != Verb::Create || req.version != "v1" {
            return None;
        }
        match (
            req.group.as_str(),
            req.resource.as_str(),
            req.subresource.as_str(),
        ) {
            ("", "serviceaccounts", "token")
                if !req.namespace.is_empty() && !req.name.is_empty() =>
            {
                Some(Self::TokenRequest)
            }
            (GROUP, "tokenreviews", "") if req.namespace.is_empty() && req.name.is_empty() => {
                Some(Self::TokenReview)
            }
            _ => None,
        }
    }

    /// Serves the request: the object to answer `201 Created` with, and
    /// `Warning` headers.
    pub async fn serve(
        self,
        tokens: &ServiceAccountTokens,
        req: &ResourceRequest,
        content_type: &str,
        body: &[u8],
    ) -> Result<(Value, Vec<String>), ApiError> {
        let body = skep_api::decode::decode(body, content_type)?.value;
        match self {
            Self::TokenRequest => tokens.token_request(&req.namespace, &req.name, &body).await,
            Self::TokenReview => Ok((tokens.token_review(&body).await?, Vec::new())),
        }
    }
}

/// Node sync's `RequestToken` as the node authorizer and NodeRestriction
/// admit a kubelet's TokenRequest: the node must run a pod using the
/// service account, and the token must be bound to such a pod (by name and
/// UID) on this node. `expiration_seconds` 0 asks for the kubelet's 3607 s.
#[tracing::instrument(skip_all, fields(%node, namespace = %req.namespace, service_account = %req.service_account, pod = %req.pod_name))]
pub async fn node_token(
    tokens: &ServiceAccountTokens,
    node: &str,
    req: &skep_proto::v1::TokenRequest,
) -> Result<IssuedToken, ApiError> {
    let objects = &tokens.inner.objects;
    let (namespace, service_account) = (req.namespace.as_str(), req.service_account.as_str());
    let (pod_name, pod_uid) = (req.pod_name.as_str(), req.pod_uid.as_str());
    let forbidden = |why: &str| {
        ApiError::forbidden(format!(
            "serviceaccounts \"{service_account}\" is forbidden: {why}"
        ))
    };
    // The node authorizer: a path node → pod → service account.
    let filter = skep_objects::Filter::parse(&kinds::POD, "", &format!("spec.nodeName={node}"))?;
    let options = skep_objects::ListOptions {
        filter: Some(filter),
        ..skep_objects::ListOptions::default()
    };
    let (pods, _) = objects.list(&kinds::POD, namespace, &options).await?;
    let related = pods.iter().any(|pod| {
        object::get_str(pod, &["spec", "serviceAccountName"]).unwrap_or("default")
            == service_account
    });
    if !related {
        return Err(forbidden(&format!(
            "User \"{}{node}\" cannot create resource \"serviceaccounts/token\" in API group \"\" in the namespace \"{namespace}\": no relationship found between node '{node}' and this object",
            skep_proto::NODE_USER_PREFIX
        )));
    }
    // NodeRestriction.
    if pod_name.is_empty() {
        return Err(forbidden("node requested token not bound to a pod"));
    }
    if pod_uid.is_empty() {
        return Err(forbidden(
            "node requested token with a pod binding without a uid",
        ));
    }
    let pod = objects.get(&kinds::POD, namespace, pod_name).await?;
    if object::str_or_empty(&pod, &["metadata", "uid"]) != pod_uid {
        return Err(forbidden(&format!(
            "the UID in the bound object reference ({pod_uid}) does not match the UID in record. The object might have been deleted and then recreated"
        )));
    }
    if object::get_str(&pod, &["spec", "nodeName"]) != Some(node) {
        return Err(forbidden(
            "node requested token bound to a pod scheduled on a different node",
        ));
    }
    let spec = TokenRequestSpec {
        audiences: req.audiences.clone(),
        expiration_seconds: Some(if req.expiration_seconds == 0 {
            skep_tokens::WARN_ONLY_BOUND_TOKEN_EXPIRATION_SECONDS
        } else {
            req.expiration_seconds
        }),
        bound_object_ref: Some(BoundObjectRef {
            kind: "Pod".to_owned(),
            api_version: "v1".to_owned(),
            name: pod_name.to_owned(),
            uid: pod_uid.to_owned(),
        }),
    };
    tokens.issue(namespace, service_account, &spec).await
}

/// `Cache-Control` of the discovery documents (upstream overrides the
/// global `private, no-cache`).
const DISCOVERY_CACHE_CONTROL: &str = "public, max-age=3600";
/// The key set's media type (RFC 7517 §8.5.1).
const JWKS_CONTENT_TYPE: &str = "application/jwk-set+json";

/// `GET /.well-known/openid-configuration` or `GET /openid/v1/jwks`, as
/// upstream's `OpenIDMetadataServer` serves them; 404 when discovery is off.
pub fn discovery_response(tokens: &ServiceAccountTokens, target: &Target) -> Response {
    let (body, content_type) = match (tokens.discovery(), target) {
        (Some(d), Target::OpenIdConfiguration) => (d.config_json.clone(), "application/json"),
        (Some(d), Target::Jwks) => (d.keyset_json.clone(), JWKS_CONTENT_TYPE),
        _ => {
            return crate::api::error_response(&ApiError::new(
                skep_api::StatusReason::NotFound,
                "the server could not find the requested resource",
            ));
        }
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static(DISCOVERY_CACHE_CONTROL),
            ),
        ],
        body,
    )
        .into_response()
}

/// The user as the chain's `AuthenticatedGroupAdder` leaves it.
fn authenticated_user(mut user: UserInfo) -> UserInfo {
    if !user
        .groups
        .iter()
        .any(|g| g == ALL_AUTHENTICATED || g == ALL_UNAUTHENTICATED)
    {
        user.groups.push(ALL_AUTHENTICATED.to_owned());
    }
    user
}

/// `authentication.k8s.io/v1 UserInfo` (every field `omitempty`).
fn user_json(user: &UserInfo) -> Value {
    let mut out = Map::new();
    if !user.name.is_empty() {
        out.insert("username".into(), user.name.clone().into());
    }
    if !user.uid.is_empty() {
        out.insert("uid".into(), user.uid.clone().into());
    }
    if !user.groups.is_empty() {
        out.insert("groups".into(), json!(user.groups));
    }
    if !user.extra.is_empty() {
        out.insert("extra".into(), json!(user.extra));
    }
    Value::Object(out)
}

/// `spec` of a TokenRequest body.
fn token_request_spec(body: &Value) -> Result<TokenRequestSpec, ApiError> {
    let expiration_seconds = match object::get(body, &["spec", "expirationSeconds"]) {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_i64().ok_or_else(|| {
            ApiError::bad_request(format!(
                "json: cannot unmarshal {v} into Go struct field TokenRequestSpec.spec.expirationSeconds of type int64"
            ))
        })?),
    };
    let bound_object_ref = match object::get(body, &["spec", "boundObjectRef"]) {
        None | Some(Value::Null) => None,
        Some(r) => Some(BoundObjectRef {
            kind: object::str_or_empty(r, &["kind"]).to_owned(),
            api_version: object::str_or_empty(r, &["apiVersion"]).to_owned(),
            name: object::str_or_empty(r, &["name"]).to_owned(),
            // `uID` is the protobuf field name (the decoder keeps it).
            uid: object::get_str(r, &["uid"])
                .or_else(|| object::get_str(r, &["uID"]))
                .unwrap_or_default()
                .to_owned(),
        }),
    };
    Ok(TokenRequestSpec {
        audiences: string_list(body, &["spec", "audiences"])?,
        expiration_seconds,
        bound_object_ref,
    })
}

/// A list of strings at `path` (absent or null: empty).
fn string_list(body: &Value, path: &[&str]) -> Result<Vec<String>, ApiError> {
    match object::get(body, path) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str().map(str::to_owned).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "json: cannot unmarshal {item} into Go struct field of type string"
                    ))
                })
            })
            .collect(),
        Some(other) => Err(ApiError::bad_request(format!(
            "json: cannot unmarshal {other} into Go struct field of type []string"
        ))),
    }
}

/// A TokenRequest refusal as the API error upstream answers.
fn request_error(err: &RequestError) -> ApiError {
    match err {
        RequestError::Invalid { name, errors } => {
            let errors: Vec<FieldError> = errors
                .iter()
                .map(|e| FieldError::invalid_raw(&FieldPath::new(&e.field), &e.value, &e.detail))
                .collect();
            ApiError::invalid(GROUP, "TokenRequest", name, &errors)
        }
        RequestError::BadRequest(message) => ApiError::bad_request(message),
        RequestError::Conflict {
            kind,
            name,
            message,
        } => ApiError::conflict("", kind, name, message),
    }
}

/// Fetches the object a TokenRequest binds to, with upstream's NotFound.
async fn fetch_bound(
    objects: &Objects,
    namespace: &str,
    target: &BoundTarget,
) -> Result<FetchedObject, ApiError> {
    let uid = |obj: &Value| object::str_or_empty(obj, &["metadata", "uid"]).to_owned();
    Ok(match target.kind {
        BoundKind::Pod => {
            let pod = objects.get(&kinds::POD, namespace, &target.name).await?;
            let node = match object::get_str(&pod, &["spec", "nodeName"]).filter(|n| !n.is_empty())
            {
                Some(node_name) => {
                    // A missing Node still names the node, without a UID.
                    let node = objects.try_get(&kinds::NODE, "", node_name).await?;
                    Some(ObjectRef::new(
                        node_name,
                        node.as_ref().map(uid).unwrap_or_default(),
                    ))
                }
                None => None,
            };
            FetchedObject::Pod {
                pod: ObjectRef::new(&target.name, uid(&pod)),
                service_account_name: object::get_str(&pod, &["spec", "serviceAccountName"])
                    .unwrap_or("default")
                    .to_owned(),
                node,
            }
        }
        BoundKind::Secret => {
            let secret = objects.get(&kinds::SECRET, namespace, &target.name).await?;
            FetchedObject::Secret(ObjectRef::new(&target.name, uid(&secret)))
        }
        BoundKind::Node => {
            let node = objects.get(&kinds::NODE, "", &target.name).await?;
            FetchedObject::Node(ObjectRef::new(&target.name, uid(&node)))
        }
    })
}

/// The objects a verified token names, read once before the (synchronous)
/// bound-object checks.
#[derive(Debug, Default)]
struct Snapshot {
    objects: HashMap<(&'static str, String, String), Value>,
}

impl Snapshot {
    async fn fetch(objects: &Objects, claims: &VerifiedClaims) -> Result<Self, ReviewError> {
        let mut wanted: Vec<(&'static ResourceInfo, &str, &str)> = Vec::new();
        match claims {
            VerifiedClaims::Bound(claims) => {
                let k = &claims.kubernetes;
                let ns = k.namespace.as_str();
                wanted.push((&kinds::SERVICE_ACCOUNT, ns, &k.serviceaccount.name));
                if let Some(secret) = &k.secret {
                    wanted.push((&kinds::SECRET, ns, &secret.name));
                }
                if let Some(pod) = &k.pod {
                    wanted.push((&kinds::POD, ns, &pod.name));
                } else if let Some(node) = &k.node {
                    wanted.push((&kinds::NODE, "", &node.name));
                }
            }
            VerifiedClaims::Legacy(claims) => {
                let ns = claims.namespace.as_str();
                wanted.push((&kinds::SERVICE_ACCOUNT, ns, &claims.service_account_name));
                wanted.push((&kinds::SECRET, ns, &claims.secret_name));
            }
        }
        wanted.retain(|(info, namespace, name)| {
            !(name.is_empty() || info.namespaced && namespace.is_empty())
        });
        // Looked up on every request a token makes: read as this replica
        // has applied them, with no read barrier, as kube-apiserver reads
        // them from its informers (here a deletion this replica
        // acknowledged is always seen).
        let found = objects
            .try_get_many(&wanted, skep_store::ReadConsistency::Local)
            .await
            .map_err(|source| ReviewError::Lookup {
                objects: wanted
                    .iter()
                    .map(|(info, namespace, name)| format!("{} {namespace}/{name}", info.kind))
                    .collect::<Vec<_>>()
                    .join(", "),
                source,
            })?;
        let mut snapshot = Self::default();
        for ((info, namespace, name), obj) in wanted.into_iter().zip(found) {
            if let Some(obj) = obj {
                snapshot
                    .objects
                    .insert((info.kind, namespace.to_owned(), name.to_owned()), obj);
            }
        }
        Ok(snapshot)
    }

    fn get(&self, info: &ResourceInfo, namespace: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(&(info.kind, namespace.to_owned(), name.to_owned()))
    }

    fn state(&self, info: &ResourceInfo, namespace: &str, name: &str) -> Option<ObjectState> {
        self.get(info, namespace, name).map(object_state)
    }
}

impl BoundObjects for Snapshot {
    fn service_account(&self, namespace: &str, name: &str) -> Option<ObjectState> {
        self.state(&kinds::SERVICE_ACCOUNT, namespace, name)
    }

    fn pod(&self, namespace: &str, name: &str) -> Option<ObjectState> {
        self.state(&kinds::POD, namespace, name)
    }

    fn secret(&self, namespace: &str, name: &str) -> Option<ObjectState> {
        self.state(&kinds::SECRET, namespace, name)
    }

    fn node(&self, name: &str) -> Option<ObjectState> {
        self.state(&kinds::NODE, "", name)
    }

    fn legacy_secret(&self, namespace: &str, name: &str) -> Option<LegacySecret> {
        let secret = self.get(&kinds::SECRET, namespace, name)?;
        let token = object::get_str(secret, &["data", TOKEN_KEY])
            .and_then(|b64| STANDARD.decode(b64).ok())
            .unwrap_or_default();
        Some(LegacySecret {
            token,
            deleting: object::get(secret, &["metadata", "deletionTimestamp"])
                .is_some_and(|t| !t.is_null()),
            invalid_since: object::get_str(secret, &["metadata", "labels", INVALID_SINCE_LABEL])
                .map(str::to_owned),
        })
    }
}

/// An object's UID and deletion time.
fn object_state(obj: &Value) -> ObjectState {
    ObjectState {
        uid: object::str_or_empty(obj, &["metadata", "uid"]).to_owned(),
        deletion_timestamp: object::get_str(obj, &["metadata", "deletionTimestamp"])
            .map(|t| parse_time(t).unwrap_or(i64::MIN)),
    }
}

/// RFC 3339 to Unix seconds.
fn parse_time(text: &str) -> Option<i64> {
    text.parse::<k8s_openapi::jiff::Timestamp>()
        .ok()
        .map(k8s_openapi::jiff::Timestamp::as_second)
}

/// Unix seconds as a `metav1.Time` JSON value.
fn time_value(unix: i64) -> Value {
    k8s_openapi::jiff::Timestamp::from_second(unix)
        .map_or(Value::Null, |t| admission::format_time(t).into())
}

/// Now, in Unix seconds.
fn unix_now() -> i64 {
    admission::now().as_second()
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
#[path = "sa_tokens_test.rs"]
mod tests;
