//! The bootstrap RBAC policy, reconciled at every start as kube-apiserver's
//! `rbac/bootstrap-roles` post-start hook does: missing roles and bindings
//! are created; existing ones that still carry
//! `rbac.authorization.kubernetes.io/autoupdate: "true"` get back any rule
//! or subject they lost (additions a user made are kept); ones whose
//! annotation is set to anything else are left as the user made them.

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleRef};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use skep_api::{ApiError, StatusReason};
use skep_objects::{Objects, Typed};
use skep_rbac::bootstrap::{self, AUTOUPDATE_ANNOTATION, BOOTSTRAPPING_LABEL};
use skep_rbac::subject::subject;

/// The ClusterRoleBinding granting the kubelet client the kubelet API (k3s's name).
pub const KUBELET_CLIENT_BINDING: &str = "kube-apiserver-kubelet-admin";
/// The ClusterRole it grants (upstream's full access to the kubelet API).
pub const KUBELET_API_ADMIN: &str = "system:kubelet-api-admin";

/// `kube-apiserver-kubelet-admin`: the API server's kubelet-client user
/// ([`skep_proto::KUBELET_CLIENT_USER`]) bound to `system:kubelet-api-admin`,
/// so node ports serve the API server's logs and exec.
#[must_use]
pub fn kubelet_client_binding() -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(KUBELET_CLIENT_BINDING.to_owned()),
            labels: Some(BTreeMap::from([(
                BOOTSTRAPPING_LABEL.0.to_owned(),
                BOOTSTRAPPING_LABEL.1.to_owned(),
            )])),
            annotations: Some(BTreeMap::from([(
                AUTOUPDATE_ANNOTATION.0.to_owned(),
                AUTOUPDATE_ANNOTATION.1.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: skep_rbac::RBAC_GROUP.to_owned(),
            kind: "ClusterRole".to_owned(),
            name: KUBELET_API_ADMIN.to_owned(),
        },
        subjects: Some(vec![subject("User", skep_proto::KUBELET_CLIENT_USER, None)]),
    }
}

/// The field manager of bootstrap writes.
const MANAGER: &str = "kube-apiserver";

/// Creates or repairs the bootstrap ClusterRoles and ClusterRoleBindings.
pub async fn reconcile(objects: &Objects) -> Result<(), ApiError> {
    for role in bootstrap::cluster_roles() {
        reconcile_one(objects, role, |have: &mut ClusterRole, want| {
            let mut changed = false;
            if have.aggregation_rule.is_none() && want.aggregation_rule.is_some() {
                have.aggregation_rule.clone_from(&want.aggregation_rule);
                changed = true;
            }
            if want.aggregation_rule.is_none() {
                let rules = have.rules.get_or_insert_with(Vec::new);
                for rule in want.rules.iter().flatten() {
                    if !rules.contains(rule) {
                        rules.push(rule.clone());
                        changed = true;
                    }
                }
            }
            changed
        })
        .await?;
    }
    let bindings = bootstrap::cluster_role_bindings()
        .into_iter()
        .chain([kubelet_client_binding()]);
    for binding in bindings {
        reconcile_one(objects, binding, |have: &mut ClusterRoleBinding, want| {
            let subjects = have.subjects.get_or_insert_with(Vec::new);
            let mut changed = false;
            for subject in want.subjects.iter().flatten() {
                if !subjects.contains(subject) {
                    subjects.push(subject.clone());
                    changed = true;
                }
            }
            changed
        })
        .await?;
    }
    Ok(())
}

async fn reconcile_one<T: Typed>(
    objects: &Objects,
    want: T,
    repair: impl Fn(&mut T, &T) -> bool,
) -> Result<(), ApiError> {
    let name = want.metadata().name.clone().unwrap_or_default();
    for _ in 0..5 {
        let Some(mut have) = objects.try_get_typed::<T>("", &name).await? else {
            match objects.create_typed(&want, MANAGER).await {
                Ok(_) => {
                    tracing::info!(kind = T::KIND, %name, "created bootstrap RBAC object");
                    return Ok(());
                }
                Err(err) if err.reason == StatusReason::AlreadyExists => continue,
                Err(err) => return Err(err),
            }
        };
        let autoupdate = have
            .metadata()
            .annotations
            .as_ref()
            .and_then(|a| a.get(AUTOUPDATE_ANNOTATION.0))
            // Anything Go's ParseBool reads as false protects the object.
            .is_none_or(|v| !matches!(v.as_str(), "false" | "False" | "FALSE" | "f" | "F" | "0"));
        if !autoupdate || !repair(&mut have, &want) {
            return Ok(());
        }
        match objects.update_typed(&have, "", MANAGER).await {
            Ok(_) => {
                tracing::info!(kind = T::KIND, %name, "repaired bootstrap RBAC object");
                return Ok(());
            }
            Err(err) if err.reason == StatusReason::Conflict => {}
            Err(err) => return Err(err),
        }
    }
    Err(ApiError::internal(format!(
        "{} {name} kept changing while being reconciled",
        T::KIND
    )))
}
