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

use chaperone_protocol::LessonId;
use chaperone_protocol::feed::FeedFrame;
use chaperone_recorder::keys::RecorderPublicKey;
use chaperone_recorder::verify::{Report, verify_lesson};

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
}

impl RecorderSetup {
    pub fn new(issuer: &str) -> Self {
        RecorderSetup {
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
            identity: age::x25519::Identity::generate(),
            issuer: issuer.to_owned(),
            segment_secs: 1,
        }
    }

    /// `ws://127.0.0.1:<port>`: what the gateway's `recorder.urls` names.
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn public_key(&self) -> RecorderPublicKey {
        chaperone_recorder::keys::RecorderSigningKey::load_or_generate(
            &self.dir.path().join("signing.pem"),
        )
        .unwrap()
        .public()
    }

    /// Starts `recorder serve` and waits until it is ready.
    pub async fn start(&self) -> RecorderProcess {
        let child = Command::new(binary("recorder"))
            .arg("serve")
            .env(
                "CHAPERONE_RECORDER_HTTP_LISTEN",
                format!("127.0.0.1:{}", self.port),
            )
            .env("CHAPERONE_RECORDER_HTTP_METRICS_LISTEN", "")
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
            .env("CHAPERONE_RECORDER_STORE_DIR", self.store_dir())
            .env("CHAPERONE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
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

    /// The lesson's verify report.
    pub async fn verify(&self, lesson: LessonId) -> Report {
        let store = chaperone_recorder::archive::local_store(&self.store_dir()).unwrap();
        verify_lesson(store.as_ref(), &lesson, &self.public_key()).await
    }

    /// Every frame of the lesson's archive, in seq order, with its seq.
    pub fn frames(&self, lesson: LessonId) -> Vec<(u64, FeedFrame)> {
        let dir = self.store_dir().join(format!("lessons/{lesson}/segments"));
        let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        names.sort();
        let mut out = Vec::new();
        for path in names {
            let sealed = std::fs::read(&path).unwrap();
            let segment =
                chaperone_recorder::review::open_segment(&sealed, &self.identity).unwrap();
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
