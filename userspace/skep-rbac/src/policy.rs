//! The RBAC policy as an index by subject, and evaluation over it
//! (`plugin/pkg/auth/authorizer/rbac/rbac.go`,
//! `pkg/registry/rbac/validation/rule.go`).
//!
//! Each binding is filed under every subject it names (user names, service
//! accounts as their user names, groups), per namespace for RoleBindings. A
//! request looks up its user name and groups only, so its cost does not grow
//! with bindings for other subjects.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use k8s_openapi::api::authorization::v1::{
    NonResourceRule, ResourceRule, SubjectRulesReviewStatus,
};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};

use crate::attributes::{Attributes, UserInfo};
use crate::gofmt::{aggregate, quote};
use crate::rule::rule_allows;
use crate::subject::{SubjectKey, applies_to, describe_subject, subject_key};

/// An authorizer's answer (`authorizer.Decision` and its reason).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; the reason names the binding, e.g.
    /// `RBAC: allowed by ClusterRoleBinding "x" of ClusterRole "y" to User "jane"`.
    Allow {
        /// Upstream's reason text.
        reason: String,
    },
    /// Denied outright. RBAC never denies (rules only add), but other
    /// authorizers in a chain may.
    Deny {
        /// Why.
        reason: String,
    },
    /// No rule allows it; the reason is empty, or `RBAC: <errors>` when some
    /// bindings could not be resolved (e.g. a missing role).
    NoOpinion {
        /// Upstream's reason text.
        reason: String,
    },
}

impl Decision {
    /// Whether the request is allowed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allow { .. })
    }

    /// The reason text (may be empty).
    pub fn reason(&self) -> &str {
        match self {
            Self::Allow { reason } | Self::Deny { reason } | Self::NoOpinion { reason } => reason,
        }
    }
}

/// A binding whose role reference cannot be resolved; such a binding grants
/// nothing. Messages are the ones the API server's listers produce.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RoleRefError {
    /// The referenced Role is not in the binding's namespace.
    #[error("role.rbac.authorization.k8s.io {} not found", quote(.name))]
    RoleNotFound {
        /// The Role's name.
        name: String,
    },
    /// The referenced ClusterRole does not exist.
    #[error("clusterrole.rbac.authorization.k8s.io {} not found", quote(.name))]
    ClusterRoleNotFound {
        /// The ClusterRole's name.
        name: String,
    },
    /// `roleRef.kind` is neither `Role` nor `ClusterRole`.
    #[error("unsupported role reference kind: {}", quote(.kind))]
    UnsupportedKind {
        /// The kind given.
        kind: String,
    },
}

/// The rules that apply to a user in a namespace (`RulesFor`). Rules are
/// additive, so those found are valid even when some bindings failed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResolvedRules {
    /// Every rule of every binding that applies, ClusterRoleBindings first.
    pub rules: Vec<PolicyRule>,
    /// Bindings whose role could not be resolved.
    pub errors: Vec<RoleRefError>,
}

impl ResolvedRules {
    /// The errors as one message, like `utilerrors.NewAggregate`; `None` if none.
    pub fn error_message(&self) -> Option<String> {
        (!self.errors.is_empty()).then(|| {
            let messages: Vec<String> = self.errors.iter().map(ToString::to_string).collect();
            aggregate(&messages)
        })
    }
}

/// Which binding granted a rule; displays as upstream's allow reason does.
#[derive(Clone, Copy, Debug)]
pub struct RuleSource<'a> {
    binding_name: &'a str,
    /// Empty for a ClusterRoleBinding.
    binding_namespace: &'a str,
    role_ref: &'a RoleRef,
    subject: &'a Subject,
}

impl fmt::Display for RuleSource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, name) = if self.binding_namespace.is_empty() {
            ("ClusterRoleBinding", quote(self.binding_name))
        } else {
            (
                "RoleBinding",
                quote(&format!("{}/{}", self.binding_name, self.binding_namespace)),
            )
        };
        write!(
            f,
            "{kind} {name} of {} {} to {}",
            self.role_ref.kind,
            quote(&self.role_ref.name),
            describe_subject(self.subject, self.binding_namespace)
        )
    }
}

/// What [`Policy::visit_rules_for`] hands its visitor: a rule and the
/// binding that grants it, or a binding that cannot be resolved.
pub type Visited<'a> = Result<(RuleSource<'a>, &'a PolicyRule), RoleRefError>;

/// Bindings filed by subject: user name or group name → binding names.
#[derive(Debug, Default)]
struct SubjectIndex {
    users: HashMap<String, BTreeSet<String>>,
    groups: HashMap<String, BTreeSet<String>>,
}

impl SubjectIndex {
    fn map<'k>(
        &mut self,
        key: &'k SubjectKey,
    ) -> (&mut HashMap<String, BTreeSet<String>>, &'k str) {
        match key {
            SubjectKey::User(n) => (&mut self.users, n),
            SubjectKey::Group(n) => (&mut self.groups, n),
        }
    }

    fn insert(&mut self, subjects: &[Subject], namespace: &str, binding: &str) {
        for key in subjects.iter().filter_map(|s| subject_key(s, namespace)) {
            let (map, name) = self.map(&key);
            map.entry(name.to_owned())
                .or_default()
                .insert(binding.to_owned());
        }
    }

    fn remove(&mut self, subjects: &[Subject], namespace: &str, binding: &str) {
        for key in subjects.iter().filter_map(|s| subject_key(s, namespace)) {
            let (map, name) = self.map(&key);
            if let Some(set) = map.get_mut(name) {
                set.remove(binding);
                if set.is_empty() {
                    map.remove(name);
                }
            }
        }
    }

    /// Names of the bindings that name the user or one of its groups, sorted.
    fn candidates(&self, user: &UserInfo) -> BTreeSet<&str> {
        let mut names = BTreeSet::new();
        let by_user = self.users.get(&user.name).into_iter();
        let by_group = user.groups.iter().filter_map(|g| self.groups.get(g));
        for set in by_user.chain(by_group) {
            names.extend(set.iter().map(String::as_str));
        }
        names
    }

    fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty()
    }
}

/// A binding as the policy keeps it.
#[derive(Debug)]
struct Binding {
    role_ref: RoleRef,
    subjects: Vec<Subject>,
}

/// The RBAC objects of a cluster, indexed by subject; updated one object at a
/// time as the store's watch delivers them.
#[derive(Debug, Default)]
pub struct Policy {
    /// namespace → name → rules.
    roles: HashMap<String, HashMap<String, Vec<PolicyRule>>>,
    cluster_roles: HashMap<String, Vec<PolicyRule>>,
    cluster_role_bindings: HashMap<String, Binding>,
    /// namespace → name → binding.
    role_bindings: HashMap<String, HashMap<String, Binding>>,
    cluster_index: SubjectIndex,
    /// namespace → its RoleBindings by subject.
    namespace_index: HashMap<String, SubjectIndex>,
    /// Bindings whose subjects an evaluation looked at (tests only).
    #[cfg(test)]
    pub(crate) examined: std::sync::atomic::AtomicUsize,
}

fn name_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

fn namespace_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.namespace.clone().unwrap_or_default()
}

impl Policy {
    /// An empty policy: it allows nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// A policy holding the given objects.
    pub fn from_objects(
        roles: impl IntoIterator<Item = Role>,
        cluster_roles: impl IntoIterator<Item = ClusterRole>,
        role_bindings: impl IntoIterator<Item = RoleBinding>,
        cluster_role_bindings: impl IntoIterator<Item = ClusterRoleBinding>,
    ) -> Self {
        let mut policy = Self::new();
        roles.into_iter().for_each(|r| policy.upsert_role(r));
        cluster_roles
            .into_iter()
            .for_each(|r| policy.upsert_cluster_role(r));
        role_bindings
            .into_iter()
            .for_each(|b| policy.upsert_role_binding(b));
        cluster_role_bindings
            .into_iter()
            .for_each(|b| policy.upsert_cluster_role_binding(b));
        policy
    }

    /// Adds or replaces a Role.
    pub fn upsert_role(&mut self, role: Role) {
        let (ns, name) = (namespace_of(&role.metadata), name_of(&role.metadata));
        self.roles
            .entry(ns)
            .or_default()
            .insert(name, role.rules.unwrap_or_default());
    }

    /// Removes a Role; bindings to it then grant nothing.
    pub fn remove_role(&mut self, namespace: &str, name: &str) {
        if let Some(by_name) = self.roles.get_mut(namespace) {
            by_name.remove(name);
            if by_name.is_empty() {
                self.roles.remove(namespace);
            }
        }
    }

    /// Adds or replaces a ClusterRole (its current `rules`; aggregation is
    /// the controller's job, see [`crate::aggregation`]).
    pub fn upsert_cluster_role(&mut self, role: ClusterRole) {
        self.cluster_roles
            .insert(name_of(&role.metadata), role.rules.unwrap_or_default());
    }

    /// Removes a ClusterRole.
    pub fn remove_cluster_role(&mut self, name: &str) {
        self.cluster_roles.remove(name);
    }

    /// Adds or replaces a RoleBinding.
    pub fn upsert_role_binding(&mut self, binding: RoleBinding) {
        let (ns, name) = (namespace_of(&binding.metadata), name_of(&binding.metadata));
        self.remove_role_binding(&ns, &name);
        let subjects = binding.subjects.unwrap_or_default();
        self.namespace_index
            .entry(ns.clone())
            .or_default()
            .insert(&subjects, &ns, &name);
        let role_ref = binding.role_ref;
        self.role_bindings
            .entry(ns)
            .or_default()
            .insert(name, Binding { role_ref, subjects });
    }

    /// Removes a RoleBinding.
    pub fn remove_role_binding(&mut self, namespace: &str, name: &str) {
        let Some(by_name) = self.role_bindings.get_mut(namespace) else {
            return;
        };
        let Some(old) = by_name.remove(name) else {
            return;
        };
        if by_name.is_empty() {
            self.role_bindings.remove(namespace);
        }
        if let Some(index) = self.namespace_index.get_mut(namespace) {
            index.remove(&old.subjects, namespace, name);
            if index.is_empty() {
                self.namespace_index.remove(namespace);
            }
        }
    }

    /// Adds or replaces a ClusterRoleBinding.
    pub fn upsert_cluster_role_binding(&mut self, binding: ClusterRoleBinding) {
        let name = name_of(&binding.metadata);
        self.remove_cluster_role_binding(&name);
        let subjects = binding.subjects.unwrap_or_default();
        self.cluster_index.insert(&subjects, "", &name);
        let role_ref = binding.role_ref;
        self.cluster_role_bindings
            .insert(name, Binding { role_ref, subjects });
    }

    /// Removes a ClusterRoleBinding.
    pub fn remove_cluster_role_binding(&mut self, name: &str) {
        if let Some(old) = self.cluster_role_bindings.remove(name) {
            self.cluster_index.remove(&old.subjects, "", name);
        }
    }

    /// The rules a role reference grants in `namespace` (empty for a
    /// ClusterRoleBinding) (`GetRoleReferenceRules`).
    pub fn role_ref_rules(
        &self,
        role_ref: &RoleRef,
        namespace: &str,
    ) -> Result<&[PolicyRule], RoleRefError> {
        match role_ref.kind.as_str() {
            "Role" => self
                .roles
                .get(namespace)
                .and_then(|by_name| by_name.get(&role_ref.name))
                .map(Vec::as_slice)
                .ok_or_else(|| RoleRefError::RoleNotFound {
                    name: role_ref.name.clone(),
                }),
            "ClusterRole" => self
                .cluster_roles
                .get(&role_ref.name)
                .map(Vec::as_slice)
                .ok_or_else(|| RoleRefError::ClusterRoleNotFound {
                    name: role_ref.name.clone(),
                }),
            kind => Err(RoleRefError::UnsupportedKind {
                kind: kind.to_owned(),
            }),
        }
    }

    /// Calls `visit` with every rule that applies to `user` in `namespace`
    /// (ClusterRoleBindings, then the namespace's RoleBindings, each in name
    /// order) and every unresolvable binding, until it returns `false`
    /// (`VisitRulesFor`).
    ///
    /// Upstream visits bindings in its informer cache's order, which is not
    /// defined; name order makes the allow reason deterministic.
    pub fn visit_rules_for(
        &self,
        user: &UserInfo,
        namespace: &str,
        visit: &mut dyn FnMut(Visited<'_>) -> bool,
    ) {
        let cluster = self
            .cluster_index
            .candidates(user)
            .into_iter()
            .filter_map(|name| self.cluster_role_bindings.get_key_value(name))
            .map(|(name, b)| ("", name, b));
        // RoleBindings count only for a request in a namespace.
        let (index, bindings) = if namespace.is_empty() {
            (None, None)
        } else {
            (
                self.namespace_index.get(namespace),
                self.role_bindings.get(namespace),
            )
        };
        let local = index
            .map(|index| index.candidates(user))
            .unwrap_or_default()
            .into_iter()
            .filter_map(|name| bindings?.get_key_value(name))
            .map(|(name, b)| (namespace, name, b));
        for (ns, name, binding) in cluster.chain(local) {
            #[cfg(test)]
            self.examined
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(i) = applies_to(user, &binding.subjects, ns) else {
                continue;
            };
            match self.role_ref_rules(&binding.role_ref, ns) {
                Err(err) => {
                    if !visit(Err(err)) {
                        return;
                    }
                }
                Ok(rules) => {
                    let source = RuleSource {
                        binding_name: name,
                        binding_namespace: ns,
                        role_ref: &binding.role_ref,
                        subject: &binding.subjects[i],
                    };
                    for rule in rules {
                        if !visit(Ok((source, rule))) {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Every rule that applies to `user` in `namespace`, and the bindings
    /// that could not be resolved (`RulesFor`).
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> ResolvedRules {
        let mut out = ResolvedRules::default();
        self.visit_rules_for(user, namespace, &mut |item| {
            match item {
                Ok((_, rule)) => out.rules.push(rule.clone()),
                Err(err) => out.errors.push(err),
            }
            true
        });
        out
    }

    /// Whether RBAC allows the request (`RBACAuthorizer.Authorize`): Allow
    /// with the granting binding as reason, or NoOpinion.
    pub fn authorize(&self, attrs: &Attributes) -> Decision {
        let mut allowed = None;
        let mut errors = Vec::new();
        self.visit_rules_for(&attrs.user, attrs.namespace(), &mut |item| match item {
            Ok((source, rule)) if rule_allows(attrs, rule) => {
                allowed = Some(format!("RBAC: allowed by {source}"));
                false
            }
            Ok(_) => true,
            Err(err) => {
                errors.push(err.to_string());
                true
            }
        });
        if let Some(reason) = allowed {
            return Decision::Allow { reason };
        }
        tracing::debug!(
            user = %attrs.user.name,
            groups = ?attrs.user.groups,
            verb = %attrs.verb,
            request = ?attrs.request,
            "RBAC: no rules authorize the request"
        );
        let reason = if errors.is_empty() {
            String::new()
        } else {
            format!("RBAC: {}", aggregate(&errors))
        };
        Decision::NoOpinion { reason }
    }

    /// What a SelfSubjectRulesReview answers for `user` in `namespace`
    /// (`RBACAuthorizer.RulesFor` as the REST handler renders it): rules with
    /// resources as resource rules, rules with URLs as non-resource rules,
    /// `incomplete` false (RBAC knows all it grants), and unresolvable
    /// bindings as `evaluationError`.
    pub fn subject_rules_review_status(
        &self,
        user: &UserInfo,
        namespace: &str,
    ) -> SubjectRulesReviewStatus {
        let resolved = self.rules_for(user, namespace);
        let mut status = SubjectRulesReviewStatus {
            evaluation_error: resolved.error_message(),
            incomplete: false,
            ..SubjectRulesReviewStatus::default()
        };
        for rule in resolved.rules {
            if rule.resources.as_ref().is_some_and(|r| !r.is_empty()) {
                status.resource_rules.push(ResourceRule {
                    verbs: rule.verbs.clone(),
                    api_groups: rule.api_groups.clone(),
                    resources: rule.resources.clone(),
                    resource_names: rule.resource_names.clone(),
                });
            }
            if rule
                .non_resource_urls
                .as_ref()
                .is_some_and(|u| !u.is_empty())
            {
                status.non_resource_rules.push(NonResourceRule {
                    verbs: rule.verbs,
                    non_resource_urls: rule.non_resource_urls,
                });
            }
        }
        status
    }
}

#[cfg(test)]
#[path = "policy_test.rs"]
mod tests;
