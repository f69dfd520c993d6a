//! The node agent end to end: `skep server` and `skep agent` as processes,
//! real runc, overlayfs, netns and veths, driven by kubectl. A Deployment's
//! pods run and answer, a crashing pod backs off, a missing image is
//! reported, `ConfigMap` and `Secret` values reach env and files, and deleting
//! everything leaves nothing behind on the host.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use skep_e2e::agent::{Agent, mounts_below, pod_cgroups, start_single_node, wait_node_ready};
use skep_e2e::cluster::{Server, str_at};
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

/// Polls `check` until it returns `Some`, or fails after `timeout` with
/// the agent's log.
pub(crate) fn wait<T>(
    what: &str,
    timeout: Duration,
    agent: &Agent,
    check: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    skep_e2e::wait::until(what, timeout, check, || {
        format!("agent log:\n{}", agent.log_tail())
    })
}

pub(crate) fn http_get(ip: &str, path: &str) -> anyhow::Result<String> {
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
    // `kubectl logs` shows the output (streamed from the agent), and the
    // agent's CRI log file has it too.
    let shown = server.kubectl_ok(&["logs", "cfgpod", "-n", &ns])?;
    assert_eq!(
        shown,
        format!("COLOR=blue PW=hunter2 NS={ns}\nmode=fast\nhunter2\n400\n"),
        "kubectl logs cfgpod"
    );
    let log = std::fs::read_to_string(agent.data_dir.join(format!("pods/{uid}/logs/c/0.log")))
        .context("cfgpod log")?;
    assert!(log.contains("stdout F mode=fast"), "{log}");

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
        let reply = http_get(ip, "/hosts").with_context(|| {
            format!(
                "{ip} after the agent restart; agent log:\n{}",
                agent.log_tail()
            )
        })?;
        assert!(reply.contains(" 200 "), "{ip} stopped answering");
    }
    // The new agent probes the adopted containers again: they are Ready
    // again, with the same containers.
    wait(
        "adopted pods ready again",
        Duration::from_secs(30),
        agent,
        || {
            let ready = web_pods(server, ns)?;
            Ok((ready.len() == ips.len()).then_some(()))
        },
    )?;
    assert_eq!(
        containers(server)?,
        before,
        "readiness came back without new containers"
    );

    Ok(())
}

/// The web Deployment's ready pods: (name, podIP, env `MODE` or "").
fn web_pods(server: &Server, ns: &str) -> anyhow::Result<Vec<(String, String, String)>> {
    let pods = server.active_pods(ns, "app=web")?;
    Ok(pods
        .iter()
        .filter(|p| skep_e2e::cluster::pod_ready(p))
        .map(|p| {
            let mode = p["spec"]["containers"][0]["env"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["name"] == "MODE")
                .map(|e| str_at(e, &["value"]).to_owned())
                .unwrap_or_default();
            (
                str_at(p, &["metadata", "name"]).to_owned(),
                str_at(p, &["status", "podIP"]).to_owned(),
                mode,
            )
        })
        .collect())
}

/// Waits until the web Deployment has exactly `count` pods, all ready and
/// all with `MODE` = `mode`, and each answers HTTP.
fn web_rolled(
    server: &Server,
    agent: &Agent,
    ns: &str,
    count: usize,
    mode: &str,
) -> anyhow::Result<()> {
    let status = server
        .kubectl_ok(&[
            "rollout",
            "status",
            "deployment/web",
            "-n",
            ns,
            "--timeout=90s",
        ])
        .with_context(|| {
            let pods = server
                .kubectl_ok(&["describe", "pods", "-n", ns, "-l", "app=web"])
                .unwrap_or_default();
            let deployment = server
                .kubectl_ok(&["describe", "deployment", "web", "-n", ns])
                .unwrap_or_default();
            format!(
                "{deployment}\n{pods}\nagent log:\n{}\nserver log:\n{}",
                agent.log_tail(),
                server.log_tail()
            )
        })?;
    assert!(status.contains("successfully rolled out"), "{status}");
    let pods = wait(
        &format!("{count} web pods with MODE={mode:?}"),
        Duration::from_mins(1),
        agent,
        || {
            // Terminating pods count too: the old ones must be gone.
            let all = server.items(&["pods", "-n", ns, "-l", "app=web"])?;
            let ready = web_pods(server, ns)?;
            Ok((all.len() == count
                && ready.len() == count
                && ready.iter().all(|(_, _, m)| m == mode))
            .then_some(ready))
        },
    )?;
    for (name, ip, _) in &pods {
        let reply = http_get(ip, "/hosts")?;
        assert!(reply.contains(" 200 "), "{name} at {ip}: {reply}");
    }
    Ok(())
}

/// On a real agent: scaled to 3, the Deployment rolls to a new template
/// (`kubectl set env`, real readiness probes gating each step) and `rollout
/// undo` brings the old template back, with new pods that answer.
fn check_rollout_and_undo(server: &Server, agent: &Agent, ns: &str) -> anyhow::Result<()> {
    server.kubectl_ok(&["scale", "deployment", "web", "-n", ns, "--replicas=3"])?;
    web_rolled(server, agent, ns, 3, "")?;
    let first: Vec<String> = web_pods(server, ns)?.into_iter().map(|p| p.0).collect();
    server.kubectl_ok(&["set", "env", "deployment/web", "-n", ns, "MODE=v2"])?;
    web_rolled(server, agent, ns, 3, "v2")?;
    let second: Vec<String> = web_pods(server, ns)?.into_iter().map(|p| p.0).collect();
    assert!(
        second.iter().all(|p| !first.contains(p)),
        "pods were not replaced: {first:?} -> {second:?}"
    );
    server.kubectl_ok(&["rollout", "undo", "deployment/web", "-n", ns])?;
    web_rolled(server, agent, ns, 3, "")?;
    let third: Vec<String> = web_pods(server, ns)?.into_iter().map(|p| p.0).collect();
    assert!(
        third
            .iter()
            .all(|p| !second.contains(p) && !first.contains(p)),
        "undo did not roll new pods: {second:?} -> {third:?}"
    );
    let history = server.kubectl_ok(&["rollout", "history", "deployment/web", "-n", ns])?;
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|r| r.parse::<u32>().is_ok())
        .collect();
    assert_eq!(revisions, ["2", "3"], "{history}");
    Ok(())
}

#[test]
fn agent_runs_pods_end_to_end_and_cleans_up() -> anyhow::Result<()> {
    require_root!();
    let dir = tempfile::tempdir()?;
    let node = unique_name("ag");
    let ns = unique_name("ns");
    let (server, mut agent) = start_single_node(dir.path(), &node, true)?;
    wait_node_ready(&server, &agent)?;

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

    check_rollout_and_undo(&server, &agent, &ns)?;
    let ips: Vec<String> = web_pods(&server, &ns)?.into_iter().map(|p| p.1).collect();
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

/// Who calls the node port directly.
enum NodeCaller {
    /// No credential at all.
    Nobody,
    /// `Authorization: Bearer <token>`.
    Token(String),
    /// A client certificate and key (PEM files).
    Certificate(PathBuf, PathBuf),
}

/// `GET https://127.0.0.1:{port}{path}` on the node port as `caller`: the
/// HTTP code and the body.
fn node_port_get(port: u16, path: &str, caller: &NodeCaller) -> anyhow::Result<(u16, String)> {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sk", "--max-time", "5", "-w", "\n%{http_code}"]);
    match caller {
        NodeCaller::Nobody => {}
        NodeCaller::Token(token) => {
            cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        NodeCaller::Certificate(cert, key) => {
            cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        }
    }
    let out = cmd
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .context("curl")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    Ok((code.trim().parse().unwrap_or(0), body.to_owned()))
}

/// A client certificate for `user` in `group` from `skep kubeconfig user`,
/// written as PEM files into `dir`.
fn user_certificate(
    cp_dir: &Path,
    dir: &Path,
    user: &str,
    group: &str,
) -> anyhow::Result<NodeCaller> {
    use base64::Engine as _;
    let out = skep_e2e::process::skep(&[
        "kubeconfig",
        "user",
        "--data-dir",
        &cp_dir.to_string_lossy(),
        "--client-name",
        user,
        "--org",
        group,
    ])?;
    anyhow::ensure!(
        out.status.success(),
        "skep kubeconfig user failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kubeconfig = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |name: &str| -> anyhow::Result<Vec<u8>> {
        let value = kubeconfig
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .with_context(|| format!("no {name} in the kubeconfig"))?;
        Ok(base64::engine::general_purpose::STANDARD.decode(value.trim())?)
    };
    let (cert, key) = (
        dir.join(format!("{user}.crt")),
        dir.join(format!("{user}.key")),
    );
    std::fs::write(&cert, field("client-certificate-data:")?)?;
    std::fs::write(&key, field("client-key-data:")?)?;
    Ok(NodeCaller::Certificate(cert, key))
}

/// The node port asks the API server about every caller: a ServiceAccount
/// token and a user certificate are refused with the kubelet's exact 403
/// until a ClusterRoleBinding grants them `nodes/proxy`; a bad token is 401.
fn check_node_port_auth(
    server: &Server,
    cp_dir: &Path,
    dir: &Path,
    port: u16,
    ns: &str,
) -> anyhow::Result<()> {
    let logs = format!("/containerLogs/{ns}/two/a");
    let (code, body) = node_port_get(port, &logs, &NodeCaller::Token("not-a-token".into()))?;
    assert_eq!(code, 401, "{body}");

    let token = wait_for(Duration::from_secs(15), || {
        let out = server.kubectl(&["create", "token", "default", "-n", ns])?;
        Ok(out
            .status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned()))
    })?;
    let sa = NodeCaller::Token(token);
    let prober = user_certificate(cp_dir, dir, "prober", "probers")?;
    for (caller, user) in [
        (&sa, format!("system:serviceaccount:{ns}:default")),
        (&prober, "prober".to_owned()),
    ] {
        let (code, body) = node_port_get(port, &logs, caller)?;
        assert_eq!(code, 403, "{body}");
        let want = format!("Forbidden (user={user}, verb=get, resource=nodes, subresource=proxy)");
        assert!(body.contains(&format!("\"message\":\"{want}\"")), "{body}");
    }

    server.kubectl_ok_with(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: node-proxy-{ns}
rules:
- apiGroups: [\"\"]
  resources: [\"nodes/proxy\"]
  verbs: [\"get\"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: node-proxy-{ns}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: node-proxy-{ns}
subjects:
- kind: User
  name: prober
  apiGroup: rbac.authorization.k8s.io
- kind: ServiceAccount
  name: default
  namespace: {ns}
"
        ),
    )?;
    // The node remembers a denial for 30 s, as the kubelet does.
    for caller in [&sa, &prober] {
        let body = wait_for(Duration::from_secs(45), || {
            let (code, body) = node_port_get(port, &logs, caller)?;
            Ok((code == 200).then_some(body))
        })?;
        assert!(!body.contains("Forbidden"), "{body}");
    }
    server.kubectl_ok(&[
        "delete",
        "clusterrolebinding,clusterrole",
        &format!("node-proxy-{ns}"),
    ])?;
    Ok(())
}

/// Polls `check` every half second until it gives a value or `limit` passes.
fn wait_for<T>(
    limit: Duration,
    mut check: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check()? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn logs_manifests(ns: &str, ctl_dir: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: two, namespace: {ns}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: a, image: {DEMO}, command: [sh, -c, "echo from-a; echo a-second; exec sleep 3600"]}}
  - {{name: b, image: {DEMO}, command: [sh, -c, "echo from-b >&2; exec sleep 3600"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: again, namespace: {ns}}}
spec:
  terminationGracePeriodSeconds: 1
  volumes: [{{name: data, emptyDir: {{}}}}]
  containers:
  - name: c
    image: {DEMO}
    command: [sh, -c, 'n=$(($(cat /data/n 2>/dev/null || echo 0) + 1)); echo $n > /data/n; echo instance-$n; [ $n -ge 2 ] && exec sleep 3600; exit 1']
    volumeMounts: [{{name: data, mountPath: /data}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: ticker, namespace: {ns}}}
spec:
  restartPolicy: Never
  volumes: [{{name: ctl, hostPath: {{path: {ctl_dir}}}}}]
  containers:
  - name: c
    image: {DEMO}
    command: [sh, -c, 'echo first; while [ ! -e /ctl/go ]; do sleep 0.1; done; echo second']
    volumeMounts: [{{name: ctl, mountPath: /ctl}}]
"#
    )
}

/// kubectl's stdout, stderr and exit code.
fn kubectl_out(server: &Server, args: &[&str]) -> anyhow::Result<(String, String, i32)> {
    let out = server.kubectl(args)?;
    Ok((
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    ))
}

/// `kubectl logs`: the output, `-c`, `--tail`, `--timestamps`, `--previous`
/// after a restart, and the errors kubectl users know.
fn check_logs(server: &Server, agent: &Agent, ns: &str) -> anyhow::Result<()> {
    assert_eq!(
        server.kubectl_ok(&["logs", "two", "-c", "a", "-n", ns])?,
        "from-a\na-second\n"
    );
    // stderr is in the log too.
    assert_eq!(
        server.kubectl_ok(&["logs", "two", "-c", "b", "-n", ns])?,
        "from-b\n"
    );
    assert_eq!(
        server.kubectl_ok(&["logs", "two", "-c", "a", "--tail=1", "-n", ns])?,
        "a-second\n"
    );
    let stamped = server.kubectl_ok(&["logs", "two", "-c", "a", "--timestamps", "-n", ns])?;
    let first = stamped.lines().next().unwrap_or_default();
    let (time, text) = first.split_once(' ').unwrap_or_default();
    assert!(
        time.len() >= 20 && time.starts_with("20") && time.ends_with('Z') && text == "from-a",
        "--timestamps: {stamped}"
    );

    // --previous: the instance before the restart.
    wait(
        "again restarted once and running",
        Duration::from_secs(30),
        agent,
        || {
            let out = server.kubectl_ok(&[
            "get", "pod", "again", "-n", ns, "-o",
            "jsonpath={.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].state.running.startedAt}",
        ])?;
            Ok(out.starts_with("1 20").then_some(()))
        },
    )?;
    assert_eq!(
        server.kubectl_ok(&["logs", "again", "-n", ns])?,
        "instance-2\n"
    );
    assert_eq!(
        server.kubectl_ok(&["logs", "again", "--previous", "-n", ns])?,
        "instance-1\n"
    );

    // Errors, as Kubernetes words them.
    let (_, err, code) = kubectl_out(server, &["logs", "two", "-c", "a", "--previous", "-n", ns])?;
    assert!(
        code != 0 && err.contains(r#"previous terminated container "a" in pod "two" not found"#),
        "{err}"
    );
    let (_, err, code) = kubectl_out(server, &["logs", "two", "-c", "nope", "-n", ns])?;
    assert!(
        code != 0 && err.contains("container nope is not valid for pod two"),
        "{err}"
    );
    let (_, err, code) = kubectl_out(server, &["logs", "ghost", "-n", ns])?;
    assert!(
        code != 0 && err.contains(r#"pods "ghost" not found"#),
        "{err}"
    );
    Ok(())
}

/// `kubectl logs -f` shows lines as they come and ends when the container
/// does (the container waits for the test to say go).
fn check_follow(server: &Server, agent: &Agent, ns: &str, ctl_dir: &Path) -> anyhow::Result<()> {
    use std::io::BufRead as _;
    wait("ticker running", Duration::from_secs(30), agent, || {
        let out = server.kubectl_ok(&[
            "get",
            "pod",
            "ticker",
            "-n",
            ns,
            "-o",
            "jsonpath={.status.phase}",
        ])?;
        Ok((out == "Running").then_some(()))
    })?;
    let mut child = server
        .kubectl_command(&["logs", "-f", "ticker", "-n", ns])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().context("kubectl stdout")?;
    let mut lines = std::io::BufReader::new(stdout).lines();
    let first = lines.next().transpose()?;
    assert_eq!(first.as_deref(), Some("first"));
    // The container is still waiting, so kubectl is still following.
    assert!(child.try_wait()?.is_none(), "kubectl logs -f ended early");
    std::fs::write(ctl_dir.join("go"), "")?;
    let second = lines.next().transpose()?;
    assert_eq!(second.as_deref(), Some("second"));
    // The container ended: so does kubectl, successfully.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("kubectl logs -f did not end after the container did");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "kubectl logs -f: {status}");
    assert!(lines.next().is_none(), "nothing after the last line");
    Ok(())
}

/// `kubectl exec`: output, stdin, exit codes and the errors kubectl users know.
fn check_exec(server: &Server, ns: &str) -> anyhow::Result<()> {
    assert_eq!(
        server.kubectl_ok(&[
            "exec",
            "two",
            "-c",
            "b",
            "-n",
            ns,
            "--",
            "cat",
            "/etc/hostname"
        ])?,
        "two\n"
    );
    let (out, err, code) = kubectl_out(
        server,
        &[
            "exec",
            "two",
            "-c",
            "a",
            "-n",
            ns,
            "--",
            "sh",
            "-c",
            "echo hi; echo oops >&2; exit 3",
        ],
    )?;
    assert_eq!((out.as_str(), code), ("hi\n", 3), "stderr: {err}");
    assert!(err.contains("oops"), "{err}");
    assert_eq!(
        server.kubectl_ok_with(
            &["exec", "-i", "two", "-c", "a", "-n", ns, "--", "cat"],
            "piped in\n"
        )?,
        "piped in\n"
    );
    // A command that is not in the image fails like Kubernetes: an
    // internal error naming it, exit code 1.
    let (_, err, code) = kubectl_out(server, &["exec", "two", "-c", "a", "-n", ns, "--", "nope"])?;
    assert!(
        code == 1
            && err.contains("Internal error occurred")
            && err.contains("\"nope\": executable file not found"),
        "code {code}: {err}"
    );
    let (_, err, code) = kubectl_out(
        server,
        &["exec", "two", "-c", "zzz", "-n", ns, "--", "true"],
    )?;
    assert!(
        code != 0 && err.contains("container zzz is not valid for pod two"),
        "{err}"
    );
    let (_, err, code) = kubectl_out(server, &["exec", "ghost", "-n", ns, "--", "true"])?;
    assert!(
        code != 0 && err.contains(r#"pods "ghost" not found"#),
        "{err}"
    );
    Ok(())
}

#[test]
fn kubectl_logs_and_exec_through_the_agent() -> anyhow::Result<()> {
    require_root!();
    let dir = tempfile::tempdir()?;
    let node = unique_name("lg");
    let ns = unique_name("ns");
    let (server, agent) = start_single_node(dir.path(), &node, true)?;
    let ctl_dir = dir.path().join("ctl");
    std::fs::create_dir_all(&ctl_dir)?;

    // The node reports where it serves logs and exec.
    let port = wait(
        "node Ready with a kubelet port",
        Duration::from_secs(15),
        &agent,
        || {
            let out = server.kubectl_ok(&[
            "get", "node", &node, "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.status.daemonEndpoints.kubeletEndpoint.Port}",
        ])?;
            Ok(out
                .strip_prefix("True ")
                .and_then(|p| p.parse::<u16>().ok())
                .filter(|p| *p != 0))
        },
    )?;
    // The node's endpoint turns away a caller with no credential, as the
    // kubelet's webhook mode does: 401 Unauthorized.
    let (code, body) = node_port_get(port, "/healthz", &NodeCaller::Nobody)?;
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("\"message\":\"Unauthorized\""), "{body}");

    server.kubectl_ok_with(
        &["apply", "-f", "-"],
        &logs_manifests(&ns, &ctl_dir.to_string_lossy()),
    )?;
    wait("two running", Duration::from_secs(30), &agent, || {
        let out = server.kubectl_ok(&[
            "get",
            "pod",
            "two",
            "-n",
            &ns,
            "-o",
            "jsonpath={.status.containerStatuses[*].state.running.startedAt}",
        ])?;
        Ok((out.split_whitespace().count() == 2).then_some(()))
    })?;

    check_logs(&server, &agent, &ns)?;
    check_follow(&server, &agent, &ns, &ctl_dir)?;
    check_exec(&server, &ns)?;
    check_node_port_auth(&server, &dir.path().join("cp"), &ctl_dir, port, &ns)?;
    // Through the API server (its kubelet client holds
    // system:kubelet-api-admin) logs and exec still work.
    check_exec(&server, &ns)?;

    server.kubectl_ok(&["delete", "namespace", &ns, "--wait=false"])?;
    wait("pods gone", Duration::from_secs(30), &agent, || {
        let out = server.kubectl_ok(&["get", "pods", "-n", &ns, "--no-headers"])?;
        Ok(out.trim().is_empty().then_some(()))
    })?;
    drop(agent);
    drop(server);
    Ok(())
}
