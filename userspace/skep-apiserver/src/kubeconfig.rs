//! Writing the admin kubeconfig kubectl uses to reach the API server.

use std::path::Path;

use base64::Engine as _;
use serde_json::json;

use crate::pki::{CertPair, Pki, PkiError, write_file};

/// Writes a kubeconfig at `path` for `server` (an `https://host:port` URL)
/// with the cluster CA and the admin client certificate embedded.
pub fn write_admin(path: &Path, server: &str, pki: &Pki) -> Result<(), PkiError> {
    write(path, server, pki, &pki.admin, "skep-admin", None)
}

/// Writes the kubeconfig node `node` uses (its agent reads it too), with
/// the node's own client certificate, and its agent's serving certificate
/// as the user extension [`skep_proto::SERVING_EXTENSION`].
///
/// The serving certificate travels with the client credentials because
/// both say the same thing — "this is node `node`" — and whoever holds the
/// kubeconfig can already act as the node; one file is all a node needs.
/// It names the node (DNS name `<node>`) rather than an address, since the
/// node's address is only known once its agent reports it.
pub fn write_node(path: &Path, server: &str, pki: &Pki, node: &str) -> Result<(), PkiError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let pair = pki.node_credentials(dir, node)?;
    let serving = pki.node_serving(dir, node)?;
    write(
        path,
        server,
        pki,
        &pair,
        &format!("system:node:{node}"),
        Some(&serving),
    )
}

/// A kubeconfig (YAML) for `server` that authenticates as `user` in
/// `groups` with a new client certificate from the cluster CA.
pub fn for_user(server: &str, pki: &Pki, user: &str, groups: &[&str]) -> Result<String, PkiError> {
    let pair = pki.user_credentials(user, groups)?;
    Ok(render(server, pki, &pair, user, None))
}

/// The API server URL an existing kubeconfig names (its first cluster's).
#[must_use]
pub fn server_of(kubeconfig: &str) -> Option<String> {
    let config: serde_json::Value = serde_yaml_ng::from_str(kubeconfig).ok()?;
    config
        .pointer("/clusters/0/cluster/server")?
        .as_str()
        .map(str::to_owned)
}

fn write(
    path: &Path,
    server: &str,
    pki: &Pki,
    client: &CertPair,
    user: &str,
    serving: Option<&CertPair>,
) -> Result<(), PkiError> {
    write_file(path, &render(server, pki, client, user, serving), 0o600)
}

fn render(
    server: &str,
    pki: &Pki,
    client: &CertPair,
    user: &str,
    serving: Option<&CertPair>,
) -> String {
    let b64 = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
    let mut user_entry = json!({
        "client-certificate-data": b64(&client.cert_pem),
        "client-key-data": b64(&client.key_pem),
    });
    if let Some(serving) = serving {
        user_entry["extensions"] = json!([{
            "name": skep_proto::SERVING_EXTENSION,
            "extension": {
                "apiVersion": "skep.io/v1",
                "kind": "KubeletServingCertificate",
                "certificate-data": b64(&serving.cert_pem),
                "key-data": b64(&serving.key_pem),
            },
        }]);
    }
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "skep",
            "cluster": {
                "server": server,
                "certificate-authority-data": b64(&pki.ca.cert_pem),
            },
        }],
        "users": [{
            "name": user,
            "user": user_entry,
        }],
        "contexts": [{
            "name": "skep",
            "context": {"cluster": "skep", "user": user, "namespace": "default"},
        }],
        "current-context": "skep",
    });
    serde_yaml_ng::to_string(&config).unwrap_or_default()
}
