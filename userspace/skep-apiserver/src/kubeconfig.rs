//! Writing the admin kubeconfig kubectl uses to reach the API server.

use std::path::Path;

use base64::Engine as _;
use serde_json::json;

use crate::pki::{Pki, PkiError, write_file};

/// Writes a kubeconfig at `path` for `server` (an `https://host:port` URL)
/// with the cluster CA and the admin client certificate embedded.
pub fn write_admin(path: &Path, server: &str, pki: &Pki) -> Result<(), PkiError> {
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
            "name": "skep-admin",
            "user": {
                "client-certificate-data": b64(&pki.admin.cert_pem),
                "client-key-data": b64(&pki.admin.key_pem),
            },
        }],
        "contexts": [{
            "name": "skep",
            "context": {"cluster": "skep", "user": "skep-admin", "namespace": "default"},
        }],
        "current-context": "skep",
    });
    let yaml = serde_yaml_ng::to_string(&config).unwrap_or_default();
    write_file(path, &yaml, 0o600)
}
