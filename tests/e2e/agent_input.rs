//! The node agent with bad input and with claims, end to end with the real
//! kubectl: every broken pod shows the reason the kubelet would give in
//! `kubectl get pods` and `kubectl describe`, while the node keeps running
//! the good ones; a pod writes through a `PersistentVolumeClaim` into the
//! `hostPath` directory of the `PersistentVolume` it is bound to; a pod
//! whose claim does not exist yet waits in `ContainerCreating` and runs
//! once the claim is created and bound.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use skep_e2e::agent::{Agent, start_single_node, wait_node_ready};
use skep_e2e::cluster::Server;
use skep_e2e::registry::{self, Registry};
use skep_e2e::{require_root, unique_name};

use crate::agent::{DEMO, wait};

fn pod(name: &str, body: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n{body}"
    )
}

/// A `hostPath` `PersistentVolume` named `name` on `path`, and a claim for it.
fn volume_and_claim(name: &str, claim: &str, path: &str) -> String {
    format!(
        r#"---
apiVersion: v1
kind: PersistentVolume
metadata: {{name: {name}}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  hostPath: {{path: "{path}", type: DirectoryOrCreate}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {claim}}}
spec:
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 100Mi}}}}
"#
    )
}

fn manifests(ns: &str, pv_dir: &str, plain: &Registry, auth: &Registry) -> String {
    let wrong = base64(&format!(
        r#"{{"auths":{{"{}":{{"username":"{}","password":"wrong"}}}}}}"#,
        auth.addr,
        registry::USER
    ));
    let mut out = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cfg}}\ndata: {{color: blue}}\n\
         ---\napiVersion: v1\nkind: Secret\nmetadata: {{name: wrongcreds}}\n\
         type: kubernetes.io/dockerconfigjson\ndata: {{.dockerconfigjson: {wrong}}}\n"
    );
    out.push_str(&volume_and_claim(&format!("{ns}-data"), "data", pv_dir));
    let sleeper =
        format!("  containers:\n  - {{name: c, image: {DEMO}, command: [sleep, \"3600\"]}}\n");
    for (name, body) in [
        ("healthy", sleeper.clone()),
        (
            "pvcpod",
            format!(
                "  restartPolicy: Never\n  volumes:\n  - {{name: d, persistentVolumeClaim: {{claimName: data}}}}\n  \
                 containers:\n  - name: c\n    image: {DEMO}\n    command: [sh, -c, 'echo written-through-the-claim > /data/out.txt']\n    \
                 volumeMounts: [{{name: d, mountPath: /data}}]\n"
            ),
        ),
        (
            "latepvc",
            format!(
                "  volumes:\n  - {{name: d, persistentVolumeClaim: {{claimName: late}}}}\n  \
                 containers:\n  - name: c\n    image: {DEMO}\n    command: [sleep, \"3600\"]\n    \
                 volumeMounts: [{{name: d, mountPath: /data}}]\n"
            ),
        ),
        (
            "noimage",
            format!(
                "  containers:\n  - {{name: c, image: \"{}/nope/none:v1\"}}\n",
                plain.addr
            ),
        ),
        (
            "noauth",
            format!(
                "  containers:\n  - {{name: c, image: \"{}/private/img:v1\"}}\n",
                auth.addr
            ),
        ),
        (
            "badauth",
            format!(
                "  imagePullSecrets: [{{name: wrongcreds}}]\n  containers:\n  - {{name: c, image: \"{}/private/img:v1\"}}\n",
                auth.addr
            ),
        ),
        (
            "nocmd",
            format!("  containers:\n  - {{name: c, image: {DEMO}, command: [no-such-command]}}\n"),
        ),
        (
            "nocfgvol",
            format!(
                "  volumes:\n  - {{name: conf, configMap: {{name: absent}}}}\n  containers:\n  - name: c\n    \
                 image: {DEMO}\n    command: [sleep, \"3600\"]\n    volumeMounts: [{{name: conf, mountPath: /conf}}]\n"
            ),
        ),
        (
            "nocfgkey",
            format!(
                "  containers:\n  - name: c\n    image: {DEMO}\n    command: [sleep, \"3600\"]\n    \
                 env: [{{name: X, valueFrom: {{configMapKeyRef: {{name: cfg, key: nope}}}}}}]\n"
            ),
        ),
        (
            "oom",
            format!(
                "  restartPolicy: Never\n  containers:\n  - name: c\n    image: {DEMO}\n    \
                 command: [busybox, dd, if=/dev/zero, of=/dev/null, bs=268435456, count=1]\n    \
                 resources: {{limits: {{memory: 32Mi}}}}\n"
            ),
        ),
    ] {
        out.push_str(&pod(name, &body));
    }
    out
}

fn base64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// `kubectl get pods` as NAME → STATUS column.
fn statuses(server: &Server, ns: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let out = server.kubectl_ok(&["get", "pods", "-n", ns, "--no-headers"])?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let mut cols = l.split_whitespace();
            Some((cols.next()?.to_owned(), cols.nth(1)?.to_owned()))
        })
        .collect())
}

/// `kubectl describe pod NAME`.
fn describe(server: &Server, ns: &str, name: &str) -> anyhow::Result<String> {
    server.kubectl_ok(&["describe", "pod", name, "-n", ns])
}

/// A jsonpath of pod `name`.
fn field(server: &Server, ns: &str, name: &str, path: &str) -> anyhow::Result<String> {
    server.kubectl_ok(&[
        "get",
        "pod",
        name,
        "-n",
        ns,
        "-o",
        &format!("jsonpath={path}"),
    ])
}

/// Waits until `kubectl get pods` shows pod `name` with one of `accepted`
/// as its STATUS, then checks that `kubectl describe` names `in_describe`.
fn expect_reason(
    server: &Server,
    agent: &Agent,
    ns: &str,
    name: &str,
    accepted: &[&str],
    in_describe: &[&str],
) -> anyhow::Result<()> {
    wait(
        &format!("{name} to show {accepted:?}"),
        Duration::from_secs(30),
        agent,
        || {
            let s = statuses(server, ns)?;
            Ok(s.get(name)
                .filter(|st| accepted.contains(&st.as_str()))
                .map(|_| ()))
        },
    )?;
    // Events are written in the background: give describe a moment.
    wait(
        &format!("describe {name} to show {in_describe:?}"),
        Duration::from_secs(10),
        agent,
        || {
            let text = describe(server, ns, name)?;
            Ok(in_describe.iter().all(|w| text.contains(w)).then_some(()))
        },
    )
    .with_context(|| describe(server, ns, name).unwrap_or_default())
}

/// Each broken pod shows the kubelet's reason.
fn check_reasons(server: &Server, agent: &Agent, ns: &str) -> anyhow::Result<()> {
    let pull = &["ErrImagePull", "ImagePullBackOff"];
    expect_reason(
        server,
        agent,
        ns,
        "noimage",
        pull,
        &["Failed to pull image", "not found"],
    )?;
    expect_reason(
        server,
        agent,
        ns,
        "noauth",
        pull,
        &["Failed to pull image", "unauthorized"],
    )?;
    expect_reason(
        server,
        agent,
        ns,
        "badauth",
        pull,
        &["Failed to pull image", "unauthorized"],
    )?;
    // Back-off turns ErrImagePull into ImagePullBackOff.
    expect_reason(
        server,
        agent,
        ns,
        "noimage",
        &["ImagePullBackOff"],
        &["ImagePullBackOff"],
    )?;

    expect_reason(
        server,
        agent,
        ns,
        "nocmd",
        &["RunContainerError", "CrashLoopBackOff"],
        &["StartError", "executable file not found"],
    )?;
    expect_reason(
        server,
        agent,
        ns,
        "nocmd",
        &["CrashLoopBackOff"],
        &["CrashLoopBackOff"],
    )?;
    let last = field(
        server,
        ns,
        "nocmd",
        "{.status.containerStatuses[0].lastState.terminated.reason} {.status.containerStatuses[0].lastState.terminated.exitCode}",
    )?;
    assert_eq!(last, "StartError 128", "nocmd lastState");

    expect_reason(
        server,
        agent,
        ns,
        "nocfgvol",
        &["ContainerCreating"],
        &["FailedMount", "configmap \"absent\" not found"],
    )?;
    expect_reason(
        server,
        agent,
        ns,
        "nocfgkey",
        &["CreateContainerConfigError"],
        &["CreateContainerConfigError", "nope"],
    )?;
    expect_reason(server, agent, ns, "oom", &["OOMKilled"], &["OOMKilled"])?;
    let oom = field(
        server,
        ns,
        "oom",
        "{.status.containerStatuses[0].state.terminated.reason} {.status.containerStatuses[0].state.terminated.exitCode}",
    )?;
    assert_eq!(oom, "OOMKilled 137", "oom container state");
    eprintln!("{}", server.kubectl_ok(&["get", "pods", "-n", ns])?);
    Ok(())
}

/// A pod writes through its claim into the volume's hostPath directory; a
/// pod whose claim is missing waits with `FailedMount`, then runs once the
/// claim exists and is bound.
fn check_claims(
    server: &Server,
    agent: &Agent,
    ns: &str,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    let pv = format!("{ns}-data");
    wait("pvcpod Succeeded", Duration::from_secs(30), agent, || {
        Ok((field(server, ns, "pvcpod", "{.status.phase}")? == "Succeeded").then_some(()))
    })?;
    let written = std::fs::read_to_string(dir.join("data/out.txt"))
        .context("file written through the claim")?;
    assert_eq!(written.trim(), "written-through-the-claim");
    let bound = server.kubectl_ok(&[
        "get",
        "pvc",
        "data",
        "-n",
        ns,
        "-o",
        "jsonpath={.status.phase} {.spec.volumeName}",
    ])?;
    assert_eq!(bound, format!("Bound {pv}"));
    let pv_phase = server.kubectl_ok(&[
        "get",
        "pv",
        &pv,
        "-o",
        "jsonpath={.status.phase} {.spec.claimRef.name}",
    ])?;
    assert_eq!(pv_phase, "Bound data");

    expect_reason(
        server,
        agent,
        ns,
        "latepvc",
        &["ContainerCreating"],
        &["FailedMount", "persistentvolumeclaim \"late\" not found"],
    )?;
    let late_dir = dir.join("late");
    server.kubectl_ok_with(
        &["apply", "-n", ns, "-f", "-"],
        &volume_and_claim(&format!("{ns}-late"), "late", &late_dir.to_string_lossy()),
    )?;
    wait("latepvc Running", Duration::from_secs(30), agent, || {
        Ok(
            (statuses(server, ns)?.get("latepvc").map(String::as_str) == Some("Running"))
                .then_some(()),
        )
    })?;
    assert!(
        late_dir.is_dir(),
        "DirectoryOrCreate made the late volume's directory"
    );
    Ok(())
}

#[test]
fn agent_mounts_claims_and_reports_bad_input_like_the_kubelet() -> anyhow::Result<()> {
    require_root!();
    let dir = tempfile::tempdir()?;
    let node = unique_name("bi");
    let ns = unique_name("ns");
    let plain = Registry::start(false)?;
    let auth = Registry::start(true)?;
    let (server, agent) = start_single_node(dir.path(), &node, true)?;
    wait_node_ready(&server, &agent)?;
    server.kubectl_ok_with(
        &["apply", "-f", "-"],
        &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"),
    )?;
    let volumes = dir.path().join("volumes");
    server.kubectl_ok_with(
        &["apply", "-n", &ns, "-f", "-"],
        &manifests(&ns, &volumes.join("data").to_string_lossy(), &plain, &auth),
    )?;

    wait("healthy Running", Duration::from_secs(30), &agent, || {
        Ok(
            (statuses(&server, &ns)?.get("healthy").map(String::as_str) == Some("Running"))
                .then_some(()),
        )
    })?;
    check_reasons(&server, &agent, &ns)?;
    check_claims(&server, &agent, &ns, &volumes)?;

    // The node kept serving: the healthy pod never restarted, and a new
    // pod still starts.
    let healthy = field(
        &server,
        &ns,
        "healthy",
        "{.status.phase} {.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].ready}",
    )?;
    assert_eq!(healthy, "Running 0 true");
    server.kubectl_ok_with(
        &["apply", "-n", &ns, "-f", "-"],
        &pod(
            "latecomer",
            &format!("  containers:\n  - {{name: c, image: {DEMO}, command: [sleep, \"3600\"]}}\n"),
        ),
    )?;
    wait("latecomer Running", Duration::from_secs(30), &agent, || {
        Ok(
            (statuses(&server, &ns)?.get("latecomer").map(String::as_str) == Some("Running"))
                .then_some(()),
        )
    })?;

    server.kubectl_ok(&["delete", "namespace", &ns, "--wait=false"])?;
    wait("all pods gone", Duration::from_mins(1), &agent, || {
        let out = server.kubectl_ok(&["get", "pods", "-n", &ns, "--no-headers"])?;
        Ok(out.trim().is_empty().then_some(()))
    })?;
    for pv in [format!("{ns}-data"), format!("{ns}-late")] {
        server.kubectl_ok(&["delete", "pv", &pv, "--wait=false"])?;
    }
    drop(agent);
    drop(server);
    Ok(())
}
