//! Client messages: [`Lesson::handle_message`] routes each to the verb that
//! handles it, after the gates every message passes (the sender is present,
//! the lesson has not ended, a waiting pupil may only wait or report a
//! concern, staff verbs come from staff). SDP is passed to the media plane
//! only from admitted participants.
//!
//! It must never hand a message to its verb before every gate has passed,
//! and never refuse one without a typed error to the sender and a record of
//! the refusal.

use std::time::Instant;

use chaperone_protocol::ParticipantId;
use chaperone_protocol::event::LessonEvent;
use chaperone_protocol::signal::{ClientMsg, ErrorCode, ServerMsg};

use crate::{Lesson, Output, Presence};

impl Lesson {
    /// A message from a present participant. Refusals are answered with a
    /// typed error to the sender and recorded as evidence.
    pub fn handle_message(&mut self, now: Instant, from: ParticipantId, msg: ClientMsg) {
        self.expire(now);
        if self.participants.contains_key(&from) {
            let action = msg.name();
            if let Err(code) = self.dispatch(now, from, msg) {
                self.send(
                    from,
                    ServerMsg::Error {
                        code,
                        action: Some(action.to_owned()),
                    },
                );
                self.record(LessonEvent::Refused {
                    participant: from,
                    action: action.to_owned(),
                    code,
                });
            }
        }
        self.settle(now);
    }

    fn dispatch(
        &mut self,
        now: Instant,
        from: ParticipantId,
        msg: ClientMsg,
    ) -> Result<(), ErrorCode> {
        let (role, presence) = match self.participants.get(&from) {
            Some(p) => (p.role, p.presence),
            None => return Err(ErrorCode::UnknownParticipant),
        };
        if self.ended {
            return Err(ErrorCode::Ended);
        }
        // A waiting pupil may do nothing but wait, or report a concern.
        if presence == Presence::Waiting
            && !matches!(
                msg,
                ClientMsg::ReportConcern { .. } | ClientMsg::Hello { .. }
            )
        {
            return Err(ErrorCode::NotAdmitted);
        }
        let staff_only = matches!(
            msg,
            ClientMsg::Admit { .. }
                | ClientMsg::AdmitAll
                | ClientMsg::Deny { .. }
                | ClientMsg::Remove { .. }
                | ClientMsg::Reallow { .. }
                | ClientMsg::Lock { .. }
                | ClientMsg::SetPermission { .. }
                | ClientMsg::TurnOff { .. }
                | ClientMsg::SetChatPolicy { .. }
                | ClientMsg::FlagIncident { .. }
                | ClientMsg::EndLesson
                | ClientMsg::LowerHand { .. }
                | ClientMsg::ShowHands { .. }
                | ClientMsg::ClearMarks { .. }
                | ClientMsg::IsolateMarks { .. }
        );
        if staff_only && !role.is_staff() {
            return Err(ErrorCode::Forbidden);
        }
        match msg {
            // The handshake is the shell's; a repeated hello changes nothing.
            ClientMsg::Hello { .. } => Ok(()),
            ClientMsg::Admit { participant } => self.admit(from, participant),
            ClientMsg::AdmitAll => self.admit_all(from),
            ClientMsg::Deny { participant } => self.deny(from, participant),
            ClientMsg::Remove { participant } => self.remove(from, participant),
            ClientMsg::Reallow { participant } => self.reallow(from, participant),
            ClientMsg::Lock { locked } => {
                self.lock(from, locked);
                Ok(())
            }
            ClientMsg::SetPermission {
                target,
                permission,
                granted,
            } => self.set_permission(from, target, permission, granted),
            ClientMsg::TurnOff { target, source } => self.turn_off(from, target, source),
            ClientMsg::SetChatPolicy {
                public_chat,
                private_chat,
            } => {
                self.set_chat_policy(from, public_chat, private_chat);
                Ok(())
            }
            ClientMsg::FlagIncident { note } => self.flag_incident(from, &note),
            ClientMsg::EndLesson => {
                self.end(from);
                Ok(())
            }
            ClientMsg::SetEngagement { engagement } => self.set_engagement(now, from, engagement),
            ClientMsg::SetSource { source, on } => self.set_source(now, from, source, on),
            ClientMsg::Chat { to, text } => self.chat(now, from, to, text),
            ClientMsg::ReportConcern { text } => self.report_concern(now, from, role, &text),
            ClientMsg::RaiseHand { raised } => self.raise_hand(from, raised),
            ClientMsg::LowerHand { target } => self.lower_hand(from, target),
            ClientMsg::ShowHands { visible } => {
                self.show_hands(from, visible);
                Ok(())
            }
            ClientMsg::Draw { layer, stroke } => self.draw(now, from, layer, stroke),
            ClientMsg::ExtendMark { points } => self.extend_mark(now, from, points),
            ClientMsg::UndoMark => self.undo_mark(now, from),
            ClientMsg::RedoMark => self.redo_mark(now, from),
            ClientMsg::EraseMark { mark } => self.erase_mark(now, from, mark),
            ClientMsg::ClearMarks { author } => self.clear_marks(from, author),
            ClientMsg::IsolateMarks { isolated } => {
                self.isolate_marks(from, isolated);
                Ok(())
            }
            ClientMsg::Offer { sdp } => {
                self.outputs.push_back(Output::MediaOffer {
                    participant: from,
                    sdp,
                });
                Ok(())
            }
            ClientMsg::Answer { sdp } => {
                self.outputs.push_back(Output::MediaAnswer {
                    participant: from,
                    sdp,
                });
                Ok(())
            }
            // `ClientMsg` is non-exhaustive: a message this core does not know is refused.
            _ => Err(ErrorCode::Malformed),
        }
    }
}
