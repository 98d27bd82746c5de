//! What the DSL marks on a recording, kept beside it in the object store:
//! DSL-only ranges and legal holds. Append-only like everything else: each
//! mark is a new object written once (put-if-absent); a hold is lifted by a
//! later record, never by deleting the first.
//!
//! ```text
//! review/restrictions/<lesson>/<n:010>.json   a DSL-only range
//! review/holds/<lesson>/<n:010>.json          a hold placed or lifted
//! ```
//!
//! A recording holding a concern or an incident is on legal hold from the
//! start, without any record: the DSL lifts it explicitly, with a reason.

use futures_util::StreamExt as _;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use chaperone_protocol::LessonId;

/// A range of a recording only the DSL may see.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Restriction {
    /// When it was marked, unix microseconds.
    pub at: u64,
    /// Who marked it (`issuer#subject`).
    pub by: String,
    /// Start, ms from the lesson's start.
    pub from_ms: u64,
    /// Why.
    pub reason: String,
    /// End (exclusive), ms from the lesson's start.
    pub to_ms: u64,
}

/// A legal hold placed (`held`) or lifted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldRecord {
    /// When, unix microseconds.
    pub at: u64,
    /// Who (`issuer#subject`, or `incident` for the automatic hold).
    pub by: String,
    /// Placed (true) or lifted.
    pub held: bool,
    /// Why.
    pub reason: String,
}

/// Why a mark could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MarkError {
    /// The object store failed.
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// A stored mark does not parse.
    #[error("unreadable mark {0}")]
    Unreadable(String),
    /// Other writers kept taking the next number.
    #[error("could not append the mark")]
    Contended,
}

fn prefix(kind: &str, lesson: &LessonId) -> Path {
    Path::from(format!("review/{kind}/{lesson}"))
}

async fn read_all<T: for<'de> Deserialize<'de>>(
    store: &dyn ObjectStore,
    kind: &str,
    lesson: &LessonId,
) -> Result<Vec<(u64, T)>, MarkError> {
    let mut paths = Vec::new();
    let mut stream = store.list(Some(&prefix(kind, lesson)));
    while let Some(meta) = stream.next().await {
        let meta = meta?;
        if let Some(n) = meta
            .location
            .filename()
            .and_then(|f| f.strip_suffix(".json"))
            .and_then(|s| s.parse::<u64>().ok())
        {
            paths.push((n, meta.location));
        }
    }
    paths.sort();
    let mut out = Vec::new();
    for (n, path) in paths {
        let bytes = store.get(&path).await?.bytes().await?;
        let v =
            serde_json::from_slice(&bytes).map_err(|_| MarkError::Unreadable(path.to_string()))?;
        out.push((n, v));
    }
    Ok(out)
}

async fn append<T: Serialize>(
    store: &dyn ObjectStore,
    kind: &str,
    lesson: &LessonId,
    value: &T,
) -> Result<(), MarkError> {
    let bytes = serde_json::to_vec(value).map_err(|e| MarkError::Unreadable(e.to_string()))?;
    for _ in 0..8 {
        let next = read_all::<serde_json::Value>(store, kind, lesson)
            .await?
            .last()
            .map_or(0, |(n, _)| n + 1);
        let path = Path::from(format!("review/{kind}/{lesson}/{next:010}.json"));
        match store
            .put_opts(
                &path,
                PutPayload::from(bytes.clone()),
                PutOptions::from(PutMode::Create),
            )
            .await
        {
            Ok(_) => return Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(MarkError::Contended)
}

/// The DSL-only ranges of a lesson.
pub(crate) async fn restrictions(
    store: &dyn ObjectStore,
    lesson: &LessonId,
) -> Result<Vec<Restriction>, MarkError> {
    Ok(read_all(store, "restrictions", lesson)
        .await?
        .into_iter()
        .map(|(_, r)| r)
        .collect())
}

/// Marks a range DSL-only.
pub(crate) async fn restrict(
    store: &dyn ObjectStore,
    lesson: &LessonId,
    r: &Restriction,
) -> Result<(), MarkError> {
    append(store, "restrictions", lesson, r).await
}

/// The holds placed and lifted on a lesson, oldest first.
pub(crate) async fn holds(
    store: &dyn ObjectStore,
    lesson: &LessonId,
) -> Result<Vec<HoldRecord>, MarkError> {
    Ok(read_all(store, "holds", lesson)
        .await?
        .into_iter()
        .map(|(_, r)| r)
        .collect())
}

/// Places or lifts a hold.
pub async fn set_hold(
    store: &dyn ObjectStore,
    lesson: &LessonId,
    h: &HoldRecord,
) -> Result<(), MarkError> {
    append(store, "holds", lesson, h).await
}

/// Whether a lesson is on legal hold: the latest hold record decides; with
/// none, a recording holding a concern or incident is held.
pub(crate) fn is_held(records: &[HoldRecord], flagged: bool) -> bool {
    records.last().map_or(flagged, |h| h.held)
}

/// Removes every mark of a lesson (after its recording was deleted).
pub(crate) async fn forget(store: &dyn ObjectStore, lesson: &LessonId) -> Result<(), MarkError> {
    for kind in ["restrictions", "holds"] {
        let mut stream = store.list(Some(&prefix(kind, lesson)));
        let mut paths = Vec::new();
        while let Some(meta) = stream.next().await {
            paths.push(meta?.location);
        }
        for p in paths {
            store.delete(&p).await?;
        }
    }
    Ok(())
}
