//! ServiceAccount tokens with the real kubectl: `kubectl create token` with
//! the default kubectl, the oldest (1.27) and the newest (1.33) on this
//! machine; upstream's refusal of a one-minute token; TokenReview of what
//! was issued (user, groups, audiences); a pod-bound token that dies with
//! its pod; OIDC discovery readable without credentials.

use std::{
    io::Write as _,
    path::Path,
    process::{Command, Output, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail, ensure};
use serde_json::{Value, json};
use skep_e2e::cluster::Server;

const NAMESPACE: &str = "tokens";
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The kubectl versions besides the default one (`kubectl` on PATH).
const OTHER_KUBECTLS: &[&str] = &[
    "/usr/lib/google-cloud-sdk/bin/kubectl.1.27",
    "/usr/lib/google-cloud-sdk/bin/kubectl.1.33",
];
const POD: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: holder
  namespace: tokens
spec:
  containers:
  - name: main
    image: busybox
";

/// `KUBECTL --kubeconfig … ARGS`, with `stdin` if given.
fn run(
    server: &Server,
    kubectl: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> anyhow::Result<Output> {
    let mut child = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(server.kubeconfig())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to run {kubectl}"))?;
    let mut input = child.stdin.take().context("no stdin")?;
    input.write_all(stdin.unwrap_or_default().as_bytes())?;
    drop(input);
    Ok(child.wait_with_output()?)
}

fn run_ok(server: &Server, kubectl: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = run(server, kubectl, args, None)?;
    ensure!(
        out.status.success(),
        "{kubectl} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A TokenReview of `token` (for `audiences`, if any), posted raw: it is a
/// create-only kind that `kubectl create -f` would look up in discovery.
fn review(server: &Server, token: &str, audiences: &[&str]) -> anyhow::Result<Value> {
    let mut body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
        "spec": {"token": token}});
    if !audiences.is_empty() {
        body["spec"]["audiences"] = json!(audiences);
    }
    let out = run(
        server,
        "kubectl",
        &[
            "create",
            "--raw",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            "-f",
            "-",
        ],
        Some(&body.to_string()),
    )?;
    ensure!(
        out.status.success(),
        "TokenReview failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    serde_json::from_slice(&out.stdout).context("TokenReview response")
}

fn assert_default_account(review: &Value) {
    assert_eq!(review["status"]["authenticated"], true, "{review}");
    assert_eq!(
        review["status"]["user"]["username"], "system:serviceaccount:tokens:default",
        "{review}"
    );
    assert_eq!(
        review["status"]["user"]["groups"],
        json!([
            "system:serviceaccounts",
            "system:serviceaccounts:tokens",
            "system:authenticated"
        ]),
        "{review}"
    );
}

#[test]
fn kubectl_create_token_issues_tokens_that_token_review_accepts() -> anyhow::Result<()> {
    for kubectl in OTHER_KUBECTLS {
        ensure!(
            Path::new(kubectl).is_file(),
            "{kubectl} is missing: this test checks the oldest and newest kubectl against the server"
        );
    }
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    server.create_namespace(NAMESPACE)?;
    server.wait_for(
        "the default service account",
        Duration::from_secs(20),
        || {
            Ok(server
                .kubectl(&["get", "serviceaccount", "default", "-n", NAMESPACE])?
                .status
                .success()
                .then_some(()))
        },
    )?;

    for kubectl in std::iter::once(&"kubectl").chain(OTHER_KUBECTLS) {
        let token = run_ok(
            &server,
            kubectl,
            &["create", "token", "default", "-n", NAMESPACE],
        )?;
        let review = review(&server, &token, &[])?;
        assert_default_account(&review);
        assert_eq!(
            review["status"]["audiences"],
            json!([ISSUER]),
            "{kubectl}: {review}"
        );

        // Upstream's ten-minute minimum, with its message.
        let out = run(
            &server,
            kubectl,
            &[
                "create",
                "token",
                "default",
                "-n",
                NAMESPACE,
                "--duration=1m",
            ],
            None,
        )?;
        ensure!(
            !out.status.success(),
            "{kubectl}: a one-minute token was issued"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            stderr.trim(),
            "error: failed to create token: TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes",
            "{kubectl}"
        );
    }

    // --duration and --audience.
    let token = run_ok(
        &server,
        "kubectl",
        &[
            "create",
            "token",
            "default",
            "-n",
            NAMESPACE,
            "--duration=2h",
            "--audience=vault",
        ],
    )?;
    let refused = review(&server, &token, &[])?;
    assert_eq!(refused["status"].get("authenticated"), None, "{refused}");
    assert_eq!(
        refused["status"]["error"],
        format!(
            "[invalid bearer token, token audiences [\"vault\"] is invalid for the target audiences [\"{ISSUER}\"]]"
        )
    );
    let accepted = review(&server, &token, &["vault"])?;
    assert_default_account(&accepted);
    assert_eq!(accepted["status"]["audiences"], json!(["vault"]));

    // A missing account.
    let out = run(
        &server,
        "kubectl",
        &["create", "token", "nobody", "-n", NAMESPACE],
        None,
    )?;
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: failed to create token: serviceaccounts \"nobody\" not found"
    );
    Ok(())
}

#[test]
fn a_pod_bound_token_stops_authenticating_when_its_pod_is_deleted() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    server.create_namespace(NAMESPACE)?;
    server.wait_for(
        "the default service account",
        Duration::from_secs(20),
        || {
            Ok(server
                .kubectl(&["get", "serviceaccount", "default", "-n", NAMESPACE])?
                .status
                .success()
                .then_some(()))
        },
    )?;
    server.kubectl_ok_with(&["create", "-f", "-"], POD)?;
    let pod_uid = server.kubectl_ok(&[
        "get",
        "pod",
        "holder",
        "-n",
        NAMESPACE,
        "-o",
        "jsonpath={.metadata.uid}",
    ])?;

    let token = server.kubectl_ok(&[
        "create",
        "token",
        "default",
        "-n",
        NAMESPACE,
        "--bound-object-kind=Pod",
        "--bound-object-name=holder",
    ])?;
    let token = token.trim();
    let bound = review(&server, token, &[])?;
    assert_default_account(&bound);
    let extra = &bound["status"]["user"]["extra"];
    assert_eq!(
        extra["authentication.kubernetes.io/pod-name"],
        json!(["holder"])
    );
    assert_eq!(
        extra["authentication.kubernetes.io/pod-uid"],
        json!([pod_uid])
    );

    server.kubectl_ok(&[
        "delete",
        "pod",
        "holder",
        "-n",
        NAMESPACE,
        "--grace-period=0",
        "--force",
        "--wait",
    ])?;
    let dead = review(&server, token, &[])?;
    assert_eq!(dead["status"].get("authenticated"), None, "{dead}");
    assert_eq!(
        dead["status"]["error"],
        "[invalid bearer token, service account token has been invalidated]"
    );
    // A pod of the same name does not revive it.
    server.kubectl_ok_with(&["create", "-f", "-"], POD)?;
    let still_dead = review(&server, token, &[])?;
    assert_eq!(
        still_dead["status"].get("authenticated"),
        None,
        "{still_dead}"
    );
    Ok(())
}

#[test]
fn oidc_discovery_is_served_to_service_accounts() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let address = server.kubectl_ok(&[
        "config",
        "view",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ])?;
    // As upstream, `system:service-account-issuer-discovery` is bound to
    // service accounts only: a token reads it, an anonymous caller is refused.
    let token = server.kubectl_ok(&["create", "token", "default"])?;
    let token = token.trim().to_owned();
    let fetch_as = |path: &str, bearer: Option<&str>| -> anyhow::Result<(String, String)> {
        let mut curl = Command::new("curl");
        curl.args(["-sk", "-D", "-", &format!("{address}{path}")]);
        if let Some(token) = bearer {
            curl.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        let out = curl.output().context("failed to run curl")?;
        if !out.status.success() {
            bail!(
                "curl {path} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        Ok((head.to_ascii_lowercase(), body.to_owned()))
    };
    let fetch = |path: &str| fetch_as(path, Some(&token));
    let (head, _) = fetch_as("/.well-known/openid-configuration", None)?;
    assert!(head.contains(" 403"), "anonymous discovery: {head}");
    let (head, body) = fetch("/.well-known/openid-configuration")?;
    assert!(head.starts_with("http/") && head.contains(" 200"), "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    assert!(
        head.contains("cache-control: public, max-age=3600"),
        "{head}"
    );
    let config: Value = serde_json::from_str(&body)?;
    assert_eq!(config["issuer"], ISSUER);
    assert_eq!(
        config["id_token_signing_alg_values_supported"],
        json!(["ES256"])
    );
    let (head, body) = fetch("/openid/v1/jwks")?;
    assert!(
        head.contains("content-type: application/jwk-set+json"),
        "{head}"
    );
    let keys: Value = serde_json::from_str(&body)?;
    assert_eq!(keys["keys"][0]["alg"], "ES256");
    assert_eq!(keys["keys"][0]["use"], "sig");
    Ok(())
}
