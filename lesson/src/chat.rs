//! What is said in a lesson besides media: public and private chat, the chat
//! policy and the per-person rate limit, pupils' concerns and staff's
//! incidents (both raised as alerts).
//!
//! Every chat message is recorded before it is delivered: nothing is said
//! that is not kept. A pupil must never reach another pupil or an observer
//! privately, never chat while held, and never get a fresh allowance by
//! reconnecting.

use std::time::Instant;

use chaperone_protocol::event::LessonEvent;
use chaperone_protocol::signal::{ErrorCode, ServerMsg};
use chaperone_protocol::{ParticipantId, Role};

use crate::{Lesson, Output, Presence, Record};

impl Lesson {
    fn check_text(&self, text: &str) -> Result<String, ErrorCode> {
        let trimmed = text.trim();
        if trimmed.is_empty() || trimmed.chars().count() > self.config.chat_max_chars {
            return Err(ErrorCode::BadText);
        }
        Ok(trimmed.to_owned())
    }

    /// A chat message, shown to others as it comes: as [`Self::check_text`],
    /// and refused if it holds a bidirectional control or another control
    /// character (a line break and a tab aside), which would make it read
    /// on their screens differently from what it holds. (Concerns and
    /// incidents are not refused for it: they go only to the safeguarding
    /// team, and a pupil's concern is never turned away for its characters.)
    fn check_chat(&self, text: &str) -> Result<String, ErrorCode> {
        let text = self.check_text(text)?;
        let shown = text.chars().all(|c| {
            !chaperone_protocol::text::is_bidi_control(c)
                && (!c.is_control() || c == '\n' || c == '\t')
        });
        if !shown {
            return Err(ErrorCode::BadText);
        }
        Ok(text)
    }

    /// Pupils may send `chat_rate` messages per window; the window is per
    /// person, so reconnecting does not reset it.
    fn rate_limit(&mut self, now: Instant, p: ParticipantId) -> Result<(), ErrorCode> {
        let Some(x) = self.participants.get(&p) else {
            return Err(ErrorCode::UnknownParticipant);
        };
        if x.role != Role::Pupil {
            return Ok(());
        }
        let log = self.chat_log.entry(x.user.clone()).or_default();
        while log
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.config.chat_window)
        {
            log.pop_front();
        }
        if log.len() >= self.config.chat_rate {
            return Err(ErrorCode::RateLimited);
        }
        log.push_back(now);
        Ok(())
    }

    pub(crate) fn chat(
        &mut self,
        now: Instant,
        from: ParticipantId,
        to: Option<ParticipantId>,
        text: String,
    ) -> Result<(), ErrorCode> {
        let sender = self
            .participants
            .get(&from)
            .map(|x| x.role)
            .ok_or(ErrorCode::UnknownParticipant)?;
        let pupil = sender == Role::Pupil;
        match to {
            None => {
                if sender == Role::Observer {
                    return Err(ErrorCode::Forbidden);
                }
                if pupil && !self.public_chat {
                    return Err(ErrorCode::PublicChatOff);
                }
            }
            Some(r) => {
                let recipient = match self.participants.get(&r) {
                    Some(x) if x.presence == Presence::Admitted && r != from => x.role,
                    _ => return Err(ErrorCode::UnknownParticipant),
                };
                match (sender, recipient) {
                    (Role::Pupil, Role::Pupil) => return Err(ErrorCode::PupilToPupil),
                    (Role::Pupil, Role::Observer) | (Role::Observer, Role::Pupil) => {
                        return Err(ErrorCode::Forbidden);
                    }
                    (Role::Pupil, _) if !self.private_chat => {
                        return Err(ErrorCode::PrivateChatOff);
                    }
                    _ => {}
                }
            }
        }
        if pupil && !self.held.is_empty() {
            return Err(ErrorCode::Held);
        }
        let text = self.check_chat(&text)?;
        self.rate_limit(now, from)?;

        // Recorded before it is delivered: nothing is said that is not kept.
        self.outputs.push_back(Output::Record(Record::Chat {
            from,
            to,
            text: text.clone(),
        }));
        let from_name = self
            .participants
            .get(&from)
            .map(|x| x.name.clone())
            .unwrap_or_default();
        let msg = ServerMsg::Chat {
            from,
            from_name,
            to,
            text,
        };
        let recipients: Vec<ParticipantId> = match to {
            Some(r) => vec![from, r],
            None => self.admitted_ids(),
        };
        for r in recipients {
            self.send(r, msg.clone());
        }
        Ok(())
    }

    /// Turns pupils' public or private chat on or off.
    pub(crate) fn set_chat_policy(
        &mut self,
        by: ParticipantId,
        public_chat: bool,
        private_chat: bool,
    ) {
        if (public_chat, private_chat) != (self.public_chat, self.private_chat) {
            self.public_chat = public_chat;
            self.private_chat = private_chat;
            self.record(LessonEvent::ChatPolicy {
                public_chat,
                private_chat,
                by,
            });
        }
    }

    /// A staff member flags an incident for the safeguarding team.
    pub(crate) fn flag_incident(&mut self, by: ParticipantId, note: &str) -> Result<(), ErrorCode> {
        let note = self.check_text(note)?;
        let event = LessonEvent::Incident { by, note };
        self.record(event.clone());
        self.outputs.push_back(Output::Alert(event));
        Ok(())
    }

    /// A pupil, admitted or waiting, reports a concern to the safeguarding team.
    pub(crate) fn report_concern(
        &mut self,
        now: Instant,
        from: ParticipantId,
        role: Role,
        text: &str,
    ) -> Result<(), ErrorCode> {
        if role != Role::Pupil {
            return Err(ErrorCode::Forbidden);
        }
        // Text first, as for chat: an empty concern does not use up
        // the pupil's allowance.
        let text = self.check_text(text)?;
        self.rate_limit(now, from)?;
        let event = LessonEvent::Concern {
            participant: from,
            text,
        };
        self.record(event.clone());
        self.outputs.push_back(Output::Alert(event));
        self.send(from, ServerMsg::ConcernReceived);
        Ok(())
    }
}
