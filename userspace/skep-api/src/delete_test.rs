use serde_json::json;

use super::*;
use crate::kinds;

fn now() -> Timestamp {
    Timestamp::UNIX_EPOCH
}

#[test]
fn plain_objects_are_removed() {
    let cm = json!({"metadata": {"name": "c", "uid": "u1", "resourceVersion": "3"}});
    let out = prepare_delete(&kinds::CONFIG_MAP, &cm, &DeleteOptions::default(), now());
    assert_eq!(out.ok(), Some(DeleteOutcome::Remove));
    let opts = DeleteOptions {
        precondition_uid: Some("u2".into()),
        ..DeleteOptions::default()
    };
    let err = prepare_delete(&kinds::CONFIG_MAP, &cm, &opts, now()).err();
    assert_eq!(err.as_ref().map(ApiError::code), Some(409));
    assert_eq!(
        err.map(|e| e.message),
        Some("Precondition failed: UID in precondition: u2, UID in object meta: u1".into())
    );
}

#[test]
fn finalizers_and_foreground_keep_the_object() {
    let cm = json!({"metadata": {"name": "c", "finalizers": ["example.com/x"]}});
    let Ok(DeleteOutcome::Update(out)) =
        prepare_delete(&kinds::CONFIG_MAP, &cm, &DeleteOptions::default(), now())
    else {
        panic!("expected update");
    };
    assert_eq!(out["metadata"]["deletionTimestamp"], "1970-01-01T00:00:00Z");
    assert_eq!(out["metadata"]["deletionGracePeriodSeconds"], 0);
    assert!(!ready_to_remove(&kinds::CONFIG_MAP, &out));
    let mut cleared = out.clone();
    cleared["metadata"]["finalizers"] = json!([]);
    assert!(ready_to_remove(&kinds::CONFIG_MAP, &cleared));

    let d = json!({"metadata": {"name": "d", "generation": 3}});
    let opts = DeleteOptions::from_value(Some(&json!({"propagationPolicy": "Foreground"})))
        .unwrap_or_default();
    let Ok(DeleteOutcome::Update(out)) = prepare_delete(&kinds::DEPLOYMENT, &d, &opts, now())
    else {
        panic!("expected update");
    };
    assert_eq!(out["metadata"]["finalizers"], json!(["foregroundDeletion"]));
    assert_eq!(out["metadata"]["generation"], 4);
}

#[test]
fn pods_delete_gracefully_when_scheduled() {
    let unscheduled =
        json!({"metadata": {"name": "p"}, "spec": {"terminationGracePeriodSeconds": 30}});
    assert_eq!(
        prepare_delete(&kinds::POD, &unscheduled, &DeleteOptions::default(), now()).ok(),
        Some(DeleteOutcome::Remove)
    );
    let running = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 30}, "status": {"phase": "Running"}});
    let Ok(DeleteOutcome::Update(out)) =
        prepare_delete(&kinds::POD, &running, &DeleteOptions::default(), now())
    else {
        panic!("expected update");
    };
    assert_eq!(out["metadata"]["deletionTimestamp"], "1970-01-01T00:00:30Z");
    assert_eq!(out["metadata"]["deletionGracePeriodSeconds"], 30);
    assert_eq!(
        prepare_delete(&kinds::POD, &out, &DeleteOptions::default(), now()).ok(),
        Some(DeleteOutcome::Unchanged)
    );
    let force = DeleteOptions {
        grace_period_seconds: Some(0),
        ..DeleteOptions::default()
    };
    assert_eq!(
        prepare_delete(&kinds::POD, &out, &force, now()).ok(),
        Some(DeleteOutcome::Remove)
    );
}

#[test]
fn namespaces_go_terminating() {
    let ns = json!({"metadata": {"name": "team"}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
    let Ok(DeleteOutcome::Update(out)) =
        prepare_delete(&kinds::NAMESPACE, &ns, &DeleteOptions::default(), now())
    else {
        panic!("expected update");
    };
    assert_eq!(out["status"]["phase"], "Terminating");
    assert!(!ready_to_remove(&kinds::NAMESPACE, &out));
    let bad = DeleteOptions::from_value(Some(&json!({"propagationPolicy": "Sideways"}))).err();
    assert_eq!(bad.map(|e| e.code()), Some(400));
}

#[test]
fn options_come_from_the_body_or_else_the_query() {
    use crate::delete::Propagation;
    use crate::query::Params;
    let query = Params::new(vec![
        ("gracePeriodSeconds".into(), "0".into()),
        ("propagationPolicy".into(), "Foreground".into()),
        ("dryRun".into(), "All".into()),
        ("uid".into(), "u1".into()),
    ]);
    let (opts, dry_run) = DeleteOptions::from_request(&query, b"").unwrap_or_default();
    assert_eq!(opts.grace_period_seconds, Some(0));
    assert_eq!(opts.propagation, Some(Propagation::Foreground));
    assert_eq!(opts.precondition_uid.as_deref(), Some("u1"));
    assert!(dry_run);
    // A body wins over the query entirely, as upstream's handler reads it.
    let body = br#"{"kind":"DeleteOptions","apiVersion":"v1","propagationPolicy":"Orphan"}"#;
    let (opts, dry_run) = DeleteOptions::from_request(&query, body).unwrap_or_default();
    assert_eq!(opts.grace_period_seconds, None);
    assert_eq!(opts.propagation, Some(Propagation::Orphan));
    assert!(!dry_run);
    let body = br#"{"dryRun":["All"],"gracePeriodSeconds":5}"#;
    let (opts, dry_run) = DeleteOptions::from_request(&Params::default(), body).unwrap_or_default();
    assert_eq!(opts.grace_period_seconds, Some(5));
    assert!(dry_run);
    let bad = Params::new(vec![("gracePeriodSeconds".into(), "soon".into())]);
    assert_eq!(
        DeleteOptions::from_request(&bad, b"")
            .err()
            .map(|e| e.message),
        Some(r#"strconv.ParseInt: parsing "soon": invalid syntax"#.to_owned())
    );
}
