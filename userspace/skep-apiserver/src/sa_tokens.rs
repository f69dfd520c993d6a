//! ServiceAccount tokens on the API server: the issuer's signing key, the
//! bearer-token authenticator for tokens it signed, and issuing tokens
//! (TokenRequest over REST and node sync).
//!
//! Interface stub: the authenticator chain calls [`ServiceAccountTokens::authenticate`].

use skep_objects::Objects;
use skep_user::UserInfo;

/// Why a bearer token that this issuer signed was refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TokenRefused(pub String);

/// The API server's ServiceAccount token issuer and authenticator.
#[derive(Clone)]
pub struct ServiceAccountTokens {
    #[expect(dead_code, reason = "interface stub: the issuer reads objects")]
    objects: Objects,
}

impl ServiceAccountTokens {
    /// The issuer over `objects`.
    #[must_use]
    pub fn new(objects: Objects) -> Self {
        Self { objects }
    }

    /// Authenticates a bearer token: `Ok(None)` when it is not a token this
    /// issuer signed (another authenticator may know it), an error when it is
    /// one but no longer valid.
    #[expect(
        clippy::unused_async,
        reason = "interface stub: the real one reads the store"
    )]
    pub async fn authenticate(&self, _token: &str) -> Result<Option<UserInfo>, TokenRefused> {
        Ok(None)
    }
}
