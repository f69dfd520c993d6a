//! The access reviews: create-only kinds answered from the authorizer and
//! never stored (`pkg/registry/authorization/*`, `selfsubjectreview`).
//! `kubectl auth can-i` asks SelfSubjectAccessReview, `--list` asks
//! SelfSubjectRulesReview, `kubectl auth whoami` asks SelfSubjectReview;
//! webhooks and proxies ask SubjectAccessReview about someone else.
//! Each answers with what a real request would get: the same authorizer.
//! Node sync's `ReviewAccess` (the node port's webhook authorization) is
//! answered by the same [`subject_access_review`].

use serde_json::{Map, Value, json};
use skep_api::{ApiError, ResourceInfo};
use skep_rbac::{Attributes, Decision, ResourceAttributes};
use skep_user::UserInfo;

use crate::authz::Authorizer;
use crate::request::ResourceRequest;

/// Whether `info` is one of the reviews this module answers.
#[must_use]
pub fn answers(info: &ResourceInfo) -> bool {
    matches!(
        (info.group, info.plural),
        (
            "authorization.k8s.io",
            "subjectaccessreviews"
                | "localsubjectaccessreviews"
                | "selfsubjectaccessreviews"
                | "selfsubjectrulesreviews"
        ) | ("authentication.k8s.io", "selfsubjectreviews")
    )
}

/// Validates a review `body` of kind `info` as its REST create does:
/// 422 `Invalid` with upstream's field errors.
pub fn validate(info: &ResourceInfo, body: &Value) -> Result<(), ApiError> {
    let errors = info.strategy().validate(body);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            info.group,
            info.kind,
            skep_api::object::name(body),
            &errors,
        ))
    }
}

/// A SubjectAccessReview `body` (decoded and validated) answered: the
/// body with its `status` filled in. REST's `subjectaccessreviews` and node
/// sync's `ReviewAccess` both answer through here.
#[must_use]
pub fn subject_access_review(authorizer: &Authorizer, body: Value) -> Value {
    let spec = body.get("spec").cloned().unwrap_or(Value::Null);
    let status = access_status(authorizer, &subject_of(&spec), &spec);
    with_status(body, status)
}

/// Answers a review `body` (already decoded and validated) created by
/// `user`: the body with its `status` filled in, as upstream returns it.
pub fn answer(
    authorizer: &Authorizer,
    user: &UserInfo,
    info: &ResourceInfo,
    req: &ResourceRequest,
    body: Value,
) -> Result<Value, ApiError> {
    let spec = body.get("spec").cloned().unwrap_or(Value::Null);
    let status = match info.plural {
        "subjectaccessreviews" => return Ok(subject_access_review(authorizer, body)),
        "localsubjectaccessreviews" => {
            let namespace = spec
                .pointer("/resourceAttributes/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if namespace != req.namespace {
                return Err(ApiError::bad_request(format!(
                    "spec.resourceAttributes.namespace must match namespace: {}",
                    req.namespace
                )));
            }
            access_status(authorizer, &subject_of(&spec), &spec)
        }
        "selfsubjectaccessreviews" => access_status(authorizer, user, &spec),
        "selfsubjectrulesreviews" => {
            let namespace = spec
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or_default();
            rules_status(authorizer, user, namespace)?
        }
        "selfsubjectreviews" => json!({"userInfo": user_info(user)}),
        other => {
            return Err(ApiError::internal(format!(
                "{other} is not an access review"
            )));
        }
    };
    Ok(with_status(body, status))
}

/// The review `body` as upstream returns it: `status` filled in and a
/// null `metadata.creationTimestamp`.
fn with_status(mut body: Value, status: Value) -> Value {
    if let Some(obj) = body.as_object_mut() {
        let metadata = obj.entry("metadata").or_insert_with(|| json!({}));
        if let Some(meta) = metadata.as_object_mut() {
            meta.entry("creationTimestamp").or_insert(Value::Null);
        }
        obj.insert("status".into(), status);
    }
    body
}

/// The user a SubjectAccessReview asks about: exactly its spec's (no
/// `system:authenticated` is implied).
fn subject_of(spec: &Value) -> UserInfo {
    UserInfo::from_json(spec, "user")
}

/// The attributes a review's spec asks about
/// (`authorizationutil.AuthorizationAttributesFrom`).
fn attributes_of(user: &UserInfo, spec: &Value) -> Attributes {
    let text = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    if let Some(r) = spec.get("resourceAttributes").filter(|r| r.is_object()) {
        Attributes::resource(
            user.clone(),
            &text(r, "verb"),
            ResourceAttributes {
                api_group: text(r, "group"),
                resource: text(r, "resource"),
                subresource: text(r, "subresource"),
                name: text(r, "name"),
                namespace: text(r, "namespace"),
            },
        )
    } else {
        let r = spec.get("nonResourceAttributes").unwrap_or(&Value::Null);
        Attributes::non_resource(user.clone(), &text(r, "verb"), &text(r, "path"))
    }
}

fn access_status(authorizer: &Authorizer, user: &UserInfo, spec: &Value) -> Value {
    let attrs = attributes_of(user, spec);
    let decision = authorizer.authorize(&attrs, &[]);
    let mut status = Map::new();
    status.insert("allowed".into(), decision.is_allowed().into());
    if matches!(decision, Decision::Deny { .. }) {
        status.insert("denied".into(), true.into());
    }
    if !decision.reason().is_empty() {
        status.insert("reason".into(), decision.reason().into());
    }
    Value::Object(status)
}

fn rules_status(
    authorizer: &Authorizer,
    user: &UserInfo,
    namespace: &str,
) -> Result<Value, ApiError> {
    let mut status = serde_json::to_value(
        authorizer
            .policy()
            .subject_rules_review_status(user, namespace),
    )
    .map_err(ApiError::internal)?;
    if skep_nodeauthz::node_identity(user).is_some()
        && let Some(obj) = status.as_object_mut()
    {
        // The node authorizer cannot list what it allows (upstream's
        // `RulesFor` answers so), so the answer is incomplete.
        obj.insert("incomplete".into(), true.into());
        let error = "node authorizer does not support user rule resolution";
        let merged = match obj.get("evaluationError").and_then(Value::as_str) {
            Some(e) if !e.is_empty() => format!("{error}, {e}"),
            _ => error.to_owned(),
        };
        obj.insert("evaluationError".into(), merged.into());
    }
    Ok(status)
}

/// A user as `authentication.k8s.io/v1 UserInfo` JSON.
#[must_use]
pub fn user_info(user: &UserInfo) -> Value {
    let mut info = Map::new();
    info.insert("username".into(), user.name.clone().into());
    if !user.uid.is_empty() {
        info.insert("uid".into(), user.uid.clone().into());
    }
    if !user.groups.is_empty() {
        info.insert("groups".into(), user.groups.clone().into());
    }
    if !user.extra.is_empty() {
        info.insert(
            "extra".into(),
            serde_json::to_value(&user.extra).unwrap_or_default(),
        );
    }
    Value::Object(info)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleRef};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use skep_rbac::{Policy, rule::resource_rule, subject::subject};

    use super::*;
    use crate::request::Verb;

    fn authorizer() -> Authorizer {
        let meta = |n: &str| ObjectMeta {
            name: Some(n.into()),
            ..Default::default()
        };
        let role = ClusterRole {
            metadata: meta("pod-reader"),
            rules: Some(vec![resource_rule(&["get", "list"], &[""], &["pods"])]),
            ..Default::default()
        };
        let binding = ClusterRoleBinding {
            metadata: meta("jane-reads"),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: "pod-reader".into(),
            },
            subjects: Some(vec![subject("User", "jane", None)]),
        };
        Authorizer::with_policy(Policy::from_objects([], [role], [], [binding]))
    }

    fn request(plural: &str, namespace: &str) -> ResourceRequest {
        ResourceRequest {
            verb: Verb::Create,
            group: "authorization.k8s.io".into(),
            version: "v1".into(),
            namespace: namespace.into(),
            resource: plural.into(),
            name: String::new(),
            subresource: String::new(),
        }
    }

    fn info(plural: &str) -> &'static ResourceInfo {
        skep_api::registry::by_plural("authorization.k8s.io", "v1", plural)
            .or_else(|| skep_api::registry::by_plural("authentication.k8s.io", "v1", plural))
            .expect("served")
    }

    #[test]
    fn subject_access_review_answers_as_a_request_would() {
        let body = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": "jane", "resourceAttributes": {"verb": "list", "resource": "pods", "namespace": "x"}}});
        let nobody = UserInfo::new("admin", &[]);
        let plural = "subjectaccessreviews";
        let out = answer(
            &authorizer(),
            &nobody,
            info(plural),
            &request(plural, ""),
            body,
        )
        .expect("answered");
        assert_eq!(out["status"]["allowed"], true);
        assert_eq!(
            out["status"]["reason"],
            "RBAC: allowed by ClusterRoleBinding \"jane-reads\" of ClusterRole \"pod-reader\" to User \"jane\""
        );
        let body = json!({"spec": {"user": "jane", "resourceAttributes": {"verb": "delete", "resource": "pods"}}});
        let out = answer(
            &authorizer(),
            &nobody,
            info(plural),
            &request(plural, ""),
            body,
        )
        .expect("answered");
        assert_eq!(out["status"], json!({"allowed": false}));
    }

    #[test]
    fn self_reviews_ask_about_the_caller() {
        let jane = UserInfo::new("jane", &["system:authenticated"]);
        let plural = "selfsubjectaccessreviews";
        let body = json!({"spec": {"resourceAttributes": {"verb": "get", "resource": "pods", "namespace": "a"}}});
        let out = answer(
            &authorizer(),
            &jane,
            info(plural),
            &request(plural, ""),
            body,
        )
        .expect("answered");
        assert_eq!(out["status"]["allowed"], true);
        let plural = "selfsubjectreviews";
        let out = answer(
            &authorizer(),
            &jane,
            info(plural),
            &request(plural, ""),
            json!({}),
        )
        .expect("answered");
        assert_eq!(
            out["status"]["userInfo"],
            json!({"username": "jane", "groups": ["system:authenticated"]})
        );
    }

    #[test]
    fn local_review_namespace_must_match_the_path() {
        let plural = "localsubjectaccessreviews";
        let body = json!({"spec": {"user": "jane", "resourceAttributes": {"verb": "get", "resource": "pods", "namespace": "b"}}});
        let err = answer(
            &authorizer(),
            &UserInfo::new("x", &[]),
            info(plural),
            &request(plural, "a"),
            body,
        )
        .expect_err("mismatch");
        assert_eq!(err.code(), 400);
    }
}
