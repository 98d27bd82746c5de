//! Export for police or an external agency: a lesson's encrypted segments,
//! its signed manifest checkpoints and the recorder's public key, exactly as
//! stored, with a verification report, in one tar file. A third party needs
//! only the standard `age` tool (with the identity the school gives them)
//! and `recorder verify` to check and open it:
//!
//! ```text
//! tar xf chaperone-export-<lesson>.tar
//! recorder verify <lesson> --store chaperone-export-<lesson>/store --key <recorder key from the school>
//! age -d -i identity.txt chaperone-export-<lesson>/store/lessons/<lesson>/segments/0000000000.age
//! ```
//!
//! A time-range export carries only the segments overlapping the range
//! (and every manifest checkpoint, so the chain is still checkable); verify
//! it with `--only-segments FIRST-LAST`, which the bundle's README names.
//! Nothing is decrypted or re-encoded here: the bytes are the stored ones.

use futures_util::StreamExt as _;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _};

use chaperone_protocol::LessonId;

use chaperone_archive::keys::RecorderPublicKey;
use chaperone_archive::layout::{self, ObjectKind};
use chaperone_archive::verify::verify_lesson;

/// Why an export could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ExportError {
    /// The lesson has no recording.
    #[error("no recording")]
    NotFound,
    /// The object store failed.
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// Writing the tar failed.
    #[error("writing the bundle: {0}")]
    Io(#[from] std::io::Error),
}

/// A finished bundle.
#[derive(Debug)]
pub(crate) struct Bundle {
    /// The tar bytes.
    pub tar: Vec<u8>,
    /// The first and last segment included (all when `None`).
    pub segments: Option<(u64, u64)>,
}

/// Builds the bundle for `lesson`; with `range_micros` (unix microseconds),
/// only the segments overlapping it.
pub(crate) async fn bundle(
    store: &dyn ObjectStore,
    lesson: &LessonId,
    key: &RecorderPublicKey,
    range_micros: Option<(u64, u64)>,
) -> Result<Bundle, ExportError> {
    let manifest = crate::library::trusted_manifest(store, lesson, key)
        .await
        .map_err(|_| ExportError::NotFound)?;
    let segments = range_micros.map(|(from, to)| {
        let inside: Vec<u64> = manifest
            .entries
            .iter()
            .filter(|e| e.start < to && e.end >= from)
            .map(|e| e.index)
            .collect();
        match (inside.first(), inside.last()) {
            (Some(a), Some(b)) => (*a, *b),
            _ => (0, 0),
        }
    });
    let report = verify_lesson(store, lesson, key).await;
    let root = format!("chaperone-export-{lesson}");
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |path: &str, bytes: &[u8]| -> Result<(), std::io::Error> {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(manifest.created / 1_000_000);
        header.set_cksum();
        tar.append_data(&mut header, path, bytes)
    };
    let mut objects = Vec::new();
    let mut listing = store.list(Some(&layout::lesson_prefix(lesson)));
    while let Some(meta) = listing.next().await {
        objects.push(meta?.location);
    }
    objects.sort();
    for path in objects {
        let keep = match layout::classify(lesson, &path) {
            ObjectKind::Segment(i) => segments.is_none_or(|(a, b)| (a..=b).contains(&i)),
            // Set-aside objects go too: verify lists them, so the bundle must match.
            ObjectKind::Manifest(_)
            | ObjectKind::Signature(_)
            | ObjectKind::PublicKey
            | ObjectKind::Orphan => true,
            ObjectKind::Unknown => false,
        };
        if keep {
            let bytes = store.get(&path).await?.bytes().await?;
            add(
                &format!("{root}/store/{}", Path::from(path.as_ref())),
                &bytes,
            )?;
        }
    }
    let only = segments.map_or(String::new(), |(a, b)| format!(" --only-segments {a}-{b}"));
    let readme = format!(
        "Chaperone recording export\n\
         lesson {lesson}\n\
         segments {}\n\n\
         The files under store/ are the recording exactly as stored: segments\n\
         encrypted with age (X25519) and manifest checkpoints signed with the\n\
         recorder's Ed25519 key. To check them, with the recorder's public key\n\
         obtained from the school (not only the copy inside this bundle):\n\n\
         \x20 recorder verify {lesson} --store {root}/store --key recorder.pub{only}\n\n\
         To read a segment, with the identity the school provides:\n\n\
         \x20 age -d -i identity.txt {root}/store/lessons/{lesson}/segments/0000000000.age\n\n\
         The plaintext format is described in the Chaperone ARCHIVE.md.\n\
         REPORT.txt holds the verification made when the export was created.\n",
        segments.map_or("all".to_owned(), |(a, b)| format!("{a} to {b}")),
    );
    add(&format!("{root}/README.txt"), readme.as_bytes())?;
    add(&format!("{root}/REPORT.txt"), report.to_human().as_bytes())?;
    let json = serde_json::to_vec_pretty(&report).unwrap_or_default();
    add(&format!("{root}/report.json"), &json)?;
    let tar = tar.into_inner()?;
    Ok(Bundle { tar, segments })
}
