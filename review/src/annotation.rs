//! Annotation marks for the replay: the recorded mark events of a lesson
//! turned into the operations the replay page applies in time order (draw,
//! extend, hide, laser), for one access (see [`crate::policy`]).
//!
//! A pupil's copy holds staff marks only (drawn, extended, hidden), never a
//! pupil's mark or name. Inside a DSL-only range nothing is served: every
//! mark shown is hidden at the range's start, and those shown at its end
//! are drawn again then, except a mark drawn or added to inside the range,
//! which is never served again (what was drawn then is the range's). Marks go with
//! their shared screen: cleared by staff, undone or erased by their author,
//! or gone when the screen stopped being forwarded or the lesson ended
//! (also when the node died and no clear could be recorded). Pure.

use std::collections::BTreeMap;

use chaperone_protocol::annotation::{MarkId, Point, Stroke, Tool};
use chaperone_protocol::event::LessonEvent;
use chaperone_protocol::{MediaSource, ParticipantId};
use serde::Serialize;

use crate::library::Recording;
use crate::policy::Access;
use crate::webm::Span;

/// One operation of the replay's annotation layer, at its time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum MarkOp {
    /// Show a mark (new, put back, or again after a withheld range).
    Draw {
        /// Ms from the lesson's start.
        t_ms: u64,
        /// The mark.
        id: MarkId,
        /// Whose shared screen.
        layer: ParticipantId,
        /// Who drew it (a staff member's name in a pupil's copy).
        by: String,
        /// Drawn by staff.
        staff: bool,
        /// The mark as it is at this time.
        stroke: Stroke,
    },
    /// Points added to a shown mark.
    Extend {
        /// Ms from the lesson's start.
        t_ms: u64,
        /// The mark.
        id: MarkId,
        /// The points.
        points: Vec<Point>,
    },
    /// Marks no longer shown.
    Hide {
        /// Ms from the lesson's start.
        t_ms: u64,
        /// The marks.
        ids: Vec<MarkId>,
    },
    /// A laser flash (fades by itself).
    Laser {
        /// Ms from the lesson's start.
        t_ms: u64,
        /// Whose shared screen.
        layer: ParticipantId,
        /// Who pointed.
        by: String,
        /// Where.
        stroke: Stroke,
    },
}

struct Kept {
    layer: ParticipantId,
    by: String,
    staff: bool,
    stroke: Stroke,
    shown: bool,
    /// Drawn or added to inside a withheld range: never served again.
    withheld: bool,
}

/// Merges overlapping spans (sorted by start).
fn merged(withheld: &[Span]) -> Vec<Span> {
    let mut spans: Vec<Span> = withheld.to_vec();
    spans.sort();
    let mut out: Vec<Span> = Vec::new();
    for s in spans {
        match out.last_mut() {
            Some(last) if s.from_micros <= last.to_micros => {
                last.to_micros = last.to_micros.max(s.to_micros);
            }
            _ => out.push(s),
        }
    }
    out
}

/// The annotation operations `access` may have, outside `withheld`.
pub(crate) fn marks(rec: &Recording, access: Access, withheld: &[Span]) -> Vec<MarkOp> {
    let spans = merged(withheld);
    let mut kept: BTreeMap<MarkId, Kept> = BTreeMap::new();
    let mut out = Vec::new();
    let allowed = |staff: bool| access != Access::Pupil || staff;
    // Which span boundary comes next, and whether we are inside a span.
    let mut next = 0;
    let mut inside = false;
    let served = |k: &Kept| allowed(k.staff) && !k.withheld;
    let shown_ids = |kept: &BTreeMap<MarkId, Kept>| -> Vec<MarkId> {
        kept.iter()
            .filter(|(_, k)| k.shown && served(k))
            .map(|(id, _)| *id)
            .collect()
    };
    let mut boundaries =
        |t: u64, kept: &BTreeMap<MarkId, Kept>, out: &mut Vec<MarkOp>, inside: &mut bool| {
            while next < spans.len() * 2 {
                let span = &spans[next / 2];
                let (at, entering) = if next % 2 == 0 {
                    (span.from_micros, true)
                } else {
                    (span.to_micros, false)
                };
                if at > t {
                    break;
                }
                next += 1;
                *inside = entering;
                let t_ms = at / 1000;
                if entering {
                    let ids = shown_ids(kept);
                    if !ids.is_empty() {
                        out.push(MarkOp::Hide { t_ms, ids });
                    }
                } else {
                    for (id, k) in kept.iter().filter(|(_, k)| k.shown && served(k)) {
                        out.push(MarkOp::Draw {
                            t_ms,
                            id: *id,
                            layer: k.layer,
                            by: k.by.clone(),
                            staff: k.staff,
                            stroke: k.stroke.clone(),
                        });
                    }
                }
            }
        };
    for e in &rec.events {
        boundaries(e.t_micros, &kept, &mut out, &mut inside);
        let t_ms = e.t_micros / 1000;
        let visible = !inside;
        let hide = |ids: Vec<MarkId>, kept: &mut BTreeMap<MarkId, Kept>, out: &mut Vec<MarkOp>| {
            let served: Vec<MarkId> = ids
                .into_iter()
                .filter(|id| kept.remove(id).is_some_and(|k| k.shown && served(&k)))
                .collect();
            if visible && !served.is_empty() {
                out.push(MarkOp::Hide { t_ms, ids: served });
            }
        };
        match &e.event {
            LessonEvent::Annotated {
                mark,
                layer,
                participant,
                stroke,
            } => {
                let staff = rec.role_of(*participant).is_some_and(|r| r.is_staff());
                let by = rec.participants.get(participant).map_or_else(
                    || format!("participant {}", participant.0),
                    |p| p.name.clone(),
                );
                if stroke.tool == Tool::Laser {
                    if visible && allowed(staff) {
                        out.push(MarkOp::Laser {
                            t_ms,
                            layer: *layer,
                            by,
                            stroke: stroke.clone(),
                        });
                    }
                    continue;
                }
                if visible && allowed(staff) {
                    out.push(MarkOp::Draw {
                        t_ms,
                        id: *mark,
                        layer: *layer,
                        by: by.clone(),
                        staff,
                        stroke: stroke.clone(),
                    });
                }
                kept.insert(
                    *mark,
                    Kept {
                        layer: *layer,
                        by,
                        staff,
                        stroke: stroke.clone(),
                        shown: true,
                        withheld: inside,
                    },
                );
            }
            LessonEvent::MarkExtended { mark, points } => {
                if let Some(k) = kept.get_mut(mark) {
                    k.stroke.points.extend(points.iter().copied());
                    k.withheld |= inside;
                    if visible && k.shown && served(k) {
                        out.push(MarkOp::Extend {
                            t_ms,
                            id: *mark,
                            points: points.clone(),
                        });
                    }
                }
            }
            LessonEvent::MarkUndone { mark, .. } => {
                if let Some(k) = kept.get_mut(mark) {
                    let was = std::mem::replace(&mut k.shown, false);
                    if visible && was && served(k) {
                        out.push(MarkOp::Hide {
                            t_ms,
                            ids: vec![*mark],
                        });
                    }
                }
            }
            LessonEvent::MarkRedone { mark, .. } => {
                if let Some(k) = kept.get_mut(mark) {
                    let was = std::mem::replace(&mut k.shown, true);
                    if visible && !was && served(k) {
                        out.push(MarkOp::Draw {
                            t_ms,
                            id: *mark,
                            layer: k.layer,
                            by: k.by.clone(),
                            staff: k.staff,
                            stroke: k.stroke.clone(),
                        });
                    }
                }
            }
            LessonEvent::MarkErased { mark, .. } => hide(vec![*mark], &mut kept, &mut out),
            LessonEvent::MarksCleared { marks, .. } => hide(marks.clone(), &mut kept, &mut out),
            LessonEvent::Forwarding { track, on: false }
                if track.source == MediaSource::ScreenShare =>
            {
                let ids = kept
                    .iter()
                    .filter(|(_, k)| k.layer == track.participant)
                    .map(|(id, _)| *id)
                    .collect();
                hide(ids, &mut kept, &mut out);
            }
            LessonEvent::Ended { .. } => {
                let ids = kept.keys().copied().collect();
                hide(ids, &mut kept, &mut out);
            }
            _ => {}
        }
    }
    boundaries(u64::MAX, &kept, &mut out, &mut inside);
    out
}
