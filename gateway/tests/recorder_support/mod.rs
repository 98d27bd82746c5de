//! A real `recorder serve` process for the whole-stack recording tests: its
//! own store directory, a manifest key and a review identity made for the
//! test, the gateway's JWKS to verify service tokens with; killed with
//! SIGKILL (`kill -9`) on demand or when dropped. And the archive read back
//! the way the review side reads it: segments opened with the identity,
//! feed frames decoded in seq order.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chaperone_archive::keys::RecorderPublicKey;
use chaperone_archive::store::StoreConfig;
use chaperone_archive::verify::{Report, verify_lesson};
use chaperone_protocol::LessonId;
use chaperone_protocol::feed::FeedFrame;

/// Where the workspace's binaries are (next to the test executable's directory).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: `cargo build -p chaperone-recorder --bin recorder` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What a recorder process is started with; kept to start another one on
/// the same store after a crash.
pub struct RecorderSetup {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub identity: age::x25519::Identity,
    pub issuer: String,
    pub segment_secs: u64,
    /// An S3 store to write to (spooling under `dir` while it is down),
    /// and its bucket's directory on disk; `None`: the filesystem store
    /// under `dir`.
    pub s3: Option<(StoreConfig, PathBuf)>,
    /// `/metrics` listener port.
    pub metrics_port: u16,
}

impl RecorderSetup {
    pub fn new(issuer: &str) -> Self {
        RecorderSetup {
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
            identity: age::x25519::Identity::generate(),
            issuer: issuer.to_owned(),
            segment_secs: 1,
            s3: None,
            metrics_port: free_port(),
        }
    }

    /// `ws://127.0.0.1:<port>`: what the gateway's `recorder.urls` names.
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// Where the archive's objects are on disk.
    pub fn store_dir(&self) -> PathBuf {
        self.s3.as_ref().map_or_else(
            || self.dir.path().join("store"),
            |(_, bucket)| bucket.clone(),
        )
    }

    /// The recorder's `/metrics` text (empty if it does not answer).
    pub async fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        match reqwest::get(&url).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// One unlabelled sample of the recorder's metrics, if present.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        self.metrics().await.lines().find_map(|l| {
            let (n, v) = l.split_once(' ')?;
            (n == name).then(|| v.trim().parse().ok()).flatten()
        })
    }

    pub fn public_key(&self) -> RecorderPublicKey {
        chaperone_archive::keys::RecorderSigningKey::load_or_generate(
            &self.dir.path().join("signing.pem"),
        )
        .unwrap()
        .public()
    }

    /// Starts `recorder serve` and waits until it is ready.
    pub async fn start(&self) -> RecorderProcess {
        let mut cmd = Command::new(binary("recorder"));
        cmd.arg("serve")
            .env(
                "CHAPERONE_RECORDER_HTTP_LISTEN",
                format!("127.0.0.1:{}", self.port),
            )
            .env(
                "CHAPERONE_RECORDER_HTTP_METRICS_LISTEN",
                format!("127.0.0.1:{}", self.metrics_port),
            )
            .env(
                "CHAPERONE_RECORDER_GATEWAY_ISSUERS",
                format!("[\"{}\"]", self.issuer),
            )
            .env(
                "CHAPERONE_RECORDER_GATEWAY_JWKS_URL",
                format!("{}/.well-known/jwks.json", self.issuer),
            )
            .env(
                "CHAPERONE_RECORDER_ARCHIVE_RECIPIENTS",
                format!("[\"{}\"]", self.identity.to_public()),
            )
            .env(
                "CHAPERONE_RECORDER_ARCHIVE_SIGNING_KEY_FILE",
                self.dir.path().join("signing.pem"),
            )
            .env(
                "CHAPERONE_RECORDER_ARCHIVE_SEGMENT_SECS",
                self.segment_secs.to_string(),
            )
            .env(
                "CHAPERONE_RECORDER_STORE_DIR",
                self.dir.path().join("store"),
            )
            .env("CHAPERONE_LOG", "warn")
            .envs(self.store_env())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = cmd.spawn().unwrap();
        let mut p = RecorderProcess { child: Some(child) };
        let url = format!("http://127.0.0.1:{}/readyz", self.port);
        for _ in 0..200 {
            if let Some(status) = p.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("recorder exited at start: {status}");
            }
            if reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("recorder not ready at {url}");
    }

    /// `CHAPERONE_RECORDER_STORE_*` for the S3 store, if there is one.
    fn store_env(&self) -> Vec<(String, String)> {
        let Some((c, _)) = &self.s3 else {
            return Vec::new();
        };
        let spool = self.dir.path().join("spool").display().to_string();
        [
            ("KIND", "s3".to_owned()),
            ("BUCKET", c.bucket.clone()),
            ("ENDPOINT", c.endpoint.clone()),
            ("REGION", c.region.clone()),
            ("ACCESS_KEY_ID", c.access_key_id.clone()),
            ("SECRET_ACCESS_KEY", c.secret_access_key.clone()),
            ("ALLOW_HTTP", c.allow_http.to_string()),
            ("TIMEOUT_MS", c.timeout_ms.to_string()),
            ("CONNECT_TIMEOUT_MS", c.connect_timeout_ms.to_string()),
            ("RETRY_ATTEMPTS", c.retry_attempts.to_string()),
            (
                "RETRY_INITIAL_BACKOFF_MS",
                c.retry_initial_backoff_ms.to_string(),
            ),
            ("RETRY_MAX_BACKOFF_MS", c.retry_max_backoff_ms.to_string()),
            ("HEALTH_INTERVAL_MS", c.health_interval_ms.to_string()),
            ("SPOOL_DIR", spool),
            ("SPOOL_MAX_BYTES", (256u64 << 20).to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (format!("CHAPERONE_RECORDER_STORE_{k}"), v))
        .collect()
    }

    /// The lesson's verify report, read from the store the recorder
    /// writes to (over S3 when it is one).
    pub async fn verify(&self, lesson: LessonId) -> Report {
        let store = match &self.s3 {
            Some((config, _)) => chaperone_archive::store::open_unprobed(config).unwrap(),
            None => chaperone_archive::writer::local_store(&self.store_dir()).unwrap(),
        };
        verify_lesson(store.as_ref(), &lesson, &self.public_key()).await
    }

    /// Every frame of the lesson's archive, in seq order, with its seq.
    pub fn frames(&self, lesson: LessonId) -> Vec<(u64, FeedFrame)> {
        let dir = self.store_dir().join(format!("lessons/{lesson}/segments"));
        // Segment objects only (an S3 server may keep its own files beside them).
        let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|d| {
                d.map(|e| e.unwrap().path())
                    .filter(|p| p.extension().is_some_and(|e| e == "age"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        let mut out = Vec::new();
        for path in names {
            let sealed = std::fs::read(&path).unwrap();
            let segment = chaperone_review::open::open_segment(&sealed, &self.identity).unwrap();
            for r in segment.records() {
                out.push((r.seq, FeedFrame::parse(&r.frame).unwrap()));
            }
        }
        out
    }
}

/// A running recorder.
pub struct RecorderProcess {
    child: Option<Child>,
}

impl RecorderProcess {
    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and wait for it to exit (a graceful shutdown).
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }
}

impl Drop for RecorderProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
