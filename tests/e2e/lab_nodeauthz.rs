//! The node authorizer and NodeRestriction on a 2-node lab, with the real
//! kubectl and each node's own credential (the kubeconfig its agent runs
//! with): a node reads the Secret and ConfigMap a pod bound to it mounts,
//! not those mounted only by a pod on the other node, lists no Secrets,
//! and may neither read nor change the other node's Node object; each refusal is
//! upstream's 403 with its exact message.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use skep_e2e::lab::Lab;
use skep_e2e::{require_root, unique_name};

/// A Secret and a ConfigMap named after `tag`, and a pod on `node` that
/// mounts both.
fn fixtures(ns: &str, tag: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: secret-{tag}, namespace: {ns}}}\nstringData: {{k: v}}\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: config-{tag}, namespace: {ns}}}\ndata: {{k: v}}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {{name: pod-{tag}, namespace: {ns}}}\nspec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: skep/busybox:demo\n    imagePullPolicy: Never\n    command: [sh, -c, 'exec sleep 100000']\n    volumeMounts: [{{name: s, mountPath: /s}}, {{name: c, mountPath: /c}}]\n  volumes:\n  - {{name: s, secret: {{secretName: secret-{tag}}}}}\n  - {{name: c, configMap: {{name: config-{tag}}}}}\n"
    )
}

/// `kubectl --kubeconfig <node's> ARGS`: (success, stdout, stderr).
fn as_node(lab: &Lab, node: &str, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
    let kubeconfig: PathBuf = lab
        .data_dir
        .join("nodes")
        .join(format!("{node}.kubeconfig"));
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(args)
        .output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    ))
}

/// [`as_node`] until it succeeds (the authorizer's graph follows pods
/// through a watch, so a pod just created counts a moment later); its
/// stdout, or the last refusal after 30 s.
fn eventually_as_node(lab: &Lab, node: &str, args: &[&str]) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, out, err) = as_node(lab, node, args)?;
        if ok {
            return Ok(out);
        }
        if Instant::now() > deadline {
            anyhow::bail!("{node}: kubectl {args:?}: {err}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn lab_a_node_reads_only_what_its_own_pods_mount() -> anyhow::Result<()> {
    require_root!();
    let dir = tempfile::tempdir()?;
    let mut lab = Lab::up(dir.path(), 2)?;
    let (a, b) = (lab.nodes[0].name.clone(), lab.nodes[1].name.clone());
    let ns = unique_name("nauthz");
    lab.kubectl_ok(&["create", "namespace", &ns])?;
    lab.kubectl_ok_with(
        &["apply", "-f", "-"],
        &format!("{}---\n{}", fixtures(&ns, "a", &a), fixtures(&ns, "b", &b)),
    )?;

    eprintln!("--- node {a} reads what its own pod mounts");
    for object in ["secret/secret-a", "configmap/config-a"] {
        let out = eventually_as_node(&lab, &a, &["get", "-n", &ns, object, "-o", "name"])?;
        assert_eq!(out.trim(), object);
    }

    eprintln!("--- and not what only the pod on {b} mounts");
    for (kind, name) in [("secrets", "secret-b"), ("configmaps", "config-b")] {
        let (ok, _, err) = as_node(&lab, &a, &["get", "-n", &ns, kind, name])?;
        assert!(!ok, "{a} read {kind}/{name}");
        assert_eq!(
            err,
            format!(
                "Error from server (Forbidden): {kind} \"{name}\" is forbidden: User \"system:node:{a}\" cannot get resource \"{kind}\" in API group \"\" in the namespace \"{ns}\": no relationship found between node '{a}' and this object"
            )
        );
    }
    let (ok, _, err) = as_node(&lab, &a, &["get", "-n", &ns, "secrets"])?;
    assert!(!ok, "{a} listed secrets");
    assert!(
        err.starts_with(&format!(
            "Error from server (Forbidden): secrets is forbidden: User \"system:node:{a}\" cannot list resource \"secrets\" in API group \"\" in the namespace \"{ns}\""
        )),
        "{err}"
    );

    eprintln!("--- {a} may label its own Node, not read or change {b}'s");
    let (ok, _, err) = as_node(&lab, &a, &["label", "node", &a, "skep.test/own=yes"])?;
    assert!(ok, "{a} labelling itself: {err}");
    // Reads of other Nodes are the node authorizer's (1.32's selector
    // rules: only its own Node object).
    let (ok, _, err) = as_node(&lab, &a, &["get", "node", &b])?;
    assert!(!ok, "{a} read {b}");
    assert_eq!(
        err,
        format!(
            "Error from server (Forbidden): nodes \"{b}\" is forbidden: User \"system:node:{a}\" cannot get resource \"nodes\" in API group \"\" at the cluster scope: node '{a}' cannot read '{b}', only its own Node object"
        )
    );
    // Writes pass the authorizer and are NodeRestriction's to refuse
    // (kubectl's patch and label read first, so the write goes raw).
    let body = dir.path().join("node-b.json");
    std::fs::write(
        &body,
        format!(r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"{b}"}}}}"#),
    )?;
    let body = body.to_string_lossy().into_owned();
    let (ok, _, err) = as_node(
        &lab,
        &a,
        &[
            "replace",
            "--raw",
            &format!("/api/v1/nodes/{b}"),
            "-f",
            &body,
        ],
    )?;
    assert!(!ok, "{a} replaced {b}");
    assert!(
        err.contains(&format!(
            "nodes \"{b}\" is forbidden: node \"{a}\" is not allowed to modify node \"{b}\""
        )),
        "{err}"
    );

    eprintln!("--- once pod-b runs on {a}'s side too, {a} may read secret-b");
    lab.kubectl_ok_with(
        &["apply", "-f", "-"],
        &fixtures(&ns, "b", &a).replace("pod-b", "pod-b-on-a"),
    )?;
    eventually_as_node(&lab, &a, &["get", "-n", &ns, "secret", "secret-b"])?;

    lab.down()?;
    let left = lab.leftovers();
    assert!(left.is_empty(), "left behind: {left:#?}");
    Ok(())
}
