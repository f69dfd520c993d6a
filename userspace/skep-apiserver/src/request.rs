//! Turning a request path and method into what it asks for, the way
//! kube-apiserver's `RequestInfoFactory` does: discovery documents, or a verb
//! on a resource (group, version, namespace, name, subresource).

use axum::http::Method;

/// What a request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `/version`.
    Version,
    /// `/healthz`, `/livez`, `/readyz`.
    Health,
    /// `/api`: the core API versions.
    CoreVersions,
    /// `/apis`: the API groups.
    Groups,
    /// `/apis/{group}`.
    Group(String),
    /// `/api/v1` or `/apis/{group}/{version}`: the resources in a group version.
    Resources {
        /// The group ("" for core).
        group: String,
        /// The version.
        version: String,
    },
    /// `/.well-known/openid-configuration`: the service account issuer's
    /// OIDC discovery document.
    OpenIdConfiguration,
    /// `/openid/v1/jwks`: the issuer's key set.
    Jwks,
    /// `/openapi/v2` or `/openapi/v3[/…]`.
    OpenApi(String),
    /// A verb on a resource.
    Resource(ResourceRequest),
}

/// A verb on a resource, parsed from the path and method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceRequest {
    /// The verb (get, list, watch, create, update, patch, delete, deletecollection).
    pub verb: Verb,
    /// API group ("" for core).
    pub group: String,
    /// API version.
    pub version: String,
    /// Namespace from the path ("" if none).
    pub namespace: String,
    /// Resource plural.
    pub resource: String,
    /// Object name ("" for collections).
    pub name: String,
    /// Subresource ("" for the main resource).
    pub subresource: String,
}

/// Kubernetes verbs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    /// GET one object.
    Get,
    /// GET a collection.
    List,
    /// GET a collection (or one object) with `watch=true`.
    Watch,
    /// POST.
    Create,
    /// PUT.
    Update,
    /// PATCH.
    Patch,
    /// DELETE one object.
    Delete,
    /// DELETE a collection.
    DeleteCollection,
}

/// Subresources of namespaces that are not namespaced resources
/// (`/api/v1/namespaces/{name}/status`).
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

/// Parses a request; `None` for a path the API does not serve.
#[must_use]
pub fn parse(method: &Method, path: &str, watch_param: bool) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["version"] => return Some(Target::Version),
        [".well-known", "openid-configuration"] if *method == Method::GET => {
            return Some(Target::OpenIdConfiguration);
        }
        ["openid", "v1", "jwks"] if *method == Method::GET => return Some(Target::Jwks),
        ["healthz" | "livez" | "readyz", ..] => return Some(Target::Health),
        ["openapi", rest @ ..] => return Some(Target::OpenApi(rest.join("/"))),
        ["api"] => return Some(Target::CoreVersions),
        ["apis"] => return Some(Target::Groups),
        ["apis", group] => return Some(Target::Group((*group).to_owned())),
        ["api", version] => {
            return Some(Target::Resources {
                group: String::new(),
                version: (*version).to_owned(),
            });
        }
        ["apis", group, version] => {
            return Some(Target::Resources {
                group: (*group).to_owned(),
                version: (*version).to_owned(),
            });
        }
        _ => {}
    }
    let (group, version, rest) = match parts.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let mut rest = rest;
    let mut namespace = "";
    if rest.first() == Some(&"namespaces") && rest.len() > 1 {
        namespace = rest[1];
        if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
            rest = &rest[2..];
        } else {
            // The namespace object itself: /namespaces/{name}[/status].
            namespace = "";
        }
    }
    let (resource, name, subresource) = match rest {
        [resource] => (*resource, "", ""),
        [resource, name] => (*resource, *name, ""),
        [resource, name, sub] => (*resource, *name, *sub),
        _ => return None,
    };
    let verb = match (method.as_str(), name.is_empty()) {
        ("GET" | "HEAD", _) if watch_param => Verb::Watch,
        ("GET" | "HEAD", true) => Verb::List,
        ("GET" | "HEAD", false) => Verb::Get,
        ("POST", _) => Verb::Create,
        ("PUT", _) => Verb::Update,
        ("PATCH", _) => Verb::Patch,
        ("DELETE", true) => Verb::DeleteCollection,
        ("DELETE", false) => Verb::Delete,
        _ => return None,
    };
    Some(Target::Resource(ResourceRequest {
        verb,
        group: group.to_owned(),
        version: version.to_owned(),
        namespace: namespace.to_owned(),
        resource: resource.to_owned(),
        name: name.to_owned(),
        subresource: subresource.to_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(method: &Method, path: &str, watch: bool) -> ResourceRequest {
        match parse(method, path, watch) {
            Some(Target::Resource(r)) => r,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn namespaced_object_and_subresource() {
        let r = resource(
            &Method::PUT,
            "/apis/apps/v1/namespaces/demo/deployments/web/scale",
            false,
        );
        assert_eq!(
            (
                r.verb,
                r.group.as_str(),
                r.namespace.as_str(),
                r.resource.as_str(),
                r.name.as_str(),
                r.subresource.as_str()
            ),
            (Verb::Update, "apps", "demo", "deployments", "web", "scale")
        );
    }

    #[test]
    fn namespace_objects_are_cluster_scoped() {
        let r = resource(&Method::GET, "/api/v1/namespaces/demo", false);
        assert_eq!(
            (
                r.verb,
                r.namespace.as_str(),
                r.resource.as_str(),
                r.name.as_str()
            ),
            (Verb::Get, "", "namespaces", "demo")
        );
        let r = resource(&Method::PUT, "/api/v1/namespaces/demo/status", false);
        assert_eq!(
            (r.resource.as_str(), r.name.as_str(), r.subresource.as_str()),
            ("namespaces", "demo", "status")
        );
        let r = resource(&Method::GET, "/api/v1/namespaces", true);
        assert_eq!((r.verb, r.resource.as_str()), (Verb::Watch, "namespaces"));
    }

    #[test]
    fn collections_and_verbs() {
        assert_eq!(
            resource(&Method::GET, "/api/v1/pods", false).verb,
            Verb::List
        );
        assert_eq!(
            resource(&Method::GET, "/api/v1/namespaces/a/pods", true).verb,
            Verb::Watch
        );
        assert_eq!(
            resource(&Method::POST, "/api/v1/namespaces/a/pods", false).verb,
            Verb::Create
        );
        assert_eq!(
            resource(&Method::DELETE, "/api/v1/namespaces/a/pods", false).verb,
            Verb::DeleteCollection
        );
        assert_eq!(
            resource(&Method::DELETE, "/api/v1/namespaces/a/pods/x", false).verb,
            Verb::Delete
        );
        assert_eq!(
            resource(&Method::PATCH, "/api/v1/nodes/n1/status", false).subresource,
            "status"
        );
    }

    #[test]
    fn discovery_paths() {
        assert_eq!(
            parse(&Method::GET, "/api", false),
            Some(Target::CoreVersions)
        );
        assert_eq!(
            parse(&Method::GET, "/apis/apps", false),
            Some(Target::Group("apps".into()))
        );
        assert_eq!(
            parse(&Method::GET, "/apis/apps/v1", false),
            Some(Target::Resources {
                group: "apps".into(),
                version: "v1".into()
            })
        );
        assert_eq!(parse(&Method::GET, "/nope", false), None);
        assert_eq!(
            parse(&Method::GET, "/.well-known/openid-configuration", false),
            Some(Target::OpenIdConfiguration)
        );
        assert_eq!(
            parse(&Method::GET, "/openid/v1/jwks", false),
            Some(Target::Jwks)
        );
        assert_eq!(parse(&Method::POST, "/openid/v1/jwks", false), None);
        assert_eq!(parse(&Method::GET, "/api/v1/a/b/c/d", false), None);
    }
}
