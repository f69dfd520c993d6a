//! JWS compact serialization: `base64url(header) . base64url(payload) .
//! base64url(signature)`, no padding, header `{"alg":…,"kid":…}` as go-jose
//! writes it for kube-apiserver (no `typ`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::claims::{Claims, LEGACY_ISSUER, LegacyClaims};
use crate::key::{KeyError, SigningKey};

/// Why a token could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The claims did not serialize (cannot happen for this crate's types).
    #[error("failed to encode token claims")]
    Encode(#[source] serde_json::Error),
    /// The key refused to sign.
    #[error("failed to generate token")]
    Sign(#[source] KeyError),
}

/// The protected header, keys in go-jose's (sorted) order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Header {
    pub(crate) alg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) kid: String,
}

/// Signs serialized claims into a compact JWS.
pub(crate) fn encode<T: Serialize>(key: &SigningKey, claims: &T) -> Result<String, SignError> {
    let header = Header {
        alg: key.algorithm().as_str().to_owned(),
        kid: key.key_id().to_owned(),
    };
    let header = serde_json::to_vec(&header).map_err(SignError::Encode)?;
    let payload = serde_json::to_vec(claims).map_err(SignError::Encode)?;
    let mut token = URL_SAFE_NO_PAD.encode(header);
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(payload));
    let signature = key.sign(token.as_bytes()).map_err(SignError::Sign)?;
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(signature));
    Ok(token)
}

/// The token generator (`JWTTokenGenerator`): signs with one key and stamps
/// its issuer (`--service-account-issuer`, the first one) into `iss`.
#[derive(Debug)]
pub struct TokenSigner {
    issuer: String,
    key: SigningKey,
}

impl TokenSigner {
    /// A signer for `issuer` with `key`.
    pub fn new(issuer: impl Into<String>, key: SigningKey) -> Self {
        Self {
            issuer: issuer.into(),
            key,
        }
    }

    /// The issuer written into `iss`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The signing key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// A bound token. The issuer overrides any `iss` in `claims`, as
    /// upstream's generator applies it last.
    pub fn sign(&self, claims: &Claims) -> Result<String, SignError> {
        let mut claims = claims.clone();
        claims.iss.clone_from(&self.issuer);
        encode(&self.key, &claims)
    }

    /// A legacy secret-based token, issued by [`LEGACY_ISSUER`] as the
    /// tokens controller's generator does.
    pub fn sign_legacy(&self, claims: &LegacyClaims) -> Result<String, SignError> {
        let mut claims = claims.clone();
        LEGACY_ISSUER.clone_into(&mut claims.iss);
        encode(&self.key, &claims)
    }
}

/// A compact JWS split and decoded, not yet verified.
#[derive(Debug)]
pub(crate) struct Parsed<'a> {
    pub(crate) header: Header,
    pub(crate) payload: Vec<u8>,
    /// `header.payload`, the signed bytes.
    pub(crate) signing_input: &'a str,
    pub(crate) signature: Vec<u8>,
}

/// Splits and decodes a compact JWS; `None` when it is not one (go-jose's
/// `ParseSigned` failing, which upstream treats as "not my token").
pub(crate) fn parse(token: &str) -> Option<Parsed<'_>> {
    let mut parts = token.split('.');
    let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let signing_input = &token[..header.len() + 1 + payload.len()];
    let header: Header = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
    Some(Parsed {
        header,
        payload: URL_SAFE_NO_PAD.decode(payload).ok()?,
        signing_input,
        signature: URL_SAFE_NO_PAD.decode(signature).ok()?,
    })
}

/// The unverified `iss` of a token, as upstream's `hasCorrectIssuer` reads
/// it before anything else: `None` for JSON-serialized JWS, anything but
/// three segments, or a payload that is not base64url JSON.
pub(crate) fn unverified_issuer(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Iss {
        #[serde(default)]
        iss: String,
    }
    if token.trim_start().starts_with('{') {
        return None;
    }
    let parts: Vec<&str> = token.split('.').collect();
    let [_, payload, _] = parts.as_slice() else {
        return None;
    };
    let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<Iss>(&payload).ok().map(|c| c.iss)
}
