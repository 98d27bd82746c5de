//! The object store a recording lives in, opened the same way by its writer
//! (`recorder serve`, which adds a local spool on top: `chaperone_recorder`)
//! and its readers (`recorder verify`, the review service): which store,
//! how it is opened and checked at start-up, and retries.
//!
//! What it owns:
//!
//! - [`StoreConfig`]: the serde configuration the recorder and the gateway
//!   embed, with defaults and [`StoreConfig::validate`];
//! - [`open`]: builds the store (the local filesystem, fsync'd, or any
//!   S3-compatible store through `object_store`'s S3 client over our own
//!   reqwest transport, see [`http`]), wraps it in [`RetryingStore`] and runs
//!   [`probe`], a real signed round trip, so that a wrong secret key, an
//!   unreachable endpoint, a missing bucket or a store that ignores
//!   put-if-absent stops the process at start-up with a typed error;
//! - [`RetryingStore`]: bounded, jittered exponential backoff for transient
//!   errors;
//! - the ingest side wraps the store in its spool (`chaperone_recorder::spool`).
//!
//! What it must never do: overwrite or delete an archived object (every
//! write is put-if-absent; an object already stored with other bytes is an
//! error, never replaced), report a write as done before it is durable in
//! the store or in the spool, drop a write it could not place (past the
//! spool bound the write fails and the caller stops acknowledging), log a
//! secret, or read a clock other than tokio's (which tests can pause).
//!
//! S3 Object Lock: `object_store` 0.14.2 cannot send the
//! `x-amz-object-lock-*` headers on a put (its put attributes are a closed
//! set: content headers, storage class and `x-amz-meta-*`; default headers
//! are static and would go on every request, and a header added below the
//! signer is unsigned, which S3 refuses). So [`StoreConfig::validate`]
//! refuses `object_lock` rather than pretend; retention belongs in the
//! bucket's default Object Lock configuration, which S3 applies to every
//! object written without headers.

mod config;
pub mod http;
mod probe;
mod retry;

use std::sync::Arc;

use object_store::ObjectStore;

pub use config::{ObjectLockConfig, StoreConfig, StoreConfigError, StoreKind};
pub use probe::{PROBE_PREFIX, probe};
pub use retry::{RetryPolicy, RetryingStore, backoff, is_transient};

/// Why the store could not be opened. Each variant names the cause so that
/// operators fix the right thing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] StoreConfigError),
    /// The store refused our credentials: wrong access key id or secret
    /// key, or a signature it does not accept.
    #[error("{store}: credentials refused (check the access key id and secret key): {detail}")]
    CredentialsRefused {
        /// The store, without secrets.
        store: String,
        /// What the store answered.
        detail: String,
    },
    /// The store could not be reached (connection refused, timed out, name
    /// not resolved).
    #[error("{store}: unreachable: {detail}")]
    Unreachable {
        /// The store, without secrets.
        store: String,
        /// Why.
        detail: String,
    },
    /// The bucket does not exist at the endpoint.
    #[error("{store}: bucket missing: {detail}")]
    BucketMissing {
        /// The store, without secrets.
        store: String,
        /// What the store answered.
        detail: String,
    },
    /// A second put-if-absent of the probe object succeeded: the store does
    /// not honour conditional puts, so the archive's write-once rule could
    /// not be enforced.
    #[error("{store}: does not honour put-if-absent (If-None-Match); refusing to write to it")]
    NoConditionalPut {
        /// The store, without secrets.
        store: String,
    },
    /// The probe object read back with other bytes than were written.
    #[error("{store}: probe object read back different bytes")]
    ProbeMismatch {
        /// The store, without secrets.
        store: String,
    },
    /// The store failed in another way during the probe.
    #[error("{store}: {operation} failed: {source}")]
    Probe {
        /// The store, without secrets.
        store: String,
        /// The probe step.
        operation: &'static str,
        /// The error.
        #[source]
        source: object_store::Error,
    },
    /// The store could not be built from the configuration.
    #[error("{store}: {source}")]
    Build {
        /// The store, without secrets.
        store: String,
        /// The error.
        #[source]
        source: object_store::Error,
    },
    /// The filesystem store's directory could not be created.
    #[error("creating {path}: {source}")]
    Io {
        /// The directory.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Builds the configured store, wrapped in [`RetryingStore`], and probes it
/// ([`probe`]): on `Ok` a signed put-if-absent, read-back and list have just
/// worked. The result is what readers (`verify`, review) use; the ingest
/// side wraps it in its spool.
pub async fn open(config: &StoreConfig) -> Result<Arc<dyn ObjectStore>, StoreError> {
    config.validate()?;
    let store = config.build()?;
    probe(store.as_ref(), &config.describe()).await?;
    Ok(store)
}

/// `open` without the probe, for tools that must start even when the store
/// is down (the probe runs later, or never).
pub fn open_unprobed(config: &StoreConfig) -> Result<Arc<dyn ObjectStore>, StoreError> {
    config.validate()?;
    config.build()
}
