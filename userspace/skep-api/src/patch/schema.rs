//! Patch strategies and merge keys of the built-in kinds, from the
//! `patchStrategy`/`patchMergeKey` struct tags in `k8s.io/api`.

use crate::registry::Kind;

/// How a list field merges in a strategic merge patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// The patch list replaces the original (no strategy tag; atomic).
    Replace,
    /// A set of primitives: union (e.g. `finalizers`).
    MergePrimitives,
    /// A list of objects merged by a key field (e.g. containers by `name`).
    MergeByKey(&'static str),
}

/// Whether a path (field names from the object root, list indices omitted)
/// ends inside a PodSpec: `spec` of a Pod or `spec.template.spec` of a workload.
fn pod_spec_depth(kind: Kind, path: &[&str]) -> Option<usize> {
    match kind {
        Kind::Pod if path.first() == Some(&"spec") => Some(1),
        Kind::Deployment | Kind::ReplicaSet if path.starts_with(&["spec", "template", "spec"]) => {
            Some(3)
        }
        _ => None,
    }
}

/// The strategy for the list at `path` in an object of `kind`.
pub fn list_strategy(kind: Kind, path: &[&str]) -> ListStrategy {
    use ListStrategy::{MergeByKey, MergePrimitives, Replace};
    match path {
        ["metadata", "finalizers"] => return MergePrimitives,
        ["metadata", "ownerReferences"] => return MergeByKey("uid"),
        ["status", "conditions"] => return MergeByKey("type"),
        _ => {}
    }
    if let Some(depth) = pod_spec_depth(kind, path) {
        let rest = &path[depth..];
        return match rest {
            [
                "containers"
                | "initContainers"
                | "ephemeralContainers"
                | "volumes"
                | "imagePullSecrets"
                | "schedulingGates"
                | "resourceClaims",
            ]
            | [
                "containers" | "initContainers" | "ephemeralContainers",
                "env",
            ] => MergeByKey("name"),
            [
                "containers" | "initContainers" | "ephemeralContainers",
                "ports",
            ] => MergeByKey("containerPort"),
            [
                "containers" | "initContainers" | "ephemeralContainers",
                "volumeMounts",
            ] => MergeByKey("mountPath"),
            [
                "containers" | "initContainers" | "ephemeralContainers",
                "volumeDevices",
            ] => MergeByKey("devicePath"),
            ["hostAliases"] => MergeByKey("ip"),
            ["topologySpreadConstraints"] => MergeByKey("topologyKey"),
            _ => Replace,
        };
    }
    match (kind, path) {
        (Kind::Service, ["spec", "ports"]) => MergeByKey("port"),
        (Kind::Node, ["status", "addresses"]) => MergeByKey("type"),
        (Kind::Pod, ["status", "podIPs" | "hostIPs"]) => MergeByKey("ip"),
        _ => Replace,
    }
}

/// Whether the map (or list elements) at `path` carry `patchStrategy:"retainKeys"`.
pub fn retains_keys(kind: Kind, path: &[&str]) -> bool {
    match (kind, path) {
        (Kind::Deployment, ["spec", "strategy"]) => true,
        _ => pod_spec_depth(kind, path)
            .is_some_and(|d| matches!(&path[d..], ["volumes" | "resourceClaims"])),
    }
}
