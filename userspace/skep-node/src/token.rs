//! Pods' ServiceAccount tokens, as the kubelet's token manager
//! (`pkg/kubelet/token/token_manager.go`) keeps them: one cached token per
//! (pod, ServiceAccount, audiences, lifetime), asked for again through
//! [`NodeApi::request_token`] once it is older than 80% of its lifetime or
//! older than 24 hours (less a jitter of up to 10 s, so tokens requested
//! together are not all renewed in the same instant). A failed renewal
//! keeps the cached token while it is still valid.
//!
//! Times are [`tokio::time::Instant`]s, so tests drive refresh with a
//! paused clock.

use std::collections::HashMap;
use std::hash::{Hash as _, Hasher as _};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use skep_proto::v1::TokenRequest;
use tokio::time::Instant;

use crate::api::NodeApi;

/// Tokens are renewed at the latest this long after they were issued.
pub const MAX_TTL: Duration = Duration::from_hours(24);

/// Renewals are brought forward by up to this much.
const MAX_JITTER: Duration = Duration::from_secs(10);

/// The lifetime asked for when a projection names none (what the kubelet
/// asks for the automounted token).
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3607;

/// What a token is for: its ServiceAccount, the pod it is bound to, its
/// audiences and lifetime.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenKey {
    /// The pod's namespace.
    pub namespace: String,
    /// The ServiceAccount.
    pub service_account: String,
    /// The pod the token is bound to.
    pub pod_name: String,
    /// Its UID.
    pub pod_uid: String,
    /// Audiences; empty for the API server's own.
    pub audiences: Vec<String>,
    /// Requested lifetime in seconds.
    pub expiration_seconds: i64,
}

impl TokenKey {
    fn request(&self) -> TokenRequest {
        TokenRequest {
            namespace: self.namespace.clone(),
            service_account: self.service_account.clone(),
            pod_name: self.pod_name.clone(),
            pod_uid: self.pod_uid.clone(),
            audiences: self.audiences.clone(),
            expiration_seconds: self.expiration_seconds,
        }
    }

    fn lifetime(&self) -> Duration {
        let secs = if self.expiration_seconds > 0 {
            self.expiration_seconds
        } else {
            DEFAULT_EXPIRATION_SECONDS
        };
        Duration::from_secs(secs.unsigned_abs())
    }
}

#[derive(Debug, Clone)]
struct Cached {
    token: String,
    /// When the token stops working.
    expires: Instant,
    /// When it was issued: its expiry less the lifetime asked for.
    issued: Instant,
    jitter: Duration,
}

impl Cached {
    /// When the token is to be renewed (upstream's `requiresRefresh`).
    fn refresh_at(&self, lifetime: Duration) -> Instant {
        let by_age = self.issued + MAX_TTL;
        let by_ttl = self
            .expires
            .checked_sub(lifetime / 5)
            .unwrap_or(self.issued);
        let due = by_age.min(by_ttl);
        due.checked_sub(self.jitter).unwrap_or(due)
    }
}

/// The node's tokens for its pods (cheap to clone; clones share the cache).
#[derive(Clone)]
pub struct TokenManager {
    api: Arc<dyn NodeApi>,
    cache: Arc<Mutex<HashMap<TokenKey, Cached>>>,
}

impl std::fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenManager").finish_non_exhaustive()
    }
}

/// A jitter in `[0, MAX_JITTER)` that differs between tokens.
fn jitter(key: &TokenKey) -> Duration {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        .hash(&mut h);
    Duration::from_millis(h.finish() % u64::try_from(MAX_JITTER.as_millis()).unwrap_or(1))
}

impl TokenManager {
    /// Tokens requested through `api`.
    pub fn new(api: Arc<dyn NodeApi>) -> Self {
        Self {
            api,
            cache: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TokenKey, Cached>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The token for `key`: the cached one unless it is due for renewal,
    /// else a new one; a failed renewal returns the cached token while it
    /// is valid, else the failure.
    pub async fn get(&self, key: &TokenKey) -> Result<String, tonic::Status> {
        let now = Instant::now();
        let cached = self.lock().get(key).cloned();
        if let Some(c) = &cached
            && now < c.refresh_at(key.lifetime())
        {
            return Ok(c.token.clone());
        }
        match self.api.request_token(key.request()).await {
            Ok(response) => {
                let now_unix = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let left = u64::try_from(response.expiration_unix)
                    .unwrap_or(0)
                    .saturating_sub(now_unix);
                let expires = Instant::now() + Duration::from_secs(left);
                let issued = expires.checked_sub(key.lifetime()).unwrap_or(now);
                self.lock().insert(
                    key.clone(),
                    Cached {
                        token: response.token.clone(),
                        expires,
                        issued,
                        jitter: jitter(key),
                    },
                );
                tracing::debug!(pod = %format!("{}/{}", key.namespace, key.pod_name), service_account = %key.service_account, "service account token issued");
                Ok(response.token)
            }
            Err(status) => match cached {
                Some(c) if Instant::now() < c.expires => {
                    tracing::warn!(pod = %format!("{}/{}", key.namespace, key.pod_name), %status, "failed to renew service account token; using the cached one");
                    Ok(c.token)
                }
                _ => Err(status),
            },
        }
    }

    /// When the first cached token of pod `uid` is due for renewal.
    pub fn refresh_at(&self, uid: &str) -> Option<Instant> {
        self.lock()
            .iter()
            .filter(|(k, _)| k.pod_uid == uid)
            .map(|(k, c)| c.refresh_at(k.lifetime()))
            .min()
    }

    /// Drops pod `uid`'s tokens (it left the node), and any expired ones.
    pub fn forget_pod(&self, uid: &str) {
        let now = Instant::now();
        self.lock()
            .retain(|k, c| k.pod_uid != uid && c.expires > now);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::future::BoxFuture;
    use skep_proto::v1::{TokenResponse, WriteRequest};

    use super::*;

    /// Issues `token-N`, valid for what was asked.
    #[derive(Default)]
    struct Issuer {
        issued: AtomicUsize,
        fail: std::sync::atomic::AtomicBool,
    }

    impl NodeApi for Issuer {
        fn write(&self, _: WriteRequest) -> BoxFuture<'_, Result<Vec<u8>, tonic::Status>> {
            Box::pin(async { Ok(Vec::new()) })
        }

        fn request_token(
            &self,
            request: TokenRequest,
        ) -> BoxFuture<'_, Result<TokenResponse, tonic::Status>> {
            Box::pin(async move {
                if self.fail.load(Ordering::SeqCst) {
                    return Err(tonic::Status::unavailable("down"));
                }
                let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                Ok(TokenResponse {
                    token: format!("token-{n}"),
                    expiration_unix: i64::try_from(now).unwrap_or(0) + request.expiration_seconds,
                })
            })
        }
    }

    fn key(expiration_seconds: i64) -> TokenKey {
        TokenKey {
            namespace: "team".into(),
            service_account: "default".into(),
            pod_name: "web".into(),
            pod_uid: "u1".into(),
            audiences: Vec::new(),
            expiration_seconds,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn renewed_after_80_percent_of_its_lifetime() -> anyhow::Result<()> {
        let issuer = Arc::new(Issuer::default());
        let tokens = TokenManager::new(issuer.clone());
        let k = key(3600);
        assert_eq!(tokens.get(&k).await?, "token-1");
        assert_eq!(tokens.get(&k).await?, "token-1");
        let due = tokens
            .refresh_at("u1")
            .ok_or_else(|| anyhow::anyhow!("no refresh time"))?;
        let after = due.duration_since(Instant::now());
        // 80% of an hour, less up to 10 s of jitter.
        let (earliest, latest) = (Duration::from_secs(2869), Duration::from_mins(48));
        assert!(earliest < after && after <= latest, "{after:?}");
        tokio::time::advance(after.saturating_sub(Duration::from_secs(1))).await;
        assert_eq!(tokens.get(&k).await?, "token-1");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(tokens.get(&k).await?, "token-2");
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn long_lived_tokens_are_renewed_daily_and_kept_when_renewal_fails() -> anyhow::Result<()>
    {
        let issuer = Arc::new(Issuer::default());
        let tokens = TokenManager::new(issuer.clone());
        let k = key(7 * 24 * 3600);
        assert_eq!(tokens.get(&k).await?, "token-1");
        let after = tokens
            .refresh_at("u1")
            .map(|d| d.duration_since(Instant::now()))
            .unwrap_or_default();
        let earliest = MAX_TTL.saturating_sub(MAX_JITTER + Duration::from_secs(1));
        assert!(after <= MAX_TTL && after > earliest, "{after:?}");
        tokio::time::advance(MAX_TTL).await;
        issuer.fail.store(true, Ordering::SeqCst);
        // Still valid: the cached one.
        assert_eq!(tokens.get(&k).await?, "token-1");
        issuer.fail.store(false, Ordering::SeqCst);
        assert_eq!(tokens.get(&k).await?, "token-2");
        tokens.forget_pod("u1");
        assert!(tokens.refresh_at("u1").is_none());
        Ok(())
    }
}
