//! A spool left by a killed process is backfilled by the next one: a child
//! process (this test binary, running the ignored `spool_child` test)
//! writes a whole lesson while the S3 server is down, so every object goes
//! to its spool, and is killed with SIGKILL; a new spooled store on the
//! same directory backfills everything once the server is back, and the
//! S3 copy verifies.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use chaperone_archive::ObjectStore;
use chaperone_archive::keys::RecorderSigningKey;
use chaperone_archive::store::{self, StoreConfig};
use chaperone_protocol::LessonId;
use chaperone_recorder::spool::{SpooledStore, StoreMetrics};
use chaperone_testkit::archive::TestLesson;
use chaperone_testkit::process::ChildGuard;
use chaperone_testkit::s3::S3Server;

const SEGMENTS: u64 = 6;
const LESSON: [u8; 16] = [0x4b; 16];
const ENV_CONFIG: &str = "CHAPERONE_SPOOL_CHILD_CONFIG";
const ENV_KEY: &str = "CHAPERONE_SPOOL_CHILD_SIGNING_KEY";
const ENV_RECIPIENT: &str = "CHAPERONE_SPOOL_CHILD_RECIPIENT";
const ENV_DONE: &str = "CHAPERONE_SPOOL_CHILD_DONE";

/// The child: writes the lesson through a spooled store whose S3 server is
/// down, reports how many objects it spooled, then waits to be killed.
/// Does nothing unless started by the parent test.
#[tokio::test]
#[ignore = "run by spool_left_by_a_killed_process_is_backfilled_by_the_next"]
async fn spool_child() {
    let Ok(config) = std::env::var(ENV_CONFIG) else {
        return;
    };
    let config: StoreConfig = serde_json::from_str(&config).expect("config from the parent");
    let signer =
        RecorderSigningKey::from_pem(&std::env::var(ENV_KEY).expect("key")).expect("signing key");
    let recipient: age::x25519::Recipient = std::env::var(ENV_RECIPIENT)
        .expect("recipient")
        .parse()
        .expect("age recipient");
    let done = PathBuf::from(std::env::var(ENV_DONE).expect("done file"));

    let inner = store::open_unprobed(&config).expect("store builds");
    let (spooled, _backfill) = SpooledStore::open(
        inner,
        &config,
        StoreMetrics::unregistered().expect("metrics"),
    )
    .await
    .expect("spool opens");
    let store: Arc<dyn ObjectStore> = spooled.clone();
    let mut l = TestLesson::new(store, LessonId::from_bytes(LESSON), recipient, signer, 512);
    for i in 0..SEGMENTS {
        l.append_next().await.expect("append (spooled)");
        if i % 2 == 1 {
            l.checkpoint().await.expect("checkpoint (spooled)");
        }
    }
    l.finish().await.expect("finish (spooled)");
    std::fs::write(&done, spooled.spooled_objects().to_string()).expect("done file");
    // Killed here by the parent, spool and all.
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_left_by_a_killed_process_is_backfilled_by_the_next() {
    let mut s3 = S3Server::start().expect("s3s-fs starts");
    let work = tempfile::tempdir().expect("tempdir");
    let spool_dir = work.path().join("spool");
    let done = work.path().join("child-done");
    let config = StoreConfig {
        spool_dir: spool_dir.to_string_lossy().into_owned(),
        ..s3.config()
    };
    let review = age::x25519::Identity::generate();
    let signer = RecorderSigningKey::generate().expect("key");
    s3.stop();

    let mut child = ChildGuard::spawn(
        "spool child",
        Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "spool_child", "--ignored", "--nocapture"])
            .env(ENV_CONFIG, serde_json::to_string(&config).expect("json"))
            .env(ENV_KEY, signer.to_pem())
            .env(ENV_RECIPIENT, review.to_public().to_string())
            .env(ENV_DONE, &done),
    )
    .expect("child starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    let spooled: u64 = loop {
        if let Ok(text) = std::fs::read_to_string(&done)
            && let Ok(n) = text.parse()
        {
            break n;
        }
        child.check_running().expect("child still running");
        assert!(Instant::now() < deadline, "child did not finish writing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    child.kill();
    // Segments, three checkpoints and the final one with their signatures,
    // and the public key.
    assert_eq!(spooled, SEGMENTS + 4 * 2 + 1);
    let lesson = LessonId::from_bytes(LESSON);
    assert!(
        !s3.bucket_dir().join(format!("lessons/{lesson}")).exists(),
        "nothing reached the store while it was down"
    );

    // The next process, on the same spool directory, with the store back.
    s3.restart().expect("s3s-fs restarts");
    let inner = store::open(&config).await.expect("probe passes");
    let metrics = StoreMetrics::unregistered().expect("metrics");
    let (next, _backfill) = SpooledStore::open(inner, &config, metrics.clone())
        .await
        .expect("spool reopens after the kill");
    assert_eq!(next.spooled_objects(), spooled, "found what the child left");
    tokio::time::timeout(Duration::from_secs(60), next.wait_drained())
        .await
        .expect("backfilled within a minute");
    assert_eq!(metrics.spool_objects.get(), 0);
    let left: Vec<_> = std::fs::read_dir(&spool_dir)
        .expect("spool dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".spool") || n.ends_with(".part"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    let s3_store = store::open(&s3.config()).await.expect("s3 opens");
    let reader = TestLesson::new(s3_store.clone(), lesson, review.to_public(), signer, 512);
    let r = reader.verify(s3_store.as_ref()).await;
    assert!(r.ok, "{}", r.to_human());
    assert!(r.is_final);
    assert_eq!((r.segments_listed, r.segments_ok), (SEGMENTS, SEGMENTS));
}
