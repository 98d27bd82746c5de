//! The derivation after every input: holds and the teacher-camera rule
//! brought up to date, then the media plane (`forwarding.rs`), then what
//! each participant is told about the lesson (roster, waiting list, status,
//! their own permissions and sources), then the snapshot to persist. Each is
//! emitted only when it differs from what was last emitted.
//!
//! Every input ends with this step, and it is the only place that sends
//! roster, waiting-list, status and `You` messages or persists a snapshot:
//! the rules change state, this step reports it. It must never tell the
//! waiting room more than its own waiting status, nor anyone but staff the
//! waiting list.

use std::time::Instant;

use chaperone_protocol::signal::{LessonStatus, ParticipantInfo, ServerMsg, WaitingEntry};
use chaperone_protocol::{ParticipantId, Permissions, Role, TrackId};

use crate::{Lesson, Output, Participant, Presence};

impl Lesson {
    /// Recomputes everything derived from state and emits the differences:
    /// holds, forwarding, receiving, what each participant sees, the snapshot.
    pub(crate) fn settle(&mut self, now: Instant) {
        self.update_holds(now);
        self.flag_overdue_cameras(now);
        self.settle_media();
        self.settle_hands();
        self.settle_views();
        // Staff hear the lesson's time is running out (`window.rs`).
        self.settle_closing(now);
        // After the views, so a pupil learns marks are isolated before
        // other pupils' marks go.
        self.settle_marks();
        self.settle_snapshot();
    }

    /// What participants see: the roster, the waiting list (staff only),
    /// the lesson's status and their own state, each sent only when it
    /// changed since they were last told.
    fn settle_views(&mut self) {
        let roster: Vec<ParticipantInfo> = self
            .participants
            .iter()
            .filter(|(_, x)| x.presence == Presence::Admitted)
            .map(|(id, x)| self.info(*id, x))
            .collect();
        if roster != self.roster {
            self.roster = roster;
            self.roster_version += 1;
        }
        let waiting: Vec<WaitingEntry> = self
            .participants
            .iter()
            .filter(|(_, x)| x.presence == Presence::Waiting)
            .map(|(id, x)| WaitingEntry {
                id: *id,
                name: x.name.clone(),
            })
            .collect();
        if waiting != self.waiting {
            self.waiting = waiting;
            self.waiting_version += 1;
        }
        let status = self.status();
        let ids: Vec<ParticipantId> = self.participants.keys().copied().collect();
        for id in ids {
            let Some(x) = self.participants.get(&id) else {
                continue;
            };
            // The waiting room gets nothing but its own waiting status.
            if x.presence != Presence::Admitted {
                continue;
            }
            let you = {
                let info = self.info(id, x);
                ServerMsg::You {
                    permissions: info.permissions,
                    sources_on: info.sources_on,
                    forwarded: info.forwarded,
                }
            };
            let staff = x.role.is_staff();
            let mut sends = Vec::new();
            if x.sent_roster != self.roster_version {
                sends.push(ServerMsg::Roster {
                    participants: self.roster.clone(),
                });
            }
            if staff && x.sent_waiting != self.waiting_version {
                sends.push(ServerMsg::WaitingList {
                    waiting: self.waiting.clone(),
                });
            }
            if x.sent_status.as_ref() != Some(&status) {
                sends.push(ServerMsg::Status(status.clone()));
            }
            if x.sent_you.as_ref() != Some(&you) {
                sends.push(you.clone());
            }
            // After the status, so a client learns hands are hidden before
            // its list shrinks to its own hand.
            let hands = self.hands_for(id, x.role);
            if x.sent_hands.as_ref() != Some(&hands) {
                sends.push(ServerMsg::Hands {
                    raised: hands.clone(),
                });
            }
            if let Some(x) = self.participants.get_mut(&id) {
                x.sent_roster = self.roster_version;
                if staff {
                    x.sent_waiting = self.waiting_version;
                }
                x.sent_status = Some(status.clone());
                x.sent_you = Some(you);
                x.sent_hands = Some(hands);
            }
            for m in sends {
                self.send(id, m);
            }
        }
    }

    /// Persists the control state when it changed.
    fn settle_snapshot(&mut self) {
        let snapshot = self.snapshot();
        if self.persisted.as_ref() != Some(&snapshot) {
            self.persisted = Some(snapshot.clone());
            self.outputs.push_back(Output::Persist(snapshot));
        }
    }

    fn status(&self) -> LessonStatus {
        LessonStatus {
            recording: self.recorder_attached,
            held: self.held.clone(),
            locked: self.locked,
            observer_present: self.participants.values().any(|x| x.role == Role::Observer),
            public_chat: self.public_chat,
            private_chat: self.private_chat,
            hands_visible: self.hands_visible,
            marks_isolated: self.annotation.isolated,
        }
    }

    fn info(&self, id: ParticipantId, x: &Participant) -> ParticipantInfo {
        let permissions = match x.role {
            Role::Teacher | Role::Assistant => Permissions::ALL,
            Role::Observer => Permissions::NONE,
            Role::Pupil => self
                .permissions
                .get(&x.user)
                .copied()
                .unwrap_or(Permissions::NONE),
        };
        ParticipantInfo {
            id,
            name: x.name.clone(),
            role: x.role,
            permissions,
            sources_on: x.on.iter().copied().collect(),
            forwarded: x
                .on
                .iter()
                .copied()
                .filter(|s| self.forwarding.contains(&TrackId::new(id, *s)))
                .collect(),
        }
    }
}
