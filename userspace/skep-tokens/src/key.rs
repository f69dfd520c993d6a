//! Signing keys and the public keys that verify them, with key ids computed
//! as upstream's `keyIDFromPublicKey` does (`pkg/serviceaccount/jwt.go`):
//! base64url without padding of the SHA-256 of the PKIX DER public key.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _, RsaKeyPair};

use crate::der::{self, SubjectPublicKey};
use crate::pem;

/// A JWS signature algorithm this crate signs and verifies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// ECDSA over P-256 with SHA-256, the default for new keys.
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, for RSA keys (2048 bits or more).
    Rs256,
}

impl Algorithm {
    /// The JOSE name: `ES256` or `RS256`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::Rs256 => "RS256",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a key could not be made, read, written or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The system random generator failed.
    #[error("failed to generate a P-256 key")]
    Generate,
    /// The DER was not a key ring accepts (wrong curve, too small, malformed).
    #[error("failed to parse private key: {reason}")]
    Rejected {
        /// ring's description of the rejection.
        reason: String,
    },
    /// No PEM block holding a supported key was found.
    #[error("failed to find a {wanted} PEM block")]
    NoPemBlock {
        /// What was looked for, e.g. "PRIVATE KEY".
        wanted: &'static str,
    },
    /// A public key that is neither P-256 nor RSA.
    #[error("failed to parse public key: only P-256 ECDSA and RSA keys are supported")]
    UnsupportedPublicKey,
    /// Reading a key file failed.
    #[error("failed to read key file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Writing a key file failed.
    #[error("failed to write key file {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// ring refused to sign.
    #[error("failed to sign")]
    Sign,
}

/// A public key that verifies tokens, with its key id.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    algorithm: Algorithm,
    key: SubjectPublicKey,
    spki: Vec<u8>,
    key_id: String,
}

impl PublicKey {
    fn new(key: SubjectPublicKey) -> Self {
        let algorithm = match key {
            SubjectPublicKey::EcP256(_) => Algorithm::Es256,
            SubjectPublicKey::Rsa(_) => Algorithm::Rs256,
        };
        let spki = der::encode_spki(&key);
        let key_id = key_id_for_spki(&spki);
        Self {
            algorithm,
            key,
            spki,
            key_id,
        }
    }

    /// Parses a PKIX `SubjectPublicKeyInfo` (a `PUBLIC KEY` PEM body).
    pub fn from_spki_der(spki: &[u8]) -> Result<Self, KeyError> {
        der::decode_spki(spki)
            .map(Self::new)
            .ok_or(KeyError::UnsupportedPublicKey)
    }

    /// Every key in a PEM file, as `--service-account-key-file` reads one:
    /// `PUBLIC KEY` blocks, and the public halves of private key blocks.
    /// Blocks of other kinds (certificates, …) are skipped.
    pub fn from_pem(text: &str) -> Result<Vec<Self>, KeyError> {
        let mut keys = Vec::new();
        for (label, der) in pem::decode_all(text) {
            match label.as_str() {
                "PUBLIC KEY" => keys.push(Self::from_spki_der(&der)?),
                "PRIVATE KEY" | "RSA PRIVATE KEY" => {
                    keys.push(SigningKey::from_der(&label, &der)?.public_key().clone());
                }
                _ => {}
            }
        }
        if keys.is_empty() {
            return Err(KeyError::NoPemBlock {
                wanted: "PUBLIC KEY or PRIVATE KEY",
            });
        }
        Ok(keys)
    }

    /// The algorithm tokens signed by this key carry in their header.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The key id (`kid`), upstream's `keyIDFromPublicKey`.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The PKIX DER (`x509.MarshalPKIXPublicKey`) the key id is hashed over.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// The key as a `PUBLIC KEY` PEM block.
    pub fn to_pem(&self) -> String {
        pem::encode("PUBLIC KEY", &self.spki)
    }

    pub(crate) fn subject_public_key(&self) -> &SubjectPublicKey {
        &self.key
    }

    /// Whether `signature` is this key's JWS signature over `message`.
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let (algorithm, key): (&dyn signature::VerificationAlgorithm, &[u8]) = match &self.key {
            SubjectPublicKey::EcP256(point) => (&signature::ECDSA_P256_SHA256_FIXED, point),
            SubjectPublicKey::Rsa(pkcs1) => (&signature::RSA_PKCS1_2048_8192_SHA256, pkcs1),
        };
        signature::UnparsedPublicKey::new(algorithm, key)
            .verify(message, signature)
            .is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("algorithm", &self.algorithm)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// The key id upstream derives from PKIX DER: base64url (no padding) of its
/// SHA-256.
pub fn key_id_for_spki(spki: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, spki))
}

enum Signer {
    Ecdsa(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// The service-account issuer's private key
/// (`--service-account-signing-key-file`).
pub struct SigningKey {
    signer: Signer,
    /// The PEM label and DER the key was made from, for saving it unchanged.
    label: &'static str,
    der: Vec<u8>,
    public: PublicKey,
}

impl SigningKey {
    /// Generates a new ECDSA P-256 (ES256) key.
    pub fn generate() -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| KeyError::Generate)?;
        Self::from_pkcs8_der(pkcs8.as_ref())
    }

    /// A key from PKCS#8 DER: P-256 ECDSA (ES256) or RSA (RS256).
    pub fn from_pkcs8_der(pkcs8: &[u8]) -> Result<Self, KeyError> {
        Self::from_der("PRIVATE KEY", pkcs8)
    }

    fn from_der(label: &str, der: &[u8]) -> Result<Self, KeyError> {
        let rejected = |e: ring::error::KeyRejected| KeyError::Rejected {
            reason: e.to_string(),
        };
        let (signer, label, key) = if label == "RSA PRIVATE KEY" {
            let pair = RsaKeyPair::from_der(der).map_err(rejected)?;
            let pkcs1 = pair.public_key().as_ref().to_vec();
            (
                Signer::Rsa(pair),
                "RSA PRIVATE KEY",
                SubjectPublicKey::Rsa(pkcs1),
            )
        } else {
            match EcdsaKeyPair::from_pkcs8(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                der,
                &SystemRandom::new(),
            ) {
                Ok(pair) => {
                    let point = pair.public_key().as_ref().to_vec();
                    (
                        Signer::Ecdsa(pair),
                        "PRIVATE KEY",
                        SubjectPublicKey::EcP256(point),
                    )
                }
                Err(ec_err) => {
                    // Not P-256: try RSA before reporting the ECDSA reason.
                    let pair = RsaKeyPair::from_pkcs8(der).map_err(|_| rejected(ec_err))?;
                    let pkcs1 = pair.public_key().as_ref().to_vec();
                    (
                        Signer::Rsa(pair),
                        "PRIVATE KEY",
                        SubjectPublicKey::Rsa(pkcs1),
                    )
                }
            }
        };
        Ok(Self {
            signer,
            label,
            der: der.to_vec(),
            public: PublicKey::new(key),
        })
    }

    /// The first private key in PEM text: `PRIVATE KEY` (PKCS#8, EC or RSA)
    /// or `RSA PRIVATE KEY` (PKCS#1). SEC1 `EC PRIVATE KEY` blocks are not
    /// supported (ring reads only PKCS#8 for ECDSA).
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        pem::decode_all(text)
            .into_iter()
            .find(|(label, _)| label == "PRIVATE KEY" || label == "RSA PRIVATE KEY")
            .ok_or(KeyError::NoPemBlock {
                wanted: "PRIVATE KEY",
            })
            .and_then(|(label, der)| Self::from_der(&label, &der))
    }

    /// Reads a PEM key file.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_pem(&text)
    }

    /// Reads the key at `path`, or generates an ES256 key and saves it there
    /// when there is no file yet.
    pub fn load_or_generate(path: &Path) -> Result<Self, KeyError> {
        match std::fs::metadata(path) {
            Ok(_) => Self::load(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate()?;
                key.save(path)?;
                Ok(key)
            }
            Err(source) => Err(KeyError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Writes the key as PEM, mode 0600, atomically: a temporary file in the
    /// same directory, synced, then renamed over `path`.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let write_err = |source| KeyError::Write {
            path: path.to_owned(),
            source,
        };
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        // tempfile creates the file 0600 (O_EXCL) before anything is written.
        let mut file = tempfile::NamedTempFile::new_in(dir).map_err(write_err)?;
        file.write_all(self.to_pem().as_bytes())
            .map_err(write_err)?;
        file.as_file().sync_all().map_err(write_err)?;
        file.persist(path).map_err(|e| write_err(e.error))?;
        Ok(())
    }

    /// The key as PEM, in the form it was read (PKCS#8 unless it came from a
    /// PKCS#1 `RSA PRIVATE KEY` block).
    pub fn to_pem(&self) -> String {
        pem::encode(self.label, &self.der)
    }

    /// The public half.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The key id tokens signed with this key carry.
    pub fn key_id(&self) -> &str {
        self.public.key_id()
    }

    /// The signature algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.public.algorithm()
    }

    /// A JWS signature over `message` (raw `r || s` for ES256).
    pub(crate) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let rng = SystemRandom::new();
        match &self.signer {
            Signer::Ecdsa(pair) => pair
                .sign(&rng, message)
                .map(|sig| sig.as_ref().to_vec())
                .map_err(|_| KeyError::Sign),
            Signer::Rsa(pair) => {
                let mut sig = vec![0; pair.public().modulus_len()];
                pair.sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut sig)
                    .map_err(|_| KeyError::Sign)?;
                Ok(sig)
            }
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.algorithm())
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[path = "key_test.rs"]
mod tests;
