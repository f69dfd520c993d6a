//! One home per kind: each built-in resource is a [`ResourceInfo`] (what
//! discovery and routing need) plus a [`Strategy`] (every per-kind rule:
//! typing, defaulting, validation, printing, field selectors, patch schema,
//! deletion), like kube-apiserver's per-resource strategies and printers.
//!
//! The generic machinery (admission, [`crate::table`], [`crate::selector`],
//! [`crate::patch`], [`crate::apply`], [`crate::delete`]) only calls the
//! strategy. Adding a kind is one module here plus one line in [`BUILTIN`];
//! the required methods of [`Strategy`] make a forgotten rule a compile error,
//! and the rest have defaults that fit a kind with no special behaviour (which
//! is also what a custom resource would get).

mod binding;
mod clusterrole;
mod clusterrolebinding;
mod configmap;
mod deployment;
mod endpoints;
mod endpointslice;
mod event;
mod localsubjectaccessreview;
mod namespace;
mod networkpolicy;
mod node;
mod persistentvolume;
mod persistentvolumeclaim;
mod pod;
mod replicaset;
mod role;
mod rolebinding;
mod scale;
mod secret;
mod selfsubjectaccessreview;
mod selfsubjectreview;
mod selfsubjectrulesreview;
mod service;
mod serviceaccount;
mod subjectaccessreview;
mod tokenrequest;
mod tokenreview;

pub use binding::BINDING;
pub use clusterrole::CLUSTER_ROLE;
pub use clusterrolebinding::CLUSTER_ROLE_BINDING;
pub use configmap::CONFIG_MAP;
pub use deployment::DEPLOYMENT;
pub use endpoints::ENDPOINTS;
pub use endpointslice::ENDPOINT_SLICE;
pub use event::EVENT;
use k8s_openapi::jiff::Timestamp;
pub use localsubjectaccessreview::LOCAL_SUBJECT_ACCESS_REVIEW;
pub use namespace::NAMESPACE;
pub use networkpolicy::NETWORK_POLICY;
pub use node::NODE;
pub use persistentvolume::PERSISTENT_VOLUME;
pub use persistentvolumeclaim::PERSISTENT_VOLUME_CLAIM;
pub use pod::POD;
pub use replicaset::REPLICA_SET;
pub use role::ROLE;
pub use rolebinding::ROLE_BINDING;
pub use scale::SCALE;
pub use secret::SECRET;
pub use selfsubjectaccessreview::SELF_SUBJECT_ACCESS_REVIEW;
pub use selfsubjectreview::{SELF_SUBJECT_REVIEW, SELF_SUBJECT_REVIEW_V1BETA1};
pub use selfsubjectrulesreview::SELF_SUBJECT_RULES_REVIEW;
use serde_json::Value;
pub use service::SERVICE;
pub use serviceaccount::SERVICE_ACCOUNT;
pub use subjectaccessreview::SUBJECT_ACCESS_REVIEW;
pub use tokenrequest::{DEFAULT_EXPIRATION_SECONDS, TOKEN_REQUEST};
pub use tokenreview::TOKEN_REVIEW;

use crate::delete::DeleteOptions;
use crate::field::FieldError;
use crate::patch::schema::ListStrategy;
use crate::registry::{ResourceInfo, Subresource};
use crate::table::{self, Column};
use crate::typed::TypedError;
use crate::validation::meta::NameFn;
use crate::validation::names;

/// The served built-in resources, in discovery order: core, then the groups
/// in kube-apiserver's order, each group's resources by name (the objects
/// of subresources, [`SUBRESOURCE_KINDS`], are not listed).
pub static BUILTIN: &[&ResourceInfo] = &[
    &BINDING,
    &CONFIG_MAP,
    &ENDPOINTS,
    &EVENT,
    &NAMESPACE,
    &NODE,
    &PERSISTENT_VOLUME_CLAIM,
    &PERSISTENT_VOLUME,
    &POD,
    &SECRET,
    &SERVICE,
    &SERVICE_ACCOUNT,
    &DEPLOYMENT,
    &REPLICA_SET,
    &SELF_SUBJECT_REVIEW,
    &TOKEN_REVIEW,
    &SELF_SUBJECT_REVIEW_V1BETA1,
    &LOCAL_SUBJECT_ACCESS_REVIEW,
    &SELF_SUBJECT_ACCESS_REVIEW,
    &SELF_SUBJECT_RULES_REVIEW,
    &SUBJECT_ACCESS_REVIEW,
    &NETWORK_POLICY,
    &CLUSTER_ROLE_BINDING,
    &CLUSTER_ROLE,
    &ROLE_BINDING,
    &ROLE,
    &ENDPOINT_SLICE,
];

/// Kinds that are only the object of a subresource (`deployments/scale`,
/// `serviceaccounts/token`): resolvable by kind, not listed in discovery.
pub static SUBRESOURCE_KINDS: &[&ResourceInfo] = &[&SCALE, &TOKEN_REQUEST];

/// The rules of one resource. The two required methods are what every kind
/// must decide for itself; every other method has the behaviour of a kind with
/// no special rules.
pub trait Strategy: std::fmt::Debug + Send + Sync {
    /// Decode `value` into the kind's typed form and serialize it back: type
    /// errors are reported, unknown fields dropped.
    fn typed_round_trip(&self, value: &Value) -> Result<Value, TypedError>;

    /// Validate the kind's own fields of a new (defaulted) object; metadata
    /// is validated generically with [`Strategy::name_rule`].
    fn validate(&self, obj: &Value) -> Vec<FieldError>;

    /// Fix up the typed form against what the client sent (e.g. a Go pointer
    /// that is nil when absent but that the typed form defaults).
    fn normalize_typed(&self, _sent: &Value, _typed: &mut Value) {}

    /// Kind-specific changes to a new object before defaulting
    /// (`PrepareForCreate`).
    fn prepare_for_create(&self, _obj: &mut Value) {}

    /// Kind-specific changes to an update before defaulting, after the
    /// server-owned metadata was carried over from `old` (`PrepareForUpdate`).
    fn prepare_for_update(&self, _new: &mut Value, _old: &Value) {}

    /// Whether a create keeps the `status` it was sent even though `/status`
    /// is served (Nodes report their own status when they register).
    fn keeps_status_on_create(&self) -> bool {
        false
    }

    /// Apply the defaults Kubernetes applies to a new or updated object.
    fn defaults(&self, _obj: &mut Value) {}

    /// Status fields a create initialises (only for kinds serving `/status`).
    fn initial_status(&self, _obj: &mut Value) {}

    /// The rule for `metadata.name`; `None` when the object has no metadata
    /// of its own to validate (Scale).
    fn name_rule(&self) -> Option<NameFn> {
        Some(names::dns1123_subdomain)
    }

    /// Update-only rules (immutable fields) beyond [`Strategy::validate`].
    fn validate_update(&self, _new: &Value, _old: &Value) -> Vec<FieldError> {
        Vec::new()
    }

    /// Status rules of a `/status` update, beyond metadata immutables.
    fn validate_status_update(&self, _new: &Value, _old: &Value) -> Vec<FieldError> {
        Vec::new()
    }

    /// Table columns (all, wide ones with priority 1).
    fn columns(&self) -> &'static [Column] {
        &[table::NAME, table::AGE]
    }

    /// One Table row's cells for `obj`, one per [`Strategy::columns`] entry.
    fn row(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        vec![table::object_name(obj), table::creation_age(obj, now)]
    }

    /// Field selector labels beyond `metadata.name` and `metadata.namespace`.
    fn field_labels(&self) -> &'static [&'static str] {
        &[]
    }

    /// The string value of a field label on `obj` (`""` when unset).
    fn field_value(&self, obj: &Value, field: &str) -> String {
        crate::selector::field_string(obj, field, "")
    }

    /// How the list at `path` (field names from the root, indices omitted)
    /// merges, for paths outside `metadata` and `status.conditions`.
    fn list_strategy(&self, _path: &[&str]) -> ListStrategy {
        ListStrategy::Replace
    }

    /// Whether the map or list elements at `path` carry
    /// `patchStrategy:"retainKeys"`.
    fn retains_keys(&self, _path: &[&str]) -> bool {
        false
    }

    /// Whether the struct at `path` is atomic (`+structType=atomic`), owned
    /// as a whole by server-side apply.
    fn atomic(&self, _path: &[&str]) -> bool {
        false
    }

    /// Whether the map at `path` is a granular `map[string]…` beyond the
    /// well-known ones (labels, data, …), owned including the map itself.
    fn granular_map(&self, _path: &[&str]) -> bool {
        false
    }

    /// The grace period a delete gets (0: no graceful deletion).
    fn grace_period(&self, _obj: &Value, _opts: &DeleteOptions) -> i64 {
        0
    }

    /// Whether a kind-specific finalization keeps a deleted object
    /// (a Namespace's `spec.finalizers`).
    fn finalizing(&self, _obj: &Value) -> bool {
        false
    }

    /// Changes when deletion starts (a Namespace goes `Terminating`).
    fn begin_deletion(&self, _obj: &mut Value) {}

    /// After an update of an object being deleted with no finalizers left:
    /// whether the kind lets it go now.
    fn ready_to_remove(&self, obj: &Value) -> bool {
        !self.finalizing(obj)
    }
}

/// Every verb on a full resource.
pub(crate) const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// The only verb of a create-only kind ([`crate::registry::Serving::CreateOnly`]).
pub(crate) const CREATE_ONLY: &[&str] = &["create"];

/// The verbs of a `status` or `scale` subresource.
pub(crate) const STATUS_VERBS: &[&str] = &["get", "patch", "update"];

/// The `status` subresource of a kind.
pub(crate) const fn status(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
) -> Subresource {
    Subresource {
        name: "status",
        group,
        version,
        kind,
        verbs: STATUS_VERBS,
    }
}

/// The `scale` subresource (`autoscaling/v1 Scale`).
pub(crate) const SCALE_SUBRESOURCE: Subresource = Subresource {
    name: "scale",
    group: "autoscaling",
    version: "v1",
    kind: "Scale",
    verbs: STATUS_VERBS,
};

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_row_has_a_cell_per_column() {
        for info in BUILTIN.iter().chain(SUBRESOURCE_KINDS).copied() {
            let strategy = info.strategy();
            let row = strategy.row(&json!({}), Timestamp::UNIX_EPOCH);
            assert_eq!(row.len(), strategy.columns().len(), "{}", info.kind);
        }
    }

    #[test]
    fn create_only_kinds_serve_only_create() {
        for info in BUILTIN.iter().chain(SUBRESOURCE_KINDS).copied() {
            match info.serving {
                crate::registry::Serving::Stored => {
                    assert!(info.verbs.contains(&"get"), "{}", info.kind);
                }
                crate::registry::Serving::CreateOnly => {
                    assert_eq!(info.verbs, CREATE_ONLY, "{}", info.kind);
                    assert!(!info.is_stored());
                }
            }
        }
        assert!(!BINDING.is_stored() && !TOKEN_REQUEST.is_stored());
        assert!(ROLE.is_stored() && SCALE.is_stored());
    }

    #[test]
    fn builtin_resources_are_distinct() {
        for (i, a) in BUILTIN.iter().enumerate() {
            assert!(
                BUILTIN[i + 1..].iter().all(|b| a != b),
                "{} served twice",
                a.plural
            );
        }
    }
}
