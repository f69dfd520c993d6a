//! The content of `projected` and `downwardAPI` volumes, as the kubelet's
//! volume plugins compute it (`pkg/volume/projected`, `pkg/volume/downwardapi`):
//! ServiceAccount tokens, ConfigMap and Secret keys, and pod facts, each
//! with its mode, as an [`atomic_writer::Payload`] that
//! [`atomic_writer::write`] puts in place. Pure functions of the pod, the
//! node's copy of ConfigMaps and Secrets, and the tokens fetched for the
//! pod (see [`token_keys`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use k8s_openapi::api::core::v1::{
    DownwardAPIVolumeFile, KeyToPath, Pod, ResourceFieldSelector, Volume,
};

use crate::atomic_writer::{FileProjection, Payload};
use crate::podspec::{PodSpecError, Sources};
use crate::token::{DEFAULT_EXPIRATION_SECONDS, TokenKey};

/// The mode of a projected or downward API file when the volume names none.
const DEFAULT_MODE: i32 = 0o644;

/// The tokens of a pod's `serviceAccountToken` projections, by what they
/// are for. A key with no token (the control plane issues none) leaves
/// its file out.
pub type Tokens = HashMap<TokenKey, String>;

/// The tokens pod `pod`'s projected volumes need: (volume name, key).
pub fn token_keys(pod: &Pod) -> Vec<(String, TokenKey)> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let service_account = spec
        .service_account_name
        .clone()
        .filter(|s| !s.is_empty())
        .or_else(|| spec.service_account.clone())
        .unwrap_or_else(|| "default".to_owned());
    let mut out = Vec::new();
    for vol in spec.volumes.iter().flatten() {
        let Some(projected) = &vol.projected else {
            continue;
        };
        for source in projected.sources.iter().flatten() {
            if let Some(t) = &source.service_account_token {
                out.push((
                    vol.name.clone(),
                    TokenKey {
                        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                        service_account: service_account.clone(),
                        pod_name: pod.metadata.name.clone().unwrap_or_default(),
                        pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
                        audiences: t
                            .audience
                            .clone()
                            .filter(|a| !a.is_empty())
                            .into_iter()
                            .collect(),
                        expiration_seconds: t
                            .expiration_seconds
                            .unwrap_or(DEFAULT_EXPIRATION_SECONDS),
                    },
                ));
            }
        }
    }
    out
}

fn mode(item: Option<i32>, default: Option<i32>) -> u32 {
    u32::try_from(item.or(default).unwrap_or(DEFAULT_MODE)).unwrap_or(0o644)
}

/// Keys of a ConfigMap or Secret as files: `items` pick and rename them
/// (a missing key is an error unless the source is optional), else every
/// key is a file.
fn keyed(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: Option<i32>,
    optional: bool,
    what: &str,
    out: &mut Payload,
) -> Result<(), String> {
    match items {
        Some(items) if !items.is_empty() => {
            for item in items {
                match data.get(&item.key) {
                    Some(d) => {
                        out.insert(
                            item.path.clone(),
                            FileProjection {
                                data: d.clone(),
                                mode: mode(item.mode, default_mode),
                            },
                        );
                    }
                    None if optional => {}
                    None => {
                        return Err(format!("configuration of {what} has no key {:?}", item.key));
                    }
                }
            }
        }
        _ => {
            for (k, d) in data {
                out.insert(
                    k.clone(),
                    FileProjection {
                        data: d.clone(),
                        mode: mode(None, default_mode),
                    },
                );
            }
        }
    }
    Ok(())
}

/// Go's `%q` of a string: what the downward API writes for label and
/// annotation values.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if c.is_control() => {
                let n = u32::from(c);
                // Writing to a String cannot fail.
                let _ = if n < 0x100 {
                    write!(out, "\\x{n:02x}")
                } else if n < 0x10000 {
                    write!(out, "\\u{n:04x}")
                } else {
                    write!(out, "\\U{n:08x}")
                };
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `fieldpath.FormatMap`: `key="value"` lines in key order.
fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value of a downward API `fieldRef` in a volume.
fn field_value(pod: &Pod, field_path: &str) -> Option<String> {
    let meta = &pod.metadata;
    match field_path {
        "metadata.labels" => Some(format_map(meta.labels.as_ref())),
        "metadata.annotations" => Some(format_map(meta.annotations.as_ref())),
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => pod.spec.as_ref()?.node_name.clone(),
        "spec.serviceAccountName" => pod.spec.as_ref()?.service_account_name.clone(),
        "status.podIP" => pod.status.as_ref()?.pod_ip.clone(),
        "status.hostIP" => pod.status.as_ref()?.host_ip.clone(),
        p => {
            let (map, key) = if let Some(rest) = p.strip_prefix("metadata.labels['") {
                (meta.labels.as_ref(), rest)
            } else {
                (
                    meta.annotations.as_ref(),
                    p.strip_prefix("metadata.annotations['")?,
                )
            };
            Some(
                map?.get(key.strip_suffix("']")?)
                    .cloned()
                    .unwrap_or_default(),
            )
        }
    }
}

/// A quantity as a count of nano-units (`500m` → 5e8, `1Gi` → 2^30 · 1e9).
fn nano(quantity: &str) -> Option<i128> {
    let q = quantity.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    let negative = whole.starts_with('-');
    let whole: i128 = whole.trim_start_matches(['-', '+']).parse().unwrap_or(0);
    let frac_digits = frac.len().min(9);
    let frac_value: i128 = if frac_digits == 0 {
        0
    } else {
        frac[..frac_digits].parse().ok()?
    };
    let base =
        whole * 1_000_000_000 + frac_value * 10_i128.pow(u32::try_from(9 - frac_digits).ok()?);
    let factor: i128 = match suffix {
        "n" => return Some(sign(base / 1_000_000_000, negative)),
        "u" => return Some(sign(base / 1_000_000, negative)),
        "m" => return Some(sign(base / 1_000, negative)),
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        _ => return None,
    };
    Some(sign(base * factor, negative))
}

fn sign(v: i128, negative: bool) -> i128 {
    if negative { -v } else { v }
}

/// A `resourceFieldRef` value: the container's limit or request divided
/// by the divisor, rounded up (`pkg/api/v1/resource.ExtractContainerResourceValue`);
/// a limit the container does not set is the node's allocatable amount.
fn resource_value(
    pod: &Pod,
    r: &ResourceFieldSelector,
    allocatable: &BTreeMap<String, String>,
) -> Result<String, String> {
    let containers = pod.spec.iter().flat_map(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
    });
    let name = r.container_name.as_deref().unwrap_or_default();
    let container = containers
        .into_iter()
        .find(|c| c.name == name)
        .ok_or_else(|| format!("container {name} not found"))?;
    let resources = container.resources.as_ref();
    let (set, resource) = r
        .resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported container resource : {}", r.resource))?;
    let list = match set {
        "limits" => resources.and_then(|r| r.limits.as_ref()),
        "requests" => resources.and_then(|r| r.requests.as_ref()),
        _ => return Err(format!("unsupported container resource : {}", r.resource)),
    };
    let value = list
        .and_then(|l| l.get(resource))
        .map(|q| q.0.clone())
        .or_else(|| match set {
            "limits" => allocatable.get(resource).cloned(),
            // An unset request is the limit, else zero.
            _ => resources
                .and_then(|r| r.limits.as_ref())
                .and_then(|l| l.get(resource))
                .map(|q| q.0.clone()),
        })
        .unwrap_or_else(|| "0".to_owned());
    let divisor = r.divisor.as_ref().map_or("1", |d| d.0.as_str());
    let (Some(v), Some(d)) = (nano(&value), nano(divisor)) else {
        return Err(format!(
            "unsupported quantity {value:?} or divisor {divisor:?}"
        ));
    };
    if d == 0 {
        return Err("divisor must not be zero".to_owned());
    }
    let q = v / d + i128::from(v % d != 0);
    Ok(q.to_string())
}

fn downward_items(
    pod: &Pod,
    items: Option<&Vec<DownwardAPIVolumeFile>>,
    default_mode: Option<i32>,
    allocatable: &BTreeMap<String, String>,
    out: &mut Payload,
) -> Result<(), String> {
    for item in items.into_iter().flatten() {
        let value = if let Some(f) = &item.field_ref {
            field_value(pod, &f.field_path)
                .ok_or_else(|| format!("unsupported fieldPath: {}", f.field_path))?
        } else if let Some(r) = &item.resource_field_ref {
            resource_value(pod, r, allocatable)?
        } else {
            continue;
        };
        out.insert(
            item.path.clone(),
            FileProjection {
                data: value.into_bytes(),
                mode: mode(item.mode, default_mode),
            },
        );
    }
    Ok(())
}

/// The files of `vol` if it is a `downwardAPI` or `projected` volume
/// (`None` for other volumes). `allocatable` is the node's, for resource
/// limits containers do not set.
pub fn payload(
    pod: &Pod,
    vol: &Volume,
    sources: &Sources,
    tokens: &Tokens,
    allocatable: &BTreeMap<String, String>,
) -> Option<Result<Payload, PodSpecError>> {
    let mount = |reason: String| PodSpecError::Mount {
        volume: vol.name.clone(),
        reason,
    };
    let mut out = Payload::new();
    if let Some(d) = &vol.downward_api {
        return Some(
            downward_items(pod, d.items.as_ref(), d.default_mode, allocatable, &mut out)
                .map(|()| out)
                .map_err(mount),
        );
    }
    let projected = vol.projected.as_ref()?;
    let default_mode = projected.default_mode;
    let keys: BTreeMap<usize, TokenKey> = token_keys(pod)
        .into_iter()
        .filter(|(v, _)| *v == vol.name)
        .map(|(_, k)| k)
        .enumerate()
        .collect();
    let mut token_index = 0;
    let result = (|| {
        for source in projected.sources.iter().flatten() {
            if let Some(cm) = &source.config_map {
                let optional = cm.optional == Some(true);
                let data = match sources.config_map_data(&cm.name) {
                    Some(d) => d,
                    None if optional => continue,
                    None => return Err(format!("configmap {:?} not found", cm.name)),
                };
                keyed(
                    &data,
                    cm.items.as_ref(),
                    default_mode,
                    optional,
                    &format!("configmap {:?}", cm.name),
                    &mut out,
                )?;
            } else if let Some(s) = &source.secret {
                let optional = s.optional == Some(true);
                let data = match sources.secret_data(&s.name) {
                    Some(d) => d,
                    None if optional => continue,
                    None => return Err(format!("secret {:?} not found", s.name)),
                };
                keyed(
                    &data,
                    s.items.as_ref(),
                    default_mode,
                    optional,
                    &format!("secret {:?}", s.name),
                    &mut out,
                )?;
            } else if let Some(d) = &source.downward_api {
                downward_items(pod, d.items.as_ref(), default_mode, allocatable, &mut out)?;
            } else if let Some(t) = &source.service_account_token {
                let key = keys.get(&token_index);
                token_index += 1;
                if let Some(token) = key.and_then(|k| tokens.get(k)) {
                    out.insert(
                        t.path.clone(),
                        FileProjection {
                            data: token.clone().into_bytes(),
                            mode: mode(None, default_mode),
                        },
                    );
                }
            }
        }
        Ok(out)
    })();
    Some(result.map_err(mount))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        ConfigMap, ConfigMapProjection, Container, DownwardAPIProjection, DownwardAPIVolumeSource,
        ObjectFieldSelector, PodSpec, ProjectedVolumeSource, ResourceRequirements,
        ServiceAccountTokenProjection, VolumeProjection,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn file(p: &Payload, path: &str) -> (String, u32) {
        p.get(path).map_or((String::new(), 0), |f| {
            (String::from_utf8_lossy(&f.data).into_owned(), f.mode)
        })
    }

    fn kube_api_access() -> Volume {
        Volume {
            name: "kube-api-access-x1x2x".into(),
            projected: Some(ProjectedVolumeSource {
                default_mode: Some(420),
                sources: Some(vec![
                    VolumeProjection {
                        service_account_token: Some(ServiceAccountTokenProjection {
                            path: "token".into(),
                            expiration_seconds: Some(3607),
                            audience: None,
                        }),
                        ..VolumeProjection::default()
                    },
                    VolumeProjection {
                        config_map: Some(ConfigMapProjection {
                            name: "kube-root-ca.crt".into(),
                            items: Some(vec![KeyToPath {
                                key: "ca.crt".into(),
                                path: "ca.crt".into(),
                                mode: None,
                            }]),
                            optional: None,
                        }),
                        ..VolumeProjection::default()
                    },
                    VolumeProjection {
                        downward_api: Some(DownwardAPIProjection {
                            items: Some(vec![DownwardAPIVolumeFile {
                                path: "namespace".into(),
                                field_ref: Some(ObjectFieldSelector {
                                    api_version: Some("v1".into()),
                                    field_path: "metadata.namespace".into(),
                                }),
                                ..DownwardAPIVolumeFile::default()
                            }]),
                        }),
                        ..VolumeProjection::default()
                    },
                ]),
            }),
            ..Volume::default()
        }
    }

    fn pod(volumes: Vec<Volume>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("team".into()),
                uid: Some("u1".into()),
                labels: Some(
                    [
                        ("app".to_owned(), "web".to_owned()),
                        ("a".to_owned(), "say \"hi\"".to_owned()),
                    ]
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                service_account_name: Some("robot".into()),
                containers: vec![Container {
                    name: "main".into(),
                    resources: Some(ResourceRequirements {
                        limits: Some([("memory".to_owned(), Quantity("1Gi".into()))].into()),
                        requests: Some([("cpu".to_owned(), Quantity("250m".into()))].into()),
                        ..ResourceRequirements::default()
                    }),
                    ..Container::default()
                }],
                volumes: Some(volumes),
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    fn sources() -> Sources {
        let mut s = Sources::default();
        s.config_maps.insert(
            "kube-root-ca.crt".into(),
            ConfigMap {
                data: Some([("ca.crt".to_owned(), "PEM".to_owned())].into()),
                ..ConfigMap::default()
            },
        );
        s
    }

    #[test]
    fn the_kube_api_access_volume() -> anyhow::Result<()> {
        let vol = kube_api_access();
        let p = pod(vec![vol.clone()]);
        let keys = token_keys(&p);
        assert_eq!(keys.len(), 1);
        let (name, key) = &keys[0];
        assert_eq!(name, "kube-api-access-x1x2x");
        assert_eq!(key.service_account, "robot");
        assert_eq!(key.pod_uid, "u1");
        assert_eq!(key.expiration_seconds, 3607);
        assert!(key.audiences.is_empty());
        let tokens: Tokens = [(key.clone(), "jwt".to_owned())].into();
        let out = payload(&p, &vol, &sources(), &tokens, &BTreeMap::new())
            .ok_or_else(|| anyhow::anyhow!("not projected"))??;
        assert_eq!(file(&out, "token"), ("jwt".into(), 0o644));
        assert_eq!(file(&out, "ca.crt"), ("PEM".into(), 0o644));
        assert_eq!(file(&out, "namespace"), ("team".into(), 0o644));
        // No token issued: the rest is still there.
        let out = payload(&p, &vol, &sources(), &Tokens::new(), &BTreeMap::new())
            .ok_or_else(|| anyhow::anyhow!("not projected"))??;
        assert_eq!(out.keys().collect::<Vec<_>>(), ["ca.crt", "namespace"]);
        // The CA ConfigMap missing is a mount error.
        match payload(&p, &vol, &Sources::default(), &tokens, &BTreeMap::new()) {
            Some(Err(PodSpecError::Mount { reason, .. })) => {
                assert_eq!(reason, "configmap \"kube-root-ca.crt\" not found");
            }
            other => anyhow::bail!("expected a mount error, got {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn downward_api_volume_fields_and_resources() -> anyhow::Result<()> {
        let item = |path: &str, field: &str| DownwardAPIVolumeFile {
            path: path.into(),
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: field.into(),
            }),
            ..DownwardAPIVolumeFile::default()
        };
        let resource = |path: &str, res: &str, divisor: Option<&str>| DownwardAPIVolumeFile {
            path: path.into(),
            resource_field_ref: Some(ResourceFieldSelector {
                container_name: Some("main".into()),
                resource: res.into(),
                divisor: divisor.map(|d| Quantity(d.into())),
            }),
            mode: Some(0o400),
            ..DownwardAPIVolumeFile::default()
        };
        let vol = Volume {
            name: "info".into(),
            downward_api: Some(DownwardAPIVolumeSource {
                default_mode: Some(0o640),
                items: Some(vec![
                    item("labels", "metadata.labels"),
                    item("name", "metadata.name"),
                    item("app", "metadata.labels['app']"),
                    resource("mem", "limits.memory", Some("1Mi")),
                    resource("cpu", "requests.cpu", Some("1")),
                    resource("cpu-limit", "limits.cpu", Some("1m")),
                ]),
            }),
            ..Volume::default()
        };
        let p = pod(vec![vol.clone()]);
        let allocatable: BTreeMap<String, String> = [("cpu".to_owned(), "2".to_owned())].into();
        let out = payload(&p, &vol, &Sources::default(), &Tokens::new(), &allocatable)
            .ok_or_else(|| anyhow::anyhow!("not downward API"))??;
        assert_eq!(
            file(&out, "labels"),
            ("a=\"say \\\"hi\\\"\"\napp=\"web\"".into(), 0o640)
        );
        assert_eq!(file(&out, "name"), ("web".into(), 0o640));
        assert_eq!(file(&out, "app"), ("web".into(), 0o640));
        assert_eq!(file(&out, "mem"), ("1024".into(), 0o400));
        // 250m rounds up to one CPU.
        assert_eq!(file(&out, "cpu"), ("1".into(), 0o400));
        // No limit: the node's allocatable.
        assert_eq!(file(&out, "cpu-limit"), ("2000".into(), 0o400));
        Ok(())
    }
}
