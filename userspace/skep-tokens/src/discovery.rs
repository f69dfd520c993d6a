//! OIDC discovery for the service-account issuer
//! (`pkg/serviceaccount/openidmetadata.go`): the provider configuration at
//! [`OPENID_CONFIG_PATH`] and the key set at [`JWKS_PATH`], serialized as
//! upstream (go-jose) does.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

use crate::der::{self, SubjectPublicKey};
use crate::key::PublicKey;

/// Where the provider configuration is served.
pub const OPENID_CONFIG_PATH: &str = "/.well-known/openid-configuration";
/// Where the key set is served by default.
pub const JWKS_PATH: &str = "/openid/v1/jwks";
/// `Cache-Control: public, max-age=…` for both documents (the static key
/// getter's `GetCacheAgeMaxSeconds`).
pub const CACHE_MAX_AGE_SECONDS: u32 = 3600;

/// Why the discovery documents cannot be served (upstream logs this and
/// skips installing the endpoints).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// No issuer.
    #[error("empty issuer URL")]
    EmptyIssuer,
    /// Neither a JWKS URI nor an external address.
    #[error("either the JWKS URI or the default external address, or both, must be set")]
    NoJwksUri,
    /// The issuer is not https.
    #[error("issuer URL must use https scheme, got: {0}")]
    IssuerScheme(String),
    /// The issuer has a query.
    #[error("issuer URL may not include a query, got: {0}")]
    IssuerQuery(String),
    /// The issuer has a fragment.
    #[error("issuer URL may not include a fragment, got: {0}")]
    IssuerFragment(String),
    /// The JWKS URI is not https.
    #[error("jwksURI requires https scheme, parsed as: {0}")]
    JwksScheme(String),
    /// No keys.
    #[error("no keys provided for validating keyset")]
    NoKeys,
}

/// One JSON Web Key, fields in go-jose's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Jwk {
    /// Always `sig`.
    #[serde(rename = "use")]
    pub use_: String,
    /// `EC` or `RSA`.
    pub kty: String,
    /// The key id.
    pub kid: String,
    /// `P-256` for EC keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// `ES256` or `RS256`.
    pub alg: String,
    /// EC x coordinate (32 bytes, base64url).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// EC y coordinate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// RSA modulus.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA public exponent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
}

impl Jwk {
    /// The public JWK of a key.
    pub fn new(key: &PublicKey) -> Self {
        let b64 = |bytes: &[u8]| Some(URL_SAFE_NO_PAD.encode(bytes));
        let mut jwk = Self {
            use_: "sig".to_owned(),
            kty: String::new(),
            kid: key.key_id().to_owned(),
            crv: None,
            alg: key.algorithm().as_str().to_owned(),
            x: None,
            y: None,
            n: None,
            e: None,
        };
        match key.subject_public_key() {
            SubjectPublicKey::EcP256(point) => {
                "EC".clone_into(&mut jwk.kty);
                jwk.crv = Some("P-256".to_owned());
                // `04 || x || y`, fixed 32-byte coordinates.
                jwk.x = b64(point.get(1..33).unwrap_or_default());
                jwk.y = b64(point.get(33..65).unwrap_or_default());
            }
            SubjectPublicKey::Rsa(pkcs1) => {
                "RSA".clone_into(&mut jwk.kty);
                // Validated when the key was made.
                let (n, e) = der::rsa_components(pkcs1).unwrap_or_default();
                jwk.n = b64(n);
                jwk.e = b64(e);
            }
        }
        jwk
    }
}

/// The key set document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Jwks {
    /// The keys.
    pub keys: Vec<Jwk>,
}

/// The provider configuration document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpenIdConfiguration {
    /// The issuer URL.
    pub issuer: String,
    /// Where the key set is.
    pub jwks_uri: String,
    /// `["id_token"]`.
    pub response_types_supported: Vec<String>,
    /// `["public"]`.
    pub subject_types_supported: Vec<String>,
    /// The keys' algorithms, sorted and de-duplicated.
    pub id_token_signing_alg_values_supported: Vec<String>,
}

/// Both documents, rendered once (as upstream pre-renders them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    /// `/.well-known/openid-configuration` body.
    pub config_json: String,
    /// JWKS body.
    pub keyset_json: String,
}

impl Discovery {
    /// Builds the documents as `NewOpenIDMetadataProvider` does: the issuer
    /// must be an https URL without query or fragment; `jwks_uri`
    /// (`--service-account-jwks-uri`) must be https, and when empty is
    /// `https://<external_address>/openid/v1/jwks`.
    pub fn new(
        issuer: &str,
        jwks_uri: &str,
        external_address: &str,
        keys: &[PublicKey],
    ) -> Result<Self, DiscoveryError> {
        if issuer.is_empty() {
            return Err(DiscoveryError::EmptyIssuer);
        }
        if jwks_uri.is_empty() && external_address.is_empty() {
            return Err(DiscoveryError::NoJwksUri);
        }
        if !issuer.starts_with("https://") {
            return Err(DiscoveryError::IssuerScheme(issuer.to_owned()));
        }
        if issuer.contains('?') {
            return Err(DiscoveryError::IssuerQuery(issuer.to_owned()));
        }
        if issuer.contains('#') {
            return Err(DiscoveryError::IssuerFragment(issuer.to_owned()));
        }
        let jwks_uri = if jwks_uri.is_empty() {
            format!("https://{external_address}{JWKS_PATH}")
        } else if jwks_uri.starts_with("https://") {
            jwks_uri.to_owned()
        } else {
            return Err(DiscoveryError::JwksScheme(jwks_uri.to_owned()));
        };
        if keys.is_empty() {
            return Err(DiscoveryError::NoKeys);
        }
        let jwks = Jwks {
            keys: keys.iter().map(Jwk::new).collect(),
        };
        let mut algs: Vec<String> = jwks.keys.iter().map(|k| k.alg.clone()).collect();
        algs.sort();
        algs.dedup();
        let config = OpenIdConfiguration {
            issuer: issuer.to_owned(),
            jwks_uri,
            response_types_supported: vec!["id_token".to_owned()],
            subject_types_supported: vec!["public".to_owned()],
            id_token_signing_alg_values_supported: algs,
        };
        Ok(Self {
            config_json: to_json(&config),
            keyset_json: to_json(&jwks),
        })
    }
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Plain structs of strings always serialize.
    serde_json::to_string(value).unwrap_or_default()
}

#[cfg(test)]
#[path = "discovery_test.rs"]
mod tests;
