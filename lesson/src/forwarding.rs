//! The forwarding rule, and the media plane derived from it. A track is
//! forwarded only if its owner may send it now, and a participant receives
//! only if they may receive now; after every input the settle step
//! recomputes both sets from the lesson's state and emits the difference.
//!
//! Deriving the media plane from state, instead of patching it per command,
//! is what makes "a source that is not allowed is never forwarded" hold for
//! every sequence of commands. Nothing outside this file may start
//! forwarding or receiving (taking a participant out may only stop them),
//! and a stop is always emitted before a start.

use std::collections::BTreeSet;

use chaperone_protocol::event::LessonEvent;
use chaperone_protocol::{ParticipantId, Role, TrackId};

use crate::{Lesson, Output, Presence};

impl Lesson {
    /// Whether `track` may be forwarded: the forwarding rule.
    fn may_forward(&self, track: TrackId) -> bool {
        let Some(x) = self.participants.get(&track.participant) else {
            return false;
        };
        let allowed = match x.role {
            Role::Teacher | Role::Assistant => true,
            Role::Observer => false,
            Role::Pupil => {
                x.presence == Presence::Admitted
                    && self.held.is_empty()
                    && self.permitted(track.participant, track.source.permission())
            }
        };
        !self.ended && allowed && x.on.contains(&track.source)
    }

    /// Whether `p` may receive media: admitted, and if a pupil, not held.
    fn may_receive(&self, p: ParticipantId) -> bool {
        match self.participants.get(&p) {
            Some(x) => {
                !self.ended
                    && x.presence == Presence::Admitted
                    && (x.role != Role::Pupil || self.held.is_empty())
            }
            None => false,
        }
    }

    /// Brings the media plane in line with the rule: emits `Forward` and
    /// `Receive` for every track and participant whose right changed.
    pub(crate) fn settle_media(&mut self) {
        // Media plane: stop first, then start, so nothing is briefly forwarded
        // to someone who has just lost the right to receive it.
        let want_fwd: BTreeSet<TrackId> = self
            .participants
            .iter()
            .flat_map(|(id, x)| x.on.iter().map(move |s| TrackId::new(*id, *s)))
            .filter(|t| self.may_forward(*t))
            .collect();
        let want_rx: BTreeSet<ParticipantId> = self
            .participants
            .keys()
            .copied()
            .filter(|p| self.may_receive(*p))
            .collect();
        for t in self
            .forwarding
            .difference(&want_fwd)
            .copied()
            .collect::<Vec<_>>()
        {
            self.outputs.push_back(Output::Forward {
                track: t,
                on: false,
            });
            self.record(LessonEvent::Forwarding {
                track: t,
                on: false,
            });
        }
        for p in self
            .receiving
            .difference(&want_rx)
            .copied()
            .collect::<Vec<_>>()
        {
            self.outputs.push_back(Output::Receive {
                participant: p,
                on: false,
            });
        }
        for p in want_rx
            .difference(&self.receiving)
            .copied()
            .collect::<Vec<_>>()
        {
            self.outputs.push_back(Output::Receive {
                participant: p,
                on: true,
            });
        }
        for t in want_fwd
            .difference(&self.forwarding)
            .copied()
            .collect::<Vec<_>>()
        {
            self.outputs
                .push_back(Output::Forward { track: t, on: true });
            self.record(LessonEvent::Forwarding { track: t, on: true });
        }
        self.forwarding = want_fwd;
        self.receiving = want_rx;
    }
}
