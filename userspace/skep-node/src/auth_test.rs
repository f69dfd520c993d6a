//! The node port's auth against a fake API server: the path mapping, the
//! caches on a hand-moved clock, and every answer a caller can get.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::HeaderValue;
use futures::future::BoxFuture;
use skep_proto::v1::WriteRequest;

use super::*;

/// Answers reviews as an API server would: `tokens` authenticate as the
/// named users, `allowed` holds (user, verb, subresource) granted on node
/// "n1"; `down` makes every call fail.
#[derive(Default)]
struct FakeReviews {
    tokens: Vec<(&'static str, &'static str)>,
    allowed: BTreeSet<(String, String, String)>,
    down: bool,
    token_calls: AtomicUsize,
    access_calls: AtomicUsize,
}

impl NodeApi for FakeReviews {
    fn write(&self, _: WriteRequest) -> BoxFuture<'_, Result<Vec<u8>, tonic::Status>> {
        Box::pin(async { Err(tonic::Status::unimplemented("writes")) })
    }

    fn review_token(&self, review: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, tonic::Status>> {
        self.token_calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if self.down {
                return Err(tonic::Status::unavailable("API server down"));
            }
            let mut review: Value = serde_json::from_slice(&review).expect("json");
            let token = review["spec"]["token"].as_str().unwrap_or_default();
            review["status"] = match self.tokens.iter().find(|(t, _)| *t == token) {
                Some((_, user)) => json!({"authenticated": true, "user": {
                    "username": user, "uid": "u-1",
                    "groups": ["system:serviceaccounts", "system:authenticated"],
                    "extra": {"authentication.kubernetes.io/pod-name": ["p"]}}}),
                None => json!({"user": {}, "error": "invalid bearer token"}),
            };
            Ok(serde_json::to_vec(&review).expect("json"))
        })
    }

    fn review_access(&self, review: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, tonic::Status>> {
        self.access_calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if self.down {
                return Err(tonic::Status::unavailable("API server down"));
            }
            let mut review: Value = serde_json::from_slice(&review).expect("json");
            let spec = &review["spec"];
            let attrs = &spec["resourceAttributes"];
            assert_eq!(attrs["resource"], "nodes");
            assert_eq!(attrs["group"], "");
            let allowed = attrs["name"] == "n1"
                && self.allowed.contains(&(
                    spec["user"].as_str().unwrap_or_default().to_owned(),
                    attrs["verb"].as_str().unwrap_or_default().to_owned(),
                    attrs["subresource"].as_str().unwrap_or_default().to_owned(),
                ));
            review["status"] = json!({"allowed": allowed});
            Ok(serde_json::to_vec(&review).expect("json"))
        })
    }
}

fn grant(user: &str, verb: &str, subresource: &str) -> (String, String, String) {
    (user.into(), verb.into(), subresource.into())
}

/// A clock the test moves by hand.
fn clock() -> (Clock, Arc<Mutex<Instant>>) {
    let now = Arc::new(Mutex::new(Instant::now()));
    let read = Arc::clone(&now);
    (Arc::new(move || *read.lock().expect("clock")), now)
}

fn advance(now: &Mutex<Instant>, by: Duration) {
    let mut t = now.lock().expect("clock");
    *t += by;
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    h
}

const SA: &str = "system:serviceaccount:default:builder";

fn apiserver() -> UserInfo {
    UserInfo::new(skep_proto::KUBELET_CLIENT_USER, &[])
}

#[test]
fn paths_and_methods_map_as_the_kubelet_maps_them() {
    let attrs = |m: Method, p: &str| {
        let a = request_attributes("n1", &m, p);
        (a.verb, a.subresource)
    };
    assert_eq!(
        attrs(Method::GET, "/containerLogs/ns/p/c"),
        ("get", "proxy")
    );
    assert_eq!(attrs(Method::POST, "/exec/ns/p/c"), ("create", "proxy"));
    assert_eq!(attrs(Method::GET, "/healthz"), ("get", "proxy"));
    assert_eq!(attrs(Method::GET, "/stats/summary"), ("get", "stats"));
    assert_eq!(attrs(Method::GET, "/stats"), ("get", "stats"));
    assert_eq!(attrs(Method::GET, "/statsx"), ("get", "proxy"));
    assert_eq!(attrs(Method::GET, "/metrics"), ("get", "metrics"));
    assert_eq!(attrs(Method::GET, "/metrics/cadvisor"), ("get", "metrics"));
    assert_eq!(attrs(Method::GET, "/logs/syslog"), ("get", "log"));
    assert_eq!(attrs(Method::GET, "/spec/"), ("get", "spec"));
    assert_eq!(
        attrs(Method::POST, "/checkpoint/ns/p/c"),
        ("create", "checkpoint")
    );
    assert_eq!(attrs(Method::PUT, "/x"), ("update", "proxy"));
    assert_eq!(attrs(Method::PATCH, "/x"), ("patch", "proxy"));
    assert_eq!(attrs(Method::DELETE, "/x"), ("delete", "proxy"));
    // Upstream gives other methods no verb.
    assert_eq!(attrs(Method::HEAD, "/healthz"), ("", "proxy"));
    assert_eq!(request_attributes("n1", &Method::GET, "/").name, "n1");
}

#[test]
fn cache_entries_expire_and_the_cache_stays_bounded() {
    let cache = TtlCache::new(2);
    let t0 = Instant::now();
    cache.insert("a", 1, Duration::from_secs(30), t0);
    assert_eq!(cache.get(&"a", t0 + Duration::from_secs(29)), Some(1));
    assert_eq!(cache.get(&"a", t0 + Duration::from_secs(30)), None);
    assert!(cache.is_empty(), "an expired entry goes when touched");
    cache.insert("a", 1, Duration::from_secs(10), t0);
    cache.insert("b", 2, Duration::from_secs(20), t0);
    cache.insert("c", 3, Duration::from_secs(30), t0);
    assert_eq!(cache.len(), 2);
    assert_eq!(
        cache.get(&"a", t0),
        None,
        "the one closest to expiring went"
    );
    assert_eq!(cache.get(&"c", t0), Some(3));
    // Expired entries make room before live ones.
    cache.insert("d", 4, Duration::from_secs(5), t0 + Duration::from_secs(25));
    assert_eq!(cache.get(&"c", t0 + Duration::from_secs(25)), Some(3));
    assert_eq!(cache.get(&"d", t0 + Duration::from_secs(25)), Some(4));
}

#[tokio::test]
async fn an_allowed_certificate_is_served_and_the_answer_cached() {
    let api = Arc::new(FakeReviews {
        allowed: [grant(skep_proto::KUBELET_CLIENT_USER, "get", "proxy")].into(),
        ..FakeReviews::default()
    });
    let (clock, now) = clock();
    let auth = NodeAuth::with_clock(api.clone(), "n1", clock);
    let path = "/containerLogs/ns/p/c";
    let user = auth
        .admit(Some(&apiserver()), &Method::GET, path, &HeaderMap::new())
        .await
        .expect("admitted");
    assert_eq!(user.groups, ["system:authenticated"]);
    auth.admit(Some(&apiserver()), &Method::GET, path, &HeaderMap::new())
        .await
        .expect("admitted again");
    assert_eq!(api.access_calls.load(Ordering::SeqCst), 1, "cached");
    advance(&now, ALLOWED_TTL);
    auth.admit(Some(&apiserver()), &Method::GET, path, &HeaderMap::new())
        .await
        .expect("admitted after expiry");
    assert_eq!(api.access_calls.load(Ordering::SeqCst), 2, "asked again");
    assert_eq!(api.token_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_denied_caller_gets_upstreams_forbidden_for_thirty_seconds() {
    let api = Arc::new(FakeReviews {
        tokens: vec![("t0k", SA)],
        ..FakeReviews::default()
    });
    let (clock, now) = clock();
    let auth = NodeAuth::with_clock(api.clone(), "n1", clock);
    let refused = auth
        .admit(None, &Method::POST, "/exec/ns/p/c", &bearer("t0k"))
        .await
        .expect_err("refused");
    assert_eq!(refused.status(), (StatusCode::FORBIDDEN, "Forbidden"));
    assert_eq!(
        refused.to_string(),
        format!("Forbidden (user={SA}, verb=create, resource=nodes, subresource=proxy)")
    );
    let node = UserInfo::new("system:node:n2", &["system:nodes"]);
    let refused = auth
        .admit(
            Some(&node),
            &Method::GET,
            "/containerLogs/a/b/c",
            &HeaderMap::new(),
        )
        .await
        .expect_err("another node is refused");
    assert_eq!(
        refused.to_string(),
        "Forbidden (user=system:node:n2, verb=get, resource=nodes, subresource=proxy)"
    );
    // The denial is remembered for 30 s, the token for 2 min.
    auth.admit(None, &Method::POST, "/exec/ns/p/c", &bearer("t0k"))
        .await
        .expect_err("still refused");
    assert_eq!(api.access_calls.load(Ordering::SeqCst), 2);
    assert_eq!(api.token_calls.load(Ordering::SeqCst), 1);
    advance(&now, DENIED_TTL);
    auth.admit(None, &Method::POST, "/exec/ns/p/c", &bearer("t0k"))
        .await
        .expect_err("refused after asking again");
    assert_eq!(api.access_calls.load(Ordering::SeqCst), 3);
    assert_eq!(api.token_calls.load(Ordering::SeqCst), 1);
    advance(&now, TOKEN_TTL);
    let _ = auth
        .admit(None, &Method::POST, "/exec/ns/p/c", &bearer("t0k"))
        .await;
    assert_eq!(api.token_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_granted_token_is_served_with_its_user() {
    let api = Arc::new(FakeReviews {
        tokens: vec![("t0k", SA)],
        allowed: [grant(SA, "get", "proxy")].into(),
        ..FakeReviews::default()
    });
    let auth = NodeAuth::new(api, "n1");
    let user = auth
        .admit(None, &Method::GET, "/containerLogs/ns/p/c", &bearer("t0k"))
        .await
        .expect("admitted");
    assert_eq!(user.name, SA);
    assert_eq!(user.uid, "u-1");
    assert_eq!(
        user.groups,
        ["system:serviceaccounts", "system:authenticated"]
    );
    assert_eq!(
        user.extra.get("authentication.kubernetes.io/pod-name"),
        Some(&vec!["p".to_owned()])
    );
}

#[tokio::test]
async fn no_credential_or_a_bad_token_is_unauthorized() {
    let api = Arc::new(FakeReviews {
        tokens: vec![("t0k", SA)],
        ..FakeReviews::default()
    });
    let auth = NodeAuth::new(api.clone(), "n1");
    for headers in [HeaderMap::new(), bearer("nope")] {
        let refused = auth
            .admit(None, &Method::GET, "/healthz", &headers)
            .await
            .expect_err("refused");
        assert_eq!(refused.status(), (StatusCode::UNAUTHORIZED, "Unauthorized"));
        assert_eq!(refused.to_string(), "Unauthorized");
    }
    let mut basic = HeaderMap::new();
    basic.insert(
        header::AUTHORIZATION,
        HeaderValue::from_static("Basic eDp5"),
    );
    assert!(matches!(
        auth.admit(None, &Method::GET, "/healthz", &basic).await,
        Err(Refusal::Unauthorized)
    ));
    assert_eq!(api.access_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_unreachable_api_server_fails_closed() {
    let api = Arc::new(FakeReviews {
        down: true,
        ..FakeReviews::default()
    });
    let auth = NodeAuth::new(api.clone(), "n1");
    let refused = auth
        .admit(None, &Method::GET, "/healthz", &bearer("t0k"))
        .await
        .expect_err("refused");
    assert_eq!(refused.status().0, StatusCode::UNAUTHORIZED);
    let refused = auth
        .admit(
            Some(&apiserver()),
            &Method::GET,
            "/healthz",
            &HeaderMap::new(),
        )
        .await
        .expect_err("refused");
    assert_eq!(
        refused.status(),
        (StatusCode::INTERNAL_SERVER_ERROR, "InternalError")
    );
    assert_eq!(
        refused.to_string(),
        format!(
            "Authorization error (user={}, verb=get, resource=nodes, subresource=proxy)",
            skep_proto::KUBELET_CLIENT_USER
        )
    );
    // Failures are not remembered.
    let _ = auth
        .admit(
            Some(&apiserver()),
            &Method::GET,
            "/healthz",
            &HeaderMap::new(),
        )
        .await;
    assert_eq!(api.access_calls.load(Ordering::SeqCst), 2);
    let _ = auth
        .admit(None, &Method::GET, "/healthz", &bearer("t0k"))
        .await;
    assert_eq!(api.token_calls.load(Ordering::SeqCst), 2);
}
