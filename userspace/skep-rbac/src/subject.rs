//! Which binding subjects a user is (`appliesTo` in
//! `pkg/registry/rbac/validation/rule.go`), and the index keys that let the
//! policy find a user's bindings without scanning the others.

use k8s_openapi::api::rbac::v1::Subject;

use crate::attributes::{UserInfo, service_account_username};
use crate::gofmt::quote;

/// `Subject.kind` of a user.
pub const USER_KIND: &str = "User";
/// `Subject.kind` of a group.
pub const GROUP_KIND: &str = "Group";
/// `Subject.kind` of a service account.
pub const SERVICE_ACCOUNT_KIND: &str = "ServiceAccount";

/// Whether `subject` of a binding in `namespace` (empty for a
/// ClusterRoleBinding) is `user` (`appliesToUser`).
///
/// A ServiceAccount subject without a namespace means the binding's namespace;
/// in a ClusterRoleBinding it matches nobody. Unknown kinds match nobody.
pub fn applies_to_user(user: &UserInfo, subject: &Subject, namespace: &str) -> bool {
    match subject.kind.as_str() {
        USER_KIND => user.name == subject.name,
        GROUP_KIND => user.groups.contains(&subject.name),
        SERVICE_ACCOUNT_KIND => {
            service_account_key(subject, namespace).is_some_and(|username| username == user.name)
        }
        _ => false,
    }
}

/// The index of the first of `subjects` that is `user`, if any (`appliesTo`).
pub fn applies_to(user: &UserInfo, subjects: &[Subject], namespace: &str) -> Option<usize> {
    subjects
        .iter()
        .position(|s| applies_to_user(user, s, namespace))
}

/// The user name a ServiceAccount subject stands for, or `None` when neither
/// the subject nor the binding gives a namespace.
///
/// `serviceaccount.MatchesUsername(ns, name, u)` holds exactly when
/// `u == "system:serviceaccount:" + ns + ":" + name`, so a service account is
/// indexed under that user name.
fn service_account_key(subject: &Subject, binding_namespace: &str) -> Option<String> {
    let namespace = subject
        .namespace
        .as_deref()
        .filter(|ns| !ns.is_empty())
        .unwrap_or(binding_namespace);
    (!namespace.is_empty()).then(|| service_account_username(namespace, &subject.name))
}

/// Where a subject is filed in the subject index.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum SubjectKey {
    /// A user name (User subjects, and ServiceAccount subjects as their user name).
    User(String),
    /// A group name.
    Group(String),
}

/// The index key of a subject of a binding in `binding_namespace`, or `None`
/// for a subject that can match nobody.
pub(crate) fn subject_key(subject: &Subject, binding_namespace: &str) -> Option<SubjectKey> {
    match subject.kind.as_str() {
        USER_KIND => Some(SubjectKey::User(subject.name.clone())),
        GROUP_KIND => Some(SubjectKey::Group(subject.name.clone())),
        SERVICE_ACCOUNT_KIND => {
            service_account_key(subject, binding_namespace).map(SubjectKey::User)
        }
        _ => None,
    }
}

/// A subject as the allow reason names it (`describeSubject`): `User "jane"`,
/// `ServiceAccount "name/namespace"`.
pub(crate) fn describe_subject(subject: &Subject, binding_namespace: &str) -> String {
    if subject.kind == SERVICE_ACCOUNT_KIND {
        let ns = subject
            .namespace
            .as_deref()
            .filter(|ns| !ns.is_empty())
            .unwrap_or(binding_namespace);
        format!(
            "{} {}",
            subject.kind,
            quote(&format!("{}/{ns}", subject.name))
        )
    } else {
        format!("{} {}", subject.kind, quote(&subject.name))
    }
}

/// A subject of the given kind and name (and namespace, for service accounts).
pub fn subject(kind: &str, name: &str, namespace: Option<&str>) -> Subject {
    Subject {
        api_group: (kind != SERVICE_ACCOUNT_KIND).then(|| crate::RBAC_GROUP.to_owned()),
        kind: kind.to_owned(),
        name: name.to_owned(),
        namespace: namespace.map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(name: &str, ns: Option<&str>) -> Subject {
        subject(SERVICE_ACCOUNT_KIND, name, ns)
    }

    #[test]
    fn service_accounts_match_their_user_name() {
        let builder = UserInfo::new(
            "system:serviceaccount:ci:builder",
            &[
                "system:serviceaccounts",
                "system:serviceaccounts:ci",
                "system:authenticated",
            ],
        );
        // Explicit namespace: matches anywhere, even from a ClusterRoleBinding.
        assert!(applies_to_user(&builder, &sa("builder", Some("ci")), ""));
        assert!(applies_to_user(
            &builder,
            &sa("builder", Some("ci")),
            "other"
        ));
        // No namespace: the binding's namespace, and nothing at cluster scope.
        assert!(applies_to_user(&builder, &sa("builder", None), "ci"));
        assert!(!applies_to_user(&builder, &sa("builder", None), "other"));
        assert!(!applies_to_user(&builder, &sa("builder", None), ""));
        assert!(!applies_to_user(&builder, &sa("builder", Some("")), ""));
        assert!(!applies_to_user(&builder, &sa("build", Some("ci")), ""));
        assert!(!applies_to_user(&builder, &sa("builder", Some("c")), ""));
        // A User subject spelled as the service account's user name matches too.
        assert!(applies_to_user(
            &builder,
            &subject(USER_KIND, "system:serviceaccount:ci:builder", None),
            ""
        ));
        // The groups the authenticator gives service accounts.
        for g in [
            "system:serviceaccounts",
            "system:serviceaccounts:ci",
            "system:authenticated",
        ] {
            assert!(applies_to_user(&builder, &subject(GROUP_KIND, g, None), ""));
        }
        assert!(!applies_to_user(
            &builder,
            &subject(GROUP_KIND, "system:serviceaccounts:other", None),
            ""
        ));
    }

    #[test]
    fn first_matching_subject_and_unknown_kinds() {
        let jane = UserInfo::new("jane", &["devs"]);
        let subjects = [
            subject("Robot", "jane", None),
            subject(USER_KIND, "bob", None),
            subject(GROUP_KIND, "devs", None),
            subject(USER_KIND, "jane", None),
        ];
        assert_eq!(applies_to(&jane, &subjects, "ns"), Some(2));
        assert_eq!(
            applies_to(&UserInfo::new("eve", &[]), &subjects, "ns"),
            None
        );
    }

    #[test]
    fn descriptions() {
        assert_eq!(
            describe_subject(&subject(USER_KIND, "jane", None), ""),
            r#"User "jane""#
        );
        assert_eq!(
            describe_subject(&sa("builder", None), "ci"),
            r#"ServiceAccount "builder/ci""#
        );
        assert_eq!(
            describe_subject(&sa("builder", Some("kube-system")), "ci"),
            r#"ServiceAccount "builder/kube-system""#
        );
    }
}
