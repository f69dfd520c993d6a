//! The ServiceAccount admission plugin (kube-apiserver's
//! `plugin/pkg/admission/serviceaccount`), run on every pod create,
//! whoever creates the pod: a pod names the ServiceAccount `default` unless
//! it names one, that ServiceAccount must exist, and unless the pod (or
//! else the ServiceAccount) says `automountServiceAccountToken: false` the
//! pod gets the projected `kube-api-access-*` volume (a bound token, the
//! cluster CA, the namespace) mounted read-only at
//! [`DEFAULT_API_TOKEN_MOUNT_PATH`] in every container and init container
//! that does not mount something there already. A pod without
//! `imagePullSecrets` gets its ServiceAccount's. Mirror pods are not
//! changed, and may reference neither ServiceAccounts nor secrets.
#![expect(
    clippy::doc_markdown,
    reason = "Kubernetes kind names (ServiceAccount, ConfigMap, …) are plain words in these docs"
)]

use std::time::Duration;

use serde_json::{Map, Value, json};
use skep_api::status::StatusDetails;
use skep_api::{ApiError, admission, kinds, object};

use crate::Objects;

/// The ServiceAccount a pod that names none runs as.
pub const DEFAULT_SERVICE_ACCOUNT_NAME: &str = "default";

/// The prefix of the projected token volume's name.
pub const SERVICE_ACCOUNT_VOLUME_NAME: &str = "kube-api-access";

/// Where containers find the token, `ca.crt` and `namespace`.
pub const DEFAULT_API_TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The annotation marking a mirror pod (a static pod's copy in the API).
pub const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// The annotation asking that a pod use only its ServiceAccount's secrets.
pub const ENFORCE_MOUNTABLE_SECRETS_ANNOTATION: &str = "kubernetes.io/enforce-mountable-secrets";

/// The lifetime the kubelet asks for the automounted token: one hour and
/// seven seconds, which the token issuer recognises to extend it (the
/// stale-token tolerance, `WarnOnlyBoundTokenExpirationSeconds`).
pub const WARN_ONLY_BOUND_TOKEN_EXPIRATION_SECONDS: i64 = 3607;

/// The ConfigMap with the cluster CA every namespace has.
pub const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";

/// How many times a missing `default` ServiceAccount is looked up again
/// (the controller makes it just after the namespace).
const DEFAULT_LOOKUP_ATTEMPTS: usize = 10;

/// The projected volume source of the automounted token, as upstream's
/// `TokenVolumeSource` builds it (with the default mode defaulting would
/// have set, since admission runs after defaulting).
#[must_use]
pub fn token_volume_source() -> Value {
    json!({
        "sources": [
            {"serviceAccountToken": {
                "path": "token",
                "expirationSeconds": WARN_ONLY_BOUND_TOKEN_EXPIRATION_SECONDS,
            }},
            {"configMap": {
                "name": ROOT_CA_CONFIG_MAP,
                "items": [{"key": "ca.crt", "path": "ca.crt"}],
            }},
            {"downwardAPI": {
                "items": [{
                    "path": "namespace",
                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                }],
            }},
        ],
        "defaultMode": 420,
    })
}

/// A 403 about pod `name`, as `admission.NewForbidden` words it.
fn forbidden(name: &str, why: &str) -> ApiError {
    let mut err = ApiError::forbidden(format!("pods \"{name}\" is forbidden: {why}"));
    err.details = Some(Box::new(StatusDetails {
        name: name.to_owned(),
        kind: "pods".to_owned(),
        ..StatusDetails::default()
    }));
    err
}

/// The name admission errors report: the pod's name, its `generateName`
/// when it has one, else `Unknown` (upstream's `extractResourceName`).
fn reported_name(pod: &Value) -> String {
    let generate = object::get_str(pod, &["metadata", "generateName"]).unwrap_or("");
    if !generate.is_empty() {
        return generate.to_owned();
    }
    let name = object::name(pod);
    if name.is_empty() {
        "Unknown".to_owned()
    } else {
        name.to_owned()
    }
}

fn is_mirror(pod: &Value) -> bool {
    object::get(pod, &["metadata", "annotations", MIRROR_POD_ANNOTATION]).is_some()
}

fn spec(pod: &Value) -> Option<&Map<String, Value>> {
    pod.get("spec").and_then(Value::as_object)
}

fn containers<'a>(spec: &'a Map<String, Value>, field: &str) -> impl Iterator<Item = &'a Value> {
    spec.get(field)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// Whether the pod names a secret anywhere (upstream's
/// `VisitPodSecretNames`: pull secrets, secret and projected volumes,
/// volume plugins' secret refs, env and envFrom of every container).
fn references_secrets(spec: &Map<String, Value>) -> bool {
    let pull = spec
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    let volumes = containers(spec, "volumes").any(|v| {
        v.get("secret").is_some()
            || object::array(v, &["projected", "sources"])
                .iter()
                .any(|s| s.get("secret").is_some())
            || v.as_object().is_some_and(|o| {
                o.values().any(|source| {
                    source.get("secretRef").is_some()
                        || source.get("nodePublishSecretRef").is_some()
                        || source.get("secretName").is_some()
                })
            })
    });
    let env = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|f| containers(spec, f))
        .any(|c| {
            object::array(c, &["env"])
                .iter()
                .any(|e| object::get(e, &["valueFrom", "secretKeyRef"]).is_some())
                || object::array(c, &["envFrom"])
                    .iter()
                    .any(|e| e.get("secretRef").is_some())
        });
    pull || volumes || env
}

/// The ServiceAccount plugin's `Validate` for a mirror pod.
fn validate_mirror(pod: &Value) -> Result<(), ApiError> {
    let Some(spec) = spec(pod) else {
        return Ok(());
    };
    let name = reported_name(pod);
    let sa = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !sa.is_empty() {
        return Err(forbidden(
            &name,
            "a mirror pod may not reference service accounts",
        ));
    }
    if references_secrets(spec) {
        return Err(forbidden(&name, "a mirror pod may not reference secrets"));
    }
    let token_projection = containers(spec, "volumes").any(|v| {
        object::array(v, &["projected", "sources"])
            .iter()
            .any(|s| s.get("serviceAccountToken").is_some())
    });
    if token_projection {
        return Err(forbidden(
            &name,
            "a mirror pod may not use ServiceAccountToken volume projections",
        ));
    }
    Ok(())
}

/// Whether the token is mounted: the pod's preference wins, then the
/// ServiceAccount's, else yes.
fn should_automount(service_account: &Value, pod: &Value) -> bool {
    object::get(pod, &["spec", "automountServiceAccountToken"])
        .and_then(Value::as_bool)
        .or_else(|| {
            service_account
                .get("automountServiceAccountToken")?
                .as_bool()
        })
        .unwrap_or(true)
}

/// Adds the token volume and its mounts, as upstream's
/// `mountServiceAccountToken` with bound token volumes: a volume already
/// named `kube-api-access-*` is used as it is; a container mounting
/// something at the token path already is left alone; the volume is added
/// only when some container mounts it.
fn mount_service_account_token(pod: &mut Value) {
    let volumes = object::array(pod, &["spec", "volumes"]);
    let prefix = format!("{SERVICE_ACCOUNT_VOLUME_NAME}-");
    let existing = volumes
        .iter()
        .filter_map(|v| v.get("name").and_then(Value::as_str))
        .find(|n| n.starts_with(&prefix))
        .map(str::to_owned);
    let has_volume = existing.is_some();
    let volume_name = existing.unwrap_or_else(|| admission::generate_name(&prefix));
    let mount = json!({
        "name": volume_name,
        "readOnly": true,
        "mountPath": DEFAULT_API_TOKEN_MOUNT_PATH,
    });
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let mut needs_volume = false;
    for field in ["initContainers", "containers"] {
        let Some(list) = spec.get_mut(field).and_then(Value::as_array_mut) else {
            continue;
        };
        for container in list {
            let mounted = object::array(container, &["volumeMounts"]).iter().any(|m| {
                m.get("mountPath").and_then(Value::as_str) == Some(DEFAULT_API_TOKEN_MOUNT_PATH)
            });
            if mounted {
                continue;
            }
            let Some(c) = container.as_object_mut() else {
                continue;
            };
            let mounts = c.entry("volumeMounts").or_insert_with(|| json!([]));
            if let Some(mounts) = mounts.as_array_mut() {
                mounts.push(mount.clone());
                needs_volume = true;
            }
        }
    }
    if needs_volume && !has_volume {
        let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
        if let Some(volumes) = volumes.as_array_mut() {
            volumes.push(json!({"name": volume_name, "projected": token_volume_source()}));
        }
    }
}

/// Whether the ServiceAccount restricts pods to the secrets it lists.
fn enforce_mountable_secrets(service_account: &Value) -> bool {
    object::get_str(
        service_account,
        &[
            "metadata",
            "annotations",
            ENFORCE_MOUNTABLE_SECRETS_ANNOTATION,
        ],
    )
    .is_some_and(|v| matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True"))
}

/// Upstream's `limitSecretReferences`: the pod uses only secrets (and pull
/// secrets) its ServiceAccount lists.
fn limit_secret_references(service_account: &Value, pod: &Value) -> Result<(), String> {
    let sa_name = object::name(service_account);
    let names = |field: &str| -> Vec<String> {
        object::array(service_account, &[field])
            .iter()
            .filter_map(|r| r.get("name").and_then(Value::as_str))
            .map(str::to_owned)
            .collect()
    };
    let mountable = names("secrets");
    let Some(spec) = spec(pod) else {
        return Ok(());
    };
    for volume in containers(spec, "volumes") {
        let Some(secret) = volume.get("secret") else {
            continue;
        };
        let secret_name = secret
            .get("secretName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !mountable.iter().any(|m| m == secret_name) {
            return Err(format!(
                "volume with secret.secretName=\"{secret_name}\" is not allowed because service account {sa_name} does not reference that secret"
            ));
        }
    }
    for (field, what) in [
        ("initContainers", "init container"),
        ("containers", "container"),
        ("ephemeralContainers", "ephemeral container"),
    ] {
        for c in containers(spec, field) {
            for env in object::array(c, &["env"]) {
                let Some(secret) = object::get_str(env, &["valueFrom", "secretKeyRef", "name"])
                else {
                    continue;
                };
                if !mountable.iter().any(|m| m == secret) {
                    return Err(format!(
                        "{what} {} with envVar {} referencing secret.secretName=\"{secret}\" is not allowed because service account {sa_name} does not reference that secret",
                        object::get_str(c, &["name"]).unwrap_or(""),
                        object::get_str(env, &["name"]).unwrap_or(""),
                    ));
                }
            }
            for from in object::array(c, &["envFrom"]) {
                let Some(secret) = object::get_str(from, &["secretRef", "name"]) else {
                    continue;
                };
                if !mountable.iter().any(|m| m == secret) {
                    return Err(format!(
                        "{what} {} with envFrom referencing secret.secretName=\"{secret}\" is not allowed because service account {sa_name} does not reference that secret",
                        object::get_str(c, &["name"]).unwrap_or(""),
                    ));
                }
            }
        }
    }
    let pull = names("imagePullSecrets");
    for (i, r) in object::array(pod, &["spec", "imagePullSecrets"])
        .iter()
        .enumerate()
    {
        let name = r.get("name").and_then(Value::as_str).unwrap_or("");
        if !pull.iter().any(|p| p == name) {
            return Err(format!(
                "imagePullSecrets[{i}].name=\"{name}\" is not allowed because service account {sa_name} does not reference that imagePullSecret"
            ));
        }
    }
    Ok(())
}

impl Objects {
    /// The ServiceAccount `namespace/name`, looked up again a few times
    /// when it is the `default` one (its controller may not have made it
    /// yet); `None` if it does not exist.
    async fn service_account(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, ApiError> {
        let attempts = if name == DEFAULT_SERVICE_ACCOUNT_NAME {
            DEFAULT_LOOKUP_ATTEMPTS
        } else {
            1
        };
        // 100–200 ms between attempts, as upstream.
        let jitter = u64::from(uuid_byte());
        let interval = Duration::from_millis(100 + jitter * 100 / 255);
        for attempt in 0..attempts {
            if attempt != 0 {
                tokio::time::sleep(interval).await;
            }
            if let Some(sa) = self
                .try_get(&kinds::SERVICE_ACCOUNT, namespace, name)
                .await?
            {
                return Ok(Some(sa));
            }
        }
        Ok(None)
    }

    /// Runs the ServiceAccount admission plugin on a pod about to be
    /// created in `namespace` (the admitted object, changed in place).
    pub(crate) async fn admit_service_account(
        &self,
        namespace: &str,
        pod: &mut Value,
    ) -> Result<(), ApiError> {
        if is_mirror(pod) {
            return validate_mirror(pod);
        }
        let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
            return Ok(());
        };
        let named = spec
            .get("serviceAccountName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .map(str::to_owned);
        let sa_name = named.unwrap_or_else(|| {
            spec.insert(
                "serviceAccountName".into(),
                DEFAULT_SERVICE_ACCOUNT_NAME.into(),
            );
            DEFAULT_SERVICE_ACCOUNT_NAME.to_owned()
        });
        let Some(service_account) = self.service_account(namespace, &sa_name).await? else {
            return Err(forbidden(
                &reported_name(pod),
                &format!(
                    "error looking up service account {namespace}/{sa_name}: serviceaccount \"{sa_name}\" not found"
                ),
            ));
        };
        if should_automount(&service_account, pod) {
            mount_service_account_token(pod);
        }
        let no_pull_secrets = object::array(pod, &["spec", "imagePullSecrets"]).is_empty();
        let sa_pull = object::array(&service_account, &["imagePullSecrets"]);
        if no_pull_secrets
            && !sa_pull.is_empty()
            && let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut)
        {
            let refs: Vec<Value> = sa_pull
                .iter()
                .map(|r| json!({"name": r.get("name").cloned().unwrap_or_default()}))
                .collect();
            spec.insert("imagePullSecrets".into(), Value::Array(refs));
        }
        if enforce_mountable_secrets(&service_account)
            && let Err(why) = limit_secret_references(&service_account, pod)
        {
            return Err(forbidden(&reported_name(pod), &why));
        }
        Ok(())
    }
}

/// One random byte (jitter), from a fresh UUID as the rest of admission
/// draws its randomness.
fn uuid_byte() -> u8 {
    admission::new_uid().bytes().next_back().unwrap_or(b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "team"},
            "spec": {
                "serviceAccountName": "default",
                "initContainers": [{"name": "init"}],
                "containers": [
                    {"name": "a"},
                    {"name": "b", "volumeMounts": [
                        {"name": "own", "mountPath": DEFAULT_API_TOKEN_MOUNT_PATH}
                    ]},
                ],
                "volumes": [{"name": "own", "emptyDir": {}}],
            },
        })
    }

    #[test]
    fn the_token_volume_is_added_and_mounted_where_nothing_is() {
        let mut p = pod();
        mount_service_account_token(&mut p);
        let volumes = object::array(&p, &["spec", "volumes"]);
        assert_eq!(volumes.len(), 2);
        let name = volumes[1]["name"].as_str().unwrap_or_default().to_owned();
        assert!(name.starts_with("kube-api-access-"), "{name}");
        assert_eq!(name.len(), "kube-api-access-".len() + 5);
        assert_eq!(volumes[1]["projected"], token_volume_source());
        assert_eq!(
            volumes[1]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"],
            3607
        );
        let want =
            json!({"name": name, "readOnly": true, "mountPath": DEFAULT_API_TOKEN_MOUNT_PATH});
        assert_eq!(
            p["spec"]["initContainers"][0]["volumeMounts"],
            json!([want])
        );
        assert_eq!(p["spec"]["containers"][0]["volumeMounts"], json!([want]));
        // The container with its own mount there keeps it alone.
        assert_eq!(
            p["spec"]["containers"][1]["volumeMounts"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );
        assert_eq!(p["spec"]["containers"][1]["volumeMounts"][0]["name"], "own");
    }

    #[test]
    fn an_existing_token_volume_is_reused() {
        let mut p = pod();
        p["spec"]["volumes"] = json!([{"name": "kube-api-access-abcde", "emptyDir": {}}]);
        mount_service_account_token(&mut p);
        assert_eq!(object::array(&p, &["spec", "volumes"]).len(), 1);
        assert_eq!(
            p["spec"]["containers"][0]["volumeMounts"][0]["name"],
            "kube-api-access-abcde"
        );
    }

    #[test]
    fn no_volume_when_every_container_mounts_the_path() {
        let mut p = pod();
        p["spec"]["initContainers"] = json!([]);
        p["spec"]["containers"] = json!([{"name": "b", "volumeMounts": [
            {"name": "own", "mountPath": DEFAULT_API_TOKEN_MOUNT_PATH}
        ]}]);
        mount_service_account_token(&mut p);
        assert_eq!(object::array(&p, &["spec", "volumes"]).len(), 1);
    }

    #[test]
    fn the_pod_wins_over_the_service_account() {
        let sa_off = json!({"automountServiceAccountToken": false});
        let sa_on = json!({"automountServiceAccountToken": true});
        let mut p = pod();
        assert!(should_automount(&json!({}), &p));
        assert!(!should_automount(&sa_off, &p));
        p["spec"]["automountServiceAccountToken"] = json!(true);
        assert!(should_automount(&sa_off, &p));
        p["spec"]["automountServiceAccountToken"] = json!(false);
        assert!(!should_automount(&sa_on, &p));
    }

    #[test]
    fn mirror_pods_reference_no_accounts_or_secrets() {
        let mirror = |spec: Value| json!({"metadata": {"name": "m", "annotations": {MIRROR_POD_ANNOTATION: "x"}}, "spec": spec});
        assert!(validate_mirror(&mirror(json!({"containers": [{"name": "c"}]}))).is_ok());
        let err = validate_mirror(&mirror(json!({"serviceAccountName": "x"}))).err();
        assert_eq!(
            err.map(|e| e.message),
            Some("pods \"m\" is forbidden: a mirror pod may not reference service accounts".into())
        );
        let err = validate_mirror(&mirror(
            json!({"volumes": [{"name": "s", "secret": {"secretName": "x"}}]}),
        ))
        .err();
        assert_eq!(
            err.map(|e| e.message),
            Some("pods \"m\" is forbidden: a mirror pod may not reference secrets".into())
        );
    }

    #[test]
    fn mountable_secrets_are_enforced_when_asked() {
        let sa = json!({
            "metadata": {"name": "builder", "annotations": {ENFORCE_MOUNTABLE_SECRETS_ANNOTATION: "true"}},
            "secrets": [{"name": "ok"}],
        });
        assert!(enforce_mountable_secrets(&sa));
        let mut p = pod();
        p["spec"]["volumes"] = json!([{"name": "s", "secret": {"secretName": "ok"}}]);
        assert!(limit_secret_references(&sa, &p).is_ok());
        p["spec"]["volumes"] = json!([{"name": "s", "secret": {"secretName": "nope"}}]);
        assert_eq!(
            limit_secret_references(&sa, &p).err().as_deref(),
            Some(
                "volume with secret.secretName=\"nope\" is not allowed because service account builder does not reference that secret"
            )
        );
    }
}
