//! Retries of transient store errors: bounded attempts, jittered
//! exponential backoff, and a typed error ([`RetriesExhausted`]) after the
//! last attempt.
//!
//! Only errors that another attempt could cure are retried ([`is_transient`]):
//! connection failures, timeouts and server errors. An answer such as
//! "already exists", "not found" or "access denied" is returned at once.
//! object_store's own S3 retries are turned off (see `StoreConfig::build`)
//! so that attempts and backoff are decided here, in one place. A list is
//! a stream and is not retried (a half-read listing cannot be resumed
//! without duplicates): its error reaches the caller.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// How foreground operations retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (1: no retry).
    pub attempts: u32,
    /// The first backoff ceiling.
    pub initial_backoff: Duration,
    /// The largest backoff ceiling.
    pub max_backoff: Duration,
}

/// Exponential backoff with "equal jitter", the one backoff of the
/// recording path (store retries, backfill, a lesson's write retries): each
/// delay is drawn uniformly from `[ceiling / 2, ceiling)`, then the ceiling
/// doubles up to `max`. The jitter spreads recorders that lost the store at
/// the same moment; the floor keeps retries from hammering a store that is
/// down. It never ends; build a new one to start again (after a success).
///
/// `backon` draws the jitter as `d + rand(0, d)` from a base `d`, so the base
/// runs at half the ceiling.
pub fn backoff(initial: Duration, max: Duration) -> backon::ExponentialBackoff {
    let initial = initial.min(max);
    use backon::BackoffBuilder as _;
    backon::ExponentialBuilder::new()
        .with_min_delay(initial / 2)
        .with_max_delay(max / 2)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Whether another attempt could succeed: transport failures, timeouts and
/// server errors (object_store reports all of these as `Generic`), and a
/// task that failed to join. Definite answers are not transient.
pub fn is_transient(e: &object_store::Error) -> bool {
    matches!(
        e,
        object_store::Error::Generic { .. } | object_store::Error::JoinError { .. }
    )
}

/// The last attempt of an operation failed with a transient error.
#[derive(Debug, thiserror::Error)]
#[error("{operation} failed after {attempts} attempts: {last}")]
pub(crate) struct RetriesExhausted {
    /// The operation (`put`, `get`, ...).
    pub operation: &'static str,
    /// Attempts made.
    pub attempts: u32,
    /// The last error.
    #[source]
    pub last: object_store::Error,
}

/// An [`ObjectStore`] that retries the inner store's transient errors.
#[derive(Debug)]
pub struct RetryingStore {
    inner: Arc<dyn ObjectStore>,
    policy: RetryPolicy,
}

impl RetryingStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn ObjectStore>, policy: RetryPolicy) -> Self {
        Self { inner, policy }
    }

    async fn retry<T, F, Fut>(&self, operation: &'static str, mut f: F) -> object_store::Result<T>
    where
        F: FnMut() -> Fut + Send,
        Fut: std::future::Future<Output = object_store::Result<T>> + Send,
        T: Send,
    {
        let mut backoff = backoff(self.policy.initial_backoff, self.policy.max_backoff);
        let mut attempt = 1;
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) if is_transient(&e) && attempt < self.policy.attempts => {
                    let delay = backoff.next().unwrap_or(self.policy.max_backoff);
                    tracing::debug!(operation, attempt, error = %e, ?delay, "transient store error; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) if is_transient(&e) && self.policy.attempts > 1 => {
                    return Err(object_store::Error::Generic {
                        store: "retry",
                        source: Box::new(RetriesExhausted {
                            operation,
                            attempts: attempt,
                            last: e,
                        }),
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl std::fmt::Display for RetryingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.inner)
    }
}

#[async_trait]
impl ObjectStore for RetryingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        // A put whose answer was lost may have landed: with PutMode::Create
        // the retry then reports AlreadyExists, which put-if-absent callers
        // resolve by comparing bytes.
        self.retry("put", || {
            self.inner.put_opts(location, payload.clone(), opts.clone())
        })
        .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.retry("put_multipart", || {
            self.inner.put_multipart_opts(location, opts.clone())
        })
        .await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.retry("get", || self.inner.get_opts(location, options.clone()))
            .await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.retry("get_ranges", || self.inner.get_ranges(location, ranges))
            .await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.retry("list", || self.inner.list_with_delimiter(prefix))
            .await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.retry("copy", || self.inner.copy_opts(from, to, options.clone()))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let ceilings = [100, 200, 400, 800, 1000, 1000];
        for _ in 0..50 {
            let mut b = backoff(Duration::from_millis(100), Duration::from_millis(1000));
            for c in ceilings {
                let d = b.next().expect("the backoff never ends");
                let c = Duration::from_millis(c);
                assert!(d >= c / 2 && d <= c, "{d:?} outside [{:?}, {c:?}]", c / 2);
            }
        }
    }

    #[test]
    fn definite_answers_are_not_transient() {
        let nf = object_store::Error::NotFound {
            path: "x".into(),
            source: "gone".into(),
        };
        assert!(!is_transient(&nf));
        let g = object_store::Error::Generic {
            store: "S3",
            source: "503".into(),
        };
        assert!(is_transient(&g));
    }
}
