//! Who may use the node's own port, decided as the kubelet's webhook mode
//! decides it (`pkg/kubelet/server/auth.go`, the apiserver's
//! `authenticatorfactory` and `authorizerfactory/delegating.go`):
//!
//! - **Authentication**: a client certificate from the cluster CA (CN =
//!   user, O = groups), else `Authorization: Bearer <token>` reviewed by the
//!   API server (a TokenReview over node sync), else 401 `Unauthorized`
//!   (anonymous requests are refused, as kubeadm and k3s configure kubelets).
//!   Token answers are cached for [`TOKEN_TTL`], keyed by the token's
//!   SHA-256.
//! - **Authorization**: every request is a SubjectAccessReview on the node
//!   object ([`request_attributes`]: resource `nodes`, the node's name, a
//!   subresource from the path, the verb from the method), cached for
//!   [`ALLOWED_TTL`] when allowed and [`DENIED_TTL`] when not. Anything but
//!   an allow is 403 with upstream's `Forbidden (user=…, verb=…,
//!   resource=nodes, subresource=…)`.
//! - When the API server cannot answer, the request is refused as upstream
//!   refuses it: 401 for a token, 500 `Authorization error (…)` for an access
//!   question. Failed calls are not cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Method, StatusCode, header};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use skep_user::UserInfo;

use crate::api::NodeApi;

/// How long a token's review is trusted (the kubelet's
/// `authentication.webhook.cacheTTL` default).
pub const TOKEN_TTL: Duration = Duration::from_mins(2);
/// How long an allowed access review is trusted
/// (`authorization.webhook.cacheAuthorizedTTL`).
pub const ALLOWED_TTL: Duration = Duration::from_mins(5);
/// How long a refused access review is trusted
/// (`authorization.webhook.cacheUnauthorizedTTL`).
pub const DENIED_TTL: Duration = Duration::from_secs(30);
/// Entries each cache holds at most.
const CACHE_CAPACITY: usize = 4096;

/// What a request to the node port asks of the node object, as the
/// SubjectAccessReview's resource attributes (group "", version v1,
/// resource `nodes`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAttributes {
    /// The Kubernetes verb of the HTTP method ("" for others, as upstream).
    pub verb: &'static str,
    /// `stats`, `metrics`, `log`, `spec`, `checkpoint`, else `proxy`.
    pub subresource: &'static str,
    /// The node's name.
    pub name: String,
}

/// The attributes of `method path` on node `node_name`
/// (`nodeAuthorizerAttributesGetter.GetRequestAttributes`).
#[must_use]
pub fn request_attributes(node_name: &str, method: &Method, path: &str) -> NodeAttributes {
    let verb = match *method {
        Method::POST => "create",
        Method::GET => "get",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "",
    };
    let subresource = [
        ("/stats", "stats"),
        ("/metrics", "metrics"),
        ("/logs", "log"),
        ("/spec", "spec"),
        ("/checkpoint", "checkpoint"),
    ]
    .into_iter()
    .find(|(prefix, _)| is_subpath(path, prefix))
    .map_or("proxy", |(_, sub)| sub);
    NodeAttributes {
        verb,
        subresource,
        name: node_name.to_owned(),
    }
}

/// Whether `subpath` is `path` or below it (upstream's `isSubpath`).
fn is_subpath(subpath: &str, path: &str) -> bool {
    let path = path.trim_end_matches('/');
    subpath == path
        || subpath
            .strip_prefix(path)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Why a request to the node port was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No credential, or one the API server did not accept.
    #[error("Unauthorized")]
    Unauthorized,
    /// The API server said no (or had no opinion).
    #[error("Forbidden (user={user}, verb={verb}, resource=nodes, subresource={subresource})")]
    Forbidden {
        /// The caller.
        user: String,
        /// The verb asked about.
        verb: &'static str,
        /// The subresource asked about.
        subresource: &'static str,
    },
    /// The API server could not be asked.
    #[error(
        "Authorization error (user={user}, verb={verb}, resource=nodes, subresource={subresource})"
    )]
    AuthorizationError {
        /// The caller.
        user: String,
        /// The verb asked about.
        verb: &'static str,
        /// The subresource asked about.
        subresource: &'static str,
        /// Why asking failed.
        #[source]
        source: ReviewError,
    },
}

impl Refusal {
    /// The HTTP status and Kubernetes reason it is answered with.
    #[must_use]
    pub fn status(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "Unauthorized"),
            Self::Forbidden { .. } => (StatusCode::FORBIDDEN, "Forbidden"),
            Self::AuthorizationError { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
        }
    }
}

/// Why a review could not be had from the API server.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The node-sync call failed.
    #[error("failed to ask the API server for a review")]
    Call(#[from] tonic::Status),
    /// The answer was not a review.
    #[error("failed to decode the API server's review")]
    Decode(#[from] serde_json::Error),
}

/// A bounded map whose entries expire; the clock is the caller's (`now`
/// arguments), so tests need no waiting.
#[derive(Debug)]
pub struct TtlCache<K, V> {
    entries: Mutex<HashMap<K, (V, Instant)>>,
    capacity: usize,
}

impl<K: std::hash::Hash + Eq + Clone, V: Clone> TtlCache<K, V> {
    /// An empty cache of at most `capacity` entries.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// The value under `key` unless it expired by `now`.
    pub fn get(&self, key: &K, now: Instant) -> Option<V> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match entries.get(key) {
            Some((value, expires)) if *expires > now => Some(value.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Keeps `value` under `key` until `now + ttl`; when full, expired
    /// entries go first, then the one closest to expiring.
    pub fn insert(&self, key: K, value: V, ttl: Duration, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, (_, expires)| *expires > now);
            if entries.len() >= self.capacity
                && let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, (_, expires))| *expires)
                    .map(|(k, _)| k.clone())
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(key, (value, now + ttl));
    }

    /// How many entries it holds (expired ones included until touched).
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether it holds nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The clock the caches read.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// The node port's authenticator and authorizer (webhook mode over node
/// sync). Cheap to clone.
#[derive(Clone)]
pub struct NodeAuth {
    inner: Arc<Inner>,
}

struct Inner {
    api: Arc<dyn NodeApi>,
    node_name: String,
    /// Token SHA-256 → the user it authenticates (`None`: not a valid token).
    tokens: TtlCache<[u8; 32], Option<UserInfo>>,
    /// A SubjectAccessReview's spec (JSON) → allowed.
    access: TtlCache<String, bool>,
    clock: Clock,
}

impl std::fmt::Debug for NodeAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeAuth")
            .field("node_name", &self.inner.node_name)
            .finish_non_exhaustive()
    }
}

impl NodeAuth {
    /// Node `node_name`'s port, asking the API server through `api`.
    #[must_use]
    pub fn new(api: Arc<dyn NodeApi>, node_name: &str) -> Self {
        Self::with_clock(api, node_name, Arc::new(Instant::now))
    }

    /// [`NodeAuth::new`] with the caches reading `clock`.
    #[must_use]
    pub fn with_clock(api: Arc<dyn NodeApi>, node_name: &str, clock: Clock) -> Self {
        Self {
            inner: Arc::new(Inner {
                api,
                node_name: node_name.to_owned(),
                tokens: TtlCache::new(CACHE_CAPACITY),
                access: TtlCache::new(CACHE_CAPACITY),
                clock,
            }),
        }
    }

    /// Who sent `method path` (with a verified client certificate naming
    /// `certificate`, if any), once they may: the kubelet's auth filter.
    #[tracing::instrument(skip_all, fields(%method, %path))]
    pub async fn admit(
        &self,
        certificate: Option<&UserInfo>,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<UserInfo, Refusal> {
        let user = self.authenticate(certificate, headers).await?;
        let attrs = request_attributes(&self.inner.node_name, method, path);
        self.authorize(&user, &attrs).await?;
        Ok(user)
    }

    /// The caller: the certificate's user, else the bearer token's.
    pub async fn authenticate(
        &self,
        certificate: Option<&UserInfo>,
        headers: &HeaderMap,
    ) -> Result<UserInfo, Refusal> {
        if let Some(user) = certificate.filter(|u| !u.name.is_empty()) {
            return Ok(skep_user::with_authenticated(user.clone()));
        }
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(skep_user::bearer_token)
            .ok_or(Refusal::Unauthorized)?;
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = (self.inner.clock)();
        let reviewed = if let Some(cached) = self.inner.tokens.get(&key, now) {
            cached
        } else {
            let reviewed = self.review_token(token).await.map_err(|err| {
                tracing::warn!(err = %error_chain(&err), "unable to authenticate the request due to an error");
                Refusal::Unauthorized
            })?;
            self.inner
                .tokens
                .insert(key, reviewed.clone(), TOKEN_TTL, now);
            reviewed
        };
        reviewed
            .map(skep_user::with_authenticated)
            .ok_or(Refusal::Unauthorized)
    }

    /// `Ok` when `user` may do `attrs` to the node.
    pub async fn authorize(&self, user: &UserInfo, attrs: &NodeAttributes) -> Result<(), Refusal> {
        let spec = access_spec(user, attrs);
        let key = spec.to_string();
        let now = (self.inner.clock)();
        let allowed = if let Some(cached) = self.inner.access.get(&key, now) {
            cached
        } else {
            let allowed = self.review_access(spec).await.map_err(|source| {
                tracing::warn!(err = %error_chain(&source), user = %user.name, "authorization error");
                Refusal::AuthorizationError {
                    user: user.name.clone(),
                    verb: attrs.verb,
                    subresource: attrs.subresource,
                    source,
                }
            })?;
            let ttl = if allowed { ALLOWED_TTL } else { DENIED_TTL };
            self.inner.access.insert(key, allowed, ttl, now);
            allowed
        };
        if allowed {
            Ok(())
        } else {
            tracing::debug!(user = %user.name, verb = attrs.verb, subresource = attrs.subresource, "forbidden");
            Err(Refusal::Forbidden {
                user: user.name.clone(),
                verb: attrs.verb,
                subresource: attrs.subresource,
            })
        }
    }

    /// The user `token` authenticates as, per the API server's TokenReview.
    async fn review_token(&self, token: &str) -> Result<Option<UserInfo>, ReviewError> {
        let review = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "metadata": {},
            "spec": {"token": token},
        });
        let answer: Value = serde_json::from_slice(
            &self
                .inner
                .api
                .review_token(serde_json::to_vec(&review)?)
                .await?,
        )?;
        let status = answer.get("status").unwrap_or(&Value::Null);
        if status.get("authenticated").and_then(Value::as_bool) != Some(true) {
            if let Some(error) = status.get("error").and_then(Value::as_str) {
                tracing::debug!(%error, "bearer token refused");
            }
            return Ok(None);
        }
        Ok(Some(user_of(status.get("user").unwrap_or(&Value::Null))))
    }

    /// Whether the API server's SubjectAccessReview of `spec` allows it.
    async fn review_access(&self, spec: Value) -> Result<bool, ReviewError> {
        let review = json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "metadata": {},
            "spec": spec,
        });
        let answer: Value = serde_json::from_slice(
            &self
                .inner
                .api
                .review_access(serde_json::to_vec(&review)?)
                .await?,
        )?;
        Ok(answer.pointer("/status/allowed").and_then(Value::as_bool) == Some(true))
    }
}

/// A SubjectAccessReview spec asking whether `user` may do `attrs`
/// (what the webhook authorizer sends).
fn access_spec(user: &UserInfo, attrs: &NodeAttributes) -> Value {
    let mut spec = json!({
        "user": user.name,
        "groups": user.groups,
        "resourceAttributes": {
            "verb": attrs.verb,
            "group": "",
            "version": "v1",
            "resource": "nodes",
            "subresource": attrs.subresource,
            "name": attrs.name,
        },
    });
    if let Some(obj) = spec.as_object_mut() {
        if !user.uid.is_empty() {
            obj.insert("uid".into(), user.uid.clone().into());
        }
        if !user.extra.is_empty() {
            obj.insert("extra".into(), json!(user.extra));
        }
    }
    spec
}

/// A TokenReview status's `user` (`authentication.k8s.io/v1 UserInfo`).
fn user_of(info: &Value) -> UserInfo {
    UserInfo::from_json(info, "username")
}

/// `err` and its sources, joined.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
#[path = "auth_test.rs"]
mod tests;
