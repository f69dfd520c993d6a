//! Impersonation (`kubectl --as`, `--as-group`, `--as-uid`): the
//! `Impersonate-*` headers make a request act as another user, each part of
//! the new identity authorized with the `impersonate` verb first, as
//! kube-apiserver's `WithImpersonation` filter does.

use std::collections::BTreeMap;

use axum::http::HeaderMap;
use skep_api::ApiError;
use skep_rbac::{Attributes, ResourceAttributes};
use skep_user::{
    ALL_AUTHENTICATED, ALL_SERVICE_ACCOUNTS, ALL_UNAUTHENTICATED, ANONYMOUS, UserInfo,
    service_account_namespace_group, split_service_account_username,
};

use crate::authz::Authorizer;

/// `Impersonate-User`.
pub const USER: &str = "impersonate-user";
/// `Impersonate-Uid`.
pub const UID: &str = "impersonate-uid";
/// `Impersonate-Group` (repeated).
pub const GROUP: &str = "impersonate-group";
/// `Impersonate-Extra-<key>` (repeated); the key is percent-encoded.
pub const EXTRA_PREFIX: &str = "impersonate-extra-";

/// What the headers ask to act as; `None` without impersonation headers.
#[derive(Debug, Default, PartialEq, Eq)]
struct Requested {
    user: String,
    uid: Option<String>,
    groups: Vec<String>,
    extra: BTreeMap<String, Vec<String>>,
}

fn requested(headers: &HeaderMap) -> Result<Option<Requested>, ApiError> {
    let text = |v: &axum::http::HeaderValue| {
        v.to_str()
            .map(str::to_owned)
            .map_err(|_| ApiError::bad_request("invalid impersonation header value"))
    };
    let mut req = Requested::default();
    let mut any = false;
    if let Some(v) = headers.get(USER) {
        req.user = text(v)?;
        any = true;
    }
    if let Some(v) = headers.get(UID) {
        req.uid = Some(text(v)?);
        any = true;
    }
    for v in headers.get_all(GROUP) {
        req.groups.push(text(v)?);
        any = true;
    }
    for (name, v) in headers {
        if let Some(key) = name.as_str().strip_prefix(EXTRA_PREFIX) {
            let key = percent_decode(key).to_ascii_lowercase();
            req.extra.entry(key).or_default().push(text(v)?);
            any = true;
        }
    }
    if !any {
        return Ok(None);
    }
    if req.user.is_empty() {
        return Err(ApiError::bad_request(format!(
            "requested {} without impersonating a user",
            describe(&req)
        )));
    }
    Ok(Some(req))
}

/// How upstream names the impersonation parts asked for without a user.
fn describe(req: &Requested) -> String {
    let mut parts = Vec::new();
    if let Some(uid) = &req.uid {
        parts.push(format!("{UID}:{uid}"));
    }
    for g in &req.groups {
        parts.push(format!("{GROUP}:{g}"));
    }
    for (k, values) in &req.extra {
        for v in values {
            parts.push(format!("{EXTRA_PREFIX}{k}:{v}"));
        }
    }
    format!("[{}]", parts.join(" "))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The user a request acts as: `user` itself without impersonation
/// headers, else the impersonated user once `user` may impersonate every
/// part of it (403 with upstream's message otherwise).
pub fn impersonate(
    user: UserInfo,
    headers: &HeaderMap,
    authorizer: &Authorizer,
) -> Result<UserInfo, ApiError> {
    let Some(req) = requested(headers)? else {
        return Ok(user);
    };
    let check = |group: &str, resource: &str, subresource: &str, namespace: &str, name: &str| {
        authorizer.check(&Attributes::resource(
            user.clone(),
            "impersonate",
            ResourceAttributes {
                api_group: group.to_owned(),
                resource: resource.to_owned(),
                subresource: subresource.to_owned(),
                name: name.to_owned(),
                namespace: namespace.to_owned(),
            },
        ))
    };
    let mut groups = req.groups.clone();
    if let Some((namespace, name)) = split_service_account_username(&req.user) {
        check("", "serviceaccounts", "", namespace, name)?;
        if groups.is_empty() {
            groups = vec![
                ALL_SERVICE_ACCOUNTS.to_owned(),
                service_account_namespace_group(namespace),
            ];
        }
    } else {
        check("", "users", "", "", &req.user)?;
    }
    for group in &req.groups {
        check("", "groups", "", "", group)?;
    }
    for (key, values) in &req.extra {
        for value in values {
            check("authentication.k8s.io", "userextras", key, "", value)?;
        }
    }
    if let Some(uid) = &req.uid {
        check("authentication.k8s.io", "uids", "", "", uid)?;
    }
    let implied = if req.user == ANONYMOUS {
        ALL_UNAUTHENTICATED
    } else {
        ALL_AUTHENTICATED
    };
    if !groups.iter().any(|g| g == implied) {
        groups.push(implied.to_owned());
    }
    tracing::debug!(user = %user.name, as_user = %req.user, "impersonating");
    Ok(UserInfo {
        name: req.user,
        uid: req.uid.unwrap_or_default(),
        groups,
        extra: req.extra,
    })
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleRef};
    use skep_rbac::{Policy, rule::resource_rule, subject::subject};

    use super::*;

    fn authorizer() -> Authorizer {
        let role = ClusterRole {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("imp".into()),
                ..Default::default()
            },
            rules: Some(vec![resource_rule(&["impersonate"], &[""], &["users"])]),
            ..Default::default()
        };
        let binding = ClusterRoleBinding {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("imp".into()),
                ..Default::default()
            },
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: "imp".into(),
            },
            subjects: Some(vec![subject("User", "bob", None)]),
        };
        Authorizer::with_policy(Policy::from_objects([], [role], [], [binding]))
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn no_headers_no_change() {
        let bob = UserInfo::new("bob", &[ALL_AUTHENTICATED]);
        let got = impersonate(bob.clone(), &HeaderMap::new(), &authorizer()).expect("ok");
        assert_eq!(got, bob);
    }

    #[test]
    fn allowed_user_becomes_the_other_user() {
        let bob = UserInfo::new("bob", &[ALL_AUTHENTICATED]);
        let got = impersonate(bob, &headers(&[(USER, "jane")]), &authorizer()).expect("ok");
        assert_eq!(got.name, "jane");
        assert_eq!(got.groups, [ALL_AUTHENTICATED]);
    }

    #[test]
    fn groups_need_their_own_permission() {
        let bob = UserInfo::new("bob", &[ALL_AUTHENTICATED]);
        let err = impersonate(
            bob,
            &headers(&[(USER, "jane"), (GROUP, "admins")]),
            &authorizer(),
        )
        .expect_err("denied");
        assert_eq!(err.code(), 403);
        assert_eq!(
            err.message,
            "groups \"admins\" is forbidden: User \"bob\" cannot impersonate resource \"groups\" in API group \"\" at the cluster scope"
        );
    }

    #[test]
    fn others_are_refused_with_upstreams_message() {
        let eve = UserInfo::new("eve", &[ALL_AUTHENTICATED]);
        let err = impersonate(eve, &headers(&[(USER, "jane")]), &authorizer()).expect_err("no");
        assert_eq!(
            err.message,
            "users \"jane\" is forbidden: User \"eve\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
        );
    }

    #[test]
    fn groups_without_a_user_are_a_bad_request() {
        let bob = UserInfo::new("bob", &[]);
        let err = impersonate(bob, &headers(&[(GROUP, "g")]), &authorizer()).expect_err("bad");
        assert_eq!(err.code(), 400);
        assert_eq!(
            err.message,
            "requested [impersonate-group:g] without impersonating a user"
        );
    }

    #[test]
    fn extra_keys_are_percent_decoded() {
        assert_eq!(percent_decode("scopes%2Fa"), "scopes/a");
        assert_eq!(percent_decode("plain"), "plain");
    }
}
