//! The ingest spool on a real filesystem, in front of a store that is up
//! (the local filesystem) or one that cannot be reached (an S3 endpoint on
//! a loopback port nobody listens on: connections are really refused).
//! Recovery against a real S3 server is in `tests/tests/s3_*.rs`.

use std::net::{Ipv4Addr, TcpListener};
use std::sync::Arc;

use bytes::Bytes;
use chaperone_archive::store::{self, StoreConfig, StoreKind};
use chaperone_archive::writer::{ArchiveError, PutOutcome, put_if_absent};
use chaperone_recorder::spool::{
    BackfillGuard, SpoolError, SpooledStore, StoreMetrics, spool_error,
};
use futures_util::TryStreamExt as _;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use prometheus::Registry;

/// A store configuration whose S3 endpoint refuses connections.
fn unreachable(spool: &tempfile::TempDir, max_bytes: u64) -> StoreConfig {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    StoreConfig {
        kind: StoreKind::S3,
        bucket: "b".into(),
        endpoint: format!("http://127.0.0.1:{port}"),
        access_key_id: "a".into(),
        secret_access_key: "s".into(),
        allow_http: true,
        connect_timeout_ms: 500,
        retry_attempts: 2,
        retry_initial_backoff_ms: 10,
        retry_max_backoff_ms: 200,
        health_interval_ms: 200,
        spool_dir: spool.path().to_string_lossy().into_owned(),
        spool_max_bytes: max_bytes,
        ..StoreConfig::default()
    }
}

async fn spooled(config: &StoreConfig) -> (Arc<SpooledStore>, BackfillGuard, StoreMetrics) {
    let inner = store::open_unprobed(config).expect("builds");
    let metrics = StoreMetrics::register(&Registry::new()).expect("metrics");
    let (s, guard) = SpooledStore::open(inner, config, metrics.clone())
        .await
        .expect("spool opens");
    (s, guard, metrics)
}

fn spool_files(dir: &tempfile::TempDir) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("read spool")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".spool"))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn writes_are_spooled_durably_and_readable_while_the_store_is_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = unreachable(&dir, 1 << 20);
    let (s, _guard, metrics) = spooled(&config).await;
    let a = Path::from("lessons/aa/segments/0000000000.age");
    let b = Path::from("lessons/aa/manifests/0000000000.json");

    assert_eq!(
        put_if_absent(s.as_ref(), &a, b"segment zero".to_vec())
            .await
            .expect("spooled"),
        PutOutcome::Written
    );
    put_if_absent(s.as_ref(), &b, b"{}".to_vec())
        .await
        .expect("spooled");
    assert_eq!(spool_files(&dir).len(), 2, "one fsync'd file per object");
    assert_eq!(s.spooled_objects(), 2);
    assert!(!s.store_up());
    assert_eq!(metrics.store_up.get(), 0);
    assert_eq!(metrics.spool_objects.get(), 2);
    assert!(metrics.spool_bytes.get() > 14);
    assert!(metrics.upload_errors.get() >= 1);
    assert_eq!(metrics.put_seconds.get_sample_count(), 2);

    // Reads see the spool: get, ranged get, head.
    let got = s.get(&a).await.expect("get").bytes().await.expect("bytes");
    assert_eq!(got.as_ref(), b"segment zero");
    let part = s.get_range(&a, 8..12).await.expect("range");
    assert_eq!(part.as_ref(), b"zero");
    assert_eq!(s.head(&a).await.expect("head").size, 12);

    // LessonWriter's put-if-absent semantics hold against the spool.
    assert_eq!(
        put_if_absent(s.as_ref(), &a, b"segment zero".to_vec())
            .await
            .expect("same bytes"),
        PutOutcome::AlreadyPresent
    );
    let err = put_if_absent(s.as_ref(), &a, b"other".to_vec())
        .await
        .expect_err("different bytes refused");
    assert!(matches!(err, ArchiveError::AlreadyExists { .. }), "{err}");
    assert_eq!(s.spooled_objects(), 2, "nothing spooled twice");

    // A listing needs the store too: it fails rather than list only the
    // spool and pass for complete.
    let listed: Result<Vec<_>, _> = s.list(Some(&Path::from("lessons/aa"))).try_collect().await;
    assert!(listed.is_err(), "{listed:?}");
}

#[tokio::test]
async fn past_the_bound_writes_fail_with_spool_full_and_nothing_is_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = unreachable(&dir, 10_000);
    let (s, _guard, metrics) = spooled(&config).await;
    let body = vec![7u8; 3_000];
    let mut written = Vec::new();
    let refused = loop {
        let path = Path::from(format!("lessons/bb/segments/{:010}.age", written.len()));
        match put_if_absent(s.as_ref(), &path, body.clone()).await {
            Ok(_) => written.push(path),
            Err(e) => break e,
        }
        assert!(written.len() < 10, "the bound was never reached");
    };
    assert_eq!(
        written.len(),
        3,
        "3 × ~3 KiB fit in 10 000 bytes, a 4th does not"
    );
    match spool_error(&refused) {
        Some(SpoolError::Full { used, max, .. }) => {
            assert!(*used <= 10_000);
            assert_eq!(*max, 10_000);
        }
        other => panic!("expected SpoolError::Full, got {other:?} from {refused}"),
    }
    assert!(s.spooled_bytes() <= 10_000);
    assert_eq!(metrics.spool_objects.get(), 3);
    for p in &written {
        let got = s
            .get(p)
            .await
            .expect("still there")
            .bytes()
            .await
            .expect("bytes");
        assert_eq!(got.len(), 3_000);
    }
}

#[tokio::test]
async fn the_ingest_store_never_overwrites_deletes_or_copies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = unreachable(&dir, 1 << 20);
    let (s, _guard, _) = spooled(&config).await;
    let p = Path::from("lessons/cc/recorder.pub");
    put_if_absent(s.as_ref(), &p, b"key".to_vec())
        .await
        .expect("spooled");
    let overwrite = s.put(&p, PutPayload::from_static(b"x")).await;
    assert!(
        matches!(overwrite, Err(object_store::Error::NotSupported { .. })),
        "{overwrite:?}"
    );
    let delete = s.delete(&p).await;
    assert!(
        matches!(delete, Err(object_store::Error::NotSupported { .. })),
        "{delete:?}"
    );
    let copy = s.copy(&p, &Path::from("elsewhere")).await;
    assert!(
        matches!(copy, Err(object_store::Error::NotSupported { .. })),
        "{copy:?}"
    );
    let got = s.get(&p).await.expect("get").bytes().await.expect("bytes");
    assert_eq!(got, Bytes::from_static(b"key"));
}

#[tokio::test]
async fn a_spool_survives_the_process_and_is_locked_while_in_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = unreachable(&dir, 1 << 20);
    let p = Path::from("lessons/dd/segments/0000000000.age");
    {
        let (s, guard, _) = spooled(&config).await;
        put_if_absent(s.as_ref(), &p, b"kept".to_vec())
            .await
            .expect("spooled");
        // A second process on the same directory is refused.
        let inner = store::open_unprobed(&config).expect("builds");
        let second = SpooledStore::open(
            inner,
            &config,
            StoreMetrics::unregistered().expect("metrics"),
        )
        .await;
        assert!(
            matches!(second, Err(SpoolError::Locked { .. })),
            "{second:?}"
        );
        guard.stop().await;
    }
    // An incomplete write left behind was never acknowledged: removed.
    std::fs::write(dir.path().join("00000000000000000099.part"), b"torn").expect("write");
    let (s, _guard, metrics) = spooled(&config).await;
    assert_eq!(s.spooled_objects(), 1);
    assert_eq!(metrics.spool_objects.get(), 1);
    let got = s.get(&p).await.expect("get").bytes().await.expect("bytes");
    assert_eq!(got.as_ref(), b"kept");
    assert!(!dir.path().join("00000000000000000099.part").exists());
    // New writes number after the old ones.
    put_if_absent(
        s.as_ref(),
        &Path::from("lessons/dd/segments/0000000001.age"),
        b"next".to_vec(),
    )
    .await
    .expect("spooled");
    assert_eq!(
        spool_files(&dir),
        vec![
            "00000000000000000000.spool".to_owned(),
            "00000000000000000001.spool".to_owned()
        ]
    );
}

#[tokio::test]
async fn a_damaged_spool_file_stops_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = unreachable(&dir, 1 << 20);
    {
        let (s, guard, _) = spooled(&config).await;
        put_if_absent(
            s.as_ref(),
            &Path::from("lessons/ee/segments/0000000000.age"),
            vec![1u8; 100],
        )
        .await
        .expect("spooled");
        guard.stop().await;
    }
    let file = dir.path().join(&spool_files(&dir)[0]);
    let mut bytes = std::fs::read(&file).expect("read");
    bytes[10] ^= 0xff;
    std::fs::write(&file, &bytes).expect("write");
    let inner = store::open_unprobed(&config).expect("builds");
    let r = SpooledStore::open(
        inner,
        &config,
        StoreMetrics::unregistered().expect("metrics"),
    )
    .await;
    assert!(matches!(r, Err(SpoolError::Corrupt { .. })), "{r:?}");
    assert!(file.exists(), "left in place for inspection");
}

#[tokio::test]
async fn with_the_store_up_writes_go_straight_to_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = tempfile::tempdir().expect("tempdir");
    let config = StoreConfig {
        kind: StoreKind::Fs,
        dir: archive.path().to_string_lossy().into_owned(),
        spool_dir: dir.path().to_string_lossy().into_owned(),
        ..StoreConfig::default()
    };
    let inner = store::open(&config).await.expect("fs store opens");
    let metrics = StoreMetrics::register(&Registry::new()).expect("metrics");
    let (s, _guard) = SpooledStore::open(inner, &config, metrics.clone())
        .await
        .expect("spool opens");
    let p = Path::from("lessons/ff/segments/0000000000.age");
    put_if_absent(s.as_ref(), &p, b"direct".to_vec())
        .await
        .expect("stored");
    assert!(spool_files(&dir).is_empty());
    assert_eq!(
        std::fs::read(archive.path().join(p.as_ref())).expect("in the archive"),
        b"direct"
    );
    assert!(s.store_up());
    assert_eq!(metrics.store_up.get(), 1);
    assert_eq!(metrics.upload_errors.get(), 0);
    assert_eq!(metrics.put_seconds.get_sample_count(), 1);
    let listed: Vec<_> = s
        .list(Some(&Path::from("lessons/ff")))
        .try_collect()
        .await
        .expect("lists");
    assert_eq!(listed.len(), 1);
}
