//! Audit records for identity and access (issue: every login, refused
//! login, token issue, block and grant): who, when, what, about whom, why,
//! and the outcome. Appended to the state store's append-only log and
//! logged under the `audit` target. Never a token, never chat text.

use chaperone_protocol::{LessonId, UserRef};
use serde::{Deserialize, Serialize};

use crate::store::{StateStore, Store};

/// One audit record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditRecord {
    /// When, Unix milliseconds.
    pub at_ms: u64,
    /// What happened (`login`, `login_refused`, `logout`, `room_token`,
    /// `room_token_refused`, `lesson_created`, `block`, `unblock`,
    /// `visitor_grant`, `visitor_revoke`).
    pub action: String,
    /// Who did it (absent when nobody could be identified).
    pub actor: Option<UserRef>,
    /// Whom it concerned, if someone else.
    pub target: Option<UserRef>,
    /// Which lesson, if any.
    pub lesson: Option<LessonId>,
    /// The stated reason, or why it was refused.
    pub reason: Option<String>,
    /// `ok` or the refusal's code.
    pub outcome: String,
}

impl AuditRecord {
    /// A record of `action` by `actor` at `at_ms`, outcome `ok`.
    pub(crate) fn new(at_ms: u64, action: &str, actor: Option<UserRef>) -> Self {
        Self {
            at_ms,
            action: action.to_owned(),
            actor,
            target: None,
            lesson: None,
            reason: None,
            outcome: "ok".to_owned(),
        }
    }

    /// About `target`.
    pub(crate) fn target(mut self, target: UserRef) -> Self {
        self.target = Some(target);
        self
    }

    /// About `lesson`.
    pub(crate) fn lesson(mut self, lesson: LessonId) -> Self {
        self.lesson = Some(lesson);
        self
    }

    /// With a reason.
    pub(crate) fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Refused, with a code.
    pub(crate) fn refused(mut self, code: &str) -> Self {
        self.outcome = code.to_owned();
        self
    }
}

/// Writes `record`. A store failure is logged as an error (the record is
/// still in the log output) and reported to the caller.
pub(crate) async fn write(store: &Store, record: AuditRecord) -> bool {
    let json = match serde_json::to_string(&record) {
        Ok(j) => j,
        Err(e) => {
            tracing::error!(error = %e, "audit record not serialisable");
            return false;
        }
    };
    tracing::info!(target: "audit", action = %record.action, outcome = %record.outcome,
        actor = ?record.actor.as_ref().map(ToString::to_string),
        target_user = ?record.target.as_ref().map(ToString::to_string),
        lesson = ?record.lesson.map(|l| l.to_string()), "audit");
    match store.append_audit(json).await {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, action = %record.action, "audit record not stored");
            false
        }
    }
}
