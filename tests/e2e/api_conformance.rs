//! The API as client libraries other than kubectl use it (issue 16): query
//! parameters read as kube-apiserver reads them (`?watch=True` from the
//! official Python client, `?watch=1`, Go's integer parsing and its error
//! text), field selectors with an empty term, and `deletecollection`
//! (namespaced and cluster-scoped, in discovery, answered with the list of
//! what it deleted). The official Python client (Debian's
//! `python3-kubernetes`, for `/usr/bin/python3`) runs on the host against
//! the server's admin kubeconfig.

use std::process::Command;

use anyhow::Context as _;
use serde_json::Value;
use skep_e2e::cluster::Server;
use skep_e2e::unique_name;

/// Creates three ConfigMaps (selected by `app` apart from the namespace's
/// `kube-root-ca.crt`), watches them (the client sends
/// `watch=True`), lists with a trailing-comma field selector, deletes the
/// two labelled `app=x` as a collection, and prints what it saw.
const PROGRAM: &str = r#"
import sys
from kubernetes import client, config, watch

config.load_kube_config(sys.argv[1])
v1 = client.CoreV1Api()
ns = sys.argv[2]
for name, app in [("a", "x"), ("b", "x"), ("c", "y")]:
    v1.create_namespaced_config_map(ns, {"metadata": {"name": name, "labels": {"app": app}}})
seen = []
for event in watch.Watch().stream(v1.list_namespaced_config_map, ns, label_selector="app", timeout_seconds=2):
    seen.append(event["type"] + ":" + event["object"].metadata.name)
print("watched " + ",".join(sorted(seen)), flush=True)
picked = v1.list_namespaced_config_map(ns, field_selector="metadata.name=c,")
print("selected " + ",".join(cm.metadata.name for cm in picked.items), flush=True)
done = v1.delete_collection_namespaced_config_map(ns, label_selector="app=x")
print("deleted kind " + str(done.kind), flush=True)
left = v1.list_namespaced_config_map(ns, label_selector="app")
print("left " + ",".join(cm.metadata.name for cm in left.items), flush=True)
"#;

fn kubectl_raw(server: &Server, verb: &str, path: &str) -> anyhow::Result<String> {
    server.kubectl_ok(&[verb, "--raw", path])
}

/// The JSON lines of a watch answered to `kubectl get --raw`.
fn watch_lines(server: &Server, path: &str) -> anyhow::Result<Vec<Value>> {
    let out = kubectl_raw(server, "get", path)?;
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("watch line {l:?}")))
        .collect()
}

#[test]
fn client_libraries_see_upstream_query_parsing_and_deletecollection() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let ns = unique_name("conform");
    server.create_namespace(&ns)?;
    python_client(&server, &ns)?;
    query_parsing(&server, &ns)?;
    namespaced_deletecollection(&server, &ns)?;
    cluster_scoped_deletecollection(&server)?;
    discovery(&server)
}

/// The official Python client against the server.
fn python_client(server: &Server, ns: &str) -> anyhow::Result<()> {
    eprintln!("--- the official Python client: watch, field selector, deletecollection");
    let out = Command::new("/usr/bin/python3")
        .args(["-c", PROGRAM])
        .arg(server.kubeconfig())
        .arg(ns)
        .output()
        .context("failed to run /usr/bin/python3 (is python3-kubernetes installed?)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "python client failed: {stdout}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log_tail()
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "watched ADDED:a,ADDED:b,ADDED:c",
            "selected c",
            "deleted kind ConfigMapList",
            "left c",
        ],
        "{stdout}"
    );
    Ok(())
}

/// `watch=1` and a bad integer over plain HTTP.
fn query_parsing(server: &Server, ns: &str) -> anyhow::Result<()> {
    eprintln!("--- watch=1 streams events, bad integers are Go's 400");
    let events = watch_lines(
        server,
        &format!("/api/v1/namespaces/{ns}/configmaps?watch=1&timeoutSeconds=1&labelSelector=app"),
    )?;
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(types, ["ADDED"], "{events:?}");
    let bad = server.kubectl(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/{ns}/configmaps?limit=abc"),
    ])?;
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success()
            && stderr.contains(r#"strconv.ParseInt: parsing "abc": invalid syntax"#),
        "{stderr}"
    );
    Ok(())
}

/// `DELETE` on a namespaced collection: dry run, selectors, the answer.
fn namespaced_deletecollection(server: &Server, ns: &str) -> anyhow::Result<()> {
    eprintln!("--- deletecollection over HTTP: the deleted list, dry run, selectors");
    for name in ["d", "e"] {
        server.apply(&format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels:\n    app: z\n"
        ))?;
    }
    let dry: Value = serde_json::from_str(&kubectl_raw(
        server,
        "delete",
        &format!("/api/v1/namespaces/{ns}/configmaps?labelSelector=app%3Dz&dryRun=All"),
    )?)?;
    assert_eq!(dry["items"].as_array().map(Vec::len), Some(2), "{dry}");
    let deleted: Value = serde_json::from_str(&kubectl_raw(
        server,
        "delete",
        &format!(
            "/api/v1/namespaces/{ns}/configmaps?labelSelector=app%3Dz&fieldSelector=metadata.name%3Dd%2C"
        ),
    )?)?;
    assert_eq!(
        (
            deleted["kind"].as_str(),
            deleted["apiVersion"].as_str(),
            deleted["items"][0]["metadata"]["name"].as_str(),
            deleted["items"].as_array().map(Vec::len),
        ),
        (Some("ConfigMapList"), Some("v1"), Some("d"), Some(1)),
        "{deleted}"
    );
    let names = server.kubectl_ok(&["get", "configmaps", "-n", ns, "-l", "app", "-o", "name"])?;
    let mut names: Vec<&str> = names.lines().collect();
    names.sort_unstable();
    assert_eq!(names, ["configmap/c", "configmap/e"]);
    Ok(())
}

/// `DELETE` on a cluster-scoped collection; namespaces refuse it.
fn cluster_scoped_deletecollection(server: &Server) -> anyhow::Result<()> {
    eprintln!("--- cluster-scoped deletecollection; namespaces have none");
    let label = unique_name("drop");
    for name in ["one", "two"] {
        server.apply(&format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: {label}-{name}\n  labels:\n    conform: {label}\nrules: []\n"
        ))?;
    }
    let deleted: Value = serde_json::from_str(&kubectl_raw(
        server,
        "delete",
        &format!("/apis/rbac.authorization.k8s.io/v1/clusterroles?labelSelector=conform%3D{label}"),
    )?)?;
    assert_eq!(deleted["kind"], "ClusterRoleList", "{deleted}");
    assert_eq!(
        deleted["items"].as_array().map(Vec::len),
        Some(2),
        "{deleted}"
    );
    let left = server.kubectl_ok(&[
        "get",
        "clusterroles",
        "-l",
        &format!("conform={label}"),
        "-o",
        "name",
    ])?;
    assert_eq!(left.trim(), "");
    let refused = server.kubectl(&["delete", "--raw", "/api/v1/namespaces"])?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("MethodNotAllowed"),
        "{stderr}"
    );
    Ok(())
}

/// Discovery names the verb and the category.
fn discovery(server: &Server) -> anyhow::Result<()> {
    eprintln!("--- discovery lists deletecollection and the all category");
    let core: Value = serde_json::from_str(&kubectl_raw(server, "get", "/api/v1")?)?;
    let resource = |name: &str| {
        core["resources"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["name"] == name))
            .cloned()
            .unwrap_or_default()
    };
    assert!(
        resource("configmaps")["verbs"]
            .as_array()
            .is_some_and(|v| v.iter().any(|v| v == "deletecollection"))
    );
    assert!(
        resource("pods")["categories"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c == "all"))
    );
    Ok(())
}
