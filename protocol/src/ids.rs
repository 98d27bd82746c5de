//! Newtype identifiers. None of them is a secret, but a [`LessonId`] is
//! unguessable (128 random bits) so that a lesson cannot be found by
//! enumeration (docs/security.md §14).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ProtocolError;

/// A lesson: 128 random bits, written as 32 lowercase hex digits.
///
/// The protocol crate has no randomness; the gateway makes new ids with
/// [`LessonId::from_bytes`] from a cryptographic generator.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LessonId([u8; 16]);

impl LessonId {
    /// Length of the textual form.
    pub const TEXT_LEN: usize = 32;

    /// Wraps 16 random bytes. Callers must supply bytes from a CSPRNG.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The raw bytes, for binary encodings.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for LessonId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for LessonId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LessonId({self})")
    }
}

impl FromStr for LessonId {
    type Err = ProtocolError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != Self::TEXT_LEN {
            return Err(ProtocolError::InvalidId);
        }
        let mut out = [0u8; 16];
        for (i, chunk) in s.as_bytes().chunks_exact(2).enumerate() {
            let hi = hex_digit(chunk[0])?;
            let lo = hex_digit(chunk[1])?;
            out[i] = (hi << 4) | lo;
        }
        Ok(Self(out))
    }
}

fn hex_digit(c: u8) -> Result<u8, ProtocolError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(ProtocolError::InvalidId),
    }
}

impl Serialize for LessonId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LessonId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A participant within one lesson, assigned by the gateway when they join.
/// It says nothing about who the person is outside the lesson.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ParticipantId(pub u64);

impl ParticipantId {
    /// The gateway itself, as the actor of what it does on its own (a
    /// lesson whose time ran out is ended `by` it). Never a participant's
    /// id: those start at 1.
    pub const SERVER: ParticipantId = ParticipantId(0);
}

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

impl fmt::Debug for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// One media track: a participant's source. A participant has at most one
/// track per source, so the pair identifies it without a registry.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackId {
    /// Who publishes it.
    pub participant: ParticipantId,
    /// Which of their sources it carries.
    pub source: crate::MediaSource,
}

impl TrackId {
    /// The track of `participant`'s `source`.
    pub const fn new(participant: ParticipantId, source: crate::MediaSource) -> Self {
        Self {
            participant,
            source,
        }
    }
}

impl fmt::Display for TrackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.participant, self.source.as_str())
    }
}

/// A person, as the identity provider names them: issuer and subject.
/// Never an email address (docs/security.md §4).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRef {
    /// The `iss` of the provider that vouched for them.
    pub issuer: String,
    /// The provider's stable `sub` for them.
    pub subject: String,
}

impl UserRef {
    /// Longest issuer or subject accepted.
    pub const MAX_PART_LEN: usize = 255;

    /// Builds a reference, refusing empty or over-long parts.
    pub fn new(
        issuer: impl Into<String>,
        subject: impl Into<String>,
    ) -> Result<Self, ProtocolError> {
        let (issuer, subject) = (issuer.into(), subject.into());
        let ok = |s: &str| !s.is_empty() && s.len() <= Self::MAX_PART_LEN;
        if ok(&issuer) && ok(&subject) {
            Ok(Self { issuer, subject })
        } else {
            Err(ProtocolError::InvalidId)
        }
    }
}

impl fmt::Display for UserRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.issuer, self.subject)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lesson_id_round_trips_as_text_and_json() {
        let id = LessonId::from_bytes([0xab; 16]);
        let text = id.to_string();
        assert_eq!(text.len(), LessonId::TEXT_LEN);
        assert_eq!(text.parse::<LessonId>().unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<LessonId>(&json).unwrap(), id);
    }

    #[test]
    fn lesson_id_refuses_bad_text() {
        for bad in ["", "abc", &"g".repeat(32), &"A".repeat(32), &"0".repeat(33)] {
            assert_eq!(
                bad.parse::<LessonId>(),
                Err(ProtocolError::InvalidId),
                "{bad}"
            );
        }
    }

    #[test]
    fn user_ref_refuses_empty_parts() {
        assert!(UserRef::new("", "x").is_err());
        assert!(UserRef::new("https://idp", "").is_err());
        assert!(UserRef::new("https://idp", "s".repeat(256)).is_err());
        assert!(UserRef::new("https://idp", "s").is_ok());
    }
}
