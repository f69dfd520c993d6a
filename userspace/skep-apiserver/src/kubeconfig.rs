//! Writing the admin kubeconfig kubectl uses to reach the API server.

use std::path::Path;

use base64::Engine as _;
use serde_json::json;

use crate::pki::{CertPair, Pki, PkiError, write_file};

/// Writes a kubeconfig at `path` for `server` (an `https://host:port` URL)
/// with the cluster CA and the admin client certificate embedded.
pub fn write_admin(path: &Path, server: &str, pki: &Pki) -> Result<(), PkiError> {
    write(path, server, pki, &pki.admin, "skep-admin")
}

/// Writes the kubeconfig node `node` uses (its agent reads it too), with
/// the node's own client certificate.
pub fn write_node(path: &Path, server: &str, pki: &Pki, node: &str) -> Result<(), PkiError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let pair = pki.node_credentials(dir, node)?;
    write(path, server, pki, &pair, &format!("system:node:{node}"))
}

fn write(
    path: &Path,
    server: &str,
    pki: &Pki,
    client: &CertPair,
    user: &str,
) -> Result<(), PkiError> {
    let b64 = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
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
            "user": {
                "client-certificate-data": b64(&client.cert_pem),
                "client-key-data": b64(&client.key_pem),
            },
        }],
        "contexts": [{
            "name": "skep",
            "context": {"cluster": "skep", "user": user, "namespace": "default"},
        }],
        "current-context": "skep",
    });
    let yaml = serde_yaml_ng::to_string(&config).unwrap_or_default();
    write_file(path, &yaml, 0o600)
}
