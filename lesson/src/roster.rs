//! Who is in the lesson: joining (the role each person is entitled to, and
//! every refusal), the waiting room and the teacher verbs on it (admit, deny,
//! remove, re-allow, lock), leaving and the reconnect grace ([`Departed`]),
//! blocks, and the end of the lesson (by its staff, or by the server when
//! its time runs out: `window.rs`).
//!
//! It must never admit a pupil to a lesson no recorder is attached to, never
//! let a blocked or removed user back in, and never tell someone who is not
//! on the roster more than it would tell them about a lesson that does not
//! exist. A participant taken out stops sending and receiving media before
//! anything else is said to them.

use std::collections::BTreeSet;
use std::time::Instant;

use chaperone_protocol::event::LessonEvent;
use chaperone_protocol::signal::{ErrorCode, Farewell, PROTOCOL_VERSION, ServerMsg};
use chaperone_protocol::{ParticipantId, Role, TrackId, UserRef};

use crate::{JoinRequest, Lesson, Output, Participant, Presence};

/// A participant who dropped and may come back within the reconnect grace.
#[derive(Clone, Debug)]
pub(crate) struct Departed {
    pub(crate) left_at: Instant,
    pub(crate) admitted: bool,
}

impl Lesson {
    /// Someone authenticated asks to join. Returns their participant id, or a
    /// refusal. `NotFound` is the answer for anyone not on the roster, exactly
    /// as for a lesson that does not exist.
    pub fn handle_join(
        &mut self,
        now: Instant,
        req: JoinRequest,
    ) -> Result<ParticipantId, ErrorCode> {
        self.expire(now);
        let user = req.user.clone();
        let result = self.join(now, req);
        if let Err(code) = result {
            // Kept as evidence: a blocked or removed pupil trying again, a
            // stranger probing. Only the recording sees it; the answer to the
            // person is the same as for a lesson that does not exist.
            self.record(LessonEvent::JoinRefused { user, code });
        }
        self.settle(now);
        result
    }

    fn join(&mut self, now: Instant, req: JoinRequest) -> Result<ParticipantId, ErrorCode> {
        let role = self.role_for(now, &req).ok_or(ErrorCode::NotFound)?;
        if self.ended {
            return Err(ErrorCode::Ended);
        }
        if self.blocked.contains(&req.user) {
            return Err(ErrorCode::Blocked);
        }
        if role == Role::Pupil && self.removed.values().any(|u| *u == req.user) {
            return Err(ErrorCode::Removed);
        }

        // The same person from a second connection replaces the first. Decide
        // first, so that a refused join never drops the connection it would
        // have replaced.
        let present = self.by_user.get(&req.user).copied();
        let was_admitted = match present {
            Some(old) => self.is_admitted(old),
            None => self.departed.get(&req.user).is_some_and(|d| d.admitted),
        };
        // Admitted once (under recording), admitted again: a pupil back
        // within the reconnect grace, or after the lesson moved to another
        // node, is not sent to the waiting room, nor refused by the lock.
        // While the recording is being re-attached the recorder grace and
        // its hold apply to them as to everyone present.
        let readmit = was_admitted;
        // The lock closes the waiting room to new arrivals; a pupil whose
        // connection dropped (admitted or waiting, within the reconnect
        // grace, or restored from a snapshot on another node) is not one.
        // A second device of a pupil still waiting is.
        let returning = was_admitted || self.departed.contains_key(&req.user);
        if role == Role::Pupil && self.locked && !returning {
            return Err(ErrorCode::Locked);
        }
        self.departed.remove(&req.user);
        if let Some(old) = present {
            self.drop_participant(old, Some(Farewell::Replaced));
        }

        let id = ParticipantId(self.next_id);
        self.next_id += 1;
        let presence = if role != Role::Pupil || readmit {
            Presence::Admitted
        } else {
            Presence::Waiting
        };
        if role == Role::Pupil {
            self.permissions
                .entry(req.user.clone())
                .or_insert(self.defaults);
        }
        let teacher = role == Role::Teacher;
        self.participants.insert(
            id,
            Participant {
                user: req.user.clone(),
                name: req.name.clone(),
                role,
                presence,
                on: BTreeSet::new(),
                camera_off_since: teacher.then_some(now),
                camera_flagged: false,
                access_until: match role {
                    Role::Observer if !req.account.safeguarding_observer => {
                        req.account.visitor_until
                    }
                    _ => None,
                },
                sent_roster: 0,
                sent_waiting: 0,
                sent_status: None,
                sent_you: None,
                sent_hands: Some(Vec::new()),
                sent_closing: None,
            },
        );
        self.by_user.insert(req.user.clone(), id);
        self.record(LessonEvent::Joined {
            participant: id,
            user: req.user,
            name: req.name,
            role,
        });
        self.send(
            id,
            ServerMsg::Welcome {
                version: PROTOCOL_VERSION,
                you: id,
                role,
            },
        );
        match presence {
            Presence::Waiting => {
                self.record(LessonEvent::Waiting { participant: id });
                self.send(
                    id,
                    ServerMsg::Waiting {
                        locked: self.locked,
                    },
                );
            }
            Presence::Admitted => self.send(id, ServerMsg::Admitted),
        }
        Ok(id)
    }

    /// Which lesson role `req` is entitled to, if any.
    fn role_for(&self, now: Instant, req: &JoinRequest) -> Option<Role> {
        let a = &req.account;
        if a.staff && self.setup.teachers.contains(&req.user) {
            Some(Role::Teacher)
        } else if a.staff && self.setup.assistants.contains(&req.user) {
            Some(Role::Assistant)
        } else if !a.pupil_classes.is_empty()
            && (a.pupil_classes.contains(&self.setup.class)
                || self.setup.extra_pupils.contains(&req.user))
        {
            Some(Role::Pupil)
        } else if a.safeguarding_observer || a.visitor_until.is_some_and(|until| until > now) {
            Some(Role::Observer)
        } else {
            None
        }
    }

    /// A participant's connection ended. An admitted participant may return
    /// within the reconnect grace without waiting again.
    pub fn handle_leave(&mut self, now: Instant, p: ParticipantId) {
        self.expire(now);
        if let Some(part) = self.participants.get(&p) {
            let departed = Departed {
                left_at: now,
                admitted: part.presence == Presence::Admitted,
            };
            let user = part.user.clone();
            self.drop_participant(p, None);
            self.departed.insert(user, departed);
        }
        self.settle(now);
    }

    /// A user was blocked everywhere: refuse them from now on and remove them
    /// at once if present.
    pub fn handle_block(&mut self, now: Instant, user: &UserRef) {
        self.expire(now);
        if self.blocked.insert(user.clone()) {
            self.departed.remove(user);
            if let Some(p) = self.by_user.get(user).copied() {
                self.drop_participant(p, Some(Farewell::Blocked));
                self.record(LessonEvent::Blocked { user: user.clone() });
            }
        }
        self.settle(now);
    }

    /// A block was lifted.
    pub fn handle_unblock(&mut self, now: Instant, user: &UserRef) {
        self.blocked.remove(user);
        self.handle_timeout(now);
    }

    fn waiting_pupil(&self, p: ParticipantId) -> Result<(), ErrorCode> {
        match self.participants.get(&p) {
            None => Err(ErrorCode::UnknownParticipant),
            Some(x) if x.presence != Presence::Waiting => Err(ErrorCode::InvalidState),
            Some(_) => Ok(()),
        }
    }

    pub(crate) fn admit(&mut self, by: ParticipantId, p: ParticipantId) -> Result<(), ErrorCode> {
        self.waiting_pupil(p)?;
        // Fail closed: nobody is admitted to a lesson that is not being recorded.
        if !self.recorder_attached {
            return Err(ErrorCode::NotRecording);
        }
        if let Some(x) = self.participants.get_mut(&p) {
            x.presence = Presence::Admitted;
        }
        self.record(LessonEvent::Admitted { participant: p, by });
        self.send(p, ServerMsg::Admitted);
        Ok(())
    }

    pub(crate) fn admit_all(&mut self, by: ParticipantId) -> Result<(), ErrorCode> {
        let waiting = self.waiting_ids();
        if !waiting.is_empty() && !self.recorder_attached {
            return Err(ErrorCode::NotRecording);
        }
        for p in waiting {
            self.admit(by, p)?;
        }
        Ok(())
    }

    pub(crate) fn deny(&mut self, by: ParticipantId, p: ParticipantId) -> Result<(), ErrorCode> {
        self.waiting_pupil(p)?;
        self.record(LessonEvent::Denied { participant: p, by });
        self.drop_participant(p, Some(Farewell::Denied));
        Ok(())
    }

    pub(crate) fn remove(&mut self, by: ParticipantId, p: ParticipantId) -> Result<(), ErrorCode> {
        let user = match self.participants.get(&p) {
            None => return Err(ErrorCode::UnknownParticipant),
            Some(x) if x.role != Role::Pupil => return Err(ErrorCode::Forbidden),
            Some(x) => x.user.clone(),
        };
        self.record(LessonEvent::Removed { participant: p, by });
        self.drop_participant(p, Some(Farewell::Removed));
        self.departed.remove(&user);
        self.removed.insert(p, user);
        Ok(())
    }

    pub(crate) fn reallow(&mut self, by: ParticipantId, p: ParticipantId) -> Result<(), ErrorCode> {
        let user = self
            .removed
            .remove(&p)
            .ok_or(ErrorCode::UnknownParticipant)?;
        self.record(LessonEvent::Reallowed { user, by });
        Ok(())
    }

    /// Locks or unlocks the waiting room. Those waiting are told, so they
    /// know whether to keep waiting.
    pub(crate) fn lock(&mut self, by: ParticipantId, locked: bool) {
        if self.locked != locked {
            self.locked = locked;
            self.record(LessonEvent::Locked { locked, by });
            for p in self.waiting_ids() {
                self.send(p, ServerMsg::Waiting { locked });
            }
        }
    }

    pub(crate) fn end(&mut self, by: ParticipantId) {
        self.ended = true;
        self.record(LessonEvent::Ended { by });
        let everyone: Vec<_> = self.participants.keys().copied().collect();
        for p in everyone {
            self.drop_participant(p, Some(Farewell::Ended));
        }
        self.departed.clear();
    }

    fn waiting_ids(&self) -> Vec<ParticipantId> {
        self.participants
            .iter()
            .filter(|(_, x)| x.presence == Presence::Waiting)
            .map(|(id, _)| *id)
            .collect()
    }

    pub(crate) fn admitted_ids(&self) -> Vec<ParticipantId> {
        self.participants
            .iter()
            .filter(|(_, x)| x.presence == Presence::Admitted)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Takes a participant out of the lesson, saying goodbye if `farewell` is
    /// given (a departure initiated by the lesson rather than the client).
    pub(crate) fn drop_participant(&mut self, p: ParticipantId, farewell: Option<Farewell>) {
        let Some(x) = self.participants.remove(&p) else {
            return;
        };
        if self.by_user.get(&x.user) == Some(&p) {
            self.by_user.remove(&x.user);
        }
        // Media stops before anything else is said.
        for source in &x.on {
            let track = TrackId::new(p, *source);
            if self.forwarding.remove(&track) {
                self.outputs.push_back(Output::Forward { track, on: false });
                self.record(LessonEvent::Forwarding { track, on: false });
            }
        }
        if self.receiving.remove(&p) {
            self.outputs.push_back(Output::Receive {
                participant: p,
                on: false,
            });
        }
        self.record(LessonEvent::Left { participant: p });
        if let Some(reason) = farewell {
            self.send(p, ServerMsg::Goodbye { reason });
            self.outputs.push_back(Output::Disconnect(p, reason));
        }
    }
}
