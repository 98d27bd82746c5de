//! The review side's reading of recordings: a lesson's archive opened with
//! the review identity, checked against its signed manifest, and laid out
//! on one timeline (events, chat, media per track), plus the summary the
//! search uses.
//!
//! Only the latest checkpoint whose Ed25519 signature verifies with the
//! recorder's key (configured, never the archive's copy) is trusted, and
//! every segment must match its manifest hash before it is decrypted: a
//! tampered archive is reported, never silently replayed. Pure apart from
//! reading the store; no clock.

use std::collections::BTreeMap;

use chaperone_protocol::event::LessonEvent;
use chaperone_protocol::feed::{FeedFrame, MediaCodec};
use chaperone_protocol::{LessonId, MediaSource, ParticipantId, Role, TrackId, UserRef};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _};
use serde::Serialize;

use crate::webm::TimedFrame;
use chaperone_archive::keys::RecorderPublicKey;
use chaperone_archive::layout::{self, ObjectKind};
use chaperone_archive::manifest::{Gap, MAX_MANIFEST_LEN, Manifest, sha256_hex};

/// Why a recording could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LibraryError {
    /// No signed manifest checkpoint exists for the lesson.
    #[error("no recording")]
    NotFound,
    /// A segment does not match its manifest entry (altered or missing).
    #[error("segment {index} does not match the signed manifest")]
    Tampered {
        /// The segment index.
        index: u64,
    },
    /// A segment could not be decrypted or parsed.
    #[error("segment {index}: {reason}")]
    Unreadable {
        /// The segment index.
        index: u64,
        /// Why.
        reason: String,
    },
    /// The object store failed.
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
}

/// Who someone was in the lesson.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Participant {
    /// Their id in the lesson.
    pub id: ParticipantId,
    /// Who they are.
    pub user: UserRef,
    /// Display name.
    pub name: String,
    /// Role in the lesson.
    pub role: Role,
}

/// A lesson event at its time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct TimedEvent {
    /// Feed seq.
    pub seq: u64,
    /// Microseconds since the lesson's start.
    pub t_micros: u64,
    /// The event.
    pub event: LessonEvent,
}

/// A chat message at its time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct TimedChat {
    /// Feed seq.
    pub seq: u64,
    /// Microseconds since the lesson's start.
    pub t_micros: u64,
    /// Sender.
    pub from: ParticipantId,
    /// Private recipient, if private.
    pub to: Option<ParticipantId>,
    /// The text.
    pub text: String,
}

/// One track's frames on the lesson timeline.
#[derive(Clone, Debug, Default)]
pub(crate) struct TrackFrames {
    /// The codec of the frames (the first frame's; a change is kept as is).
    pub codec: Option<MediaCodec>,
    /// The frames, in order.
    pub frames: Vec<TimedFrame>,
}

/// A whole lesson opened for review.
#[derive(Debug)]
pub(crate) struct Recording {
    /// The lesson.
    pub lesson: LessonId,
    /// The trusted checkpoint's number.
    pub checkpoint: u64,
    /// Whether the lesson ended cleanly (final checkpoint).
    pub is_final: bool,
    /// Start of the first segment: t = 0, unix microseconds.
    pub start_unix_micros: u64,
    /// Length of the timeline, microseconds.
    pub duration_micros: u64,
    /// Known gaps.
    pub gaps: Vec<Gap>,
    /// Everyone who joined.
    pub participants: BTreeMap<ParticipantId, Participant>,
    /// Every event.
    pub events: Vec<TimedEvent>,
    /// Every chat message, public and private.
    pub chat: Vec<TimedChat>,
    /// Media per track.
    pub tracks: BTreeMap<TrackId, TrackFrames>,
    /// Plaintext bytes held (for the cache bound).
    pub bytes: usize,
}

/// What the search needs of a recording.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Summary {
    /// The lesson.
    pub lesson: LessonId,
    /// Start, unix milliseconds.
    pub start_ms: u64,
    /// Length, milliseconds.
    pub duration_ms: u64,
    /// Ended cleanly.
    pub is_final: bool,
    /// Staff who joined (teachers, assistants).
    pub staff: Vec<Participant>,
    /// Pupils who joined.
    pub pupils: Vec<Participant>,
    /// Concerns raised.
    pub concerns: u32,
    /// Incidents flagged.
    pub incidents: u32,
    /// First concern or incident, ms from the start.
    pub first_flag_ms: Option<u64>,
}

impl Recording {
    /// The search summary.
    pub(crate) fn summary(&self) -> Summary {
        let mut staff = Vec::new();
        let mut pupils = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for p in self.participants.values() {
            if !seen.insert((p.user.clone(), p.role.is_staff())) {
                continue;
            }
            if p.role.is_staff() {
                staff.push(p.clone());
            } else if p.role == Role::Pupil {
                pupils.push(p.clone());
            }
        }
        let flags: Vec<&TimedEvent> = self
            .events
            .iter()
            .filter(|e| {
                matches!(
                    e.event,
                    LessonEvent::Concern { .. } | LessonEvent::Incident { .. }
                )
            })
            .collect();
        Summary {
            lesson: self.lesson,
            start_ms: self.start_unix_micros / 1000,
            duration_ms: self.duration_micros / 1000,
            is_final: self.is_final,
            staff,
            pupils,
            concerns: flags
                .iter()
                .filter(|e| matches!(e.event, LessonEvent::Concern { .. }))
                .count() as u32,
            incidents: flags
                .iter()
                .filter(|e| matches!(e.event, LessonEvent::Incident { .. }))
                .count() as u32,
            first_flag_ms: flags.first().map(|e| e.t_micros / 1000),
        }
    }

    /// The role of a participant (`None`: never joined).
    pub(crate) fn role_of(&self, p: ParticipantId) -> Option<Role> {
        self.participants.get(&p).map(|x| x.role)
    }
}

/// The lessons that have a recording in `store` (a `manifests/` object).
pub(crate) async fn list_lessons(store: &dyn ObjectStore) -> Result<Vec<LessonId>, LibraryError> {
    let listing = store
        .list_with_delimiter(Some(&Path::from("lessons")))
        .await?;
    Ok(listing
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename().and_then(|n| n.parse::<LessonId>().ok()))
        .collect())
}

/// The latest checkpoint whose signature verifies, with its number.
pub(crate) async fn trusted_manifest(
    store: &dyn ObjectStore,
    lesson: &LessonId,
    key: &RecorderPublicKey,
) -> Result<Manifest, LibraryError> {
    let prefix = Path::from(format!("lessons/{lesson}/manifests"));
    let mut numbers: Vec<u64> = Vec::new();
    let mut stream = store.list(Some(&prefix));
    use futures_util::StreamExt as _;
    while let Some(meta) = stream.next().await {
        let meta = meta?;
        if let ObjectKind::Manifest(n) = layout::classify(lesson, &meta.location) {
            numbers.push(n);
        }
    }
    numbers.sort_unstable();
    for n in numbers.into_iter().rev() {
        let Ok(json) = store.get(&layout::manifest_path(lesson, n)).await else {
            continue;
        };
        if json.meta.size > MAX_MANIFEST_LEN as u64 {
            continue;
        }
        let json = json.bytes().await?;
        let Ok(sig) = store.get(&layout::signature_path(lesson, n)).await else {
            continue;
        };
        let sig = sig.bytes().await?;
        if !key.verify(&json, &sig) {
            continue;
        }
        if let Ok(m) = Manifest::parse(&json)
            && m.lesson == lesson.to_string()
            && m.checkpoint == n
        {
            return Ok(m);
        }
    }
    Err(LibraryError::NotFound)
}

/// Puts one track's frames on the timeline: the first frame at its arrival,
/// the next ones by their media clock, re-anchored to arrival after a
/// discontinuity or when the media clock strays more than a second from the
/// arrival times (a restarted sender).
struct Anchor {
    arrival: u64,
    media: u64,
    rate: u64,
}

fn place(
    anchor: &mut Option<Anchor>,
    arrival_rel: u64,
    media_time: u64,
    rate: u32,
    disc: bool,
) -> u64 {
    let rate = u64::from(rate.max(1));
    if let Some(a) = anchor.as_ref()
        && !disc
        && a.rate == rate
        && media_time >= a.media
    {
        let t = a.arrival + (media_time - a.media).saturating_mul(1_000_000) / rate;
        if t.abs_diff(arrival_rel) <= 1_000_000 {
            return t;
        }
    }
    *anchor = Some(Anchor {
        arrival: arrival_rel,
        media: media_time,
        rate,
    });
    arrival_rel
}

/// Opens a whole lesson: the trusted manifest, every segment checked
/// against it, decrypted and parsed, laid out on the timeline.
pub(crate) async fn open(
    store: &dyn ObjectStore,
    lesson: &LessonId,
    key: &RecorderPublicKey,
    identity: &age::x25519::Identity,
) -> Result<Recording, LibraryError> {
    let manifest = trusted_manifest(store, lesson, key).await?;
    let start = manifest.entries.first().map_or(0, |e| e.start);
    let end = manifest.entries.last().map_or(start, |e| e.end);
    let mut rec = Recording {
        lesson: *lesson,
        checkpoint: manifest.checkpoint,
        is_final: manifest.is_final,
        start_unix_micros: start,
        duration_micros: end.saturating_sub(start),
        gaps: manifest.gaps.clone(),
        participants: BTreeMap::new(),
        events: Vec::new(),
        chat: Vec::new(),
        tracks: BTreeMap::new(),
        bytes: 0,
    };
    let mut anchors: BTreeMap<TrackId, Option<Anchor>> = BTreeMap::new();
    for entry in &manifest.entries {
        let sealed = store
            .get(&layout::segment_path(lesson, entry.index))
            .await
            .map_err(|_| LibraryError::Tampered { index: entry.index })?
            .bytes()
            .await?;
        if sealed.len() as u64 != entry.size || sha256_hex(&sealed) != entry.sha256 {
            return Err(LibraryError::Tampered { index: entry.index });
        }
        let segment =
            crate::open::open_segment(&sealed, identity).map_err(|e| LibraryError::Unreadable {
                index: entry.index,
                reason: e.to_string(),
            })?;
        for record in segment.records() {
            rec.bytes += record.frame.len();
            let rel = |at: u64| at.saturating_sub(start);
            match FeedFrame::parse(&record.frame) {
                Ok(FeedFrame::Event {
                    seq,
                    at_micros,
                    event,
                }) => {
                    if let LessonEvent::Joined {
                        participant,
                        user,
                        name,
                        role,
                    } = &event
                    {
                        rec.participants.insert(
                            *participant,
                            Participant {
                                id: *participant,
                                user: user.clone(),
                                name: name.clone(),
                                role: *role,
                            },
                        );
                    }
                    rec.events.push(TimedEvent {
                        seq,
                        t_micros: rel(at_micros),
                        event,
                    });
                }
                Ok(FeedFrame::Chat {
                    seq,
                    at_micros,
                    from,
                    to,
                    text,
                }) => rec.chat.push(TimedChat {
                    seq,
                    t_micros: rel(at_micros),
                    from,
                    to,
                    text,
                }),
                Ok(FeedFrame::Media {
                    track,
                    arrival_micros,
                    media_time,
                    clock_rate,
                    codec,
                    discontinuity,
                    data,
                    ..
                }) => {
                    let anchor = anchors.entry(track).or_insert(None);
                    let t = place(
                        anchor,
                        rel(arrival_micros),
                        media_time,
                        clock_rate,
                        discontinuity,
                    );
                    let tf = rec.tracks.entry(track).or_default();
                    tf.codec.get_or_insert(codec);
                    tf.frames.push(TimedFrame {
                        t_micros: t,
                        discontinuity,
                        data: data.into(),
                    });
                }
                // Other frames (RTP, sender reports) are not replayed.
                Ok(_) => {}
                Err(e) => {
                    return Err(LibraryError::Unreadable {
                        index: entry.index,
                        reason: format!("seq {}: {e}", record.seq),
                    });
                }
            }
        }
    }
    rec.duration_micros = rec
        .duration_micros
        .max(rec.events.last().map_or(0, |e| e.t_micros))
        .max(
            rec.tracks
                .values()
                .filter_map(|t| t.frames.last().map(|f| f.t_micros))
                .max()
                .unwrap_or(0),
        );
    Ok(rec)
}

/// The file name of a track group: `p<participant>-av.webm` (camera and
/// microphone) or `p<participant>-screen.webm`.
pub(crate) fn file_name(participant: ParticipantId, screen: bool) -> String {
    if screen {
        format!("p{}-screen.webm", participant.0)
    } else {
        format!("p{}-av.webm", participant.0)
    }
}

/// The tracks of a file: (video track, audio track).
pub(crate) fn file_tracks(participant: ParticipantId, screen: bool) -> (TrackId, Option<TrackId>) {
    if screen {
        (TrackId::new(participant, MediaSource::ScreenShare), None)
    } else {
        (
            TrackId::new(participant, MediaSource::Camera),
            Some(TrackId::new(participant, MediaSource::Microphone)),
        )
    }
}
