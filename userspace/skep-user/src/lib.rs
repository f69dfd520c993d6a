//! Who a caller is, as every part of authentication and authorization sees
//! it (`k8s.io/apiserver/pkg/authentication/user` and the user names of
//! `k8s.io/apiserver/pkg/authentication/serviceaccount`): authenticators
//! produce a [`UserInfo`], authorizers read it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The group every authenticated user is in (added by the authenticator
/// chain, not by each authenticator).
pub const ALL_AUTHENTICATED: &str = "system:authenticated";
/// The group of requests no authenticator accepted.
pub const ALL_UNAUTHENTICATED: &str = "system:unauthenticated";
/// The user of requests no authenticator accepted.
pub const ANONYMOUS: &str = "system:anonymous";
/// The superuser group: bound to `cluster-admin`, and exempt from escalation checks.
pub const SYSTEM_MASTERS: &str = "system:masters";
/// The group allowed to read health and metrics endpoints (`system:monitoring`).
pub const MONITORING_GROUP: &str = "system:monitoring";
/// The group every service account is in.
pub const ALL_SERVICE_ACCOUNTS: &str = "system:serviceaccounts";
/// The prefix of a service account's user name: `system:serviceaccount:NS:NAME`.
pub const SERVICE_ACCOUNT_USERNAME_PREFIX: &str = "system:serviceaccount:";

/// The user name a service account authenticates as (`serviceaccount.MakeUsername`).
#[must_use]
pub fn service_account_username(namespace: &str, name: &str) -> String {
    format!("{SERVICE_ACCOUNT_USERNAME_PREFIX}{namespace}:{name}")
}

/// Splits a service account's user name into namespace and name; `None`
/// unless it has the prefix and exactly two non-empty `:`-separated parts
/// (`serviceaccount.SplitUsername`, without its DNS-name validation).
#[must_use]
pub fn split_service_account_username(username: &str) -> Option<(&str, &str)> {
    let rest = username.strip_prefix(SERVICE_ACCOUNT_USERNAME_PREFIX)?;
    let (namespace, name) = rest.split_once(':')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains(':')).then_some((namespace, name))
}

/// The group of every service account in one namespace
/// (`system:serviceaccounts:NS`, `serviceaccount.MakeNamespaceGroupName`).
#[must_use]
pub fn service_account_namespace_group(namespace: &str) -> String {
    format!("{ALL_SERVICE_ACCOUNTS}:{namespace}")
}

/// An authenticated user (`user.Info`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// The user name, e.g. `jane` or `system:serviceaccount:default:builder`.
    pub name: String,
    /// A unique id (a service account's UID); authorizers do not look at it.
    pub uid: String,
    /// Groups the user is in, e.g. `system:authenticated`.
    pub groups: Vec<String>,
    /// Extra attributes from the authenticator (a token's pod, node,
    /// credential id); RBAC does not look at them.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// The user a Kubernetes object states: a `SubjectAccessReview`'s `spec`
    /// (`name_key` `user`) or a `TokenReview`'s `status.user` (`username`),
    /// with its `uid`, `groups` and `extra`; missing fields are empty and
    /// nothing is implied (no `system:authenticated`).
    #[must_use]
    pub fn from_json(obj: &serde_json::Value, name_key: &str) -> Self {
        use serde_json::Value;
        let text = |key: &str| {
            obj.get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        Self {
            name: text(name_key),
            uid: text("uid"),
            groups: obj.get("groups").map(strings).unwrap_or_default(),
            extra: obj
                .get("extra")
                .and_then(Value::as_object)
                .map(|m| m.iter().map(|(k, v)| (k.clone(), strings(v))).collect())
                .unwrap_or_default(),
        }
    }

    /// A user with a name and groups, no uid and no extra.
    #[must_use]
    pub fn new(name: impl Into<String>, groups: &[&str]) -> Self {
        Self {
            name: name.into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            ..Self::default()
        }
    }

    /// Whether the user is in `system:masters` (`rbac.EscalationAllowed`).
    #[must_use]
    pub fn is_superuser(&self) -> bool {
        self.groups.iter().any(|g| g == SYSTEM_MASTERS)
    }
}

/// Adds `system:authenticated` unless the user is anonymous or already in
/// it or in `system:unauthenticated` (`group.NewAuthenticatedGroupAdder`).
/// The API server's authenticator chain and the node port's both end so.
#[must_use]
pub fn with_authenticated(mut user: UserInfo) -> UserInfo {
    if user.name != ANONYMOUS
        && !user
            .groups
            .iter()
            .any(|g| g == ALL_AUTHENTICATED || g == ALL_UNAUTHENTICATED)
    {
        user.groups.push(ALL_AUTHENTICATED.to_owned());
    }
    user
}

/// The token of an `Authorization: Bearer <token>` header value
/// (`bearertoken.AuthenticateRequest`): the scheme is matched
/// case-insensitively, an empty token or another scheme is no token.
#[must_use]
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let mut parts = authorization.trim().splitn(3, ' ');
    let scheme = parts.next()?;
    let token = parts.next()?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_names_round_trip() {
        let user = service_account_username("ns", "sa");
        assert_eq!(user, "system:serviceaccount:ns:sa");
        assert_eq!(split_service_account_username(&user), Some(("ns", "sa")));
        assert_eq!(
            split_service_account_username("system:serviceaccount:ns:sa:x"),
            None
        );
        assert_eq!(
            split_service_account_username("system:serviceaccount::sa"),
            None
        );
        assert_eq!(split_service_account_username("system:node:n"), None);
        assert_eq!(
            service_account_namespace_group("ns"),
            "system:serviceaccounts:ns"
        );
    }

    #[test]
    fn superuser_is_membership_of_system_masters() {
        assert!(UserInfo::new("a", &[SYSTEM_MASTERS]).is_superuser());
        assert!(!UserInfo::new("a", &[ALL_AUTHENTICATED]).is_superuser());
    }
}
