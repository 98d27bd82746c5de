//! The recorder feed: binary frames from the gateway to a recorder (and
//! acknowledgements back), one WebSocket binary message or a byte stream of
//! concatenated frames.
//!
//! # Layout
//!
//! Every frame is
//!
//! ```text
//! u32  length of everything after these four bytes (big-endian)
//! u8   format version (1)
//! u8   kind
//! ...  body (per kind, below)
//! ```
//!
//! All integers are big-endian. A `track` is `u64 participant` then
//! `u8 source` (0 microphone, 1 camera, 2 screen share). Byte strings are a
//! `u32` length then the bytes; text is UTF-8.
//!
//! | kind | frame | body |
//! |---|---|---|
//! | 1 | `Hello` | 16-byte lesson id, `u64 resume_from` |
//! | 2 | `Rtp` | `u64 seq`, track, `u64 arrival_micros`, bytes packet |
//! | 3 | `SenderReport` | `u64 seq`, track, `u64 arrival_micros`, `u64 ntp_time`, `u32 rtp_time` |
//! | 4 | `Event` | `u64 seq`, `u64 at_micros`, bytes JSON of a [`LessonEvent`] |
//! | 5 | `Chat` | `u64 seq`, `u64 at_micros`, `u64 from`, `u8 private`, `u64 to` (0 if public), text |
//! | 6 | `Ack` | `u64 up_to` |
//! | 7 | `End` | `u64 seq`, `u64 at_micros` |
//! | 8 | `Media` | `u64 seq`, track, `u64 arrival_micros`, `u64 media_time`, `u32 clock_rate`, `u8 codec`, `u8 flags`, bytes frame |
//! | 9 | `Flush` | (empty) |
//! | 10 | `Gap` | `u64 seq`, `u64 at_micros`, text reason |
//! | 11 | `Hello` (owned) | 16-byte lesson id, `u64 resume_from`, `u64 owner_epoch` |
//!
//! `Media` is one whole media frame (an Opus packet, a VP8/VP9/H.264 frame)
//! as the SFU forwarded it, depacketized: `media_time` is its RTP timestamp
//! extended to 64 bits in units of `clock_rate` Hz; `codec` is 0 Opus, 1 VP8,
//! 2 VP9, 3 H.264, 255 other; `flags` bit 0 says the frames before it were
//! lost upstream (a decoder must wait for the next keyframe).
//!
//! `Gap` says that what happened before `at_micros`, since the last frame the
//! recorder holds, was never recorded and cannot be: a lesson taken over
//! from a node that stopped without handing it over. Its `seq` stands for
//! the lost interval (the recorder lists it as a recorded gap).
//!
//! `Hello` carries the fencing epoch of the gateway's lease on the lesson
//! (kind 11; kind 1 is a `Hello` with epoch 0, what a single node without a
//! cluster sends). The recorder takes a lesson's frames only from a feed
//! whose epoch is at least the highest it has seen for that lesson, so a
//! node that lost its lease (it was paused, or cut off from Redis) can
//! never write into the recording beside the node that took the lesson
//! over: its `Hello` is refused and its open feed closed with
//! [`SUPERSEDED_CLOSE_CODE`].
//!
//! `Flush` asks the recorder to write everything it holds now, rather than
//! at the end of the current segment interval, and acknowledge it (a gateway
//! shutting down sends it after its last frame).
//!
//! Times are microseconds since the Unix epoch. Sequence numbers are per
//! lesson, start at 1 and have no gaps: the recorder acknowledges "every
//! frame up to `n` is durable", the gateway replays from the first
//! unacknowledged one, and the recorder drops any frame whose `seq` it has
//! already stored, so a replay never doubles anything.
//!
//! Decoding is two-step (mini-redis `Frame::check` / `Frame::parse`): the
//! length is checked against [`MAX_FEED_FRAME`] before any body is read.

use crate::event::LessonEvent;
use crate::signal::MAX_CHAT_CHARS;
use crate::{LessonId, MediaSource, ParticipantId, ProtocolError, TrackId};

/// Format version written in every frame.
pub const FEED_VERSION: u8 = 1;

/// Largest frame (after the length prefix). Bounds memory per frame; the
/// largest legitimate frame is a media frame (a video keyframe).
pub const MAX_FEED_FRAME: usize = MAX_MEDIA_FRAME + 64;

/// Largest media frame carried (a high-resolution screen-share keyframe).
pub const MAX_MEDIA_FRAME: usize = 1024 * 1024;

/// Largest RTP packet carried (a UDP datagram on any sane path MTU).
pub const MAX_RTP_PACKET: usize = 1500;

/// Largest event JSON.
pub const MAX_EVENT_JSON: usize = 64 * 1024;

/// The WebSocket close code a recorder uses to refuse or close a feed
/// because a feed with a newer owner epoch holds the lesson: the lesson
/// has a newer owner, and this gateway must stop sending it.
pub const SUPERSEDED_CLOSE_CODE: u16 = 4409;

/// One frame of the feed.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum FeedFrame {
    /// First frame on a connection: which lesson, and the first sequence
    /// number the gateway will send (everything before was acknowledged).
    Hello {
        /// The lesson.
        lesson: LessonId,
        /// The sequence number the stream resumes from.
        resume_from: u64,
        /// The fencing epoch of the sender's lease on the lesson (0 for a
        /// gateway without a cluster).
        owner_epoch: u64,
    },
    /// A forwarded RTP packet, as received.
    Rtp {
        /// Feed sequence number.
        seq: u64,
        /// Whose source.
        track: TrackId,
        /// When the gateway received it.
        arrival_micros: u64,
        /// The RTP packet.
        packet: Vec<u8>,
    },
    /// An RTCP sender report's time mapping, for lip sync on replay.
    SenderReport {
        /// Feed sequence number.
        seq: u64,
        /// Whose source.
        track: TrackId,
        /// When the gateway received it.
        arrival_micros: u64,
        /// NTP timestamp of the report.
        ntp_time: u64,
        /// RTP timestamp it corresponds to.
        rtp_time: u32,
    },
    /// A lesson event.
    Event {
        /// Feed sequence number.
        seq: u64,
        /// When it happened.
        at_micros: u64,
        /// The event.
        event: LessonEvent,
    },
    /// A chat message, public or private (every private message is recorded).
    Chat {
        /// Feed sequence number.
        seq: u64,
        /// When it was sent.
        at_micros: u64,
        /// Sender.
        from: ParticipantId,
        /// Private recipient, or `None` for public.
        to: Option<ParticipantId>,
        /// Text.
        text: String,
    },
    /// One whole media frame as the SFU forwarded it (see the module docs).
    Media {
        /// Feed sequence number.
        seq: u64,
        /// Whose source.
        track: TrackId,
        /// When the gateway received it.
        arrival_micros: u64,
        /// RTP timestamp, extended, in `clock_rate` units.
        media_time: u64,
        /// The media clock in Hz (48 000 for Opus, 90 000 for video).
        clock_rate: u32,
        /// The codec.
        codec: MediaCodec,
        /// Frames before this one were lost upstream.
        discontinuity: bool,
        /// The frame.
        data: Vec<u8>,
    },
    /// From the recorder: every frame with `seq <= up_to` is durably stored.
    Ack {
        /// Highest durable sequence number.
        up_to: u64,
    },
    /// From the gateway: write everything received now and acknowledge it.
    Flush,
    /// Nothing was recorded from the last frame the recorder holds until
    /// `at_micros`, for `reason` (see the module docs).
    Gap {
        /// Feed sequence number (standing for the lost interval).
        seq: u64,
        /// When the recording resumed.
        at_micros: u64,
        /// Why, for the archive's manifest.
        reason: String,
    },
    /// The lesson ended; nothing follows.
    End {
        /// Feed sequence number.
        seq: u64,
        /// When.
        at_micros: u64,
    },
}

/// The codec of a [`FeedFrame::Media`] frame.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MediaCodec {
    /// Opus audio.
    Opus,
    /// VP8 video.
    Vp8,
    /// VP9 video.
    Vp9,
    /// H.264 video.
    H264,
    /// Anything else (kept, for the record).
    Other,
}

impl MediaCodec {
    fn byte(self) -> u8 {
        match self {
            MediaCodec::Opus => 0,
            MediaCodec::Vp8 => 1,
            MediaCodec::Vp9 => 2,
            MediaCodec::H264 => 3,
            MediaCodec::Other => 255,
        }
    }

    fn from_byte(b: u8) -> Result<Self, ProtocolError> {
        Ok(match b {
            0 => MediaCodec::Opus,
            1 => MediaCodec::Vp8,
            2 => MediaCodec::Vp9,
            3 => MediaCodec::H264,
            255 => MediaCodec::Other,
            _ => return Err(malformed("unknown codec")),
        })
    }
}

const KIND_HELLO: u8 = 1;
const KIND_RTP: u8 = 2;
const KIND_SR: u8 = 3;
const KIND_EVENT: u8 = 4;
const KIND_CHAT: u8 = 5;
const KIND_ACK: u8 = 6;
const KIND_END: u8 = 7;
const KIND_MEDIA: u8 = 8;
const KIND_FLUSH: u8 = 9;
const KIND_GAP: u8 = 10;
const KIND_OWNED_HELLO: u8 = 11;

/// Longest gap reason, in bytes (the archive manifest's limit).
pub const MAX_GAP_REASON: usize = 256;

fn source_byte(s: MediaSource) -> u8 {
    match s {
        MediaSource::Microphone => 0,
        MediaSource::Camera => 1,
        MediaSource::ScreenShare => 2,
    }
}

fn byte_source(b: u8) -> Result<MediaSource, ProtocolError> {
    match b {
        0 => Ok(MediaSource::Microphone),
        1 => Ok(MediaSource::Camera),
        2 => Ok(MediaSource::ScreenShare),
        _ => Err(malformed("unknown media source")),
    }
}

fn malformed(what: &str) -> ProtocolError {
    ProtocolError::Malformed(what.to_owned())
}

impl FeedFrame {
    /// The frame's sequence number (`Hello` and `Ack` have none).
    pub fn seq(&self) -> Option<u64> {
        match self {
            FeedFrame::Rtp { seq, .. }
            | FeedFrame::SenderReport { seq, .. }
            | FeedFrame::Event { seq, .. }
            | FeedFrame::Chat { seq, .. }
            | FeedFrame::End { seq, .. }
            | FeedFrame::Gap { seq, .. }
            | FeedFrame::Media { seq, .. } => Some(*seq),
            FeedFrame::Hello { .. } | FeedFrame::Ack { .. } | FeedFrame::Flush => None,
        }
    }

    /// Appends the encoded frame to `out`. Fails only if a field is over its
    /// limit (so that nothing is written that a recorder would refuse).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        out.push(FEED_VERSION);
        match self {
            FeedFrame::Hello {
                lesson,
                resume_from,
                owner_epoch,
            } => {
                // Epoch 0 keeps the original layout (kind 1).
                out.push(if *owner_epoch == 0 {
                    KIND_HELLO
                } else {
                    KIND_OWNED_HELLO
                });
                out.extend_from_slice(lesson.as_bytes());
                out.extend_from_slice(&resume_from.to_be_bytes());
                if *owner_epoch != 0 {
                    out.extend_from_slice(&owner_epoch.to_be_bytes());
                }
            }
            FeedFrame::Rtp {
                seq,
                track,
                arrival_micros,
                packet,
            } => {
                if packet.len() > MAX_RTP_PACKET {
                    out.truncate(start);
                    return Err(ProtocolError::TooLarge {
                        len: packet.len(),
                        max: MAX_RTP_PACKET,
                    });
                }
                out.push(KIND_RTP);
                out.extend_from_slice(&seq.to_be_bytes());
                put_track(out, *track);
                out.extend_from_slice(&arrival_micros.to_be_bytes());
                put_bytes(out, packet);
            }
            FeedFrame::SenderReport {
                seq,
                track,
                arrival_micros,
                ntp_time,
                rtp_time,
            } => {
                out.push(KIND_SR);
                out.extend_from_slice(&seq.to_be_bytes());
                put_track(out, *track);
                out.extend_from_slice(&arrival_micros.to_be_bytes());
                out.extend_from_slice(&ntp_time.to_be_bytes());
                out.extend_from_slice(&rtp_time.to_be_bytes());
            }
            FeedFrame::Event {
                seq,
                at_micros,
                event,
            } => {
                let json =
                    serde_json::to_vec(event).map_err(|e| ProtocolError::Malformed(e.to_string()));
                let json = match json {
                    Ok(j) if j.len() <= MAX_EVENT_JSON => j,
                    Ok(j) => {
                        out.truncate(start);
                        return Err(ProtocolError::TooLarge {
                            len: j.len(),
                            max: MAX_EVENT_JSON,
                        });
                    }
                    Err(e) => {
                        out.truncate(start);
                        return Err(e);
                    }
                };
                out.push(KIND_EVENT);
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(&at_micros.to_be_bytes());
                put_bytes(out, &json);
            }
            FeedFrame::Chat {
                seq,
                at_micros,
                from,
                to,
                text,
            } => {
                let chars = text.chars().count();
                if chars > MAX_CHAT_CHARS {
                    out.truncate(start);
                    return Err(ProtocolError::TooLarge {
                        len: chars,
                        max: MAX_CHAT_CHARS,
                    });
                }
                out.push(KIND_CHAT);
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(&at_micros.to_be_bytes());
                out.extend_from_slice(&from.0.to_be_bytes());
                out.push(u8::from(to.is_some()));
                out.extend_from_slice(&to.map_or(0, |p| p.0).to_be_bytes());
                put_bytes(out, text.as_bytes());
            }
            FeedFrame::Media {
                seq,
                track,
                arrival_micros,
                media_time,
                clock_rate,
                codec,
                discontinuity,
                data,
            } => {
                if data.len() > MAX_MEDIA_FRAME {
                    out.truncate(start);
                    return Err(ProtocolError::TooLarge {
                        len: data.len(),
                        max: MAX_MEDIA_FRAME,
                    });
                }
                out.push(KIND_MEDIA);
                out.extend_from_slice(&seq.to_be_bytes());
                put_track(out, *track);
                out.extend_from_slice(&arrival_micros.to_be_bytes());
                out.extend_from_slice(&media_time.to_be_bytes());
                out.extend_from_slice(&clock_rate.to_be_bytes());
                out.push(codec.byte());
                out.push(u8::from(*discontinuity));
                put_bytes(out, data);
            }
            FeedFrame::Flush => out.push(KIND_FLUSH),
            FeedFrame::Ack { up_to } => {
                out.push(KIND_ACK);
                out.extend_from_slice(&up_to.to_be_bytes());
            }
            FeedFrame::End { seq, at_micros } => {
                out.push(KIND_END);
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(&at_micros.to_be_bytes());
            }
            FeedFrame::Gap {
                seq,
                at_micros,
                reason,
            } => {
                if reason.len() > MAX_GAP_REASON {
                    out.truncate(start);
                    return Err(ProtocolError::TooLarge {
                        len: reason.len(),
                        max: MAX_GAP_REASON,
                    });
                }
                out.push(KIND_GAP);
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(&at_micros.to_be_bytes());
                put_bytes(out, reason.as_bytes());
            }
        }
        let body = out.len() - start - 4;
        // Every body above is bounded far below u32::MAX by the limits checked.
        let len = u32::try_from(body).map_err(|_| ProtocolError::TooLarge {
            len: body,
            max: MAX_FEED_FRAME,
        })?;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    /// The encoded frame as a new buffer.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ProtocolError> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out)
    }

    /// Whether `buf` starts with a whole frame: `Ok(Some(total_len))` if so,
    /// `Ok(None)` if more bytes are needed. Refuses an over-long length, an
    /// unsupported version or an unknown kind as soon as they can be seen,
    /// before the body arrives.
    pub fn check(buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        let Some(prefix) = buf.get(..4) else {
            return Ok(None);
        };
        let mut len_bytes = [0u8; 4];
        len_bytes.copy_from_slice(prefix);
        let len = u32::from_be_bytes(len_bytes) as usize;
        if len > MAX_FEED_FRAME {
            return Err(ProtocolError::TooLarge {
                len,
                max: MAX_FEED_FRAME,
            });
        }
        if len < 2 {
            return Err(malformed("frame shorter than its header"));
        }
        if let Some(&version) = buf.get(4)
            && version != FEED_VERSION
        {
            return Err(ProtocolError::UnsupportedVersion(u32::from(version)));
        }
        if let Some(&kind) = buf.get(5)
            && !(KIND_HELLO..=KIND_OWNED_HELLO).contains(&kind)
        {
            return Err(malformed("unknown frame kind"));
        }
        Ok((buf.len() >= 4 + len).then_some(4 + len))
    }

    /// Parses exactly one whole frame (as delimited by [`FeedFrame::check`]),
    /// refusing trailing bytes.
    pub fn parse(frame: &[u8]) -> Result<FeedFrame, ProtocolError> {
        match Self::check(frame)? {
            Some(n) if n == frame.len() => {}
            Some(_) => return Err(malformed("trailing bytes after frame")),
            None => return Err(malformed("truncated frame")),
        }
        // `check` proved the frame is `4 + len` bytes with `len >= 2`, so the
        // version and kind bytes (indices 4 and 5) are there.
        let mut r = Reader { buf: &frame[6..] };
        let kind = frame[5];
        let parsed = match kind {
            KIND_HELLO | KIND_OWNED_HELLO => {
                let mut id = [0u8; 16];
                id.copy_from_slice(r.take(16)?);
                let resume_from = r.u64()?;
                let owner_epoch = if kind == KIND_OWNED_HELLO {
                    match r.u64()? {
                        0 => return Err(malformed("an owned hello with epoch 0")),
                        e => e,
                    }
                } else {
                    0
                };
                FeedFrame::Hello {
                    lesson: LessonId::from_bytes(id),
                    resume_from,
                    owner_epoch,
                }
            }
            KIND_RTP => {
                let seq = r.u64()?;
                let track = r.track()?;
                let arrival_micros = r.u64()?;
                let packet = r.bytes(MAX_RTP_PACKET)?.to_vec();
                FeedFrame::Rtp {
                    seq,
                    track,
                    arrival_micros,
                    packet,
                }
            }
            KIND_SR => FeedFrame::SenderReport {
                seq: r.u64()?,
                track: r.track()?,
                arrival_micros: r.u64()?,
                ntp_time: r.u64()?,
                rtp_time: r.u32()?,
            },
            KIND_EVENT => {
                let seq = r.u64()?;
                let at_micros = r.u64()?;
                let json = r.bytes(MAX_EVENT_JSON)?;
                let event = serde_json::from_slice(json)
                    .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
                FeedFrame::Event {
                    seq,
                    at_micros,
                    event,
                }
            }
            KIND_CHAT => {
                let seq = r.u64()?;
                let at_micros = r.u64()?;
                let from = ParticipantId(r.u64()?);
                let private = r.u8()?;
                let to = r.u64()?;
                let to = match private {
                    0 if to == 0 => None,
                    1 => Some(ParticipantId(to)),
                    _ => return Err(malformed("bad private flag")),
                };
                let text = std::str::from_utf8(r.bytes(MAX_CHAT_CHARS * 4)?)
                    .map_err(|_| malformed("chat text is not UTF-8"))?;
                if text.chars().count() > MAX_CHAT_CHARS {
                    return Err(ProtocolError::TooLarge {
                        len: text.chars().count(),
                        max: MAX_CHAT_CHARS,
                    });
                }
                FeedFrame::Chat {
                    seq,
                    at_micros,
                    from,
                    to,
                    text: text.to_owned(),
                }
            }
            KIND_MEDIA => {
                let seq = r.u64()?;
                let track = r.track()?;
                let arrival_micros = r.u64()?;
                let media_time = r.u64()?;
                let clock_rate = r.u32()?;
                let codec = MediaCodec::from_byte(r.u8()?)?;
                let discontinuity = match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(malformed("bad media flags")),
                };
                let data = r.bytes(MAX_MEDIA_FRAME)?.to_vec();
                FeedFrame::Media {
                    seq,
                    track,
                    arrival_micros,
                    media_time,
                    clock_rate,
                    codec,
                    discontinuity,
                    data,
                }
            }
            KIND_ACK => FeedFrame::Ack { up_to: r.u64()? },
            KIND_FLUSH => FeedFrame::Flush,
            KIND_END => FeedFrame::End {
                seq: r.u64()?,
                at_micros: r.u64()?,
            },
            KIND_GAP => {
                let seq = r.u64()?;
                let at_micros = r.u64()?;
                let reason = std::str::from_utf8(r.bytes(MAX_GAP_REASON)?)
                    .map_err(|_| malformed("gap reason is not UTF-8"))?;
                FeedFrame::Gap {
                    seq,
                    at_micros,
                    reason: reason.to_owned(),
                }
            }
            _ => return Err(malformed("unknown frame kind")),
        };
        if !r.buf.is_empty() {
            return Err(malformed("trailing bytes in frame body"));
        }
        Ok(parsed)
    }

    /// Decodes the first frame of `buf`: the frame and how many bytes it took,
    /// or `Ok(None)` if it is not all there yet.
    pub fn decode_one(buf: &[u8]) -> Result<Option<(FeedFrame, usize)>, ProtocolError> {
        match Self::check(buf)? {
            Some(n) => Ok(Some((Self::parse(&buf[..n])?, n))),
            None => Ok(None),
        }
    }
}

fn put_track(out: &mut Vec<u8>, track: TrackId) {
    out.extend_from_slice(&track.participant.0.to_be_bytes());
    out.push(source_byte(track.source));
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Callers bound `bytes` by a limit far below u32::MAX.
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// A cursor that refuses to read past the end.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if self.buf.len() < n {
            return Err(malformed("truncated frame body"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, ProtocolError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, ProtocolError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }

    fn track(&mut self) -> Result<TrackId, ProtocolError> {
        let participant = ParticipantId(self.u64()?);
        let source = byte_source(self.u8()?)?;
        Ok(TrackId::new(participant, source))
    }

    fn bytes(&mut self, max: usize) -> Result<&'a [u8], ProtocolError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(ProtocolError::TooLarge { len, max });
        }
        self.take(len)
    }
}
