//! Endpoints and EndpointSlices following pod readiness and named ports.

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Endpoints, Pod, PodSpec, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use skep_api::delete::DeleteOptions;

use crate::ControllerConfig;
use crate::endpoints::{MANAGED_BY, MANAGED_BY_LABEL, SERVICE_NAME_LABEL};
use crate::testing::{CONVERGE, Harness, Result, labels, wait_for};

fn pod(name: &str, http_port: i32, node: Option<&str>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("team".into()),
            labels: Some(labels(&[("app", "web")])),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: node.map(str::to_owned),
            containers: vec![Container {
                name: "main".into(),
                image: Some("busybox".into()),
                ports: Some(vec![ContainerPort {
                    name: Some("http".into()),
                    container_port: http_port,
                    ..ContainerPort::default()
                }]),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: None,
    }
}

async fn slices(h: &Harness) -> Result<Vec<EndpointSlice>> {
    Ok(h.objects
        .list_typed::<EndpointSlice>("team", &format!("{SERVICE_NAME_LABEL}=web"))
        .await?
        .0)
}

#[tokio::test]
#[expect(clippy::too_many_lines, reason = "one scenario, step by step")]
async fn endpoints_and_slices_track_readiness_named_ports_and_termination() -> Result<()> {
    let h = Harness::start(ControllerConfig::default()).await?;
    let svc = Service {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("team".into()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(labels(&[("app", "web")])),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::String("http".into())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    };
    h.objects.create_typed(&svc, "test").await?;
    let pod_a = h
        .objects
        .create_typed(&pod("a", 8080, Some("node-1")), "test")
        .await?;
    let pod_b = h
        .objects
        .create_typed(&pod("b", 9090, Some("node-2")), "test")
        .await?;
    // A pod without an IP is not an endpoint at all.
    h.objects
        .create_typed(&pod("pending", 8080, None), "test")
        .await?;
    h.mark_ready(&pod_a, "10.0.0.1").await?;
    let pod_b = h.mark_running(&pod_b, "10.0.0.2").await?;

    let ep = wait_for("endpoints", CONVERGE, || async {
        let ep = h.objects.try_get_typed::<Endpoints>("team", "web").await?;
        Ok(ep.filter(|e| e.subsets.as_ref().is_some_and(|s| s.len() == 2)))
    })
    .await?;
    let subsets = ep.subsets.unwrap_or_default();
    let with_port = |port: i32| {
        subsets
            .iter()
            .find(|s| s.ports.as_ref().is_some_and(|p| p[0].port == port))
            .cloned()
            .ok_or(format!("no subset for port {port}"))
    };
    let s8080 = with_port(8080)?;
    let ready = s8080.addresses.unwrap_or_default();
    assert_eq!(ready.len(), 1);
    assert_eq!(ready[0].ip, "10.0.0.1");
    assert_eq!(ready[0].node_name.as_deref(), Some("node-1"));
    assert_eq!(
        ready[0].target_ref.as_ref().and_then(|r| r.name.as_deref()),
        Some("a")
    );
    let s9090 = with_port(9090)?;
    assert!(s9090.addresses.is_none());
    assert_eq!(
        s9090.not_ready_addresses.unwrap_or_default()[0].ip,
        "10.0.0.2"
    );

    let all = wait_for("two slices", CONVERGE, || async {
        // Until both pods have IPs there may be an empty slice instead.
        let s = slices(&h).await?;
        Ok((s.len() == 2 && s.iter().all(|s| s.endpoints.len() == 1)).then_some(s))
    })
    .await?;
    for slice in &all {
        let l = slice.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            l.get(MANAGED_BY_LABEL).map(String::as_str),
            Some(MANAGED_BY)
        );
        assert_eq!(slice.address_type, "IPv4");
        assert_eq!(
            slice
                .metadata
                .owner_references
                .as_ref()
                .map(|o| o[0].kind.as_str()),
            Some("Service")
        );
        let e = &slice.endpoints[0];
        let c = e.conditions.clone().unwrap_or_default();
        if e.addresses[0] == "10.0.0.1" {
            assert_eq!(
                (c.ready, c.serving, c.terminating),
                (Some(true), Some(true), Some(false))
            );
            assert_eq!(slice.ports.as_ref().and_then(|p| p[0].port), Some(8080));
        } else {
            assert_eq!(
                (c.ready, c.serving, c.terminating),
                (Some(false), Some(false), Some(false))
            );
            assert_eq!(slice.ports.as_ref().and_then(|p| p[0].port), Some(9090));
        }
    }

    // b becomes ready.
    h.mark_ready(&pod_b, "10.0.0.2").await?;
    wait_for("b ready", CONVERGE, || async {
        let ep: Endpoints = h.objects.get_typed("team", "web").await?;
        let ready: usize = ep
            .subsets
            .unwrap_or_default()
            .iter()
            .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
            .sum();
        Ok((ready == 2).then_some(()))
    })
    .await?;

    // a is deleted: bound, so it terminates gracefully; it leaves the
    // Endpoints and stays in its slice as terminating.
    h.objects
        .delete_typed::<Pod>("team", "a", &DeleteOptions::default())
        .await?;
    wait_for("a terminating", CONVERGE, || async {
        let ep: Endpoints = h.objects.get_typed("team", "web").await?;
        let ips: Vec<String> = ep
            .subsets
            .unwrap_or_default()
            .iter()
            .flat_map(|s| s.addresses.clone().unwrap_or_default())
            .map(|a| a.ip)
            .collect();
        let terminating = slices(&h)
            .await?
            .iter()
            .flat_map(|s| s.endpoints.clone())
            .any(|e| {
                e.addresses[0] == "10.0.0.1"
                    && e.conditions
                        .is_some_and(|c| c.terminating == Some(true) && c.ready == Some(false))
            });
        Ok((ips == ["10.0.0.2"] && terminating).then_some(()))
    })
    .await?;

    // The Service goes: so do its Endpoints and slices.
    h.objects
        .delete_typed::<Service>("team", "web", &DeleteOptions::default())
        .await?;
    wait_for("cleanup", CONVERGE, || async {
        let ep = h.objects.try_get_typed::<Endpoints>("team", "web").await?;
        Ok((ep.is_none() && slices(&h).await?.is_empty()).then_some(()))
    })
    .await?;
    Ok(())
}
