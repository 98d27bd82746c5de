//! `StoreConfig`: one serde struct for the archive's object store, embedded
//! by the recorder and the gateway (its embedded recorder), with defaults,
//! environment overrides and `validate()`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use object_store::{ClientOptions, ObjectStore, RetryConfig};
use serde::{Deserialize, Serialize};

use super::StoreError;
use super::http::ReqwestConnector;
use super::retry::{RetryPolicy, RetryingStore};

/// Which store the archive lives in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// A directory on the local filesystem (writes fsync'd).
    #[default]
    Fs,
    /// An S3-compatible object store.
    S3,
}

/// `object_lock`: S3 Object Lock retention and legal hold on every put.
/// Parsed so that a configuration asking for it is refused with a reason
/// instead of silently ignored (see [`StoreConfigError::ObjectLockUnsupported`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObjectLockConfig {
    /// `GOVERNANCE` or `COMPLIANCE`.
    pub mode: Option<String>,
    /// Days each object is retained.
    pub retain_days: Option<u32>,
    /// Whether a legal hold is placed on each object.
    pub legal_hold: bool,
}

/// The archive's object store.
///
/// Every key has a default; unknown keys are refused. The secret key is
/// never shown by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `fs` or `s3`.
    pub kind: StoreKind,
    /// `fs`: the directory holding the archive (created if missing).
    pub dir: String,
    /// `s3`: the bucket (it must exist).
    pub bucket: String,
    /// `s3`: endpoint URL, e.g. `https://s3.eu-west-2.amazonaws.com` or a
    /// MinIO/Garage URL; empty: AWS for `region`. Path-style requests.
    pub endpoint: String,
    /// `s3`: the region requests are signed for.
    pub region: String,
    /// `s3`: access key id.
    pub access_key_id: String,
    /// `s3`: secret access key.
    pub secret_access_key: String,
    /// `s3`: allow a plain `http://` endpoint (loopback tests, a store on
    /// a private network). Off: only `https://`.
    pub allow_http: bool,
    /// Every object's name is put under this prefix (empty: none).
    pub prefix: String,
    /// Longest time one request may take, connecting included, in ms.
    pub timeout_ms: u64,
    /// Longest time to connect to the store, in ms.
    pub connect_timeout_ms: u64,
    /// Attempts per operation on transient errors (1: no retry).
    pub retry_attempts: u32,
    /// First backoff between attempts, in ms (doubles, jittered).
    pub retry_initial_backoff_ms: u64,
    /// Longest backoff between attempts, in ms (also the backfill's).
    pub retry_max_backoff_ms: u64,
    /// Ingest side: directory of the local spool that takes writes while
    /// the store is down (empty: no spool; a failed write fails).
    pub spool_dir: String,
    /// Ingest side: most bytes the spool may hold; past it writes fail.
    pub spool_max_bytes: u64,
    /// Ingest side: how often an idle backfill task checks the store, in ms.
    pub health_interval_ms: u64,
    /// S3 Object Lock on puts: refused (object_store cannot send the
    /// headers); configure the bucket's default retention instead.
    pub object_lock: Option<ObjectLockConfig>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            kind: StoreKind::Fs,
            dir: String::new(),
            bucket: String::new(),
            endpoint: String::new(),
            region: "us-east-1".to_owned(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            allow_http: false,
            prefix: String::new(),
            timeout_ms: 30_000,
            connect_timeout_ms: 2_000,
            retry_attempts: 3,
            retry_initial_backoff_ms: 100,
            retry_max_backoff_ms: 5_000,
            spool_dir: String::new(),
            spool_max_bytes: 1 << 30,
            health_interval_ms: 10_000,
            object_lock: None,
        }
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = if self.secret_access_key.is_empty() {
            ""
        } else {
            "<redacted>"
        };
        f.debug_struct("StoreConfig")
            .field("kind", &self.kind)
            .field("dir", &self.dir)
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &secret)
            .field("allow_http", &self.allow_http)
            .field("prefix", &self.prefix)
            .field("timeout_ms", &self.timeout_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("retry_attempts", &self.retry_attempts)
            .field("retry_initial_backoff_ms", &self.retry_initial_backoff_ms)
            .field("retry_max_backoff_ms", &self.retry_max_backoff_ms)
            .field("spool_dir", &self.spool_dir)
            .field("spool_max_bytes", &self.spool_max_bytes)
            .field("health_interval_ms", &self.health_interval_ms)
            .field("object_lock", &self.object_lock)
            .finish()
    }
}

/// A configuration the store cannot be opened with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreConfigError {
    /// A key has a value it cannot have.
    #[error("store.{key}: {reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// Why.
        reason: String,
    },
    /// `object_lock` is configured, but object_store 0.14.2 cannot send
    /// Object Lock headers on a put.
    #[error(
        "store.object_lock: per-object S3 Object Lock headers cannot be sent through object_store 0.14.2 \
         (no retention or legal-hold put option); remove object_lock and give the bucket a default \
         Object Lock retention instead (aws s3api put-object-lock-configuration), which S3 applies to every object"
    )]
    ObjectLockUnsupported,
    /// An environment override has a value of the wrong type.
    #[error("environment override of store.{key}: {reason}")]
    Env {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> StoreConfigError {
    StoreConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

impl StoreConfig {
    /// Checks every key; `Ok` means [`super::open`] can build the store.
    pub fn validate(&self) -> Result<(), StoreConfigError> {
        if self.object_lock.is_some() {
            return Err(StoreConfigError::ObjectLockUnsupported);
        }
        match self.kind {
            StoreKind::Fs => {
                if self.dir.is_empty() {
                    return Err(invalid("dir", "required with kind = \"fs\""));
                }
            }
            StoreKind::S3 => {
                if self.bucket.is_empty() {
                    return Err(invalid("bucket", "required with kind = \"s3\""));
                }
                // Without static keys object_store would fall back to the
                // instance metadata service: never guess credentials.
                if self.access_key_id.is_empty() || self.secret_access_key.is_empty() {
                    return Err(invalid(
                        "access_key_id",
                        "access_key_id and secret_access_key are required with kind = \"s3\"",
                    ));
                }
                if self.region.is_empty() {
                    return Err(invalid("region", "required with kind = \"s3\""));
                }
                if !self.endpoint.is_empty() {
                    let ok_scheme = self.endpoint.starts_with("https://")
                        || (self.allow_http && self.endpoint.starts_with("http://"));
                    if !ok_scheme {
                        return Err(invalid(
                            "endpoint",
                            "must be an https:// URL (http:// only with allow_http = true)",
                        ));
                    }
                }
            }
        }
        if self.prefix.starts_with('/') || self.prefix.ends_with('/') {
            return Err(invalid("prefix", "no leading or trailing '/'"));
        }
        if !self.prefix.is_empty() && object_store::path::Path::parse(&self.prefix).is_err() {
            return Err(invalid("prefix", "not a valid object path"));
        }
        if self.timeout_ms == 0 || self.connect_timeout_ms == 0 {
            return Err(invalid(
                "timeout_ms",
                "timeout_ms and connect_timeout_ms must be positive",
            ));
        }
        if self.retry_attempts == 0 || self.retry_attempts > 20 {
            return Err(invalid("retry_attempts", "between 1 and 20"));
        }
        if self.retry_initial_backoff_ms == 0
            || self.retry_max_backoff_ms < self.retry_initial_backoff_ms
        {
            return Err(invalid(
                "retry_initial_backoff_ms",
                "must be positive and at most retry_max_backoff_ms",
            ));
        }
        if !self.spool_dir.is_empty() && self.spool_max_bytes == 0 {
            return Err(invalid("spool_max_bytes", "must be positive"));
        }
        if self.health_interval_ms == 0 {
            return Err(invalid("health_interval_ms", "must be positive"));
        }
        Ok(())
    }

    /// Applies one environment override: `key` is the upper-case key name
    /// after the embedding section's prefix (for `CHAPERONE_RECORDER_STORE_BUCKET`
    /// the embedder passes `BUCKET`). Returns whether the key is ours.
    pub fn apply_env(&mut self, key: &str, value: String) -> Result<bool, StoreConfigError> {
        let bad = |reason: String| StoreConfigError::Env {
            key: key.to_ascii_lowercase(),
            reason,
        };
        let num = |v: &str| v.parse::<u64>().map_err(|e| bad(e.to_string()));
        let flag = |v: &str| match v {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            other => Err(bad(format!("expected true or false, got {other:?}"))),
        };
        match key {
            "KIND" => {
                self.kind = match value.as_str() {
                    "fs" => StoreKind::Fs,
                    "s3" => StoreKind::S3,
                    other => return Err(bad(format!("unknown kind {other:?} (fs or s3)"))),
                }
            }
            "DIR" => self.dir = value,
            "BUCKET" => self.bucket = value,
            "ENDPOINT" => self.endpoint = value,
            "REGION" => self.region = value,
            "ACCESS_KEY_ID" => self.access_key_id = value,
            "SECRET_ACCESS_KEY" => self.secret_access_key = value,
            "ALLOW_HTTP" => self.allow_http = flag(&value)?,
            "PREFIX" => self.prefix = value,
            "TIMEOUT_MS" => self.timeout_ms = num(&value)?,
            "CONNECT_TIMEOUT_MS" => self.connect_timeout_ms = num(&value)?,
            "RETRY_ATTEMPTS" => {
                self.retry_attempts = u32::try_from(num(&value)?).map_err(|e| bad(e.to_string()))?
            }
            "RETRY_INITIAL_BACKOFF_MS" => self.retry_initial_backoff_ms = num(&value)?,
            "RETRY_MAX_BACKOFF_MS" => self.retry_max_backoff_ms = num(&value)?,
            "SPOOL_DIR" => self.spool_dir = value,
            "SPOOL_MAX_BYTES" => self.spool_max_bytes = num(&value)?,
            "HEALTH_INTERVAL_MS" => self.health_interval_ms = num(&value)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The store in words, without secrets: `fs:<dir>` or
    /// `s3://<bucket>/<prefix> at <endpoint>`.
    pub fn describe(&self) -> String {
        match self.kind {
            StoreKind::Fs => format!("fs:{}", self.dir),
            StoreKind::S3 => {
                let at = if self.endpoint.is_empty() {
                    format!("AWS {}", self.region)
                } else {
                    self.endpoint.clone()
                };
                if self.prefix.is_empty() {
                    format!("s3://{} at {at}", self.bucket)
                } else {
                    format!("s3://{}/{} at {at}", self.bucket, self.prefix)
                }
            }
        }
    }

    /// The retry policy of foreground operations.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            attempts: self.retry_attempts,
            initial_backoff: Duration::from_millis(self.retry_initial_backoff_ms),
            max_backoff: Duration::from_millis(self.retry_max_backoff_ms),
        }
    }

    /// The spool directory, if one is configured.
    pub fn spool_path(&self) -> Option<PathBuf> {
        (!self.spool_dir.is_empty()).then(|| PathBuf::from(&self.spool_dir))
    }

    /// Builds the store (no I/O for S3; creates the directory for `fs`).
    pub(super) fn build(&self) -> Result<Arc<dyn ObjectStore>, StoreError> {
        let describe = self.describe();
        let build_err = |source| StoreError::Build {
            store: describe.clone(),
            source,
        };
        let raw: Arc<dyn ObjectStore> = match self.kind {
            StoreKind::Fs => {
                std::fs::create_dir_all(&self.dir).map_err(|source| StoreError::Io {
                    path: self.dir.clone(),
                    source,
                })?;
                let fs = LocalFileSystem::new_with_prefix(&self.dir)
                    .map_err(build_err)?
                    // Durable means on disk: file and directory entries synced.
                    .with_fsync(true);
                self.prefixed(fs)
            }
            StoreKind::S3 => {
                let timeout = Duration::from_millis(self.timeout_ms);
                let connect_timeout = Duration::from_millis(self.connect_timeout_ms);
                let mut b = AmazonS3Builder::new()
                    .with_bucket_name(&self.bucket)
                    .with_region(&self.region)
                    .with_access_key_id(&self.access_key_id)
                    .with_secret_access_key(&self.secret_access_key)
                    .with_virtual_hosted_style_request(false)
                    // Put-if-absent through If-None-Match: *.
                    .with_conditional_put(S3ConditionalPut::ETagMatch)
                    .with_client_options(
                        ClientOptions::new()
                            .with_timeout(timeout)
                            .with_connect_timeout(connect_timeout)
                            .with_allow_http(self.allow_http),
                    )
                    // Retries are ours (RetryingStore), in one place.
                    .with_retry(RetryConfig {
                        max_retries: 0,
                        ..RetryConfig::default()
                    })
                    .with_http_connector(ReqwestConnector::new(
                        timeout,
                        connect_timeout,
                        self.allow_http,
                    ));
                if !self.endpoint.is_empty() {
                    b = b.with_endpoint(&self.endpoint);
                }
                self.prefixed(b.build().map_err(build_err)?)
            }
        };
        Ok(Arc::new(RetryingStore::new(raw, self.retry_policy())))
    }

    fn prefixed<T: ObjectStore>(&self, store: T) -> Arc<dyn ObjectStore> {
        if self.prefix.is_empty() {
            Arc::new(store)
        } else {
            Arc::new(PrefixStore::new(store, self.prefix.as_str()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3() -> StoreConfig {
        StoreConfig {
            kind: StoreKind::S3,
            bucket: "rec".into(),
            endpoint: "https://s3.example.org".into(),
            access_key_id: "AKID".into(),
            secret_access_key: "very secret".into(),
            ..StoreConfig::default()
        }
    }

    #[test]
    fn defaults_need_a_dir() {
        assert!(matches!(
            StoreConfig::default().validate(),
            Err(StoreConfigError::Invalid { key: "dir", .. })
        ));
        let c = StoreConfig {
            dir: "/tmp/x".into(),
            ..StoreConfig::default()
        };
        c.validate().expect("fs with a dir is valid");
        s3().validate().expect("complete s3 config is valid");
    }

    #[test]
    fn toml_keys_parse_and_unknown_keys_are_refused() {
        let c: StoreConfig = serde_json::from_value(serde_json::json!({
            "kind": "s3", "bucket": "b", "endpoint": "http://127.0.0.1:9000",
            "allow_http": true, "access_key_id": "a", "secret_access_key": "s",
            "spool_dir": "/var/spool/chaperone", "spool_max_bytes": 1000
        }))
        .expect("parses");
        assert_eq!(c.kind, StoreKind::S3);
        assert_eq!(c.timeout_ms, 30_000);
        c.validate().expect("valid");
        let e = serde_json::from_value::<StoreConfig>(serde_json::json!({"buckett": "b"}));
        assert!(e.is_err());
        let e = serde_json::from_value::<StoreConfig>(
            serde_json::json!({"object_lock": {"mode": "COMPLIANCE", "days": 3}}),
        );
        assert!(e.is_err(), "unknown object_lock key refused");
    }

    #[test]
    fn object_lock_is_refused_with_the_reason() {
        let c = StoreConfig {
            object_lock: Some(ObjectLockConfig {
                mode: Some("COMPLIANCE".into()),
                retain_days: Some(365),
                legal_hold: false,
            }),
            ..s3()
        };
        let e = c.validate().expect_err("refused");
        assert!(matches!(e, StoreConfigError::ObjectLockUnsupported));
        assert!(e.to_string().contains("default"), "{e}");
    }

    #[test]
    fn s3_needs_keys_and_https() {
        let mut c = s3();
        c.secret_access_key.clear();
        assert!(c.validate().is_err());
        let mut c = s3();
        c.endpoint = "http://127.0.0.1:9000".into();
        assert!(matches!(
            c.validate(),
            Err(StoreConfigError::Invalid {
                key: "endpoint",
                ..
            })
        ));
        c.allow_http = true;
        c.validate().expect("http allowed explicitly");
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let shown = format!("{:?}", s3());
        assert!(!shown.contains("very secret"), "{shown}");
        assert!(shown.contains("<redacted>"));
        assert!(!s3().describe().contains("very secret"));
    }

    #[test]
    fn environment_overrides() {
        let mut c = StoreConfig::default();
        assert!(c.apply_env("KIND", "s3".into()).expect("ok"));
        assert!(c.apply_env("SECRET_ACCESS_KEY", "s".into()).expect("ok"));
        assert!(c.apply_env("ALLOW_HTTP", "true".into()).expect("ok"));
        assert!(c.apply_env("SPOOL_MAX_BYTES", "42".into()).expect("ok"));
        assert!(!c.apply_env("NOT_OURS", "x".into()).expect("ok"));
        assert_eq!(
            (c.kind, c.allow_http, c.spool_max_bytes),
            (StoreKind::S3, true, 42)
        );
        assert!(c.apply_env("KIND", "gcs".into()).is_err());
        assert!(c.apply_env("TIMEOUT_MS", "soon".into()).is_err());
    }
}
