//! NetworkPolicy validation through the real kubectl against a real
//! `skep server`: invalid policies (a bad `except`, an empty peer, an
//! `endPort` below `port`, ipBlock beside a selector, a bad IPv6 CIDR) are
//! refused with kube-apiserver's field errors on kubectl's stderr and leave
//! nothing in the store, on create and on update; valid edge cases are stored.

use std::path::Path;

use anyhow::ensure;
use skep_e2e::cluster::Server;

const NAMESPACE: &str = "x";

/// A NetworkPolicy in namespace x named `name` with `spec` (YAML, indented
/// two spaces).
fn policy(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  namespace: {NAMESPACE}\nspec:\n{spec}"
    )
}

/// `kubectl apply -f FILE` of `manifest`: its stderr, failing if it succeeds.
fn apply_refused(server: &Server, dir: &Path, manifest: &str) -> anyhow::Result<String> {
    let file = dir.join("refused.yaml");
    std::fs::write(&file, manifest)?;
    let out = server.kubectl(&["apply", "-f", &file.to_string_lossy()])?;
    ensure!(!out.status.success(), "kubectl apply accepted:\n{manifest}");
    Ok(String::from_utf8_lossy(&out.stderr).trim().to_owned())
}

/// The names of the stored NetworkPolicies of namespace x.
fn stored(server: &Server) -> anyhow::Result<String> {
    let names = server.kubectl_ok(&["get", "networkpolicy", "-n", NAMESPACE, "-o", "name"])?;
    Ok(names.trim().to_owned())
}

#[test]
fn kubectl_apply_of_invalid_network_policies_is_refused_with_field_errors() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    server.create_namespace(NAMESPACE)?;

    let refused = [
        (
            policy(
                "bad-except",
                "  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}\n",
            ),
            "The NetworkPolicy \"bad-except\" is invalid: spec.ingress[0].from[0].ipBlock.except[0]: Invalid value: \"11.0.0.0/16\": must be a strict subset of `cidr`",
        ),
        (
            policy(
                "empty-peer",
                "  podSelector: {}\n  egress:\n  - to:\n    - {}\n",
            ),
            "The NetworkPolicy \"empty-peer\" is invalid: spec.egress[0].to[0]: Required value: must specify a peer",
        ),
        (
            policy(
                "short-range",
                "  podSelector: {}\n  ingress:\n  - ports:\n    - {protocol: TCP, port: 8080, endPort: 80}\n",
            ),
            "The NetworkPolicy \"short-range\" is invalid: spec.ingress[0].ports[0].endPort: Invalid value: 80: must be greater than or equal to `port`",
        ),
        (
            policy(
                "two-kinds",
                "  podSelector: {}\n  ingress:\n  - from:\n    - podSelector: {}\n      ipBlock: {cidr: 10.0.0.0/8}\n",
            ),
            "The NetworkPolicy \"two-kinds\" is invalid: spec.ingress[0].from[0]: Forbidden: may not specify both ipBlock and another peer",
        ),
        (
            policy(
                "bad-v6",
                "  podSelector: {}\n  egress:\n  - to:\n    - ipBlock: {cidr: \"2001:db8::/129\"}\n",
            ),
            "The NetworkPolicy \"bad-v6\" is invalid: spec.egress[0].to[0].ipBlock.cidr: Invalid value: \"2001:db8::/129\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
        ),
    ];
    for (manifest, want) in &refused {
        let stderr = apply_refused(&server, dir.path(), manifest)?;
        assert!(
            stderr.contains(want),
            "expected {want:?} on stderr, got: {stderr}"
        );
    }
    assert_eq!(stored(&server)?, "", "a refused policy was stored");

    // Valid edge cases are stored: /0 with no except, endPort == port, IPv6.
    let good = policy(
        "good",
        "  podSelector: {}\n  policyTypes: [Ingress, Egress]\n  ingress:\n  - from:\n    - ipBlock: {cidr: 0.0.0.0/0, except: []}\n    ports:\n    - {port: 80, endPort: 80}\n    - {protocol: UDP, port: dns}\n  egress:\n  - to:\n    - ipBlock: {cidr: \"2001:db8::/32\", except: [\"2001:db8:1::/48\"]}\n",
    );
    server.apply(&good)?;
    assert_eq!(stored(&server)?, "networkpolicy.networking.k8s.io/good");
    let except_path = "jsonpath={.spec.egress[0].to[0].ipBlock.except[0]}";
    let get_except = || {
        server.kubectl_ok(&[
            "get",
            "networkpolicy",
            "good",
            "-n",
            NAMESPACE,
            "-o",
            except_path,
        ])
    };
    assert_eq!(get_except()?, "2001:db8:1::/48");

    // An update to an invalid spec is refused the same way and changes nothing.
    let stderr = apply_refused(
        &server,
        dir.path(),
        &good.replace("2001:db8:1::/48", "2001:db9::/48"),
    )?;
    let want = "The NetworkPolicy \"good\" is invalid: spec.egress[0].to[0].ipBlock.except[0]: Invalid value: \"2001:db9::/48\": must be a strict subset of `cidr`";
    assert!(
        stderr.contains(want),
        "expected {want:?} on stderr, got: {stderr}"
    );
    assert_eq!(get_except()?, "2001:db8:1::/48");
    Ok(())
}
