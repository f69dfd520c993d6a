//! Authentication: who a request comes from, as kube-apiserver's
//! authenticator chain decides it (`pkg/kubeapiserver/authenticator`):
//! a verified client certificate (CN = user, O = groups), else a bearer
//! token (`Authorization: Bearer …`, the scheme case-insensitive), else
//! anonymous (`system:anonymous` in `system:unauthenticated`) when allowed.
//! Every authenticated user is also put in `system:authenticated`.
//!
//! A credential that is presented but wrong (a bad token) is a 401 even when
//! anonymous requests are allowed, as upstream's fail-on-error union does.

use axum::http::{HeaderMap, header};
use skep_api::ApiError;
use skep_user::{ALL_UNAUTHENTICATED, ANONYMOUS, UserInfo};

use crate::sa_tokens::ServiceAccountTokens;
use crate::tls::Identity;

/// The authenticator chain.
#[derive(Clone)]
pub struct Authenticator {
    tokens: ServiceAccountTokens,
    anonymous: bool,
}

impl Authenticator {
    /// A chain of client certificates, ServiceAccount tokens and, when
    /// `anonymous` (`--anonymous-auth`), the anonymous user.
    #[must_use]
    pub fn new(tokens: ServiceAccountTokens, anonymous: bool) -> Self {
        Self { tokens, anonymous }
    }

    /// Who sent a request with this verified certificate identity (empty
    /// without one) and these headers; 401 `Unauthorized` when nobody.
    pub async fn authenticate(
        &self,
        certificate: &Identity,
        headers: &HeaderMap,
    ) -> Result<UserInfo, ApiError> {
        if !certificate.is_anonymous() {
            return Ok(certificate_user(certificate));
        }
        if let Some(token) = bearer_token(headers) {
            return match self.tokens.authenticate(token).await {
                Ok(Some(user)) => Ok(with_authenticated(user)),
                Ok(None) => {
                    tracing::debug!("bearer token not recognised by any authenticator");
                    Err(ApiError::unauthorized())
                }
                Err(err) => {
                    tracing::debug!(%err, "bearer token refused");
                    Err(ApiError::unauthorized())
                }
            };
        }
        if self.anonymous {
            Ok(anonymous())
        } else {
            Err(ApiError::unauthorized())
        }
    }
}

/// The user a verified client certificate names (CN = user, O = groups,
/// plus `system:authenticated`), as the x509 authenticator reads it.
#[must_use]
pub fn certificate_user(certificate: &Identity) -> UserInfo {
    let groups: Vec<&str> = certificate.groups.iter().map(String::as_str).collect();
    with_authenticated(UserInfo::new(&certificate.user, &groups))
}

/// The anonymous user (`anonymous.NewAuthenticator`).
#[must_use]
pub fn anonymous() -> UserInfo {
    UserInfo::new(ANONYMOUS, &[ALL_UNAUTHENTICATED])
}

pub use skep_user::with_authenticated;

/// The token of an `Authorization: Bearer <token>` header
/// ([`skep_user::bearer_token`]).
#[must_use]
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    skep_user::bearer_token(headers.get(header::AUTHORIZATION)?.to_str().ok()?)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use skep_user::ALL_AUTHENTICATED;

    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(auth).expect("header"),
        );
        h
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token(&headers("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&headers("bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&headers("BEARER abc")), Some("abc"));
        assert_eq!(bearer_token(&headers("Basic abc")), None);
        assert_eq!(bearer_token(&headers("Bearer")), None);
        assert_eq!(bearer_token(&headers("Bearer  abc")), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }

    #[test]
    fn authenticated_group_added_once() {
        let user = with_authenticated(UserInfo::new("jane", &["dev"]));
        assert_eq!(user.groups, ["dev", ALL_AUTHENTICATED]);
        let again = with_authenticated(user.clone());
        assert_eq!(again, user);
        assert_eq!(
            with_authenticated(anonymous()).groups,
            [ALL_UNAUTHENTICATED]
        );
    }
}
