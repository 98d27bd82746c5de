//! The lesson's window: the moment its time runs out (its end plus the
//! grace, or later if its staff extended it), which the shell works out from
//! the lesson's description and hands in with [`Lesson::handle_window`]; the
//! warning its staff get `close_warning` before it; and the end of the
//! lesson by the server when it comes, exactly as a teacher's "end lesson"
//! (everyone is said goodbye to, the recording is finished), recorded as
//! [`LessonEvent::TimeRanOut`] then [`LessonEvent::Ended`] by
//! [`ParticipantId::SERVER`].
//!
//! It must never end a lesson before its close as last handed in (an
//! extension that arrives in time always moves it), never warn anyone but
//! staff, and never let a close that has passed go unnoticed because the
//! shell's timer has not fired yet: `expire` applies it before any input's
//! own rules, so nobody joins or acts in a lesson whose time has run out.

use std::time::Instant;

use chaperone_protocol::ParticipantId;
use chaperone_protocol::event::LessonEvent;
use chaperone_protocol::signal::ServerMsg;

use crate::Lesson;

impl Lesson {
    /// The lesson's time runs out at `closes_at` (`None`: it has no close
    /// the server enforces). Called when the shell learns the lesson's
    /// window, and again whenever its staff extend it (the close moves
    /// later). A close that has already passed by the time this arrives
    /// ends the lesson: the deadline the lesson held came first.
    pub fn handle_window(&mut self, now: Instant, closes_at: Option<Instant>) {
        self.expire(now);
        if !self.ended {
            self.closes_at = closes_at;
        }
        // A close handed in that is already past ends the lesson now.
        self.expire_window(now);
        self.settle(now);
    }

    /// Ends the lesson if its time has run out by `now`.
    pub(crate) fn expire_window(&mut self, now: Instant) {
        if !self.ended && self.closes_at.is_some_and(|at| at <= now) {
            self.record(LessonEvent::TimeRanOut {});
            self.end(ParticipantId::SERVER);
        }
    }

    /// When staff are warned of the close at `at`.
    fn warn_at(&self, at: Instant) -> Instant {
        // An instant earlier than the clock can express is long past: the
        // warning is due at once, which settling has already done.
        at.checked_sub(self.config.close_warning).unwrap_or(at)
    }

    /// Warns each staff member present, once per close, when the close is
    /// within `close_warning`: those present when it comes near, those who
    /// join after, and everyone again when an extension moves the close
    /// but not out of the warning period.
    pub(crate) fn settle_closing(&mut self, now: Instant) {
        let Some(at) = self.closes_at else {
            return;
        };
        if self.ended || now < self.warn_at(at) {
            return;
        }
        let left = at.saturating_duration_since(now);
        let in_secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        let due: Vec<ParticipantId> = self
            .participants
            .iter()
            .filter(|(_, x)| x.role.is_staff() && x.sent_closing != Some(at))
            .map(|(id, _)| *id)
            .collect();
        for p in due {
            if let Some(x) = self.participants.get_mut(&p) {
                x.sent_closing = Some(at);
            }
            self.send(p, ServerMsg::Closing { in_secs });
        }
    }

    /// The close and, while a staff member present has not been warned of
    /// it, the warning: for [`Lesson::next_deadline`].
    pub(crate) fn window_deadlines(&self) -> impl Iterator<Item = Instant> {
        let close = self.closes_at.filter(|_| !self.ended);
        let warn = close.filter(|at| {
            self.participants
                .values()
                .any(|x| x.role.is_staff() && x.sent_closing != Some(*at))
        });
        close.into_iter().chain(warn.map(|at| self.warn_at(at)))
    }
}
