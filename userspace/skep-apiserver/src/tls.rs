//! TLS for the API server: the serving certificate, optional client
//! certificates verified against the cluster CA, and the identity a verified
//! certificate carries (CN = user, O = groups, as in Kubernetes).

use std::sync::Arc;

use rustls::{RootCertStore, ServerConfig, crypto::CryptoProvider, server::WebPkiClientVerifier};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};

use crate::pki::Pki;

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM blob did not parse.
    #[error("failed to parse the {what} PEM")]
    Pem {
        /// Which blob.
        what: &'static str,
        /// What the parser reported.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// rustls refused the configuration.
    #[error("failed to build the TLS configuration")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("failed to build the client certificate verifier")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// Who made a request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// User name; empty for an anonymous request.
    pub user: String,
    /// Groups the user is in.
    pub groups: Vec<String>,
}

impl Identity {
    /// Whether the request came with no credentials.
    #[must_use]
    pub fn is_anonymous(&self) -> bool {
        self.user.is_empty()
    }

    /// The identity in a verified client certificate.
    #[must_use]
    pub fn from_certificate(der: &CertificateDer<'_>) -> Self {
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
            return Self::default();
        };
        let subject = cert.subject();
        let user = subject
            .iter_common_name()
            .find_map(|cn| cn.as_str().ok())
            .unwrap_or_default()
            .to_owned();
        let groups = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok())
            .map(str::to_owned)
            .collect();
        Self { user, groups }
    }
}

/// The server's rustls configuration: HTTP/2 and HTTP/1.1, client
/// certificates from the cluster CA accepted but not required (requests
/// without one are anonymous and refused by the handlers).
pub fn server_config(pki: &Pki) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pem = |what, pem: &str| {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .map_err(|source| TlsError::Pem { what, source })
    };
    let mut roots = RootCertStore::empty();
    roots.add(pem("CA certificate", &pki.ca.cert_pem)?)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let key = PrivateKeyDer::from_pem_slice(pki.server.key_pem.as_bytes()).map_err(|source| {
        TlsError::Pem {
            what: "server key",
            source,
        }
    })?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![
                pem("server certificate", &pki.server.cert_pem)?,
                pem("CA certificate", &pki.ca.cert_pem)?,
            ],
            key,
        )?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The process-wide rustls crypto provider, installed once (clients such as
/// tonic's look it up).
pub fn install_default_provider() {
    let _ = CryptoProvider::install_default(rustls::crypto::ring::default_provider());
}
