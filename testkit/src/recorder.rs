//! Starts the real `recorder serve` binary for a test, on free loopback
//! ports, with its own store (and spool) directory, a fresh manifest key and
//! review identity, trusting the given gateway's JWKS; stopped when dropped.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Result;

use crate::process::{ChildGuard, binary, free_port, wait_for_port};

/// A running recorder.
#[derive(Debug)]
pub struct Recorder {
    port: u16,
    metrics_port: u16,
    child: ChildGuard,
    dir: PathBuf,
    /// The review identity its segments are sealed to (`AGE-SECRET-KEY-1…`).
    pub identity: String,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.child.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Recorder {
    /// `recorder serve` for the gateway at `gateway_url` (its public URL),
    /// with extra `CHAPERONE_RECORDER_*` settings.
    pub fn start(gateway_url: &str, env: &[(&str, &str)]) -> Result<Self> {
        let port = free_port()?;
        let metrics_port = free_port()?;
        let dir =
            std::env::temp_dir().join(format!("chaperone-recorder-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let (identity, recipient) = review_identity();
        let mut cmd = Command::new(binary("recorder")?);
        cmd.arg("serve")
            .env(
                "CHAPERONE_RECORDER_HTTP_LISTEN",
                format!("127.0.0.1:{port}"),
            )
            .env(
                "CHAPERONE_RECORDER_HTTP_METRICS_LISTEN",
                format!("127.0.0.1:{metrics_port}"),
            )
            .env(
                "CHAPERONE_RECORDER_GATEWAY_ISSUERS",
                format!("[\"{gateway_url}\"]"),
            )
            .env(
                "CHAPERONE_RECORDER_GATEWAY_JWKS_URL",
                format!("{gateway_url}/.well-known/jwks.json"),
            )
            .env(
                "CHAPERONE_RECORDER_ARCHIVE_RECIPIENTS",
                format!("[\"{recipient}\"]"),
            )
            .env(
                "CHAPERONE_RECORDER_ARCHIVE_SIGNING_KEY_FILE",
                dir.join("signing.pem"),
            )
            .env("CHAPERONE_RECORDER_STORE_DIR", dir.join("store"))
            .env("CHAPERONE_RECORDER_STORE_SPOOL_DIR", dir.join("spool"))
            .env("CHAPERONE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = ChildGuard::spawn("recorder", &mut cmd)?;
        wait_for_port(&mut child, port, Duration::from_secs(20))?;
        wait_for_port(&mut child, metrics_port, Duration::from_secs(5))?;
        Ok(Self {
            port,
            metrics_port,
            child,
            dir,
            identity,
        })
    }

    /// The feed URL the gateway's `recorder.urls` names.
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// The feed and health port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The metrics listener's port.
    pub fn metrics_port(&self) -> u16 {
        self.metrics_port
    }

    /// Where the archive is written.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.join("store")
    }
}

/// A fresh review identity (`AGE-SECRET-KEY-1…`) and its public recipient
/// (`age1…`): what a recorder under test seals to.
pub fn review_identity() -> (String, String) {
    use age::secrecy::ExposeSecret as _;
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    (identity.to_string().expose_secret().to_owned(), recipient)
}
