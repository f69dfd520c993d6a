//! The agent pulling a Deployment's image from a local registry (Debian's
//! `docker-registry` on 127.0.0.1) with `imagePullPolicy: Always`, and a
//! failing liveness probe restarting a container, all seen through kubectl.

use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use skep_e2e::agent::start_single_node;
use skep_e2e::cluster::Server;
use skep_e2e::registry::Registry;
use skep_e2e::{require_root, unique_name};
use skep_image::BuiltImage;

/// Pushes `image` to `reference` on an anonymous plain-HTTP registry.
fn push(image: &BuiltImage, reference: &str) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = oci_client::Client::new(ClientConfig {
            protocol: ClientProtocol::Http,
            ..ClientConfig::default()
        });
        let r: oci_client::Reference = reference.parse()?;
        client
            .auth(
                &r,
                &RegistryAuth::Anonymous,
                oci_client::RegistryOperation::Push,
            )
            .await?;
        client
            .push_blob(&r, image.config.clone(), &image.config_digest.to_string())
            .await?;
        for (digest, _, data) in &image.layers {
            client
                .push_blob(&r, data.clone(), &digest.to_string())
                .await?;
        }
        client
            .push_manifest_raw(
                &r,
                image.manifest.clone(),
                skep_image::spec::MEDIA_TYPE_OCI_MANIFEST.parse()?,
            )
            .await?;
        anyhow::Ok(())
    })
}

fn manifests(ns: &str, image: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {ns}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: httpd
        image: {image}
        imagePullPolicy: Always
        command: [httpd, -f, -p, "8080", -h, /etc]
        readinessProbe:
          tcpSocket: {{port: 8080}}
          periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata: {{name: live, namespace: {ns}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {image}
    command: [sh, -c, "touch /tmp/healthy; sleep 2; rm /tmp/healthy; sleep 3600"]
    livenessProbe:
      exec: {{command: [test, -f, /tmp/healthy]}}
      periodSeconds: 1
      failureThreshold: 1
"#
    )
}

fn jsonpath(server: &Server, ns: &str, what: &str, path: &str) -> anyhow::Result<String> {
    server.kubectl_ok(&["get", what, "-n", ns, "-o", &format!("jsonpath={path}")])
}

#[test]
fn agent_pulls_from_a_local_registry_and_liveness_failures_restart() -> anyhow::Result<()> {
    require_root!();
    let dir = tempfile::tempdir()?;
    let node = unique_name("rg");
    let ns = unique_name("ns");
    let registry = Registry::start(false)?;
    let image = format!("{}/e2e/busybox:v1", registry.addr);
    push(
        &skep_image::busybox_image(&image, &["sh"])?.build()?,
        &image,
    )?;

    let (server, agent) = start_single_node(dir.path(), &node, false)?;
    let log = || format!("agent log:\n{}", agent.log_tail());
    server.kubectl_ok_with(&["apply", "-f", "-"], &manifests(&ns, &image))?;

    // Pulled from the registry (the node's store was empty), Running, with
    // IPs whose httpd answers from the node.
    server.kubectl_ok(&[
        "rollout",
        "status",
        "deployment/web",
        "-n",
        &ns,
        "--timeout=90s",
    ])?;
    let ips = jsonpath(
        &server,
        &ns,
        "pods",
        "{.items[?(@.metadata.labels.app==\"web\")].status.podIP}",
    )?;
    let ips: Vec<&str> = ips.split_whitespace().collect();
    assert_eq!(ips.len(), 2, "{ips:?}");
    for ip in ips {
        let out = crate::agent::http_get(ip, "/hostname")?;
        assert!(
            out.starts_with("HTTP/1.1 200") || out.starts_with("HTTP/1.0 200"),
            "{out}"
        );
    }
    let events = server.kubectl_ok(&["get", "events", "-n", &ns])?;
    assert!(
        events.contains("Pulled") || events.contains("Pulling"),
        "{events}"
    );

    // The liveness probe fails once /tmp/healthy is gone: the container is
    // killed and restarted, and kubectl shows the restarts and why.
    skep_e2e::wait::until(
        "liveness restarts",
        Duration::from_mins(1),
        || {
            let restarts = jsonpath(
                &server,
                &ns,
                "pod/live",
                "{.status.containerStatuses[0].restartCount}",
            )?;
            Ok((restarts.trim().parse::<u32>().unwrap_or(0) >= 1).then_some(()))
        },
        log,
    )?;
    let describe = server.kubectl_ok(&["describe", "pod", "live", "-n", &ns])?;
    assert!(describe.contains("Liveness probe failed"), "{describe}");
    let table = server.kubectl_ok(&["get", "pod", "live", "-n", &ns])?;
    let restarts = table
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(3))
        .unwrap_or_default();
    assert!(restarts.parse::<u32>().unwrap_or(0) >= 1, "{table}");

    server.kubectl_ok(&["delete", "namespace", &ns, "--wait", "--timeout=60s"])?;
    Ok(())
}
