//! Segments: the feed frames of one interval of one lesson, encoded and
//! sealed with age to public-key recipients.
//!
//! This module owns the plaintext segment format and the *sealing* side of
//! encryption. It must never hold or accept an age identity (a secret key):
//! the recorder's ingest path only knows [`RecipientSet`], a list of
//! [`age::x25519::Recipient`]s, so a compromised recorder cannot read what it
//! wrote (docs/security.md §20). Opening a segment lives in
//! [`crate::review`], which is for the review service only.
//!
//! # Plaintext format (`CHAPSEG1`)
//!
//! All integers are unsigned big-endian. The format is versioned by its magic:
//! a future incompatible format gets a new magic, never a silent change.
//!
//! ```text
//! header (68 bytes)
//!   magic              8   b"CHAPSEG1"
//!   lesson id         16   the lesson's 128-bit id (raw bytes)
//!   segment index      8   0, 1, 2, ... within the lesson
//!   first seq          8   seq of the first record
//!   last seq           8   seq of the last record
//!   start              8   interval start, unix microseconds
//!   end                8   interval end, unix microseconds
//!   record count       4   number of records that follow (>= 1)
//! record (repeated record-count times)
//!   seq                8   feed sequence number, strictly increasing
//!   arrival            8   arrival time at the gateway, unix microseconds
//!   frame length       4   length of the frame in bytes
//!   frame              n   the feed frame, opaque here
//! ```
//!
//! Nothing may follow the last record. Decoding checks every length before
//! reading and refuses anything outside the limits below with a typed
//! [`SegmentError`]; it never panics on hostile input.

use std::io::Write;

use chaperone_protocol::LessonId;

/// Magic bytes that open every plaintext segment; the trailing `1` is the
/// format version.
pub const MAGIC: [u8; 8] = *b"CHAPSEG1";
/// Length of the fixed header.
pub const HEADER_LEN: usize = 8 + 16 + 8 * 5 + 4;
/// Length of a record's fixed part (seq, arrival, frame length).
pub const RECORD_HEADER_LEN: usize = 8 + 8 + 4;
/// Largest single feed frame a segment accepts.
pub const MAX_FRAME_LEN: usize = 4 * 1024 * 1024;
/// Most records a segment may hold.
pub const MAX_RECORDS: usize = 1_000_000;
/// Largest encoded (plaintext) segment. Ten seconds of a full class's
/// video is tens of megabytes; this leaves generous headroom while bounding
/// what a reader must buffer.
pub const MAX_PLAINTEXT_LEN: usize = 256 * 1024 * 1024;
/// Most recipients one segment is sealed to (review key, escrow keys).
pub const MAX_RECIPIENTS: usize = 8;

/// One feed frame as the recorder received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Feed sequence number assigned by the gateway; strictly increasing.
    pub seq: u64,
    /// When the gateway received the media or event, unix microseconds.
    pub arrival_unix_micros: u64,
    /// The encoded feed frame (opaque to this module).
    pub frame: Vec<u8>,
}

/// The fixed header of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The lesson this segment belongs to.
    pub lesson: LessonId,
    /// Position of the segment in the lesson, from 0.
    pub index: u64,
    /// Seq of the first record.
    pub first_seq: u64,
    /// Seq of the last record.
    pub last_seq: u64,
    /// Interval start, unix microseconds.
    pub start_unix_micros: u64,
    /// Interval end, unix microseconds.
    pub end_unix_micros: u64,
}

/// A validated segment: a header and at least one record, seqs strictly
/// increasing, within all size limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    header: SegmentHeader,
    records: Vec<Record>,
    encoded_len: usize,
}

/// Why a segment could not be built or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SegmentError {
    /// A segment must hold at least one record.
    #[error("a segment needs at least one record")]
    Empty,
    /// More records than [`MAX_RECORDS`].
    #[error("{count} records exceed the limit of {MAX_RECORDS}")]
    TooManyRecords {
        /// Number of records given or announced.
        count: usize,
    },
    /// A frame longer than [`MAX_FRAME_LEN`].
    #[error("frame of {len} bytes (seq {seq}) exceeds the limit of {MAX_FRAME_LEN}")]
    FrameTooLarge {
        /// Seq of the offending record.
        seq: u64,
        /// Its length.
        len: usize,
    },
    /// The encoded segment would be, or is, longer than [`MAX_PLAINTEXT_LEN`].
    #[error("segment of {len} bytes exceeds the limit of {MAX_PLAINTEXT_LEN}")]
    TooLarge {
        /// Encoded length (at least).
        len: usize,
    },
    /// Seqs must strictly increase.
    #[error("seq {seq} does not follow {prev}")]
    SeqNotIncreasing {
        /// The previous record's seq.
        prev: u64,
        /// The offending seq.
        seq: u64,
    },
    /// The interval ends before it starts.
    #[error("interval ends ({end}) before it starts ({start})")]
    BadInterval {
        /// Start, unix microseconds.
        start: u64,
        /// End, unix microseconds.
        end: u64,
    },
    /// The input does not start with [`MAGIC`] (not a segment, or another version).
    #[error("not a CHAPSEG1 segment")]
    BadMagic,
    /// The input ends in the middle of a header or record.
    #[error("truncated: needed {needed} bytes at offset {offset}")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Where they were needed.
        offset: usize,
    },
    /// Bytes follow the last record.
    #[error("{count} bytes after the last record")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// The header's first/last seq disagree with the records.
    #[error("header says seqs {header_first}..={header_last}, records say {first}..={last}")]
    HeaderMismatch {
        /// First seq in the header.
        header_first: u64,
        /// Last seq in the header.
        header_last: u64,
        /// First record's seq.
        first: u64,
        /// Last record's seq.
        last: u64,
    },
}

impl Segment {
    /// Builds a segment from records in arrival order, checking every limit.
    pub fn new(
        lesson: LessonId,
        index: u64,
        start_unix_micros: u64,
        end_unix_micros: u64,
        records: Vec<Record>,
    ) -> Result<Self, SegmentError> {
        if end_unix_micros < start_unix_micros {
            return Err(SegmentError::BadInterval {
                start: start_unix_micros,
                end: end_unix_micros,
            });
        }
        let (first, last) = match (records.first(), records.last()) {
            (Some(f), Some(l)) => (f.seq, l.seq),
            _ => return Err(SegmentError::Empty),
        };
        if records.len() > MAX_RECORDS {
            return Err(SegmentError::TooManyRecords {
                count: records.len(),
            });
        }
        let mut len = HEADER_LEN;
        let mut prev: Option<u64> = None;
        for r in &records {
            if r.frame.len() > MAX_FRAME_LEN {
                return Err(SegmentError::FrameTooLarge {
                    seq: r.seq,
                    len: r.frame.len(),
                });
            }
            if let Some(p) = prev
                && r.seq <= p
            {
                return Err(SegmentError::SeqNotIncreasing {
                    prev: p,
                    seq: r.seq,
                });
            }
            prev = Some(r.seq);
            len += RECORD_HEADER_LEN + r.frame.len();
            if len > MAX_PLAINTEXT_LEN {
                return Err(SegmentError::TooLarge { len });
            }
        }
        Ok(Self {
            header: SegmentHeader {
                lesson,
                index,
                first_seq: first,
                last_seq: last,
                start_unix_micros,
                end_unix_micros,
            },
            records,
            encoded_len: len,
        })
    }

    /// The header.
    pub fn header(&self) -> &SegmentHeader {
        &self.header
    }

    /// The records, seqs strictly increasing.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// Length of [`Segment::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        self.encoded_len
    }

    /// The plaintext `CHAPSEG1` encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len);
        let h = &self.header;
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(h.lesson.as_bytes());
        for v in [
            h.index,
            h.first_seq,
            h.last_seq,
            h.start_unix_micros,
            h.end_unix_micros,
        ] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        // Cast is fine: `new` and `decode` bound the count by MAX_RECORDS < u32::MAX.
        out.extend_from_slice(&(self.records.len() as u32).to_be_bytes());
        for r in &self.records {
            out.extend_from_slice(&r.seq.to_be_bytes());
            out.extend_from_slice(&r.arrival_unix_micros.to_be_bytes());
            // Cast is fine: frames are bounded by MAX_FRAME_LEN < u32::MAX.
            out.extend_from_slice(&(r.frame.len() as u32).to_be_bytes());
            out.extend_from_slice(&r.frame);
        }
        out
    }

    /// Parses a plaintext segment, checking lengths before reading and
    /// refusing anything malformed or over the limits.
    pub fn decode(input: &[u8]) -> Result<Self, SegmentError> {
        if input.len() > MAX_PLAINTEXT_LEN {
            return Err(SegmentError::TooLarge { len: input.len() });
        }
        let mut cur = Cursor { buf: input, pos: 0 };
        let magic = cur.take(8)?;
        if magic != MAGIC {
            return Err(SegmentError::BadMagic);
        }
        let mut lesson = [0u8; 16];
        lesson.copy_from_slice(cur.take(16)?);
        let index = cur.u64()?;
        let header_first = cur.u64()?;
        let header_last = cur.u64()?;
        let start = cur.u64()?;
        let end = cur.u64()?;
        let count = cur.u32()? as usize;
        if count > MAX_RECORDS {
            return Err(SegmentError::TooManyRecords { count });
        }
        // Each record needs at least its fixed part: refuse a count the input
        // cannot hold before allocating for it.
        let room = (input.len() - cur.pos) / RECORD_HEADER_LEN;
        if count > room {
            return Err(SegmentError::Truncated {
                needed: count * RECORD_HEADER_LEN,
                offset: cur.pos,
            });
        }
        let mut records = Vec::with_capacity(count);
        for _ in 0..count {
            let seq = cur.u64()?;
            let arrival = cur.u64()?;
            let len = cur.u32()? as usize;
            if len > MAX_FRAME_LEN {
                return Err(SegmentError::FrameTooLarge { seq, len });
            }
            let frame = cur.take(len)?.to_vec();
            records.push(Record {
                seq,
                arrival_unix_micros: arrival,
                frame,
            });
        }
        if cur.pos != input.len() {
            return Err(SegmentError::TrailingBytes {
                count: input.len() - cur.pos,
            });
        }
        let segment = Self::new(LessonId::from_bytes(lesson), index, start, end, records)?;
        if segment.header.first_seq != header_first || segment.header.last_seq != header_last {
            return Err(SegmentError::HeaderMismatch {
                header_first,
                header_last,
                first: segment.header.first_seq,
                last: segment.header.last_seq,
            });
        }
        Ok(segment)
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SegmentError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(SegmentError::Truncated {
                needed: n,
                offset: self.pos,
            })?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u64(&mut self) -> Result<u64, SegmentError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }

    fn u32(&mut self) -> Result<u32, SegmentError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(b))
    }
}

/// The public keys a lesson's segments are sealed to: the review key and,
/// optionally, escrow keys. Holds [`age::x25519::Recipient`]s only; there is
/// deliberately no way to put an identity (secret key) in here.
#[derive(Clone, Debug)]
pub struct RecipientSet {
    recipients: Vec<age::x25519::Recipient>,
}

/// Why segments could not be sealed, or a recipient list not read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// At least one recipient is required.
    #[error("no recipients: a segment must be sealed to at least the review key")]
    NoRecipients,
    /// More than [`MAX_RECIPIENTS`] recipients.
    #[error("{count} recipients exceed the limit of {MAX_RECIPIENTS}")]
    TooManyRecipients {
        /// How many were given.
        count: usize,
    },
    /// A secret key (age identity) was given where only public keys belong.
    /// The recorder must never hold one.
    #[error(
        "line {line}: this is an age SECRET key; the recorder takes only public recipients (age1...)"
    )]
    SecretKeyGiven {
        /// 1-based line of the offending entry.
        line: usize,
    },
    /// A line is not an X25519 age recipient.
    #[error("line {line}: not an age X25519 recipient: {reason}")]
    InvalidRecipient {
        /// 1-based line of the offending entry.
        line: usize,
        /// What the parser said.
        reason: String,
    },
    /// age refused the recipient set.
    #[error("age could not encrypt: {0}")]
    Encrypt(#[from] age::EncryptError),
    /// Writing the ciphertext failed.
    #[error("writing sealed segment: {0}")]
    Io(#[from] std::io::Error),
}

impl RecipientSet {
    /// A set of one or more recipients.
    pub fn new(recipients: Vec<age::x25519::Recipient>) -> Result<Self, SealError> {
        if recipients.is_empty() {
            return Err(SealError::NoRecipients);
        }
        if recipients.len() > MAX_RECIPIENTS {
            return Err(SealError::TooManyRecipients {
                count: recipients.len(),
            });
        }
        Ok(Self { recipients })
    }

    /// Parses a recipients file: one `age1...` key per line, blank lines and
    /// `#` comments ignored (the format of `age -R`). A secret key anywhere
    /// in it is refused with [`SealError::SecretKeyGiven`].
    pub fn parse(text: &str) -> Result<Self, SealError> {
        let mut recipients = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.to_ascii_uppercase().starts_with("AGE-SECRET-KEY-") {
                return Err(SealError::SecretKeyGiven { line: i + 1 });
            }
            let r = line.parse::<age::x25519::Recipient>().map_err(|e| {
                SealError::InvalidRecipient {
                    line: i + 1,
                    reason: e.to_string(),
                }
            })?;
            recipients.push(r);
        }
        Self::new(recipients)
    }

    /// The recipients, in the order given.
    pub fn recipients(&self) -> &[age::x25519::Recipient] {
        &self.recipients
    }

    /// The recipients as `age1...` strings (for the manifest).
    pub fn to_strings(&self) -> Vec<String> {
        self.recipients.iter().map(|r| r.to_string()).collect()
    }
}

/// Encodes `segment` and encrypts it to every recipient in `recipients`
/// with age (binary, not armored). Any one recipient's identity opens it,
/// with this crate's [`crate::review::open_segment`] or the `age` tool.
pub fn seal(segment: &Segment, recipients: &RecipientSet) -> Result<Vec<u8>, SealError> {
    let encryptor = age::Encryptor::with_recipients(
        recipients
            .recipients
            .iter()
            .map(|r| r as &dyn age::Recipient),
    )?;
    let plaintext = segment.encode();
    // age adds a header (~100 bytes per recipient) and 16 bytes per 64 KiB chunk.
    let mut out = Vec::with_capacity(plaintext.len() + plaintext.len() / 4096 + 1024);
    let mut writer = encryptor.wrap_output(&mut out)?;
    writer.write_all(&plaintext)?;
    writer.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lesson() -> LessonId {
        LessonId::from_bytes([7; 16])
    }

    fn rec(seq: u64, len: usize) -> Record {
        Record {
            seq,
            arrival_unix_micros: 1_000 + seq,
            frame: vec![seq as u8; len],
        }
    }

    #[test]
    fn round_trip() {
        let s = Segment::new(lesson(), 3, 10, 20, vec![rec(5, 3), rec(6, 0), rec(9, 100)]).unwrap();
        let bytes = s.encode();
        assert_eq!(bytes.len(), s.encoded_len());
        assert_eq!(Segment::decode(&bytes).unwrap(), s);
        assert_eq!(s.header().first_seq, 5);
        assert_eq!(s.header().last_seq, 9);
    }

    #[test]
    fn refuses_bad_input() {
        assert_eq!(
            Segment::new(lesson(), 0, 0, 1, vec![]).unwrap_err(),
            SegmentError::Empty
        );
        assert!(matches!(
            Segment::new(lesson(), 0, 0, 1, vec![rec(2, 1), rec(2, 1)]).unwrap_err(),
            SegmentError::SeqNotIncreasing { prev: 2, seq: 2 }
        ));
        let good = Segment::new(lesson(), 0, 0, 1, vec![rec(1, 4)])
            .unwrap()
            .encode();
        for cut in 0..good.len() {
            assert!(Segment::decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = good.clone();
        extra.push(0);
        assert_eq!(
            Segment::decode(&extra).unwrap_err(),
            SegmentError::TrailingBytes { count: 1 }
        );
        let mut magic = good.clone();
        magic[7] = b'2';
        assert_eq!(Segment::decode(&magic).unwrap_err(), SegmentError::BadMagic);
        // A huge record count is refused before anything is allocated.
        let mut count = good.clone();
        count[HEADER_LEN - 4..HEADER_LEN].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            Segment::decode(&count).unwrap_err(),
            SegmentError::TooManyRecords { .. }
        ));
        // A huge frame length is refused.
        let mut frame = good.clone();
        frame[HEADER_LEN + 16..HEADER_LEN + 20].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            Segment::decode(&frame).unwrap_err(),
            SegmentError::FrameTooLarge { .. }
        ));
        // The header must agree with the records.
        let mut hdr = good;
        hdr[32..40].copy_from_slice(&0u64.to_be_bytes());
        assert!(matches!(
            Segment::decode(&hdr).unwrap_err(),
            SegmentError::HeaderMismatch { .. }
        ));
    }

    #[test]
    fn recipient_file_refuses_secret_keys() {
        let id = age::x25519::Identity::generate();
        let text = format!("# review\n{}\n", id.to_public());
        assert_eq!(RecipientSet::parse(&text).unwrap().recipients().len(), 1);
        use age::secrecy::ExposeSecret;
        let secret = format!("{}\n", id.to_string().expose_secret());
        assert!(matches!(
            RecipientSet::parse(&secret).unwrap_err(),
            SealError::SecretKeyGiven { line: 1 }
        ));
        assert!(matches!(
            RecipientSet::parse("# nothing\n").unwrap_err(),
            SealError::NoRecipients
        ));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Decoding arbitrary bytes never panics.
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Segment::decode(&bytes);
        }

        /// Any valid segment survives encode/decode, and any single-byte
        /// corruption of its encoding either fails or decodes to a segment
        /// that re-encodes to the corrupted bytes (never a panic, never a
        /// silent mismatch).
        #[test]
        fn round_trip_and_corruption(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..8),
            at in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let records: Vec<Record> = frames.into_iter().enumerate()
                .map(|(i, frame)| Record { seq: 100 + i as u64, arrival_unix_micros: i as u64, frame })
                .collect();
            let s = Segment::new(LessonId::from_bytes([1; 16]), 2, 0, 10, records).unwrap();
            let mut bytes = s.encode();
            prop_assert_eq!(&Segment::decode(&bytes).unwrap(), &s);
            let i = at.index(bytes.len());
            bytes[i] ^= flip;
            if let Ok(d) = Segment::decode(&bytes) {
                prop_assert_eq!(d.encode(), bytes);
            }
        }
    }
}
