//! The official Kubernetes client for Python in a pod (issue 17): in-cluster
//! configuration with no kubeconfig, the pod's ServiceAccount token, RBAC,
//! and a token the agent renews while the program runs.
//!
//! The pod declares its own API-access volume with the shortest lifetime the
//! API allows (`expirationSeconds: 600`), so the agent renews the token
//! after about 480 s; the client re-reads the token file at most a minute
//! after that (`InClusterConfigLoader._token_refresh_period`). The program
//! prints, with every list, the `exp` claim of the token it sent, so the
//! test sees the renewed token in use and the lists still succeeding. The
//! test takes about nine minutes.

use std::time::Duration;

use anyhow::Context as _;
use skep_e2e::agent::{Agent, wait_node_ready};
use skep_e2e::cluster::Server;
use skep_e2e::python_image::{PYTHON_IMAGE, import_python_image};
use skep_e2e::{require_root, unique_name};

use crate::agent::wait;

const MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Every 10 s: list the pod's own namespace (allowed) and `kube-system`
/// (refused), printing what happened and the `exp` of the token sent.
const PROGRAM: &str = r#"
import base64, json, sys, time
from kubernetes import client, config
from kubernetes.client.rest import ApiException

cfg = client.Configuration()
config.load_incluster_config(client_configuration=cfg)
api = client.CoreV1Api(client.ApiClient(cfg))
ns = open("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read().strip()

def exp():
    # What the next request sends: the loader re-reads the token file
    # once its refresh period is up.
    jwt = cfg.get_api_key_with_prefix("authorization").split()[-1]
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"]

while True:
    try:
        e = exp()
        names = ",".join(sorted(p.metadata.name for p in api.list_namespaced_pod(ns).items))
        print(f"list ok exp={e} {names}", flush=True)
    except Exception as err:
        print(f"list failed {err!r}".replace("\n", " "), flush=True)
    try:
        api.list_namespaced_pod("kube-system")
        print("other ok", flush=True)
    except ApiException as err:
        print(f"other {err.status}", flush=True)
    except Exception as err:
        print(f"other failed {err!r}".replace("\n", " "), flush=True)
    time.sleep(10)
"#;

/// The host's first global IPv4 address.
fn host_address() -> anyhow::Result<String> {
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            let mut words = l.split_whitespace().skip_while(|w| *w != "inet").skip(1);
            words.next()?.split('/').next().map(str::to_owned)
        })
        .context("the host has no global IPv4 address for the API server")
}

fn manifests(ns: &str) -> String {
    let program = PROGRAM.lines().fold(String::new(), |mut out, l| {
        out.push_str("    ");
        out.push_str(l);
        out.push('\n');
        out
    });
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: reader, namespace: {ns}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: pod-reader, namespace: {ns}}}
rules:
- {{apiGroups: [""], resources: [pods], verbs: [get, list]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: reader-reads-pods, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}}
subjects:
- {{kind: ServiceAccount, name: reader, namespace: {ns}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: program, namespace: {ns}}}
data:
  main.py: |
{program}---
apiVersion: v1
kind: Pod
metadata: {{name: pyclient, namespace: {ns}}}
spec:
  serviceAccountName: reader
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  volumes:
  - name: program
    configMap: {{name: program}}
  - name: api-access
    projected:
      sources:
      - serviceAccountToken: {{path: token, expirationSeconds: 600}}
      - configMap:
          name: kube-root-ca.crt
          items: [{{key: ca.crt, path: ca.crt}}]
      - downwardAPI:
          items: [{{path: namespace, fieldRef: {{fieldPath: metadata.namespace}}}}]
  containers:
  - name: c
    image: {PYTHON_IMAGE}
    command: [python3, -u, /app/main.py]
    volumeMounts:
    - {{name: program, mountPath: /app}}
    - {{name: api-access, mountPath: {MOUNT}, readOnly: true}}
"#
    )
}

/// The pod's log so far (empty until it has started).
fn log(server: &Server, ns: &str) -> anyhow::Result<String> {
    let out = server.kubectl(&["logs", "pyclient", "-n", ns])?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `exp` of each successful list's token, in order, with its listed
/// pod names.
fn lists(log: &str) -> Vec<(u64, String)> {
    log.lines()
        .filter_map(|l| l.strip_prefix("list ok exp="))
        .filter_map(|rest| {
            let (exp, names) = rest.split_once(' ').unwrap_or((rest, ""));
            Some((exp.parse().ok()?, names.to_owned()))
        })
        .collect()
}

fn diagnose(server: &Server, agent: &Agent, ns: &str) -> String {
    format!(
        "pod log:\n{}\nagent log:\n{}",
        log(server, ns).unwrap_or_default(),
        agent.log_tail()
    )
}

#[test]
fn the_python_client_lists_pods_in_cluster_across_a_token_renewal() -> anyhow::Result<()> {
    require_root!();
    let dir = tempfile::tempdir()?;
    let node = unique_name("py");
    let ns = unique_name("ns");
    import_python_image(&dir.path().join("node"))?;
    // The pod reaches the API server through the `kubernetes` Service, whose
    // endpoint is the advertised address: one of the host's (loopback would
    // be the pod's own). The server listens on all addresses, as by default,
    // and its serving certificate names the advertised address and the
    // Service IP by itself (the client checks the latter).
    let host_ip = host_address()?;
    let server = Server::start_listening(
        &dir.path().join("cp"),
        "0.0.0.0:0",
        &["--node-kubeconfig", &node, "--advertise-address", &host_ip],
    )?;
    let agent = Agent::start(
        &dir.path().join("node"),
        &dir.path().join(format!("cp/nodes/{node}.kubeconfig")),
        &node,
    )?;
    wait_node_ready(&server, &agent)?;
    server.kubectl_ok_with(&["apply", "-f", "-"], &manifests(&ns))?;

    eprintln!("--- first lists");
    let first_exp = wait(
        "the client's first list and refusal",
        Duration::from_mins(2),
        &agent,
        || {
            let log = log(&server, &ns)?;
            let first = lists(&log).into_iter().next();
            Ok(first.filter(|_| log.lines().any(|l| l.starts_with("other "))))
        },
    )
    .map_err(|e| e.context(diagnose(&server, &agent, &ns)))?;
    assert_eq!(
        first_exp.1, "pyclient",
        "its own namespace lists its own pod"
    );
    let log_now = log(&server, &ns)?;
    let other = log_now
        .lines()
        .find(|l| l.starts_with("other "))
        .unwrap_or_default();
    assert_eq!(other, "other 403", "kube-system is refused:\n{log_now}");

    eprintln!("--- waiting for the renewed token (about 9 minutes)");
    let renewed = wait(
        "a list with the renewed token",
        Duration::from_mins(12),
        &agent,
        || {
            let log = log(&server, &ns)?;
            Ok(lists(&log).into_iter().find(|(exp, _)| *exp > first_exp.0))
        },
    )
    .map_err(|e| e.context(diagnose(&server, &agent, &ns)))?;
    assert_eq!(renewed.1, "pyclient", "the renewed token lists too");
    // A token lives 600 s; the renewal came at about 80% of that.
    assert!(
        (400..=700).contains(&(renewed.0 - first_exp.0)),
        "renewed token's exp {} vs first {}",
        renewed.0,
        first_exp.0
    );

    let log = log(&server, &ns)?;
    assert!(
        !log.lines().any(|l| l.starts_with("list failed")),
        "every list succeeded:\n{log}"
    );
    assert!(
        log.lines()
            .filter(|l| l.starts_with("other "))
            .all(|l| l == "other 403"),
        "kube-system refused every time:\n{log}"
    );
    drop(agent);
    Ok(())
}
