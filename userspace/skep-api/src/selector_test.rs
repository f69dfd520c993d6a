use serde_json::json;

use super::*;
use crate::kinds;
use crate::status::StatusReason;

fn labels(v: &Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

#[test]
fn parses_every_operator() {
    let sel = LabelSelector::parse("a=b,c!=d,e in (x,y),f notin (z),g,!h").unwrap_or_default();
    assert_eq!(sel.requirements.len(), 6);
    let ok = labels(&json!({"a": "b", "c": "x", "e": "y", "f": "q", "g": ""}));
    assert!(sel.matches(&ok));
    let missing_c = labels(&json!({"a": "b", "e": "x", "g": "1"}));
    assert!(sel.matches(&missing_c), "!= and notin match a missing key");
    let has_h = labels(&json!({"a": "b", "e": "x", "g": "1", "h": "1"}));
    assert!(!sel.matches(&has_h));
    let wrong_e = labels(&json!({"a": "b", "e": "w", "g": "1"}));
    assert!(!sel.matches(&wrong_e));
    assert!(LabelSelector::parse("").is_ok_and(|s| s.is_empty()));
    assert!(LabelSelector::parse("a==b").is_ok_and(|s| s.matches(&labels(&json!({"a": "b"})))));
    assert!(LabelSelector::parse("a=").is_ok_and(|s| s.matches(&labels(&json!({"a": ""})))));
    assert!(LabelSelector::parse("n>3").is_ok_and(|s| s.matches(&labels(&json!({"n": "4"})))));
}

#[test]
fn rejects_bad_syntax() {
    for bad in [
        "a b", "a in b", "a in (b", "a=b,", "=b", "a=b c", "a b=c", "a=-x",
    ] {
        let err = LabelSelector::parse(bad).err();
        assert_eq!(
            err.map(|e| e.reason),
            Some(StatusReason::BadRequest),
            "{bad}"
        );
    }
}

#[test]
fn metav1_label_selector() {
    let sel = LabelSelector::from_value(&json!({
        "matchLabels": {"app": "web"},
        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe", "be"]},
                             {"key": "canary", "operator": "DoesNotExist"}]
    }))
    .unwrap_or_default();
    assert!(sel.matches(&labels(&json!({"app": "web", "tier": "fe"}))));
    assert!(!sel.matches(&labels(&json!({"app": "web", "tier": "fe", "canary": "1"}))));
    assert!(!sel.matches(&labels(&json!({"app": "web"}))));
    let nothing = LabelSelector::from_value(&Value::Null).unwrap_or_default();
    assert!(!nothing.matches(&labels(&json!({}))));
    let everything = LabelSelector::from_value(&json!({})).unwrap_or_default();
    assert!(everything.matches(&labels(&json!({}))));
}

#[test]
fn field_selectors_per_kind() {
    let pod = json!({"metadata": {"name": "p", "namespace": "ns"},
        "spec": {"nodeName": "n1", "restartPolicy": "Always"}, "status": {"phase": "Running"}});
    let sel = FieldSelector::parse(&kinds::POD, "spec.nodeName=n1,status.phase!=Pending")
        .unwrap_or_default();
    assert!(sel.matches(&kinds::POD, &pod));
    let sel = FieldSelector::parse(&kinds::POD, "spec.nodeName==").unwrap_or_default();
    assert!(!sel.matches(&kinds::POD, &pod));
    assert!(
        FieldSelector::parse(&kinds::POD, "spec.hostNetwork=false")
            .is_ok_and(|s| s.matches(&kinds::POD, &pod))
    );
    let err = FieldSelector::parse(&kinds::POD, "foo=bar").err();
    assert_eq!(
        err.map(|e| e.message),
        Some("field label not supported: foo".to_owned())
    );
    let err = FieldSelector::parse(&kinds::CONFIG_MAP, "spec.nodeName=x").err();
    assert_eq!(err.map(|e| e.code()), Some(400));

    let event = json!({"involvedObject": {"kind": "Pod", "name": "p"}, "source": {"component": "kubelet"}, "type": "Normal"});
    let sel = FieldSelector::parse(
        &kinds::EVENT,
        "involvedObject.kind=Pod,involvedObject.name=p,source=kubelet,type=Normal",
    )
    .unwrap_or_default();
    assert!(sel.matches(&kinds::EVENT, &event));
    let node = json!({"spec": {}});
    assert!(
        FieldSelector::parse(&kinds::NODE, "spec.unschedulable=false")
            .is_ok_and(|s| s.matches(&kinds::NODE, &node))
    );
    let secret = json!({"type": "kubernetes.io/tls"});
    assert!(
        FieldSelector::parse(&kinds::SECRET, "type=kubernetes.io/tls")
            .is_ok_and(|s| s.matches(&kinds::SECRET, &secret))
    );
    assert_eq!(
        FieldSelector::parse(&kinds::POD, "metadata.name=p")
            .unwrap_or_default()
            .exact("metadata.name"),
        Some("p")
    );
}

#[test]
fn field_selector_parsing_follows_upstream() {
    let pod = json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"nodeName": "n,1"}});
    // An empty term is skipped, as fields.ParseSelector does.
    for s in [
        "metadata.name=p,",
        ",metadata.name=p",
        "metadata.name=p,,",
        "",
    ] {
        assert!(
            FieldSelector::parse(&kinds::POD, s).is_ok_and(|sel| sel.matches(&kinds::POD, &pod)),
            "{s:?}"
        );
    }
    assert!(
        FieldSelector::parse(&kinds::POD, "metadata.name==p,metadata.namespace!=x")
            .is_ok_and(|sel| sel.matches(&kinds::POD, &pod))
    );
    // An escaped comma is part of the value.
    assert!(
        FieldSelector::parse(&kinds::POD, r"spec.nodeName=n\,1")
            .is_ok_and(|sel| sel.matches(&kinds::POD, &pod))
    );
    let message = |s: &str| {
        FieldSelector::parse(&kinds::POD, s)
            .err()
            .map(|e| (e.code(), e.message))
    };
    assert_eq!(
        message("metadata.name"),
        Some((
            400,
            "invalid selector: 'metadata.name'; can't understand 'metadata.name'".to_owned()
        ))
    );
    // The leftmost operator splits the term; what follows is the value.
    assert_eq!(
        message("metadata.name=a=b"),
        Some((
            400,
            "invalid field selector: unescaped character in value: 61".to_owned()
        ))
    );
    assert_eq!(
        message(r"metadata.name=a\x"),
        Some((
            400,
            r"invalid field selector: invalid escape sequence: \x".to_owned()
        ))
    );
    assert_eq!(
        message("metadata.name=a\\"),
        Some((
            400,
            r"invalid field selector: invalid escape sequence: \".to_owned()
        ))
    );
    // No trimming: a space is part of the field.
    assert_eq!(
        message("metadata.name =p"),
        Some((400, "field label not supported: metadata.name ".to_owned()))
    );
    // Terms are sorted before parsing, so the smallest bad term is named.
    assert_eq!(
        message("zz,aa"),
        Some((
            400,
            "invalid selector: 'zz,aa'; can't understand 'aa'".to_owned()
        ))
    );
}
