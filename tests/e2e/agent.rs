//! The node agent end to end: `skep server` and `skep agent` as processes,
//! real runc, overlayfs, netns and veths, driven by kubectl. A Deployment's
//! pods run and answer, a crashing pod backs off, a missing image is
//! reported, `ConfigMap` and `Secret` values reach env and files, and deleting
//! everything leaves nothing behind on the host.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use skep_e2e::agent::{Agent, mounts_below, pod_cgroups};
use skep_e2e::cluster::Server;
use skep_e2e::process::skep;
use skep_e2e::{require_root, unique_name};

/// The demo image `skep image build-demo` imports.
pub(crate) const DEMO: &str = "skep/busybox:demo";

fn manifests(ns: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: cfg, namespace: {ns}}}
data: {{color: blue, app.conf: mode=fast}}
---
apiVersion: v1
kind: Secret
metadata: {{name: sec, namespace: {ns}}}
stringData: {{password: hunter2}}
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
      terminationGracePeriodSeconds: 2
      containers:
      - name: httpd
        image: {DEMO}
        command: [httpd, -f, -p, "8080", -h, /etc]
        readinessProbe:
          httpGet: {{path: /hosts, port: 8080}}
          periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata: {{name: crash, namespace: {ns}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: c, image: {DEMO}, command: [sh, -c, "echo dying; exit 1"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: noimg, namespace: {ns}}}
spec:
  containers:
  - {{name: c, image: "127.0.0.1:1/nope:v1"}}
---
apiVersion: v1
kind: Pod
metadata: {{name: cfgpod, namespace: {ns}}}
spec:
  restartPolicy: Never
  volumes:
  - {{name: conf, configMap: {{name: cfg}}}}
  - {{name: sec, secret: {{secretName: sec, items: [{{key: password, path: pw/file, mode: 0400}}]}}}}
  containers:
  - name: c
    image: {DEMO}
    command: [sh, -c, 'echo "COLOR=$COLOR PW=$PW NS=$NS"; cat /conf/app.conf; echo; cat /sec/pw/file; echo; stat -c %a /sec/pw/file']
    env:
    - {{name: COLOR, valueFrom: {{configMapKeyRef: {{name: cfg, key: color}}}}}}
    - {{name: PW, valueFrom: {{secretKeyRef: {{name: sec, key: password}}}}}}
    - {{name: NS, valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}}}
    volumeMounts:
    - {{name: conf, mountPath: /conf}}
    - {{name: sec, mountPath: /sec}}
"#
    )
}

/// Polls `check` every 200 ms until it returns `Some`, or fails after `timeout`.
pub(crate) fn wait<T>(
    what: &str,
    timeout: Duration,
    agent: &Agent,
    mut check: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check()? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!(
                "timed out waiting for {what}; agent log:\n{}",
                agent.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn http_get(ip: &str, path: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect_timeout(&format!("{ip}:8080").parse()?, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.0\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// What the agent's pods still hold on the host: veths, mounts, pod
/// cgroups, runc containers, pod directories, netns files, IP allocations.
fn leftovers(agent: &Agent) -> anyhow::Result<Vec<String>> {
    let dir = &agent.data_dir;
    let mut left: Vec<String> = agent.new_links();
    left.extend(mounts_below(dir).iter().map(|m| m.display().to_string()));
    left.extend(
        pod_cgroups(&agent.node)
            .iter()
            .map(|c| c.display().to_string()),
    );
    let runc = std::process::Command::new("runc")
        .arg("--root")
        .arg(dir.join("runtime/runc"))
        .args(["list", "-q"])
        .output()?;
    left.extend(
        String::from_utf8_lossy(&runc.stdout)
            .lines()
            .map(str::to_owned),
    );
    for sub in ["pods", "run/netns", "ipam"] {
        for entry in std::fs::read_dir(dir.join(sub))?.flatten() {
            if entry.file_name() != "last_reserved_ip" {
                left.push(entry.path().display().to_string());
            }
        }
    }
    Ok(left)
}

/// A crashing pod backs off, a missing image is reported, and `ConfigMap`
/// and `Secret` values reach a container's env and files; events recorded.
fn check_failures_and_config(server: &Server, agent: &Agent, ns: &str) -> anyhow::Result<()> {
    let ns = ns.to_owned();
    // A crashing container restarts with back-off.
    wait("CrashLoopBackOff", Duration::from_secs(20), agent, || {
        let out = server.kubectl_ok(&["get", "pod", "crash", "-n", &ns, "--no-headers"])?;
        let restarts: u32 = out
            .split_whitespace()
            .nth(3)
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        Ok((out.contains("CrashLoopBackOff") && restarts >= 2).then_some(()))
    })?;

    // A missing image is reported.
    wait(
        "ErrImagePull/ImagePullBackOff",
        Duration::from_secs(20),
        agent,
        || {
            let out = server.kubectl_ok(&["get", "pod", "noimg", "-n", &ns, "--no-headers"])?;
            Ok((out.contains("ErrImagePull") || out.contains("ImagePullBackOff")).then_some(()))
        },
    )?;

    // ConfigMap and Secret values reach env and files.
    let uid = wait("cfgpod Succeeded", Duration::from_secs(20), agent, || {
        let out = server.kubectl_ok(&[
            "get",
            "pod",
            "cfgpod",
            "-n",
            &ns,
            "-o",
            "jsonpath={.status.phase} {.metadata.uid}",
        ])?;
        Ok(out.strip_prefix("Succeeded ").map(str::to_owned))
    })?;
    let log = std::fs::read_to_string(agent.data_dir.join(format!("pods/{uid}/logs/c/0.log")))
        .context("cfgpod log")?;
    assert!(
        log.contains(&format!("COLOR=blue PW=hunter2 NS={ns}")),
        "{log}"
    );
    assert!(log.contains("stdout F mode=fast"), "{log}");
    assert!(log.contains("stdout F hunter2"), "{log}");
    assert!(log.contains("stdout F 400"), "secret item mode: {log}");

    // Events were recorded for the pods.
    let events = server.kubectl_ok(&["get", "events", "-n", &ns, "--no-headers"])?;
    for reason in ["Started", "BackOff", "Failed"] {
        assert!(events.contains(reason), "no {reason} event:\n{events}");
    }

    Ok(())
}

/// An agent restart adopts the running containers: same ids, no restarts,
/// and the pods keep answering.
fn check_restart_adopts(
    server: &Server,
    agent: &mut Agent,
    ns: &str,
    ips: &[String],
) -> anyhow::Result<()> {
    let containers = |server: &Server| {
        server.kubectl_ok(&[
            "get", "pods", "-n", ns, "-l", "app=web", "-o",
            "jsonpath={range .items[*]}{.status.containerStatuses[0].containerID} {.status.containerStatuses[0].restartCount}{\"\\n\"}{end}",
        ])
    };
    let before = containers(server)?;
    agent.restart()?;
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        containers(server)?,
        before,
        "agent restart changed containers"
    );
    for ip in ips {
        assert!(
            http_get(ip, "/hosts")?.contains(" 200 "),
            "{ip} stopped answering"
        );
    }

    Ok(())
}

#[test]
fn agent_runs_pods_end_to_end_and_cleans_up() -> anyhow::Result<()> {
    require_root!();
    let dir = tempfile::tempdir()?;
    let node = unique_name("ag");
    let ns = unique_name("ns");
    let server = Server::start_with(&dir.path().join("cp"), &["--node-kubeconfig", &node])?;
    let agent_dir = dir.path().join("node");
    let out = skep(&[
        "image",
        "build-demo",
        "--data-dir",
        &agent_dir.to_string_lossy(),
    ])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kubeconfig = dir.path().join(format!("cp/nodes/{node}.kubeconfig"));
    let mut agent = Agent::start(&agent_dir, &kubeconfig, &node)?;

    wait("node Ready", Duration::from_secs(15), &agent, || {
        let out = server.kubectl(&[
            "get",
            "node",
            &node,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.spec.podCIDR}",
        ])?;
        let s = String::from_utf8_lossy(&out.stdout).into_owned();
        Ok((s.starts_with("True ") && s.len() > 5).then_some(()))
    })?;

    server.kubectl_ok_with(&["apply", "-f", "-"], &manifests(&ns))?;

    // The Deployment: two ready pods with IPs whose httpd answers from here.
    let ips = wait("2 ready web pods", Duration::from_secs(30), &agent, || {
        let out = server.kubectl_ok(&[
            "get", "pods", "-n", &ns, "-l", "app=web", "-o",
            "jsonpath={range .items[*]}{.status.podIP} {.status.containerStatuses[0].ready}{\"\\n\"}{end}",
        ])?;
        let ready: Vec<String> = out
            .lines()
            .filter(|l| l.ends_with(" true"))
            .filter_map(|l| l.split(' ').next().map(str::to_owned))
            .collect();
        Ok((ready.len() == 2).then_some(ready))
    })?;
    for ip in &ips {
        assert!(
            ip.starts_with("10.244."),
            "pod IP {ip} outside the cluster CIDR"
        );
        let reply = http_get(ip, "/hosts")?;
        assert!(
            reply.starts_with("HTTP/1.") && reply.contains(" 200 "),
            "{reply}"
        );
        assert!(
            reply.contains(ip.as_str()),
            "pod /etc/hosts names its IP: {reply}"
        );
    }

    check_restart_adopts(&server, &mut agent, &ns, &ips)?;
    check_failures_and_config(&server, &agent, &ns)?;

    // Deleting everything tears every pod down and leaves nothing behind.
    server.kubectl_ok(&["delete", "deployment", "web", "-n", &ns])?;
    server.kubectl_ok(&[
        "delete",
        "pod",
        "crash",
        "noimg",
        "cfgpod",
        "-n",
        &ns,
        "--wait=false",
    ])?;
    wait("all pods gone", Duration::from_secs(30), &agent, || {
        let out = server.kubectl_ok(&["get", "pods", "-n", &ns, "--no-headers"])?;
        Ok(out.trim().is_empty().then_some(()))
    })?;
    wait("host clean", Duration::from_secs(10), &agent, || {
        let left = leftovers(&agent)?;
        if left.is_empty() {
            Ok(Some(()))
        } else {
            eprintln!("still left: {left:?}");
            Ok(None)
        }
    })?;
    drop(agent);
    drop(server);
    Ok(())
}
