//! Pods' API credentials end to end: ServiceAccount admission adds the
//! projected `kube-api-access-*` volume, the root CA publisher keeps
//! `kube-root-ca.crt` in the namespace, and the agent writes the volume
//! (token, `ca.crt`, `namespace`) and gives every container
//! `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT`.
//!
//! [`pods_get_the_cluster_ca_namespace_and_api_address`] checks all but
//! the token; [`pods_get_a_service_account_token`] checks the token, which
//! the API server issues through node sync's `RequestToken`.

use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use skep_e2e::agent::{Agent, start_single_node, wait_node_ready};
use skep_e2e::cluster::Server;
use skep_e2e::{require_root, unique_name};

use crate::agent::{DEMO, wait};

const MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

fn pods(ns: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: auto, namespace: {ns}}}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: {DEMO}
    command: [sh, -c, 'cat {MOUNT}/ca.crt; echo "=="; cat {MOUNT}/namespace; echo; echo "HOST=$KUBERNETES_SERVICE_HOST PORT=$KUBERNETES_SERVICE_PORT"; cat {MOUNT}/token; echo']
---
apiVersion: v1
kind: Pod
metadata: {{name: noauto, namespace: {ns}}}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  containers:
  - name: c
    image: {DEMO}
    command: [sh, -c, 'ls {MOUNT} >/dev/null 2>&1 && echo mounted || echo absent; echo "HOST=$KUBERNETES_SERVICE_HOST PORT=$KUBERNETES_SERVICE_PORT"']
"#
    )
}

/// Waits for pod `name` to succeed and returns its log.
fn finished_log(server: &Server, agent: &Agent, ns: &str, name: &str) -> anyhow::Result<String> {
    wait(
        &format!("{name} Succeeded"),
        Duration::from_secs(30),
        agent,
        || {
            let phase = server.kubectl_ok(&[
                "get",
                "pod",
                name,
                "-n",
                ns,
                "-o",
                "jsonpath={.status.phase}",
            ])?;
            Ok((phase == "Succeeded").then_some(()))
        },
    )?;
    server.kubectl_ok(&["logs", name, "-n", ns])
}

/// A cluster with the two pods done; returns the cluster, the node, the
/// namespace and the two pods' logs.
fn run_pods(dir: &std::path::Path) -> anyhow::Result<(Server, Agent, String, String, String)> {
    let node = unique_name("sa");
    let ns = unique_name("ns");
    let (server, agent) = start_single_node(dir, &node, true)?;
    wait_node_ready(&server, &agent)?;
    server.kubectl_ok_with(&["apply", "-f", "-"], &pods(&ns))?;
    let auto = finished_log(&server, &agent, &ns, "auto")?;
    let noauto = finished_log(&server, &agent, &ns, "noauto")?;
    Ok((server, agent, ns, auto, noauto))
}

#[test]
fn pods_get_the_cluster_ca_namespace_and_api_address() -> anyhow::Result<()> {
    require_root!();
    let dir = tempfile::tempdir()?;
    let (server, agent, ns, auto, noauto) = run_pods(dir.path())?;
    let ca = std::fs::read_to_string(dir.path().join("cp/pki/ca.crt")).context("cluster CA")?;
    let api_ip = server.kubectl_ok(&[
        "get",
        "service",
        "kubernetes",
        "-n",
        "default",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ])?;
    let env = format!("HOST={api_ip} PORT=443");

    // The namespace's kube-root-ca.crt, with upstream's annotation.
    let cm = server.json(&["get", "configmap", "kube-root-ca.crt", "-n", &ns])?;
    assert_eq!(cm["data"]["ca.crt"], ca.as_str(), "{cm}");
    assert!(
        cm["metadata"]["annotations"]["kubernetes.io/description"]
            .as_str()
            .is_some_and(|d| d.starts_with("Contains a CA bundle")),
        "{cm}"
    );

    // Admission: the default ServiceAccount and the projected volume.
    let pod = server.json(&["get", "pod", "auto", "-n", &ns])?;
    assert_eq!(pod["spec"]["serviceAccountName"], "default");
    let volume = &pod["spec"]["volumes"][0];
    let name = volume["name"].as_str().unwrap_or_default();
    assert!(name.starts_with("kube-api-access-"), "{pod}");
    assert_eq!(volume["projected"]["defaultMode"], 420);
    assert_eq!(
        volume["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"],
        3607
    );
    let mount = &pod["spec"]["containers"][0]["volumeMounts"][0];
    assert_eq!(mount["mountPath"], MOUNT);
    assert_eq!(mount["readOnly"], true);
    assert_eq!(mount["name"], name);

    // What the container saw: the CA, its namespace, the API's address.
    let (seen_ca, rest) = auto
        .split_once("\n==\n")
        .with_context(|| format!("auto's log: {auto}"))?;
    assert_eq!(seen_ca.trim_end(), ca.trim_end(), "ca.crt in the pod");
    let mut lines = rest.lines();
    assert_eq!(lines.next(), Some(ns.as_str()), "namespace in the pod");
    assert_eq!(lines.next(), Some(env.as_str()), "env in the pod");

    // Without automount: no volume, no mount, the env all the same.
    let pod = server.json(&["get", "pod", "noauto", "-n", &ns])?;
    assert!(
        pod["spec"]["volumes"].as_array().is_none_or(Vec::is_empty),
        "{pod}"
    );
    assert_eq!(noauto, format!("absent\n{env}\n"));

    // A ServiceAccount that does not exist refuses the pod.
    let out = server.kubectl(&[
        "run",
        "nobody",
        "-n",
        &ns,
        "--image",
        DEMO,
        "--overrides",
        r#"{"spec": {"serviceAccountName": "nobody"}}"#,
    ])?;
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "Error from server (Forbidden): pods \"nobody\" is forbidden: error looking up service account {ns}/nobody: serviceaccount \"nobody\" not found"
        )
    );
    drop(agent);
    Ok(())
}

/// Waits for the API server's `RequestToken` (node sync): until it is
/// served, the agent writes the volume without `token`.
#[test]
fn pods_get_a_service_account_token() -> anyhow::Result<()> {
    require_root!();
    let dir = tempfile::tempdir()?;
    let (server, agent, ns, auto, _) = run_pods(dir.path())?;
    let token = auto
        .lines()
        .nth_back(0)
        .unwrap_or_default()
        .trim()
        .to_owned();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT in {MOUNT}/token: {auto:?}");
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(parts[1])?,
    )?;
    assert_eq!(
        claims["sub"],
        format!("system:serviceaccount:{ns}:default"),
        "{claims}"
    );
    let uid = server.kubectl_ok(&[
        "get",
        "pod",
        "auto",
        "-n",
        &ns,
        "-o",
        "jsonpath={.metadata.uid}",
    ])?;
    assert_eq!(
        claims["kubernetes.io"]["pod"]["uid"],
        uid.as_str(),
        "{claims}"
    );
    drop(agent);
    Ok(())
}
