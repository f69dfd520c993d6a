//! Authorization: whether a user may do what a request asks, as
//! kube-apiserver's `--authorization-mode=Node,RBAC` decides it. The
//! privileged group `system:masters` may do anything; a node's credential is
//! judged by the node authorizer over a graph of what its pods reference
//! (kept current by watching pods and persistent volumes); otherwise RBAC
//! decides from a [`Policy`] kept current by watching the four RBAC kinds.
//!
//! The policy is read under a shared lock on every request; the watch task
//! is its only writer. Authorization never reads the store, so its cost does
//! not grow with the number of objects (the policy is indexed by subject).

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use axum::http::Method;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde_json::Value;
use skep_api::{
    ApiError, ResourceInfo, StatusReason, kinds,
    object::{self, WatchEventType},
};
use skep_nodeauthz::{Graph, NodeAuthorizer, node_identity};
use skep_objects::{ListOptions, Objects, Typed};
use skep_rbac::{Attributes, Decision, Forbidden, Policy, ResourceAttributes};
use skep_user::UserInfo;

use crate::request::{ResourceRequest, Target, Verb};

/// The cluster's authorizer: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Authorizer {
    policy: Arc<RwLock<Policy>>,
    /// Which objects each node's pods reference (the node authorizer's graph).
    graph: Arc<RwLock<Graph>>,
    node: NodeAuthorizer,
}

impl Authorizer {
    /// Loads the RBAC objects and keeps the policy current from then on
    /// (the watches run until the process ends). Returns once the policy
    /// holds everything stored, so no request is judged on a partial one.
    pub async fn start(objects: &Objects) -> Result<Self, ApiError> {
        let authorizer = Self::with_policy(Policy::new());
        let policy = &authorizer.policy;
        let graph = authorizer.graph.clone();
        let graph_pvs = authorizer.graph.clone();
        let feeds = [
            policy_feed::<Role>(policy, Policy::upsert_role, Policy::remove_role),
            policy_feed::<ClusterRole>(policy, Policy::upsert_cluster_role, |p, _, name| {
                p.remove_cluster_role(name);
            }),
            policy_feed::<RoleBinding>(
                policy,
                Policy::upsert_role_binding,
                Policy::remove_role_binding,
            ),
            policy_feed::<ClusterRoleBinding>(
                policy,
                Policy::upsert_cluster_role_binding,
                |p, _, name| p.remove_cluster_role_binding(name),
            ),
            (
                &kinds::POD,
                Box::new(move |change: Change<'_>| match change {
                    Change::Upsert(pod) => write(&graph).upsert_pod(pod),
                    Change::Remove(namespace, name) => write(&graph).remove_pod(namespace, name),
                }) as Apply,
            ),
            (
                &kinds::PERSISTENT_VOLUME,
                Box::new(move |change: Change<'_>| match change {
                    Change::Upsert(pv) => write(&graph_pvs).upsert_pv(pv),
                    Change::Remove(_, name) => write(&graph_pvs).remove_pv(name),
                }),
            ),
        ];
        for (info, apply) in feeds {
            let feed = Feed::load(objects, info, apply).await?;
            tokio::spawn(feed.run(objects.clone()));
        }
        Ok(authorizer)
    }

    /// An authorizer over a fixed policy (tests and benchmarks).
    #[must_use]
    pub fn with_policy(policy: Policy) -> Self {
        Self {
            policy: Arc::new(RwLock::new(policy)),
            graph: Arc::new(RwLock::new(Graph::new())),
            node: NodeAuthorizer::new(),
        }
    }

    /// The current RBAC policy (for reviews and escalation checks).
    pub fn policy(&self) -> RwLockReadGuard<'_, Policy> {
        read(&self.policy)
    }

    /// The node authorizer's graph (for NodeRestriction's lookups).
    pub fn graph(&self) -> RwLockReadGuard<'_, Graph> {
        read(&self.graph)
    }

    /// The decision on `attrs` (`--authorization-mode=Node,RBAC` behind
    /// the `system:masters` shortcut): the first Allow, else NoOpinion with
    /// every authorizer's reason. `field_equals` are the request's field
    /// selector terms (a node may list only its own pods).
    #[must_use]
    pub fn authorize(&self, attrs: &Attributes, field_equals: &[(&str, &str)]) -> Decision {
        if attrs.user.is_superuser() {
            return Decision::Allow {
                reason: String::new(),
            };
        }
        let mut reasons = Vec::new();
        if node_identity(&attrs.user).is_some() {
            match self.node.authorize(&self.graph(), attrs, field_equals) {
                allowed @ Decision::Allow { .. } => return allowed,
                other => reasons.push(other.reason().to_owned()),
            }
        }
        match self.policy().authorize(attrs) {
            allowed @ Decision::Allow { .. } => allowed,
            other => {
                reasons.push(other.reason().to_owned());
                reasons.retain(|r| !r.is_empty());
                Decision::NoOpinion {
                    reason: reasons.join("\n"),
                }
            }
        }
    }

    /// `Ok` when `attrs` is allowed, else upstream's 403.
    pub fn check(&self, attrs: &Attributes) -> Result<(), ApiError> {
        self.check_selected(attrs, None)
    }

    /// [`Authorizer::check`] of a list or watch with a field selector.
    pub fn check_selected(
        &self,
        attrs: &Attributes,
        field_selector: Option<&str>,
    ) -> Result<(), ApiError> {
        let terms = field_selector.map(field_terms).unwrap_or_default();
        match self.authorize(attrs, &terms) {
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
        selected.clone_into(&mut name);
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

/// A field selector's equality terms (`a=b` and `a==b`; `!=` terms left out).
fn field_terms(selector: &str) -> Vec<(&str, &str)> {
    selector
        .split(',')
        .filter(|term| !term.contains("!="))
        .filter_map(|term| {
            term.split_once("==")
                .or_else(|| term.split_once('='))
                .map(|(k, v)| (k.trim(), v.trim()))
        })
        .collect()
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

/// What a watched object's change does to the authorizer's state.
type Apply = Box<dyn Fn(Change<'_>) + Send + Sync>;

/// One change of a watched kind.
enum Change<'a> {
    /// Added or modified.
    Upsert(&'a Value),
    /// Deleted: its namespace and name.
    Remove(&'a str, &'a str),
}

/// One kind's watch into the authorizer's state (the RBAC policy or the
/// node graph): list, then follow the watch, relisting when it breaks.
struct Feed {
    info: &'static ResourceInfo,
    revision: u64,
    /// (namespace, name) of every object of the kind applied.
    held: BTreeSet<(String, String)>,
    apply: Apply,
}

fn key_of(obj: &Value) -> (String, String) {
    (
        object::namespace(obj).to_owned(),
        object::name(obj).to_owned(),
    )
}

impl Feed {
    /// Lists the kind and applies exactly what is stored.
    async fn load(
        objects: &Objects,
        info: &'static ResourceInfo,
        apply: Apply,
    ) -> Result<Self, ApiError> {
        let mut feed = Self {
            info,
            revision: 0,
            held: BTreeSet::new(),
            apply,
        };
        feed.relist(objects).await?;
        Ok(feed)
    }

    async fn relist(&mut self, objects: &Objects) -> Result<(), ApiError> {
        let (items, meta) = objects.list(self.info, "", &ListOptions::default()).await?;
        let listed: BTreeSet<_> = items.iter().map(key_of).collect();
        for (namespace, name) in self.held.difference(&listed) {
            (self.apply)(Change::Remove(namespace, name));
        }
        for item in &items {
            (self.apply)(Change::Upsert(item));
        }
        self.held = listed;
        self.revision = meta.resource_version;
        Ok(())
    }

    /// Follows the kind's watch until the process ends.
    async fn run(mut self, objects: Objects) {
        loop {
            if let Err(err) = self.follow(&objects).await {
                tracing::warn!(kind = self.info.kind, %err, "authorizer watch ended; relisting");
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            if let Err(err) = self.relist(&objects).await {
                tracing::warn!(kind = self.info.kind, %err, "authorizer relist failed");
            }
        }
    }

    async fn follow(&mut self, objects: &Objects) -> Result<(), ApiError> {
        let mut watch = objects
            .watch(self.info, "", None, Some(self.revision))
            .await?;
        while let Some(event) = watch.next().await {
            let (kind, obj) = event?;
            let key = key_of(&obj);
            if kind == WatchEventType::Deleted {
                (self.apply)(Change::Remove(&key.0, &key.1));
                self.held.remove(&key);
            } else {
                (self.apply)(Change::Upsert(&obj));
                self.held.insert(key);
            }
            self.revision = watch.revision();
        }
        Ok(())
    }
}

/// How a change of one RBAC kind goes into the policy.
fn policy_feed<T: Typed + 'static>(
    policy: &Arc<RwLock<Policy>>,
    upsert: fn(&mut Policy, T),
    remove: fn(&mut Policy, &str, &str),
) -> (&'static ResourceInfo, Apply) {
    let policy = policy.clone();
    let apply = move |change: Change<'_>| match change {
        Change::Upsert(obj) => match serde_json::from_value::<T>(obj.clone()) {
            Ok(typed) => upsert(&mut write(&policy), typed),
            Err(err) => tracing::warn!(kind = T::KIND, %err, "unreadable RBAC object skipped"),
        },
        Change::Remove(namespace, name) => remove(&mut write(&policy), namespace, name),
    };
    (skep_objects::info_of::<T>(), Box::new(apply))
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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
        assert!(authorizer.authorize(&attrs, &[]).is_allowed());
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
