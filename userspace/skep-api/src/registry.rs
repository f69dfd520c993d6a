//! The resource kinds skep serves: group/version/kind, plural and short names,
//! scope, verbs and subresources, and the discovery documents built from them.

use k8s_openapi::api::{apps, autoscaling, core, discovery, networking};
use serde_json::{Value, json};

use crate::typed::{TypedError, round_trip};

/// Which built-in kind a [`ResourceInfo`] is, for per-kind behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// core/v1 Namespace.
    Namespace,
    /// core/v1 Pod.
    Pod,
    /// core/v1 Service.
    Service,
    /// core/v1 Endpoints.
    Endpoints,
    /// core/v1 ConfigMap.
    ConfigMap,
    /// core/v1 Secret.
    Secret,
    /// core/v1 Node.
    Node,
    /// core/v1 Event.
    Event,
    /// core/v1 PersistentVolume.
    PersistentVolume,
    /// core/v1 PersistentVolumeClaim.
    PersistentVolumeClaim,
    /// core/v1 Binding (create-only; also `pods/binding`).
    Binding,
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 ReplicaSet.
    ReplicaSet,
    /// networking.k8s.io/v1 NetworkPolicy.
    NetworkPolicy,
    /// discovery.k8s.io/v1 EndpointSlice.
    EndpointSlice,
    /// autoscaling/v1 Scale (only as the `scale` subresource).
    Scale,
}

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

/// One served resource: everything discovery and request routing need.
#[derive(Debug, Clone, Copy)]
pub struct ResourceInfo {
    /// Which kind, for per-kind behaviour.
    pub id: Kind,
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
    /// Decode into the k8s-openapi type and serialize back.
    typed: fn(&Value) -> Result<Value, TypedError>,
}

const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const STATUS_VERBS: &[&str] = &["get", "patch", "update"];

const fn status(group: &'static str, version: &'static str, kind: &'static str) -> Subresource {
    Subresource {
        name: "status",
        group,
        version,
        kind,
        verbs: STATUS_VERBS,
    }
}

const SCALE: Subresource = Subresource {
    name: "scale",
    group: "autoscaling",
    version: "v1",
    kind: "Scale",
    verbs: STATUS_VERBS,
};

static RESOURCES: &[ResourceInfo] = &[
    ResourceInfo {
        id: Kind::Binding,
        group: "",
        version: "v1",
        kind: "Binding",
        plural: "bindings",
        singular: "binding",
        namespaced: true,
        short_names: &[],
        categories: &[],
        verbs: &["create"],
        subresources: &[],
        tracks_generation: false,
        typed: round_trip::<core::v1::Binding>,
    },
    ResourceInfo {
        id: Kind::ConfigMap,
        group: "",
        version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        singular: "configmap",
        namespaced: true,
        short_names: &["cm"],
        categories: &[],
        verbs: ALL_VERBS,
        subresources: &[],
        tracks_generation: false,
        typed: round_trip::<core::v1::ConfigMap>,
    },
    ResourceInfo {
        id: Kind::Endpoints,
        group: "",
        version: "v1",
        kind: "Endpoints",
        plural: "endpoints",
        singular: "endpoints",
        namespaced: true,
        short_names: &["ep"],
        categories: &[],
        verbs: ALL_VERBS,
        subresources: &[],
        tracks_generation: false,
        typed: round_trip::<core::v1::Endpoints>,
    },
    ResourceInfo {
        id: Kind::Event,
        group: "",
        version: "v1",
        kind: "Event",
        plural: "events",
        singular: "event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        verbs: ALL_VERBS,
        subresources: &[],
        tracks_generation: false,
        typed: round_trip::<core::v1::Event>,
    },
    ResourceInfo {
        id: Kind::Namespace,
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        namespaced: false,
        short_names: &["ns"],
        categories: &[],
        verbs: &[
            "create", "delete", "get", "list", "patch", "update", "watch",
        ],
        subresources: &[status("", "v1", "Namespace")],
        tracks_generation: false,
        typed: round_trip::<core::v1::Namespace>,
    },
    ResourceInfo {
        id: Kind::Node,
        group: "",
        version: "v1",
        kind: "Node",
        plural: "nodes",
        singular: "node",
        namespaced: false,
        short_names: &["no"],
        categories: &[],
        verbs: ALL_VERBS,
        subresources: &[status("", "v1", "Node")],
        tracks_generation: false,
        typed: round_trip::<core::v1::Node>,
    },
    ResourceInfo {
        id: Kind::PersistentVolumeClaim,
        group: "",
        version: "v1",
        kind: "PersistentVolumeClaim",
        plural: "persistentvolumeclaims",
        singular: "persistentvolumeclaim",
        namespaced: true,
        short_names: &["pvc"],
        categories: &[],
        verbs: ALL_VERBS,
        subresources: &[status("", "v1", "PersistentVolumeClaim")],
        tracks_generation: false,
        typed: round_trip::<core::v1::PersistentVolumeClaim>,
    },
    ResourceInfo {
        id: Kind::PersistentVolume,
        group: "",
        version: "v1",
        kind: "PersistentVolume",
        plural: "persistentvolumes",
        singular: "persistentvolume",
        namespaced: false,
        short_names: &["pv"],
        categories: &[],
        verbs: ALL_VERBS,
        subresources: &[status("", "v1", "PersistentVolume")],
        tracks_generation: false,
        typed: round_trip::<core::v1::PersistentVolume>,
    },
    ResourceInfo {
        id: Kind::Pod,
        group: "",
        version: "v1",
        kind: "Pod",
        plural: "pods",
        singular: "pod",
        namespaced: true,
        short_names: &["po"],
        categories: &["all"],
        verbs: ALL_VERBS,
        subresources: &[
            Subresource {
                name: "binding",
                group: "",
                version: "v1",
                kind: "Binding",
                verbs: &["create"],
            },
            Subresource {
                name: "exec",
                group: "",
                version: "v1",
                kind: "PodExecOptions",
                verbs: &["create", "get"],
            },
            Subresource {
                name: "log",
                group: "",
                version: "v1",
                kind: "Pod",
                verbs: &["get"],
            },
            status("", "v1", "Pod"),
        ],
        tracks_generation: false,
        typed: round_trip::<core::v1::Pod>,
    },
    ResourceInfo {
        id: Kind::Secret,
        group: "",
        version: "v1",
        kind: "Secret",
        plural: "secrets",
        singular: "secret",
        namespaced: true,
        short_names: &[],
        categories: &[],
        verbs: ALL_VERBS,
        subresources: &[],
        tracks_generation: false,
        typed: round_trip::<core::v1::Secret>,
    },
    ResourceInfo {
        id: Kind::Service,
        group: "",
        version: "v1",
        kind: "Service",
        plural: "services",
        singular: "service",
        namespaced: true,
        short_names: &["svc"],
        categories: &["all"],
        verbs: &[
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ],
        subresources: &[status("", "v1", "Service")],
        tracks_generation: false,
        typed: round_trip::<core::v1::Service>,
    },
    ResourceInfo {
        id: Kind::Deployment,
        group: "apps",
        version: "v1",
        kind: "Deployment",
        plural: "deployments",
        singular: "deployment",
        namespaced: true,
        short_names: &["deploy"],
        categories: &["all"],
        verbs: ALL_VERBS,
        subresources: &[SCALE, status("apps", "v1", "Deployment")],
        tracks_generation: true,
        typed: round_trip::<apps::v1::Deployment>,
    },
    ResourceInfo {
        id: Kind::ReplicaSet,
        group: "apps",
        version: "v1",
        kind: "ReplicaSet",
        plural: "replicasets",
        singular: "replicaset",
        namespaced: true,
        short_names: &["rs"],
        categories: &["all"],
        verbs: ALL_VERBS,
        subresources: &[SCALE, status("apps", "v1", "ReplicaSet")],
        tracks_generation: true,
        typed: round_trip::<apps::v1::ReplicaSet>,
    },
    ResourceInfo {
        id: Kind::NetworkPolicy,
        group: "networking.k8s.io",
        version: "v1",
        kind: "NetworkPolicy",
        plural: "networkpolicies",
        singular: "networkpolicy",
        namespaced: true,
        short_names: &["netpol"],
        categories: &[],
        verbs: ALL_VERBS,
        subresources: &[],
        tracks_generation: true,
        typed: round_trip::<networking::v1::NetworkPolicy>,
    },
    ResourceInfo {
        id: Kind::EndpointSlice,
        group: "discovery.k8s.io",
        version: "v1",
        kind: "EndpointSlice",
        plural: "endpointslices",
        singular: "endpointslice",
        namespaced: true,
        short_names: &[],
        categories: &[],
        verbs: ALL_VERBS,
        subresources: &[],
        tracks_generation: false,
        typed: round_trip::<discovery::v1::EndpointSlice>,
    },
];

/// The Scale subresource object (`autoscaling/v1`), which has no resource of its own.
pub static SCALE_INFO: ResourceInfo = ResourceInfo {
    id: Kind::Scale,
    group: "autoscaling",
    version: "v1",
    kind: "Scale",
    plural: "scale",
    singular: "scale",
    namespaced: true,
    short_names: &[],
    categories: &[],
    verbs: STATUS_VERBS,
    subresources: &[],
    tracks_generation: false,
    typed: round_trip::<autoscaling::v1::Scale>,
};

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

    /// Whether `/status` is served (and so main-resource writes keep the old status).
    pub fn has_status(&self) -> bool {
        self.subresource("status").is_some()
    }

    /// Decode `value` into this kind's k8s-openapi type and serialize it back:
    /// type errors are reported, unknown fields dropped.
    pub fn typed_round_trip(&self, value: &Value) -> Result<Value, TypedError> {
        (self.typed)(value)
    }
}

/// Every served resource (not subresource-only kinds like Scale).
pub fn resources() -> &'static [ResourceInfo] {
    RESOURCES
}

/// Resolve a URL `(group, version, plural)`.
pub fn by_plural(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Resolve an object's `(apiVersion, kind)`.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    let (group, version) = split_api_version(api_version);
    RESOURCES
        .iter()
        .chain(std::iter::once(&SCALE_INFO))
        .find(|r| r.group == group && r.version == version && r.kind == kind)
}

/// The info for a kind id.
pub fn by_id(id: Kind) -> &'static ResourceInfo {
    RESOURCES.iter().find(|r| r.id == id).unwrap_or(&SCALE_INFO)
}

/// Split `apps/v1` into `("apps", "v1")` and `v1` into `("", "v1")`.
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}

/// Served groups other than core, in discovery order, with their versions.
fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
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
        .into_iter()
        .map(|(group, version)| {
            let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
            json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/<group>`: one `APIGroup`, if served.
pub fn api_group(group: &str) -> Option<Value> {
    groups().into_iter().find(|(g, _)| *g == group).map(|(g, v)| {
        let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
        json!({"kind": "APIGroup", "apiVersion": "v1", "name": g, "versions": [gv.clone()], "preferredVersion": gv})
    })
}

/// `GET /api/v1` or `/apis/<group>/<version>`: the `APIResourceList`, if served.
pub fn api_resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for r in RESOURCES
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
    let mut items = Vec::new();
    let group_versions: Vec<(&str, &str)> = if core { vec![("", "v1")] } else { groups() };
    for (group, version) in group_versions {
        let resources: Vec<Value> = RESOURCES
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
            .collect();
        let metadata = if group.is_empty() {
            json!({"creationTimestamp": null})
        } else {
            json!({"name": group, "creationTimestamp": null})
        };
        items.push(json!({
            "metadata": metadata,
            "versions": [{"version": version, "resources": resources, "freshness": "Current"}],
        }));
    }
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_plural_and_kind() {
        let d = by_plural("apps", "v1", "deployments");
        assert_eq!(d.map(|r| r.kind), Some("Deployment"));
        assert_eq!(by_kind("v1", "Pod").map(|r| r.plural), Some("pods"));
        assert_eq!(
            by_kind("autoscaling/v1", "Scale").map(|r| r.id),
            Some(Kind::Scale)
        );
        assert!(by_plural("", "v1", "deployments").is_none());
        assert_eq!(by_id(Kind::Service).short_names, &["svc"]);
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
