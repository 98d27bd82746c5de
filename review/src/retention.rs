//! The retention sweep: recordings older than their class's retention
//! period are deleted, unless on legal hold (docs/security.md §23). Every deletion,
//! and every expired recording kept because of a hold, is an audit record.
//!
//! Classes: `standard` (no concern or incident in the recording) and
//! `flagged` (at least one), each with its own period. A flagged recording
//! is held from the start until the DSL lifts the hold with a reason
//! ([`crate::marks`]). The sweep takes `now`; it reads no clock.

use futures_util::StreamExt as _;
use object_store::{ObjectStore, ObjectStoreExt as _};

use chaperone_protocol::LessonId;

use crate::audit::{AuditEntry, AuditError, AuditLog};
use crate::library::{self, LibraryError};
use crate::marks::{self, MarkError};
use chaperone_archive::keys::RecorderPublicKey;

/// Retention periods per recording class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Days a recording without concerns or incidents is kept.
    pub standard_days: u64,
    /// Days a recording with a concern or incident is kept (once its hold
    /// is lifted).
    pub flagged_days: u64,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self {
            standard_days: 30,
            flagged_days: 365,
        }
    }
}

/// What the sweep did with one expired recording.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SweepOutcome {
    /// The lesson.
    pub lesson: LessonId,
    /// `standard` or `flagged`.
    pub class: &'static str,
    /// `deleted` or `held`.
    pub action: &'static str,
    /// Objects deleted.
    pub deleted_objects: u64,
}

/// Why a sweep stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RetentionError {
    /// The object store failed.
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// Reading a recording failed.
    #[error(transparent)]
    Library(#[from] LibraryError),
    /// Reading holds failed.
    #[error(transparent)]
    Marks(#[from] MarkError),
    /// The audit record could not be written; nothing was deleted.
    #[error(transparent)]
    Audit(#[from] AuditError),
}

const DAY_MICROS: u64 = 86_400 * 1_000_000;

/// Sweeps every recording in `store` at `now_micros`. Recordings whose
/// manifest cannot be trusted are left alone (and logged): the sweep never
/// deletes what it cannot account for.
pub(crate) async fn sweep(
    store: &dyn ObjectStore,
    key: &RecorderPublicKey,
    identity: &age::x25519::Identity,
    audit: &AuditLog,
    policy: RetentionPolicy,
    now_micros: u64,
) -> Result<Vec<SweepOutcome>, RetentionError> {
    let mut out = Vec::new();
    for lesson in library::list_lessons(store).await? {
        let manifest = match library::trusted_manifest(store, &lesson, key).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(%lesson, error = %e, "retention: recording without a trusted manifest left alone");
                continue;
            }
        };
        let end = manifest.entries.last().map_or(manifest.created, |e| e.end);
        let age = now_micros.saturating_sub(end);
        if age < policy.standard_days.min(policy.flagged_days) * DAY_MICROS {
            continue;
        }
        let rec = library::open(store, &lesson, key, identity).await?;
        let summary = rec.summary();
        let flagged = summary.concerns + summary.incidents > 0;
        let (class, days) = if flagged {
            ("flagged", policy.flagged_days)
        } else {
            ("standard", policy.standard_days)
        };
        if age < days * DAY_MICROS {
            continue;
        }
        let holds = marks::holds(store, &lesson).await?;
        let base = AuditEntry {
            actor: Some("retention".to_owned()),
            role: Some("service".to_owned()),
            at: now_micros,
            lesson: Some(lesson.to_string()),
            outcome: "ok".to_owned(),
            ..AuditEntry::default()
        };
        if marks::is_held(&holds, flagged) {
            let why = holds
                .last()
                .map_or("concern or incident in the recording".to_owned(), |h| {
                    h.reason.clone()
                });
            audit
                .append(AuditEntry {
                    action: "retain".to_owned(),
                    reason: Some(format!(
                        "{class} retention of {days} days expired; kept: legal hold ({why})"
                    )),
                    ..base
                })
                .await?;
            out.push(SweepOutcome {
                lesson,
                class,
                action: "held",
                deleted_objects: 0,
            });
            continue;
        }
        // Audit first: a deletion that cannot be recorded does not happen.
        audit
            .append(AuditEntry {
                action: "delete".to_owned(),
                reason: Some(format!("{class} retention of {days} days expired")),
                ..base
            })
            .await?;
        let mut paths = Vec::new();
        let mut listing = store.list(Some(&chaperone_archive::layout::lesson_prefix(&lesson)));
        while let Some(meta) = listing.next().await {
            paths.push(meta?.location);
        }
        for p in &paths {
            store.delete(p).await?;
        }
        marks::forget(store, &lesson).await?;
        out.push(SweepOutcome {
            lesson,
            class,
            action: "deleted",
            deleted_objects: paths.len() as u64,
        });
    }
    Ok(out)
}
