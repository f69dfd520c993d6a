//! The persistent volume binder (kube-controller-manager's
//! `persistentvolume-binder`, static binding only): a claim that names no
//! volume is bound to the smallest Available volume that satisfies it (same
//! storage class, every requested access mode, the volume mode, enough
//! capacity, the claim's selector), or to the volume pre-bound to it by
//! `claimRef`; a claim that names a volume (`spec.volumeName`) gets that
//! one. Binding writes both sides like Kubernetes: the volume's `claimRef`
//! and phase `Bound`, then the claim's `volumeName`, phase `Bound`, capacity
//! and access modes. A volume whose claim is gone becomes `Released` (its
//! data is kept: no reclaim); a bound claim whose volume is gone is `Lost`.
//! One worker, so two claims never race for one volume.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimStatus,
    PersistentVolumeStatus,
};
use skep_objects::Objects;
use skep_scheduler::resources::parse_units;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{ControllerError, is_not_found};
use crate::events::{EventRecorder, EventType, object_ref};
use crate::informer::{Informer, Informers, object_key, split_key};
use crate::util::{label_selector, selects};
use crate::{ControllerConfig, Reconciler, Requeue, WorkQueue, spawn_workers};

/// Set on a claim once the controller has finished binding it.
pub const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// Set on both sides when the controller (not the user) chose the pair.
pub const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";

const CLAIM: &str = "claim/";
const VOLUME: &str = "volume/";

/// Binds claims to volumes and keeps both phases current.
pub struct PersistentVolumeController {
    objects: Objects,
    claims: Arc<Informer>,
    volumes: Arc<Informer>,
    recorder: EventRecorder,
}

impl PersistentVolumeController {
    /// Registers with the claim and volume informers and starts one worker.
    pub fn start(
        objects: &Objects,
        informers: &Informers,
        _config: &ControllerConfig,
        shutdown: &CancellationToken,
    ) -> Vec<JoinHandle<()>> {
        let queue = WorkQueue::new();
        let claims = informers.of_type::<PersistentVolumeClaim>();
        let volumes = informers.of_type::<PersistentVolume>();
        {
            let queue = queue.clone();
            claims.add_handler(Box::new(move |old, new| {
                if let Some(obj) = new.or(old) {
                    queue.add(format!("{CLAIM}{}", object_key(obj)));
                }
                // A deleted claim releases its volume.
                if new.is_none()
                    && let Some(volume) =
                        old.and_then(|o| skep_api::object::get_str(o, &["spec", "volumeName"]))
                    && !volume.is_empty()
                {
                    queue.add(format!("{VOLUME}{volume}"));
                }
            }));
        }
        {
            let queue = queue.clone();
            let claims = Arc::clone(&claims);
            volumes.add_handler(Box::new(move |old, new| {
                let Some(obj) = new.or(old) else {
                    return;
                };
                queue.add(format!("{VOLUME}{}", object_key(obj)));
                // A volume that appears or changes may satisfy a waiting
                // claim; a volume that goes away loses its claim.
                for claim in claims.list() {
                    let unbound = skep_api::object::get_str(&claim, &["spec", "volumeName"])
                        .is_none_or(str::is_empty);
                    let names_it = skep_api::object::get_str(&claim, &["spec", "volumeName"])
                        == Some(skep_api::object::name(obj));
                    if unbound || names_it {
                        queue.add(format!("{CLAIM}{}", object_key(&claim)));
                    }
                }
            }));
        }
        let controller = Arc::new(Self {
            objects: objects.clone(),
            claims: Arc::clone(&claims),
            volumes: Arc::clone(&volumes),
            recorder: EventRecorder::new(objects.clone(), "persistentvolume-controller"),
        });
        // One worker: choosing a volume reads them all and must not race itself.
        spawn_workers(&controller, &queue, vec![claims, volumes], 1, shutdown)
    }

    fn claim(&self, key: &str) -> Option<PersistentVolumeClaim> {
        self.claims
            .get(key)
            .and_then(|v| serde_json::from_value(v).ok())
    }

    fn volume(&self, name: &str) -> Option<PersistentVolume> {
        self.volumes
            .get(name)
            .and_then(|v| serde_json::from_value(v).ok())
    }
}

/// The storage class of a claim or volume; unset is the empty class.
fn class(name: Option<&String>) -> &str {
    name.map_or("", String::as_str)
}

fn storage(
    map: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
) -> i64 {
    map.and_then(|m| m.get("storage"))
        .and_then(|q| parse_units(&q.0))
        .unwrap_or(0)
}

/// Whether `claim_ref` names `claim` (a ref without a UID is a pre-binding).
fn refers_to(claim_ref: &ObjectReference, claim: &PersistentVolumeClaim) -> bool {
    claim_ref.name == claim.metadata.name
        && claim_ref.namespace == claim.metadata.namespace
        && claim_ref
            .uid
            .as_ref()
            .is_none_or(|uid| Some(uid) == claim.metadata.uid.as_ref())
}

/// Whether `volume` can hold `claim`: class, volume mode, access modes,
/// capacity, selector. Says nothing about who holds the volume.
pub fn satisfies(volume: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let (Some(vs), Some(cs)) = (volume.spec.as_ref(), claim.spec.as_ref()) else {
        return false;
    };
    let mode = |m: Option<&String>| m.map_or("Filesystem", String::as_str).to_owned();
    let modes = vs.access_modes.as_deref().unwrap_or_default();
    let requested = cs.resources.as_ref().and_then(|r| r.requests.as_ref());
    let selector_ok = cs
        .selector
        .as_ref()
        .is_none_or(|sel| selects(&label_selector(Some(sel)), volume.metadata.labels.as_ref()));
    class(vs.storage_class_name.as_ref()) == class(cs.storage_class_name.as_ref())
        && mode(vs.volume_mode.as_ref()) == mode(cs.volume_mode.as_ref())
        && cs.access_modes.iter().flatten().all(|m| modes.contains(m))
        && storage(vs.capacity.as_ref()) >= storage(requested)
        && selector_ok
}

/// The volume `claim` should bind to: one pre-bound to it, else the
/// smallest free one that satisfies it (by name among equals, so the choice
/// is stable).
pub fn best_match<'a>(
    volumes: &'a [PersistentVolume],
    claim: &PersistentVolumeClaim,
) -> Option<&'a PersistentVolume> {
    let usable = |v: &&PersistentVolume| {
        v.metadata.deletion_timestamp.is_none()
            && !matches!(
                v.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Released" | "Failed")
            )
            && satisfies(v, claim)
    };
    let claim_ref = |v: &PersistentVolume| v.spec.as_ref().and_then(|s| s.claim_ref.clone());
    if let Some(pre) = volumes
        .iter()
        .filter(usable)
        .find(|v| claim_ref(v).is_some_and(|r| refers_to(&r, claim)))
    {
        return Some(pre);
    }
    volumes
        .iter()
        .filter(usable)
        .filter(|v| claim_ref(v).is_none())
        .min_by(|a, b| {
            let size =
                |v: &PersistentVolume| storage(v.spec.as_ref().and_then(|s| s.capacity.as_ref()));
            size(a)
                .cmp(&size(b))
                .then_with(|| a.metadata.name.cmp(&b.metadata.name))
        })
}

fn phase_of_volume(v: &PersistentVolume) -> Option<&str> {
    v.status.as_ref().and_then(|s| s.phase.as_deref())
}

impl PersistentVolumeController {
    /// Writes `phase` into the volume's status unless it is there already.
    async fn set_volume_phase(
        &self,
        volume: &PersistentVolume,
        phase: &str,
    ) -> Result<PersistentVolume, ControllerError> {
        if phase_of_volume(volume) == Some(phase) {
            return Ok(volume.clone());
        }
        let name = volume.metadata.name.clone().unwrap_or_default();
        let mut updated = volume.clone();
        updated.status = Some(PersistentVolumeStatus {
            phase: Some(phase.to_owned()),
            last_phase_transition_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                crate::util::now(),
            )),
            ..PersistentVolumeStatus::default()
        });
        let written = self
            .objects
            .update_typed(&updated, "status", Self::NAME)
            .await
            .map_err(|e| ControllerError::api("update status of volume", &name, e))?;
        tracing::info!(volume = %name, phase, "volume phase changed");
        Ok(written)
    }

    /// Points `volume` at `claim` and marks it Bound.
    async fn bind_volume(
        &self,
        volume: &PersistentVolume,
        claim: &PersistentVolumeClaim,
    ) -> Result<PersistentVolume, ControllerError> {
        let name = volume.metadata.name.clone().unwrap_or_default();
        let bound = volume
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .is_some_and(|r| refers_to(r, claim) && r.uid.is_some());
        let mut volume = volume.clone();
        if !bound {
            let spec = volume.spec.get_or_insert_default();
            let by_controller = spec.claim_ref.is_none();
            spec.claim_ref = Some(object_ref(claim));
            if by_controller {
                volume
                    .metadata
                    .annotations
                    .get_or_insert_default()
                    .insert(BOUND_BY_CONTROLLER.into(), "yes".into());
            }
            volume = self
                .objects
                .update_typed(&volume, "", Self::NAME)
                .await
                .map_err(|e| ControllerError::api("bind volume", &name, e))?;
        }
        self.set_volume_phase(&volume, "Bound").await
    }

    /// Points `claim` at `volume` and writes its Bound status.
    async fn bind_claim(
        &self,
        claim: &PersistentVolumeClaim,
        volume: &PersistentVolume,
        key: &str,
    ) -> Result<(), ControllerError> {
        let volume_name = volume.metadata.name.clone().unwrap_or_default();
        let mut claim = claim.clone();
        let spec = claim.spec.get_or_insert_default();
        let annotations = claim.metadata.annotations.get_or_insert_default();
        if spec.volume_name.as_deref() != Some(volume_name.as_str())
            || !annotations.contains_key(BIND_COMPLETED)
        {
            if spec.volume_name.is_none() {
                annotations.insert(BOUND_BY_CONTROLLER.into(), "yes".into());
            }
            spec.volume_name = Some(volume_name.clone());
            annotations.insert(BIND_COMPLETED.into(), "yes".into());
            claim = self
                .objects
                .update_typed(&claim, "", Self::NAME)
                .await
                .map_err(|e| ControllerError::api("bind claim", key, e))?;
        }
        let vs = volume.spec.clone().unwrap_or_default();
        let status = PersistentVolumeClaimStatus {
            phase: Some("Bound".into()),
            access_modes: vs.access_modes.clone(),
            capacity: vs.capacity.clone(),
            ..claim.status.clone().unwrap_or_default()
        };
        if claim.status.as_ref() != Some(&status) {
            claim.status = Some(status);
            self.objects
                .update_typed(&claim, "status", Self::NAME)
                .await
                .map_err(|e| ControllerError::api("update status of claim", key, e))?;
            tracing::info!(claim = %key, volume = %volume_name, "claim bound");
        }
        Ok(())
    }

    async fn set_claim_phase(
        &self,
        claim: &PersistentVolumeClaim,
        phase: &str,
        key: &str,
    ) -> Result<(), ControllerError> {
        if claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(phase) {
            return Ok(());
        }
        let mut claim = claim.clone();
        claim.status.get_or_insert_default().phase = Some(phase.to_owned());
        match self
            .objects
            .update_typed(&claim, "status", Self::NAME)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(ControllerError::api("update status of claim", key, e)),
        }
    }

    async fn reconcile_claim(&self, key: &str) -> Result<Requeue, ControllerError> {
        let Some(claim) = self.claim(key) else {
            return Ok(None);
        };
        if claim.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let named = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .filter(|v| !v.is_empty());
        let volume = if let Some(name) = named {
            let Some(volume) = self.volume(&name) else {
                // Bound once and the volume is gone: Lost. Pre-bound to a
                // volume that does not exist yet: wait for it.
                let completed = claim
                    .metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key(BIND_COMPLETED));
                let lost = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Lost");
                if completed && !lost {
                    self.recorder
                        .record(
                            &object_ref(&claim),
                            EventType::Warning,
                            "ClaimLost",
                            "Bound claim has lost its PersistentVolume. Data on the volume is lost!",
                        )
                        .await;
                    self.set_claim_phase(&claim, "Lost", key).await?;
                }
                return Ok(None);
            };
            let held_by_other = volume
                .spec
                .as_ref()
                .and_then(|s| s.claim_ref.as_ref())
                .is_some_and(|r| !refers_to(r, &claim));
            if held_by_other {
                self.recorder
                    .record(
                        &object_ref(&claim),
                        EventType::Warning,
                        "FailedBinding",
                        &format!("volume \"{name}\" already bound to a different claim."),
                    )
                    .await;
                return Ok(None);
            }
            volume
        } else {
            let volumes = self.volumes.list_typed::<PersistentVolume>("");
            let Some(volume) = best_match(&volumes, &claim).cloned() else {
                let class = class(
                    claim
                        .spec
                        .as_ref()
                        .and_then(|s| s.storage_class_name.as_ref()),
                );
                let message = if class.is_empty() {
                    "no persistent volumes available for this claim and no storage class is set"
                        .to_owned()
                } else {
                    format!("storageclass.storage.k8s.io \"{class}\" not found")
                };
                self.recorder
                    .record(
                        &object_ref(&claim),
                        if class.is_empty() {
                            EventType::Normal
                        } else {
                            EventType::Warning
                        },
                        if class.is_empty() {
                            "FailedBinding"
                        } else {
                            "ProvisioningFailed"
                        },
                        &message,
                    )
                    .await;
                self.set_claim_phase(&claim, "Pending", key).await?;
                return Ok(None);
            };
            volume
        };
        let volume = self.bind_volume(&volume, &claim).await?;
        self.bind_claim(&claim, &volume, key).await?;
        Ok(None)
    }

    async fn reconcile_volume(&self, name: &str) -> Result<Requeue, ControllerError> {
        let Some(volume) = self.volume(name) else {
            return Ok(None);
        };
        if volume.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let claim_ref = volume.spec.as_ref().and_then(|s| s.claim_ref.clone());
        let Some(claim_ref) = claim_ref else {
            self.set_volume_phase(&volume, "Available").await?;
            return Ok(None);
        };
        let claim_key = format!(
            "{}/{}",
            claim_ref.namespace.as_deref().unwrap_or_default(),
            claim_ref.name.as_deref().unwrap_or_default()
        );
        match self.claim(&claim_key) {
            Some(claim) if refers_to(&claim_ref, &claim) => {
                let points_here =
                    claim.spec.as_ref().and_then(|s| s.volume_name.as_deref()) == Some(name);
                if points_here && claim_ref.uid.is_some() {
                    self.set_volume_phase(&volume, "Bound").await?;
                } else if phase_of_volume(&volume) != Some("Available") {
                    // Pre-bound and waiting for its claim (reconciled too).
                    self.set_volume_phase(&volume, "Available").await?;
                }
            }
            _ if claim_ref.uid.is_none() => {
                // Pre-bound to a claim that does not exist yet.
                self.set_volume_phase(&volume, "Available").await?;
            }
            _ => {
                // Retain: the data stays; an admin clears claimRef to reuse it.
                self.set_volume_phase(&volume, "Released").await?;
            }
        }
        Ok(None)
    }
}

impl Reconciler for PersistentVolumeController {
    const NAME: &'static str = "persistentvolume-controller";

    #[tracing::instrument(skip_all, fields(key = %key))]
    async fn reconcile(&self, key: &str) -> Result<Requeue, ControllerError> {
        if let Some(claim) = key.strip_prefix(CLAIM) {
            let (ns, name) = split_key(claim);
            if ns.is_empty() || name.is_empty() {
                return Ok(None);
            }
            self.reconcile_claim(claim).await
        } else if let Some(volume) = key.strip_prefix(VOLUME) {
            self.reconcile_volume(volume).await
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
#[path = "persistentvolume_test.rs"]
mod tests;
