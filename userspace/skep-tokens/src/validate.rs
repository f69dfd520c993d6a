//! Token authentication as kube-apiserver's service-account authenticators do
//! it (`pkg/serviceaccount/jwt.go` `AuthenticateToken`, `claims.go` and
//! `legacy.go` validators): issuer, signature, audiences, times, then the
//! bound objects, then the user.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use skep_user::{
    ALL_SERVICE_ACCOUNTS, UserInfo, service_account_namespace_group, service_account_username,
    split_service_account_username,
};

use crate::claims::{Claims, LEGACY_ISSUER, LegacyClaims};
use crate::jwt;
use crate::key::PublicKey;

/// Clock skew tolerated on `exp`, `nbf` and `iat`, and on deletions
/// (go-jose's `jwt.DefaultLeeway`).
pub const LEEWAY_SECONDS: i64 = 60;

/// User extra: the bound pod's name.
pub const POD_NAME_KEY: &str = "authentication.kubernetes.io/pod-name";
/// User extra: the bound pod's UID.
pub const POD_UID_KEY: &str = "authentication.kubernetes.io/pod-uid";
/// User extra: the node's name.
pub const NODE_NAME_KEY: &str = "authentication.kubernetes.io/node-name";
/// User extra: the node's UID.
pub const NODE_UID_KEY: &str = "authentication.kubernetes.io/node-uid";
/// User extra: `JTI=<jti>`.
pub const CREDENTIAL_ID_KEY: &str = "authentication.kubernetes.io/credential-id";
/// Audit annotation for a token used after its `warnafter`.
pub const STALE_TOKEN_ANNOTATION: &str = "authentication.k8s.io/stale-token";
/// Audit annotation for a token without audiences (a legacy token).
pub const LEGACY_TOKEN_ANNOTATION: &str = "authentication.k8s.io/legacy-token";
/// Label that marks a legacy token secret as no longer accepted.
pub const INVALID_SINCE_LABEL: &str = "kubernetes.io/legacy-token-invalid-since";

/// go-jose's message for any failed signature check.
const CRYPTO_FAILURE: &str = "go-jose/go-jose: error in cryptographic primitive";

/// Why a token that is ours (its issuer matched) was refused. The messages
/// are upstream's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No key has the token's `kid` (or no keys at all).
    #[error("invalid signature, no keys found")]
    NoKeys,
    /// No candidate key verified the signature (the messages of each
    /// attempt, aggregated as `utilerrors.NewAggregate` prints them).
    #[error("{0}")]
    BadSignature(String),
    /// The signed `iss` is not accepted.
    #[error("token issuer {0:?} is invalid")]
    Issuer(String),
    /// No token audience is among the target audiences.
    #[error("token audiences {} is invalid for the target audiences {}", go_quote_list(.token), go_quote_list(.target))]
    Audience {
        /// The token's audiences.
        token: Vec<String>,
        /// The audiences the request accepts.
        target: Vec<String>,
    },
    /// `exp` plus leeway is past.
    #[error("service account token has expired")]
    Expired,
    /// `nbf` minus leeway is still ahead.
    #[error("service account token is not valid yet")]
    NotValidYet,
    /// `iat` minus leeway is still ahead.
    #[error("service account token is issued in the future")]
    IssuedInTheFuture,
    /// The payload did not decode into the expected claims.
    #[error(
        "service account token claims could not be validated due to unexpected validation error"
    )]
    Claims,
    /// The service account is gone.
    #[error("serviceaccounts {0:?} not found")]
    ServiceAccountNotFound(String),
    /// The service account was deleted more than the leeway ago.
    #[error("service account {namespace}/{name} has been deleted")]
    ServiceAccountDeleted {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// The service account was recreated.
    #[error("service account UID ({current}) does not match claim ({claimed})")]
    ServiceAccountUid {
        /// The live object's UID.
        current: String,
        /// The token's.
        claimed: String,
    },
    /// The bound secret, pod or node is gone or being deleted.
    #[error("service account token has been invalidated")]
    Invalidated,
    /// The bound secret was recreated.
    #[error("secret UID ({current}) does not match service account secret ref claim ({claimed})")]
    SecretUid {
        /// The live object's UID.
        current: String,
        /// The token's.
        claimed: String,
    },
    /// The bound pod was recreated.
    #[error("pod UID ({current}) does not match service account pod ref claim ({claimed})")]
    PodUid {
        /// The live object's UID.
        current: String,
        /// The token's.
        claimed: String,
    },
    /// The bound node was recreated.
    #[error("node UID ({current}) does not match service account node ref claim ({claimed})")]
    NodeUid {
        /// The live object's UID.
        current: String,
        /// The token's.
        claimed: String,
    },
    /// A legacy token lacks a claim (`sub`, `namespace`, `secretName`,
    /// `serviceAccountName` or `serviceAccountUID`).
    #[error("{0} claim is missing")]
    LegacyClaimMissing(&'static str),
    /// A legacy token's `sub` disagrees with its other claims.
    #[error("sub claim is invalid")]
    LegacySubject,
    /// A legacy token's secret is gone or being deleted.
    #[error("Token has been invalidated")]
    LegacyInvalidated,
    /// A legacy token no longer matches its secret.
    #[error("Token does not match server's copy")]
    LegacyMismatch,
    /// A legacy token's service account is being deleted.
    #[error("ServiceAccount {namespace}/{name} has been deleted")]
    LegacyServiceAccountDeleted {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// A legacy token's service account was recreated.
    #[error("ServiceAccount UID ({current}) does not match claim ({claimed})")]
    LegacyServiceAccountUid {
        /// The live object's UID.
        current: String,
        /// The token's.
        claimed: String,
    },
    /// The legacy token's secret carries [`INVALID_SINCE_LABEL`].
    #[error(
        "the token in secret {namespace}/{secret} for service account {namespace}/{service_account} has been marked invalid. Use tokens from the TokenRequest API or manually created secret-based tokens, or remove the '{INVALID_SINCE_LABEL}' label from the secret to temporarily allow use of this token"
    )]
    LegacyMarkedInvalid {
        /// Namespace.
        namespace: String,
        /// The secret.
        secret: String,
        /// The service account.
        service_account: String,
    },
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
fn go_quote_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(" "))
}

/// The live state of an object a token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectState {
    /// Its UID now.
    pub uid: String,
    /// `metadata.deletionTimestamp`, Unix seconds, if it is being deleted.
    pub deletion_timestamp: Option<i64>,
}

/// A legacy token's secret as the validator needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacySecret {
    /// `data.token`.
    pub token: Vec<u8>,
    /// Whether it has a deletion timestamp.
    pub deleting: bool,
    /// The [`INVALID_SINCE_LABEL`] label's value, if set.
    pub invalid_since: Option<String>,
}

/// The caller's view of the objects tokens are bound to (upstream's
/// `ServiceAccountTokenGetter`): `None` when not found.
pub trait BoundObjects {
    /// A ServiceAccount.
    fn service_account(&self, namespace: &str, name: &str) -> Option<ObjectState>;
    /// A Pod.
    fn pod(&self, namespace: &str, name: &str) -> Option<ObjectState>;
    /// A Secret.
    fn secret(&self, namespace: &str, name: &str) -> Option<ObjectState>;
    /// A Node.
    fn node(&self, name: &str) -> Option<ObjectState>;
    /// A legacy token's Secret; by default none, which refuses legacy tokens
    /// (`Token has been invalidated`).
    fn legacy_secret(&self, namespace: &str, name: &str) -> Option<LegacySecret> {
        let _ = (namespace, name);
        None
    }
}

/// What the validator learnt (`ServiceAccountInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceAccountInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
    /// Bound pod name, or empty.
    pub pod_name: String,
    /// Bound pod UID, or empty.
    pub pod_uid: String,
    /// Node name, or empty.
    pub node_name: String,
    /// Node UID, or empty.
    pub node_uid: String,
    /// `JTI=<jti>`, or empty.
    pub credential_id: String,
}

impl ServiceAccountInfo {
    /// The user, as upstream's `ServiceAccountInfo.UserInfo()` builds it.
    pub fn user_info(&self) -> UserInfo {
        let mut extra = BTreeMap::new();
        if !self.pod_name.is_empty() && !self.pod_uid.is_empty() {
            extra.insert(POD_NAME_KEY.to_owned(), vec![self.pod_name.clone()]);
            extra.insert(POD_UID_KEY.to_owned(), vec![self.pod_uid.clone()]);
        }
        if !self.credential_id.is_empty() {
            extra.insert(
                CREDENTIAL_ID_KEY.to_owned(),
                vec![self.credential_id.clone()],
            );
        }
        if !self.node_name.is_empty() {
            extra.insert(NODE_NAME_KEY.to_owned(), vec![self.node_name.clone()]);
            if !self.node_uid.is_empty() {
                extra.insert(NODE_UID_KEY.to_owned(), vec![self.node_uid.clone()]);
            }
        }
        UserInfo {
            name: service_account_username(&self.namespace, &self.name),
            uid: self.uid.clone(),
            groups: vec![
                ALL_SERVICE_ACCOUNTS.to_owned(),
                service_account_namespace_group(&self.namespace),
            ],
            extra,
        }
    }
}

/// The claims of a token whose issuer, signature, audiences and (for bound
/// tokens) times checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifiedClaims {
    /// A TokenRequest token.
    Bound(Box<Claims>),
    /// A legacy secret-based token.
    Legacy(LegacyClaims),
}

/// A verified token, before its bound objects are looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The claims.
    pub claims: VerifiedClaims,
    /// The token audiences that the request accepts.
    pub audiences: Vec<String>,
    /// Whether the token had no audiences (record [`LEGACY_TOKEN_ANNOTATION`]
    /// with the subject).
    pub audienceless: bool,
    token: String,
}

/// A token used past its `warnafter`: record [`STALE_TOKEN_ANNOTATION`] with
/// [`StaleToken::annotation`] and count it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleToken {
    /// The token's `sub`.
    pub subject: String,
    /// How long ago `warnafter` passed.
    pub seconds_after_warning: i64,
}

impl StaleToken {
    /// The audit annotation's value.
    pub fn annotation(&self) -> String {
        format!(
            "subject: {}, seconds after warning threshold: {}",
            self.subject, self.seconds_after_warning
        )
    }
}

/// A successful authentication (`authenticator.Response`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// The service account and what the token is bound to.
    pub service_account: ServiceAccountInfo,
    /// The user.
    pub user: UserInfo,
    /// The accepted audiences.
    pub audiences: Vec<String>,
    /// Set when the token is past its `warnafter`.
    pub stale: Option<StaleToken>,
}

/// The service-account token authenticator.
#[derive(Debug, Clone)]
pub struct Validator {
    issuers: Vec<String>,
    keys: Vec<PublicKey>,
    api_audiences: Vec<String>,
    legacy: bool,
    signatures: Arc<VerifiedSignatures>,
}

/// Tokens whose signature has been checked: a client sends the same token
/// on every request, and the signature of the same bytes checks the same
/// way each time (only the signature check is remembered; expiry and the
/// bound objects are checked on every use). Bounded: when full it starts
/// over.
#[derive(Debug, Default)]
struct VerifiedSignatures {
    tokens: Mutex<HashSet<String>>,
}

impl VerifiedSignatures {
    /// How many tokens are remembered at most.
    const CAPACITY: usize = 4096;

    fn contains(&self, token: &str) -> bool {
        self.tokens
            .lock()
            .is_ok_and(|tokens| tokens.contains(token))
    }

    fn insert(&self, token: &str) {
        if let Ok(mut tokens) = self.tokens.lock() {
            if tokens.len() >= Self::CAPACITY {
                tokens.clear();
            }
            tokens.insert(token.to_owned());
        }
    }
}

impl Validator {
    /// Accepts bound tokens from `issuers` (`--service-account-issuer`),
    /// signed by any of `keys` (`--service-account-key-file`, which includes
    /// the signing key), for `api_audiences` (`--api-audiences`, by default
    /// the first issuer). Legacy tokens are refused until
    /// [`Validator::accept_legacy`].
    pub fn new(issuers: Vec<String>, keys: Vec<PublicKey>, api_audiences: Vec<String>) -> Self {
        Self {
            issuers,
            keys,
            api_audiences,
            legacy: false,
            signatures: Arc::default(),
        }
    }

    /// Also accepts legacy secret-based tokens (issuer [`LEGACY_ISSUER`]),
    /// as kube-apiserver does alongside bound tokens.
    #[must_use]
    pub fn accept_legacy(mut self, accept: bool) -> Self {
        self.legacy = accept;
        self
    }

    /// The verification keys.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// Checks everything but the bound objects. `Ok(None)` means the token is
    /// not a service-account token of ours (unknown issuer, not a compact
    /// JWS): let the next authenticator try. `requested_audiences` are the
    /// request's target audiences; `None` means the API audiences. `now` is
    /// Unix seconds.
    pub fn verify(
        &self,
        token: &str,
        requested_audiences: Option<&[String]>,
        now: i64,
    ) -> Result<Option<Verified>, TokenError> {
        let Some(issuer) = jwt::unverified_issuer(token) else {
            return Ok(None);
        };
        let legacy = issuer == LEGACY_ISSUER && self.legacy;
        if !legacy && !self.issuers.contains(&issuer) {
            return Ok(None);
        }
        let Some(parsed) = jwt::parse(token) else {
            return Ok(None);
        };

        let kid = parsed.header.kid.as_str();
        let candidates: Vec<&PublicKey> = self
            .keys
            .iter()
            .filter(|k| kid.is_empty() || k.key_id() == kid)
            .collect();
        if candidates.is_empty() {
            return Err(TokenError::NoKeys);
        }
        let verified = self.signatures.contains(token)
            || candidates.iter().any(|key| {
                key.algorithm().as_str() == parsed.header.alg
                    && key.verify(parsed.signing_input.as_bytes(), &parsed.signature)
            }) && {
                self.signatures.insert(token);
                true
            };
        if !verified {
            // Every attempt fails with go-jose's one message; the aggregate
            // de-duplicates it.
            return Err(TokenError::BadSignature(CRYPTO_FAILURE.to_owned()));
        }

        let (claims, iss, token_audiences) = if legacy {
            let claims: LegacyClaims =
                serde_json::from_slice(&parsed.payload).map_err(|_| TokenError::Claims)?;
            let iss = claims.iss.clone();
            (VerifiedClaims::Legacy(claims), iss, Vec::new())
        } else {
            let claims: Claims =
                serde_json::from_slice(&parsed.payload).map_err(|_| TokenError::Claims)?;
            let (iss, aud) = (claims.iss.clone(), claims.aud.0.clone());
            (VerifiedClaims::Bound(Box::new(claims)), iss, aud)
        };
        // Re-checked now that it is signed.
        if !(legacy && iss == LEGACY_ISSUER || !legacy && self.issuers.contains(&iss)) {
            return Err(TokenError::Issuer(iss));
        }

        let audienceless = token_audiences.is_empty();
        let token_audiences = if audienceless {
            self.api_audiences.clone()
        } else {
            token_audiences
        };
        let target = requested_audiences.unwrap_or(&self.api_audiences);
        let audiences: Vec<String> = token_audiences
            .iter()
            .filter(|a| target.contains(a))
            .cloned()
            .collect();
        if audiences.is_empty() && !self.api_audiences.is_empty() {
            return Err(TokenError::Audience {
                token: token_audiences,
                target: target.to_vec(),
            });
        }

        if let VerifiedClaims::Bound(claims) = &claims {
            check_times(claims, now)?;
        }
        Ok(Some(Verified {
            claims,
            audiences,
            audienceless,
            token: token.to_owned(),
        }))
    }

    /// [`Validator::verify`], then [`Verified::validate`].
    pub fn authenticate(
        &self,
        token: &str,
        requested_audiences: Option<&[String]>,
        now: i64,
        objects: &impl BoundObjects,
    ) -> Result<Option<Authenticated>, TokenError> {
        match self.verify(token, requested_audiences, now)? {
            Some(verified) => verified.validate(objects, now).map(Some),
            None => Ok(None),
        }
    }
}

/// go-jose's `ValidateWithLeeway` time checks, in its order.
fn check_times(claims: &Claims, now: i64) -> Result<(), TokenError> {
    if claims.nbf.is_some_and(|nbf| now + LEEWAY_SECONDS < nbf) {
        return Err(TokenError::NotValidYet);
    }
    if claims.exp.is_some_and(|exp| now - LEEWAY_SECONDS > exp) {
        return Err(TokenError::Expired);
    }
    if claims.iat.is_some_and(|iat| now + LEEWAY_SECONDS < iat) {
        return Err(TokenError::IssuedInTheFuture);
    }
    Ok(())
}

impl Verified {
    /// Checks that the service account and bound objects still exist with
    /// the token's UIDs (objects deleted more than [`LEEWAY_SECONDS`] ago
    /// count as gone), notes a stale token, and builds the user.
    pub fn validate(
        &self,
        objects: &impl BoundObjects,
        now: i64,
    ) -> Result<Authenticated, TokenError> {
        let (service_account, stale) = match &self.claims {
            VerifiedClaims::Bound(claims) => validate_bound(claims, objects, now)?,
            VerifiedClaims::Legacy(claims) => {
                (validate_legacy(claims, &self.token, objects)?, None)
            }
        };
        Ok(Authenticated {
            user: service_account.user_info(),
            service_account,
            audiences: self.audiences.clone(),
            stale,
        })
    }
}

fn validate_bound(
    claims: &Claims,
    objects: &impl BoundObjects,
    now: i64,
) -> Result<(ServiceAccountInfo, Option<StaleToken>), TokenError> {
    let deleted = |state: &ObjectState| {
        state
            .deletion_timestamp
            .is_some_and(|t| t < now - LEEWAY_SECONDS)
    };
    let k = &claims.kubernetes;
    let namespace = &k.namespace;
    let sa = &k.serviceaccount;
    let live = objects
        .service_account(namespace, &sa.name)
        .ok_or_else(|| TokenError::ServiceAccountNotFound(sa.name.clone()))?;
    if live.uid != sa.uid {
        return Err(TokenError::ServiceAccountUid {
            current: live.uid,
            claimed: sa.uid.clone(),
        });
    }
    if deleted(&live) {
        return Err(TokenError::ServiceAccountDeleted {
            namespace: namespace.clone(),
            name: sa.name.clone(),
        });
    }

    if let Some(secret) = &k.secret {
        let live = objects
            .secret(namespace, &secret.name)
            .ok_or(TokenError::Invalidated)?;
        if live.uid != secret.uid {
            return Err(TokenError::SecretUid {
                current: live.uid,
                claimed: secret.uid.clone(),
            });
        }
        if deleted(&live) {
            return Err(TokenError::Invalidated);
        }
    }

    let mut info = ServiceAccountInfo {
        namespace: namespace.clone(),
        name: sa.name.clone(),
        uid: sa.uid.clone(),
        credential_id: if claims.jti.is_empty() {
            String::new()
        } else {
            format!("JTI={}", claims.jti)
        },
        ..ServiceAccountInfo::default()
    };
    if let Some(pod) = &k.pod {
        let live = objects
            .pod(namespace, &pod.name)
            .ok_or(TokenError::Invalidated)?;
        if live.uid != pod.uid {
            return Err(TokenError::PodUid {
                current: live.uid,
                claimed: pod.uid.clone(),
            });
        }
        if deleted(&live) {
            return Err(TokenError::Invalidated);
        }
        info.pod_name.clone_from(&pod.name);
        info.pod_uid.clone_from(&pod.uid);
    }

    if let Some(node) = &k.node {
        // A pod-bound token's node is informational; a node-bound token's
        // node must still exist.
        if k.pod.is_none() {
            let live = objects.node(&node.name).ok_or(TokenError::Invalidated)?;
            if live.uid != node.uid {
                return Err(TokenError::NodeUid {
                    current: live.uid,
                    claimed: node.uid.clone(),
                });
            }
            if deleted(&live) {
                return Err(TokenError::Invalidated);
            }
        }
        info.node_name.clone_from(&node.name);
        info.node_uid.clone_from(&node.uid);
    }

    let stale = k
        .warnafter
        .filter(|&w| w != 0 && now > w)
        .map(|w| StaleToken {
            subject: claims.sub.clone(),
            seconds_after_warning: now - w,
        });
    Ok((info, stale))
}

fn validate_legacy(
    claims: &LegacyClaims,
    token: &str,
    objects: &impl BoundObjects,
) -> Result<ServiceAccountInfo, TokenError> {
    let missing = TokenError::LegacyClaimMissing;
    if claims.sub.is_empty() {
        return Err(missing("sub"));
    }
    let namespace = &claims.namespace;
    if namespace.is_empty() {
        return Err(missing("namespace"));
    }
    if claims.secret_name.is_empty() {
        return Err(missing("secretName"));
    }
    let name = &claims.service_account_name;
    if name.is_empty() {
        return Err(missing("serviceAccountName"));
    }
    if claims.service_account_uid.is_empty() {
        return Err(missing("serviceAccountUID"));
    }
    if split_service_account_username(&claims.sub) != Some((namespace.as_str(), name.as_str())) {
        return Err(TokenError::LegacySubject);
    }

    let secret = objects
        .legacy_secret(namespace, &claims.secret_name)
        .filter(|s| !s.deleting)
        .ok_or(TokenError::LegacyInvalidated)?;
    if !constant_time_eq(&secret.token, token.as_bytes()) {
        return Err(TokenError::LegacyMismatch);
    }
    let live = objects
        .service_account(namespace, name)
        .ok_or_else(|| TokenError::ServiceAccountNotFound(name.clone()))?;
    if live.deletion_timestamp.is_some() {
        return Err(TokenError::LegacyServiceAccountDeleted {
            namespace: namespace.clone(),
            name: name.clone(),
        });
    }
    if live.uid != claims.service_account_uid {
        return Err(TokenError::LegacyServiceAccountUid {
            current: live.uid,
            claimed: claims.service_account_uid.clone(),
        });
    }
    if secret.invalid_since.is_some_and(|v| !v.is_empty()) {
        return Err(TokenError::LegacyMarkedInvalid {
            namespace: namespace.clone(),
            secret: claims.secret_name.clone(),
            service_account: name.clone(),
        });
    }
    Ok(ServiceAccountInfo {
        namespace: namespace.clone(),
        name: name.clone(),
        uid: claims.service_account_uid.clone(),
        ..ServiceAccountInfo::default()
    })
}

/// `subtle.ConstantTimeCompare` for equal lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
#[path = "validate_test.rs"]
mod tests;
