//! Patch strategies and merge keys, from the `patchStrategy`/`patchMergeKey`
//! struct tags in `k8s.io/api`: the metadata ones every kind shares and the
//! PodSpec ones, here; the rest per kind in [`crate::kinds::Strategy`].

use crate::registry::ResourceInfo;

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

/// The strategy for the list at `path` in an object of `info`'s kind.
pub fn list_strategy(info: &ResourceInfo, path: &[&str]) -> ListStrategy {
    match path {
        ["metadata", "finalizers"] => ListStrategy::MergePrimitives,
        ["metadata", "ownerReferences"] => ListStrategy::MergeByKey("uid"),
        ["status", "conditions"] => ListStrategy::MergeByKey("type"),
        _ => info.strategy().list_strategy(path),
    }
}

/// Whether the map (or list elements) at `path` carry `patchStrategy:"retainKeys"`.
pub fn retains_keys(info: &ResourceInfo, path: &[&str]) -> bool {
    info.strategy().retains_keys(path)
}

/// The strategy for a list at `rest` inside a `PodSpec` (a Pod's `spec`, a
/// workload's `spec.template.spec`).
pub fn pod_spec_list_strategy(rest: &[&str]) -> ListStrategy {
    use ListStrategy::{MergeByKey, Replace};
    match rest {
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
    }
}

/// Whether the field at `rest` inside a `PodSpec` retains keys.
pub fn pod_spec_retains_keys(rest: &[&str]) -> bool {
    matches!(rest, ["volumes" | "resourceClaims"])
}
