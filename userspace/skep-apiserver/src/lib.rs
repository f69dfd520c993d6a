//! skep's API server: the Kubernetes REST API over HTTPS that kubectl and the
//! controllers talk to, backed by `skep-store`. It makes the cluster CA and
//! certificates and the service account signing key on first start and
//! writes an admin kubeconfig.
#![deny(missing_docs)]
// The REST verbs' async state machines nest deeply (request → verb → store →
// Raft); computing their layout needs more than the default 128 queries.
#![recursion_limit = "256"]
#![expect(
    clippy::doc_markdown,
    reason = "Kubernetes kind names (ServiceAccount, ClusterRole, NodeRestriction, …) are plain words in these docs"
)]

pub mod api;
pub mod authn;
pub mod authz;
pub mod builtin_services;
pub mod escalation;
pub mod impersonate;
pub mod kubeconfig;
pub mod negotiation;
pub mod node_restriction;
pub mod nodesync;
pub mod openapi;
pub mod pki;
pub mod proxy;
pub mod rbac_bootstrap;
pub mod request;
pub mod reviews;
pub mod sa_tokens;
pub mod server;
pub mod tls;

#[cfg(test)]
mod nodesync_test;

use std::{future::Future, net::SocketAddr, path::PathBuf};

use serde_json::json;
pub use skep_api::service_alloc::{Ipv4Cidr, PortRange, ServiceRanges};
use skep_api::{admission, decode::Decoded, kinds};
use skep_store::Store;

/// Why the API server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiServerError {
    /// Certificates could not be loaded or made.
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    /// TLS configuration failed.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The listen address could not be bound.
    #[error("failed to listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Creating the built-in Services failed.
    #[error("failed to create the built-in Services")]
    BuiltinServices {
        /// What the API answered.
        #[source]
        source: skep_api::ApiError,
    },
    /// Creating the bootstrap RBAC policy or loading it failed.
    #[error("failed to set up RBAC")]
    Rbac {
        /// What the API answered.
        #[source]
        source: skep_api::ApiError,
    },
    /// The service account signing key could not be loaded or made.
    #[error(transparent)]
    ServiceAccountKey(#[from] sa_tokens::SaTokensError),
    /// Creating the built-in namespaces failed.
    #[error("failed to create the built-in namespace {name}: {message}")]
    Bootstrap {
        /// Namespace name.
        name: &'static str,
        /// What went wrong.
        message: String,
    },
}

/// Where the API server keeps its files and listens.
#[derive(Clone, Debug)]
pub struct ApiServerConfig {
    /// Data directory: `pki/` and `kubeconfig` go here.
    pub data_dir: PathBuf,
    /// Address to listen on (port 0 picks a free one).
    pub listen: SocketAddr,
    /// The address other members of the cluster (pods, through the
    /// `kubernetes` Service) reach the API server at (kube-apiserver's
    /// `--advertise-address`). `None`: the listen address, or `127.0.0.1`
    /// when that is unspecified (`0.0.0.0`).
    pub advertise_address: Option<std::net::IpAddr>,
    /// Extra names/IPs for the serving certificate.
    pub server_names: Vec<String>,
    /// Where Services get cluster IPs and node ports
    /// (`--service-cluster-ip-range`, `--service-node-port-range`).
    pub service_ranges: ServiceRanges,
    /// Whether requests without credentials are served as
    /// `system:anonymous` (`--anonymous-auth`, on by default as upstream);
    /// off, they get 401.
    pub anonymous_auth: bool,
    /// The service account token issuer (`--service-account-issuer`), also
    /// the API audience; by default [`sa_tokens::DEFAULT_ISSUER`].
    pub service_account_issuer: String,
}

impl Default for ApiServerConfig {
    /// kube-apiserver's defaults: `0.0.0.0:6443`, the default Service
    /// ranges and issuer, with state in `/var/lib/skep`.
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("/var/lib/skep"),
            listen: SocketAddr::from(([0, 0, 0, 0], 6443)),
            advertise_address: None,
            server_names: Vec::new(),
            service_ranges: ServiceRanges::default(),
            service_account_issuer: sa_tokens::DEFAULT_ISSUER.to_owned(),
            anonymous_auth: true,
        }
    }
}

/// A bound, ready API server: call [`ApiServer::serve`] to run it.
pub struct ApiServer {
    listener: tokio::net::TcpListener,
    tls: std::sync::Arc<rustls::ServerConfig>,
    state: api::ApiState,
    kubeconfig: PathBuf,
    pki: pki::Pki,
    data_dir: PathBuf,
    /// The IP and port the `kubernetes` Service's endpoints name.
    advertise: (String, u16),
}

/// The namespaces every cluster has.
const BUILTIN_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

impl ApiServer {
    /// Makes (or loads) the PKI, binds the listener, creates the built-in
    /// namespaces and writes `<data_dir>/kubeconfig`.
    pub async fn bind(config: &ApiServerConfig, store: Store) -> Result<Self, ApiServerError> {
        tls::install_default_provider();
        // In-cluster clients reach the API as the `kubernetes` Service: its
        // cluster IP and DNS names are in the serving certificate, as
        // kube-apiserver puts them.
        let advertise = config
            .advertise_address
            .unwrap_or_else(|| reachable(config.listen.ip()));
        let mut names = config.server_names.clone();
        names.push(advertise.to_string());
        if !config.listen.ip().is_unspecified() {
            names.push(config.listen.ip().to_string());
        }
        names.push(config.service_ranges.kubernetes_ip().to_string());
        names.extend(
            [
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ]
            .map(str::to_owned),
        );
        let pki = pki::Pki::load_or_create(&config.data_dir.join("pki"), &names)?;
        let signer =
            sa_tokens::load_signer(&config.data_dir.join("pki"), &config.service_account_issuer)?;
        let tls = tls::server_config(&pki)?;
        let nodes = proxy::NodeClient::new(&pki)?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| ApiServerError::Bind {
                addr: config.listen,
                source,
            })?;
        let local = listener
            .local_addr()
            .map_err(|source| ApiServerError::Bind {
                addr: config.listen,
                source,
            })?;
        // Local clients (the kubeconfigs written here) use the listen
        // address, loopback when it is unspecified; the cluster uses the
        // advertised one.
        let host = reachable(local.ip()).to_string();
        let server_address = format!("{host}:{}", local.port());
        let kubeconfig = config.data_dir.join("kubeconfig");
        kubeconfig::write_admin(&kubeconfig, &format!("https://{server_address}"), &pki)?;
        bootstrap_namespaces(&store).await?;
        let objects = skep_objects::Objects::with_service_ranges(store, config.service_ranges)
            .with_service_account_admission(true);
        builtin_services::ensure(&objects, &advertise.to_string(), local.port())
            .await
            .map_err(|source| ApiServerError::BuiltinServices { source })?;
        rbac_bootstrap::reconcile(&objects)
            .await
            .map_err(|source| ApiServerError::Rbac { source })?;
        let authorizer = authz::Authorizer::start(&objects)
            .await
            .map_err(|source| ApiServerError::Rbac { source })?;
        let tokens = sa_tokens::ServiceAccountTokens::new(
            objects.clone(),
            std::sync::Arc::new(signer),
            // The discovery document's `jwks_uri` names the advertised
            // address, as kube-apiserver's external address.
            &SocketAddr::new(advertise, local.port()).to_string(),
        );
        let authenticator = authn::Authenticator::new(tokens.clone(), config.anonymous_auth);
        tracing::info!(%server_address, kubeconfig = %kubeconfig.display(), "API server listening");
        Ok(Self {
            listener,
            tls,
            state: api::ApiState {
                objects,
                server_address,
                nodes,
                authenticator,
                authorizer,
                tokens,
            },
            kubeconfig,
            pki,
            data_dir: config.data_dir.clone(),
            advertise: (advertise.to_string(), local.port()),
        })
    }

    /// Writes (once) and returns the kubeconfig node `node` joins with: its
    /// own client certificate, at `<data_dir>/nodes/<node>.kubeconfig`.
    pub fn node_kubeconfig(&self, node: &str) -> Result<PathBuf, ApiServerError> {
        let path = self
            .data_dir
            .join("nodes")
            .join(format!("{node}.kubeconfig"));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| pki::PkiError::Io {
                path: dir.to_owned(),
                source,
            })?;
        }
        kubeconfig::write_node(
            &path,
            &format!("https://{}", self.state.server_address),
            &self.pki,
            node,
        )?;
        Ok(path)
    }

    /// `host:port` the server answers on.
    #[must_use]
    pub fn address(&self) -> &str {
        &self.state.server_address
    }

    /// The service account token issuer (its signer also signs legacy token
    /// secrets).
    #[must_use]
    pub fn service_account_tokens(&self) -> &sa_tokens::ServiceAccountTokens {
        &self.state.tokens
    }

    /// The cluster CA certificate (PEM): what pods verify the API server
    /// with (published in every namespace as `kube-root-ca.crt`, and the
    /// `ca.crt` of token secrets).
    #[must_use]
    pub fn ca_pem(&self) -> &str {
        &self.pki.ca.cert_pem
    }

    /// The admin kubeconfig's path.
    #[must_use]
    pub fn kubeconfig(&self) -> &std::path::Path {
        &self.kubeconfig
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let keeper = tokio::spawn(builtin_services::keep(
            self.state.objects.clone(),
            self.advertise.0,
            self.advertise.1,
        ));
        server::serve(self.listener, self.tls, api::router(self.state), shutdown).await;
        keeper.abort();
    }
}

/// The address a local client dials for a listen address: loopback for
/// the unspecified one (`0.0.0.0`).
fn reachable(listen: std::net::IpAddr) -> std::net::IpAddr {
    if listen.is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        listen
    }
}

async fn bootstrap_namespaces(store: &Store) -> Result<(), ApiServerError> {
    let info = &kinds::NAMESPACE;
    for name in BUILTIN_NAMESPACES {
        let body = Decoded {
            value: json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
            duplicates: Vec::new(),
        };
        let err = |message: String| ApiServerError::Bootstrap { name, message };
        let admitted = admission::admit_create(info, "", body, &admission::AdmitOptions::default())
            .map_err(|e| err(e.to_string()))?;
        let key = format!("/registry/core/namespaces/{name}");
        let bytes = serde_json::to_vec(&admitted.object).map_err(|e| err(e.to_string()))?;
        match store.create(key, bytes).await {
            Ok(_) | Err(skep_store::StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(err(e.to_string())),
        }
    }
    Ok(())
}
