//! The claims of each of our tokens, and the registered claims they share.

use chaperone_protocol::{LessonId, UserRef};
use serde::{Deserialize, Serialize};

/// Claims of a room token: who may join which lesson, as what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomClaims {
    /// The gateway that issued it.
    pub iss: String,
    /// The gateway audience.
    pub aud: String,
    /// The person, as `issuer#subject`.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Not before, Unix seconds.
    pub nbf: u64,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Unique id, single-use for a join.
    pub jti: String,
    /// [`ROOM_TOKEN_TYPE`].
    pub typ: String,
    /// The lesson.
    pub lesson: LessonId,
    /// The person.
    pub user: UserRef,
    /// Their display name.
    pub name: String,
    /// What the identity layer vouches for; the lesson core decides the role.
    pub account: AccountClaims,
}

/// The identity facts a room token carries to the lesson core (see
/// the gateway's `lesson::Account`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountClaims {
    /// Teaching staff (teacher or assistant).
    pub staff: bool,
    /// Classes they belong to as a pupil.
    pub pupil_classes: Vec<String>,
    /// SLT or DSL.
    pub safeguarding_observer: bool,
    /// End of a visitor grant covering this lesson, Unix seconds.
    pub visitor_until: Option<u64>,
}

/// Claims of a service token (gateway → recorder feed).
///
/// The registered claims are repeated here rather than shared through
/// `#[serde(flatten)]`: serde cannot combine `flatten` with
/// `deny_unknown_fields`, and refusing unknown claims matters more.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceClaims {
    /// The gateway that issued it.
    pub iss: String,
    /// The recorder audience.
    pub aud: String,
    /// The calling service.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Not before, Unix seconds.
    pub nbf: u64,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Unique id.
    pub jti: String,
    /// [`SERVICE_TOKEN_TYPE`].
    pub typ: String,
    /// The lesson whose feed it authorises.
    pub lesson: LessonId,
}

/// Claims of a node token: a gateway node (the door a lesson WebSocket
/// reached) vouches to the lesson's owner that it checked this person's
/// room token for this lesson. Single-use (`jti`), short-lived.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeClaims {
    /// The deployment's issuer (every node shares it).
    pub iss: String,
    /// [`NODE_AUDIENCE`].
    pub aud: String,
    /// The door node's id.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Not before, Unix seconds.
    pub nbf: u64,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Unique id, single-use at the owner.
    pub jti: String,
    /// [`NODE_TOKEN_TYPE`].
    pub typ: String,
    /// The lesson.
    pub lesson: LessonId,
    /// The person, as the room token named them.
    pub user: UserRef,
    /// Their display name.
    pub name: String,
    /// What the room token vouched for.
    pub account: AccountClaims,
}

/// What a review token lets its bearer see at the review service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewScope {
    /// SLT or DSL replay: every track, all chat, every event; DSL-only
    /// ranges blanked. Requires a stated reason and a fresh MFA login.
    Safeguarding,
    /// DSL replay including DSL-only ranges, and the DSL's actions
    /// (restrict, hold, export). Requires the DSL role, a reason and a fresh
    /// MFA login.
    DslRestricted,
    /// A pupil's copy of their own class's lesson: staff camera and
    /// microphone, screen shares and public chat only; never another
    /// pupil's media, never private chat, never DSL-only ranges.
    PupilCopy,
}

impl ReviewScope {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            ReviewScope::Safeguarding => "safeguarding",
            ReviewScope::DslRestricted => "dsl_restricted",
            ReviewScope::PupilCopy => "pupil_copy",
        }
    }
}

/// Claims of a review token: who may see which recording(s), how, and why.
/// Issued by the gateway only to SLT/DSL (with a reason, after a fresh MFA
/// login) or to a pupil of the lesson's class; verified by the review
/// service with the gateway's JWKS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewClaims {
    /// The gateway that issued it.
    pub iss: String,
    /// The review service audience.
    pub aud: String,
    /// The viewer, as `issuer#subject`.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Not before, Unix seconds.
    pub nbf: u64,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Unique id.
    pub jti: String,
    /// [`REVIEW_TOKEN_TYPE`].
    pub typ: String,
    /// The viewer.
    pub viewer: UserRef,
    /// Their display name (for the audit log).
    pub name: String,
    /// The role the token was issued for: `slt`, `dsl` or `pupil`.
    pub role: String,
    /// What they may see.
    pub scope: ReviewScope,
    /// The lesson, or `None` for a list/search token (SLT/DSL only).
    pub lesson: Option<LessonId>,
    /// For a pupil's list token: the lessons of their classes (at most
    /// [`MAX_REVIEW_LESSONS`]); empty otherwise.
    pub lessons: Vec<LessonId>,
    /// The stated reason (required for safeguarding scopes).
    pub reason: Option<String>,
}

/// The registered claims every token of ours has, checked the same way.
pub(crate) trait Registered {
    fn iss(&self) -> &str;
    fn aud(&self) -> &str;
    fn sub(&self) -> &str;
    fn times(&self) -> (u64, u64, u64);
    fn jti(&self) -> &str;
    fn typ(&self) -> &str;
}

macro_rules! registered {
    ($t:ty) => {
        impl Registered for $t {
            fn iss(&self) -> &str {
                &self.iss
            }
            fn aud(&self) -> &str {
                &self.aud
            }
            fn sub(&self) -> &str {
                &self.sub
            }
            fn times(&self) -> (u64, u64, u64) {
                (self.iat, self.nbf, self.exp)
            }
            fn jti(&self) -> &str {
                &self.jti
            }
            fn typ(&self) -> &str {
                &self.typ
            }
        }
    };
}
registered!(RoomClaims);
registered!(ServiceClaims);
registered!(ReviewClaims);
registered!(NodeClaims);
