//! The archive against a real S3 server that checks signatures (`s3s-fs`)
//! and against the filesystem, through the same `store::open`: one round
//! trip body for both; start-up probe errors that name their cause.

use std::sync::Arc;

use chaperone_archive::ObjectStore;
use chaperone_archive::keys::RecorderSigningKey;
use chaperone_archive::layout;
use chaperone_archive::store::{self, StoreConfig, StoreError, StoreKind};
use chaperone_archive::writer::{ArchiveError, PutOutcome, put_if_absent};
use chaperone_protocol::LessonId;
use chaperone_review::open::open_segment;
use chaperone_testkit::archive::TestLesson;
use chaperone_testkit::process::free_port;
use chaperone_testkit::s3::S3Server;
use object_store::ObjectStoreExt as _;

const N: u64 = 5;

/// Writes a lesson (a checkpoint every second segment, then the final one),
/// verifies it, opens every segment with the review identity, and checks
/// that a conflicting put-if-absent leaves the stored object alone.
async fn round_trip(store: Arc<dyn ObjectStore>) {
    let review = age::x25519::Identity::generate();
    let lesson = LessonId::from_bytes([0x5a; 16]);
    let signer = RecorderSigningKey::generate().expect("key");
    let mut l = TestLesson::new(store.clone(), lesson, review.to_public(), signer, 64);
    for i in 0..N {
        l.append_next().await.expect("append");
        if i % 2 == 1 {
            l.checkpoint().await.expect("checkpoint");
        }
    }
    l.finish().await.expect("finish");

    let r = l.verify(store.as_ref()).await;
    assert!(r.ok, "{}", r.to_human());
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    assert!(r.is_final);
    assert_eq!((r.segments_listed, r.segments_ok), (N, N));
    for (i, s) in l.segments.iter().enumerate() {
        let sealed = store
            .get(&layout::segment_path(&lesson, i as u64))
            .await
            .expect("get segment")
            .bytes()
            .await
            .expect("read segment");
        assert_eq!(&open_segment(&sealed, &review).expect("opens"), s);
    }

    // Write-once holds through the store: same bytes are "already
    // present", other bytes are refused and the stored object is unchanged.
    let path = layout::segment_path(&lesson, 0);
    let stored = store
        .get(&path)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("read");
    assert_eq!(
        put_if_absent(store.as_ref(), &path, stored.to_vec())
            .await
            .expect("same bytes"),
        PutOutcome::AlreadyPresent
    );
    let err = put_if_absent(store.as_ref(), &path, b"forged".to_vec())
        .await
        .expect_err("different bytes refused");
    assert!(matches!(err, ArchiveError::AlreadyExists { .. }), "{err}");
    let after = store
        .get(&path)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("read");
    assert_eq!(after, stored);
}

#[tokio::test]
async fn round_trip_on_the_filesystem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StoreConfig {
        kind: StoreKind::Fs,
        dir: dir.path().to_string_lossy().into_owned(),
        ..StoreConfig::default()
    };
    let store = store::open(&config).await.expect("fs store opens");
    round_trip(store).await;
    assert!(
        dir.path()
            .join(format!(
                "lessons/{}/segments/0000000000.age",
                "5a".repeat(16)
            ))
            .is_file()
    );
}

#[tokio::test]
async fn round_trip_on_s3() {
    let s3 = S3Server::start().expect("s3s-fs starts");
    let store = store::open(&s3.config()).await.expect("s3 store opens");
    round_trip(store).await;
    // The objects are really in the S3 server's bucket.
    assert!(
        s3.bucket_dir()
            .join(format!(
                "lessons/{}/segments/0000000000.age",
                "5a".repeat(16)
            ))
            .is_file()
    );
}

#[tokio::test]
async fn round_trip_on_s3_under_a_prefix() {
    let s3 = S3Server::start().expect("s3s-fs starts");
    let config = StoreConfig {
        prefix: "school-a/recordings".into(),
        ..s3.config()
    };
    let store = store::open(&config).await.expect("s3 store opens");
    round_trip(store).await;
    assert!(
        s3.bucket_dir()
            .join(format!(
                "school-a/recordings/lessons/{}/manifests/0000000000.json",
                "5a".repeat(16)
            ))
            .is_file()
    );
}

#[tokio::test]
async fn wrong_secret_key_fails_at_open_with_the_credentials_error() {
    let s3 = S3Server::start().expect("s3s-fs starts");
    let config = StoreConfig {
        secret_access_key: "not-the-secret".into(),
        ..s3.config()
    };
    let err = store::open(&config).await.expect_err("refused");
    assert!(
        matches!(err, StoreError::CredentialsRefused { .. }),
        "{err:?}"
    );
    let shown = err.to_string();
    assert!(shown.contains("credentials refused"), "{shown}");
    assert!(shown.contains("SignatureDoesNotMatch"), "{shown}");
    assert!(
        !shown.contains("not-the-secret"),
        "secret in error: {shown}"
    );
}

#[tokio::test]
async fn unknown_access_key_fails_at_open_with_the_credentials_error() {
    let s3 = S3Server::start().expect("s3s-fs starts");
    let config = StoreConfig {
        access_key_id: "AKNOBODY".into(),
        ..s3.config()
    };
    let err = store::open(&config).await.expect_err("refused");
    assert!(
        matches!(err, StoreError::CredentialsRefused { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn unreachable_endpoint_fails_at_open_with_the_unreachable_error() {
    // A port nobody listens on: connections are refused.
    let port = free_port().expect("port");
    let s3 = S3Server::start().expect("s3s-fs starts");
    let config = StoreConfig {
        endpoint: format!("http://127.0.0.1:{port}"),
        ..s3.config()
    };
    let err = store::open(&config).await.expect_err("refused");
    assert!(matches!(err, StoreError::Unreachable { .. }), "{err:?}");
}

#[tokio::test]
async fn missing_bucket_fails_at_open_with_the_bucket_error() {
    let s3 = S3Server::start().expect("s3s-fs starts");
    let config = StoreConfig {
        bucket: "no-such-bucket".into(),
        ..s3.config()
    };
    let err = store::open(&config).await.expect_err("refused");
    assert!(matches!(err, StoreError::BucketMissing { .. }), "{err:?}");
    assert!(
        !s3.root().join("no-such-bucket").exists(),
        "the probe must not create the bucket"
    );
}

#[tokio::test]
async fn plain_http_is_refused_unless_allowed() {
    let s3 = S3Server::start().expect("s3s-fs starts");
    let config = StoreConfig {
        allow_http: false,
        ..s3.config()
    };
    let err = store::open(&config).await.expect_err("refused");
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");
}
