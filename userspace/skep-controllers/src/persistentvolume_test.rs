//! The persistent volume binder: matching rules, and binding on a real store.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use skep_api::delete::DeleteOptions;

use super::*;
use crate::testing::{CONVERGE, Harness, Result, wait_for};

fn quantity(q: &str) -> BTreeMap<String, Quantity> {
    [("storage".to_owned(), Quantity(q.into()))].into()
}

fn volume(name: &str, size: &str, modes: &[&str], class: Option<&str>) -> PersistentVolume {
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(quantity(size)),
            access_modes: Some(modes.iter().map(|m| (*m).to_owned()).collect()),
            storage_class_name: class.map(str::to_owned),
            host_path: Some(HostPathVolumeSource {
                path: format!("/tmp/{name}"),
                type_: None,
            }),
            ..PersistentVolumeSpec::default()
        }),
        status: None,
    }
}

fn claim(name: &str, size: &str, modes: &[&str], class: Option<&str>) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("team".into()),
            uid: Some(format!("uid-{name}")),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(modes.iter().map(|m| (*m).to_owned()).collect()),
            storage_class_name: class.map(str::to_owned),
            resources: Some(VolumeResourceRequirements {
                requests: Some(quantity(size)),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

#[test]
fn smallest_fitting_volume_of_the_same_class_wins() {
    let rwo = &["ReadWriteOnce"];
    let volumes = vec![
        volume("big", "10Gi", rwo, None),
        volume("small", "1Gi", rwo, None),
        volume("tiny", "100Mi", rwo, None),
        volume("fast", "1Gi", rwo, Some("fast")),
        volume("rox", "1Gi", &["ReadOnlyMany"], None),
    ];
    let name = |v: Option<&PersistentVolume>| v.and_then(|v| v.metadata.name.clone());
    let c = claim("data", "500Mi", rwo, None);
    assert_eq!(name(best_match(&volumes, &c)).as_deref(), Some("small"));
    let c = claim("data", "500Mi", rwo, Some("fast"));
    assert_eq!(name(best_match(&volumes, &c)).as_deref(), Some("fast"));
    let c = claim("data", "500Mi", &["ReadOnlyMany"], None);
    assert_eq!(name(best_match(&volumes, &c)).as_deref(), Some("rox"));
    let c = claim("data", "20Gi", rwo, None);
    assert_eq!(name(best_match(&volumes, &c)), None);
    // A volume pre-bound to the claim wins over a smaller free one; one
    // bound to another claim is never chosen.
    let mut volumes = volumes;
    let c = claim("data", "50Mi", rwo, None);
    let mut pre = c.clone();
    pre.metadata.uid = None;
    if let Some(s) = volumes[0].spec.as_mut() {
        s.claim_ref = Some(object_ref(&pre));
    }
    assert_eq!(name(best_match(&volumes, &c)).as_deref(), Some("big"));
    let other = claim("other", "50Mi", rwo, None);
    if let Some(s) = volumes[2].spec.as_mut() {
        s.claim_ref = Some(object_ref(&other));
    }
    let c2 = claim("data2", "50Mi", rwo, None);
    assert_eq!(name(best_match(&volumes, &c2)).as_deref(), Some("small"));
}

async fn phases(h: &Harness, claim: &str, volume: &str) -> Result<(String, String)> {
    let c = h
        .objects
        .get_typed::<PersistentVolumeClaim>("team", claim)
        .await?;
    let v = h.objects.get_typed::<PersistentVolume>("", volume).await?;
    Ok((
        c.status.and_then(|s| s.phase).unwrap_or_default(),
        v.status.and_then(|s| s.phase).unwrap_or_default(),
    ))
}

#[tokio::test]
async fn claims_bind_wait_for_a_volume_and_release_it() -> Result<()> {
    let h = Harness::start(ControllerConfig::default()).await?;
    let rwo = &["ReadWriteOnce"];
    h.objects
        .create_typed(&volume("pv-a", "1Gi", rwo, None), "test")
        .await?;
    let mut c = claim("data", "500Mi", rwo, None);
    c.metadata.uid = None;
    h.objects.create_typed(&c, "test").await?;
    wait_for("claim and volume Bound", CONVERGE, || async {
        Ok((phases(&h, "data", "pv-a").await? == ("Bound".into(), "Bound".into())).then_some(()))
    })
    .await?;
    let c = h
        .objects
        .get_typed::<PersistentVolumeClaim>("team", "data")
        .await?;
    let v = h.objects.get_typed::<PersistentVolume>("", "pv-a").await?;
    assert_eq!(
        c.spec.as_ref().and_then(|s| s.volume_name.as_deref()),
        Some("pv-a")
    );
    let claim_ref = v.spec.and_then(|s| s.claim_ref).unwrap_or_default();
    assert_eq!(claim_ref.name.as_deref(), Some("data"));
    assert_eq!(claim_ref.uid, c.metadata.uid);
    let status = c.status.unwrap_or_default();
    assert_eq!(status.capacity, Some(quantity("1Gi")));

    // No volume fits: the claim waits, Pending, until one appears.
    let mut big = claim("big", "5Gi", rwo, None);
    big.metadata.uid = None;
    h.objects.create_typed(&big, "test").await?;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let waiting = h
        .objects
        .get_typed::<PersistentVolumeClaim>("team", "big")
        .await?;
    assert_eq!(
        waiting.status.and_then(|s| s.phase).as_deref(),
        Some("Pending")
    );
    h.objects
        .create_typed(&volume("pv-b", "8Gi", rwo, None), "test")
        .await?;
    wait_for("late volume bound", CONVERGE, || async {
        Ok((phases(&h, "big", "pv-b").await? == ("Bound".into(), "Bound".into())).then_some(()))
    })
    .await?;

    // Deleting the claim releases (and keeps) its volume.
    h.objects
        .delete_typed::<PersistentVolumeClaim>("team", "data", &DeleteOptions::default())
        .await?;
    wait_for("volume Released", CONVERGE, || async {
        let v = h.objects.get_typed::<PersistentVolume>("", "pv-a").await?;
        Ok((v.status.and_then(|s| s.phase).as_deref() == Some("Released")).then_some(()))
    })
    .await?;
    Ok(())
}
