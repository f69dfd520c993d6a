//! Kubernetes RBAC authorization for skep, as a pure library: no HTTP and no
//! storage. It behaves as kube-apiserver's RBAC authorizer does.
//!
//! How the API server uses it:
//! - keep one [`Policy`] fed from the store's watch of Roles, ClusterRoles,
//!   RoleBindings and ClusterRoleBindings (`upsert_*`/`remove_*`);
//! - per request: [`Policy::authorize`]; on anything but Allow answer 403
//!   with [`forbidden::forbidden`] (the reason is appended to the message);
//! - SelfSubjectRulesReview: [`Policy::subject_rules_review_status`];
//! - writes to roles and bindings: [`Policy::check_role_write`] and
//!   [`Policy::check_binding_write`] (escalation prevention);
//! - the aggregation controller: [`aggregation::aggregate_all`];
//! - a new cluster: create [`bootstrap::cluster_roles`] and
//!   [`bootstrap::cluster_role_bindings`].
#![deny(missing_docs)]
#![expect(
    clippy::doc_markdown,
    reason = "Kubernetes kind names (ClusterRole, RoleBinding, …) are plain words in these docs"
)]

pub mod aggregation;
pub mod attributes;
pub mod bootstrap;
pub mod covers;
pub mod escalation;
pub mod forbidden;
pub mod gofmt;
pub mod policy;
pub mod rule;
pub mod subject;

pub use attributes::{Attributes, Request, ResourceAttributes, UserInfo};
pub use escalation::{BindingWriteError, EscalationError};
pub use forbidden::{Forbidden, forbidden, forbidden_message};
pub use policy::{Decision, Policy, ResolvedRules, RoleRefError, RuleSource};

/// The RBAC API group.
pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
