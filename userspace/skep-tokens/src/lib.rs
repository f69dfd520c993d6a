//! Kubernetes ServiceAccount tokens for skep, as a pure library: no HTTP and
//! no storage. It behaves as kube-apiserver v1.32 does
//! (`pkg/serviceaccount`, `pkg/registry/core/serviceaccount/storage/token.go`).
//!
//! - [`SigningKey`]: the issuer's key (ES256 by default, RS256 accepted),
//!   PEM load/save, key ids as upstream computes them;
//! - [`Claims`]/[`LegacyClaims`] and [`TokenSigner`]: token payloads and
//!   compact JWS signing;
//! - [`Validator`]: issuer, signature, audiences, times, then the bound
//!   objects through the caller's [`BoundObjects`], giving a [`UserInfo`];
//! - [`request`]: TokenRequest defaults, validation, binding and lifetime;
//! - [`Discovery`]: the OIDC configuration and JWKS documents.
//!
//! # Lifetime of projected tokens
//!
//! skep follows Kubernetes. The `kube-api-access` projected volume asks for
//! [`WARN_ONLY_BOUND_TOKEN_EXPIRATION_SECONDS`] (3607 s: one hour, plus
//! seven seconds so the server can recognize the kubelet's request). With
//! `--service-account-extend-token-expiration` on (upstream's default) and
//! a pod-bound request for exactly that lifetime and only API audiences, the
//! server signs the token for [`EXPIRATION_EXTENSION_SECONDS`] (a year) and
//! writes `warnafter` at the requested hour. The token stays valid for the
//! year, so a client that never re-reads the rotated file keeps working, but
//! each use after `warnafter` is reported as stale (audit annotation
//! [`STALE_TOKEN_ANNOTATION`], see [`Authenticated::stale`]) so operators find
//! such clients before turning the extension off. The kubelet still rotates
//! the file as for a one-hour token (after 80 % of it, or 24 h). The response
//! to the TokenRequest reports the one-hour expiry, not the year.
//!
//! Deleting the pod (or recreating it with a new UID) invalidates its tokens
//! at once, whatever their `exp`, with [`LEEWAY_SECONDS`] of grace.
#![deny(missing_docs)]
#![expect(
    clippy::doc_markdown,
    reason = "Kubernetes kind and ASN.1 type names (ServiceAccount, TokenRequest, SubjectPublicKeyInfo, …) are plain words in these docs"
)]

pub mod claims;
mod der;
pub mod discovery;
pub mod jwt;
pub mod key;
mod pem;
pub mod request;
pub mod validate;

pub use claims::{
    Audience, BoundObject, Claims, ClaimsRequest, KubernetesClaims, LEGACY_ISSUER, LegacyClaims,
    ObjectRef, new_jti,
};
pub use discovery::{Discovery, Jwk, Jwks, OpenIdConfiguration};
pub use jwt::{SignError, TokenSigner};
pub use key::{Algorithm, KeyError, PublicKey, SigningKey, key_id_for_spki};
pub use request::{
    EXPIRATION_EXTENSION_SECONDS, RequestError, TokenRequestSpec, TokenSettings,
    WARN_ONLY_BOUND_TOKEN_EXPIRATION_SECONDS,
};
pub use skep_user::UserInfo;
pub use validate::{
    Authenticated, BoundObjects, LEEWAY_SECONDS, ObjectState, STALE_TOKEN_ANNOTATION,
    ServiceAccountInfo, TokenError, Validator, Verified,
};
