//! Token payloads as upstream writes them (`pkg/serviceaccount/claims.go`,
//! `legacy.go`): the bound token's standard claims plus the `kubernetes.io`
//! private claim, and the flat claims of legacy secret-based tokens.
//!
//! go-jose merges the claim sets into one JSON object whose keys Go sorts,
//! so every struct here declares its fields in sorted order and serializes
//! byte-for-byte as kube-apiserver's tokens do.

use serde::de::{self, Deserializer};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use skep_user::service_account_username;

/// The issuer of legacy secret-based tokens (`serviceaccount.LegacyIssuer`).
pub const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";

/// A name and UID, as the `serviceaccount`, `pod`, `secret` and `node`
/// claims carry them (`ref`; both fields `omitempty`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    /// The object's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The object's UID.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
}

impl ObjectRef {
    /// A reference by name and UID.
    pub fn new(name: impl Into<String>, uid: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            uid: uid.into(),
        }
    }
}

/// The `kubernetes.io` private claim of bound tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaims {
    /// The service account's namespace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// The node: the token's bound object, or the node a bound pod runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ObjectRef>,
    /// The bound pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
    /// The bound secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectRef>,
    /// The service account (always written: Go's `omitempty` does not omit
    /// structs).
    #[serde(default)]
    pub serviceaccount: ObjectRef,
    /// Unix seconds after which use of the token is reported as stale (set
    /// only on extended kubelet tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnafter: Option<i64>,
}

/// What a TokenRequest binds the token to (`spec.boundObjectRef`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoundObject {
    /// A pod, with the node it is scheduled to when known (the UID is empty
    /// when the Node object was not found, as upstream does).
    Pod {
        /// The pod.
        pod: ObjectRef,
        /// Its node.
        node: Option<ObjectRef>,
    },
    /// A secret.
    Secret(ObjectRef),
    /// A node.
    Node(ObjectRef),
}

/// The inputs of upstream's `Claims()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimsRequest {
    /// The service account's namespace.
    pub namespace: String,
    /// The service account.
    pub service_account: ObjectRef,
    /// The bound object, if any.
    pub bound: Option<BoundObject>,
    /// `aud`; empty means none (the token then works only where the
    /// audience check is off).
    pub audiences: Vec<String>,
    /// Lifetime: `exp = now + expiration_seconds`.
    pub expiration_seconds: i64,
    /// Zero for none, else `warnafter = now + warn_after_seconds`.
    pub warn_after_seconds: i64,
    /// Unix seconds.
    pub now: i64,
    /// `jti`; see [`new_jti`].
    pub jti: String,
}

/// A fresh random `jti` (a v4 UUID, as upstream's `uuid.NewString`).
pub fn new_jti() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The JWT `aud` claim: one audience is written as a string, more as an
/// array (go-jose's `Audience`); both forms are read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audience(pub Vec<String>);

impl Serialize for Audience {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => serializer.serialize_str(one),
            many => many.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Audience {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            One(String),
            Many(Vec<String>),
        }
        Ok(Self(match Form::deserialize(deserializer)? {
            Form::One(one) => vec![one],
            Form::Many(many) => many,
        }))
    }
}

impl Audience {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Reads a JSON NumericDate: an integer, or a float truncated as go-jose does.
fn numeric_date<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    let Some(n) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    if let Some(i) = n.as_i64() {
        return Ok(Some(i));
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "go-jose truncates float NumericDates to whole seconds"
    )]
    n.as_f64()
        .filter(|f| f.is_finite())
        .map(|f| Some(f as i64))
        .ok_or_else(|| de::Error::custom("invalid NumericDate"))
}

/// A bound (TokenRequest) token's payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Audiences.
    #[serde(default, skip_serializing_if = "Audience::is_empty")]
    pub aud: Audience,
    /// Expiry, Unix seconds.
    #[serde(
        default,
        deserialize_with = "numeric_date",
        skip_serializing_if = "Option::is_none"
    )]
    pub exp: Option<i64>,
    /// Issued at, Unix seconds.
    #[serde(
        default,
        deserialize_with = "numeric_date",
        skip_serializing_if = "Option::is_none"
    )]
    pub iat: Option<i64>,
    /// Issuer; the signer sets it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub iss: String,
    /// Token id; the user's `credential-id` extra is `JTI=<jti>`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jti: String,
    /// The private claim.
    #[serde(rename = "kubernetes.io", default)]
    pub kubernetes: KubernetesClaims,
    /// Not before, Unix seconds.
    #[serde(
        default,
        deserialize_with = "numeric_date",
        skip_serializing_if = "Option::is_none"
    )]
    pub nbf: Option<i64>,
    /// `system:serviceaccount:NS:NAME`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sub: String,
}

impl Claims {
    /// Builds the claims as upstream's `Claims()` does: `iat = nbf = now`,
    /// `exp = now + expiration_seconds`, `warnafter` when asked, the bound
    /// object (and a bound pod's node). `iss` is left for the signer.
    pub fn new(request: &ClaimsRequest) -> Self {
        let now = request.now;
        let mut kubernetes = KubernetesClaims {
            namespace: request.namespace.clone(),
            serviceaccount: request.service_account.clone(),
            ..KubernetesClaims::default()
        };
        match &request.bound {
            Some(BoundObject::Pod { pod, node }) => {
                kubernetes.pod = Some(pod.clone());
                kubernetes.node.clone_from(node);
            }
            Some(BoundObject::Secret(secret)) => kubernetes.secret = Some(secret.clone()),
            Some(BoundObject::Node(node)) => kubernetes.node = Some(node.clone()),
            None => {}
        }
        if request.warn_after_seconds != 0 {
            kubernetes.warnafter = Some(now.saturating_add(request.warn_after_seconds));
        }
        Self {
            aud: Audience(request.audiences.clone()),
            exp: Some(now.saturating_add(request.expiration_seconds)),
            iat: Some(now),
            iss: String::new(),
            jti: request.jti.clone(),
            kubernetes,
            nbf: Some(now),
            sub: service_account_username(&request.namespace, &request.service_account.name),
        }
    }
}

/// A legacy secret-based token's payload (`LegacyClaims`): no audience, no
/// expiry, valid as long as its secret holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyClaims {
    /// Always [`LEGACY_ISSUER`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub iss: String,
    /// The service account's namespace.
    #[serde(rename = "kubernetes.io/serviceaccount/namespace", default)]
    pub namespace: String,
    /// The secret holding the token.
    #[serde(rename = "kubernetes.io/serviceaccount/secret.name", default)]
    pub secret_name: String,
    /// The service account's name.
    #[serde(rename = "kubernetes.io/serviceaccount/service-account.name", default)]
    pub service_account_name: String,
    /// The service account's UID.
    #[serde(rename = "kubernetes.io/serviceaccount/service-account.uid", default)]
    pub service_account_uid: String,
    /// `system:serviceaccount:NS:NAME`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sub: String,
}

impl LegacyClaims {
    /// The claims of a token for `secret_name` of the service account.
    pub fn new(namespace: &str, service_account: &ObjectRef, secret_name: &str) -> Self {
        Self {
            iss: LEGACY_ISSUER.to_owned(),
            namespace: namespace.to_owned(),
            secret_name: secret_name.to_owned(),
            service_account_name: service_account.name.clone(),
            service_account_uid: service_account.uid.clone(),
            sub: service_account_username(namespace, &service_account.name),
        }
    }
}

#[cfg(test)]
#[path = "claims_test.rs"]
mod tests;
