//! The rules that hold a lesson to account over time: pupils are held when
//! no staff member has been present for the supervision grace, or the
//! recorder has been lost for the recorder grace; a teacher's camera off for
//! its grace is a compliance event; visitor grants and the reconnect grace
//! run out. It owns the deadlines (with `window.rs`'s close and warning):
//! [`Lesson::next_deadline`] names the earliest, and every deadline it names
//! is acted on by `expire` or the settle step when the shell calls
//! [`Lesson::handle_timeout`].
//!
//! It must never release a hold early, and never let a grace that has run
//! out go unnoticed because the shell's timer has not fired yet: every input
//! applies expiries before its own rules.

use std::time::{Duration, Instant};

use chaperone_protocol::event::{Compliance, HoldReason, LessonEvent};
use chaperone_protocol::signal::{Farewell, ServerMsg};
use chaperone_protocol::{MediaSource, ParticipantId, Role};

use crate::Lesson;

impl Lesson {
    /// The recorder feed became attached (acknowledged) or was lost.
    pub fn handle_recorder(&mut self, now: Instant, attached: bool) {
        self.expire(now);
        if attached != self.recorder_attached {
            self.recorder_attached = attached;
            self.recorder_lost_since = (!attached).then_some(now);
            self.record(LessonEvent::Recorder { attached });
        }
        self.settle(now);
    }

    /// Time passed: apply graces and expiries due by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.expire(now);
        self.settle(now);
    }

    /// Applies graces and expiries due by `now`.
    pub(crate) fn expire(&mut self, now: Instant) {
        let grace = self.config.reconnect_grace;
        self.departed
            .retain(|_, d| now.saturating_duration_since(d.left_at) < grace);
        let expired: Vec<ParticipantId> = self
            .participants
            .iter()
            .filter(|(_, x)| x.access_until.is_some_and(|until| until <= now))
            .map(|(id, _)| *id)
            .collect();
        for p in expired {
            self.drop_participant(p, Some(Farewell::AccessEnded));
        }
        // A grace may have run out since the last input without the shell's
        // timer firing first: the rules of this input must see the hold.
        self.update_holds(now);
        // So may the lesson's time: nothing is joined or done after it.
        self.expire_window(now);
    }

    /// Brings the supervision clock and the holds up to `now`.
    pub(crate) fn update_holds(&mut self, now: Instant) {
        if self.staff_present() {
            self.unsupervised_since = None;
        } else if self.unsupervised_since.is_none() {
            self.unsupervised_since = Some(now);
        }
        let held = self.hold_reasons(now);
        if held != self.held {
            self.held = held.clone();
            self.record(LessonEvent::Hold { reasons: held });
        }
    }

    fn hold_reasons(&self, now: Instant) -> Vec<HoldReason> {
        let mut reasons = Vec::new();
        let overdue = |since: Option<Instant>, grace: Duration| {
            since.is_some_and(|s| now.saturating_duration_since(s) >= grace)
        };
        if overdue(self.unsupervised_since, self.config.supervision_grace) {
            reasons.push(HoldReason::Unsupervised);
        }
        if overdue(self.recorder_lost_since, self.config.recorder_grace) {
            reasons.push(HoldReason::RecordingLost);
        }
        reasons
    }

    fn staff_present(&self) -> bool {
        self.participants.values().any(|x| x.role.is_staff())
    }

    /// Keeps a teacher's camera-off clock in step with their camera.
    pub(crate) fn camera_check(&mut self, now: Instant, p: ParticipantId) {
        let Some(x) = self.participants.get_mut(&p) else {
            return;
        };
        if x.role != Role::Teacher {
            return;
        }
        if x.on.contains(&MediaSource::Camera) {
            x.camera_off_since = None;
            if std::mem::take(&mut x.camera_flagged) {
                self.record(LessonEvent::Compliance {
                    participant: p,
                    kind: Compliance::TeacherCameraOn,
                });
            }
        } else if x.camera_off_since.is_none() {
            x.camera_off_since = Some(now);
        }
    }

    /// Flags each teacher whose camera has been off for the grace: a
    /// compliance event, and a banner to them.
    pub(crate) fn flag_overdue_cameras(&mut self, now: Instant) {
        let grace = self.config.teacher_camera_grace;
        let overdue: Vec<ParticipantId> = self
            .participants
            .iter()
            .filter(|(_, x)| {
                !x.camera_flagged
                    && x.camera_off_since
                        .is_some_and(|s| now.saturating_duration_since(s) >= grace)
            })
            .map(|(id, _)| *id)
            .collect();
        for p in overdue {
            if let Some(x) = self.participants.get_mut(&p) {
                x.camera_flagged = true;
            }
            self.record(LessonEvent::Compliance {
                participant: p,
                kind: Compliance::TeacherCameraOff,
            });
            self.send(
                p,
                ServerMsg::Banner {
                    kind: Compliance::TeacherCameraOff,
                },
            );
        }
    }

    /// The earliest instant a grace or an expiry falls due (`None` once the
    /// lesson has ended): what [`Lesson::poll_output`] hands the shell.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let mut deadlines = Vec::new();
        if !self.held.contains(&HoldReason::Unsupervised) {
            deadlines.extend(
                self.unsupervised_since
                    .map(|s| s + self.config.supervision_grace),
            );
        }
        if !self.held.contains(&HoldReason::RecordingLost) {
            deadlines.extend(
                self.recorder_lost_since
                    .map(|s| s + self.config.recorder_grace),
            );
        }
        for x in self.participants.values() {
            if !x.camera_flagged {
                deadlines.extend(
                    x.camera_off_since
                        .map(|s| s + self.config.teacher_camera_grace),
                );
            }
            deadlines.extend(x.access_until);
        }
        deadlines.extend(
            self.departed
                .values()
                .map(|d| d.left_at + self.config.reconnect_grace),
        );
        deadlines.extend(self.window_deadlines());
        if self.ended {
            return None;
        }
        deadlines.into_iter().min()
    }
}
