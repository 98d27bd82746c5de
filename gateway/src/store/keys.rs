//! Every Redis key and channel name, in one place. All live under a
//! configurable prefix so deployments and test runs never collide, and so
//! nothing here ever needs `FLUSHDB`.

use chaperone_protocol::{LessonId, UserRef};

/// `{prefix}:lesson:{id}` — hash with fields `v` (version) and `data` (snapshot bytes).
pub(super) fn lesson(prefix: &str, id: LessonId) -> String {
    format!("{prefix}:lesson:{id}")
}

/// `{prefix}:blocks` — hash from user key to JSON `Block`.
pub(super) fn blocks(prefix: &str) -> String {
    format!("{prefix}:blocks")
}

/// `{prefix}:grant:{id}` — JSON `VisitorGrant`.
pub(super) fn grant(prefix: &str, id: &str) -> String {
    format!("{prefix}:grant:{id}")
}

/// `{prefix}:grants:{user}` — set of a visitor's grant ids.
pub(super) fn grants_of(prefix: &str, user: &UserRef) -> String {
    format!("{prefix}:grants:{}", user_key(user))
}

/// `{prefix}:session:{id}` — JSON `SessionRecord`, expiring.
pub(super) fn session(prefix: &str, id: &str) -> String {
    format!("{prefix}:session:{id}")
}

/// `{prefix}:sessions:{user}` — set of a person's session ids.
pub(super) fn sessions_of(prefix: &str, user: &UserRef) -> String {
    format!("{prefix}:sessions:{}", user_key(user))
}

/// `{prefix}:once:{namespace}:{id}` — a single-use claim, expiring.
pub(super) fn once(prefix: &str, namespace: &str, id: &str) -> String {
    format!("{prefix}:once:{namespace}:{id}")
}

/// `{prefix}:records:{table}` — hash from record id to JSON.
pub(super) fn records(prefix: &str, table: &str) -> String {
    format!("{prefix}:records:{table}")
}

/// `{prefix}:temp:{namespace}:{id}` — a short-lived value, taken once.
pub(super) fn temp(prefix: &str, namespace: &str, id: &str) -> String {
    format!("{prefix}:temp:{namespace}:{id}")
}

/// `{prefix}:audit` — list of JSON audit records, append-only.
pub(super) fn audit(prefix: &str) -> String {
    format!("{prefix}:audit")
}

/// `{prefix}:events` — the pub/sub channel of cluster events.
pub(super) fn events(prefix: &str) -> String {
    format!("{prefix}:events")
}

/// A user as one key component: JSON, so no issuer or subject can forge a
/// separator.
pub(super) fn user_key(user: &UserRef) -> String {
    serde_json::to_string(user).unwrap_or_default()
}

/// `{prefix}:lease:{id}` — `"{epoch}:{node}"`, expiring: the lesson's owner.
pub(super) fn lease(prefix: &str, id: LessonId) -> String {
    format!("{prefix}:lease:{id}")
}

/// `{prefix}:epoch:{id}` — the lesson's latest lease epoch (a counter that
/// never expires, so an epoch is never granted twice).
pub(super) fn epoch(prefix: &str, id: LessonId) -> String {
    format!("{prefix}:epoch:{id}")
}

/// `{prefix}:released:{id}` — the lesson's last epoch its holder gave back
/// (rather than let lapse): the next owner continues without a gap.
pub(super) fn released(prefix: &str, id: LessonId) -> String {
    format!("{prefix}:released:{id}")
}

/// `{prefix}:node:{id}` — JSON `NodeInfo`, expiring.
pub(super) fn node(prefix: &str, id: &str) -> String {
    format!("{prefix}:node:{id}")
}

/// `{prefix}:nodes` — set of node ids that announced themselves.
pub(super) fn nodes(prefix: &str) -> String {
    format!("{prefix}:nodes")
}
