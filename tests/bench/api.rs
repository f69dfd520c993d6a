//! An HTTPS client of skep's API with the identity of a kubeconfig.

use std::path::Path;

/// A client holding `kubeconfig`'s CA and client certificate, and the
/// server's base URL (`https://host:port`).
pub fn tls_client(kubeconfig: &Path) -> anyhow::Result<(reqwest::Client, String)> {
    let kubeconfig: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(kubeconfig)?)?;
    let b64 = |v: &serde_yaml_ng::Value| -> anyhow::Result<Vec<u8>> {
        use base64::Engine as _;
        Ok(base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or_default())?)
    };
    let cluster = &kubeconfig["clusters"][0]["cluster"];
    let ca = b64(&cluster["certificate-authority-data"])?;
    let mut identity = b64(&kubeconfig["users"][0]["user"]["client-certificate-data"])?;
    identity.extend(b64(&kubeconfig["users"][0]["user"]["client-key-data"])?);
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca)?])
        .identity(reqwest::Identity::from_pem(&identity)?)
        .build()?;
    let base = cluster["server"]
        .as_str()
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_owned();
    Ok((client, base))
}
