//! The resources skep serves: each [`ResourceInfo`] (group/version/kind,
//! plural and short names, scope, verbs, subresources, and the kind's
//! [`Strategy`]), the [`Registry`] that holds them, and the discovery documents
//! built from it. The built-in entries live in [`crate::kinds`].

use std::sync::LazyLock;

use serde_json::{Value, json};

use crate::kinds::{self, Strategy};
use crate::typed::TypedError;

/// A subresource such as `pods/status` or `deployments/scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subresource {
    /// `status`, `scale`, `binding`, `log`, `exec`.
    pub name: &'static str,
    /// Group of the object the subresource takes and returns.
    pub group: &'static str,
    /// Version of that object.
    pub version: &'static str,
    /// Kind of that object.
    pub kind: &'static str,
    /// Verbs allowed on it.
    pub verbs: &'static [&'static str],
}

/// How requests for a resource are served. Every place that chooses between
/// the store and a handler matches on this exhaustively, so a new way of
/// serving is a compile error wherever it is not handled yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    /// Objects are kept in the store; the generic REST code serves every verb
    /// in [`ResourceInfo::verbs`].
    Stored,
    /// Nothing is stored: the only verb is `create`, answered by a
    /// kind-specific handler with the object it computed (a review's
    /// `status`, a binding's effect); [`crate::admission::admit_create_only`]
    /// checks the request body first.
    CreateOnly,
}

/// One served resource: everything discovery and request routing need, and
/// the [`Strategy`] holding the kind's rules.
#[derive(Debug, Clone, Copy)]
pub struct ResourceInfo {
    /// API group, empty for core.
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// `Kind` as in the object.
    pub kind: &'static str,
    /// URL plural: `pods`.
    pub plural: &'static str,
    /// Singular name: `pod`.
    pub singular: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// kubectl short names.
    pub short_names: &'static [&'static str],
    /// Categories (`all`).
    pub categories: &'static [&'static str],
    /// Verbs on the main resource.
    pub verbs: &'static [&'static str],
    /// Subresources served.
    pub subresources: &'static [Subresource],
    /// Whether `metadata.generation` tracks spec changes (set to 1 on create).
    pub tracks_generation: bool,
    /// Whether objects are stored or each create is answered by a handler.
    pub serving: Serving,
    /// The kind's rules.
    pub(crate) strategy: &'static dyn Strategy,
}

impl ResourceInfo {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `PodList`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// The subresource with this name, if served.
    pub fn subresource(&self, name: &str) -> Option<&'static Subresource> {
        self.subresources.iter().find(|s| s.name == name)
    }

    /// Whether objects of this kind live in the store
    /// ([`Serving::Stored`]); create-only kinds never reach it.
    pub fn is_stored(&self) -> bool {
        match self.serving {
            Serving::Stored => true,
            Serving::CreateOnly => false,
        }
    }

    /// Whether `/status` is served (and so main-resource writes keep the old status).
    pub fn has_status(&self) -> bool {
        self.subresource("status").is_some()
    }

    /// Decode `value` into this kind's k8s-openapi type and serialize it back:
    /// type errors are reported, unknown fields dropped.
    pub fn typed_round_trip(&self, value: &Value) -> Result<Value, TypedError> {
        self.strategy.typed_round_trip(value)
    }

    /// The kind's rules.
    pub fn strategy(&self) -> &'static dyn Strategy {
        self.strategy
    }
}

/// Two infos are the same resource when group, version and plural agree.
impl PartialEq for ResourceInfo {
    fn eq(&self, other: &Self) -> bool {
        self.group == other.group && self.version == other.version && self.plural == other.plural
    }
}

impl Eq for ResourceInfo {}

/// A registry entry could not be added.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Another entry already serves this group/version/plural.
    #[error("failed to register {plural}.{group}/{version}: already served")]
    AlreadyRegistered {
        /// API group.
        group: String,
        /// API version.
        version: String,
        /// URL plural.
        plural: String,
    },
}

/// The served resources: the built-ins, and room for entries added at run
/// time (custom resources) with [`Registry::register`].
#[derive(Debug, Clone)]
pub struct Registry {
    entries: Vec<&'static ResourceInfo>,
}

static BUILTIN_REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::builtin);

impl Registry {
    /// The built-in resources ([`kinds::BUILTIN`]).
    pub fn builtin() -> Self {
        Self {
            entries: kinds::BUILTIN.to_vec(),
        }
    }

    /// Serve one more resource.
    pub fn register(&mut self, info: &'static ResourceInfo) -> Result<(), RegistryError> {
        if self.entries.iter().any(|r| **r == *info) {
            return Err(RegistryError::AlreadyRegistered {
                group: info.group.to_owned(),
                version: info.version.to_owned(),
                plural: info.plural.to_owned(),
            });
        }
        self.entries.push(info);
        Ok(())
    }

    /// Stop serving a resource; returns its entry if it was served.
    pub fn unregister(
        &mut self,
        group: &str,
        version: &str,
        plural: &str,
    ) -> Option<&'static ResourceInfo> {
        let at = self
            .entries
            .iter()
            .position(|r| r.group == group && r.version == version && r.plural == plural)?;
        Some(self.entries.remove(at))
    }

    /// Every served resource (not subresource-only kinds like Scale).
    pub fn resources(&self) -> &[&'static ResourceInfo] {
        &self.entries
    }

    /// Resolve a URL `(group, version, plural)`.
    pub fn by_plural(
        &self,
        group: &str,
        version: &str,
        plural: &str,
    ) -> Option<&'static ResourceInfo> {
        self.entries
            .iter()
            .copied()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    /// Resolve an object's `(apiVersion, kind)`, the objects of subresources
    /// (Scale, TokenRequest) included.
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
        let (group, version) = split_api_version(api_version);
        self.entries
            .iter()
            .copied()
            .chain(kinds::SUBRESOURCE_KINDS.iter().copied())
            .find(|r| r.group == group && r.version == version && r.kind == kind)
    }
}

/// The built-in registry.
pub fn builtin() -> &'static Registry {
    &BUILTIN_REGISTRY
}

/// Every built-in served resource (not subresource-only kinds like Scale).
pub fn resources() -> &'static [&'static ResourceInfo] {
    builtin().resources()
}

/// Resolve a URL `(group, version, plural)` among the built-ins.
pub fn by_plural(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    builtin().by_plural(group, version, plural)
}

/// Resolve an object's `(apiVersion, kind)` among the built-ins.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    builtin().by_kind(api_version, kind)
}

/// Split `apps/v1` into `("apps", "v1")` and `v1` into `("", "v1")`.
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}

/// Served groups other than core, in discovery order, each with its
/// versions, the preferred (highest priority) first.
fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for r in resources().iter().filter(|r| !r.group.is_empty()) {
        match out.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, versions)) if !versions.contains(&r.version) => versions.push(r.version),
            Some(_) => {}
            None => out.push((r.group, vec![r.version])),
        }
    }
    for (_, versions) in &mut out {
        versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
    }
    out
}

/// Kubernetes' version priority (`version.CompareKubeAwareVersionStrings`):
/// GA above beta above alpha, then the higher major and minor number.
fn version_priority(version: &str) -> (u8, u32, u32) {
    let Some(rest) = version.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let Ok(major) = rest[..digits].parse::<u32>() else {
        return (0, 0, 0);
    };
    let suffix = &rest[digits..];
    let (stage, minor) = if suffix.is_empty() {
        (3, 0)
    } else if let Some(n) = suffix.strip_prefix("beta") {
        (2, n.parse().unwrap_or(0))
    } else if let Some(n) = suffix.strip_prefix("alpha") {
        (1, n.parse().unwrap_or(0))
    } else {
        return (0, 0, 0);
    };
    (stage, major, minor)
}

/// One group's `APIGroup` body: its versions and the preferred one.
fn group_entry(group: &str, versions: &[&str]) -> Value {
    let gvs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    let preferred = gvs.first().cloned().unwrap_or_else(|| json!({}));
    json!({"name": group, "versions": gvs, "preferredVersion": preferred})
}

/// `GET /api`: the `APIVersions` document.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

/// `GET /apis`: the `APIGroupList` document.
pub fn api_group_list() -> Value {
    let groups: Vec<Value> = groups()
        .iter()
        .map(|(group, versions)| group_entry(group, versions))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/<group>`: one `APIGroup`, if served.
pub fn api_group(group: &str) -> Option<Value> {
    groups()
        .iter()
        .find(|(g, _)| *g == group)
        .map(|(g, versions)| {
            let mut entry = group_entry(g, versions);
            entry["kind"] = json!("APIGroup");
            entry["apiVersion"] = json!("v1");
            entry
        })
}

/// `GET /api/v1` or `/apis/<group>/<version>`: the `APIResourceList`, if served.
pub fn api_resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for r in self::resources()
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        resources.push(entry);
        for s in r.subresources {
            let mut sub = json!({
                "name": format!("{}/{}", r.plural, s.name),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": s.kind,
                "verbs": s.verbs,
            });
            if s.group != r.group || s.version != r.version {
                sub["group"] = json!(s.group);
                sub["version"] = json!(s.version);
            }
            resources.push(sub);
        }
    }
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}

/// Aggregated discovery (`apidiscovery.k8s.io/v2` `APIGroupDiscoveryList`) for
/// `/api` (`core == true`) or `/apis`, which kubectl 1.32 asks for first.
pub fn aggregated_discovery(core: bool) -> Value {
    let group_versions: Vec<(&str, Vec<&str>)> = if core {
        vec![("", vec!["v1"])]
    } else {
        groups()
    };
    let items: Vec<Value> = group_versions
        .iter()
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|version| {
                    json!({
                        "version": version,
                        "resources": discovery_resources(group, version),
                        "freshness": "Current",
                    })
                })
                .collect();
            let metadata = if group.is_empty() {
                json!({"creationTimestamp": null})
            } else {
                json!({"name": group, "creationTimestamp": null})
            };
            json!({"metadata": metadata, "versions": versions})
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

/// The aggregated-discovery `resources` of one group version.
fn discovery_resources(group: &str, version: &str) -> Vec<Value> {
    resources()
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .map(|r| {
            let subresources: Vec<Value> = r
                .subresources
                .iter()
                .map(|s| {
                    json!({
                        "subresource": s.name,
                        "responseKind": {"group": s.group, "version": s.version, "kind": s.kind},
                        "verbs": s.verbs,
                    })
                })
                .collect();
            let mut entry = json!({
                "resource": r.plural,
                "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": r.singular,
                "verbs": r.verbs,
            });
            if !r.short_names.is_empty() {
                entry["shortNames"] = json!(r.short_names);
            }
            if !r.categories.is_empty() {
                entry["categories"] = json!(r.categories);
            }
            if !subresources.is_empty() {
                entry["subresources"] = Value::Array(subresources);
            }
            entry
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_plural_and_kind() {
        let d = by_plural("apps", "v1", "deployments");
        assert_eq!(d.map(|r| r.kind), Some("Deployment"));
        assert_eq!(by_kind("v1", "Pod").map(|r| r.plural), Some("pods"));
        assert_eq!(by_kind("autoscaling/v1", "Scale"), Some(&kinds::SCALE));
        assert!(by_plural("", "v1", "deployments").is_none());
        assert_eq!(kinds::SERVICE.short_names, &["svc"]);
    }

    #[test]
    fn entries_come_and_go_at_run_time() {
        let mut registry = Registry::builtin();
        let err = registry.register(&kinds::POD).err();
        assert!(matches!(
            err,
            Some(RegistryError::AlreadyRegistered { ref plural, .. }) if plural == "pods"
        ));
        assert_eq!(registry.unregister("", "v1", "pods"), Some(&kinds::POD));
        assert!(registry.by_plural("", "v1", "pods").is_none());
        assert!(registry.by_kind("v1", "Pod").is_none());
        assert!(registry.register(&kinds::POD).is_ok());
        assert_eq!(
            registry.by_kind("v1", "Pod").map(|r| r.plural),
            Some("pods")
        );
        assert!(by_plural("", "v1", "pods").is_some(), "the built-ins stay");
    }

    /// The entry for `name` in an `APIResourceList`.
    fn resource_entry(group: &str, version: &str, name: &str) -> Value {
        api_resource_list(group, version)
            .and_then(|list| {
                list["resources"]
                    .as_array()?
                    .iter()
                    .find(|r| r["name"] == name)
                    .cloned()
            })
            .unwrap_or_default()
    }

    #[test]
    fn identity_groups_are_discovered() {
        let tokenreviews = resource_entry("authentication.k8s.io", "v1", "tokenreviews");
        assert_eq!(tokenreviews["verbs"], json!(["create"]));
        assert_eq!(tokenreviews["namespaced"], false);
        let whoami = resource_entry("authentication.k8s.io", "v1beta1", "selfsubjectreviews");
        assert_eq!(whoami["kind"], "SelfSubjectReview");
        assert_eq!(whoami["verbs"], json!(["create"]));
        let local = resource_entry("authorization.k8s.io", "v1", "localsubjectaccessreviews");
        assert_eq!(local["namespaced"], true);
        assert_eq!(local["verbs"], json!(["create"]));
        for name in [
            "selfsubjectaccessreviews",
            "selfsubjectrulesreviews",
            "subjectaccessreviews",
        ] {
            let entry = resource_entry("authorization.k8s.io", "v1", name);
            assert_eq!(entry["verbs"], json!(["create"]), "{name}");
        }
        for name in [
            "roles",
            "rolebindings",
            "clusterroles",
            "clusterrolebindings",
        ] {
            let entry = resource_entry("rbac.authorization.k8s.io", "v1", name);
            assert_eq!(entry["verbs"], json!(kinds::ALL_VERBS), "{name}");
            assert!(entry.get("shortNames").is_none(), "{name}");
        }
        let token = resource_entry("", "v1", "serviceaccounts/token");
        assert_eq!(token["kind"], "TokenRequest");
        assert_eq!(token["group"], "authentication.k8s.io");
        assert_eq!(token["verbs"], json!(["create"]));

        let group = api_group("authentication.k8s.io").unwrap_or_default();
        assert_eq!(
            group["versions"],
            json!([
                {"groupVersion": "authentication.k8s.io/v1", "version": "v1"},
                {"groupVersion": "authentication.k8s.io/v1beta1", "version": "v1beta1"},
            ])
        );
        assert_eq!(group["preferredVersion"]["version"], "v1");
        let names: Vec<Value> = api_group_list()["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| g["name"].clone())
            .collect();
        assert_eq!(
            names,
            [
                "apps",
                "authentication.k8s.io",
                "authorization.k8s.io",
                "networking.k8s.io",
                "rbac.authorization.k8s.io",
                "discovery.k8s.io",
            ]
        );
        let agg = aggregated_discovery(false);
        let authn = agg["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["metadata"]["name"] == "authentication.k8s.io")
            .cloned()
            .unwrap_or_default();
        assert_eq!(authn["versions"][0]["version"], "v1");
        assert_eq!(authn["versions"][1]["version"], "v1beta1");
        assert_eq!(
            authn["versions"][1]["resources"][0]["resource"],
            "selfsubjectreviews"
        );
        assert_eq!(
            by_kind("authentication.k8s.io/v1", "TokenRequest"),
            Some(&kinds::TOKEN_REQUEST)
        );
    }

    #[test]
    fn versions_sort_by_kubernetes_priority() {
        let mut versions = ["v1alpha1", "v1beta1", "v2beta1", "v1", "v2", "v1beta2"];
        versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        assert_eq!(
            versions,
            ["v2", "v1", "v2beta1", "v1beta2", "v1beta1", "v1alpha1"]
        );
    }

    #[test]
    fn discovery_lists_subresources() {
        let list = api_resource_list("apps", "v1").unwrap_or_default();
        let names: Vec<&str> = list["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert!(names.contains(&"deployments/scale"));
        let scale = list["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["name"] == "deployments/scale")
            .cloned()
            .unwrap_or_default();
        assert_eq!(scale["group"], "autoscaling");
        assert_eq!(scale["kind"], "Scale");
        let groups = api_group_list();
        assert_eq!(groups["groups"][0]["name"], "apps");
        assert_eq!(
            groups["groups"][0]["preferredVersion"]["groupVersion"],
            "apps/v1"
        );
        assert!(api_resource_list("", "v2").is_none());
        let agg = aggregated_discovery(true);
        assert_eq!(
            agg["items"][0]["versions"][0]["resources"][0]["resource"],
            "bindings"
        );
    }
}
