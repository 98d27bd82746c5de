//! The review side: opening sealed segments with the review (or escrow)
//! identity.
//!
//! Only the review service may call into this module; it is the one place in
//! the crate that takes an [`age::x25519::Identity`]. The recorder's ingest
//! path ([`chaperone_archive::segment`], [`chaperone_archive::writer`]) must never use it: it holds
//! public recipients only (docs/architecture.md, "Layers"). Anything opened here is
//! equally openable with the standard tool: `age -d -i identity.txt seg.age`.

use std::io::Read;

use chaperone_archive::segment::{MAX_PLAINTEXT_LEN, Segment, SegmentError};

/// Why a sealed segment could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The identity given is not among the segment's recipients.
    #[error("this identity is not a recipient of the segment")]
    NotARecipient,
    /// The bytes are not a well-formed age file, or fail authentication.
    #[error("not a valid age file: {0}")]
    Age(age::DecryptError),
    /// The ciphertext failed authentication or could not be read.
    #[error("decrypting: {0}")]
    Io(#[from] std::io::Error),
    /// The plaintext is longer than [`MAX_PLAINTEXT_LEN`].
    #[error("plaintext exceeds {MAX_PLAINTEXT_LEN} bytes")]
    TooLarge,
    /// The plaintext is not a valid `CHAPSEG1` segment.
    #[error("malformed segment: {0}")]
    Malformed(#[from] SegmentError),
}

impl From<age::DecryptError> for OpenError {
    fn from(e: age::DecryptError) -> Self {
        match e {
            age::DecryptError::NoMatchingKeys => OpenError::NotARecipient,
            other => OpenError::Age(other),
        }
    }
}

/// Decrypts the plaintext bytes of a sealed segment, bounded by
/// [`MAX_PLAINTEXT_LEN`]. Authentication of every age chunk is checked.
fn open_plaintext(sealed: &[u8], identity: &age::x25519::Identity) -> Result<Vec<u8>, OpenError> {
    let decryptor = age::Decryptor::new_buffered(sealed)?;
    let reader = decryptor.decrypt(std::iter::once(identity as &dyn age::Identity))?;
    let mut plaintext = Vec::new();
    // Read one byte past the limit to tell "exactly at" from "over".
    reader
        .take(MAX_PLAINTEXT_LEN as u64 + 1)
        .read_to_end(&mut plaintext)?;
    if plaintext.len() > MAX_PLAINTEXT_LEN {
        return Err(OpenError::TooLarge);
    }
    Ok(plaintext)
}

/// Decrypts and parses a sealed segment.
pub fn open_segment(sealed: &[u8], identity: &age::x25519::Identity) -> Result<Segment, OpenError> {
    Ok(Segment::decode(&open_plaintext(sealed, identity)?)?)
}

/// A fresh review identity and its public recipient, as `age-keygen` makes
/// them (`AGE-SECRET-KEY-1...`, `age1...`). For development set-ups only:
/// in production the review identity is made offline and only its
/// recipient is configured.
pub fn generate_identity() -> (String, String) {
    use age::secrecy::ExposeSecret;
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    (identity.to_string().expose_secret().to_owned(), recipient)
}

/// The identity in `age-keygen`'s text form (comment lines allowed).
pub fn identity_of(identity_text: &str) -> Option<age::x25519::Identity> {
    identity_text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .and_then(|l| l.parse::<age::x25519::Identity>().ok())
}

/// The public recipient of an identity in `age-keygen`'s text form
/// (comment lines allowed).
pub fn recipient_of(identity_text: &str) -> Option<String> {
    identity_text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .and_then(|l| l.parse::<age::x25519::Identity>().ok())
        .map(|i| i.to_public().to_string())
}
