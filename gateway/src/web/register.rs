//! The lesson register (attendance): who was rostered, who joined, when
//! they were admitted, how long they stayed, who never came. UK schools
//! must keep attendance, and an online school has no other register.
//!
//! [`tap`] sits on the lessons' record channel in front of the recorder,
//! the way `incidents::tap` does, and hands the events that matter here
//! (joined, waiting, admitted, left, ended) to one register task, which
//! keeps each lesson's register and writes it to the state store (table
//! [`TABLE`], one record per lesson) after every change, in order. The
//! record path never waits for the state store: the task is fed through an
//! unbounded channel of small events. A register whose node went away is
//! loaded back from the store on the lesson's next event.
//!
//! The register is read by the lesson's teachers and assistants, SLT and
//! the DSL (`GET /api/lessons/{id}/register`, and `.csv`). Who was rostered
//! is worked out when it is read: the lesson's staff, and the pupils of its
//! class in the school's class lists (`crate::roster`) or who have ever
//! signed in (the people directory). It must never be
//! shown to pupils or visitors, and never holds what anyone said.

use std::collections::HashMap;
use std::time::Instant;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chaperone_lesson::Record;
use chaperone_protocol::event::LessonEvent;
use chaperone_protocol::{LessonId, ParticipantId, Role, UserRef};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::WebState;
use super::api::{ApiError, PEOPLE};
use crate::catalog::LessonInfo;
use crate::clock::unix_millis_at;
use crate::room::RoomRecord;
use crate::store::{StateStore, Store, StoreError};

/// The state-store table of registers, one record per lesson.
pub(crate) const TABLE: &str = "registers";

/// One person's attendance in one lesson.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Attendance {
    /// Who.
    pub user: UserRef,
    /// Their name when they joined.
    pub name: String,
    /// Their role in the lesson.
    pub role: Role,
    /// When they first reached the lesson (or its waiting room), Unix ms.
    pub joined_ms: u64,
    /// When they were first admitted (staff and observers: when they
    /// joined); none if they were never let in.
    pub admitted_ms: Option<u64>,
    /// Each stretch they were in the lesson: from admission to leaving
    /// (`to_ms` none while still there).
    pub stays: Vec<Stay>,
}

/// One stretch in the lesson.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Stay {
    /// Admitted, Unix ms.
    pub from_ms: u64,
    /// Left, Unix ms; none while still in the lesson.
    pub to_ms: Option<u64>,
}

/// A lesson's register as kept in the store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Register {
    /// When the lesson ended, Unix ms, if it has.
    pub ended_ms: Option<u64>,
    /// Everyone who reached the lesson, in the order they first did.
    pub people: Vec<Attendance>,
}

impl Register {
    fn person(&mut self, user: &UserRef) -> Option<&mut Attendance> {
        self.people.iter_mut().find(|a| a.user == *user)
    }

    /// Applies one event at `at_ms`; `ids` maps this lesson's participant
    /// ids to people. Returns whether the register changed.
    fn apply(
        &mut self,
        ids: &mut HashMap<ParticipantId, UserRef>,
        at_ms: u64,
        event: &LessonEvent,
    ) -> bool {
        match event {
            LessonEvent::Joined {
                participant,
                user,
                name,
                role,
            } => {
                ids.insert(*participant, user.clone());
                let entry = match self.person(user) {
                    Some(a) => a,
                    None => {
                        self.people.push(Attendance {
                            user: user.clone(),
                            name: name.clone(),
                            role: *role,
                            joined_ms: at_ms,
                            admitted_ms: None,
                            stays: Vec::new(),
                        });
                        self.people.last_mut().expect("just pushed")
                    }
                };
                // A stay left open by a connection that never said goodbye
                // (a node that went away) ends where the next one begins.
                close(entry, at_ms);
                // In the lesson from now, unless a `Waiting` follows at once.
                entry.admitted_ms.get_or_insert(at_ms);
                entry.stays.push(Stay {
                    from_ms: at_ms,
                    to_ms: None,
                });
                true
            }
            LessonEvent::Waiting { participant } => {
                let Some(user) = ids.get(participant).cloned() else {
                    return false;
                };
                let Some(entry) = self.person(&user) else {
                    return false;
                };
                // The stay opened by `Joined` was not one: they are waiting.
                if entry.stays.last().is_some_and(|s| s.to_ms.is_none()) {
                    entry.stays.pop();
                }
                if entry.stays.is_empty() {
                    entry.admitted_ms = None;
                }
                true
            }
            LessonEvent::Admitted { participant, .. } => {
                let Some(user) = ids.get(participant).cloned() else {
                    return false;
                };
                let Some(entry) = self.person(&user) else {
                    return false;
                };
                close(entry, at_ms);
                entry.admitted_ms.get_or_insert(at_ms);
                entry.stays.push(Stay {
                    from_ms: at_ms,
                    to_ms: None,
                });
                true
            }
            LessonEvent::Left { participant } => {
                let Some(user) = ids.remove(participant) else {
                    return false;
                };
                // A second connection replaced this one: the person stays.
                if ids.values().any(|u| *u == user) {
                    return false;
                }
                self.person(&user).is_some_and(|entry| close(entry, at_ms))
            }
            LessonEvent::Ended { .. } => {
                for entry in &mut self.people {
                    close(entry, at_ms);
                }
                ids.clear();
                self.ended_ms.get_or_insert(at_ms);
                true
            }
            _ => false,
        }
    }
}

/// Ends an open stay at `at_ms`; whether there was one.
fn close(entry: &mut Attendance, at_ms: u64) -> bool {
    match entry.stays.last_mut() {
        Some(s) if s.to_ms.is_none() => {
            s.to_ms = Some(at_ms.max(s.from_ms));
            true
        }
        _ => false,
    }
}

/// The events the register needs, with the moment they happened.
fn relevant(event: &LessonEvent) -> bool {
    matches!(
        event,
        LessonEvent::Joined { .. }
            | LessonEvent::Waiting { .. }
            | LessonEvent::Admitted { .. }
            | LessonEvent::Left { .. }
            | LessonEvent::Ended { .. }
    )
}

/// Sits between the lessons and the recorder: passes every record on
/// unchanged and in order, and copies the register's events to the
/// register task.
pub(crate) fn tap(
    store: Store,
    mut records: mpsc::Receiver<RoomRecord>,
) -> mpsc::Receiver<RoomRecord> {
    let (tx, rx) = mpsc::channel(records.max_capacity());
    // `None`: the lesson's room closed for idleness (its register is in the
    // store; the next event loads it again).
    let (events_tx, events_rx) =
        mpsc::unbounded_channel::<(LessonId, Option<(Instant, LessonEvent)>)>();
    tokio::spawn(keep(store, events_rx));
    tokio::spawn(async move {
        while let Some(r) = records.recv().await {
            if let RoomRecord::Record {
                lesson,
                at,
                record: Record::Event(event),
            } = &r
                && relevant(event)
            {
                // The register task ends only with this one.
                let _ = events_tx.send((*lesson, Some((*at, event.clone()))));
            }
            if let RoomRecord::Closed { lesson } = &r {
                let _ = events_tx.send((*lesson, None));
            }
            if tx.send(r).await.is_err() {
                break;
            }
        }
    });
    rx
}

/// The register task: applies events in order and writes each changed
/// register.
async fn keep(
    store: Store,
    mut events: mpsc::UnboundedReceiver<(LessonId, Option<(Instant, LessonEvent)>)>,
) {
    let mut open: HashMap<LessonId, (Register, HashMap<ParticipantId, UserRef>)> = HashMap::new();
    while let Some((lesson, event)) = events.recv().await {
        let Some((at, event)) = event else {
            open.remove(&lesson);
            continue;
        };
        if let std::collections::hash_map::Entry::Vacant(slot) = open.entry(lesson) {
            let loaded = match load(&store, lesson).await {
                Ok(r) => r.unwrap_or_default(),
                Err(e) => {
                    tracing::error!(%lesson, error = %e, "register not loaded; continuing from this event");
                    Register::default()
                }
            };
            slot.insert((loaded, HashMap::new()));
        }
        let Some((register, ids)) = open.get_mut(&lesson) else {
            continue;
        };
        if !register.apply(ids, unix_millis_at(at), &event) {
            continue;
        }
        if let Err(e) = save(&store, lesson, register).await {
            tracing::error!(%lesson, error = %e, "register not written (the lesson's recording has every event)");
        }
        if matches!(event, LessonEvent::Ended { .. }) {
            open.remove(&lesson);
        }
    }
}

async fn save(store: &Store, lesson: LessonId, register: &Register) -> Result<(), StoreError> {
    let json = serde_json::to_string(register).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    store.put_record(TABLE, &lesson.to_string(), json).await
}

/// A lesson's register from the store, if it has one.
pub(crate) async fn load(store: &Store, lesson: LessonId) -> Result<Option<Register>, StoreError> {
    match store.get_record(TABLE, &lesson.to_string()).await? {
        None => Ok(None),
        Some(json) => serde_json::from_str(&json)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(e.to_string())),
    }
}

/// One row of the register as read: a rostered person who never came has
/// no attendance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Row {
    /// Who.
    pub user: UserRef,
    /// Name.
    pub name: String,
    /// `teacher`, `assistant`, `pupil`, `observer`.
    pub role: Role,
    /// Whether they were on the lesson's roster (staff, or a pupil of its class).
    pub rostered: bool,
    /// `present` (in the lesson now), `attended`, `not_admitted` (waited,
    /// never let in), `absent` (never came).
    pub status: &'static str,
    /// First reached the lesson, Unix ms.
    pub joined_ms: Option<u64>,
    /// First admitted, Unix ms.
    pub admitted_ms: Option<u64>,
    /// Last left, Unix ms.
    pub left_ms: Option<u64>,
    /// Time in the lesson, whole seconds (up to `now` for a stay still open).
    pub stayed_secs: u64,
}

/// The register of `info` as its readers see it at `now_ms`: everyone who
/// came, in the order they came, then the rostered who never did.
pub(crate) fn rows(
    info: &LessonInfo,
    register: &Register,
    rostered_pupils: &[(UserRef, String)],
    now_ms: u64,
) -> Vec<Row> {
    let mut out: Vec<Row> = register
        .people
        .iter()
        .map(|a| {
            let open = a.stays.iter().any(|s| s.to_ms.is_none());
            let stayed_ms: u64 = a
                .stays
                .iter()
                .map(|s| s.to_ms.unwrap_or(now_ms).saturating_sub(s.from_ms))
                .sum();
            Row {
                user: a.user.clone(),
                name: a.name.clone(),
                role: a.role,
                rostered: info.teachers.contains(&a.user)
                    || info.assistants.contains(&a.user)
                    || rostered_pupils.iter().any(|(u, _)| *u == a.user),
                status: if open {
                    "present"
                } else if a.admitted_ms.is_some() {
                    "attended"
                } else {
                    "not_admitted"
                },
                joined_ms: Some(a.joined_ms),
                admitted_ms: a.admitted_ms,
                left_ms: if open {
                    None
                } else {
                    a.stays.last().and_then(|s| s.to_ms)
                },
                stayed_secs: stayed_ms / 1000,
            }
        })
        .collect();
    for (user, name) in rostered_pupils {
        if !out.iter().any(|r| r.user == *user) {
            out.push(Row {
                user: user.clone(),
                name: name.clone(),
                role: Role::Pupil,
                rostered: true,
                status: "absent",
                joined_ms: None,
                admitted_ms: None,
                left_ms: None,
                stayed_secs: 0,
            });
        }
    }
    out
}

/// RFC 4180 CSV of the register: one header line, one line per person,
/// times in UTC (ISO 8601).
pub(crate) fn csv(info: &LessonInfo, rows: &[Row]) -> String {
    let mut out = String::from(
        "lesson,class,name,role,rostered,status,joined_utc,admitted_utc,left_utc,minutes_present\r\n",
    );
    for r in rows {
        let fields = [
            field(&info.title),
            field(&info.class),
            field(&r.name),
            role_name(r.role).to_owned(),
            if r.rostered { "yes" } else { "no" }.to_owned(),
            r.status.to_owned(),
            r.joined_ms.map(iso).unwrap_or_default(),
            r.admitted_ms.map(iso).unwrap_or_default(),
            r.left_ms.map(iso).unwrap_or_default(),
            format!("{:.1}", r.stayed_secs as f64 / 60.0),
        ];
        out.push_str(&fields.join(","));
        out.push_str("\r\n");
    }
    out
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Teacher => "teacher",
        Role::Assistant => "assistant",
        Role::Pupil => "pupil",
        Role::Observer => "observer",
    }
}

/// A CSV field, quoted when it must be; a leading `=`, `+`, `-` or `@` is
/// prefixed with `'` so that a spreadsheet never runs a name as a formula.
fn field(text: &str) -> String {
    let safe = if text.starts_with(['=', '+', '-', '@']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if safe.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", safe.replace('"', "\"\""))
    } else {
        safe
    }
}

/// Unix ms as `2026-12-07T09:30:00Z`.
fn iso(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil(i64::try_from(days).unwrap_or(0));
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The register routes.
pub(crate) fn router() -> Router<WebState> {
    Router::new()
        .route("/api/lessons/{lesson}/register", get(register_json))
        .route("/api/lessons/{lesson}/register.csv", get(register_csv))
}

/// The lesson and its register rows, for a caller who may read them: the
/// lesson's teachers and assistants, SLT and the DSL. Anyone else who may
/// see the lesson (its pupils, a visitor) is refused `forbidden`.
async fn readable(
    state: &WebState,
    headers: &HeaderMap,
    lesson: &str,
) -> Result<(LessonInfo, Vec<Row>), ApiError> {
    let (key, who) = super::api::signed_in(state, headers).await?;
    let info = super::api::visible_lesson(state, &key, &who, lesson).await?;
    let staff_of_lesson = who.is_staff()
        && (info.teachers.contains(&who.user) || info.assistants.contains(&who.user));
    if !(staff_of_lesson || who.is_safeguarding_observer()) {
        return Err(ApiError::Forbidden);
    }
    let register = load(&state.store, info.id).await?.unwrap_or_default();
    let pupils = rostered_pupils(state, &info.class).await?;
    let rows = rows(&info, &register, &pupils, crate::clock::unix_millis());
    Ok((info, rows))
}

/// Pupils of `class`: the school's class list (`lesson.roster_file`) and
/// those the people directory knows (who signed in), by name; a person in
/// both once, under the name the identity provider gave at sign-in.
async fn rostered_pupils(
    state: &WebState,
    class: &str,
) -> Result<Vec<(UserRef, String)>, ApiError> {
    let mut out: Vec<(UserRef, String)> = state
        .store
        .list_records(PEOPLE)
        .await?
        .into_iter()
        .filter_map(|(_, j)| serde_json::from_str::<serde_json::Value>(&j).ok())
        .filter(|p| {
            let has = |field: &str, value: &str| {
                p[field]
                    .as_array()
                    .is_some_and(|v| v.iter().any(|x| x.as_str() == Some(value)))
            };
            has("roles", "pupil") && has("classes", class)
        })
        .filter_map(|p| {
            let user = serde_json::from_value::<UserRef>(p["user"].clone()).ok()?;
            Some((user, p["name"].as_str().unwrap_or_default().to_owned()))
        })
        .collect();
    for (user, name) in state.config.roster.pupils(class) {
        if !out.iter().any(|(u, _)| u == user) {
            out.push((user.clone(), name.clone()));
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

async fn register_json(
    State(state): State<WebState>,
    headers: HeaderMap,
    Path(lesson): Path<String>,
) -> Result<axum::Json<Vec<Row>>, ApiError> {
    let (_, rows) = readable(&state, &headers, &lesson).await?;
    Ok(axum::Json(rows))
}

async fn register_csv(
    State(state): State<WebState>,
    headers: HeaderMap,
    Path(lesson): Path<String>,
) -> Result<Response, ApiError> {
    let (info, rows) = readable(&state, &headers, &lesson).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"register-{}.csv\"", info.id),
            ),
        ],
        csv(&info, &rows),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn user(sub: &str) -> UserRef {
        UserRef::new("https://idp", sub).unwrap()
    }

    fn joined(p: u64, sub: &str, role: Role) -> LessonEvent {
        LessonEvent::Joined {
            participant: ParticipantId(p),
            user: user(sub),
            name: sub.to_owned(),
            role,
        }
    }

    fn info() -> LessonInfo {
        LessonInfo {
            id: LessonId::from_bytes([1; 16]),
            title: "Fractions, part 2".to_owned(),
            class: "7A".to_owned(),
            teachers: vec![user("t")],
            assistants: Vec::new(),
            starts_at_ms: 0,
            ends_at_ms: 3_600_000,
            created_by: user("t"),
            extended_until_ms: None,
        }
    }

    #[test]
    fn admissions_stays_reconnects_and_absences() {
        let mut r = Register::default();
        let mut ids = HashMap::new();
        let p = |n| ParticipantId(n);
        let steps: Vec<(u64, LessonEvent)> = vec![
            (1_000, joined(1, "t", Role::Teacher)),
            (2_000, joined(2, "a", Role::Pupil)),
            (2_000, LessonEvent::Waiting { participant: p(2) }),
            (
                5_000,
                LessonEvent::Admitted {
                    participant: p(2),
                    by: p(1),
                },
            ),
            (6_000, joined(3, "w", Role::Pupil)),
            (6_000, LessonEvent::Waiting { participant: p(3) }),
            (8_000, LessonEvent::Left { participant: p(3) }),
            // Pupil a drops and comes straight back (within the grace).
            (65_000, LessonEvent::Left { participant: p(2) }),
            (70_000, joined(4, "a", Role::Pupil)),
            (130_000, LessonEvent::Ended { by: p(1) }),
        ];
        for (at, e) in &steps {
            r.apply(&mut ids, *at, e);
        }
        assert_eq!(r.ended_ms, Some(130_000));
        let rostered = vec![(user("a"), "a".to_owned()), (user("c"), "Cal".to_owned())];
        let rows = rows(&info(), &r, &rostered, 200_000);
        let by = |s: &str| rows.iter().find(|x| x.user == user(s)).unwrap();
        assert_eq!((by("t").status, by("t").stayed_secs), ("attended", 129));
        assert_eq!(by("a").admitted_ms, Some(5_000));
        assert_eq!(
            by("a").stayed_secs,
            60 + 60,
            "two stays: 5-65 s and 70-130 s"
        );
        assert_eq!(by("w").status, "not_admitted");
        assert_eq!(by("w").stayed_secs, 0);
        assert!(!by("w").rostered);
        assert_eq!((by("c").status, by("c").rostered), ("absent", true));
        let text = csv(&info(), &rows);
        assert!(text.starts_with("lesson,class,name,role,"), "{text}");
        assert!(text.contains("\"Fractions, part 2\",7A,a,pupil,yes,attended,1970-01-01T00:00:02Z,1970-01-01T00:00:05Z,1970-01-01T00:02:10Z,2.0\r\n"), "{text}");
        assert!(text.contains(",Cal,pupil,yes,absent,,,,0.0\r\n"), "{text}");
    }

    #[test]
    fn a_replaced_connection_does_not_end_the_stay() {
        let mut r = Register::default();
        let mut ids = HashMap::new();
        r.apply(&mut ids, 0, &joined(1, "t", Role::Teacher));
        r.apply(&mut ids, 10_000, &joined(2, "t", Role::Teacher));
        r.apply(
            &mut ids,
            10_000,
            &LessonEvent::Left {
                participant: ParticipantId(1),
            },
        );
        assert_eq!(r.people[0].stays.last().unwrap().to_ms, None);
    }

    #[test]
    fn csv_fields_are_quoted_and_never_formulas() {
        assert_eq!(field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(field("Bea"), "Bea");
        assert_eq!(iso(1_796_601_600_000), "2026-12-07T00:00:00Z");
    }
}
