//! The node's side of the connection: credentials from the node's
//! kubeconfig, and a TLS channel to the API server.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::v1::node_sync_client::NodeSyncClient;

/// Why the node could not read its credentials or connect.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig could not be read.
    #[error("failed to read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The kubeconfig is not what `skep` writes for a node.
    #[error("invalid kubeconfig {path}: {why}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The channel could not be set up.
    #[error("failed to connect to {server}")]
    Connect {
        /// The server URL.
        server: String,
        /// What tonic reported.
        #[source]
        source: tonic::transport::Error,
    },
}

/// What a node needs to reach the API server as itself.
#[derive(Clone, Debug)]
pub struct NodeCredentials {
    /// `https://host:port`.
    pub server: String,
    /// The cluster CA, PEM.
    pub ca_pem: String,
    /// The node's client certificate, PEM.
    pub cert_pem: String,
    /// Its key, PEM.
    pub key_pem: String,
    /// The node's serving certificate, when the kubeconfig carries one.
    pub serving: Option<ServingCertificate>,
}

/// The certificate a node agent serves logs and exec with: issued by the
/// cluster CA for DNS name `<node name>` (the API server dials the node's
/// address and checks the certificate names the node the pod is bound to).
/// It travels in the node kubeconfig as the user extension
/// [`crate::SERVING_EXTENSION`] with `certificate-data` and `key-data`.
#[derive(Clone, Debug)]
pub struct ServingCertificate {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its key, PEM.
    pub key_pem: String,
}

impl NodeCredentials {
    /// Reads the credentials of the current context of a kubeconfig with
    /// embedded (`-data`) certificates, as `skep` writes them.
    pub fn from_kubeconfig(path: &Path) -> Result<Self, ClientError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClientError::Read {
            path: path.to_owned(),
            source,
        })?;
        let invalid = |why: &str| ClientError::Invalid {
            path: path.to_owned(),
            why: why.to_owned(),
        };
        let doc: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&text).map_err(|e| invalid(&e.to_string()))?;
        let first = |section: &str, field: &str| doc[section][0][field].clone();
        let field = |v: &serde_yaml_ng::Value, name: &str| -> Result<String, ClientError> {
            v[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| invalid(&format!("no {name}")))
        };
        let pem = |v: &serde_yaml_ng::Value, name: &str| -> Result<String, ClientError> {
            let b64 = field(v, name)?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| invalid(&format!("{name} is not base64")))?;
            String::from_utf8(bytes).map_err(|_| invalid(&format!("{name} is not PEM")))
        };
        let cluster = first("clusters", "cluster");
        let user = first("users", "user");
        let serving = match user["extensions"].as_sequence().and_then(|list| {
            list.iter()
                .find(|e| e["name"].as_str() == Some(crate::SERVING_EXTENSION))
        }) {
            Some(ext) => Some(ServingCertificate {
                cert_pem: pem(&ext["extension"], "certificate-data")?,
                key_pem: pem(&ext["extension"], "key-data")?,
            }),
            None => None,
        };
        Ok(Self {
            server: field(&cluster, "server")?,
            ca_pem: pem(&cluster, "certificate-authority-data")?,
            cert_pem: pem(&user, "client-certificate-data")?,
            key_pem: pem(&user, "client-key-data")?,
            serving,
        })
    }

    /// A lazily connecting node-sync client: it (re)connects on use, so a
    /// server that is down yet or restarting is not an error here.
    pub fn client(&self) -> Result<NodeSyncClient<Channel>, ClientError> {
        let connect = |source| ClientError::Connect {
            server: self.server.clone(),
            source,
        };
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem));
        let channel = Endpoint::from_shared(self.server.clone())
            .map_err(connect)?
            .tls_config(tls)
            .map_err(connect)?
            .connect_timeout(std::time::Duration::from_secs(5))
            .http2_keep_alive_interval(std::time::Duration::from_secs(20))
            .connect_lazy();
        Ok(NodeSyncClient::new(channel).max_decoding_message_size(16 * 1024 * 1024))
    }
}
