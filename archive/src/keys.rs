//! The recorder's Ed25519 manifest-signing key and its public half.
//!
//! The signing key proves that a manifest came from our recorder and was not
//! edited since; it cannot decrypt anything. Keys are stored in standard PEM
//! so third parties can check signatures with stock tools:
//!
//! - private: PKCS#8 `-----BEGIN PRIVATE KEY-----` (RFC 8410), file mode 0600;
//! - public: SubjectPublicKeyInfo `-----BEGIN PUBLIC KEY-----` (RFC 8410),
//!   e.g. `openssl pkeyutl -verify -pubin -inkey recorder.pub -rawin
//!   -in manifest.json -sigfile manifest.sig`.
//!
//! Ed25519 PEM encodings have a fixed DER prefix, so they are written and
//! read here by hand rather than through an ASN.1 library.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

/// DER prefix of an Ed25519 SubjectPublicKeyInfo; the 32-byte key follows.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// DER prefix of an Ed25519 PKCS#8 v1 private key; the 32-byte seed follows.
const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
const PUBLIC_LABEL: &str = "PUBLIC KEY";
const PRIVATE_LABEL: &str = "PRIVATE KEY";
/// Key files are tiny; refuse anything larger before parsing.
const MAX_KEY_FILE: u64 = 4096;

/// Why a key could not be read, written or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The text is not PEM with the expected label.
    #[error("not a PEM {expected} block")]
    NotPem {
        /// The label that was expected.
        expected: &'static str,
    },
    /// The PEM body is not valid base64.
    #[error("PEM body is not base64")]
    BadBase64,
    /// The DER inside is not an Ed25519 key of the expected kind.
    #[error("not an Ed25519 {expected}")]
    NotEd25519 {
        /// What was expected.
        expected: &'static str,
    },
    /// The public key bytes are not a valid Ed25519 point.
    #[error("invalid Ed25519 public key")]
    InvalidPublicKey,
    /// A key file is larger than any key could be.
    #[error("key file too large")]
    FileTooLarge,
    /// Reading or writing a key file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The operating system's random generator failed.
    #[error("random generator: {0}")]
    Random(String),
}

/// The recorder's manifest-signing key. Never logged: `Debug` shows only the
/// public half.
#[derive(Clone)]
pub struct RecorderSigningKey(SigningKey);

impl fmt::Debug for RecorderSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RecorderSigningKey")
            .field(&self.public().to_base64())
            .finish()
    }
}

impl RecorderSigningKey {
    /// A new key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        rand_core::RngCore::try_fill_bytes(&mut rand_core::OsRng, &mut seed)
            .map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self::from_seed(seed))
    }

    /// A key from its 32-byte seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }

    /// The public half.
    pub fn public(&self) -> RecorderPublicKey {
        RecorderPublicKey(self.0.verifying_key())
    }

    /// Ed25519 signature over `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }

    /// PKCS#8 PEM.
    pub fn to_pem(&self) -> String {
        let mut der = PKCS8_PREFIX.to_vec();
        der.extend_from_slice(self.0.as_bytes());
        pem_encode(PRIVATE_LABEL, &der)
    }

    /// Parses PKCS#8 PEM.
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let der = pem_decode(text, PRIVATE_LABEL)?;
        let seed = der
            .strip_prefix(&PKCS8_PREFIX)
            .and_then(|s| <[u8; 32]>::try_from(s).ok())
            .ok_or(KeyError::NotEd25519 {
                expected: "PKCS#8 private key",
            })?;
        Ok(Self::from_seed(seed))
    }

    /// Loads the key at `path`, or generates one and writes it there (mode
    /// 0600, never overwriting a file that appears meanwhile).
    pub fn load_or_generate(path: &Path) -> Result<Self, KeyError> {
        match read_small(path) {
            Ok(text) => return Self::from_pem(&text),
            Err(KeyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let key = Self::generate()?;
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut file = opts.open(path).map_err(io)?;
        std::io::Write::write_all(&mut file, key.to_pem().as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(key)
    }
}

/// The recorder's public key, which verifiers obtain out of band (the copy
/// published in the archive is for convenience, not trust).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RecorderPublicKey(VerifyingKey);

impl fmt::Debug for RecorderPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RecorderPublicKey")
            .field(&self.to_base64())
            .finish()
    }
}

impl RecorderPublicKey {
    /// The raw 32 bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The raw 32 bytes in standard base64.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0.as_bytes())
    }

    /// SubjectPublicKeyInfo PEM.
    pub fn to_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(self.0.as_bytes());
        pem_encode(PUBLIC_LABEL, &der)
    }

    /// Parses SubjectPublicKeyInfo PEM, or the raw 32 bytes in base64.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let raw = if text.contains("-----BEGIN") {
            let der = pem_decode(text, PUBLIC_LABEL)?;
            der.strip_prefix(&SPKI_PREFIX)
                .and_then(|s| <[u8; 32]>::try_from(s).ok())
                .ok_or(KeyError::NotEd25519 {
                    expected: "SubjectPublicKeyInfo",
                })?
        } else {
            B64.decode(text.trim())
                .map_err(|_| KeyError::BadBase64)?
                .try_into()
                .map_err(|_| KeyError::NotEd25519 {
                    expected: "32-byte public key",
                })?
        };
        VerifyingKey::from_bytes(&raw)
            .map(Self)
            .map_err(|_| KeyError::InvalidPublicKey)
    }

    /// Reads a public key file (PEM or base64).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        Self::parse(&read_small(path)?)
    }

    /// Whether `signature` is this key's strict Ed25519 signature over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(sig) = <[u8; 64]>::try_from(signature) else {
            return false;
        };
        self.0
            .verify_strict(message, &Signature::from_bytes(&sig))
            .is_ok()
    }
}

fn read_small(path: &Path) -> Result<String, KeyError> {
    let io = |source| KeyError::Io {
        path: path.display().to_string(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.len() > MAX_KEY_FILE {
        return Err(KeyError::FileTooLarge);
    }
    std::fs::read_to_string(path).map_err(io)
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let body = B64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        // from_utf8 cannot fail: base64 output is ASCII.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn pem_decode(text: &str, label: &'static str) -> Result<Vec<u8>, KeyError> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text
        .find(&begin)
        .ok_or(KeyError::NotPem { expected: label })?
        + begin.len();
    let stop = text[start..]
        .find(&end)
        .ok_or(KeyError::NotPem { expected: label })?
        + start;
    let body: String = text[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    B64.decode(body).map_err(|_| KeyError::BadBase64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_and_sign() {
        let k = RecorderSigningKey::generate().unwrap();
        let k2 = RecorderSigningKey::from_pem(&k.to_pem()).unwrap();
        assert_eq!(k.public(), k2.public());
        let p = RecorderPublicKey::parse(&k.public().to_pem()).unwrap();
        assert_eq!(p, k.public());
        assert_eq!(RecorderPublicKey::parse(&p.to_base64()).unwrap(), p);
        let sig = k.sign(b"hello");
        assert!(p.verify(b"hello", &sig));
        assert!(!p.verify(b"hellp", &sig));
        assert!(!p.verify(b"hello", &sig[..63]));
        assert!(matches!(
            RecorderPublicKey::parse(&k.to_pem()).unwrap_err(),
            KeyError::NotPem { .. }
        ));
    }

    #[test]
    fn load_or_generate_persists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("recorder.key");
        let a = RecorderSigningKey::load_or_generate(&path).unwrap();
        let b = RecorderSigningKey::load_or_generate(&path).unwrap();
        assert_eq!(a.public(), b.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
