//! The control plane driven by the real kubectl: objects round-trip through
//! the API and the Raft/RocksDB store, watches see changes live, bad input
//! gets Kubernetes-style errors, and a restart loses nothing.

use std::{
    io::{BufRead as _, BufReader},
    process::Stdio,
    sync::mpsc,
    time::Duration,
};

use anyhow::Context as _;
use skep_e2e::cluster::Server;

const NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: e2e\n";

const CONFIGMAP: &str = "\
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: e2e
  labels:
    app: demo
data:
  mode: fast
";

#[test]
fn kubectl_round_trips_objects_and_survives_a_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut server = Server::start(dir.path())?;

    server.kubectl_ok_with(&["create", "-f", "-"], NAMESPACE)?;
    server.kubectl_ok_with(&["create", "-f", "-"], CONFIGMAP)?;
    let mode = server.kubectl_ok(&[
        "get",
        "configmap",
        "settings",
        "-n",
        "e2e",
        "-o",
        "jsonpath={.data.mode}",
    ])?;
    assert_eq!(mode, "fast");

    // Label (a merge patch) and a selector that finds it by the new label.
    server.kubectl_ok(&["label", "configmap", "settings", "-n", "e2e", "tier=gold"])?;
    let names = server.kubectl_ok(&[
        "get",
        "configmaps",
        "-n",
        "e2e",
        "-l",
        "app=demo,tier=gold",
        "-o",
        "name",
    ])?;
    assert_eq!(names.trim(), "configmap/settings");
    let none = server.kubectl_ok(&[
        "get",
        "configmaps",
        "-n",
        "e2e",
        "-l",
        "tier=silver",
        "-o",
        "name",
    ])?;
    assert_eq!(none.trim(), "");

    // Every object and its resourceVersion survive a restart.
    let before = server.kubectl_ok(&["get", "configmap", "settings", "-n", "e2e", "-o", "json"])?;
    let before: serde_json::Value = serde_json::from_str(&before)?;
    server.stop()?;
    let server = Server::start(dir.path())?;
    let after = server.kubectl_ok(&["get", "configmap", "settings", "-n", "e2e", "-o", "json"])?;
    let after: serde_json::Value = serde_json::from_str(&after)?;
    assert_eq!(before, after, "object changed across a restart");
    assert!(
        after["metadata"]["resourceVersion"]
            .as_str()
            .is_some_and(|rv| !rv.is_empty())
    );
    let namespaces = server.kubectl_ok(&["get", "namespaces", "-o", "name"])?;
    for ns in ["default", "kube-system", "e2e"] {
        assert!(
            namespaces.contains(&format!("namespace/{ns}")),
            "{namespaces}"
        );
    }
    Ok(())
}

#[test]
fn kubectl_watch_sees_added_modified_deleted() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    server.kubectl_ok_with(&["create", "-f", "-"], NAMESPACE)?;

    let mut watch = server
        .kubectl_command(&[
            "get",
            "configmaps",
            "-n",
            "e2e",
            "--watch-only",
            "--output-watch-events",
            "-o",
            "custom-columns=EVENT:.type,NAME:.object.metadata.name",
            "--no-headers",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = watch.stdout.take().context("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // kubectl starts its watch asynchronously: create until the first event shows.
    std::thread::sleep(Duration::from_millis(500));
    server.kubectl_ok_with(&["create", "-f", "-"], CONFIGMAP)?;
    server.kubectl_ok(&["label", "configmap", "settings", "-n", "e2e", "tier=gold"])?;
    server.kubectl_ok(&["delete", "configmap", "settings", "-n", "e2e", "--wait"])?;

    let mut seen = Vec::new();
    while seen.len() < 3 {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => seen.push(line.split_whitespace().collect::<Vec<_>>().join(" ")),
            Err(_) => break,
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!(
        seen,
        ["ADDED settings", "MODIFIED settings", "DELETED settings"],
        "log:\n{}",
        server.log_tail()
    );
    let gone = server.kubectl(&["get", "configmap", "settings", "-n", "e2e"])?;
    assert!(!gone.status.success());
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("NotFound"),
        "{gone:?}"
    );
    Ok(())
}

#[test]
fn bad_input_gets_kubernetes_errors_and_writes_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let fails = |args: &[&str], stdin: &str, expect: &[&str]| -> anyhow::Result<()> {
        let err = match server.kubectl_ok_with(args, stdin) {
            Ok(out) => anyhow::bail!("kubectl {args:?} succeeded: {out}"),
            Err(err) => format!("{err:#}"),
        };
        for needle in expect {
            assert!(err.contains(needle), "expected {needle:?} in: {err}");
        }
        Ok(())
    };

    fails(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: [unclosed",
        &["error"],
    )?;
    fails(
        &["create", "-f", "-", "--validate=false"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n",
        &["Invalid", "Bad_Name"],
    )?;
    let huge = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: huge\ndata:\n  blob: {}\n",
        "x".repeat(2 * 1024 * 1024)
    );
    fails(
        &["create", "-f", "-", "--validate=false"],
        &huge,
        &["\"huge\" is invalid", "Too long"],
    )?;

    // A stale resourceVersion is a conflict.
    server.kubectl_ok_with(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cas\ndata:\n  a: \"1\"\n",
    )?;
    let current = server.kubectl_ok(&["get", "configmap", "cas", "-o", "json"])?;
    server.kubectl_ok(&["label", "configmap", "cas", "bump=1"])?;
    fails(
        &["replace", "-f", "-", "--validate=false"],
        &current,
        &["Conflict", "the object has been modified"],
    )?;

    // A patch of an immutable field: a Deployment's selector.
    server.kubectl_ok_with(
        &["create", "-f", "-"],
        &DEPLOYMENT.replace("namespace: e2e", "namespace: default"),
    )?;
    fails(
        &[
            "patch",
            "deployment",
            "web",
            "--type=merge",
            "-p",
            r#"{"spec":{"selector":{"matchLabels":{"app":"other"}},"template":{"metadata":{"labels":{"app":"other"}}}}}"#,
        ],
        "",
        &["Invalid", "field is immutable"],
    )?;
    let selector = server.kubectl_ok(&[
        "get",
        "deployment",
        "web",
        "-o",
        "jsonpath={.spec.selector.matchLabels.app}",
    ])?;
    assert_eq!(selector, "web");

    // Logs of a pod that no node runs yet: kube-apiserver's answer.
    server.kubectl_ok_with(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: lonely\nspec:\n  schedulerName: nobody\n  containers:\n  - {name: main, image: busybox}\n",
    )?;
    fails(
        &["logs", "lonely"],
        "",
        &["BadRequest", "pod lonely does not have a host assigned"],
    )?;

    // Nothing of the failed writes was stored.
    // (kube-root-ca.crt is the root CA publisher's, in every namespace.)
    let names = server.kubectl_ok(&[
        "get",
        "configmaps",
        "-o",
        "name",
        "--field-selector",
        "metadata.name!=kube-root-ca.crt",
    ])?;
    assert_eq!(names.trim(), "configmap/cas");
    Ok(())
}

const DEPLOYMENT: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: e2e
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: httpd
        image: busybox:1.36
        command: [httpd, -f, -p, \"8080\"]
        ports:
        - containerPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: e2e
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
";

/// Storage, a secret and a network policy: the rest of a typical app's manifests.
const STORAGE_AND_POLICY: &str = "\
apiVersion: v1
kind: PersistentVolume
metadata:
  name: e2e-data
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: local
  hostPath: {path: /var/tmp/skep-e2e-data}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
  namespace: e2e
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: local
  resources:
    requests: {storage: 1Gi}
---
apiVersion: v1
kind: Secret
metadata:
  name: credentials
  namespace: e2e
type: Opaque
stringData:
  password: s3cret
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: web-ingress
  namespace: e2e
spec:
  podSelector:
    matchLabels: {app: web}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector:
        matchLabels: {role: client}
    ports:
    - {protocol: TCP, port: 8080}
";

#[test]
fn kubectl_apply_scale_describe_and_delete() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let manifests = manifest_dir(dir.path())?;
    let manifests_arg = manifests.to_string_lossy().into_owned();

    apply_and_check(&server, &manifests_arg)?;

    // Re-apply with a changed image: a strategic merge patch of the containers list.
    std::fs::write(
        manifests.join("20-web.yaml"),
        DEPLOYMENT.replace("busybox:1.36", "busybox:1.37"),
    )?;
    let reapplied = server.kubectl_ok(&["apply", "-f", &manifests_arg])?;
    assert!(
        reapplied.contains("deployment.apps/web configured"),
        "{reapplied}"
    );
    for same in [
        "configmap/settings unchanged",
        "persistentvolumeclaim/data unchanged",
        "networkpolicy.networking.k8s.io/web-ingress unchanged",
    ] {
        assert!(
            reapplied.contains(same),
            "{same:?} missing from: {reapplied}"
        );
    }
    let image = server.kubectl_ok(&[
        "get",
        "deployment",
        "web",
        "-n",
        "e2e",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image} {.metadata.generation}",
    ])?;
    assert_eq!(image, "busybox:1.37 2");

    // Server-side printing: kubectl shows the Deployment columns.
    let table = server.kubectl_ok(&["get", "deployments", "-n", "e2e"])?;
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{table}"
    );
    assert!(
        table.lines().nth(1).is_some_and(|l| l.starts_with("web ")),
        "{table}"
    );

    server.kubectl_ok(&["annotate", "service", "web", "-n", "e2e", "owner=team-a"])?;
    server.kubectl_ok(&["scale", "deployment", "web", "-n", "e2e", "--replicas=5"])?;
    let replicas = server.kubectl_ok(&[
        "get",
        "deployment",
        "web",
        "-n",
        "e2e",
        "-o",
        "jsonpath={.spec.replicas}",
    ])?;
    assert_eq!(replicas, "5");
    let owner = server.kubectl_ok(&[
        "get",
        "service",
        "web",
        "-n",
        "e2e",
        "-o",
        "jsonpath={.metadata.annotations.owner}",
    ])?;
    assert_eq!(owner, "team-a");

    let described = server.kubectl_ok(&["describe", "deployment", "web", "-n", "e2e"])?;
    assert!(described.contains("busybox:1.37"), "{described}");
    assert!(described.contains("5 desired"), "{described}");

    delete_everything(&server, &manifests_arg)
}

/// Applies the manifest directory and checks every kind was created as sent.
fn apply_and_check(server: &Server, manifests_arg: &str) -> anyhow::Result<()> {
    let applied = server.kubectl_ok(&["apply", "-f", manifests_arg])?;
    for made in [
        "namespace/e2e created",
        "configmap/settings created",
        "deployment.apps/web created",
        "service/web created",
        "persistentvolume/e2e-data created",
        "persistentvolumeclaim/data created",
        "secret/credentials created",
        "networkpolicy.networking.k8s.io/web-ingress created",
    ] {
        assert!(applied.contains(made), "{made:?} missing from: {applied}");
    }
    // stringData is folded into base64 data, as the API does.
    let password = server.kubectl_ok(&[
        "get",
        "secret",
        "credentials",
        "-n",
        "e2e",
        "-o",
        "jsonpath={.data.password}",
    ])?;
    assert_eq!(password, "czNjcmV0");
    let policy = server.kubectl_ok(&["get", "networkpolicy", "-n", "e2e"])?;
    assert!(
        policy.contains("web-ingress") && policy.contains("app=web"),
        "{policy}"
    );
    Ok(())
}

/// Deletes the manifests, namespace included, and checks nothing is left.
fn delete_everything(server: &Server, manifests_arg: &str) -> anyhow::Result<()> {
    // Deleting everything, namespace included, waits until it is all gone:
    // the namespace controller empties the namespace, then finalizes it.
    // kubectl deletes the files in order and the namespace comes first, so
    // the controller may remove an object before kubectl gets to it (as on
    // Kubernetes): `--ignore-not-found` is what users pass for that.
    server.kubectl_ok(&[
        "delete",
        "-f",
        manifests_arg,
        "--wait",
        "--timeout=60s",
        "--ignore-not-found",
    ])?;
    let left = server.kubectl_ok(&[
        "get",
        "deployments,replicasets,pods,services,configmaps,secrets,pvc,networkpolicies",
        "-n",
        "e2e",
        "-o",
        "name",
    ])?;
    assert_eq!(left.trim(), "", "left behind: {left}");
    let namespaces = server.kubectl_ok(&["get", "namespaces", "-o", "name"])?;
    assert!(!namespaces.contains("namespace/e2e"), "{namespaces}");
    let volumes = server.kubectl_ok(&["get", "pv", "-o", "name"])?;
    assert_eq!(volumes.trim(), "", "{volumes}");

    Ok(())
}

/// A directory of manifests: the namespace, a `ConfigMap`, a `Deployment`
/// and its `Service`, a PV and PVC, a `Secret` and a `NetworkPolicy`.
fn manifest_dir(parent: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let manifests = parent.join("manifests");
    std::fs::create_dir_all(&manifests)?;
    std::fs::write(manifests.join("00-namespace.yaml"), NAMESPACE)?;
    std::fs::write(manifests.join("10-configmap.yaml"), CONFIGMAP)?;
    std::fs::write(manifests.join("20-web.yaml"), DEPLOYMENT)?;
    std::fs::write(manifests.join("30-storage-policy.yaml"), STORAGE_AND_POLICY)?;
    Ok(manifests)
}

#[test]
fn kubectl_server_side_apply_records_field_managers() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    // Server-side apply creates and then owns fields.
    server.kubectl_ok_with(&["apply", "--server-side", "-f", "-"], NAMESPACE)?;
    server.kubectl_ok_with(&["apply", "--server-side", "-f", "-"], CONFIGMAP)?;
    let managers = server.kubectl_ok(&[
        "get",
        "configmap",
        "settings",
        "-n",
        "e2e",
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
    ])?;
    assert!(managers.contains("kubectl"), "{managers}");
    Ok(())
}

/// kubectl's generators: the `create …` ones send protobuf bodies
/// (`application/vnd.kubernetes.protobuf`, answered 415 before skep decoded
/// it); `run` and `expose` send JSON in kubectl 1.32 (seen with `-v=8`) and
/// are here because users run them side by side. Each creates the object a
/// YAML manifest would, checked field by field.
#[test]
fn kubectl_generators_send_protobuf() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    config_generators(&server)?;
    workload_generators(&server)?;

    // Validation is the same as for JSON: a bad name is rejected, nothing is written.
    let bad = server.kubectl(&[
        "create",
        "configmap",
        "Bad_Name",
        "-n",
        "gen",
        "--from-literal=a=b",
    ])?;
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "{bad:?}");
    assert!(
        stderr.contains("Invalid") && stderr.contains("Bad_Name"),
        "{stderr}"
    );
    let names = server.kubectl_ok(&[
        "get",
        "configmaps",
        "-n",
        "gen",
        "-o",
        "name",
        "--field-selector",
        "metadata.name!=kube-root-ca.crt",
    ])?;
    assert_eq!(names.trim(), "configmap/cfg");
    Ok(())
}

/// `kubectl get ARGS -n gen -o jsonpath=PATH`.
fn get_in_gen(server: &Server, args: &[&str], path: &str) -> anyhow::Result<String> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend(["-n", "gen", "-o"]);
    let jsonpath = format!("jsonpath={path}");
    all.push(&jsonpath);
    server.kubectl_ok(&all)
}

/// `create namespace`, `create configmap`, `create secret generic`.
fn config_generators(server: &Server) -> anyhow::Result<()> {
    let get = |args: &[&str], path: &str| get_in_gen(server, args, path);

    let out = server.kubectl_ok(&["create", "namespace", "gen"])?;
    assert!(out.contains("namespace/gen created"), "{out}");
    let phase =
        server.kubectl_ok(&["get", "namespace", "gen", "-o", "jsonpath={.status.phase}"])?;
    assert_eq!(phase, "Active");

    server.kubectl_ok(&[
        "create",
        "configmap",
        "cfg",
        "-n",
        "gen",
        "--from-literal=a=b",
    ])?;
    assert_eq!(get(&["configmap", "cfg"], "{.data.a}")?, "b");

    server.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "-n",
        "gen",
        "--from-literal=password=s3cr=t!",
    ])?;
    // base64 of "s3cr=t!", and the default type.
    assert_eq!(
        get(&["secret", "creds"], "{.data.password}")?,
        "czNjcj10IQ=="
    );
    assert_eq!(get(&["secret", "creds"], "{.type}")?, "Opaque");

    Ok(())
}

/// `create deployment`, `create service clusterip`, `expose`, `run`.
fn workload_generators(server: &Server) -> anyhow::Result<()> {
    let get = |args: &[&str], path: &str| get_in_gen(server, args, path);
    server.kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "-n",
        "gen",
        "--image=busybox",
        "--replicas=2",
    ])?;
    assert_eq!(
        get(
            &["deployment", "web"],
            "{.spec.replicas} {.spec.template.spec.containers[0].image} {.spec.strategy.type}"
        )?,
        "2 busybox RollingUpdate"
    );
    // An explicit zero is kept, not defaulted to 1.
    server.kubectl_ok(&[
        "create",
        "deployment",
        "idle",
        "-n",
        "gen",
        "--image=busybox",
        "--replicas=0",
    ])?;
    assert_eq!(get(&["deployment", "idle"], "{.spec.replicas}")?, "0");

    server.kubectl_ok(&[
        "create",
        "service",
        "clusterip",
        "api",
        "-n",
        "gen",
        "--tcp=80:8080",
    ])?;
    assert_eq!(
        get(
            &["service", "api"],
            "{.spec.type} {.spec.ports[0].port} {.spec.ports[0].targetPort} {.spec.selector.app}"
        )?,
        "ClusterIP 80 8080 api"
    );

    server.kubectl_ok(&["expose", "deployment", "web", "-n", "gen", "--port=80"])?;
    assert_eq!(
        get(
            &["service", "web"],
            "{.spec.ports[0].port} {.spec.ports[0].targetPort} {.spec.selector.app}"
        )?,
        "80 80 web"
    );

    server.kubectl_ok(&[
        "run",
        "one",
        "-n",
        "gen",
        "--image=busybox",
        "--",
        "sleep",
        "60",
    ])?;
    assert_eq!(
        get(
            &["pod", "one"],
            "{.metadata.labels.run} {.spec.containers[0].image} {.spec.containers[0].args[1]} {.spec.restartPolicy}"
        )?,
        "one busybox 60 Always"
    );

    Ok(())
}
