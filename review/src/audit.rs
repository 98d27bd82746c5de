//! The review audit log: every list, view, seek, export, restriction, hold,
//! deletion and refusal at the review service, as an append-only,
//! hash-chained series of objects in the recordings' object store
//! (docs/security.md §22, §23).
//!
//! ```text
//! audit/<n:012>.json    record n (JSON), written once with put-if-absent
//! ```
//!
//! Record `n` names the SHA-256 (lowercase hex) of record `n-1`'s exact
//! stored bytes in `prev` (64 zeros for record 0), so deleting or editing
//! any record breaks the chain at the record after it, and `verify_log`
//! names it. Records are numbered without holes: a missing number is a
//! deleted record. What a chain cannot show by itself is the removal of the
//! newest records, so [`LogReport`] states the head (count and hash) for
//! anyone who wants to note it elsewhere.
//!
//! Appends are serialised in-process and use put-if-absent across
//! processes: two writers racing for the same number cannot both win; the
//! loser re-reads the head and tries the next number. No clock: the caller
//! stamps records. The log only grows: nothing here overwrites or deletes a
//! record.

use futures_util::StreamExt as _;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use chaperone_archive::manifest::{GENESIS_PREV, sha256_hex};

/// Prefix of the log's objects.
pub const AUDIT_PREFIX: &str = "audit";
/// Largest record accepted when reading.
const MAX_RECORD_LEN: usize = 64 * 1024;

/// The object holding record `n`.
fn record_path(n: u64) -> Path {
    Path::from(format!("{AUDIT_PREFIX}/{n:012}.json"))
}

/// One access to recordings, as stored. Field order is alphabetical so the
/// JSON reads the same everywhere.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// What: `open`, `list`, `view`, `play`, `seek`, `export`, `restrict`,
    /// `hold`, `release`, `delete`, `retain`, `audit_view`, `refused`.
    pub action: String,
    /// Who (`issuer#subject`), or `None` when nobody could be identified.
    pub actor: Option<String>,
    /// Their display name.
    pub actor_name: Option<String>,
    /// When, unix microseconds.
    pub at: u64,
    /// Which file of the lesson (`p3-av.webm`), if any.
    pub file: Option<String>,
    /// Start of the time range concerned, ms from the lesson's start.
    pub from_ms: Option<u64>,
    /// Which lesson, if any.
    pub lesson: Option<String>,
    /// This record's number.
    pub n: u64,
    /// `ok`, or the refusal's code.
    pub outcome: String,
    /// SHA-256 of the previous record's stored bytes.
    pub prev: String,
    /// The stated reason (or what a refusal was about).
    pub reason: Option<String>,
    /// The role the access was made in (`slt`, `dsl`, `pupil`, `service`).
    pub role: Option<String>,
    /// The review scope.
    pub scope: Option<String>,
    /// End of the time range concerned, ms from the lesson's start.
    pub to_ms: Option<u64>,
}

/// Why the log could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The object store failed; the access that needed the record must not
    /// go ahead.
    #[error("audit store: {0}")]
    Store(#[from] object_store::Error),
    /// Other writers kept winning the race for the next number.
    #[error("could not append after {0} attempts")]
    Contended(u32),
    /// The record could not be encoded.
    #[error("audit record: {0}")]
    Encode(String),
}

/// The log's head: how many records and the hash of the newest.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Head {
    next: u64,
    prev: String,
}

/// The audit log of one object store.
#[derive(Debug)]
pub struct AuditLog {
    store: std::sync::Arc<dyn ObjectStore>,
    head: Mutex<Option<Head>>,
}

async fn record_numbers(store: &dyn ObjectStore) -> Result<Vec<(u64, Path)>, object_store::Error> {
    let mut out = Vec::new();
    let mut stream = store.list(Some(&Path::from(AUDIT_PREFIX)));
    while let Some(meta) = stream.next().await {
        let meta = meta?;
        let n = meta
            .location
            .filename()
            .and_then(|f| f.strip_suffix(".json"))
            .filter(|s| s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok());
        match n {
            Some(n) => out.push((n, meta.location)),
            None => out.push((u64::MAX, meta.location)),
        }
    }
    out.sort();
    Ok(out)
}

impl AuditLog {
    /// The log in `store`.
    pub(crate) fn new(store: std::sync::Arc<dyn ObjectStore>) -> Self {
        Self {
            store,
            head: Mutex::new(None),
        }
    }

    async fn read_head(&self) -> Result<Head, AuditError> {
        let numbers = record_numbers(self.store.as_ref()).await?;
        match numbers.iter().rev().find(|(n, _)| *n != u64::MAX) {
            None => Ok(Head {
                next: 0,
                prev: GENESIS_PREV.to_owned(),
            }),
            Some((n, path)) => {
                let bytes = self.store.get(path).await?.bytes().await?;
                Ok(Head {
                    next: n + 1,
                    prev: sha256_hex(&bytes),
                })
            }
        }
    }

    /// Appends `entry` (its `n` and `prev` are filled in); returns the
    /// stored record. Fails, and nothing may be served, if it cannot be
    /// stored.
    pub(crate) async fn append(&self, mut entry: AuditEntry) -> Result<AuditEntry, AuditError> {
        let mut head = self.head.lock().await;
        for _ in 0..8 {
            let h = match head.as_ref() {
                Some(h) => h.clone(),
                None => {
                    let h = self.read_head().await?;
                    *head = Some(h.clone());
                    h
                }
            };
            entry.n = h.next;
            entry.prev = h.prev.clone();
            let bytes =
                serde_json::to_vec(&entry).map_err(|e| AuditError::Encode(e.to_string()))?;
            let hash = sha256_hex(&bytes);
            match self
                .store
                .put_opts(
                    &record_path(h.next),
                    PutPayload::from(bytes),
                    PutOptions::from(PutMode::Create),
                )
                .await
            {
                Ok(_) => {
                    *head = Some(Head {
                        next: h.next + 1,
                        prev: hash,
                    });
                    tracing::info!(target: "audit", action = %entry.action, outcome = %entry.outcome,
                        actor = ?entry.actor, lesson = ?entry.lesson, n = entry.n, "review audit");
                    return Ok(entry);
                }
                Err(object_store::Error::AlreadyExists { .. }) => {
                    // Another writer took this number: read the head again.
                    *head = None;
                }
                Err(e) => {
                    *head = None;
                    return Err(e.into());
                }
            }
        }
        Err(AuditError::Contended(8))
    }

    /// Every record that parses, oldest first (for "who watched what").
    pub async fn entries(&self) -> Result<Vec<AuditEntry>, AuditError> {
        let mut out = Vec::new();
        for (n, path) in record_numbers(self.store.as_ref()).await? {
            if n == u64::MAX {
                continue;
            }
            let bytes = self.store.get(&path).await?.bytes().await?;
            if let Ok(e) = serde_json::from_slice::<AuditEntry>(&bytes) {
                out.push(e);
            }
        }
        Ok(out)
    }
}

/// A problem `verify_log` found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditFinding {
    /// Record `n` is missing: deleted.
    Deleted {
        /// Its number.
        n: u64,
    },
    /// Record `n`'s bytes are not what record `n+1` chained to: edited
    /// (or `n+1`'s `prev` was).
    Edited {
        /// Its number.
        n: u64,
    },
    /// Record `n` does not parse, or names another number.
    Unreadable {
        /// Its number.
        n: u64,
        /// Why.
        reason: String,
    },
    /// An object under `audit/` that is not a record.
    UnknownObject {
        /// Its path.
        path: String,
    },
}

/// The result of checking the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LogReport {
    /// Records present.
    pub records: u64,
    /// Hash of the newest record's bytes (note it elsewhere to detect the
    /// removal of newer records later).
    pub head: String,
    /// Problems; empty when the chain holds.
    pub findings: Vec<AuditFinding>,
    /// Whether the chain holds.
    pub ok: bool,
}

impl LogReport {
    /// One line per finding, for people.
    pub fn to_human(&self) -> String {
        let mut out = format!("audit log: {} records, head {}\n", self.records, self.head);
        for f in &self.findings {
            out.push_str(&match f {
                AuditFinding::Deleted { n } => format!("PROBLEM audit record {n} is missing (deleted)\n"),
                AuditFinding::Edited { n } => format!(
                    "PROBLEM audit record {n} was edited (it does not hash to the next record's prev)\n"
                ),
                AuditFinding::Unreadable { n, reason } => {
                    format!("PROBLEM audit record {n} is unreadable: {reason}\n")
                }
                AuditFinding::UnknownObject { path } => {
                    format!("PROBLEM unexpected object in the audit log: {path}\n")
                }
            });
        }
        out.push_str(if self.ok {
            "AUDIT: OK\n"
        } else {
            "AUDIT: FAILED\n"
        });
        out
    }
}

/// Checks the whole chain in `store`: numbering without holes, every
/// record's `n`, and every `prev` against the previous record's bytes.
pub async fn verify_log(store: &dyn ObjectStore) -> Result<LogReport, AuditError> {
    let mut findings = Vec::new();
    let numbers = record_numbers(store).await?;
    let mut expected_next = 0u64;
    // Hash of the previous record present, and its number.
    let mut prev: Option<(u64, String)> = None;
    let mut records = 0;
    let mut head = GENESIS_PREV.to_owned();
    for (n, path) in numbers {
        if n == u64::MAX {
            findings.push(AuditFinding::UnknownObject {
                path: path.to_string(),
            });
            continue;
        }
        for missing in expected_next..n {
            findings.push(AuditFinding::Deleted { n: missing });
        }
        expected_next = n + 1;
        records += 1;
        let result = store.get(&path).await?;
        if result.meta.size > MAX_RECORD_LEN as u64 {
            findings.push(AuditFinding::Unreadable {
                n,
                reason: "too large".to_owned(),
            });
            prev = None;
            continue;
        }
        let bytes = result.bytes().await?;
        let hash = sha256_hex(&bytes);
        match serde_json::from_slice::<AuditEntry>(&bytes) {
            Err(e) => findings.push(AuditFinding::Unreadable {
                n,
                reason: e.to_string(),
            }),
            Ok(entry) => {
                if entry.n != n {
                    findings.push(AuditFinding::Unreadable {
                        n,
                        reason: format!("names itself record {}", entry.n),
                    });
                }
                match &prev {
                    // The record before it is present: it must chain to it.
                    Some((pn, ph)) if *pn + 1 == n && entry.prev != *ph => {
                        findings.push(AuditFinding::Edited { n: *pn });
                    }
                    None if n == 0 && entry.prev != GENESIS_PREV => {
                        findings.push(AuditFinding::Unreadable {
                            n,
                            reason: "first record does not start the chain".to_owned(),
                        });
                    }
                    _ => {}
                }
            }
        }
        prev = Some((n, hash.clone()));
        head = hash;
    }
    Ok(LogReport {
        records,
        head,
        ok: findings.is_empty(),
        findings,
    })
}
