//! Who is asking for what: the authorizer's view of a request
//! (`k8s.io/apiserver/pkg/authorization/authorizer.Attributes`).

use serde::{Deserialize, Serialize};
pub use skep_user::{
    ALL_AUTHENTICATED, ALL_SERVICE_ACCOUNTS, ALL_UNAUTHENTICATED, MONITORING_GROUP,
    SERVICE_ACCOUNT_USERNAME_PREFIX, SYSTEM_MASTERS, UserInfo, service_account_namespace_group,
    service_account_username,
};

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
