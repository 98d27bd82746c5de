//! What each participant may send, and what they have switched on:
//! teachers' permission grants and revocations (one pupil, or all pupils and
//! the defaults for those admitted later), turning a source off, and
//! participants' own choices of engagement and sources.
//!
//! Permissions are kept per person, not per connection, so leaving and
//! rejoining must never restore a revoked source; a revoked source is
//! switched off, so that re-granting never switches it back on behind the
//! pupil's back. Nothing here decides what is forwarded: `forwarding.rs`
//! derives that from this state after every input.

use std::time::Instant;

use chaperone_protocol::event::LessonEvent;
use chaperone_protocol::signal::{ErrorCode, ServerMsg, Target};
use chaperone_protocol::{Engagement, MediaSource, ParticipantId, Permission, Role};

use crate::Lesson;

impl Lesson {
    /// The pupils a target names: one (who must be a pupil) or all.
    pub(crate) fn pupils(&self, target: Target) -> Result<Vec<ParticipantId>, ErrorCode> {
        match target {
            Target::One(p) => match self.participants.get(&p) {
                None => Err(ErrorCode::UnknownParticipant),
                Some(x) if x.role != Role::Pupil => Err(ErrorCode::Forbidden),
                Some(_) => Ok(vec![p]),
            },
            Target::AllPupils => Ok(self
                .participants
                .iter()
                .filter(|(_, x)| x.role == Role::Pupil)
                .map(|(id, _)| *id)
                .collect()),
        }
    }

    pub(crate) fn set_permission(
        &mut self,
        by: ParticipantId,
        target: Target,
        permission: Permission,
        granted: bool,
    ) -> Result<(), ErrorCode> {
        let pupils = self.pupils(target)?;
        if target == Target::AllPupils && self.defaults.allows(permission) != granted {
            self.defaults.set(permission, granted);
            self.record(LessonEvent::DefaultsChanged {
                permission,
                granted,
                by,
            });
        }
        for p in pupils {
            let Some(user) = self.participants.get(&p).map(|x| x.user.clone()) else {
                continue;
            };
            let perms = self.permissions.entry(user).or_insert(self.defaults);
            if perms.allows(permission) == granted {
                continue;
            }
            perms.set(permission, granted);
            // A revoked source goes off, so re-granting never switches it back on
            // behind the pupil's back.
            if let (false, Some(source)) = (granted, permission.source())
                && let Some(x) = self.participants.get_mut(&p)
            {
                x.on.remove(&source);
            }
            self.record(LessonEvent::PermissionChanged {
                participant: p,
                permission,
                granted,
                by,
            });
            if self.is_admitted(p) {
                self.send(
                    p,
                    ServerMsg::ControlChanged {
                        permission,
                        granted,
                        revoked: !granted,
                    },
                );
            }
        }
        if target == Target::AllPupils {
            // Pupils not present now (dropped, or yet to return) are covered too.
            for perms in self.permissions.values_mut() {
                perms.set(permission, granted);
            }
        }
        Ok(())
    }

    pub(crate) fn turn_off(
        &mut self,
        by: ParticipantId,
        target: Target,
        source: MediaSource,
    ) -> Result<(), ErrorCode> {
        for p in self.pupils(target)? {
            let was_on = self
                .participants
                .get_mut(&p)
                .is_some_and(|x| x.on.remove(&source));
            if was_on {
                self.record(LessonEvent::SourceChanged {
                    participant: p,
                    source,
                    on: false,
                    by: Some(by),
                });
                self.send(
                    p,
                    ServerMsg::ControlChanged {
                        permission: source.permission(),
                        granted: false,
                        revoked: false,
                    },
                );
            }
        }
        Ok(())
    }

    pub(crate) fn permitted(&self, p: ParticipantId, perm: Permission) -> bool {
        match self.participants.get(&p) {
            Some(x) => match x.role {
                Role::Teacher | Role::Assistant => true,
                Role::Observer => false,
                Role::Pupil => self
                    .permissions
                    .get(&x.user)
                    .is_some_and(|perms| perms.allows(perm)),
            },
            None => false,
        }
    }

    pub(crate) fn set_source(
        &mut self,
        now: Instant,
        p: ParticipantId,
        source: MediaSource,
        on: bool,
    ) -> Result<(), ErrorCode> {
        if on && !self.permitted(p, source.permission()) {
            return Err(ErrorCode::NotPermitted);
        }
        let changed = match self.participants.get_mut(&p) {
            Some(x) if on => x.on.insert(source),
            Some(x) => x.on.remove(&source),
            None => false,
        };
        if changed {
            self.record(LessonEvent::SourceChanged {
                participant: p,
                source,
                on,
                by: None,
            });
            self.camera_check(now, p);
        }
        Ok(())
    }

    pub(crate) fn set_engagement(
        &mut self,
        now: Instant,
        p: ParticipantId,
        engagement: Engagement,
    ) -> Result<(), ErrorCode> {
        for source in [MediaSource::Microphone, MediaSource::Camera] {
            if engagement.wants(source) && !self.permitted(p, source.permission()) {
                return Err(ErrorCode::NotPermitted);
            }
        }
        self.record(LessonEvent::EngagementChosen {
            participant: p,
            engagement,
        });
        for source in [MediaSource::Microphone, MediaSource::Camera] {
            self.set_source(now, p, source, engagement.wants(source))?;
        }
        Ok(())
    }
}
