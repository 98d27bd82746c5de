//! A real `recorder serve` process for the whole-stack recording tests,
//! started by the testkit ([`chaperone_testkit::recorder`]: its own store
//! directory, a manifest key and a review identity made for the test, the
//! gateway's JWKS to verify service tokens with; killed with SIGKILL
//! (`kill -9`) on demand or when dropped). What needs the product crates is
//! here: the S3 store it may write to, and the archive read back the way
//! the review side reads it (verified with `chaperone_archive::verify`,
//! segments opened with the identity, feed frames decoded in seq order).
#![allow(dead_code, clippy::unwrap_used)]

use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::time::Duration;

use chaperone_archive::keys::RecorderPublicKey;
use chaperone_archive::store::StoreConfig;
use chaperone_archive::verify::{Report, verify_lesson};
use chaperone_protocol::LessonId;
use chaperone_protocol::feed::FeedFrame;
pub use chaperone_testkit::recorder::RecorderProcess;
use chaperone_testkit::recorder::{self, RecorderSettings};

/// The testkit's recorder setup (directory, ports, review identity,
/// settings: kept to start another process on the same store after a
/// crash), with the S3 store it may write to, and the archive read back.
pub struct RecorderSetup {
    base: recorder::RecorderSetup,
    /// An S3 store to write to (spooling under the setup's directory while
    /// it is down), and its bucket's directory on disk; `None`: the
    /// filesystem store under the setup's directory, without a spool.
    s3: Option<(StoreConfig, PathBuf)>,
}

impl Deref for RecorderSetup {
    type Target = recorder::RecorderSetup;
    fn deref(&self) -> &Self::Target {
        &self.base
    }
}

impl DerefMut for RecorderSetup {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.base
    }
}

impl RecorderSetup {
    /// A recorder trusting `issuer`'s service tokens, one-second segments,
    /// a filesystem store and no spool.
    pub fn new(issuer: &str) -> Self {
        let mut settings = RecorderSettings::new(issuer);
        settings.segment_secs = Some(1);
        settings.spool = false;
        RecorderSetup {
            base: recorder::RecorderSetup::new(settings).unwrap(),
            s3: None,
        }
    }

    /// Writes to the S3 store `config` names (its bucket on disk at
    /// `bucket_dir`), with a 256 MiB spool.
    pub fn use_s3(&mut self, config: StoreConfig, bucket_dir: PathBuf) {
        self.base.settings.s3_store(&StoreConfig {
            spool_max_bytes: 256 << 20,
            ..config.clone()
        });
        self.s3 = Some((config, bucket_dir));
    }

    /// Where the archive's objects are on disk.
    pub fn store_dir(&self) -> PathBuf {
        self.s3
            .as_ref()
            .map_or_else(|| self.base.store_dir(), |(_, bucket)| bucket.clone())
    }

    /// The recorder's `/metrics` text (empty if it does not answer).
    pub async fn metrics(&self) -> String {
        match reqwest::get(self.metrics_url()).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// One unlabelled sample of the recorder's metrics, if present.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        recorder::metric(&self.metrics().await, name)
    }

    pub fn public_key(&self) -> RecorderPublicKey {
        chaperone_archive::keys::RecorderSigningKey::load_or_generate(&self.signing_key_file())
            .unwrap()
            .public()
    }

    /// Starts `recorder serve` and waits until it is ready (without
    /// blocking the runtime the node under test shares).
    pub async fn start(&self) -> RecorderProcess {
        let mut p = self.base.spawn().unwrap();
        for _ in 0..200 {
            match p.ready() {
                Ok(true) => return p,
                Ok(false) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => panic!("recorder exited at start: {e}"),
            }
        }
        panic!("recorder not ready at {}", self.url());
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
            let segment = chaperone_review::open::open_segment(&sealed, self.identity()).unwrap();
            for r in segment.records() {
                out.push((r.seq, FeedFrame::parse(&r.frame).unwrap()));
            }
        }
        out
    }
}
