use serde_json::json;

use super::*;

fn messages(errs: &[FieldError]) -> Vec<String> {
    errs.iter().map(ToString::to_string).collect()
}

#[test]
fn subject_access_review_needs_one_kind_of_attributes_and_a_subject() {
    let ok = json!({"spec": {"user": "alice", "resourceAttributes": {"verb": "get", "resource": "pods"}}});
    assert!(validate_subject_access_review(&ok).is_empty());
    let groups_only =
        json!({"spec": {"groups": ["g"], "nonResourceAttributes": {"path": "/x", "verb": "get"}}});
    assert!(validate_subject_access_review(&groups_only).is_empty());

    assert_eq!(
        messages(&validate_subject_access_review(
            &json!({"metadata": {}, "spec": {}})
        )),
        [
            "spec.resourceAttributes: Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
            "spec.user: Invalid value: \"\": at least one of user or group must be specified",
        ]
    );
    let both = json!({"spec": {"user": "u", "resourceAttributes": {}, "nonResourceAttributes": {"path": "/x", "verb": "get"}}});
    assert_eq!(
        messages(&validate_subject_access_review(&both)),
        [
            "spec.nonResourceAttributes: Invalid value: authorization.NonResourceAttributes{Path:\"/x\", Verb:\"get\"}: cannot be specified in combination with resourceAttributes"
        ]
    );
}

#[test]
fn reviews_carry_no_metadata() {
    let named = json!({"metadata": {"name": "x", "managedFields": [{}], "labels": {}}, "spec": {"user": "u", "resourceAttributes": {}}});
    assert_eq!(
        messages(&validate_subject_access_review(&named)),
        [
            "metadata: Invalid value: {\"labels\":{},\"managedFields\":[{}],\"name\":\"x\"}: must be empty"
        ]
    );
    let unnamed = json!({"metadata": {"managedFields": [{}], "labels": {}}, "spec": {"resourceAttributes": {}}});
    assert!(validate_self_subject_access_review(&unnamed).is_empty());
}

#[test]
fn self_subject_access_review_needs_no_subject() {
    let ok = json!({"spec": {"nonResourceAttributes": {"path": "/healthz", "verb": "get"}}});
    assert!(validate_self_subject_access_review(&ok).is_empty());
    assert_eq!(
        messages(&validate_self_subject_access_review(&json!({"spec": {}}))),
        [
            "spec.resourceAttributes: Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified"
        ]
    );
}

#[test]
fn local_subject_access_review_stays_in_its_namespace() {
    let ok = json!({"metadata": {"namespace": "team"}, "spec": {"user": "u", "resourceAttributes": {"namespace": "team", "verb": "get"}}});
    assert!(validate_local_subject_access_review(&ok).is_empty());
    let other = json!({"metadata": {"namespace": "team", "name": "n"}, "spec": {"user": "u", "resourceAttributes": {"namespace": "prod"}}});
    assert_eq!(
        messages(&validate_local_subject_access_review(&other)),
        [
            "metadata: Invalid value: {\"name\":\"n\",\"namespace\":\"team\"}: must be empty except for namespace",
            "spec.resourceAttributes.namespace: Invalid value: \"prod\": must match metadata.namespace",
        ]
    );
    let urls = json!({"metadata": {"namespace": "team"}, "spec": {"user": "u", "nonResourceAttributes": {"path": "/x", "verb": "get"}}});
    assert_eq!(
        messages(&validate_local_subject_access_review(&urls)),
        [
            "spec.nonResourceAttributes: Invalid value: authorization.NonResourceAttributes{Path:\"/x\", Verb:\"get\"}: disallowed on this kind of request"
        ]
    );
}

#[test]
fn selector_attributes() {
    let review = |selectors: Value| {
        let mut attrs = json!({"verb": "list", "resource": "pods"});
        if let (Some(a), Some(s)) = (attrs.as_object_mut(), selectors.as_object()) {
            a.extend(s.clone());
        }
        json!({"spec": {"user": "u", "resourceAttributes": attrs}})
    };
    let ok = review(json!({
        "fieldSelector": {"requirements": [{"key": "spec.nodeName", "operator": "In", "values": ["n"]}]},
        "labelSelector": {"rawSelector": "app=x"},
        "unknownOperatorsAllowed": true,
    }));
    assert!(validate_subject_access_review(&ok).is_empty());
    let both = review(
        json!({"fieldSelector": {"rawSelector": "foo", "requirements": [{"key": "k", "operator": "Exists"}]}}),
    );
    assert_eq!(
        messages(&validate_subject_access_review(&both)),
        [
            "spec.resourceAttributes.fieldSelector.rawSelector: Invalid value: \"foo\": may not specified at the same time as requirements"
        ]
    );
    let neither = review(json!({"labelSelector": {}}));
    assert_eq!(
        messages(&validate_subject_access_review(&neither)),
        [
            "spec.resourceAttributes.labelSelector.requirements: Required value: when spec.resourceAttributes.labelSelector is specified, requirements or rawSelector is required"
        ]
    );
    let bad = review(json!({
        "fieldSelector": {"requirements": [{"key": "", "operator": "In"}, {"key": "k", "operator": "Matches"}]},
        "labelSelector": {"requirements": [{"key": "a b", "operator": "Exists", "values": ["x"]}]},
    }));
    let msgs = messages(&validate_subject_access_review(&bad));
    assert_eq!(
        msgs[..3],
        [
            "spec.resourceAttributes.fieldSelector.requirements[0].key: Required value: must be specified",
            "spec.resourceAttributes.fieldSelector.requirements[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
            "spec.resourceAttributes.labelSelector.requirements[0].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
        ]
    );
    assert!(msgs[3].starts_with("spec.resourceAttributes.labelSelector.requirements[0].key: Invalid value: \"a b\": name part must consist of"));
    assert_eq!(msgs.len(), 4);
}

#[test]
fn token_request_lifetime() {
    assert!(validate_token_request(&json!({"spec": {"expirationSeconds": 3600}})).is_empty());
    assert_eq!(
        messages(&validate_token_request(
            &json!({"spec": {"expirationSeconds": 60}})
        )),
        [
            "spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes"
        ]
    );
    assert_eq!(
        messages(&validate_token_request(
            &json!({"spec": {"expirationSeconds": 4_294_967_297_i64}})
        )),
        [
            "spec.expirationSeconds: Invalid value: 4294967297: may not specify a duration larger than 2^32 seconds"
        ]
    );
}
