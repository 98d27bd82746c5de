//! `recorder verify`: checks one lesson's archive end to end and reports
//! every problem found, not just the first (docs/security.md §21).
//!
//! Checks, in order: every manifest checkpoint's Ed25519 signature against a
//! public key obtained out of band (never the copy in the archive); that the
//! latest checkpoint is final and extends every earlier one; the hash chain
//! and index order of its entries; seq continuity (a jump must be covered by
//! a recorded gap); and every segment's presence, size and SHA-256 as stored.
//! Objects in the lesson that the manifest does not account for are reported
//! too. Recorded gaps are reported as notices: honest, but worth knowing.
//!
//! Verification needs no age identity and reads no clock. It never changes
//! the store.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chaperone_protocol::LessonId;
use futures_util::StreamExt as _;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::keys::RecorderPublicKey;
use crate::layout::{self, ObjectKind};
use crate::manifest::{Entry, GENESIS_PREV, MAX_MANIFEST_LEN, Manifest};

/// One thing verify found. Everything but [`Finding::RecordedGap`] is a
/// problem that makes verification fail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Finding {
    /// The lesson has no manifest checkpoint at all.
    NoManifest,
    /// A checkpoint has no signature object.
    SignatureMissing {
        /// The checkpoint.
        checkpoint: u64,
    },
    /// A checkpoint's signature does not verify with the given key: the
    /// manifest was edited, or signed by someone else.
    SignatureInvalid {
        /// The checkpoint.
        checkpoint: u64,
    },
    /// A checkpoint could not be read or parsed.
    ManifestUnreadable {
        /// The checkpoint.
        checkpoint: u64,
        /// Why.
        reason: String,
    },
    /// A checkpoint's `checkpoint` field disagrees with its object name.
    CheckpointNumberMismatch {
        /// Number in the name.
        checkpoint: u64,
        /// Number inside.
        found: u64,
    },
    /// A checkpoint names another lesson.
    WrongLesson {
        /// The checkpoint.
        checkpoint: u64,
        /// The lesson it names.
        found: String,
    },
    /// The latest checkpoint is not final: the lesson did not end cleanly,
    /// or later checkpoints were removed.
    NotFinal {
        /// The latest checkpoint.
        checkpoint: u64,
    },
    /// An earlier checkpoint is not a prefix of the latest one.
    CheckpointDiverges {
        /// The earlier checkpoint.
        checkpoint: u64,
        /// First entry position (or, for gaps, gap position) where they differ.
        position: u64,
        /// `"entries"` or `"gaps"`.
        part: &'static str,
    },
    /// The entry at a position carries another index (entries reordered,
    /// duplicated or dropped in the manifest).
    EntryOutOfPlace {
        /// Position in the manifest's entry list.
        position: u64,
        /// The index the entry claims.
        index: u64,
    },
    /// An entry's `prev` is not the hash of the entry before it.
    ChainBroken {
        /// The entry's index.
        index: u64,
        /// The expected `prev`.
        expected: String,
        /// The `prev` found.
        found: String,
    },
    /// An entry's times or seqs are inverted.
    BadEntry {
        /// The entry's index.
        index: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// Seqs between two segments are missing and no gap records why.
    UnexplainedSeqGap {
        /// The index of the segment after the hole.
        index: u64,
        /// First missing seq.
        first_missing_seq: u64,
        /// Last missing seq.
        last_missing_seq: u64,
    },
    /// A segment's seqs overlap the previous segment's.
    SeqOverlap {
        /// The index of the later segment.
        index: u64,
    },
    /// A segment in the manifest is not in the store.
    SegmentMissing {
        /// Its index.
        index: u64,
    },
    /// A stored segment's bytes are not those the manifest recorded.
    HashMismatch {
        /// Its index.
        index: u64,
        /// Recorded SHA-256.
        expected_sha256: String,
        /// SHA-256 of the stored bytes.
        found_sha256: String,
        /// Recorded size.
        expected_size: u64,
        /// Stored size.
        found_size: u64,
    },
    /// The object stored at one index holds the segment the manifest
    /// records at another (segments swapped or reordered).
    SegmentSwapped {
        /// Where the object is stored.
        index: u64,
        /// The index whose recorded hash it matches.
        holds: u64,
    },
    /// A stored segment that the manifest does not list.
    ExtraSegment {
        /// Its index (from its name).
        index: u64,
    },
    /// An object under the lesson that is no part of the layout.
    UnknownObject {
        /// Its path.
        path: String,
    },
    /// The store failed while reading.
    StoreError {
        /// The path being read (or listed).
        path: String,
        /// The error.
        reason: String,
    },
    /// An object a resuming recorder set aside: written after the last
    /// signed checkpoint of a recorder that stopped, never acknowledged, its
    /// frames replayed into the segments that follow. Not a failure.
    SetAside {
        /// Its path.
        path: String,
    },
    /// A loss the recorder wrote down. Not a failure: reported so that no
    /// reader mistakes the recording for complete.
    RecordedGap {
        /// First missing seq.
        first_missing_seq: u64,
        /// Last missing seq.
        last_missing_seq: u64,
        /// Start, unix microseconds.
        from: u64,
        /// End, unix microseconds.
        to: u64,
        /// Why.
        reason: String,
    },
}

impl Finding {
    /// Whether this finding fails verification.
    pub fn is_problem(&self) -> bool {
        !matches!(self, Finding::RecordedGap { .. } | Finding::SetAside { .. })
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        match self {
            Finding::NoManifest => "no manifest checkpoint found".into(),
            Finding::SignatureMissing { checkpoint } => {
                format!("checkpoint {checkpoint}: signature missing")
            }
            Finding::SignatureInvalid { checkpoint } => format!(
                "checkpoint {checkpoint}: signature INVALID (manifest edited or signed by another key)"
            ),
            Finding::ManifestUnreadable { checkpoint, reason } => {
                format!("checkpoint {checkpoint}: unreadable: {reason}")
            }
            Finding::CheckpointNumberMismatch { checkpoint, found } => {
                format!("checkpoint {checkpoint}: says it is checkpoint {found}")
            }
            Finding::WrongLesson { checkpoint, found } => {
                format!("checkpoint {checkpoint}: belongs to lesson {found}")
            }
            Finding::NotFinal { checkpoint } => format!(
                "latest checkpoint {checkpoint} is not final (lesson unfinished, or later checkpoints removed)"
            ),
            Finding::CheckpointDiverges {
                checkpoint,
                position,
                part,
            } => format!(
                "checkpoint {checkpoint} disagrees with the latest at {part} position {position}"
            ),
            Finding::EntryOutOfPlace { position, index } => {
                format!("manifest position {position} holds entry for segment {index}")
            }
            Finding::ChainBroken {
                index,
                expected,
                found,
            } => format!("segment {index}: chain broken (prev {found}, expected {expected})"),
            Finding::BadEntry { index, reason } => format!("segment {index}: {reason}"),
            Finding::UnexplainedSeqGap {
                index,
                first_missing_seq,
                last_missing_seq,
            } => format!(
                "before segment {index}: seqs {first_missing_seq}..={last_missing_seq} missing with no recorded gap"
            ),
            Finding::SeqOverlap { index } => {
                format!("segment {index}: seqs overlap the previous segment")
            }
            Finding::SegmentMissing { index } => format!("segment {index}: MISSING from the store"),
            Finding::HashMismatch {
                index,
                expected_sha256,
                found_sha256,
                expected_size,
                found_size,
            } => format!(
                "segment {index}: ALTERED (sha256 {found_sha256}, {found_size} bytes; manifest says {expected_sha256}, {expected_size} bytes)"
            ),
            Finding::SegmentSwapped { index, holds } => {
                format!("segment {index}: stored object is segment {holds} (swapped/reordered)")
            }
            Finding::ExtraSegment { index } => {
                format!("segment {index}: stored but NOT in the manifest")
            }
            Finding::UnknownObject { path } => format!("unexpected object {path}"),
            Finding::SetAside { path } => format!(
                "note: {path} was set aside by a resuming recorder (never acknowledged; its frames were replayed)"
            ),
            Finding::StoreError { path, reason } => format!("{path}: store error: {reason}"),
            Finding::RecordedGap {
                first_missing_seq,
                last_missing_seq,
                from,
                to,
                reason,
            } => format!(
                "recorded gap: seqs {first_missing_seq}..={last_missing_seq}, {from}..{to} us: {reason}"
            ),
        }
    }
}

/// The outcome of verifying one lesson.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The lesson checked.
    pub lesson: String,
    /// The recorder public key used (base64 of the raw 32 bytes).
    pub key: String,
    /// The latest readable checkpoint, if any.
    pub checkpoint: Option<u64>,
    /// Whether that checkpoint is final.
    pub is_final: bool,
    /// Segments listed in that checkpoint.
    pub segments_listed: u64,
    /// Segments whose stored bytes matched.
    pub segments_ok: u64,
    /// Whether no problem was found.
    pub ok: bool,
    /// Everything found, problems and notices.
    pub findings: Vec<Finding>,
}

impl Report {
    /// The findings that fail verification.
    pub fn problems(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.is_problem())
    }

    /// A report for people.
    pub fn to_human(&self) -> String {
        let mut out = format!("lesson {}\nrecorder key {}\n", self.lesson, self.key);
        match self.checkpoint {
            Some(c) => out.push_str(&format!(
                "checkpoint {c}{}; {} segments listed, {} verified\n",
                if self.is_final { " (final)" } else { "" },
                self.segments_listed,
                self.segments_ok
            )),
            None => out.push_str("no readable checkpoint\n"),
        }
        for f in &self.findings {
            let tag = if f.is_problem() {
                "PROBLEM:"
            } else {
                "NOTICE:"
            };
            out.push_str(&format!("{tag} {}\n", f.describe()));
        }
        let n = self.problems().count();
        if n == 0 {
            out.push_str("RESULT: OK\n");
        } else {
            out.push_str(&format!("RESULT: FAILED ({n} problems)\n"));
        }
        out
    }
}

struct Listing {
    segments: BTreeMap<u64, Path>,
    manifests: BTreeSet<u64>,
    signatures: BTreeSet<u64>,
}

/// Verifies one lesson in `store` against the recorder's public `key`.
pub async fn verify_lesson(
    store: &dyn ObjectStore,
    lesson: &LessonId,
    key: &RecorderPublicKey,
) -> Report {
    let mut findings = Vec::new();
    let mut report = Report {
        lesson: lesson.to_string(),
        key: key.to_base64(),
        checkpoint: None,
        is_final: false,
        segments_listed: 0,
        segments_ok: 0,
        ok: false,
        findings: Vec::new(),
    };
    let Some(listing) = list(store, lesson, &mut findings).await else {
        report.findings = findings;
        return report;
    };

    // Every checkpoint: signature, parse, identity.
    let mut checkpoints: Vec<Manifest> = Vec::new();
    for &n in &listing.manifests {
        let path = layout::manifest_path(lesson, n);
        let Some(bytes) = read(store, &path, MAX_MANIFEST_LEN, &mut findings).await else {
            continue;
        };
        if listing.signatures.contains(&n) {
            let sig_path = layout::signature_path(lesson, n);
            if let Some(sig) = read(store, &sig_path, 64, &mut findings).await
                && !key.verify(&bytes, &sig)
            {
                findings.push(Finding::SignatureInvalid { checkpoint: n });
            }
        } else {
            findings.push(Finding::SignatureMissing { checkpoint: n });
        }
        match Manifest::parse(&bytes) {
            Ok(m) => {
                if m.checkpoint != n {
                    findings.push(Finding::CheckpointNumberMismatch {
                        checkpoint: n,
                        found: m.checkpoint,
                    });
                }
                if m.lesson != lesson.to_string() {
                    findings.push(Finding::WrongLesson {
                        checkpoint: n,
                        found: m.lesson.clone(),
                    });
                }
                checkpoints.push(m);
            }
            Err(e) => findings.push(Finding::ManifestUnreadable {
                checkpoint: n,
                reason: e.to_string(),
            }),
        }
    }
    for &n in listing.signatures.difference(&listing.manifests) {
        findings.push(Finding::UnknownObject {
            path: layout::signature_path(lesson, n).to_string(),
        });
    }

    let Some(latest) = checkpoints.pop() else {
        if listing.manifests.is_empty() {
            findings.push(Finding::NoManifest);
        }
        for &index in listing.segments.keys() {
            findings.push(Finding::ExtraSegment { index });
        }
        report.ok = !findings.iter().any(Finding::is_problem);
        report.findings = findings;
        return report;
    };
    report.checkpoint = Some(latest.checkpoint);
    report.is_final = latest.is_final;
    report.segments_listed = latest.entries.len() as u64;
    if !latest.is_final {
        findings.push(Finding::NotFinal {
            checkpoint: latest.checkpoint,
        });
    }
    for earlier in &checkpoints {
        check_prefix(earlier, &latest, &mut findings);
    }

    check_entries(&latest, &mut findings);

    // Segments: presence, hash, swaps, extras.
    let by_hash: HashMap<&str, u64> = latest
        .entries
        .iter()
        .map(|e| (e.sha256.as_str(), e.index))
        .collect();
    let listed: BTreeSet<u64> = latest.entries.iter().map(|e| e.index).collect();
    for e in &latest.entries {
        let Some(path) = listing.segments.get(&e.index) else {
            findings.push(Finding::SegmentMissing { index: e.index });
            continue;
        };
        let Some((sha, size)) = hash_object(store, path, &mut findings).await else {
            continue;
        };
        if sha == e.sha256 && size == e.size {
            report.segments_ok += 1;
        } else if let Some(&holds) = by_hash.get(sha.as_str()).filter(|&&i| i != e.index) {
            findings.push(Finding::SegmentSwapped {
                index: e.index,
                holds,
            });
        } else {
            findings.push(Finding::HashMismatch {
                index: e.index,
                expected_sha256: e.sha256.clone(),
                found_sha256: sha,
                expected_size: e.size,
                found_size: size,
            });
        }
    }
    for &index in listing.segments.keys() {
        if !listed.contains(&index) {
            findings.push(Finding::ExtraSegment { index });
        }
    }
    for g in &latest.gaps {
        findings.push(Finding::RecordedGap {
            first_missing_seq: g.first_missing_seq,
            last_missing_seq: g.last_missing_seq,
            from: g.from,
            to: g.to,
            reason: g.reason.clone(),
        });
    }
    report.ok = !findings.iter().any(Finding::is_problem);
    report.findings = findings;
    report
}

/// Lists and classifies everything under the lesson's prefix.
async fn list(
    store: &dyn ObjectStore,
    lesson: &LessonId,
    findings: &mut Vec<Finding>,
) -> Option<Listing> {
    let prefix = layout::lesson_prefix(lesson);
    let mut stream = store.list(Some(&prefix));
    let mut listing = Listing {
        segments: BTreeMap::new(),
        manifests: BTreeSet::new(),
        signatures: BTreeSet::new(),
    };
    while let Some(item) = stream.next().await {
        let meta = match item {
            Ok(m) => m,
            Err(e) => {
                findings.push(Finding::StoreError {
                    path: prefix.to_string(),
                    reason: e.to_string(),
                });
                return None;
            }
        };
        match layout::classify(lesson, &meta.location) {
            ObjectKind::Segment(i) => {
                listing.segments.insert(i, meta.location);
            }
            ObjectKind::Manifest(n) => {
                listing.manifests.insert(n);
            }
            ObjectKind::Signature(n) => {
                listing.signatures.insert(n);
            }
            ObjectKind::PublicKey => {}
            ObjectKind::Orphan => findings.push(Finding::SetAside {
                path: meta.location.to_string(),
            }),
            ObjectKind::Unknown => findings.push(Finding::UnknownObject {
                path: meta.location.to_string(),
            }),
        }
    }
    Some(listing)
}

/// Reads a whole small object, refusing more than `max` bytes.
async fn read(
    store: &dyn ObjectStore,
    path: &Path,
    max: usize,
    findings: &mut Vec<Finding>,
) -> Option<Vec<u8>> {
    let err = |reason: String| Finding::StoreError {
        path: path.to_string(),
        reason,
    };
    let result = match store.get(path).await {
        Ok(r) => r,
        Err(e) => {
            findings.push(err(e.to_string()));
            return None;
        }
    };
    if result.meta.size > max as u64 {
        findings.push(err(format!(
            "{} bytes exceeds the limit of {max}",
            result.meta.size
        )));
        return None;
    }
    match result.bytes().await {
        Ok(b) => Some(b.to_vec()),
        Err(e) => {
            findings.push(err(e.to_string()));
            None
        }
    }
}

/// SHA-256 (hex) and length of an object, streamed.
async fn hash_object(
    store: &dyn ObjectStore,
    path: &Path,
    findings: &mut Vec<Finding>,
) -> Option<(String, u64)> {
    let err = |e: object_store::Error| Finding::StoreError {
        path: path.to_string(),
        reason: e.to_string(),
    };
    let mut stream = match store.get(path).await {
        Ok(r) => r.into_stream(),
        Err(e) => {
            findings.push(err(e));
            return None;
        }
    };
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(b) => {
                size += b.len() as u64;
                hasher.update(&b);
            }
            Err(e) => {
                findings.push(err(e));
                return None;
            }
        }
    }
    Some((hex::encode(hasher.finalize()), size))
}

/// An earlier checkpoint must be a prefix of the latest: same entries and
/// gaps, in the same order, only more added since.
fn check_prefix(earlier: &Manifest, latest: &Manifest, findings: &mut Vec<Finding>) {
    if let Some(p) = first_difference(&earlier.entries, &latest.entries) {
        findings.push(Finding::CheckpointDiverges {
            checkpoint: earlier.checkpoint,
            position: p,
            part: "entries",
        });
    }
    if let Some(p) = first_difference(&earlier.gaps, &latest.gaps) {
        findings.push(Finding::CheckpointDiverges {
            checkpoint: earlier.checkpoint,
            position: p,
            part: "gaps",
        });
    }
}

fn first_difference<T: PartialEq>(prefix: &[T], full: &[T]) -> Option<u64> {
    prefix
        .iter()
        .enumerate()
        .find(|(i, x)| full.get(*i) != Some(*x))
        .map(|(i, _)| i as u64)
}

/// Order, chain, and seq continuity of the latest checkpoint's entries.
fn check_entries(m: &Manifest, findings: &mut Vec<Finding>) {
    let mut prev: Option<&Entry> = None;
    for (position, e) in m.entries.iter().enumerate() {
        let position = position as u64;
        if e.index != position {
            findings.push(Finding::EntryOutOfPlace {
                position,
                index: e.index,
            });
        }
        let expected = prev.map_or_else(|| GENESIS_PREV.to_owned(), Entry::chain_hash);
        if e.prev != expected {
            findings.push(Finding::ChainBroken {
                index: e.index,
                expected,
                found: e.prev.clone(),
            });
        }
        if e.start > e.end {
            findings.push(Finding::BadEntry {
                index: e.index,
                reason: "interval ends before it starts",
            });
        }
        if e.first_seq > e.last_seq {
            findings.push(Finding::BadEntry {
                index: e.index,
                reason: "first seq after last seq",
            });
        }
        if let Some(p) = prev {
            let want = p.last_seq.saturating_add(1);
            if e.first_seq < want {
                findings.push(Finding::SeqOverlap { index: e.index });
            } else if e.first_seq > want {
                let (a, b) = (want, e.first_seq - 1);
                let covered = m
                    .gaps
                    .iter()
                    .any(|g| g.first_missing_seq <= a && g.last_missing_seq >= b);
                if !covered {
                    findings.push(Finding::UnexplainedSeqGap {
                        index: e.index,
                        first_missing_seq: a,
                        last_missing_seq: b,
                    });
                }
            }
        }
        prev = Some(e);
    }
}
