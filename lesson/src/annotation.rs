//! Annotation over a screen share: who may draw, on what, how often, and
//! who sees each mark.
//!
//! A mark is accepted only from an admitted participant who holds
//! `annotate` (staff always; observers never), while pupils are not held,
//! on a screen share that is being forwarded now, within the shape bounds
//! of `chaperone_protocol::annotation` and the per-person rate limit. Every
//! accepted mark, extension, undo, redo, erase, clear and laser flash is
//! recorded before anyone is told of it. Marks live in a layer per shared
//! screen; a layer whose share is no longer forwarded is cleared (and the
//! clear recorded) when the lesson settles, so marks never outlive the
//! picture they were drawn on, nor a failover (they are not in the
//! snapshot; the `isolated` option is).
//!
//! What each admitted participant is shown is derived, as the roster is:
//! after every input `settle_marks` compares the marks each may see with
//! those they were sent and sends the difference. Pupils see marks with an
//! opaque author handle, never another pupil's name; staff and observers
//! see names; while marks are isolated a pupil sees only staff marks and
//! their own. The waiting room is sent nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Instant;

use chaperone_protocol::annotation::{
    AuthorHandle, MAX_MARKS_PER_LAYER, MAX_POINTS, Mark, MarkId, Point, Stroke, Tool, check_points,
};
use chaperone_protocol::event::LessonEvent;
use chaperone_protocol::signal::{ErrorCode, ServerMsg};
use chaperone_protocol::{MediaSource, ParticipantId, Permission, Role, TrackId, UserRef};

use crate::{Lesson, Presence};

/// A mark kept in a layer.
#[derive(Clone, Debug)]
struct Drawn {
    layer: ParticipantId,
    author: UserRef,
    name: String,
    staff: bool,
    handle: AuthorHandle,
    stroke: Stroke,
    /// Taken back by its author; kept for redo, shown to nobody.
    undone: bool,
}

/// The annotation state of a lesson.
#[derive(Debug, Default)]
pub(crate) struct Annotation {
    next_mark: u64,
    marks: BTreeMap<MarkId, Drawn>,
    handles: HashMap<UserRef, AuthorHandle>,
    /// Per person: their undone marks, latest last.
    redo: HashMap<UserRef, Vec<MarkId>>,
    /// Per person: their latest freehand mark, which they may extend.
    latest: HashMap<UserRef, MarkId>,
    /// Per person: when their recent annotation messages arrived.
    log: HashMap<UserRef, VecDeque<Instant>>,
    /// Pupils see only staff marks and their own.
    pub(crate) isolated: bool,
    /// Marks changed since the last settle.
    changed: BTreeSet<MarkId>,
    /// Everyone's view must be recomputed in full (isolation changed).
    resync: bool,
    /// Per admitted participant: the marks they were sent, with how many
    /// points. Absent: never sent anything (just admitted).
    seen: HashMap<ParticipantId, BTreeMap<MarkId, usize>>,
}

impl Annotation {
    /// Numbers the marks of a restored lesson from `next_participant << 32`.
    pub(crate) fn set_mark_base(&mut self, next_participant: u64) {
        self.next_mark = next_participant.saturating_mul(1 << 32);
    }
}

impl Lesson {
    /// Whether `from` may annotate now: permitted, and not a held pupil.
    fn may_annotate(&self, from: ParticipantId) -> Result<UserRef, ErrorCode> {
        let x = self
            .participants
            .get(&from)
            .ok_or(ErrorCode::UnknownParticipant)?;
        if !self.permitted(from, Permission::Annotate) {
            return Err(ErrorCode::NotPermitted);
        }
        if x.role == Role::Pupil && !self.held.is_empty() {
            return Err(ErrorCode::Held);
        }
        Ok(x.user.clone())
    }

    fn share_live(&self, layer: ParticipantId) -> bool {
        self.forwarding
            .contains(&TrackId::new(layer, MediaSource::ScreenShare))
    }

    /// `annotation_rate` messages per `annotation_window`, per person (staff
    /// too: one client must not flood every page).
    fn annotation_rate(&mut self, now: Instant, user: &UserRef) -> Result<(), ErrorCode> {
        let window = self.config.annotation_window;
        let log = self.annotation.log.entry(user.clone()).or_default();
        while log
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            log.pop_front();
        }
        if log.len() >= self.config.annotation_rate {
            return Err(ErrorCode::RateLimited);
        }
        log.push_back(now);
        Ok(())
    }

    pub(crate) fn draw(
        &mut self,
        now: Instant,
        from: ParticipantId,
        layer: ParticipantId,
        stroke: Stroke,
    ) -> Result<(), ErrorCode> {
        let user = self.may_annotate(from)?;
        stroke.check().map_err(|_| ErrorCode::BadMark)?;
        if !self.share_live(layer) {
            return Err(ErrorCode::NoShare);
        }
        let laser = stroke.tool == Tool::Laser;
        if !laser
            && self
                .annotation
                .marks
                .values()
                .filter(|d| d.layer == layer)
                .count()
                >= MAX_MARKS_PER_LAYER
        {
            return Err(ErrorCode::LayerFull);
        }
        self.annotation_rate(now, &user)?;
        let Some(x) = self.participants.get(&from) else {
            return Err(ErrorCode::UnknownParticipant);
        };
        let (name, staff) = (x.name.clone(), x.role.is_staff());
        let next_handle = AuthorHandle(self.annotation.handles.len() as u32 + 1);
        let handle = *self
            .annotation
            .handles
            .entry(user.clone())
            .or_insert(next_handle);
        self.annotation.next_mark += 1;
        let id = MarkId(self.annotation.next_mark);
        // Recorded before anyone is shown it.
        self.record(LessonEvent::Annotated {
            mark: id,
            layer,
            participant: from,
            stroke: stroke.clone(),
        });
        let drawn = Drawn {
            layer,
            author: user.clone(),
            name,
            staff,
            handle,
            stroke,
            undone: false,
        };
        if laser {
            // A flash: shown once to everyone who may see it, never kept.
            for to in self.admitted_ids() {
                if let Some(mark) = self.mark_for(to, id, &drawn) {
                    self.send(to, ServerMsg::Mark(mark));
                }
            }
            return Ok(());
        }
        // A new mark ends what could be put back.
        for old in self.annotation.redo.remove(&user).unwrap_or_default() {
            self.annotation.marks.remove(&old);
        }
        if drawn.stroke.tool.freehand() {
            self.annotation.latest.insert(user, id);
        } else {
            self.annotation.latest.remove(&user);
        }
        self.annotation.marks.insert(id, drawn);
        self.annotation.changed.insert(id);
        Ok(())
    }

    pub(crate) fn extend_mark(
        &mut self,
        now: Instant,
        from: ParticipantId,
        points: Vec<Point>,
    ) -> Result<(), ErrorCode> {
        let user = self.may_annotate(from)?;
        let id = *self
            .annotation
            .latest
            .get(&user)
            .ok_or(ErrorCode::InvalidState)?;
        let len = match self.annotation.marks.get(&id) {
            Some(d) if !d.undone => d.stroke.points.len(),
            _ => return Err(ErrorCode::InvalidState),
        };
        if points.is_empty() || len + points.len() > MAX_POINTS {
            return Err(ErrorCode::BadMark);
        }
        check_points(&points).map_err(|_| ErrorCode::BadMark)?;
        self.annotation_rate(now, &user)?;
        self.record(LessonEvent::MarkExtended {
            mark: id,
            points: points.clone(),
        });
        if let Some(d) = self.annotation.marks.get_mut(&id) {
            d.stroke.points.extend(points);
        }
        self.annotation.changed.insert(id);
        Ok(())
    }

    pub(crate) fn undo_mark(&mut self, now: Instant, from: ParticipantId) -> Result<(), ErrorCode> {
        let user = self.may_annotate(from)?;
        self.annotation_rate(now, &user)?;
        let last = self
            .annotation
            .marks
            .iter()
            .rev()
            .find(|(_, d)| d.author == user && !d.undone)
            .map(|(id, _)| *id);
        // Nothing of one's own to take back: nothing to do.
        let Some(id) = last else {
            return Ok(());
        };
        self.record(LessonEvent::MarkUndone {
            mark: id,
            participant: from,
        });
        if let Some(d) = self.annotation.marks.get_mut(&id) {
            d.undone = true;
        }
        self.annotation
            .redo
            .entry(user.clone())
            .or_default()
            .push(id);
        self.annotation.latest.remove(&user);
        self.annotation.changed.insert(id);
        Ok(())
    }

    pub(crate) fn redo_mark(&mut self, now: Instant, from: ParticipantId) -> Result<(), ErrorCode> {
        let user = self.may_annotate(from)?;
        self.annotation_rate(now, &user)?;
        let stack = self.annotation.redo.entry(user).or_default();
        let marks = &self.annotation.marks;
        // Undone marks whose share has ended are gone: skip them.
        let mut found = None;
        while let Some(id) = stack.pop() {
            if marks.get(&id).is_some_and(|d| d.undone) {
                found = Some(id);
                break;
            }
        }
        let Some(id) = found else {
            return Ok(());
        };
        self.record(LessonEvent::MarkRedone {
            mark: id,
            participant: from,
        });
        if let Some(d) = self.annotation.marks.get_mut(&id) {
            d.undone = false;
        }
        self.annotation.changed.insert(id);
        Ok(())
    }

    pub(crate) fn erase_mark(
        &mut self,
        now: Instant,
        from: ParticipantId,
        mark: MarkId,
    ) -> Result<(), ErrorCode> {
        let user = self.may_annotate(from)?;
        match self.annotation.marks.get(&mark) {
            Some(d) if d.undone => return Err(ErrorCode::InvalidState),
            Some(d) if d.author != user => return Err(ErrorCode::Forbidden),
            Some(_) => {}
            None => return Err(ErrorCode::InvalidState),
        }
        self.annotation_rate(now, &user)?;
        self.record(LessonEvent::MarkErased {
            mark,
            participant: from,
        });
        self.annotation.marks.remove(&mark);
        if self.annotation.latest.get(&user) == Some(&mark) {
            self.annotation.latest.remove(&user);
        }
        self.annotation.changed.insert(mark);
        Ok(())
    }

    /// Staff clear every mark, or one person's (by the handle their marks carry).
    pub(crate) fn clear_marks(
        &mut self,
        by: ParticipantId,
        author: Option<AuthorHandle>,
    ) -> Result<(), ErrorCode> {
        let whose = match author {
            None => None,
            Some(h) => Some(
                self.annotation
                    .handles
                    .iter()
                    .find(|(_, v)| **v == h)
                    .map(|(u, _)| u.clone())
                    .ok_or(ErrorCode::UnknownParticipant)?,
            ),
        };
        let ids: Vec<MarkId> = self
            .annotation
            .marks
            .iter()
            .filter(|(_, d)| whose.as_ref().is_none_or(|u| d.author == *u))
            .map(|(id, _)| *id)
            .collect();
        self.remove_marks(ids, Some(by));
        Ok(())
    }

    pub(crate) fn isolate_marks(&mut self, by: ParticipantId, isolated: bool) {
        if self.annotation.isolated != isolated {
            self.annotation.isolated = isolated;
            self.annotation.resync = true;
            self.record(LessonEvent::MarksIsolated { isolated, by });
        }
    }

    /// Removes marks, recording the clear (`by` absent: the share ended).
    fn remove_marks(&mut self, ids: Vec<MarkId>, by: Option<ParticipantId>) {
        for id in &ids {
            self.annotation.marks.remove(id);
            self.annotation.changed.insert(*id);
        }
        let marks = &self.annotation.marks;
        self.annotation
            .latest
            .retain(|_, id| marks.contains_key(id));
        for stack in self.annotation.redo.values_mut() {
            stack.retain(|id| marks.contains_key(id));
        }
        if by.is_some() || !ids.is_empty() {
            self.record(LessonEvent::MarksCleared { marks: ids, by });
        }
    }

    /// The mark as `to` may see it, or `None` if they may not.
    fn mark_for(&self, to: ParticipantId, id: MarkId, d: &Drawn) -> Option<Mark> {
        let x = self.participants.get(&to)?;
        if x.presence != Presence::Admitted || d.undone {
            return None;
        }
        let pupil = x.role == Role::Pupil;
        let mine = d.author == x.user;
        if pupil && self.annotation.isolated && !d.staff && !mine {
            return None;
        }
        Some(Mark {
            id,
            layer: d.layer,
            author: d.handle,
            staff: d.staff,
            mine,
            name: (!pupil || d.staff).then(|| d.name.clone()),
            stroke: d.stroke.clone(),
        })
    }

    /// Clears layers whose share ended, then sends each admitted
    /// participant the difference between the marks they may see and those
    /// they were sent.
    pub(crate) fn settle_marks(&mut self) {
        let ended: Vec<MarkId> = self
            .annotation
            .marks
            .iter()
            .filter(|(_, d)| !self.share_live(d.layer))
            .map(|(id, _)| *id)
            .collect();
        if self.ended {
            // Everything ended with the lesson; `Ended` is the last record.
            self.annotation.marks.clear();
            self.annotation.latest.clear();
            self.annotation.redo.clear();
        } else if !ended.is_empty() {
            self.remove_marks(ended, None);
        }
        let changed = std::mem::take(&mut self.annotation.changed);
        let resync = std::mem::take(&mut self.annotation.resync);
        let admitted = self.admitted_ids();
        self.annotation.seen.retain(|p, _| admitted.contains(p));
        for to in admitted {
            let seen = self.annotation.seen.remove(&to);
            let full = resync || seen.is_none();
            let mut seen = seen.unwrap_or_default();
            let ids: BTreeSet<MarkId> = if full {
                seen.keys()
                    .chain(self.annotation.marks.keys())
                    .copied()
                    .collect()
            } else {
                changed.clone()
            };
            let mut gone = Vec::new();
            let mut sends = Vec::new();
            for id in ids {
                let view = self
                    .annotation
                    .marks
                    .get(&id)
                    .and_then(|d| self.mark_for(to, id, d));
                match (seen.get(&id).copied(), view) {
                    (None, Some(mark)) => {
                        seen.insert(id, mark.stroke.points.len());
                        sends.push(ServerMsg::Mark(mark));
                    }
                    (Some(n), Some(mark)) if mark.stroke.points.len() > n => {
                        seen.insert(id, mark.stroke.points.len());
                        sends.push(ServerMsg::MarkExtended {
                            id,
                            points: mark.stroke.points[n..].to_vec(),
                        });
                    }
                    (Some(_), None) => {
                        seen.remove(&id);
                        gone.push(id);
                    }
                    _ => {}
                }
            }
            self.annotation.seen.insert(to, seen);
            if !gone.is_empty() {
                self.send(to, ServerMsg::Unmark { ids: gone });
            }
            for m in sends {
                self.send(to, m);
            }
        }
    }

    /// Marks kept now, undone ones included (tests and metrics).
    pub fn marks_kept(&self) -> usize {
        self.annotation.marks.len()
    }

    /// Whether pupils see only staff marks and their own.
    pub fn marks_isolated(&self) -> bool {
        self.annotation.isolated
    }
}
