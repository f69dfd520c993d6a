//! Authorization: whether a user may do what a request asks, as
//! kube-apiserver's `--authorization-mode=Node,RBAC` decides it. The
//! privileged group `system:masters` may do anything; otherwise RBAC decides
//! from a [`Policy`] kept current by watching the four RBAC kinds.
//!
//! The policy is read under a shared lock on every request; the watch task
//! is its only writer. Authorization never reads the store, so its cost does
//! not grow with the number of objects (the policy is indexed by subject).

use std::sync::{Arc, RwLock, RwLockReadGuard};

use axum::http::Method;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use skep_api::{ApiError, StatusReason};
use skep_objects::{Objects, Typed};
use skep_rbac::{Attributes, Decision, Forbidden, Policy, ResourceAttributes};
use skep_user::UserInfo;

use crate::request::{ResourceRequest, Target, Verb};

/// The cluster's authorizer: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Authorizer {
    policy: Arc<RwLock<Policy>>,
}

impl Authorizer {
    /// Loads the RBAC objects and keeps the policy current from then on
    /// (the watches run until the process ends). Returns once the policy
    /// holds everything stored, so no request is judged on a partial one.
    pub async fn start(objects: &Objects) -> Result<Self, ApiError> {
        let policy = Arc::new(RwLock::new(Policy::new()));
        let authorizer = Self { policy };
        let roles = Feed::<Role>::load(objects, &authorizer.policy).await?;
        let cluster_roles = Feed::<ClusterRole>::load(objects, &authorizer.policy).await?;
        let role_bindings = Feed::<RoleBinding>::load(objects, &authorizer.policy).await?;
        let cluster_role_bindings =
            Feed::<ClusterRoleBinding>::load(objects, &authorizer.policy).await?;
        tokio::spawn(roles.run(objects.clone(), authorizer.policy.clone()));
        tokio::spawn(cluster_roles.run(objects.clone(), authorizer.policy.clone()));
        tokio::spawn(role_bindings.run(objects.clone(), authorizer.policy.clone()));
        tokio::spawn(cluster_role_bindings.run(objects.clone(), authorizer.policy.clone()));
        Ok(authorizer)
    }

    /// An authorizer over a fixed policy (tests and benchmarks).
    #[must_use]
    pub fn with_policy(policy: Policy) -> Self {
        Self {
            policy: Arc::new(RwLock::new(policy)),
        }
    }

    /// The current RBAC policy (for reviews and escalation checks).
    pub fn policy(&self) -> RwLockReadGuard<'_, Policy> {
        self.policy
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The decision on `attrs`: Allow, or NoOpinion/Deny with the reason
    /// the 403 message carries.
    #[must_use]
    pub fn authorize(&self, attrs: &Attributes) -> Decision {
        if attrs.user.is_superuser() {
            return Decision::Allow {
                reason: String::new(),
            };
        }
        self.policy().authorize(attrs)
    }

    /// `Ok` when `attrs` is allowed, else upstream's 403.
    pub fn check(&self, attrs: &Attributes) -> Result<(), ApiError> {
        match self.authorize(attrs) {
            Decision::Allow { .. } => Ok(()),
            decision => Err(forbidden_error(&skep_rbac::forbidden(
                attrs,
                decision.reason(),
            ))),
        }
    }
}

/// The 403 `Status` of a [`Forbidden`]: `details` name the object and the
/// resource (as kind), as upstream's `NewForbidden` does.
#[must_use]
pub fn forbidden_error(forbidden: &Forbidden) -> ApiError {
    let mut err = ApiError::new(StatusReason::Forbidden, forbidden.message.clone());
    err.details = Some(Box::new(skep_api::status::StatusDetails {
        name: forbidden.name.clone(),
        group: forbidden.group.clone(),
        kind: forbidden.resource.clone(),
        ..Default::default()
    }));
    err
}

/// The authorization question a request asks (`RequestInfoFactory` +
/// `GetAuthorizerAttributes`): a resource verb for API paths, the lower-case
/// method on the path otherwise. A list or watch narrowed to one name by
/// `fieldSelector=metadata.name=N` is asked about `N`, as upstream does.
#[must_use]
pub fn attributes(
    user: &UserInfo,
    method: &Method,
    path: &str,
    target: Option<&Target>,
    field_selector: Option<&str>,
) -> Attributes {
    match target {
        Some(Target::Resource(req)) => resource_attributes(user, req, field_selector),
        _ => Attributes::non_resource(user.clone(), &method.as_str().to_ascii_lowercase(), path),
    }
}

fn resource_attributes(
    user: &UserInfo,
    req: &ResourceRequest,
    field_selector: Option<&str>,
) -> Attributes {
    let mut name = req.name.clone();
    if name.is_empty()
        && matches!(req.verb, Verb::List | Verb::Watch)
        && let Some(selected) = field_selector.and_then(single_name)
    {
        name = selected.to_owned();
    }
    Attributes::resource(
        user.clone(),
        verb_name(req.verb),
        ResourceAttributes {
            api_group: req.group.clone(),
            resource: req.resource.clone(),
            subresource: req.subresource.clone(),
            name,
            namespace: req.namespace.clone(),
        },
    )
}

/// The Kubernetes verb of a parsed request.
#[must_use]
pub fn verb_name(verb: Verb) -> &'static str {
    match verb {
        Verb::Get => "get",
        Verb::List => "list",
        Verb::Watch => "watch",
        Verb::Create => "create",
        Verb::Update => "update",
        Verb::Patch => "patch",
        Verb::Delete => "delete",
        Verb::DeleteCollection => "deletecollection",
    }
}

/// The name a field selector requires exactly (`metadata.name=N` or
/// `metadata.name==N`, alone or among other terms).
fn single_name(selector: &str) -> Option<&str> {
    selector.split(',').find_map(|term| {
        let value = term
            .strip_prefix("metadata.name==")
            .or_else(|| term.strip_prefix("metadata.name="))?;
        (!value.is_empty()).then_some(value)
    })
}

/// One RBAC kind's watch into the policy.
struct Feed<T> {
    revision: u64,
    /// (namespace, name) of every object of the kind in the policy.
    held: std::collections::BTreeSet<(String, String)>,
    _kind: std::marker::PhantomData<fn() -> T>,
}

/// How one RBAC kind goes into the policy.
trait PolicyObject: Typed {
    fn upsert(policy: &mut Policy, obj: Self);
    fn remove(policy: &mut Policy, namespace: &str, name: &str);
}

impl PolicyObject for Role {
    fn upsert(policy: &mut Policy, obj: Self) {
        policy.upsert_role(obj);
    }
    fn remove(policy: &mut Policy, namespace: &str, name: &str) {
        policy.remove_role(namespace, name);
    }
}

impl PolicyObject for ClusterRole {
    fn upsert(policy: &mut Policy, obj: Self) {
        policy.upsert_cluster_role(obj);
    }
    fn remove(policy: &mut Policy, _namespace: &str, name: &str) {
        policy.remove_cluster_role(name);
    }
}

impl PolicyObject for RoleBinding {
    fn upsert(policy: &mut Policy, obj: Self) {
        policy.upsert_role_binding(obj);
    }
    fn remove(policy: &mut Policy, namespace: &str, name: &str) {
        policy.remove_role_binding(namespace, name);
    }
}

impl PolicyObject for ClusterRoleBinding {
    fn upsert(policy: &mut Policy, obj: Self) {
        policy.upsert_cluster_role_binding(obj);
    }
    fn remove(policy: &mut Policy, _namespace: &str, name: &str) {
        policy.remove_cluster_role_binding(name);
    }
}

fn key_of<T: Typed>(obj: &T) -> (String, String) {
    let meta = obj.metadata();
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

fn write(policy: &RwLock<Policy>) -> std::sync::RwLockWriteGuard<'_, Policy> {
    policy
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<T: PolicyObject> Feed<T> {
    /// Lists the kind and makes the policy hold exactly what is stored.
    async fn load(objects: &Objects, policy: &RwLock<Policy>) -> Result<Self, ApiError> {
        let mut feed = Self {
            revision: 0,
            held: std::collections::BTreeSet::new(),
            _kind: std::marker::PhantomData,
        };
        feed.relist(objects, policy).await?;
        Ok(feed)
    }

    async fn relist(&mut self, objects: &Objects, policy: &RwLock<Policy>) -> Result<(), ApiError> {
        let (items, revision) = objects.list_typed::<T>("", "").await?;
        let listed: std::collections::BTreeSet<_> = items.iter().map(key_of).collect();
        let mut policy = write(policy);
        for (namespace, name) in self.held.difference(&listed) {
            T::remove(&mut policy, namespace, name);
        }
        for item in items {
            T::upsert(&mut policy, item);
        }
        self.held = listed;
        self.revision = revision;
        Ok(())
    }

    /// Follows the kind's watch forever; relists when the watch breaks.
    async fn run(mut self, objects: Objects, policy: Arc<RwLock<Policy>>) {
        loop {
            if let Err(err) = self.follow(&objects, &policy).await {
                tracing::warn!(kind = T::KIND, %err, "RBAC watch ended; relisting");
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            if let Err(err) = self.relist(&objects, &policy).await {
                tracing::warn!(kind = T::KIND, %err, "RBAC relist failed");
            }
        }
    }

    async fn follow(&mut self, objects: &Objects, policy: &RwLock<Policy>) -> Result<(), ApiError> {
        let mut watch = objects.watch_typed::<T>("", Some(self.revision)).await?;
        while let Some(event) = watch.next().await {
            let (kind, obj) = event?;
            let key = key_of(&obj);
            let mut policy = write(policy);
            if kind == skep_api::object::WatchEventType::Deleted {
                T::remove(&mut policy, &key.0, &key.1);
                self.held.remove(&key);
            } else {
                T::upsert(&mut policy, obj);
                self.held.insert(key);
            }
            drop(policy);
            self.revision = watch.revision();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_selector_names_the_object() {
        assert_eq!(single_name("metadata.name=web"), Some("web"));
        assert_eq!(
            single_name("status.phase=Running,metadata.name==db"),
            Some("db")
        );
        assert_eq!(single_name("metadata.name!=web"), None);
        assert_eq!(single_name("metadata.name="), None);
    }

    #[test]
    fn non_resource_verbs_are_lower_case_methods() {
        let user = UserInfo::new("jane", &[]);
        let attrs = attributes(&user, &Method::GET, "/healthz", Some(&Target::Health), None);
        assert_eq!(attrs.verb, "get");
        let attrs = attributes(&user, &Method::POST, "/x", None, None);
        assert_eq!(attrs.verb, "post");
    }

    #[test]
    fn superusers_need_no_rules() {
        let authorizer = Authorizer::with_policy(Policy::new());
        let admin = UserInfo::new("admin", &[skep_user::SYSTEM_MASTERS]);
        let attrs = Attributes::non_resource(admin, "get", "/anything");
        assert!(authorizer.authorize(&attrs).is_allowed());
        let jane = UserInfo::new("jane", &[]);
        let attrs = Attributes::non_resource(jane, "get", "/anything");
        let err = authorizer.check(&attrs).expect_err("denied");
        assert_eq!(err.code(), 403);
        assert_eq!(
            err.message,
            "forbidden: User \"jane\" cannot get path \"/anything\""
        );
    }
}
