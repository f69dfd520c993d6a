use prost_reflect::prost::Message as _;
use serde_json::json;

use super::*;
use crate::status::StatusReason;

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/protobuf");

fn schemas() -> Result<&'static Schemas, String> {
    SCHEMAS.as_ref().map_err(Clone::clone)
}

fn read(name: &str) -> Result<Vec<u8>, String> {
    std::fs::read(format!("{TESTDATA}/{name}")).map_err(|e| format!("{name}: {e}"))
}

/// A body as a Kubernetes client sends it: magic, then `runtime.Unknown`.
fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Result<Vec<u8>, String> {
    let s = schemas()?;
    let type_meta = s
        .pool
        .get_message_by_name("k8s.io.apimachinery.pkg.runtime.TypeMeta")
        .ok_or("no TypeMeta")?;
    let mut meta = DynamicMessage::new(type_meta);
    meta.set_field_by_name("apiVersion", Proto::String(api_version.into()));
    meta.set_field_by_name("kind", Proto::String(kind.into()));
    let mut unknown = DynamicMessage::new(s.unknown.clone());
    unknown.set_field_by_name("typeMeta", Proto::Message(meta));
    unknown.set_field_by_name("raw", Proto::Bytes(raw.to_vec().into()));
    let mut out = MAGIC.to_vec();
    out.extend(unknown.encode_to_vec());
    Ok(out)
}

/// Go writes the zero `metav1.Time` as `null`; the decoder leaves it out.
fn drop_null_times(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|k, v| !(k == "creationTimestamp" && v.is_null()));
            map.values_mut().for_each(drop_null_times);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_null_times),
        _ => {}
    }
}

#[test]
fn schemas_load_and_every_listed_field_exists() -> Result<(), String> {
    let s = schemas()?;
    for name in POINTER_FIELDS.iter().chain(OMIT_ZERO).chain(INLINE_FIELDS) {
        let (message, field) = name.rsplit_once('.').ok_or(*name)?;
        let found = s
            .pool
            .get_message_by_name(message)
            .and_then(|m| m.get_field_by_name(field));
        assert!(found.is_some(), "{name} is not a field of the schemas");
    }
    // The `+optional` markers are read: required fields keep zeros, optional ones do not.
    assert!(
        s.keep_zero
            .contains("k8s.io.api.core.v1.ContainerStatus.ready")
    );
    assert!(
        s.keep_zero
            .contains("k8s.io.api.apps.v1.ReplicaSetStatus.replicas")
    );
    assert!(
        !s.keep_zero
            .contains("k8s.io.api.core.v1.ServiceSpec.clusterIP")
    );
    assert!(
        !s.keep_zero
            .contains("k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta.generation")
    );
    assert!(
        s.keep_zero
            .contains("k8s.io.api.apps.v1.DeploymentSpec.replicas")
    );
    Ok(())
}

/// What kubectl's generators send is what kubectl itself prints as JSON.
#[test]
fn kubectl_generator_bodies_decode_to_kubectls_json() -> Result<(), String> {
    for name in [
        "namespace",
        "configmap",
        "secret",
        "secret-binary",
        "deployment",
        "deployment-zero",
        "service",
    ] {
        let decoded =
            decode(&read(&format!("{name}.pb"))?).map_err(|e| format!("{name}: {e:?}"))?;
        let mut expected: Value = serde_json::from_slice(&read(&format!("{name}.json"))?)
            .map_err(|e| format!("{name}.json: {e}"))?;
        drop_null_times(&mut expected);
        assert_eq!(decoded, expected, "{name}");
    }
    Ok(())
}

#[test]
fn explicit_zero_replicas_stays_zero() -> Result<(), String> {
    let decoded = decode(&read("deployment-zero.pb")?).map_err(|e| format!("{e:?}"))?;
    assert_eq!(decoded["spec"]["replicas"], json!(0));
    let decoded = decode(&read("deployment.pb")?).map_err(|e| format!("{e:?}"))?;
    assert_eq!(decoded["spec"]["replicas"], json!(2));
    Ok(())
}

#[test]
fn pod_times_quantities_inline_structs_and_zeros() -> Result<(), String> {
    let body = envelope("v1", "Pod", &read("pod.bin")?)?;
    let decoded = decode(&body).map_err(|e| format!("{e:?}"))?;
    let expected = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web",
            "namespace": "team",
            "creationTimestamp": "2023-11-14T22:13:20Z",
            "labels": {"app": "web"},
            "managedFields": [{
                "manager": "kubectl",
                "operation": "Update",
                "apiVersion": "v1",
                "time": "2023-11-14T22:13:21Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {}},
            }],
        },
        "spec": {
            "containers": [{
                "name": "c",
                "image": "busybox",
                "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
                "resources": {"limits": {"cpu": "500m"}, "requests": {"memory": "64Mi"}},
                "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 5},
                "securityContext": {"runAsUser": 0, "privileged": false},
                "env": [{
                    "name": "PASSWORD",
                    "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password", "optional": false}},
                }],
                "volumeMounts": [{"name": "config", "mountPath": "/etc/app"}],
            }],
            "volumes": [{"name": "config", "configMap": {"name": "app", "defaultMode": 420}}],
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": false,
        },
        "status": {
            "containerStatuses": [{
                "name": "c", "ready": false, "restartCount": 0, "image": "busybox", "imageID": "",
            }],
        },
    });
    assert_eq!(decoded, expected);
    Ok(())
}

#[test]
fn int_or_string_zero_is_kept_only_where_it_means_something() -> Result<(), String> {
    let body = envelope("apps/v1", "Deployment", &read("deployment-rolling.bin")?)?;
    let decoded = decode(&body).map_err(|e| format!("{e:?}"))?;
    assert_eq!(
        decoded["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}})
    );
    assert_eq!(decoded["spec"]["revisionHistoryLimit"], json!(0));
    assert!(decoded["spec"].get("minReadySeconds").is_none());
    assert!(decoded["spec"].get("paused").is_none());

    let body = envelope("v1", "Service", &read("service-nodeport.bin")?)?;
    let decoded = decode(&body).map_err(|e| format!("{e:?}"))?;
    assert_eq!(
        decoded["spec"],
        json!({
            "ports": [
                {"protocol": "TCP", "port": 80},
                {"name": "metrics", "protocol": "TCP", "port": 9090, "targetPort": "metrics", "nodePort": 30090},
            ],
            "selector": {"app": "web"},
            "type": "NodePort",
            "allocateLoadBalancerNodePorts": false,
        })
    );
    assert!(decoded.get("status").is_none());
    Ok(())
}

#[test]
fn decoded_bodies_pass_the_same_admission_as_json() -> Result<(), String> {
    use crate::admission;
    use crate::decode::{Decoded, decode_json};

    for name in ["deployment", "service", "secret-binary", "namespace"] {
        let from_proto = decode(&read(&format!("{name}.pb"))?).map_err(|e| format!("{e:?}"))?;
        let from_json = decode_json(&read(&format!("{name}.json"))?)
            .map_err(|e| format!("{e:?}"))?
            .value;
        let kind = from_proto["kind"].as_str().unwrap_or_default().to_owned();
        let info =
            crate::registry::by_kind(from_proto["apiVersion"].as_str().unwrap_or_default(), &kind)
                .ok_or(kind.clone())?;
        let namespace = match from_proto["metadata"]["namespace"].as_str() {
            Some(ns) => ns.to_owned(),
            None if info.namespaced => "default".to_owned(),
            None => String::new(),
        };
        let admit = |value: Value| {
            admission::admit_create(
                info,
                &namespace,
                Decoded {
                    value,
                    duplicates: Vec::new(),
                },
                &admission::AdmitOptions {
                    field_validation: crate::fieldcheck::FieldValidation::Strict,
                    now: Timestamp::UNIX_EPOCH,
                },
            )
            .map(|admitted| {
                let mut object = admitted.object;
                // Fresh per call.
                if let Some(meta) = object["metadata"].as_object_mut() {
                    meta.remove("uid");
                }
                object
            })
            .map_err(|e| format!("{name}: {e:?}"))
        };
        assert_eq!(admit(from_proto)?, admit(from_json)?, "{name}");
    }
    Ok(())
}

#[test]
fn malformed_bodies_are_bad_requests() -> Result<(), String> {
    let bad = |bytes: &[u8]| decode(bytes).err().map(|e| (e.reason, e.message));
    let reason = |bytes: &[u8]| bad(bytes).map(|(r, _)| r);

    // Not a Kubernetes protobuf body at all.
    assert_eq!(
        reason(b"{\"kind\": \"Pod\"}"),
        Some(StatusReason::BadRequest)
    );
    assert_eq!(reason(b""), Some(StatusReason::BadRequest));
    // The envelope or the object is garbage.
    assert_eq!(reason(b"k8s\0\xff\xff\xff"), Some(StatusReason::BadRequest));
    let garbage = envelope("v1", "Pod", b"\x0a\xff\xff\xff\xff\x0f")?;
    assert_eq!(reason(&garbage), Some(StatusReason::BadRequest));
    // No kind, or one the schemas do not know.
    assert_eq!(
        reason(&envelope("v1", "", b"")?),
        Some(StatusReason::BadRequest)
    );
    let unknown = bad(&envelope("example.com/v1", "Widget", b"")?);
    assert_eq!(
        unknown,
        Some((
            StatusReason::BadRequest,
            "no kind \"Widget\" is registered for version \"example.com/v1\"".to_owned()
        ))
    );
    // FieldsV1 that is not JSON.
    let mut entry = DynamicMessage::new(
        schemas()?
            .pool
            .get_message_by_name("k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta")
            .ok_or("no ObjectMeta")?,
    );
    entry.set_field_by_name("name", Proto::String("x".into()));
    let mut fields_v1 = DynamicMessage::new(
        schemas()?
            .pool
            .get_message_by_name(FIELDS_V1)
            .ok_or("no FieldsV1")?,
    );
    fields_v1.set_field_by_name("Raw", Proto::Bytes(b"{not json".to_vec().into()));
    let mut managed = DynamicMessage::new(
        schemas()?
            .pool
            .get_message_by_name("k8s.io.apimachinery.pkg.apis.meta.v1.ManagedFieldsEntry")
            .ok_or("no ManagedFieldsEntry")?,
    );
    managed.set_field_by_name("fieldsV1", Proto::Message(fields_v1));
    entry.set_field_by_name("managedFields", Proto::List(vec![Proto::Message(managed)]));
    let mut cm = DynamicMessage::new(
        schemas()?
            .pool
            .get_message_by_name("k8s.io.api.core.v1.ConfigMap")
            .ok_or("no ConfigMap")?,
    );
    cm.set_field_by_name("metadata", Proto::Message(entry));
    let body = envelope("v1", "ConfigMap", &cm.encode_to_vec())?;
    assert_eq!(reason(&body), Some(StatusReason::BadRequest));
    Ok(())
}

/// Every truncation and many single-byte corruptions of a real body decode
/// or fail with 400: never a panic, never another error.
#[test]
fn corrupted_bodies_never_panic() -> Result<(), String> {
    let body = read("deployment.pb")?;
    let check = |bytes: &[u8]| {
        if let Err(e) = decode(bytes) {
            assert_eq!(e.reason, StatusReason::BadRequest, "{}", e.message);
        }
    };
    for len in 0..body.len() {
        check(&body[..len]);
    }
    for i in 0..body.len() {
        for b in [0x00, 0x01, 0x7f, 0x80, 0xff] {
            let mut bytes = body.clone();
            bytes[i] = b;
            check(&bytes);
        }
    }
    Ok(())
}
