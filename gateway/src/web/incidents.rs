//! Incidents and concerns for the DSL (issue 6): a teacher's incident flag
//! and a pupil's concern (the lesson core's `Output::Alert`) become records
//! in the state store (table [`TABLE`]), listed for the DSL with the lesson,
//! the time, the people and a link that opens the replay at that moment;
//! the DSL adds notes and a status (open, referred, closed).
//!
//! The recording itself holds the same event, which is what places its
//! legal hold (the review service holds a recording with a concern or an
//! incident until the DSL lifts it with a reason).
//!
//! [`tap`] sits on the lessons' record channel in front of the recorder and
//! calls [`record_alert`] for every alert; it learns participants' names
//! from the `joined` events passing by. A concern's words go to the store
//! for the DSL only, never to the log.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chaperone_protocol::event::LessonEvent;
use chaperone_protocol::{LessonId, ParticipantId, UserRef};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc;

use super::audit::{self, AuditRecord};
use super::{WebState, current_session, same_origin};
use crate::auth::SchoolRole;
use crate::catalog::LessonInfo;
use crate::clock::unix_millis;
use crate::room::RoomRecord;
use crate::store::{StateStore, Store, StoreError};
use chaperone_lesson::Record;

/// The state-store table of incidents and concerns.
pub(crate) const TABLE: &str = "incidents";
/// Longest note.
pub(crate) const MAX_NOTE_CHARS: usize = 2000;

/// Someone an incident is about or from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Person {
    /// Their id in the lesson.
    pub participant: ParticipantId,
    /// Who, when known.
    pub user: Option<UserRef>,
    /// Their name, when known.
    pub name: Option<String>,
}

/// A DSL's note.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Note {
    /// When, Unix milliseconds.
    pub at_ms: u64,
    /// Who.
    pub by: UserRef,
    /// Their name.
    pub by_name: String,
    /// The note (or the status change).
    pub text: String,
}

/// Where an incident stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Status {
    /// Not yet dealt with.
    Open,
    /// Referred on (children's services, police).
    Referred,
    /// Closed.
    Closed,
}

/// A concern or incident.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Incident {
    /// Random id.
    pub id: String,
    /// The lesson.
    pub lesson: LessonId,
    /// When it was raised, Unix milliseconds.
    pub at_ms: u64,
    /// `concern` (a pupil) or `incident` (staff).
    pub kind: String,
    /// Who raised it.
    pub raised_by: Person,
    /// What they wrote.
    pub text: String,
    /// Where it stands.
    pub status: Status,
    /// The DSL's notes, oldest first.
    pub notes: Vec<Note>,
}

/// Records a concern or incident of `lesson` raised at `at_ms`; any other
/// event is ignored. `who` names the participant when known.
pub(crate) async fn record_alert(
    store: &Store,
    lesson: LessonId,
    at_ms: u64,
    event: &LessonEvent,
    who: Option<(UserRef, String)>,
) -> Result<Option<Incident>, StoreError> {
    let (kind, participant, text) = match event {
        LessonEvent::Concern { participant, text } => ("concern", *participant, text.clone()),
        LessonEvent::Incident { by, note } => ("incident", *by, note.clone()),
        _ => return Ok(None),
    };
    let (user, name) = who.map_or((None, None), |(u, n)| (Some(u), Some(n)));
    let incident = Incident {
        id: crate::auth::session::new_secret()[..24].to_owned(),
        lesson,
        at_ms,
        kind: kind.to_owned(),
        raised_by: Person {
            participant,
            user,
            name,
        },
        text,
        status: Status::Open,
        notes: Vec::new(),
    };
    let json = serde_json::to_string(&incident).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    store.put_record(TABLE, &incident.id, json).await?;
    tracing::warn!(target: "safeguarding", %lesson, kind, id = %incident.id, "recorded for the DSL");
    Ok(Some(incident))
}

/// Sits between the lessons and the recorder: passes every record on
/// unchanged (and in order), and records every alert for the DSL.
pub(crate) fn tap(
    store: Store,
    mut records: mpsc::Receiver<RoomRecord>,
) -> mpsc::Receiver<RoomRecord> {
    let (tx, rx) = mpsc::channel(records.max_capacity());
    tokio::spawn(async move {
        let mut names: HashMap<(LessonId, ParticipantId), (UserRef, String)> = HashMap::new();
        while let Some(r) = records.recv().await {
            match &r {
                RoomRecord::Record {
                    lesson,
                    record:
                        Record::Event(LessonEvent::Joined {
                            participant,
                            user,
                            name,
                            ..
                        }),
                    ..
                } => {
                    names.insert((*lesson, *participant), (user.clone(), name.clone()));
                }
                RoomRecord::Record {
                    lesson,
                    record: Record::Event(LessonEvent::Ended { .. }),
                    ..
                }
                | RoomRecord::Closed { lesson } => names.retain(|(l, _), _| l != lesson),
                RoomRecord::Alert { lesson, at, event } => {
                    let at_ms = crate::clock::unix_millis_at(*at);
                    let raiser = match event {
                        LessonEvent::Concern { participant, .. } => Some(*participant),
                        LessonEvent::Incident { by, .. } => Some(*by),
                        _ => None,
                    };
                    let who = raiser.and_then(|p| names.get(&(*lesson, p)).cloned());
                    let (store, lesson, event) = (store.clone(), *lesson, event.clone());
                    // Off the record path: the recorder never waits for the state store.
                    tokio::spawn(async move {
                        if let Err(e) = record_alert(&store, lesson, at_ms, &event, who).await {
                            tracing::error!(%lesson, error = %e, "concern or incident not stored for the DSL (it is in the recording)");
                        }
                    });
                }
                RoomRecord::Record { .. } | RoomRecord::Opened { .. } | RoomRecord::Gap { .. } => {}
            }
            if tx.send(r).await.is_err() {
                break;
            }
        }
    });
    rx
}

/// The incident routes (DSL only).
pub(crate) fn router() -> Router<WebState> {
    Router::new()
        .route("/api/incidents", get(list))
        .route("/api/incidents/{id}", post(update))
}

fn refused(status: StatusCode, code: &str) -> Response {
    (status, axum::Json(json!({"error": code, "message": code}))).into_response()
}

async fn dsl(
    state: &WebState,
    headers: &HeaderMap,
) -> Result<crate::auth::identity::Identity, Response> {
    match current_session(state, headers).await {
        Ok(Some((_, s))) if s.identity.has(SchoolRole::Dsl) => Ok(s.identity),
        Ok(Some((_, s))) => {
            audit::write(
                &state.store,
                AuditRecord::new(unix_millis(), "incidents", Some(s.identity.user))
                    .refused("forbidden"),
            )
            .await;
            Err(refused(StatusCode::FORBIDDEN, "forbidden"))
        }
        Ok(None) => Err(refused(StatusCode::UNAUTHORIZED, "unauthenticated")),
        Err(_) => Err(refused(StatusCode::SERVICE_UNAVAILABLE, "unavailable")),
    }
}

async fn list(State(state): State<WebState>, headers: HeaderMap) -> Response {
    if let Err(r) = dsl(&state, &headers).await {
        return r;
    }
    let rows = match state.store.list_records(TABLE).await {
        Ok(r) => r,
        Err(_) => return refused(StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    };
    let mut out: Vec<Incident> = rows
        .into_iter()
        .filter_map(|(_, j)| serde_json::from_str(&j).ok())
        .collect();
    out.sort_by_key(|i| std::cmp::Reverse(i.at_ms));
    let mut rows = Vec::new();
    for i in out {
        let info = state
            .store
            .get_record(crate::catalog::TABLE, &i.lesson.to_string())
            .await
            .ok()
            .flatten()
            .and_then(|j| serde_json::from_str::<LessonInfo>(&j).ok());
        rows.push(json!({
            "incident": i,
            "title": info.as_ref().map(|l| l.title.clone()),
            "class": info.as_ref().map(|l| l.class.clone()),
            "replay": format!("/replay/{}?at={}", i.lesson, i.at_ms),
        }));
    }
    axum::Json(rows).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Update {
    status: Option<Status>,
    note: Option<String>,
}

async fn update(
    State(state): State<WebState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::Json(req): axum::Json<Update>,
) -> Response {
    if !same_origin(&state, &headers) {
        return refused(StatusCode::FORBIDDEN, "cross_site");
    }
    let who = match dsl(&state, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let Ok(Some(json)) = state.store.get_record(TABLE, &id).await else {
        return refused(StatusCode::NOT_FOUND, "not_found");
    };
    let Ok(mut incident) = serde_json::from_str::<Incident>(&json) else {
        return refused(StatusCode::NOT_FOUND, "not_found");
    };
    let now = unix_millis();
    let mut changes = Vec::new();
    if let Some(note) = req.note.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
        if note.chars().count() > MAX_NOTE_CHARS {
            return refused(StatusCode::BAD_REQUEST, "note_too_long");
        }
        incident.notes.push(Note {
            at_ms: now,
            by: who.user.clone(),
            by_name: who.name.clone(),
            text: note.to_owned(),
        });
        changes.push("note");
    }
    if let Some(status) = req.status
        && status != incident.status
    {
        incident.notes.push(Note {
            at_ms: now,
            by: who.user.clone(),
            by_name: who.name.clone(),
            text: format!("status: {:?} -> {:?}", incident.status, status).to_lowercase(),
        });
        incident.status = status;
        changes.push("status");
    }
    let Ok(json) = serde_json::to_string(&incident) else {
        return refused(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    };
    if state.store.put_record(TABLE, &id, json).await.is_err() {
        return refused(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    }
    audit::write(
        &state.store,
        AuditRecord::new(now, "incident_update", Some(who.user.clone()))
            .lesson(incident.lesson)
            .reason(changes.join(", ")),
    )
    .await;
    axum::Json(incident).into_response()
}
