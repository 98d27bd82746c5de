//! The recordings a session may see: the search (`GET /api/recordings`),
//! one lesson's timeline (`GET /api/recordings/{lesson}`), its media
//! remuxed to WebM with range requests (`.../media/{file}`) and the seeks a
//! page reports inside what it already buffered (`.../seek`).
//!
//! Everything served is built through [`crate::policy`] for the session's
//! access, and each list, view, play and seek is audited before a byte is
//! answered; a lesson outside the scope answers `not_found`.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::CookieJar;
use chaperone_tokens::ReviewScope;
use serde::Deserialize;
use serde_json::json;

use super::ReviewService;
use super::range::parse_range;
use super::refusal::Refusal;
use super::session::lesson_access;
use crate::library;
use crate::marks;
use crate::policy::{self, Access};
use crate::webm;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    teacher: Option<String>,
    pupil: Option<String>,
    from_ms: Option<u64>,
    to_ms: Option<u64>,
    flagged: Option<bool>,
}

fn matches(people: &[library::Participant], needle: &Option<String>) -> bool {
    let Some(n) = needle.as_deref().map(str::trim).filter(|n| !n.is_empty()) else {
        return true;
    };
    let n = n.to_lowercase();
    people
        .iter()
        .any(|p| p.name.to_lowercase().contains(&n) || p.user.subject.to_lowercase() == n)
}

pub(super) async fn list(
    State(svc): State<Arc<ReviewService>>,
    jar: CookieJar,
    Query(q): Query<ListQuery>,
) -> Response {
    let (_, s) = match svc.session(&jar, None, "list recordings").await {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let lessons = match library::list_lessons(svc.store.as_ref()).await {
        Ok(l) => l,
        Err(_) => return Refusal::Unavailable.into_response(),
    };
    let mut out = Vec::new();
    for lesson in lessons
        .into_iter()
        .filter(|l| ReviewService::covers(&s, *l))
    {
        let Ok(sum) = svc.summary(lesson).await else {
            continue;
        };
        let pupil_view = s.claims.scope == ReviewScope::PupilCopy;
        if !matches(&sum.staff, &q.teacher)
            || (!pupil_view && !matches(&sum.pupils, &q.pupil))
            || q.from_ms
                .is_some_and(|f| sum.start_ms + sum.duration_ms < f)
            || q.to_ms.is_some_and(|t| sum.start_ms > t)
            || (q.flagged == Some(true) && sum.concerns + sum.incidents == 0)
        {
            continue;
        }
        let held = marks::holds(svc.store.as_ref(), &lesson)
            .await
            .map(|h| marks::is_held(&h, sum.concerns + sum.incidents > 0))
            .unwrap_or(true);
        out.push(if pupil_view {
            json!({"lesson": sum.lesson, "start_ms": sum.start_ms, "duration_ms": sum.duration_ms,
                   "staff": sum.staff.iter().map(|p| &p.name).collect::<Vec<_>>()})
        } else {
            json!({"lesson": sum.lesson, "start_ms": sum.start_ms, "duration_ms": sum.duration_ms,
                   "final": sum.is_final, "staff": sum.staff, "pupils": sum.pupils,
                   "concerns": sum.concerns, "incidents": sum.incidents,
                   "first_flag_ms": sum.first_flag_ms, "held": held})
        });
    }
    let mut e = svc.entry("list", Some(&s), None);
    e.file = Some(format!(
        "teacher={} pupil={} from={} to={} flagged={}",
        q.teacher.unwrap_or_default(),
        q.pupil.unwrap_or_default(),
        q.from_ms.map_or(String::new(), |v| v.to_string()),
        q.to_ms.map_or(String::new(), |v| v.to_string()),
        q.flagged.unwrap_or(false)
    ));
    if let Err(r) = svc.record(e).await {
        return r.into_response();
    }
    Json(out).into_response()
}

pub(super) async fn detail(
    State(svc): State<Arc<ReviewService>>,
    jar: CookieJar,
    Path(lesson): Path<String>,
) -> Response {
    let (_, s, id) = match lesson_access(&svc, &jar, &lesson, "view").await {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let rec = match svc.recording(id).await {
        Ok(r) => r,
        Err(r) => {
            return svc
                .refuse(r, Some(&s), Some(id), "view")
                .await
                .into_response();
        }
    };
    let access = Access::of(s.claims.scope);
    let restrictions = match svc.restrictions(id).await {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let withheld = policy::withheld(access, &restrictions);
    let files = policy::files(&rec, access);
    let summary = rec.summary();
    let holds = marks::holds(svc.store.as_ref(), &id)
        .await
        .unwrap_or_default();
    let flagged = summary.concerns + summary.incidents > 0;
    let mut body = json!({
        "lesson": id,
        "start_ms": rec.start_unix_micros / 1000,
        "duration_ms": rec.duration_micros / 1000,
        "final": rec.is_final,
        "scope": s.claims.scope,
        "files": files.iter().map(|f| json!({
            "name": f.name, "label": f.label, "role": f.role, "screen": f.screen,
            "video": f.video, "audio": f.audio,
            "url": format!("{}/api/recordings/{id}/media/{}", svc.settings.cookie_path, f.name),
        })).collect::<Vec<_>>(),
        "chat": policy::chat(&rec, access, &withheld),
        "events": policy::events(&rec, access, &withheld),
        "marks": crate::annotation::marks(&rec, access, &withheld),
        "restricted": match access {
            Access::Pupil => json!([]),
            Access::Blanked => json!(withheld.iter().map(|w| json!({"from_ms": w.from_micros / 1000, "to_ms": w.to_micros / 1000})).collect::<Vec<_>>()),
            Access::Full => json!(restrictions),
        },
    });
    if access != Access::Pupil {
        body["participants"] = json!(rec.participants.values().collect::<Vec<_>>());
        body["gaps"] = json!(rec.gaps);
        body["held"] = json!(marks::is_held(&holds, flagged));
        body["holds"] = json!(holds);
        body["concerns"] = json!(summary.concerns);
        body["incidents"] = json!(summary.incidents);
    } else {
        body["withheld_parts"] = json!(!withheld.is_empty());
    }
    if let Err(r) = svc.record(svc.entry("view", Some(&s), Some(id))).await {
        return r.into_response();
    }
    Json(body).into_response()
}

pub(super) async fn media(
    State(svc): State<Arc<ReviewService>>,
    jar: CookieJar,
    headers: HeaderMap,
    Path((lesson, file)): Path<(String, String)>,
) -> Response {
    let (sid, s, id) = match lesson_access(&svc, &jar, &lesson, "media").await {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let access = Access::of(s.claims.scope);
    let rec = match svc.recording(id).await {
        Ok(r) => r,
        Err(r) => {
            return svc
                .refuse(r, Some(&s), Some(id), "media")
                .await
                .into_response();
        }
    };
    let webm = match svc.file(&rec, &file, access).await {
        Ok(f) => f,
        Err(r) => {
            return svc
                .refuse(r, Some(&s), Some(id), &format!("media {file}"))
                .await
                .into_response();
        }
    };
    let len = webm.bytes.len() as u64;
    if len == 0 {
        return Refusal::NotFound.into_response();
    }
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (start, end, partial) = match range {
        None => (0, len.saturating_sub(1), false),
        Some(r) => match parse_range(r, len) {
            Some((a, b)) => (a, b, true),
            None => return Refusal::Range { len }.into_response(),
        },
    };
    // Audit: the first read of a file is "play", a jump elsewhere a "seek";
    // a player reading on, or reading the index after the last cluster, is
    // neither.
    let media_end = webm.clusters.last().map_or(len, |(o, _)| {
        webm::element_at(&webm.bytes, *o as usize)
            .and_then(|(_, s, sz)| sz.map(|sz| s as u64 + sz))
            .unwrap_or(len)
    });
    let key = (sid, file.clone());
    let previous = svc
        .reading
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, end + 1);
    let action = match previous {
        None => Some("play"),
        Some(_) if start >= media_end => None,
        Some(p) if start >= p && start - p < 64 * 1024 => None,
        Some(_) => Some("seek"),
    };
    if let Some(action) = action {
        let mut e = svc.entry(action, Some(&s), Some(id));
        e.file = Some(file.clone());
        e.from_ms = Some(webm.time_at(start) / 1000);
        e.to_ms = Some(webm.time_at(end.min(media_end)) / 1000);
        if let Err(r) = svc.record(e).await {
            return r.into_response();
        }
    }
    let body = webm.bytes[start as usize..=end as usize].to_vec();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = if partial {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/webm"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&(end + 1 - start).to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    if partial && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
        h.insert(header::CONTENT_RANGE, v);
    }
    response
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SeekReport {
    t_ms: u64,
}

/// The page reports a seek inside what the player has already buffered
/// (which makes no range request): audited like one.
pub(super) async fn seek_report(
    State(svc): State<Arc<ReviewService>>,
    jar: CookieJar,
    Path(lesson): Path<String>,
    Json(req): Json<SeekReport>,
) -> Response {
    let (_, s, id) = match lesson_access(&svc, &jar, &lesson, "seek").await {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let mut e = svc.entry("seek", Some(&s), Some(id));
    e.from_ms = Some(req.t_ms);
    e.to_ms = Some(req.t_ms);
    match svc.record(e).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r.into_response(),
    }
}
