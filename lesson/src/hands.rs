//! Raised hands: a pupil raises and lowers their own hand, staff lower one
//! hand or all, and staff choose whether pupils see whose hands are up.
//! The queue keeps the order hands went up in; every change is recorded.
//!
//! Only admitted pupils have hands: a waiting pupil is refused before it
//! gets here (`dispatch`), staff and observers are refused `forbidden`, and
//! a pupil who leaves, is removed or is no longer admitted drops out of the
//! queue when the lesson settles. It must never show a pupil another
//! pupil's hand while hands are hidden: what each participant is told is
//! [`Lesson::hands_for`], sent by `settle`.

use chaperone_protocol::event::LessonEvent;
use chaperone_protocol::signal::{ErrorCode, Target};
use chaperone_protocol::{ParticipantId, Role};

use crate::{Lesson, Presence};

impl Lesson {
    /// A pupil raises (`raised`) or lowers their own hand.
    pub(crate) fn raise_hand(
        &mut self,
        from: ParticipantId,
        raised: bool,
    ) -> Result<(), ErrorCode> {
        if self.role_of(from) != Some(Role::Pupil) {
            return Err(ErrorCode::Forbidden);
        }
        let up = self.hands.contains(&from);
        if raised && !self.held.is_empty() {
            return Err(ErrorCode::Held);
        }
        match (raised, up) {
            (true, false) => {
                self.hands.push(from);
                self.record(LessonEvent::HandRaised { participant: from });
            }
            (false, true) => {
                self.hands.retain(|p| *p != from);
                self.record(LessonEvent::HandLowered {
                    participant: from,
                    by: None,
                });
            }
            // Raising a raised hand, or lowering a lowered one, changes nothing.
            _ => {}
        }
        Ok(())
    }

    /// Staff lower one pupil's hand, or every raised hand.
    pub(crate) fn lower_hand(
        &mut self,
        by: ParticipantId,
        target: Target,
    ) -> Result<(), ErrorCode> {
        let pupils = self.pupils(target)?;
        for p in pupils {
            if self.hands.contains(&p) {
                self.hands.retain(|h| *h != p);
                self.record(LessonEvent::HandLowered {
                    participant: p,
                    by: Some(by),
                });
            }
        }
        Ok(())
    }

    /// Staff show pupils whose hands are up, or hide it.
    pub(crate) fn show_hands(&mut self, by: ParticipantId, visible: bool) {
        if self.hands_visible != visible {
            self.hands_visible = visible;
            self.record(LessonEvent::HandsShown { visible, by });
        }
    }

    /// Drops from the queue anyone who is no longer an admitted pupil
    /// (left, removed, blocked, or the lesson ended). Their `Left`,
    /// `Removed` or `Ended` event already says why.
    pub(crate) fn settle_hands(&mut self) {
        let participants = &self.participants;
        let ended = self.ended;
        self.hands.retain(|p| {
            !ended
                && participants
                    .get(p)
                    .is_some_and(|x| x.role == Role::Pupil && x.presence == Presence::Admitted)
        });
    }

    /// The raised hands `to` may see: all of them for staff and observers,
    /// and for pupils while hands are shown; otherwise only their own.
    pub(crate) fn hands_for(&self, to: ParticipantId, role: Role) -> Vec<ParticipantId> {
        if role != Role::Pupil || self.hands_visible {
            self.hands.clone()
        } else {
            self.hands.iter().copied().filter(|p| *p == to).collect()
        }
    }

    /// Raised hands, oldest first (every one).
    pub fn raised_hands(&self) -> &[ParticipantId] {
        &self.hands
    }
}
