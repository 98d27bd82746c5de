//! Remuxing recorded media frames into WebM for playback in the browser.
//!
//! A recording holds whole depacketized frames per track (Opus packets,
//! VP8/VP9 frames) with their RTP time. Browsers play WebM (VP8/VP9 + Opus)
//! natively, so the review service puts one participant's camera and
//! microphone (or one screen share) into one WebM file, on the lesson's
//! timeline: t = 0 in every file is the lesson's start, so the page can keep
//! several `<video>` elements in step with one clock.
//!
//! The muxer is libwebm (Google's reference WebM muxer) through the `webm`
//! crate; files are written in "file" mode, with cues
//! and a duration, so a player can seek with HTTP range requests. This module
//! never decides *what* may be shown: the caller passes the ranges to leave
//! out (DSL-only ranges) and those frames are not written at all; video
//! resumes only at the next keyframe after a gap so no decoder sees a frame
//! whose reference was withheld.
//!
//! Pure: no I/O, no clock.

use std::io::Cursor;

use chaperone_protocol::feed::MediaCodec;
use webm::mux::{AudioCodecId, SegmentBuilder, SegmentMode, VideoCodecId, Writer};

/// One frame placed on the lesson timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TimedFrame {
    /// Microseconds since the lesson's start.
    pub t_micros: u64,
    /// Frames before this one were lost (video must wait for a keyframe).
    pub discontinuity: bool,
    /// The frame bytes, as the SFU forwarded them.
    pub data: std::sync::Arc<[u8]>,
}

/// A half-open span of the lesson timeline, microseconds from its start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Span {
    /// Start, inclusive.
    pub from_micros: u64,
    /// End, exclusive.
    pub to_micros: u64,
}

impl Span {
    /// Whether `t` lies inside.
    pub(crate) fn contains(&self, t: u64) -> bool {
        self.from_micros <= t && t < self.to_micros
    }
}

/// The video codecs a WebM file can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VideoCodec {
    /// VP8.
    Vp8,
    /// VP9.
    Vp9,
}

impl VideoCodec {
    /// The WebM-playable codec of a recorded one, if any (H.264 is not).
    pub(crate) fn of(codec: MediaCodec) -> Option<Self> {
        match codec {
            MediaCodec::Vp8 => Some(VideoCodec::Vp8),
            MediaCodec::Vp9 => Some(VideoCodec::Vp9),
            _ => None,
        }
    }
}

/// What to put in one file.
#[derive(Clone, Debug, Default)]
pub(crate) struct MuxInput<'a> {
    /// The video track and its codec, if any.
    pub video: Option<(VideoCodec, &'a [TimedFrame])>,
    /// The Opus audio track, if any.
    pub audio: Option<&'a [TimedFrame]>,
    /// Ranges whose frames must not be written.
    pub omit: &'a [Span],
    /// The lesson's length (the file's stated duration).
    pub duration_micros: u64,
}

/// A muxed file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct WebmFile {
    /// The WebM bytes.
    pub bytes: Vec<u8>,
    /// Video frame size, when there is video.
    pub width: u32,
    /// Video frame height, when there is video.
    pub height: u32,
    /// Video frames written.
    pub video_frames: u64,
    /// Audio frames written.
    pub audio_frames: u64,
    /// Timeline position (microseconds) of the first frame written.
    pub first_micros: Option<u64>,
    /// Clusters as (byte offset in `bytes`, timeline microseconds), in
    /// order: maps a range request's offset to a time for the audit log.
    pub clusters: Vec<(u64, u64)>,
}

impl WebmFile {
    /// The timeline position (microseconds) of the byte at `offset`: the
    /// start of the cluster holding it (0 before the first cluster).
    pub(crate) fn time_at(&self, offset: u64) -> u64 {
        self.clusters
            .iter()
            .take_while(|(o, _)| *o <= offset)
            .last()
            .map_or(0, |(_, t)| *t)
    }
}

/// Why a file could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum WebmError {
    /// Nothing playable is left (no frames, or video without a keyframe).
    #[error("nothing playable to write")]
    Empty,
    /// libwebm refused a parameter or failed.
    #[error("muxer: {0}")]
    Mux(String),
}

/// The Opus identification header (RFC 7845 §5.1) WebM carries as the
/// track's CodecPrivate: version 1, two channels (WebRTC's Opus is
/// signalled as stereo), no pre-skip, 48 kHz, no gain, mapping family 0.
fn opus_head() -> Vec<u8> {
    let mut h = b"OpusHead".to_vec();
    h.push(1);
    h.push(2);
    h.extend_from_slice(&0u16.to_le_bytes());
    h.extend_from_slice(&48_000u32.to_le_bytes());
    h.extend_from_slice(&0i16.to_le_bytes());
    h.push(0);
    h
}

/// A 20 ms Opus frame of silence (CELT, fullband, mono: TOC 0xf8), as
/// WebRTC stacks send it.
pub(crate) const OPUS_SILENCE: [u8; 3] = [0xf8, 0xff, 0xfe];
/// The length of one [`OPUS_SILENCE`] frame.
const SILENCE_STEP_MICROS: u64 = 20_000;

/// Whether a video frame is a keyframe, and its size if it says.
pub(crate) fn keyframe_info(codec: VideoCodec, data: &[u8]) -> Option<(u32, u32)> {
    match codec {
        VideoCodec::Vp8 => vp8_keyframe(data),
        VideoCodec::Vp9 => vp9_keyframe(data),
    }
}

/// VP8 (RFC 6386 §9.1): bit 0 of the frame tag is 0 on a keyframe, which
/// then carries the start code 9d 01 2a and 14-bit width and height.
fn vp8_keyframe(d: &[u8]) -> Option<(u32, u32)> {
    if d.len() < 10 || d[0] & 1 != 0 || d[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u32::from(u16::from_le_bytes([d[6], d[7]]) & 0x3fff);
    let h = u32::from(u16::from_le_bytes([d[8], d[9]]) & 0x3fff);
    (w > 0 && h > 0).then_some((w, h))
}

struct Bits<'a> {
    d: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn bit(&mut self) -> Option<u32> {
        let byte = *self.d.get(self.pos / 8)?;
        let b = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Some(u32::from(b))
    }
    fn bits(&mut self, n: usize) -> Option<u32> {
        let mut v = 0;
        for _ in 0..n {
            v = (v << 1) | self.bit()?;
        }
        Some(v)
    }
}

/// VP9 (bitstream spec §6.2 uncompressed header): a shown keyframe with its
/// sync code and frame size.
fn vp9_keyframe(d: &[u8]) -> Option<(u32, u32)> {
    let mut r = Bits { d, pos: 0 };
    if r.bits(2)? != 2 {
        return None;
    }
    let profile = r.bit()? | (r.bit()? << 1);
    if profile == 3 {
        r.bit()?;
    }
    if r.bit()? == 1 {
        return None; // show_existing_frame
    }
    if r.bit()? != 0 {
        return None; // not a keyframe
    }
    r.bits(2)?; // show_frame, error_resilient_mode
    if r.bits(24)? != 0x49_83_42 {
        return None;
    }
    if profile >= 2 {
        r.bit()?; // ten_or_twelve_bit
    }
    let color_space = r.bits(3)?;
    if color_space != 7 {
        r.bit()?; // color_range
        if profile == 1 || profile == 3 {
            r.bits(3)?; // subsampling_x, subsampling_y, reserved
        }
    } else if profile == 1 || profile == 3 {
        r.bit()?;
    }
    let w = r.bits(16)? + 1;
    let h = r.bits(16)? + 1;
    Some((w, h))
}

/// Muxes `input` into one WebM file. Frames inside `input.omit` are left
/// out; after a gap (omitted frames or a recorded discontinuity) video
/// resumes at the next keyframe. Timestamps are forced strictly increasing
/// per track (libwebm needs them non-decreasing across tracks).
pub(crate) fn mux(input: &MuxInput<'_>) -> Result<WebmFile, WebmError> {
    let omitted = |t: u64| input.omit.iter().any(|s| s.contains(t));
    // (t, is_video, keyframe, data) in timeline order.
    let mut items: Vec<(u64, bool, bool, &[u8])> = Vec::new();
    let mut size = None;
    if let Some((codec, frames)) = input.video {
        let mut need_key = true;
        let mut last: Option<u64> = None;
        for f in frames {
            if omitted(f.t_micros) || f.discontinuity {
                need_key = true;
                if omitted(f.t_micros) {
                    continue;
                }
            }
            let key = keyframe_info(codec, &f.data);
            if need_key && key.is_none() {
                continue;
            }
            if let Some(dim) = key {
                size.get_or_insert(dim);
                need_key = false;
            }
            let t = last.map_or(f.t_micros, |l| f.t_micros.max(l + 1));
            last = Some(t);
            items.push((t, true, key.is_some(), &f.data));
        }
    }
    if let Some(frames) = input.audio {
        let mut last: Option<u64> = None;
        for f in frames.iter().filter(|f| !omitted(f.t_micros)) {
            let t = last.map_or(f.t_micros, |l| f.t_micros.max(l + 1));
            last = Some(t);
            items.push((t, false, true, &f.data));
        }
    }
    if items.is_empty() {
        return Err(WebmError::Empty);
    }
    // Every file starts at the lesson's start: silence from 0 until the
    // first frame, so a player's timeline is the lesson's (a file that
    // started later would otherwise begin its own timeline there).
    let first = items.iter().map(|i| i.0).min().unwrap_or(0);
    let first_audio = items.iter().filter(|i| !i.1).map(|i| i.0).min();
    let pad_until = first_audio.unwrap_or(first);
    let mut t = 0;
    while t + SILENCE_STEP_MICROS <= pad_until {
        items.push((t, false, true, &OPUS_SILENCE));
        t += SILENCE_STEP_MICROS;
    }
    let has_audio = items.iter().any(|i| !i.1);
    // Stable: at equal times video (pushed first) stays first.
    items.sort_by_key(|(t, ..)| *t);
    let err = |e: webm::mux::Error| WebmError::Mux(e.to_string());
    let writer = Writer::new(Cursor::new(Vec::new()));
    let mut builder = SegmentBuilder::new(writer)
        .map_err(err)?
        .set_mode(SegmentMode::File)
        .map_err(err)?
        .set_writing_app("chaperone review")
        .map_err(err)?;
    let mut video_track = None;
    let mut audio_track = None;
    if let (Some((codec, _)), Some((w, h))) = (input.video, size) {
        let id = match codec {
            VideoCodec::Vp8 => VideoCodecId::VP8,
            VideoCodec::Vp9 => VideoCodecId::VP9,
        };
        let (b, t) = builder.add_video_track(w, h, id, Some(1)).map_err(err)?;
        builder = b;
        video_track = Some(t);
    }
    if has_audio {
        let (b, t) = builder
            .add_audio_track(48_000, 2, AudioCodecId::Opus, Some(2))
            .map_err(err)?;
        builder = b.set_codec_private(t, &opus_head()).map_err(err)?;
        audio_track = Some(t);
    }
    let mut segment = builder.build();
    let (mut video_frames, mut audio_frames) = (0u64, 0u64);
    for (t, is_video, key, data) in &items {
        let ns = t.saturating_mul(1000);
        if *is_video {
            if let Some(track) = video_track {
                segment.add_frame(track, data, ns, *key).map_err(err)?;
                video_frames += 1;
            }
        } else if let Some(track) = audio_track {
            segment.add_frame(track, data, ns, true).map_err(err)?;
            audio_frames += 1;
        }
    }
    if video_frames + audio_frames == 0 {
        return Err(WebmError::Empty);
    }
    // Duration in the segment's timecode scale (libwebm's default: 1 ms).
    let duration_ms = (input.duration_micros / 1000).max(1);
    let writer = segment
        .finalize(Some(duration_ms))
        .map_err(|_| WebmError::Mux("finalising the segment failed".to_owned()))?;
    let bytes = writer.into_inner().into_inner();
    let clusters = cluster_index(&bytes);
    let (width, height) = size.unwrap_or((0, 0));
    Ok(WebmFile {
        bytes,
        width,
        height,
        video_frames,
        audio_frames,
        first_micros: items.first().map(|(t, ..)| *t),
        clusters,
    })
}

/// An EBML element header at `pos`: (id, data start, data size).
pub(crate) fn element_at(b: &[u8], pos: usize) -> Option<(u32, usize, Option<u64>)> {
    let first = *b.get(pos)?;
    let id_len = first.leading_zeros() as usize + 1;
    if id_len > 4 {
        return None;
    }
    let mut id = 0u32;
    for i in 0..id_len {
        id = (id << 8) | u32::from(*b.get(pos + i)?);
    }
    let p = pos + id_len;
    let lead = *b.get(p)?;
    let len = lead.leading_zeros() as usize + 1;
    if len > 8 {
        return None;
    }
    let mut size = u64::from(lead) & ((1u64 << (8 - len)) - 1);
    let mut all_ones = size == (1u64 << (8 - len)) - 1;
    for i in 1..len {
        let byte = *b.get(p + i)?;
        all_ones &= byte == 0xff;
        size = (size << 8) | u64::from(byte);
    }
    Some((id, p + len, (!all_ones).then_some(size)))
}

/// EBML ids this module reads back.
pub(crate) mod ids {
    /// Segment.
    pub(crate) const SEGMENT: u32 = 0x1853_8067;
    /// Cluster.
    pub(crate) const CLUSTER: u32 = 0x1F43_B675;
    /// Cluster timestamp.
    pub(crate) const TIMESTAMP: u32 = 0xE7;
    /// SimpleBlock.
    pub(crate) const SIMPLE_BLOCK: u32 = 0xA3;
    /// BlockGroup.
    pub(crate) const BLOCK_GROUP: u32 = 0xA0;
    /// Block (inside a BlockGroup).
    pub(crate) const BLOCK: u32 = 0xA1;
}

/// The clusters of a WebM file (ours: known sizes, 1 ms timecode scale) as
/// (byte offset, microseconds).
fn cluster_index(b: &[u8]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut pos = 0;
    // Top level: EBML header, then the Segment, whose children we walk.
    while let Some((id, start, size)) = element_at(b, pos) {
        if id == ids::SEGMENT {
            pos = start;
            break;
        }
        let Some(size) = size else { return out };
        pos = start + usize::try_from(size).unwrap_or(usize::MAX / 2);
    }
    while let Some((id, start, size)) = element_at(b, pos) {
        let Some(size) = size.and_then(|s| usize::try_from(s).ok()) else {
            break;
        };
        if id == ids::CLUSTER
            && let Some((tid, ts, tsize)) = element_at(b, start)
            && tid == ids::TIMESTAMP
        {
            let n = usize::try_from(tsize.unwrap_or(0)).unwrap_or(0).min(8);
            let v = b
                .get(ts..ts + n)
                .map_or(0, |s| s.iter().fold(0u64, |a, x| (a << 8) | u64::from(*x)));
            out.push((pos as u64, v * 1000));
        }
        pos = start.saturating_add(size);
    }
    out
}

/// Every block in a WebM file as (track number, timeline microseconds,
/// payload): for tests and for checking what a served file holds.
pub fn blocks(b: &[u8]) -> Vec<(u64, u64, Vec<u8>)> {
    let mut out = Vec::new();
    for (cluster, cluster_micros) in cluster_index(b) {
        let Some((_, start, Some(size))) = element_at(b, cluster as usize) else {
            continue;
        };
        let end = start + usize::try_from(size).unwrap_or(0);
        let mut pos = start;
        while pos < end {
            let Some((id, s, Some(sz))) = element_at(b, pos) else {
                break;
            };
            let sz = usize::try_from(sz).unwrap_or(0);
            let body = |s: usize, sz: usize| -> Option<(u64, u64, Vec<u8>)> {
                let data = b.get(s..s + sz)?;
                let tlen = data.first()?.leading_zeros() as usize + 1;
                let track = u64::from(*data.first()? & (0xff >> tlen));
                let rel = i16::from_be_bytes([*data.get(tlen)?, *data.get(tlen + 1)?]);
                let t = (cluster_micros as i64 + i64::from(rel) * 1000).max(0) as u64;
                Some((track, t, data.get(tlen + 3..)?.to_vec()))
            };
            if id == ids::SIMPLE_BLOCK {
                out.extend(body(s, sz));
            } else if id == ids::BLOCK_GROUP
                && let Some((bid, bs, Some(bsz))) = element_at(b, s)
                && bid == ids::BLOCK
            {
                out.extend(body(bs, usize::try_from(bsz).unwrap_or(0)));
            }
            pos = s + sz;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VP8 keyframe header of `w`×`h` followed by `fill`.
    fn vp8_key(w: u16, h: u16, fill: u8) -> Vec<u8> {
        let mut d = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
        d.extend_from_slice(&w.to_le_bytes());
        d.extend_from_slice(&h.to_le_bytes());
        d.extend(std::iter::repeat_n(fill, 40));
        d
    }

    fn frame(t_ms: u64, data: Vec<u8>) -> TimedFrame {
        TimedFrame {
            t_micros: t_ms * 1000,
            discontinuity: false,
            data: data.into(),
        }
    }

    #[test]
    fn vp8_and_vp9_keyframes_are_recognised() {
        assert_eq!(vp8_keyframe(&vp8_key(640, 480, 0)), Some((640, 480)));
        assert_eq!(vp8_keyframe(&[0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0]), None);
        // VP9 profile 0 keyframe, 320x240: marker 10, profile 00, show_existing 0,
        // key 0, show 1, err 0, sync code, color space 0 (+ range 0), sizes.
        let mut bits = String::from("10" /*marker*/);
        bits += "00"; // profile
        bits += "0"; // show_existing_frame
        bits += "0"; // frame_type key
        bits += "10"; // show_frame, error_res
        bits += &format!("{:024b}", 0x49_83_42);
        bits += "000"; // color space
        bits += "0"; // color range
        bits += &format!("{:016b}", 319);
        bits += &format!("{:016b}", 239);
        while bits.len() % 8 != 0 {
            bits.push('0');
        }
        let bytes: Vec<u8> = bits
            .as_bytes()
            .chunks(8)
            .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 2).unwrap())
            .collect();
        assert_eq!(vp9_keyframe(&bytes), Some((320, 240)));
    }

    #[test]
    fn omitted_ranges_are_not_written_and_video_resumes_at_a_keyframe() {
        let video: Vec<TimedFrame> = (0..40)
            .map(|i| {
                let data = if i % 10 == 0 {
                    vp8_key(64, 48, i as u8)
                } else {
                    let mut d = vec![0x01u8; 30];
                    d[1] = i as u8;
                    d
                };
                frame(i * 100, data)
            })
            .collect();
        let audio: Vec<TimedFrame> = (0..200)
            .map(|i| frame(i * 20, vec![0xfc, i as u8]))
            .collect();
        let omit = [Span {
            from_micros: 1_500_000,
            to_micros: 2_500_000,
        }];
        let file = mux(&MuxInput {
            video: Some((VideoCodec::Vp8, &video)),
            audio: Some(&audio),
            omit: &omit,
            duration_micros: 4_000_000,
        })
        .unwrap();
        assert_eq!((file.width, file.height), (64, 48));
        let blocks = blocks(&file.bytes);
        assert!(!blocks.is_empty());
        assert_eq!(blocks.len() as u64, file.video_frames + file.audio_frames);
        for (_, t, _) in &blocks {
            assert!(
                !omit[0].contains(*t),
                "a block at {t} µs is in the omitted range"
            );
        }
        // Video restarts at the keyframe at 3.0 s, not at 2.5 s.
        let video_times: Vec<u64> = blocks.iter().filter(|b| b.0 == 1).map(|b| b.1).collect();
        assert!(video_times.contains(&1_400_000));
        assert!(
            !video_times
                .iter()
                .any(|t| (1_500_000..3_000_000).contains(t))
        );
        assert!(video_times.contains(&3_000_000));
        // Audio resumes straight after the range.
        assert!(blocks.iter().any(|b| b.0 == 2 && b.1 == 2_500_000));
        assert_eq!(file.time_at(0), 0);
    }

    #[test]
    fn a_file_that_starts_late_begins_at_the_lessons_start() {
        // A screen share from 5 s: silence from 0, so the file's timeline is the lesson's.
        let video: Vec<TimedFrame> = (0..10)
            .map(|i| frame(5000 + i * 100, vp8_key(32, 32, i as u8)))
            .collect();
        let file = mux(&MuxInput {
            video: Some((VideoCodec::Vp8, &video)),
            audio: None,
            omit: &[],
            duration_micros: 6_000_000,
        })
        .unwrap();
        let b = blocks(&file.bytes);
        assert_eq!(b.first().map(|x| (x.0, x.1)), Some((2, 0)));
        assert!(
            b.iter()
                .filter(|x| x.0 == 2)
                .all(|x| x.2 == OPUS_SILENCE && x.1 < 5_000_000)
        );
        assert_eq!(b.iter().filter(|x| x.0 == 1).count(), 10);
        assert_eq!(file.first_micros, Some(0));
    }

    #[test]
    fn video_without_a_keyframe_is_empty() {
        let video = vec![frame(0, vec![0x01; 20])];
        assert!(matches!(
            mux(&MuxInput {
                video: Some((VideoCodec::Vp8, &video)),
                audio: None,
                omit: &[],
                duration_micros: 1000,
            }),
            Err(WebmError::Empty)
        ));
    }
}
