//! Identity and access with the real kubectl (the default one and the
//! oldest and newest installed): a new user is refused with Kubernetes'
//! exact message, a RoleBinding lets them in and deleting it shuts them out;
//! `auth can-i` (and `--list`) agree with real requests; impersonation is
//! itself authorized; an escalation attempt is refused; anonymous requests
//! get only the public endpoints, and nothing with `--anonymous-auth=false`.

use std::{path::Path, path::PathBuf, process::Command, time::Duration};

use anyhow::{Context as _, bail};
use skep_e2e::{cluster::Server, process::skep_binary};

/// The kubectls to drive: the default and the oldest and newest installed.
const KUBECTLS: &[&str] = &[
    "kubectl",
    "/usr/lib/google-cloud-sdk/bin/kubectl.1.27",
    "/usr/lib/google-cloud-sdk/bin/kubectl.1.33",
];

/// A kubeconfig for `user` in `groups`, made by `skep kubeconfig user`.
fn user_kubeconfig(data_dir: &Path, user: &str, groups: &[&str]) -> anyhow::Result<PathBuf> {
    let mut cmd = Command::new(skep_binary()?);
    cmd.args(["kubeconfig", "user", "--data-dir"])
        .arg(data_dir)
        .args(["--client-name", user]);
    for g in groups {
        cmd.args(["--org", g]);
    }
    let out = cmd.output()?;
    if !out.status.success() {
        bail!(
            "skep kubeconfig user failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let path = data_dir.join(format!("{user}.kubeconfig"));
    std::fs::write(&path, &out.stdout)?;
    Ok(path)
}

/// `kubectl ARGS` as someone: (success, stdout, stderr).
fn run(kubectl: &str, kubeconfig: &Path, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
    let out = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .with_context(|| format!("failed to run {kubectl}"))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

const LIST_DENIED: &str = "Error from server (Forbidden): pods is forbidden: User \"jane\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\"";

const READER: &str = "\
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: pod-reader
  namespace: default
rules:
- apiGroups: [\"\"]
  resources: [\"pods\"]
  verbs: [\"get\", \"list\", \"watch\"]
- apiGroups: [\"rbac.authorization.k8s.io\"]
  resources: [\"roles\", \"rolebindings\"]
  verbs: [\"create\", \"get\"]
";

const BINDING: &str = "\
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: jane-reads
  namespace: default
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: pod-reader
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: User
  name: jane
";

#[test]
fn a_role_binding_lets_a_user_in_and_its_deletion_shuts_them_out() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let jane = user_kubeconfig(dir.path(), "jane", &["dev"])?;

    for kubectl in KUBECTLS {
        let (ok, _, err) = run(kubectl, &jane, &["get", "pods", "-n", "default"])?;
        assert!(!ok, "{kubectl}: jane listed pods before any binding");
        assert_eq!(err.trim(), LIST_DENIED, "{kubectl}");
        let (ok, out, _) = run(kubectl, &jane, &["auth", "can-i", "list", "pods"])?;
        assert!(!ok, "{kubectl}: can-i said yes");
        assert_eq!(out.trim(), "no", "{kubectl}");
    }

    server.apply(READER)?;
    server.apply(BINDING)?;
    server.wait_for("jane may list pods", Duration::from_secs(10), || {
        Ok(run("kubectl", &jane, &["get", "pods", "-n", "default"])?
            .0
            .then_some(()))
    })?;

    for kubectl in KUBECTLS {
        // can-i agrees with real requests, both ways.
        let (ok, out, _) = run(kubectl, &jane, &["auth", "can-i", "list", "pods"])?;
        assert!(ok && out.trim() == "yes", "{kubectl}: can-i list: {out}");
        assert!(run(kubectl, &jane, &["get", "pods"])?.0, "{kubectl}");
        let (ok, out, _) = run(kubectl, &jane, &["auth", "can-i", "delete", "pods"])?;
        assert!(!ok && out.trim() == "no", "{kubectl}: can-i delete: {out}");
        let (ok, _, err) = run(kubectl, &jane, &["delete", "pod", "nothing"])?;
        assert!(!ok);
        assert!(
            err.contains("pods \"nothing\" is forbidden: User \"jane\" cannot delete resource \"pods\" in API group \"\" in the namespace \"default\""),
            "{kubectl}: {err}"
        );
        let (ok, out, _) = run(
            kubectl,
            &jane,
            &["auth", "can-i", "list", "pods", "-n", "kube-system"],
        )?;
        assert!(!ok && out.trim() == "no", "{kubectl}");
        assert!(!run(kubectl, &jane, &["get", "pods", "-n", "kube-system"])?.0);

        // --list shows the role's rules.
        let (ok, out, err) = run(kubectl, &jane, &["auth", "can-i", "--list"])?;
        assert!(ok, "{kubectl}: can-i --list: {err}");
        let pods = out
            .lines()
            .find(|l| l.starts_with("pods "))
            .with_context(|| format!("{kubectl}: no pods row in\n{out}"))?;
        assert!(pods.contains("[get list watch]"), "{kubectl}: {pods}");
    }

    // whoami (SelfSubjectReview; 1.27 asks v1beta1, newer ones v1).
    for kubectl in KUBECTLS {
        let (ok, out, err) = run(kubectl, &jane, &["auth", "whoami", "-o", "json"])?;
        assert!(ok, "{kubectl}: whoami: {err}");
        let review: serde_json::Value = serde_json::from_str(&out)?;
        assert_eq!(
            review["status"]["userInfo"]["username"], "jane",
            "{kubectl}"
        );
        assert_eq!(
            review["status"]["userInfo"]["groups"],
            serde_json::json!(["dev", "system:authenticated"]),
            "{kubectl}"
        );
    }

    // Escalation: jane may create roles and bindings, but not grant more
    // than she holds.
    let secrets_role = "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: secret-reader\n  namespace: default\nrules:\n- apiGroups: [\"\"]\n  resources: [\"secrets\"]\n  verbs: [\"get\"]\n";
    let (ok, _, err) = run_with(&jane, &["create", "-f", "-"], secrets_role)?;
    assert!(!ok, "jane escalated with a role");
    assert!(
        err.contains("is attempting to grant RBAC permissions not currently held"),
        "{err}"
    );
    let admin_binding = "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: jane-admin\n  namespace: default\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: admin\nsubjects:\n- apiGroup: rbac.authorization.k8s.io\n  kind: User\n  name: jane\n";
    let (ok, _, err) = run_with(&jane, &["create", "-f", "-"], admin_binding)?;
    assert!(!ok, "jane bound herself to admin");
    assert!(
        err.contains(
            "rolebindings.rbac.authorization.k8s.io \"jane-admin\" is forbidden: user \"jane\""
        ),
        "{err}"
    );
    // What she holds she may grant.
    let pods_role = "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: pod-getter\n  namespace: default\nrules:\n- apiGroups: [\"\"]\n  resources: [\"pods\"]\n  verbs: [\"get\"]\n";
    let (ok, _, err) = run_with(&jane, &["create", "-f", "-"], pods_role)?;
    assert!(ok, "jane could not grant what she holds: {err}");

    // Impersonation is authorized too.
    let admin = server.kubeconfig();
    let (ok, _, err) = run("kubectl", &admin, &["--as", "jane", "get", "secrets"])?;
    assert!(!ok);
    assert!(
        err.contains("secrets is forbidden: User \"jane\" cannot list resource \"secrets\""),
        "{err}"
    );
    assert!(run("kubectl", &admin, &["--as", "jane", "get", "pods"])?.0);
    let (ok, _, err) = run("kubectl", &jane, &["--as", "bob", "get", "pods"])?;
    assert!(!ok);
    assert!(
        err.contains("users \"bob\" is forbidden: User \"jane\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"),
        "{err}"
    );

    // Deleting the binding shuts her out again.
    server.kubectl_ok(&["delete", "rolebinding", "jane-reads", "-n", "default"])?;
    server.wait_for("jane shut out", Duration::from_secs(10), || {
        let (ok, _, err) = run("kubectl", &jane, &["get", "pods", "-n", "default"])?;
        Ok((!ok && err.trim() == LIST_DENIED).then_some(()))
    })?;
    Ok(())
}

fn run_with(
    kubeconfig: &Path,
    args: &[&str],
    stdin: &str,
) -> anyhow::Result<(bool, String, String)> {
    use std::io::Write as _;
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("no stdin")?
        .write_all(stdin.as_bytes())?;
    let out = child.wait_with_output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// `curl` of `path` on the server with no credentials: (status, body).
fn anonymous_get(server: &Server, path: &str) -> anyhow::Result<(u16, String)> {
    let address = server.kubectl_ok(&[
        "config",
        "view",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ])?;
    // kubectl with no credentials prompts for a password; curl asks as is.
    let out = Command::new("curl")
        .args(["-sk", "-w", "\n%{http_code}", &format!("{address}{path}")])
        .output()
        .context("failed to run curl")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    Ok((code.trim().parse()?, body.to_owned()))
}

#[test]
fn anonymous_requests_get_only_public_endpoints() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let (code, body) = anonymous_get(&server, "/version")?;
    assert_eq!(code, 200, "anonymous /version: {body}");
    assert!(body.contains("gitVersion"));
    assert_eq!(anonymous_get(&server, "/healthz")?.0, 200);
    let (code, body) = anonymous_get(&server, "/api/v1/namespaces/default/pods")?;
    assert_eq!(code, 403);
    let status: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(
        status["message"],
        "pods is forbidden: User \"system:anonymous\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
    );
    drop(server);

    let dir = tempfile::tempdir()?;
    let server = Server::start_with(dir.path(), &["--anonymous-auth=false"])?;
    let (code, body) = anonymous_get(&server, "/version")?;
    assert_eq!(
        code, 401,
        "anonymous request with --anonymous-auth=false: {body}"
    );
    Ok(())
}
