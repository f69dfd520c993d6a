//! The cluster's certificate authority and the certificates it issues: the
//! API server's serving certificate and the admin client certificate that
//! goes into the kubeconfig. Kept as PEM files under `<data-dir>/pki`, made
//! once and reused on every start.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// Why the PKI could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("failed to access {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Generating or parsing a certificate or key failed.
    #[error("failed to {what}")]
    Cert {
        /// What was being done.
        what: String,
        /// What rcgen reported.
        #[source]
        source: rcgen::Error,
    },
}

/// A certificate and its private key, PEM-encoded.
#[derive(Clone, Debug)]
pub struct CertPair {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

/// The cluster CA and what it issued.
#[derive(Clone, Debug)]
pub struct Pki {
    /// The CA certificate and key.
    pub ca: CertPair,
    /// The API server's serving certificate.
    pub server: CertPair,
    /// The admin client certificate (`CN=skep-admin, O=system:masters`).
    pub admin: CertPair,
    /// The client certificate the API server presents to node agents when
    /// it streams logs or runs exec (`CN=skep-apiserver-kubelet-client`).
    pub kubelet_client: CertPair,
}

use skep_proto::{KUBELET_CLIENT_USER, NODE_USER_PREFIX, NODES_GROUP};

/// The admin identity's user name.
pub const ADMIN_USER: &str = "skep-admin";
/// The group that is allowed everything, as in Kubernetes.
pub const MASTERS_GROUP: &str = skep_proto::MASTERS_GROUP;

impl Pki {
    /// Loads the PKI from `dir`, making whatever is missing. The serving
    /// certificate covers `localhost`, `127.0.0.1` and `server_names`.
    pub fn load_or_create(dir: &Path, server_names: &[String]) -> Result<Self, PkiError> {
        fs::create_dir_all(dir).map_err(|source| PkiError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let ca = load_or(dir, "ca", new_ca)?;
        let ca_key = key_pair(&ca.key_pem)?;
        let issuer =
            Issuer::from_ca_cert_pem(&ca.cert_pem, &ca_key).map_err(|source| PkiError::Cert {
                what: "parse the CA certificate".into(),
                source,
            })?;
        let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        names.extend(server_names.iter().cloned());
        let make_server = || {
            issue(
                &issuer,
                "skep-apiserver",
                &[],
                &names,
                ExtendedKeyUsagePurpose::ServerAuth,
            )
        };
        let mut server = load_or(dir, "apiserver", make_server)?;
        // A serving certificate that does not name every address the server
        // answers on now (a new `--tls-san`, another advertise address) or
        // whose key is not its own (a crash between the two writes) is
        // issued again from the same CA, as k3s does; clients keep trusting
        // the CA.
        if let Some(why) = serving_needs_reissue(&server, &names) {
            tracing::info!(%why, "reissuing the API server's serving certificate");
            server = make_server()?;
            write_file(&dir.join("apiserver.key"), &server.key_pem, 0o600)?;
            write_file(&dir.join("apiserver.crt"), &server.cert_pem, 0o644)?;
        }
        let admin = load_or(dir, "admin", || {
            issue(
                &issuer,
                ADMIN_USER,
                &[MASTERS_GROUP],
                &[],
                ExtendedKeyUsagePurpose::ClientAuth,
            )
        })?;
        let kubelet_client = load_or(dir, "apiserver-kubelet-client", || {
            issue(
                &issuer,
                KUBELET_CLIENT_USER,
                &[],
                &[],
                ExtendedKeyUsagePurpose::ClientAuth,
            )
        })?;
        Ok(Self {
            ca,
            server,
            admin,
            kubelet_client,
        })
    }

    /// The serving certificate of node `node`'s agent: DNS name `<node>`
    /// (the API server checks it against the name of the node a pod is
    /// bound to, whatever address it dials), `CN=system:node:<node>`, made
    /// on first use and kept in `dir`.
    pub fn node_serving(&self, dir: &Path, node: &str) -> Result<CertPair, PkiError> {
        let ca_key = key_pair(&self.ca.key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&self.ca.cert_pem, &ca_key)
            .map_err(cert_err("parse the CA certificate"))?;
        load_or(dir, &format!("node-{node}-serving"), || {
            issue(
                &issuer,
                &format!("{NODE_USER_PREFIX}{node}"),
                &[NODES_GROUP],
                &[node.to_owned()],
                ExtendedKeyUsagePurpose::ServerAuth,
            )
        })
    }

    /// The client certificate of node `node` (`CN=system:node:<node>`,
    /// `O=system:nodes`), made on first use and kept in `dir`.
    pub fn node_credentials(&self, dir: &Path, node: &str) -> Result<CertPair, PkiError> {
        let ca_key = key_pair(&self.ca.key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&self.ca.cert_pem, &ca_key)
            .map_err(cert_err("parse the CA certificate"))?;
        load_or(dir, &format!("node-{node}"), || {
            issue(
                &issuer,
                &format!("{NODE_USER_PREFIX}{node}"),
                &[NODES_GROUP],
                &[],
                ExtendedKeyUsagePurpose::ClientAuth,
            )
        })
    }
}

impl Pki {
    /// A new client certificate for `user` in `groups` (O=), signed by the
    /// cluster CA and not kept anywhere (`kubeadm kubeconfig user`).
    pub fn user_credentials(&self, user: &str, groups: &[&str]) -> Result<CertPair, PkiError> {
        let ca_key = key_pair(&self.ca.key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&self.ca.cert_pem, &ca_key)
            .map_err(cert_err("parse the CA certificate"))?;
        issue(
            &issuer,
            user,
            groups,
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }
}

/// Why `pair` cannot serve `names` (a name it does not cover, or a key that
/// is not the certificate's), or `None` when it can.
fn serving_needs_reissue(pair: &CertPair, names: &[String]) -> Option<String> {
    use rustls_pki_types::pem::PemObject as _;
    let Ok(der) = rustls_pki_types::CertificateDer::from_pem_slice(pair.cert_pem.as_bytes()) else {
        return Some("the certificate does not parse".into());
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return Some("the certificate does not parse".into());
    };
    let Ok(key) = KeyPair::from_pem(&pair.key_pem) else {
        return Some("the key does not parse".into());
    };
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Some("the key is not the certificate's".into());
    }
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(d) => dns.push((*d).to_owned()),
                x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(std::net::IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes)
                            .ok()
                            .map(std::net::IpAddr::from),
                        _ => None,
                    };
                    ips.extend(ip);
                }
                _ => {}
            }
        }
    }
    names
        .iter()
        .find(|name| match name.parse::<std::net::IpAddr>() {
            Ok(ip) => !ips.contains(&ip),
            Err(_) => !dns.iter().any(|d| d.eq_ignore_ascii_case(name)),
        })
        .map(|missing| format!("it does not cover {missing}"))
}

fn key_pair(pem: &str) -> Result<KeyPair, PkiError> {
    KeyPair::from_pem(pem).map_err(|source| PkiError::Cert {
        what: "parse a private key".into(),
        source,
    })
}

fn cert_err(what: &str) -> impl FnOnce(rcgen::Error) -> PkiError + '_ {
    move |source| PkiError::Cert {
        what: what.to_owned(),
        source,
    }
}

fn new_ca() -> Result<CertPair, PkiError> {
    let key = KeyPair::generate().map_err(cert_err("generate the CA key"))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "skep-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    let cert = params
        .self_signed(&key)
        .map_err(cert_err("self-sign the CA"))?;
    Ok(CertPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Issues a leaf certificate: `common_name`, organizations (Kubernetes reads
/// them as groups), DNS/IP names.
fn issue(
    issuer: &Issuer<'_, &KeyPair>,
    common_name: &str,
    organizations: &[&str],
    names: &[String],
    usage: ExtendedKeyUsagePurpose,
) -> Result<CertPair, PkiError> {
    let key = KeyPair::generate().map_err(cert_err("generate a key"))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    for org in organizations {
        params
            .distinguished_name
            .push(DnType::OrganizationName, *org);
    }
    for name in names {
        params.subject_alt_names.push(match name.parse() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                name.clone()
                    .try_into()
                    .map_err(cert_err("use a server name"))?,
            ),
        });
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    let cert = params
        .signed_by(&key, issuer)
        .map_err(cert_err("sign a certificate"))?;
    Ok(CertPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Reads `<dir>/<name>.{crt,key}`, or makes them with `make` and writes them
/// (the key readable by root only).
fn load_or(
    dir: &Path,
    name: &str,
    make: impl FnOnce() -> Result<CertPair, PkiError>,
) -> Result<CertPair, PkiError> {
    let cert_path = dir.join(format!("{name}.crt"));
    let key_path = dir.join(format!("{name}.key"));
    if cert_path.is_file() && key_path.is_file() {
        let read = |path: &Path| {
            fs::read_to_string(path).map_err(|source| PkiError::Io {
                path: path.to_owned(),
                source,
            })
        };
        return Ok(CertPair {
            cert_pem: read(&cert_path)?,
            key_pem: read(&key_path)?,
        });
    }
    let pair = make()?;
    write_file(&key_path, &pair.key_pem, 0o600)?;
    write_file(&cert_path, &pair.cert_pem, 0o644)?;
    Ok(pair)
}

/// Writes `contents` to `path` with `mode`, through a temporary file and a
/// rename so a crash never leaves half a file.
pub(crate) fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pki_is_made_once_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Pki::load_or_create(dir.path(), &["node-1".into()]).expect("create");
        let again = Pki::load_or_create(dir.path(), &[]).expect("load");
        assert_eq!(first.ca.cert_pem, again.ca.cert_pem);
        assert_eq!(first.server.cert_pem, again.server.cert_pem);
        assert_eq!(first.admin.cert_pem, again.admin.cert_pem);
        assert!(
            first
                .server
                .cert_pem
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
        let key_mode = fs::metadata(dir.path().join("ca.key"))
            .expect("ca.key")
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&key_mode) & 0o777,
            0o600
        );
    }

    #[test]
    fn the_serving_certificate_is_reissued_for_a_new_name_or_a_stray_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Pki::load_or_create(dir.path(), &["10.0.0.5".into()]).expect("create");
        let same = Pki::load_or_create(dir.path(), &["10.0.0.5".into()]).expect("load");
        assert_eq!(first.server.cert_pem, same.server.cert_pem);
        let wider = Pki::load_or_create(dir.path(), &["10.0.0.5".into(), "api.example".into()])
            .expect("reissue");
        assert_ne!(first.server.cert_pem, wider.server.cert_pem);
        assert_eq!(first.ca.cert_pem, wider.ca.cert_pem, "the CA stays");
        let names = ["localhost", "127.0.0.1", "10.0.0.5", "API.example"].map(str::to_owned);
        assert_eq!(serving_needs_reissue(&wider.server, &names), None);
        assert_eq!(
            serving_needs_reissue(&wider.server, &["10.0.0.6".to_owned()]).as_deref(),
            Some("it does not cover 10.0.0.6")
        );
        // A crash between writing the key and the certificate.
        let stray =
            Pki::load_or_create(tempfile::tempdir().expect("tempdir").path(), &[]).expect("other");
        write_file(
            &dir.path().join("apiserver.key"),
            &stray.server.key_pem,
            0o600,
        )
        .expect("write");
        let healed = Pki::load_or_create(dir.path(), &[]).expect("heal");
        assert_eq!(serving_needs_reissue(&healed.server, &names[..2]), None);
        assert_ne!(healed.server.key_pem, stray.server.key_pem);
    }
}
