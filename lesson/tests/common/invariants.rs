//! The harness's own model of a lesson, and the safeguarding invariants.
//!
//! The model is built from the lesson's outputs alone: who is present and
//! admitted ([`Seen`]), the media plane, the recording, and the holds
//! ([`Class::expected_holds`]), re-derived from the harness's clock and its
//! own record of the recorder and of staff presence. Each output is checked
//! as it is applied, and after each input the media plane is compared with
//! the forwarding rule computed here, independently of the core. The lesson's
//! accessors (`held`, `is_forwarding`, ...) are only ever compared with the
//! model, never used to decide what is allowed: agreeing with the core by
//! asking it proves nothing.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chaperone_lesson::{Output, Record};
use chaperone_protocol::event::{HoldReason, LessonEvent};
use chaperone_protocol::signal::ServerMsg;
use chaperone_protocol::{MediaSource, ParticipantId, Permissions, Role, TrackId};

use super::{Class, MarkRec, Who, user};

/// What the harness believes about a present participant, from outputs alone.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Who they are.
    pub who: Who,
    /// Role from their `Welcome`.
    pub role: Role,
    /// Whether an `Admitted` has been sent to them.
    pub admitted: bool,
    /// The last `You` they were sent.
    pub permissions: Permissions,
    /// Sources on, from the last `You`.
    pub sources_on: BTreeSet<MediaSource>,
}

impl Class {
    /// The hold reasons the harness expects now, from its own model.
    pub fn expected_holds(&self) -> Vec<HoldReason> {
        let now = self.now();
        let over =
            |since: Option<Instant>, grace: Duration| since.is_some_and(|s| now >= s + grace);
        let mut v = Vec::new();
        if over(self.unsupervised_since, self.config.supervision_grace) {
            v.push(HoldReason::Unsupervised);
        }
        if over(self.recorder_lost_since, self.config.recorder_grace) {
            v.push(HoldReason::RecordingLost);
        }
        v
    }

    pub(super) fn drain(&mut self) {
        self.drain_with_joiner(None);
    }

    fn fail(&self, what: &str, out: &Output) -> ! {
        panic!(
            "SAFEGUARDING INVARIANT VIOLATED: {what}\n  output: {out:?}\n  at: +{:?}\n  present: {:?}\n  forwarded: {:?}\n  holds expected: {:?}, lesson: {:?}",
            self.offset,
            self.present,
            self.forwarded,
            self.expected_holds(),
            self.lesson.held()
        )
    }

    pub(super) fn drain_with_joiner(&mut self, joiner: Option<(ParticipantId, Who)>) {
        self.steps += 1;
        self.input_chat_records.clear();
        loop {
            let out = self.lesson.poll_output();
            if let Output::Timeout(at) = out {
                self.deadline = at;
                break;
            }
            self.apply(&out, joiner);
        }
        self.check_settled();
    }

    fn apply(&mut self, out: &Output, joiner: Option<(ParticipantId, Who)>) {
        let holds = self.expected_holds();
        match out {
            Output::Send(to, msg) => {
                if let ServerMsg::Welcome { you, role, .. } = msg {
                    let who = match joiner {
                        Some((p, who)) if p == *you && p == *to => who,
                        _ => self.fail("Welcome outside a join, or to the wrong id", out),
                    };
                    self.present.insert(
                        *you,
                        Seen {
                            who,
                            role: *role,
                            admitted: false,
                            permissions: Permissions::NONE,
                            sources_on: BTreeSet::new(),
                        },
                    );
                }
                let Some(seen) = self.present.get(to).cloned() else {
                    if self.leaving == Some(*to) && matches!(msg, ServerMsg::Goodbye { .. }) {
                        self.inbox.entry(*to).or_default().push(msg.clone());
                        return;
                    }
                    self.fail("message sent to someone not present", out);
                };
                let waiting_ok = matches!(
                    msg,
                    ServerMsg::Welcome { .. }
                        | ServerMsg::Waiting { .. }
                        | ServerMsg::Admitted
                        | ServerMsg::Goodbye { .. }
                        | ServerMsg::Error { .. }
                        | ServerMsg::ConcernReceived
                );
                if !seen.admitted && !waiting_ok {
                    self.fail(
                        "a waiting participant was sent more than its waiting status",
                        out,
                    );
                }
                let staff = seen.role.is_staff();
                match msg {
                    ServerMsg::Admitted => {
                        if let Some(s) = self.present.get_mut(to) {
                            s.admitted = true;
                        }
                    }
                    ServerMsg::WaitingList { .. } if !staff => {
                        self.fail("a non-staff participant was sent the waiting list", out)
                    }
                    ServerMsg::Banner { .. } if !staff => {
                        self.fail("a non-staff participant was sent a banner", out)
                    }
                    ServerMsg::Closing { .. } if !staff => {
                        self.fail("a non-staff participant was warned of the close", out)
                    }
                    ServerMsg::Closing { in_secs } => {
                        let now = self.now();
                        let due = self.closes_at.filter(|at| {
                            *at > now
                                && at.saturating_duration_since(now) <= self.config.close_warning
                        });
                        let Some(at) = due else {
                            self.fail("a close warning outside the warning period", out);
                        };
                        let left = at.saturating_duration_since(now);
                        if left.as_secs().abs_diff(*in_secs) > 1 {
                            self.fail("a close warning with the wrong time left", out);
                        }
                    }
                    ServerMsg::Hands { raised } => {
                        let pupils_only = raised.iter().all(|h| {
                            self.present
                                .get(h)
                                .is_some_and(|s| s.role == Role::Pupil && s.admitted)
                        });
                        if !pupils_only {
                            self.fail("a raised hand of someone who is not an admitted pupil", out);
                        }
                        let shown = self.last_status(*to).is_some_and(|s| s.hands_visible);
                        if seen.role == Role::Pupil && !shown && raised.iter().any(|h| h != to) {
                            self.fail(
                                "a pupil was shown another pupil's hand while hands are hidden",
                                out,
                            );
                        }
                    }
                    ServerMsg::Mark(m) => self.check_mark_sent(out, &seen, *to, m),
                    ServerMsg::MarkExtended { id, .. } if !self.marks.contains_key(id) => {
                        self.fail("an extension of a mark never recorded was sent", out);
                    }
                    ServerMsg::You {
                        permissions,
                        sources_on,
                        ..
                    } => {
                        if let Some(s) = self.present.get_mut(to) {
                            s.permissions = *permissions;
                            s.sources_on = sources_on.iter().copied().collect();
                        }
                    }
                    ServerMsg::Chat {
                        from,
                        to: priv_to,
                        text,
                        ..
                    } => {
                        let matching = self
                            .input_chat_records
                            .iter()
                            .filter(|(f, t, x)| f == from && t == priv_to && x == text)
                            .count();
                        if matching != 1 {
                            self.fail(
                                "a chat was delivered without exactly one record before it",
                                out,
                            );
                        }
                        let sender_role = self.present.get(from).map(|s| s.role);
                        if sender_role == Some(Role::Pupil) && !holds.is_empty() {
                            self.fail(
                                "a pupil's chat was delivered while pupils should be held",
                                out,
                            );
                        }
                        if let Some(r) = priv_to {
                            if *to != *from && *to != *r {
                                self.fail("a private chat was delivered to a third party", out);
                            }
                            let recipient_role = self.present.get(r).map(|s| s.role);
                            let roles = [sender_role, recipient_role];
                            if roles.contains(&Some(Role::Pupil)) {
                                let other = if sender_role == Some(Role::Pupil) {
                                    recipient_role
                                } else {
                                    sender_role
                                };
                                if !other.is_some_and(Role::is_staff) {
                                    self.fail(
                                        "a pupil's private chat was not with a staff member",
                                        out,
                                    );
                                }
                            }
                        } else if sender_role == Some(Role::Observer) {
                            self.fail("an observer posted in public chat", out);
                        }
                    }
                    _ => {}
                }
                self.inbox.entry(*to).or_default().push(msg.clone());
            }
            Output::Forward { track, on } => {
                if *on {
                    let Some(owner) = self.present.get(&track.participant).cloned() else {
                        self.fail("forwarding a track of someone not present", out);
                    };
                    match owner.role {
                        Role::Observer => self.fail("an observer's track is forwarded", out),
                        Role::Pupil => {
                            if !owner.admitted {
                                self.fail("a waiting pupil's track is forwarded", out);
                            }
                            if !holds.is_empty() {
                                self.fail(
                                    "a pupil's track is forwarded while unsupervised or unrecorded",
                                    out,
                                );
                            }
                            if !self.recorder_attached && self.recorder_lost_since.is_none() {
                                self.fail(
                                    "a pupil's track is forwarded with no recorder ever attached",
                                    out,
                                );
                            }
                        }
                        _ => {}
                    }
                    if self.ended {
                        self.fail("forwarding after the lesson ended", out);
                    }
                    if !self.forwarded.insert(*track) {
                        self.fail("Forward on for a track already forwarded", out);
                    }
                } else if !self.forwarded.remove(track) {
                    self.fail("Forward off for a track not forwarded", out);
                }
            }
            Output::Receive { participant, on } => {
                if *on {
                    match self.present.get(participant) {
                        Some(s) if s.admitted => {
                            if s.role == Role::Pupil && !holds.is_empty() {
                                self.fail("a held pupil receives media", out);
                            }
                        }
                        _ => self.fail("media delivered to a waiting or absent participant", out),
                    }
                    if !self.receiving.insert(*participant) {
                        self.fail("Receive on twice", out);
                    }
                } else if !self.receiving.remove(participant) {
                    self.fail("Receive off for a participant not receiving", out);
                }
            }
            Output::MediaOffer { participant, .. } | Output::MediaAnswer { participant, .. } => {
                if !self.present.get(participant).is_some_and(|s| s.admitted) {
                    self.fail("SDP passed on for a participant who is not admitted", out);
                }
                self.media_sdp.push(*participant);
            }
            Output::Record(Record::Event(e)) => {
                match e {
                    LessonEvent::TimeRanOut {} => {
                        let now = self.now();
                        let due = [self.closes_at, self.closes_before]
                            .into_iter()
                            .flatten()
                            .any(|at| at <= now);
                        if !due || self.ended {
                            self.fail("the lesson's time ran out before its close", out);
                        }
                    }
                    LessonEvent::Ended { by } => {
                        let timed_out =
                            matches!(self.events.last(), Some(LessonEvent::TimeRanOut {}));
                        if (*by == ParticipantId::SERVER) != timed_out {
                            self.fail("ended by the server without its time running out, or the other way round", out);
                        }
                        self.ended = true;
                    }
                    LessonEvent::Removed { participant, .. } => {
                        let who = self
                            .ids
                            .iter()
                            .find(|(_, v)| v.contains(participant))
                            .map(|(w, _)| *w);
                        match who {
                            Some(w) => {
                                self.removed.insert(w);
                            }
                            None => self.fail("removal of an unknown participant", out),
                        }
                    }
                    LessonEvent::Reallowed { user: u, .. } => {
                        self.removed.retain(|w| user(*w) != *u);
                    }
                    LessonEvent::Annotated {
                        mark,
                        layer,
                        participant,
                        ..
                    } => {
                        let seen = self.check_annotator(out, *participant);
                        let share = TrackId::new(*layer, MediaSource::ScreenShare);
                        if !self.forwarded.contains(&share) {
                            self.fail("a mark accepted on a screen that is not shared", out);
                        }
                        if self.marks.contains_key(mark) {
                            self.fail("a mark id was reused", out);
                        }
                        self.marks.insert(
                            *mark,
                            MarkRec {
                                author: *participant,
                                who: seen.who,
                                staff: seen.role.is_staff(),
                                layer: *layer,
                            },
                        );
                    }
                    LessonEvent::MarkExtended { mark, .. } => {
                        let Some(rec) = self.marks.get(mark).copied() else {
                            self.fail("an extension of a mark never recorded", out);
                        };
                        // The extension comes from the author's present connection.
                        let Some(p) = self.pid(rec.who) else {
                            self.fail("a mark extended by an author who is not present", out);
                        };
                        self.check_annotator(out, p);
                    }
                    LessonEvent::MarkUndone { participant, mark }
                    | LessonEvent::MarkRedone { participant, mark }
                    | LessonEvent::MarkErased { participant, mark } => {
                        let seen = self.check_annotator(out, *participant);
                        if self.marks.get(mark).map(|r| r.who) != Some(seen.who) {
                            self.fail("someone took back or put back a mark not their own", out);
                        }
                    }
                    _ => {}
                }
                self.events.push(e.clone());
            }
            Output::Record(Record::Chat { from, to, text }) => {
                self.input_chat_records.push((*from, *to, text.clone()));
                self.chats.push((*from, *to, text.clone()));
            }
            Output::Alert(e) => self.alerts.push(e.clone()),
            Output::Persist(s) => self.persisted.push(s.clone()),
            Output::Disconnect(p, why) => {
                let goodbye = self
                    .inbox(*p)
                    .last()
                    .is_some_and(|m| *m == ServerMsg::Goodbye { reason: *why });
                if !goodbye {
                    self.fail("disconnect without a Goodbye first", out);
                }
                if self.forwarded.iter().any(|t| t.participant == *p) || self.receiving.contains(p)
                {
                    self.fail("disconnected with media still flowing", out);
                }
                self.present.remove(p);
                self.disconnects.push((*p, *why));
            }
            Output::Timeout(_) => {}
        }
        // Supervision as the harness sees it: staff present or not.
        let staff_present = self.present.values().any(|s| s.role.is_staff());
        if staff_present {
            self.unsupervised_since = None;
        }
    }

    /// The author of an accepted annotation: present, admitted, holding
    /// `annotate` (staff always, observers never), not a held pupil, the
    /// lesson not ended. Returns what the harness knows of them.
    fn check_annotator(&self, out: &Output, p: ParticipantId) -> Seen {
        let Some(seen) = self.present.get(&p).cloned() else {
            self.fail("an annotation accepted from someone not present", out);
        };
        if !seen.admitted {
            self.fail("an annotation accepted from a waiting pupil", out);
        }
        match seen.role {
            Role::Observer => self.fail("an annotation accepted from an observer", out),
            Role::Pupil => {
                if !seen.permissions.annotate {
                    self.fail("an annotation accepted from a pupil without annotate", out);
                }
                if !self.expected_holds().is_empty() {
                    self.fail("a pupil's annotation accepted while pupils are held", out);
                }
            }
            Role::Teacher | Role::Assistant => {}
        }
        if self.ended {
            self.fail("an annotation accepted after the end", out);
        }
        seen
    }

    /// A mark sent to `to`: recorded first, on a screen being shared, with
    /// the right author flags, no pupil's name to another pupil, and, while
    /// marks are isolated, only staff marks and their own to a pupil.
    fn check_mark_sent(
        &self,
        out: &Output,
        seen: &Seen,
        to: ParticipantId,
        m: &chaperone_protocol::annotation::Mark,
    ) {
        let Some(rec) = self.marks.get(&m.id).copied() else {
            self.fail("a mark was sent that was never recorded as accepted", out);
        };
        if rec.layer != m.layer
            || !self
                .forwarded
                .contains(&TrackId::new(m.layer, MediaSource::ScreenShare))
        {
            self.fail("a mark was sent for a screen that is not shared", out);
        }
        if m.staff != rec.staff {
            self.fail("a mark's staff flag is wrong", out);
        }
        if m.mine != (rec.who == seen.who) {
            self.fail("a mark's `mine` flag is wrong", out);
        }
        if seen.role == Role::Pupil {
            if m.name.is_some() && !rec.staff {
                self.fail("a pupil was sent a pupil's name on a mark", out);
            }
            let isolated = self.last_status(to).is_some_and(|s| s.marks_isolated);
            if isolated && !rec.staff && rec.who != seen.who {
                self.fail("a pupil was shown another pupil's mark while isolated", out);
            }
        } else if m.name.is_none() {
            self.fail(
                "staff or an observer was sent a mark without its author",
                out,
            );
        }
    }

    /// After an input: the media plane must be exactly what the rule says.
    fn check_settled(&mut self) {
        let now = self.now();
        if !self.ended && self.closes_at.is_some_and(|at| at <= now) {
            panic!(
                "the lesson's time ran out at +{:?} and it was not ended",
                self.offset
            );
        }
        let staff_present = self.present.values().any(|s| s.role.is_staff());
        if staff_present {
            self.unsupervised_since = None;
        } else if self.unsupervised_since.is_none() {
            self.unsupervised_since = Some(now);
        }
        let holds = self.expected_holds();
        assert_eq!(
            self.lesson.held(),
            holds.as_slice(),
            "the lesson's holds differ from the harness model at +{:?}",
            self.offset
        );
        let mut want_fwd = BTreeSet::new();
        let mut want_rx = BTreeSet::new();
        for (p, s) in &self.present {
            assert_eq!(self.lesson.role_of(*p), Some(s.role), "role of {p}");
            assert_eq!(self.lesson.is_admitted(*p), s.admitted, "admission of {p}");
            if self.ended || !s.admitted {
                continue;
            }
            let pupil = s.role == Role::Pupil;
            if !pupil || holds.is_empty() {
                want_rx.insert(*p);
            }
            for src in &s.sources_on {
                let ok = match s.role {
                    Role::Teacher | Role::Assistant => true,
                    Role::Observer => false,
                    Role::Pupil => holds.is_empty() && s.permissions.allows(src.permission()),
                };
                if ok {
                    want_fwd.insert(TrackId::new(*p, *src));
                }
            }
        }
        assert_eq!(
            self.forwarded, want_fwd,
            "forwarded tracks differ from the forwarding rule at +{:?}; present: {:#?}",
            self.offset, self.present
        );
        assert_eq!(
            self.receiving, want_rx,
            "receiving set differs from the rule"
        );
        for h in self.lesson.raised_hands() {
            assert!(
                self.present
                    .get(h)
                    .is_some_and(|s| s.role == Role::Pupil && s.admitted && !self.ended),
                "a hand is up for {h}, who is not an admitted pupil"
            );
        }
        for t in &self.forwarded {
            assert!(
                self.lesson.is_forwarding(*t),
                "lesson forgot it forwards {t}"
            );
        }
        for p in &self.receiving {
            assert!(self.lesson.is_receiving(*p), "lesson forgot {p} receives");
        }
        for p in self.present.keys() {
            for s in MediaSource::ALL {
                let t = TrackId::new(*p, s);
                assert_eq!(
                    self.lesson.is_forwarding(t),
                    self.forwarded.contains(&t),
                    "{t}"
                );
            }
            assert_eq!(
                self.lesson.is_receiving(*p),
                self.receiving.contains(p),
                "{p}"
            );
        }
        if self.ended {
            assert!(
                self.present.is_empty(),
                "someone is still present after the end"
            );
        }
    }
}
