//! Audit records for identity and access (issue: every login, refused
//! login, token issue, block and grant): who, when, what, about whom, why,
//! and the outcome. Appended to the state store's append-only log and
//! logged under the `audit` target. Never a token, never chat text.
//!
//! What a request nobody can be named for causes (an anonymous
//! `/auth/callback`, a review token asked for without a session) is not
//! written one record at a time: `AnonymousTally` counts it per source,
//! action and outcome, and writes one summary record per source and window
//! (issue 17), so nobody can drown the attributed records by knocking.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    /// `room_token_refused`, `lesson_created`, `lesson_extended`, `block`,
    /// `unblock`, `visitor_grant`, `visitor_grant_claimed`, `visitor_revoke`).
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

/// Distinct sources kept apart per window; the rest are summed as `other`.
const MAX_SOURCES: usize = 64;

/// Counts refused anonymous requests: per (source, action, outcome) and
/// window, the first is written as it is and the rest as one summary record
/// at the window's end. Bounded: at most two records per key and
/// `MAX_SOURCES + 1` sources per window, whatever arrives.
#[derive(Debug)]
pub(crate) struct AnonymousTally {
    counts: Mutex<BTreeMap<(String, String, String), u64>>,
    metric: Option<prometheus::IntCounterVec>,
}

impl AnonymousTally {
    /// A tally writing its summaries to `store` every `window`, for as long
    /// as the tally lives.
    pub(crate) fn start(
        store: Store,
        window: Duration,
        metric: Option<prometheus::IntCounterVec>,
    ) -> Arc<Self> {
        let tally = Arc::new(Self {
            counts: Mutex::default(),
            metric,
        });
        let weak = Arc::downgrade(&tally);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(window);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(tally) = weak.upgrade() else { break };
                let drained = std::mem::take(&mut *tally.lock());
                drop(tally);
                for ((source, action, outcome), n) in drained {
                    if n == 0 {
                        continue;
                    }
                    let mut record = AuditRecord::new(crate::clock::unix_millis(), &action, None)
                        .reason(format!(
                            "summary: {n} more refused anonymous requests from {source} in {} s",
                            window.as_secs()
                        ));
                    record.outcome = outcome;
                    write(&store, record).await;
                }
            }
        });
        tally
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String, String), u64>> {
        // The map only holds counts; a panic elsewhere leaves it usable.
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts one refused anonymous `record` from `source`; true when it is
    /// the first of its source, action and outcome in this window (then the
    /// caller writes it as it is, and the rest of the window is summed).
    pub(crate) fn count(&self, source: Option<IpAddr>, record: &AuditRecord) -> bool {
        if let Some(m) = &self.metric {
            m.with_label_values(&[record.action.as_str()]).inc();
        }
        tracing::debug!(target: "audit", action = %record.action, outcome = %record.outcome, source = ?source, "anonymous refusal counted");
        let mut source = source.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
        let mut counts = self.lock();
        let known = counts.keys().any(|(s, _, _)| *s == source);
        if !known {
            let sources = counts
                .keys()
                .map(|(s, _, _)| s.as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .len();
            if sources >= MAX_SOURCES {
                source = "other".to_owned();
            }
        }
        let key = (source, record.action.clone(), record.outcome.clone());
        match counts.get_mut(&key) {
            Some(n) => {
                *n += 1;
                false
            }
            None => {
                counts.insert(key, 0);
                true
            }
        }
    }
}

/// Writes `record` when it names someone; counts it in `tally` otherwise.
pub(crate) async fn write_or_count(
    store: &Store,
    tally: &AnonymousTally,
    source: Option<IpAddr>,
    record: AuditRecord,
) {
    if record.actor.is_some() || record.target.is_some() || tally.count(source, &record) {
        write(store, record).await;
    }
}
