//! The school's lessons as staff create them (the state store's `lessons`
//! table), and who may see which (docs/security.md §14). Pure: the web handlers
//! and the join check load records and grants and ask.

use chaperone_protocol::{LessonId, UserRef};
use serde::{Deserialize, Serialize};

use crate::auth::identity::{Identity, SchoolRole};
use crate::store::{StateStore as _, Store, StoreError, VisitorGrant};
use chaperone_lesson::LessonSetup;

/// The state-store table of lesson descriptions.
pub(crate) const TABLE: &str = "lessons";

/// Longest title, in characters.
pub(crate) const MAX_TITLE_CHARS: usize = 120;
/// Longest class name, in characters.
pub(crate) const MAX_CLASS_CHARS: usize = 40;
/// Most teachers or assistants on one lesson.
pub(crate) const MAX_STAFF: usize = 10;
/// Longest lesson.
pub(crate) const MAX_DURATION_MS: u64 = 8 * 3600 * 1000;

/// A lesson as created through the API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LessonInfo {
    /// Unguessable id.
    pub id: LessonId,
    /// Title.
    pub title: String,
    /// The class whose pupils may join.
    pub class: String,
    /// Teachers (the creator first).
    pub teachers: Vec<UserRef>,
    /// Assistants.
    pub assistants: Vec<UserRef>,
    /// Start, Unix milliseconds.
    pub starts_at_ms: u64,
    /// End, Unix milliseconds.
    pub ends_at_ms: u64,
    /// Who created it.
    pub created_by: UserRef,
    /// Staff kept it open until this moment (Unix ms), past its end and
    /// grace; absent unless extended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extended_until_ms: Option<u64>,
}

/// When lessons open for joining and close again: `lesson.open_before_mins`
/// before their start, `lesson.close_grace_mins` after their end (or later,
/// if staff extended it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WindowSettings {
    /// How long before its start a lesson opens, ms.
    pub open_before_ms: u64,
    /// How long after its end a lesson stays open, ms.
    pub close_grace_ms: u64,
}

impl Default for WindowSettings {
    fn default() -> Self {
        Self {
            open_before_ms: 15 * 60 * 1000,
            close_grace_ms: 10 * 60 * 1000,
        }
    }
}

/// Longest one extension of a lesson's window.
pub(crate) const MAX_EXTEND_MINS: u64 = 120;

/// Where a moment falls in a lesson's window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InWindow {
    /// Not open yet: it opens at this moment (Unix ms).
    Before(u64),
    /// Open for joining.
    Open,
    /// Closed at this moment (Unix ms).
    After(u64),
}

impl WindowSettings {
    /// When `info` opens for joining (Unix ms).
    pub(crate) fn opens_at(&self, info: &LessonInfo) -> u64 {
        info.starts_at_ms.saturating_sub(self.open_before_ms)
    }

    /// When `info` closes unless ended sooner (Unix ms): its end plus the
    /// grace, or the end of staff's extension if that is later.
    pub(crate) fn closes_at(&self, info: &LessonInfo) -> u64 {
        let closes = info.ends_at_ms.saturating_add(self.close_grace_ms);
        info.extended_until_ms.map_or(closes, |e| closes.max(e))
    }

    /// Where `now_ms` falls in `info`'s window.
    pub(crate) fn at(&self, info: &LessonInfo, now_ms: u64) -> InWindow {
        let (opens, closes) = (self.opens_at(info), self.closes_at(info));
        if now_ms < opens {
            InWindow::Before(opens)
        } else if now_ms >= closes {
            InWindow::After(closes)
        } else {
            InWindow::Open
        }
    }

    /// `info` kept open `minutes` longer: from when it closes now, or from
    /// `now_ms` if it has already closed.
    pub(crate) fn extended(&self, info: &LessonInfo, minutes: u64, now_ms: u64) -> u64 {
        self.closes_at(info)
            .max(now_ms)
            .saturating_add(minutes.saturating_mul(60_000))
    }
}

/// Where the lesson tasks learn when their lesson closes: the lessons'
/// descriptions in the state store, and this node's window settings.
#[derive(Clone, Debug)]
pub(crate) struct Windows {
    store: Store,
    settings: WindowSettings,
}

impl Windows {
    /// Lessons described in `store`, closing as `settings` say.
    pub(crate) fn new(store: Store, settings: WindowSettings) -> Self {
        Self { store, settings }
    }

    /// When `lesson` closes (Unix ms), as its description says now (with
    /// any extension); `None` if it has no readable description.
    pub(crate) async fn closes_at(&self, lesson: LessonId) -> Result<Option<u64>, StoreError> {
        let Some(json) = self.store.get_record(TABLE, &lesson.to_string()).await? else {
            return Ok(None);
        };
        match serde_json::from_str::<LessonInfo>(&json) {
            Ok(info) => Ok(Some(self.settings.closes_at(&info))),
            Err(e) => {
                tracing::error!(%lesson, error = %e, "unreadable lesson record: its close is not enforced");
                Ok(None)
            }
        }
    }
}

/// Why a lesson description was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum LessonInputError {
    /// Title empty or too long.
    #[error("title must be 1 to {MAX_TITLE_CHARS} characters")]
    Title,
    /// Class empty, too long or with control characters.
    #[error("class must be 1 to {MAX_CLASS_CHARS} printable characters")]
    Class,
    /// End not after start, or the lesson is too long.
    #[error("the lesson must end after it starts and last at most 8 hours")]
    Times,
    /// Too many teachers or assistants.
    #[error("at most {MAX_STAFF} teachers and {MAX_STAFF} assistants")]
    TooManyStaff,
    /// Title or class holds a bidirectional override or control character.
    #[error("the {0} {1}")]
    DisplayText(&'static str, chaperone_protocol::text::DisplayTextError),
}

impl LessonInfo {
    /// Checks a description's fields.
    pub(crate) fn validate(&self) -> Result<(), LessonInputError> {
        use chaperone_protocol::text::check_display_text;
        let title = self.title.trim();
        check_display_text(title).map_err(|e| LessonInputError::DisplayText("title", e))?;
        if title.is_empty() || title.chars().count() > MAX_TITLE_CHARS {
            return Err(LessonInputError::Title);
        }
        let class = self.class.trim();
        check_display_text(class).map_err(|e| LessonInputError::DisplayText("class", e))?;
        if class.is_empty() || class.chars().count() > MAX_CLASS_CHARS {
            return Err(LessonInputError::Class);
        }
        if self.ends_at_ms <= self.starts_at_ms
            || self.ends_at_ms - self.starts_at_ms > MAX_DURATION_MS
        {
            return Err(LessonInputError::Times);
        }
        if self.teachers.len() > MAX_STAFF || self.assistants.len() > MAX_STAFF {
            return Err(LessonInputError::TooManyStaff);
        }
        Ok(())
    }

    /// The lesson core's setup for this lesson.
    pub(crate) fn setup(&self) -> LessonSetup {
        LessonSetup {
            id: self.id,
            class: self.class.clone(),
            teachers: self.teachers.clone(),
            assistants: self.assistants.clone(),
            extra_pupils: Vec::new(),
        }
    }

    /// Whether `who` may see (list, open, ask a token for) this lesson at
    /// `now_ms`, given their visitor grants. Anything else answers exactly
    /// as a lesson that does not exist.
    pub(crate) fn visible_to(&self, who: &Identity, grants: &[VisitorGrant], now_ms: u64) -> bool {
        let user = &who.user;
        (who.is_staff() && (self.teachers.contains(user) || self.assistants.contains(user)))
            || who.is_safeguarding_observer()
            || (who.has(SchoolRole::Pupil) && who.classes.contains(&self.class))
            || (who.has(SchoolRole::Visitor)
                && grants.iter().any(|g| {
                    g.visitor == *user && g.covers(self.id, crate::store::UnixMillis(now_ms))
                }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeSet;

    use super::*;
    use crate::store::UnixMillis;

    fn who(sub: &str, roles: &[SchoolRole], classes: &[&str]) -> Identity {
        Identity {
            user: UserRef::new("https://idp", sub).unwrap(),
            name: sub.to_owned(),
            roles: roles.iter().copied().collect(),
            classes: classes
                .iter()
                .map(|c| (*c).to_owned())
                .collect::<BTreeSet<_>>(),
            mfa: true,
            auth_time: 0,
        }
    }

    fn lesson() -> LessonInfo {
        let teacher = UserRef::new("https://idp", "t").unwrap();
        LessonInfo {
            id: LessonId::from_bytes([7; 16]),
            title: "Fractions".to_owned(),
            class: "7A".to_owned(),
            teachers: vec![teacher.clone()],
            assistants: Vec::new(),
            starts_at_ms: 1000,
            ends_at_ms: 2000,
            created_by: teacher,
            extended_until_ms: None,
        }
    }

    #[test]
    fn the_window_opens_before_the_start_and_closes_after_the_grace() {
        let w = WindowSettings {
            open_before_ms: 100,
            close_grace_ms: 50,
        };
        let mut l = lesson();
        assert_eq!(w.at(&l, 899), InWindow::Before(900));
        assert_eq!(w.at(&l, 900), InWindow::Open);
        assert_eq!(w.at(&l, 2049), InWindow::Open);
        assert_eq!(w.at(&l, 2050), InWindow::After(2050));
        // Extended after it closed: open again from now, for the extension.
        l.extended_until_ms = Some(w.extended(&l, 1, 3000));
        assert_eq!(l.extended_until_ms, Some(63_000));
        assert_eq!(w.at(&l, 3000), InWindow::Open);
        assert_eq!(w.at(&l, 63_000), InWindow::After(63_000));
        // Extended before it closed: from its close.
        let l = lesson();
        assert_eq!(w.extended(&l, 2, 1500), 2050 + 120_000);
        // An old extension earlier than the grace never shortens it.
        let mut l = lesson();
        l.extended_until_ms = Some(1);
        assert_eq!(w.closes_at(&l), 2050);
        // Records written before extensions existed still parse.
        let json = serde_json::to_string(&lesson()).unwrap();
        assert!(!json.contains("extended_until_ms"), "{json}");
        let back: LessonInfo = serde_json::from_str(&json).unwrap();
        assert_eq!(back, lesson());
    }

    #[test]
    fn who_sees_a_lesson() {
        let l = lesson();
        assert!(l.visible_to(&who("t", &[SchoolRole::Teacher], &[]), &[], 0));
        assert!(!l.visible_to(&who("t2", &[SchoolRole::Teacher], &[]), &[], 0));
        assert!(l.visible_to(&who("p", &[SchoolRole::Pupil], &["7A"]), &[], 0));
        assert!(!l.visible_to(&who("p", &[SchoolRole::Pupil], &["7B"]), &[], 0));
        assert!(l.visible_to(&who("s", &[SchoolRole::Slt], &[]), &[], 0));
        assert!(l.visible_to(&who("d", &[SchoolRole::Dsl], &[]), &[], 0));
        assert!(!l.visible_to(&who("a", &[SchoolRole::Admin], &[]), &[], 0));
        // A teacher named on the lesson but without a staff role: no.
        assert!(!l.visible_to(&who("t", &[SchoolRole::Pupil], &[]), &[], 0));
    }

    #[test]
    fn visitors_see_granted_lessons_inside_the_window() {
        let l = lesson();
        let v = who("v", &[SchoolRole::Visitor], &[]);
        let grant = VisitorGrant {
            id: "g".to_owned(),
            visitor: v.user.clone(),
            lessons: vec![l.id],
            not_before: UnixMillis(100),
            not_after: UnixMillis(200),
            granted_by: UserRef::new("https://idp", "s").unwrap(),
            reason: "inspection".to_owned(),
        };
        assert!(!l.visible_to(&v, &[], 150));
        assert!(l.visible_to(&v, std::slice::from_ref(&grant), 150));
        assert!(!l.visible_to(&v, std::slice::from_ref(&grant), 99));
        assert!(!l.visible_to(&v, &[grant], 200));
    }

    #[test]
    fn descriptions_are_validated() {
        assert_eq!(lesson().validate(), Ok(()));
        let mut l = lesson();
        l.title = " ".to_owned();
        assert_eq!(l.validate(), Err(LessonInputError::Title));
        let mut l = lesson();
        l.class = "7\nA".to_owned();
        assert_eq!(
            l.validate(),
            Err(LessonInputError::DisplayText(
                "class",
                chaperone_protocol::text::DisplayTextError::Control(10)
            ))
        );
        let mut l = lesson();
        l.class = "7A\u{202E}".to_owned();
        assert_eq!(
            l.validate(),
            Err(LessonInputError::DisplayText(
                "class",
                chaperone_protocol::text::DisplayTextError::Bidi(0x202E)
            ))
        );
        let mut l = lesson();
        l.title = "Maths\u{2067}".to_owned();
        assert!(matches!(
            l.validate(),
            Err(LessonInputError::DisplayText("title", _))
        ));
        let mut l = lesson();
        l.ends_at_ms = l.starts_at_ms;
        assert_eq!(l.validate(), Err(LessonInputError::Times));
        let mut l = lesson();
        l.ends_at_ms = l.starts_at_ms + MAX_DURATION_MS + 1;
        assert_eq!(l.validate(), Err(LessonInputError::Times));
    }
}
