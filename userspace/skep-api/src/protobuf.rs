//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`)
//! to the JSON document the rest of the API machinery already decodes,
//! defaults and validates, so a protobuf create goes through the same path as
//! a JSON one.
//!
//! The wire format (k8s.io/apimachinery `runtime/serializer/protobuf`): the
//! 4-byte magic `k8s\0`, then a `runtime.Unknown` message whose `typeMeta`
//! names the kind and whose `raw` is that kind's message. The messages are
//! described by the vendored `generated.proto` files (`proto/k8s/`, compiled
//! by `build.rs` into a descriptor set embedded here) and decoded with
//! `prost-reflect`; the proto field names are the JSON names.
//!
//! What JSON a message becomes follows what kube-apiserver would store after
//! decoding it into its Go struct:
//! - Go's encoder writes every non-pointer field, so most scalars arrive even
//!   when unset (`generateName: ""`, `generation: 0`). A zero scalar is left
//!   out unless it is significant: the field is *required* (its doc comment
//!   has no `+optional` marker: Go's JSON writes those even when zero, and the
//!   typed model needs them, e.g. `containerStatuses[].ready`) or it is a Go
//!   pointer, where zero is an explicit choice (`replicas: 0`,
//!   `automountServiceAccountToken: false`; [`POINTER_FIELDS`], taken from
//!   the upstream Go types since the `.proto` files do not say). A few
//!   required-looking fields that Go omits when empty are in [`OMIT_ZERO`].
//! - Nested messages always appear (`strategy: {}`, `resources: {}`), as in
//!   Go's JSON; repeated fields and maps appear when non-empty. Embedded Go
//!   structs (`Volume`'s `VolumeSource`, `Probe`'s handler, the
//!   `LocalObjectReference` of ConfigMap/Secret references) are fields in
//!   protobuf but flattened into their parent in JSON ([`INLINE_FIELDS`]).
//! - Types with their own JSON form: `meta.v1.Time`/`MicroTime`
//!   (`{seconds, nanos}` → RFC 3339, the zero time left out), `Quantity`
//!   (→ its string), `IntOrString` (→ int or string), `FieldsV1` and
//!   `runtime.RawExtension` (→ the JSON they carry); `bytes` (Secret `data`)
//!   → base64, as in JSON.
//!
//! Fields unknown to these v1.32 schemas are dropped, as Go's decoder does.
//! Malformed input is a 400 `BadRequest`, never a panic.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use k8s_openapi::ByteString;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use prost_reflect::{
    DescriptorPool, DynamicMessage, MapKey, MessageDescriptor, ReflectMessage as _, Value as Proto,
};
use serde_json::{Map, Number, Value};

use crate::status::ApiError;

/// The media type of Kubernetes protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The prefix of every Kubernetes protobuf body.
pub const MAGIC: [u8; 4] = *b"k8s\0";

/// The compiled `proto/k8s` schemas (with comments, for the `+optional` markers).
static DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/k8s.fds"));

const UNKNOWN: &str = "k8s.io.apimachinery.pkg.runtime.Unknown";
const TIME: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.Time";
const MICRO_TIME: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime";
const FIELDS_V1: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1";
const QUANTITY: &str = "k8s.io.apimachinery.pkg.api.resource.Quantity";
const INT_OR_STRING: &str = "k8s.io.apimachinery.pkg.util.intstr.IntOrString";
const RAW_EXTENSION: &str = "k8s.io.apimachinery.pkg.runtime.RawExtension";

/// Optional fields that are Go pointers in k8s.io/api v1.32 and whose zero
/// value (`0`, `false`, `""`, `IntOrString` 0) means something other than
/// "unset", for the kinds skep serves. Full proto names.
pub const POINTER_FIELDS: &[&str] = &[
    // meta/v1
    "k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta.deletionGracePeriodSeconds",
    "k8s.io.apimachinery.pkg.apis.meta.v1.OwnerReference.controller",
    "k8s.io.apimachinery.pkg.apis.meta.v1.OwnerReference.blockOwnerDeletion",
    "k8s.io.apimachinery.pkg.apis.meta.v1.ListMeta.remainingItemCount",
    "k8s.io.apimachinery.pkg.apis.meta.v1.DeleteOptions.gracePeriodSeconds",
    "k8s.io.apimachinery.pkg.apis.meta.v1.DeleteOptions.orphanDependents",
    "k8s.io.apimachinery.pkg.apis.meta.v1.Preconditions.uid",
    "k8s.io.apimachinery.pkg.apis.meta.v1.Preconditions.resourceVersion",
    // core/v1 pods
    "k8s.io.api.core.v1.PodSpec.terminationGracePeriodSeconds",
    "k8s.io.api.core.v1.PodSpec.activeDeadlineSeconds",
    "k8s.io.api.core.v1.PodSpec.automountServiceAccountToken",
    "k8s.io.api.core.v1.PodSpec.shareProcessNamespace",
    "k8s.io.api.core.v1.PodSpec.priority",
    "k8s.io.api.core.v1.PodSpec.enableServiceLinks",
    "k8s.io.api.core.v1.PodSpec.setHostnameAsFQDN",
    "k8s.io.api.core.v1.PodSpec.hostUsers",
    "k8s.io.api.core.v1.SecurityContext.privileged",
    "k8s.io.api.core.v1.SecurityContext.runAsUser",
    "k8s.io.api.core.v1.SecurityContext.runAsGroup",
    "k8s.io.api.core.v1.SecurityContext.runAsNonRoot",
    "k8s.io.api.core.v1.SecurityContext.readOnlyRootFilesystem",
    "k8s.io.api.core.v1.SecurityContext.allowPrivilegeEscalation",
    "k8s.io.api.core.v1.PodSecurityContext.runAsUser",
    "k8s.io.api.core.v1.PodSecurityContext.runAsGroup",
    "k8s.io.api.core.v1.PodSecurityContext.runAsNonRoot",
    "k8s.io.api.core.v1.PodSecurityContext.fsGroup",
    "k8s.io.api.core.v1.WindowsSecurityContextOptions.hostProcess",
    "k8s.io.api.core.v1.Probe.terminationGracePeriodSeconds",
    "k8s.io.api.core.v1.GRPCAction.service",
    "k8s.io.api.core.v1.ContainerStatus.started",
    "k8s.io.api.core.v1.Toleration.tolerationSeconds",
    "k8s.io.api.core.v1.TopologySpreadConstraint.minDomains",
    "k8s.io.api.core.v1.PodDNSConfigOption.value",
    // core/v1 volumes
    "k8s.io.api.core.v1.SecretVolumeSource.defaultMode",
    "k8s.io.api.core.v1.SecretVolumeSource.optional",
    "k8s.io.api.core.v1.ConfigMapVolumeSource.defaultMode",
    "k8s.io.api.core.v1.ConfigMapVolumeSource.optional",
    "k8s.io.api.core.v1.ProjectedVolumeSource.defaultMode",
    "k8s.io.api.core.v1.DownwardAPIVolumeSource.defaultMode",
    "k8s.io.api.core.v1.DownwardAPIVolumeFile.mode",
    "k8s.io.api.core.v1.KeyToPath.mode",
    "k8s.io.api.core.v1.ServiceAccountTokenProjection.expirationSeconds",
    "k8s.io.api.core.v1.ConfigMapProjection.optional",
    "k8s.io.api.core.v1.SecretProjection.optional",
    "k8s.io.api.core.v1.ClusterTrustBundleProjection.optional",
    "k8s.io.api.core.v1.ConfigMapKeySelector.optional",
    "k8s.io.api.core.v1.SecretKeySelector.optional",
    "k8s.io.api.core.v1.ConfigMapEnvSource.optional",
    "k8s.io.api.core.v1.SecretEnvSource.optional",
    "k8s.io.api.core.v1.HostPathVolumeSource.type",
    "k8s.io.api.core.v1.CSIVolumeSource.readOnly",
    "k8s.io.api.core.v1.FCVolumeSource.lun",
    "k8s.io.api.core.v1.AzureDiskVolumeSource.readOnly",
    "k8s.io.api.core.v1.PersistentVolumeClaimSpec.storageClassName",
    // core/v1 config, services, endpoints
    "k8s.io.api.core.v1.ConfigMap.immutable",
    "k8s.io.api.core.v1.Secret.immutable",
    "k8s.io.api.core.v1.ServiceSpec.allocateLoadBalancerNodePorts",
    "k8s.io.api.core.v1.ClientIPConfig.timeoutSeconds",
    // apps/v1
    "k8s.io.api.apps.v1.DeploymentSpec.replicas",
    "k8s.io.api.apps.v1.DeploymentSpec.revisionHistoryLimit",
    "k8s.io.api.apps.v1.DeploymentStatus.collisionCount",
    "k8s.io.api.apps.v1.RollingUpdateDeployment.maxUnavailable",
    "k8s.io.api.apps.v1.RollingUpdateDeployment.maxSurge",
    "k8s.io.api.apps.v1.ReplicaSetSpec.replicas",
    // autoscaling/v1: not a pointer, but `replicas: 0` and no replicas mean the same
    "k8s.io.api.autoscaling.v1.ScaleSpec.replicas",
    // networking/v1
    "k8s.io.api.networking.v1.NetworkPolicyPort.port",
    "k8s.io.api.networking.v1.NetworkPolicyPort.endPort",
    // discovery/v1
    "k8s.io.api.discovery.v1.EndpointConditions.ready",
    "k8s.io.api.discovery.v1.EndpointConditions.serving",
    "k8s.io.api.discovery.v1.EndpointConditions.terminating",
    "k8s.io.api.discovery.v1.EndpointPort.name",
    "k8s.io.api.discovery.v1.EndpointPort.port",
];

/// Embedded Go structs (`json:",inline"`): a message field in protobuf whose
/// fields sit directly in the parent object in JSON (`volumes[].configMap`,
/// not `volumes[].volumeSource.configMap`). Full proto names.
pub const INLINE_FIELDS: &[&str] = &[
    "k8s.io.api.core.v1.Volume.volumeSource",
    "k8s.io.api.core.v1.PersistentVolumeSpec.persistentVolumeSource",
    "k8s.io.api.core.v1.Probe.handler",
    "k8s.io.api.core.v1.EphemeralContainer.ephemeralContainerCommon",
    "k8s.io.api.core.v1.ConfigMapVolumeSource.localObjectReference",
    "k8s.io.api.core.v1.ConfigMapKeySelector.localObjectReference",
    "k8s.io.api.core.v1.ConfigMapEnvSource.localObjectReference",
    "k8s.io.api.core.v1.ConfigMapProjection.localObjectReference",
    "k8s.io.api.core.v1.SecretKeySelector.localObjectReference",
    "k8s.io.api.core.v1.SecretEnvSource.localObjectReference",
    "k8s.io.api.core.v1.SecretProjection.localObjectReference",
];

/// Fields without a `+optional` marker that Go's JSON still leaves out when
/// empty (`omitempty`).
pub const OMIT_ZERO: &[&str] = &[
    "k8s.io.apimachinery.pkg.apis.meta.v1.ListMeta.continue",
    "k8s.io.apimachinery.pkg.apis.meta.v1.ManagedFieldsEntry.manager",
    "k8s.io.apimachinery.pkg.apis.meta.v1.ManagedFieldsEntry.operation",
    "k8s.io.apimachinery.pkg.apis.meta.v1.ManagedFieldsEntry.apiVersion",
    "k8s.io.apimachinery.pkg.apis.meta.v1.ManagedFieldsEntry.fieldsType",
    "k8s.io.apimachinery.pkg.apis.meta.v1.ManagedFieldsEntry.subresource",
    "k8s.io.api.apps.v1.DeploymentCondition.reason",
    "k8s.io.api.apps.v1.DeploymentCondition.message",
    "k8s.io.api.core.v1.EventSeries.count",
];

/// The descriptor pool and, per field, whether a zero value is kept.
struct Schemas {
    pool: DescriptorPool,
    unknown: MessageDescriptor,
    /// Full names of singular fields whose zero value is written out.
    keep_zero: HashSet<String>,
}

static SCHEMAS: LazyLock<Result<Schemas, String>> = LazyLock::new(Schemas::load);

impl Schemas {
    fn load() -> Result<Self, String> {
        let pool = DescriptorPool::decode(DESCRIPTORS)
            .map_err(|err| format!("failed to load the protobuf schemas: {err}"))?;
        let unknown = pool
            .get_message_by_name(UNKNOWN)
            .ok_or_else(|| format!("the protobuf schemas lack {UNKNOWN}"))?;
        // Leading comments by (file, source path): a field's doc comment.
        let mut comments: HashMap<(String, Vec<i32>), String> = HashMap::new();
        for file in pool.files() {
            let Some(info) = &file.file_descriptor_proto().source_code_info else {
                continue;
            };
            for location in &info.location {
                if let Some(comment) = &location.leading_comments {
                    comments.insert(
                        (file.name().to_owned(), location.path.clone()),
                        comment.clone(),
                    );
                }
            }
        }
        let mut keep_zero = HashSet::new();
        for message in pool.all_messages().filter(|m| !m.is_map_entry()) {
            let file = message.parent_file().name().to_owned();
            for field in message.fields() {
                let required = comments
                    .get(&(file.clone(), field.path().to_vec()))
                    .is_none_or(|c| !c.contains("+optional"));
                let name = field.full_name();
                if (required && !OMIT_ZERO.contains(&name)) || POINTER_FIELDS.contains(&name) {
                    keep_zero.insert(name.to_owned());
                }
            }
        }
        Ok(Self {
            pool,
            unknown,
            keep_zero,
        })
    }

    /// The message for an object's `apiVersion` and `kind`: `v1` → core,
    /// `apps/v1` → `k8s.io.api.apps.v1`, `networking.k8s.io/v1` →
    /// `k8s.io.api.networking.v1`.
    fn object_message(&self, api_version: &str, kind: &str) -> Option<MessageDescriptor> {
        let package = match api_version.split_once('/') {
            None => format!("k8s.io.api.core.{api_version}"),
            Some((group, version)) => {
                let short = group.split('.').next().unwrap_or(group);
                format!("k8s.io.api.{short}.{version}")
            }
        };
        if kind.is_empty() || kind.contains('.') {
            return None;
        }
        self.pool.get_message_by_name(&format!("{package}.{kind}"))
    }

    /// A message as JSON, and whether it is its type's zero value (only the
    /// types with their own JSON form have one; other messages are never zero).
    fn message(&self, msg: &DynamicMessage) -> Result<(Value, bool), ApiError> {
        match msg.descriptor().full_name() {
            TIME | MICRO_TIME => time(msg),
            QUANTITY => {
                let s = string_field(msg, "string");
                Ok((Value::String(s.clone()), s.is_empty()))
            }
            INT_OR_STRING => {
                if int_field(msg, "type") == 1 {
                    let s = string_field(msg, "strVal");
                    Ok((Value::String(s.clone()), s.is_empty()))
                } else {
                    let n = int_field(msg, "intVal");
                    Ok((Value::Number(n.into()), n == 0))
                }
            }
            FIELDS_V1 => embedded_json(msg, "Raw"),
            RAW_EXTENSION => embedded_json(msg, "raw"),
            _ => {
                let mut out = Map::new();
                for (field, value) in msg.fields() {
                    let (json, zero) = self.value(value)?;
                    let singular = !field.is_list() && !field.is_map();
                    if zero
                        && singular
                        && (json.is_null() || !self.keep_zero.contains(field.full_name()))
                    {
                        continue;
                    }
                    match json {
                        Value::Object(inner) if INLINE_FIELDS.contains(&field.full_name()) => {
                            out.extend(inner);
                        }
                        json => {
                            out.insert(field.name().to_owned(), json);
                        }
                    }
                }
                Ok((Value::Object(out), false))
            }
        }
    }

    /// A field value as JSON, and whether it is zero.
    fn value(&self, value: &Proto) -> Result<(Value, bool), ApiError> {
        Ok(match value {
            Proto::Bool(b) => (Value::Bool(*b), !*b),
            Proto::I32(n) | Proto::EnumNumber(n) => (Value::Number((*n).into()), *n == 0),
            Proto::I64(n) => (Value::Number((*n).into()), *n == 0),
            Proto::U32(n) => (Value::Number((*n).into()), *n == 0),
            Proto::U64(n) => (Value::Number((*n).into()), *n == 0),
            Proto::F32(f) => float(f64::from(*f))?,
            Proto::F64(f) => float(*f)?,
            Proto::String(s) => (Value::String(s.clone()), s.is_empty()),
            Proto::Bytes(b) => (bytes(b), b.is_empty()),
            Proto::Message(m) => self.message(m)?,
            Proto::List(items) => {
                let items = items
                    .iter()
                    .map(|item| self.value(item).map(|(json, _)| json))
                    .collect::<Result<Vec<_>, _>>()?;
                let empty = items.is_empty();
                (Value::Array(items), empty)
            }
            Proto::Map(entries) => {
                let mut out = Map::new();
                for (key, value) in entries {
                    out.insert(map_key(key), self.value(value)?.0);
                }
                let empty = out.is_empty();
                (Value::Object(out), empty)
            }
        })
    }
}

/// Decode a protobuf body (magic, `runtime.Unknown`, object) into the JSON
/// document kube-apiserver's JSON decoder would have produced, with
/// `apiVersion` and `kind` from the envelope.
pub fn decode(bytes: &[u8]) -> Result<Value, ApiError> {
    let schemas = SCHEMAS.as_ref().map_err(ApiError::internal)?;
    let body = bytes.strip_prefix(&MAGIC).ok_or_else(|| {
        ApiError::bad_request(format!(
            "provided data does not appear to be a protobuf message, expected prefix {MAGIC:?}"
        ))
    })?;
    let envelope = DynamicMessage::decode(schemas.unknown.clone(), body)
        .map_err(|err| malformed("runtime.Unknown", &err))?;
    let type_meta = envelope
        .get_field_by_name("typeMeta")
        .and_then(|v| v.as_message().cloned());
    let (api_version, kind) = type_meta.as_ref().map_or_else(Default::default, |t| {
        (string_field(t, "apiVersion"), string_field(t, "kind"))
    });
    if kind.is_empty() {
        return Err(ApiError::bad_request(
            "Object 'Kind' is missing in protobuf body",
        ));
    }
    let encoding = string_field(&envelope, "contentEncoding");
    if !encoding.is_empty() {
        return Err(ApiError::bad_request(format!(
            "unsupported protobuf content encoding {encoding:?}"
        )));
    }
    let message = schemas.object_message(&api_version, &kind).ok_or_else(|| {
        ApiError::bad_request(format!(
            "no kind {kind:?} is registered for version {api_version:?}"
        ))
    })?;
    let raw = envelope
        .get_field_by_name("raw")
        .and_then(|v| v.as_bytes().cloned())
        .unwrap_or_default();
    let object = DynamicMessage::decode(message, raw).map_err(|err| malformed(&kind, &err))?;
    let (value, _) = schemas.message(&object)?;
    let Value::Object(fields) = value else {
        return Err(ApiError::bad_request(format!(
            "{kind} is not an object kind"
        )));
    };
    let mut out = Map::new();
    out.insert("apiVersion".to_owned(), Value::String(api_version));
    out.insert("kind".to_owned(), Value::String(kind));
    out.extend(fields);
    tracing::debug!(kind = %out["kind"], "decoded a protobuf body");
    Ok(Value::Object(out))
}

fn malformed(what: &str, err: &prost_reflect::prost::DecodeError) -> ApiError {
    ApiError::bad_request(format!("failed to decode protobuf {what}: {err}"))
}

fn string_field(msg: &DynamicMessage, name: &str) -> String {
    msg.get_field_by_name(name)
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn int_field(msg: &DynamicMessage, name: &str) -> i64 {
    msg.get_field_by_name(name)
        .and_then(|v| match *v {
            Proto::I32(n) => Some(i64::from(n)),
            Proto::I64(n) => Some(n),
            _ => None,
        })
        .unwrap_or_default()
}

/// `meta.v1.Time`/`MicroTime` as kube-apiserver writes them (RFC 3339, second
/// or microsecond precision); the zero time is `null`, and left out.
fn time(msg: &DynamicMessage) -> Result<(Value, bool), ApiError> {
    let seconds = int_field(msg, "seconds");
    let nanos = i32::try_from(int_field(msg, "nanos"))
        .map_err(|_| ApiError::bad_request("protobuf time: nanos out of range"))?;
    if seconds == 0 && nanos == 0 {
        return Ok((Value::Null, true));
    }
    let ts = Timestamp::new(seconds, nanos)
        .map_err(|err| ApiError::bad_request(format!("protobuf time out of range: {err}")))?;
    let json = if msg.descriptor().full_name() == TIME {
        serde_json::to_value(Time(ts))
    } else {
        serde_json::to_value(MicroTime(ts))
    };
    Ok((json.map_err(ApiError::internal)?, false))
}

/// The JSON document carried in a bytes field (`FieldsV1.Raw`, `RawExtension.raw`).
fn embedded_json(msg: &DynamicMessage, field: &str) -> Result<(Value, bool), ApiError> {
    let raw = msg
        .get_field_by_name(field)
        .and_then(|v| v.as_bytes().cloned())
        .unwrap_or_default();
    if raw.is_empty() {
        return Ok((Value::Null, true));
    }
    let json = serde_json::from_slice(&raw).map_err(|err| {
        ApiError::bad_request(format!(
            "protobuf {}: embedded object is not JSON: {err}",
            msg.descriptor().name()
        ))
    })?;
    Ok((json, false))
}

fn float(f: f64) -> Result<(Value, bool), ApiError> {
    let n = Number::from_f64(f)
        .ok_or_else(|| ApiError::bad_request(format!("protobuf number {f} is not finite")))?;
    Ok((Value::Number(n), f.classify() == std::num::FpCategory::Zero))
}

/// Bytes as JSON writes them: standard base64.
fn bytes(b: &[u8]) -> Value {
    serde_json::to_value(ByteString(b.to_vec())).unwrap_or(Value::Null)
}

fn map_key(key: &MapKey) -> String {
    match key {
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(n) => n.to_string(),
        MapKey::I64(n) => n.to_string(),
        MapKey::U32(n) => n.to_string(),
        MapKey::U64(n) => n.to_string(),
        MapKey::String(s) => s.clone(),
    }
}

#[cfg(test)]
#[path = "protobuf_test.rs"]
mod tests;
