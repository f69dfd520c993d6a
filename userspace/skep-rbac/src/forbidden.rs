//! The 403 a denied request gets (`ForbiddenStatusError` and
//! `forbiddenMessage` in `k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/errors.go`,
//! `NewForbidden` in `k8s.io/apimachinery/pkg/api/errors`).

use crate::attributes::{Attributes, Request};
use crate::gofmt::quote;

/// A Forbidden `Status`: the API server answers 403 with reason `Forbidden`,
/// `details.group`/`details.kind` (the resource) /`details.name` from these
/// fields, and `message`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Forbidden {
    /// API group of the resource (`details.group`).
    pub group: String,
    /// The resource, e.g. `pods` (`details.kind`, as upstream fills it).
    pub resource: String,
    /// Object name (`details.name`), empty if none.
    pub name: String,
    /// The whole message, e.g. `pods "web" is forbidden: …`.
    pub message: String,
}

impl Forbidden {
    /// A Forbidden error on `resource.group` named `name` with `detail`
    /// (`apierrors.NewForbidden`): `forbidden: D` without a resource,
    /// `R is forbidden: D` without a name, `R "N" is forbidden: D` otherwise.
    pub fn new(group: &str, resource: &str, name: &str, detail: &str) -> Self {
        let qualified = if group.is_empty() {
            resource.to_owned()
        } else {
            format!("{resource}.{group}")
        };
        let message = if qualified.is_empty() {
            format!("forbidden: {detail}")
        } else if name.is_empty() {
            format!("{qualified} is forbidden: {detail}")
        } else {
            format!("{qualified} {} is forbidden: {detail}", quote(name))
        };
        Self {
            group: group.to_owned(),
            resource: resource.to_owned(),
            name: name.to_owned(),
            message,
        }
    }
}

/// Avoid messages that look like HTML (upstream's `sanitizer`); quotes stay.
fn sanitize(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The sentence saying what the user may not do (`forbiddenMessage`), e.g.
/// `User "jane" cannot list resource "pods" in API group "" in the namespace "default"`.
fn sentence(attrs: &Attributes) -> String {
    let user = quote(&attrs.user.name);
    match &attrs.request {
        Request::NonResource { path } => {
            format!("User {user} cannot {} path {}", attrs.verb, quote(path))
        }
        Request::Resource(r) => {
            let resource = if r.subresource.is_empty() {
                r.resource.clone()
            } else {
                format!("{}/{}", r.resource, r.subresource)
            };
            let scope = if r.namespace.is_empty() {
                "at the cluster scope".to_owned()
            } else {
                format!("in the namespace {}", quote(&r.namespace))
            };
            format!(
                "User {user} cannot {} resource {} in API group {} {scope}",
                attrs.verb,
                quote(&resource),
                quote(&r.api_group)
            )
        }
    }
}

/// The 403 for a request no authorizer allowed (`ForbiddenStatusError`);
/// `reason` is the authorizers' reason, appended as `: reason` when not empty.
pub fn forbidden(attrs: &Attributes, reason: &str) -> Forbidden {
    let mut detail = sanitize(&sentence(attrs));
    if !reason.is_empty() {
        detail.push_str(": ");
        detail.push_str(reason);
    }
    match &attrs.request {
        Request::Resource(r) => Forbidden::new(&r.api_group, &r.resource, &r.name, &detail),
        Request::NonResource { .. } => Forbidden::new("", "", "", &detail),
    }
}

/// The 403 message for a denied request, e.g.
/// `pods is forbidden: User "jane" cannot list resource "pods" in API group "" in the namespace "default"`.
pub fn forbidden_message(attrs: &Attributes, reason: &str) -> String {
    forbidden(attrs, reason).message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::{ResourceAttributes, UserInfo};

    fn jane() -> UserInfo {
        UserInfo::new("jane", &["system:authenticated"])
    }

    fn res(verb: &str, group: &str, resource: &str, sub: &str, name: &str, ns: &str) -> Attributes {
        Attributes::resource(
            jane(),
            verb,
            ResourceAttributes {
                api_group: group.into(),
                resource: resource.into(),
                subresource: sub.into(),
                name: name.into(),
                namespace: ns.into(),
            },
        )
    }

    #[test]
    fn namespaced_list() {
        assert_eq!(
            forbidden_message(&res("list", "", "pods", "", "", "default"), ""),
            r#"pods is forbidden: User "jane" cannot list resource "pods" in API group "" in the namespace "default""#
        );
    }

    #[test]
    fn cluster_scope_with_group() {
        assert_eq!(
            forbidden_message(
                &res(
                    "list",
                    "rbac.authorization.k8s.io",
                    "clusterroles",
                    "",
                    "",
                    ""
                ),
                ""
            ),
            r#"clusterroles.rbac.authorization.k8s.io is forbidden: User "jane" cannot list resource "clusterroles" in API group "rbac.authorization.k8s.io" at the cluster scope"#
        );
    }

    #[test]
    fn named_subresource() {
        let f = forbidden(&res("get", "", "pods", "log", "web-0", "prod"), "");
        assert_eq!(
            f.message,
            r#"pods "web-0" is forbidden: User "jane" cannot get resource "pods/log" in API group "" in the namespace "prod""#
        );
        assert_eq!(
            (f.group.as_str(), f.resource.as_str(), f.name.as_str()),
            ("", "pods", "web-0")
        );
        assert_eq!(
            forbidden_message(
                &res("update", "apps", "deployments", "scale", "web", "prod"),
                ""
            ),
            r#"deployments.apps "web" is forbidden: User "jane" cannot update resource "deployments/scale" in API group "apps" in the namespace "prod""#
        );
    }

    #[test]
    fn non_resource_url() {
        let attrs = Attributes::non_resource(jane(), "get", "/metrics");
        assert_eq!(
            forbidden_message(&attrs, ""),
            r#"forbidden: User "jane" cannot get path "/metrics""#
        );
    }

    #[test]
    fn reason_suffix_and_sanitizing() {
        let attrs = res("get", "", "secrets", "", "s", "ns");
        assert_eq!(
            forbidden_message(
                &attrs,
                r#"RBAC: clusterrole.rbac.authorization.k8s.io "gone" not found"#
            ),
            r#"secrets "s" is forbidden: User "jane" cannot get resource "secrets" in API group "" in the namespace "ns": RBAC: clusterrole.rbac.authorization.k8s.io "gone" not found"#
        );
        let odd = Attributes::non_resource(UserInfo::new("<b>&", &[]), "get", "/x");
        assert_eq!(
            forbidden_message(&odd, "<kept>"),
            r#"forbidden: User "&lt;b&gt;&amp;" cannot get path "/x": <kept>"#
        );
    }
}
