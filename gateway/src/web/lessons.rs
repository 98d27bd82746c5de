//! What the lessons API adds to a lesson's description for the pages: its
//! state in its life cycle (upcoming, live, ended) with the window it is
//! open in, and the checks on a new lesson that need more than its own
//! fields: the class must be one the school has (from the identity
//! provider's claims of people who signed in, and `lesson.classes`), and it
//! cannot start in the past.
//!
//! The state shown here is worked out from the lesson's times (its window:
//! `lesson.open_before_mins` before its start to `lesson.close_grace_mins`
//! after its end, or as long as its staff extended it, here) and its
//! register (which knows when it ended). The same window decides whether a
//! room token is issued (`api.rs`) and whether a join is let through
//! (`auth/join.rs`).

use std::collections::{BTreeSet, HashMap};

use chaperone_protocol::LessonId;
use serde::Serialize;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::Deserialize;

use super::WebState;
use super::api::{ApiError, PEOPLE, changing, visible_lesson};
use super::audit::{self, AuditRecord};
use super::register;
use crate::catalog::{InWindow, LessonInfo, MAX_EXTEND_MINS, TABLE, WindowSettings};
use crate::clock::unix_millis;
use crate::store::{StateStore, StoreEvent};

/// How far in the past a new lesson may start (a lesson created "now" takes
/// a moment to fill in).
pub(crate) const START_SLACK_MS: u64 = 5 * 60 * 1000;

/// Where a lesson is in its life cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LessonState {
    /// Not open yet.
    Upcoming,
    /// Open: people may join.
    Live,
    /// Ended by staff, or past its window.
    Ended,
}

/// A lesson as the API lists it: its description, and where it stands.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct LessonView {
    /// The description as staff created it.
    #[serde(flatten)]
    pub info: LessonInfo,
    /// Upcoming, live or ended.
    pub state: LessonState,
    /// When it opens, Unix ms.
    pub opens_at_ms: u64,
    /// When it closes unless ended sooner, Unix ms.
    pub closes_at_ms: u64,
    /// When staff ended it, if they did.
    pub ended_at_ms: Option<u64>,
}

impl LessonView {
    /// `info` at `now_ms` in `window`, given when it ended (if it did).
    pub(crate) fn new(
        info: LessonInfo,
        ended_at_ms: Option<u64>,
        now_ms: u64,
        window: &WindowSettings,
    ) -> Self {
        let opens_at_ms = window.opens_at(&info);
        let closes_at_ms = window.closes_at(&info);
        let state = match window.at(&info, now_ms) {
            _ if ended_at_ms.is_some() => LessonState::Ended,
            InWindow::After(_) => LessonState::Ended,
            InWindow::Before(_) => LessonState::Upcoming,
            InWindow::Open => LessonState::Live,
        };
        Self {
            info,
            state,
            opens_at_ms,
            closes_at_ms,
            ended_at_ms,
        }
    }
}

/// When each lesson with a register ended, from the registers.
pub(crate) async fn ended_times(state: &WebState) -> Result<HashMap<LessonId, u64>, ApiError> {
    let mut out = HashMap::new();
    for (id, json) in state.store.list_records(register::TABLE).await? {
        let (Ok(lesson), Ok(r)) = (
            id.parse::<LessonId>(),
            serde_json::from_str::<register::Register>(&json),
        ) else {
            tracing::error!(%id, "unreadable register skipped");
            continue;
        };
        if let Some(at) = r.ended_ms {
            out.insert(lesson, at);
        }
    }
    Ok(out)
}

/// The view of one lesson now.
pub(crate) async fn view(
    state: &WebState,
    info: LessonInfo,
    now_ms: u64,
) -> Result<LessonView, ApiError> {
    let ended = register::load(&state.store, info.id)
        .await?
        .and_then(|r| r.ended_ms);
    Ok(LessonView::new(info, ended, now_ms, &state.config.window))
}

/// The classes lessons may be created for: `lesson.classes` and every
/// class a person who signed in holds, sorted.
pub(crate) async fn known_classes(state: &WebState) -> Result<Vec<String>, ApiError> {
    let mut out: BTreeSet<String> = state.config.classes.iter().cloned().collect();
    for (_, json) in state.store.list_records(PEOPLE).await? {
        let Ok(p) = serde_json::from_str::<serde_json::Value>(&json) else {
            continue;
        };
        for c in p["classes"].as_array().into_iter().flatten() {
            if let Some(c) = c.as_str() {
                out.insert(c.to_owned());
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// Checks a new lesson's class and start against the school and the clock.
pub(crate) fn check_new(
    class: &str,
    starts_at_ms: u64,
    classes: &[String],
    now_ms: u64,
) -> Result<(), ApiError> {
    if !classes.iter().any(|c| c == class) {
        let hint = classes
            .iter()
            .find(|c| c.eq_ignore_ascii_case(class))
            .map(|c| format!(" Did you mean {c}?"))
            .unwrap_or_default();
        return Err(ApiError::Invalid(if classes.is_empty() {
            format!(
                "The school has no class called “{class}”: no classes are known yet (they come from pupils' sign-ins and the lesson.classes setting)."
            )
        } else {
            format!(
                "The school has no class called “{class}”.{hint} Known classes: {}.",
                classes.join(", ")
            )
        }));
    }
    if starts_at_ms.saturating_add(START_SLACK_MS) < now_ms {
        return Err(ApiError::Invalid(
            "A lesson cannot start in the past: choose a start time from now on.".to_owned(),
        ));
    }
    Ok(())
}

/// "10:45" of a Unix-ms moment, UTC.
pub(crate) fn hh_mm_utc(ms: u64) -> String {
    let mins = ms / 60_000 % (24 * 60);
    format!("{:02}:{:02}", mins / 60, mins % 60)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Extend {
    /// Minutes to keep the lesson open longer.
    minutes: u64,
}

/// Keeps a lesson open longer (its staff): from when it closes now, or
/// from now if it has closed. The node running it is told, so the server
/// ends it at the new close, not the old one. Audited, as is a refusal.
pub(crate) async fn extend_lesson(
    State(state): State<WebState>,
    headers: HeaderMap,
    Path(lesson): Path<String>,
    Json(req): Json<Extend>,
) -> Result<Json<LessonView>, ApiError> {
    let (key, who) = changing(&state, &headers).await?;
    let info = visible_lesson(&state, &key, &who, &lesson).await?;
    let own = info.teachers.contains(&who.user) || info.assistants.contains(&who.user);
    if !(who.is_staff() && own) {
        audit::write(
            &state.store,
            AuditRecord::new(unix_millis(), "lesson_extended", Some(who.user.clone()))
                .lesson(info.id)
                .refused("forbidden"),
        )
        .await;
        return Err(ApiError::Forbidden);
    }
    if req.minutes == 0 || req.minutes > MAX_EXTEND_MINS {
        return Err(ApiError::Invalid(format!(
            "extend by 1 to {MAX_EXTEND_MINS} minutes"
        )));
    }
    let now = unix_millis();
    if view(&state, info.clone(), now).await?.ended_at_ms.is_some() {
        return Err(ApiError::Invalid(
            "This lesson has ended (by its staff, or because its time ran out); it cannot be reopened."
                .to_owned(),
        ));
    }
    let window = &state.config.window;
    let mut extended = info;
    let until = window.extended(&extended, req.minutes, now);
    extended.extended_until_ms = Some(until);
    let json = serde_json::to_string(&extended).map_err(|_| ApiError::Unavailable)?;
    state
        .store
        .put_record(TABLE, &extended.id.to_string(), json)
        .await?;
    // The node running the lesson reads its close again, so the server
    // does not end it at the old one.
    state
        .store
        .publish(StoreEvent::Lesson {
            lesson: extended.id,
            payload: crate::room::WINDOW_CHANGED.to_owned(),
        })
        .await?;
    audit::write(
        &state.store,
        AuditRecord::new(now, "lesson_extended", Some(who.user.clone()))
            .lesson(extended.id)
            .reason(format!(
                "{} minutes; closes at {} UTC",
                req.minutes,
                hh_mm_utc(until)
            )),
    )
    .await;
    Ok(Json(view(&state, extended, now).await?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chaperone_protocol::UserRef;

    fn info(start: u64, end: u64) -> LessonInfo {
        let t = UserRef::new("https://idp", "t").unwrap();
        LessonInfo {
            id: LessonId::from_bytes([2; 16]),
            title: "Fractions".to_owned(),
            class: "7A".to_owned(),
            teachers: vec![t.clone()],
            assistants: Vec::new(),
            starts_at_ms: start,
            ends_at_ms: end,
            created_by: t,
            extended_until_ms: None,
        }
    }

    const OPENS_BEFORE_MS: u64 = 15 * 60 * 1000;
    const CLOSES_AFTER_MS: u64 = 10 * 60 * 1000;

    #[test]
    fn state_follows_the_window_and_the_end() {
        let w = WindowSettings::default();
        let h = 3_600_000;
        let l = || info(10 * h, 11 * h);
        assert_eq!(
            LessonView::new(l(), None, 9 * h, &w).state,
            LessonState::Upcoming
        );
        assert_eq!(
            LessonView::new(l(), None, 10 * h - OPENS_BEFORE_MS, &w).state,
            LessonState::Live
        );
        assert_eq!(
            LessonView::new(l(), None, 11 * h, &w).state,
            LessonState::Live
        );
        assert_eq!(
            LessonView::new(l(), None, 11 * h + CLOSES_AFTER_MS, &w).state,
            LessonState::Ended
        );
        assert_eq!(
            LessonView::new(l(), Some(10 * h), 10 * h + 1, &w).state,
            LessonState::Ended
        );
        let json = serde_json::to_value(LessonView::new(l(), None, 10 * h, &w)).unwrap();
        assert_eq!(json["state"], "live");
        assert_eq!(json["title"], "Fractions");
        assert_eq!(json["opens_at_ms"], 10 * h - OPENS_BEFORE_MS);
    }

    #[test]
    fn unknown_classes_and_past_starts_are_refused_plainly() {
        let classes = vec!["7A".to_owned(), "7B".to_owned()];
        let now = 100 * 3_600_000;
        assert_eq!(check_new("7A", now, &classes, now), Ok(()));
        let ApiError::Invalid(m) = check_new("7a", now, &classes, now).unwrap_err() else {
            panic!()
        };
        assert!(
            m.contains("Did you mean 7A?") && m.contains("7A, 7B"),
            "{m}"
        );
        let ApiError::Invalid(m) = check_new("7Z", now, &classes, now).unwrap_err() else {
            panic!()
        };
        assert!(m.contains("no class called “7Z”"), "{m}");
        let ApiError::Invalid(m) = check_new("7A", now - 3_600_000, &classes, now).unwrap_err()
        else {
            panic!()
        };
        assert!(m.contains("in the past"), "{m}");
    }
}
