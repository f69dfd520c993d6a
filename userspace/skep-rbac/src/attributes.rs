//! Who is asking for what: the authorizer's view of a request
//! (`k8s.io/apiserver/pkg/authorization/authorizer.Attributes`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The group every authenticated user is in.
pub const ALL_AUTHENTICATED: &str = "system:authenticated";
/// The group of requests no authenticator accepted.
pub const ALL_UNAUTHENTICATED: &str = "system:unauthenticated";
/// The superuser group: bound to `cluster-admin`, and exempt from escalation checks.
pub const SYSTEM_MASTERS: &str = "system:masters";
/// The group allowed to read health and metrics endpoints (`system:monitoring`).
pub const MONITORING_GROUP: &str = "system:monitoring";
/// The group every service account is in.
pub const ALL_SERVICE_ACCOUNTS: &str = "system:serviceaccounts";
/// The prefix of a service account's user name: `system:serviceaccount:NS:NAME`.
pub const SERVICE_ACCOUNT_USERNAME_PREFIX: &str = "system:serviceaccount:";

/// The user name a service account authenticates as (`serviceaccount.MakeUsername`).
pub fn service_account_username(namespace: &str, name: &str) -> String {
    format!("{SERVICE_ACCOUNT_USERNAME_PREFIX}{namespace}:{name}")
}

/// The group of every service account in one namespace
/// (`system:serviceaccounts:NS`, `serviceaccount.MakeNamespaceGroupName`).
pub fn service_account_namespace_group(namespace: &str) -> String {
    format!("{ALL_SERVICE_ACCOUNTS}:{namespace}")
}

/// An authenticated user (`user.Info`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// The user name, e.g. `jane` or `system:serviceaccount:default:builder`.
    pub name: String,
    /// A unique id; RBAC does not look at it.
    pub uid: String,
    /// Groups the user is in, e.g. `system:authenticated`.
    pub groups: Vec<String>,
    /// Extra attributes from the authenticator; RBAC does not look at them.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// A user with a name and groups, no uid and no extra.
    pub fn new(name: impl Into<String>, groups: &[&str]) -> Self {
        Self {
            name: name.into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            ..Self::default()
        }
    }

    /// Whether the user is in `system:masters` (`rbac.EscalationAllowed`).
    pub fn is_superuser(&self) -> bool {
        self.groups.iter().any(|g| g == SYSTEM_MASTERS)
    }
}

/// A request on an API resource.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceAttributes {
    /// API group, `""` for the core group.
    pub api_group: String,
    /// Resource (plural, lower case), e.g. `pods`.
    pub resource: String,
    /// Subresource, e.g. `status`; empty for none.
    pub subresource: String,
    /// Object name; empty for list, watch, create without a name, …
    pub name: String,
    /// Namespace; empty for cluster-scoped resources and all-namespace requests.
    pub namespace: String,
}

/// What is being asked for: a resource or a non-resource URL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// A request on an API resource.
    Resource(ResourceAttributes),
    /// A request on a non-resource path such as `/healthz` or `/apis`.
    NonResource {
        /// The URL path.
        path: String,
    },
}

/// One authorization question: a user, a verb and a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attributes {
    /// Who asks.
    pub user: UserInfo,
    /// The verb: `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`, or a special one (`bind`, `escalate`, `impersonate`);
    /// lower-case HTTP method for non-resource requests.
    pub verb: String,
    /// On what.
    pub request: Request,
}

impl Attributes {
    /// A resource request.
    pub fn resource(user: UserInfo, verb: &str, resource: ResourceAttributes) -> Self {
        Self {
            user,
            verb: verb.to_owned(),
            request: Request::Resource(resource),
        }
    }

    /// A non-resource request on `path`.
    pub fn non_resource(user: UserInfo, verb: &str, path: &str) -> Self {
        Self {
            user,
            verb: verb.to_owned(),
            request: Request::NonResource {
                path: path.to_owned(),
            },
        }
    }

    /// The namespace RBAC evaluates the request in: empty for cluster-scoped
    /// and non-resource requests.
    pub fn namespace(&self) -> &str {
        match &self.request {
            Request::Resource(r) => &r.namespace,
            Request::NonResource { .. } => "",
        }
    }
}
