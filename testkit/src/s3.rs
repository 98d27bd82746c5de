//! A private S3-compatible server for one test: `s3s-fs` (it checks SigV4
//! signatures) on a free loopback port, with its own access key, secret
//! and data directory, stopped when dropped. It can be stopped and started
//! again on the same port and directory, for outage tests.
//!
//! s3s-fs serves each directory under its root as a bucket, so the bucket
//! is created by making the directory. Install:
//! `cargo install --locked s3s-fs@0.14.1 --features binary` (later versions
//! need a newer compiler); `scripts/test.sh` does it when it is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
#[cfg(feature = "archive")]
use chaperone_archive::store::{StoreConfig, StoreKind};

use crate::process::{ChildGuard, free_port, scratch_dir, wait_for_port};

/// The bucket every test server has.
pub const BUCKET: &str = "chaperone-test";

/// A running (or stopped) private s3s-fs.
#[derive(Debug)]
pub struct S3Server {
    port: u16,
    root: PathBuf,
    access_key: String,
    secret_key: String,
    child: Option<ChildGuard>,
}

impl S3Server {
    /// Starts s3s-fs with a fresh data directory and the bucket [`BUCKET`].
    /// Fails, never skips, when s3s-fs is missing.
    pub fn start() -> Result<Self> {
        let port = free_port()?;
        let root = scratch_dir("s3")?;
        std::fs::create_dir_all(root.join(BUCKET))
            .with_context(|| format!("creating {}", root.display()))?;
        let mut server = Self {
            port,
            root,
            // Distinct per server, so that no test passes with another's key.
            access_key: format!("AKCHAPERONE{port}"),
            secret_key: format!("chaperone-secret-{port}-{}", std::process::id()),
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<()> {
        let mut child = ChildGuard::spawn(
            "s3s-fs",
            Command::new("s3s-fs")
                .args(["--host", "127.0.0.1"])
                .args(["--port", &self.port.to_string()])
                .args(["--access-key", &self.access_key])
                .args(["--secret-key", &self.secret_key])
                .arg(&self.root)
                .env("RUST_LOG", "error")
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )?;
        wait_for_port(&mut child, self.port, Duration::from_secs(10))?;
        self.child = Some(child);
        Ok(())
    }

    /// Kills it (an outage). Its data stays on disk.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill();
        }
    }

    /// Starts it again on the same port and data directory.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }

    /// Whether it is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The access key id it accepts.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// The bucket's directory on disk (to look at what was stored).
    pub fn bucket_dir(&self) -> PathBuf {
        self.root.join(BUCKET)
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    #[cfg(feature = "archive")]
    /// A store configuration for this server, with timeouts and backoff
    /// short enough for tests.
    pub fn config(&self) -> StoreConfig {
        StoreConfig {
            kind: StoreKind::S3,
            bucket: BUCKET.to_owned(),
            endpoint: self.endpoint(),
            region: "us-east-1".to_owned(),
            access_key_id: self.access_key.clone(),
            secret_access_key: self.secret_key.clone(),
            allow_http: true,
            timeout_ms: 5_000,
            connect_timeout_ms: 1_000,
            retry_attempts: 3,
            retry_initial_backoff_ms: 50,
            retry_max_backoff_ms: 1_000,
            health_interval_ms: 500,
            ..StoreConfig::default()
        }
    }
}

/// How long outage tests keep the store down: `CHAPERONE_S3_OUTAGE_SECS`,
/// else `default` (60 s, the scenario, for the end-to-end test of
/// the whole recording path; shorter for the store layer's own).
pub fn outage_from_env(default: Duration) -> Duration {
    std::env::var("CHAPERONE_S3_OUTAGE_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(default, Duration::from_secs)
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
