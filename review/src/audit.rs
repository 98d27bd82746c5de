//! The review audit log: every list, view, seek, export, restriction, hold,
//! deletion and refusal at the review service, as an append-only,
//! hash-chained series of objects in the recordings' object store
//! (docs/security.md §22, §23).
//!
//! ```text
//! audit/<n:012>.json              record n (JSON), written once with put-if-absent
//! audit/<n:012>-<m:012>.jsonl     records n..=m, one JSON record a line (a batch)
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
//!
//! Group commit: records appended while a write is under way are queued,
//! and the next writer stores all of them as one object (at most
//! [`MAX_BATCH`] records): a burst of requests costs a few writes (and
//! fsyncs), not one each. Every caller still waits until the object
//! holding its record is stored, so a request that needed a record is
//! never answered before the record is durable. A batch of one is written
//! as a plain `.json` record. The chain runs through the records, not the
//! objects: each record's `prev` is the hash of the previous record's line.

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
/// Most records written as one object.
pub const MAX_BATCH: usize = 256;

/// The object holding record `n`.
fn record_path(n: u64) -> Path {
    Path::from(format!("{AUDIT_PREFIX}/{n:012}.json"))
}

/// The object holding records `first..=last` (`last > first`).
fn batch_path(first: u64, last: u64) -> Path {
    Path::from(format!("{AUDIT_PREFIX}/{first:012}-{last:012}.jsonl"))
}

/// One object of the log: records `first..=last` (one record for `.json`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Object {
    first: u64,
    last: u64,
    path: Path,
}

/// The records `first..=last` a log object's name says it holds.
fn object_range(name: &str) -> Option<(u64, u64)> {
    let number = |s: &str| {
        (s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    if let Some(n) = name.strip_suffix(".json") {
        let n = number(n)?;
        return Some((n, n));
    }
    let (a, b) = name.strip_suffix(".jsonl")?.split_once('-')?;
    let (first, last) = (number(a)?, number(b)?);
    (last > first && last - first < MAX_BATCH as u64).then_some((first, last))
}

/// The records of an object's bytes: the whole object for `.json`, one a
/// line for a batch.
fn record_lines(bytes: &[u8], batch: bool) -> Vec<&[u8]> {
    if !batch {
        return vec![bytes];
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    body.split(|b| *b == b'\n').collect()
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
    /// The batch holding the record could not be stored (the first
    /// record's caller got the cause).
    #[error("audit batch not stored: {0}")]
    Unwritten(String),
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

/// A record waiting for the next batch, and who waits for it.
type Queued = (
    AuditEntry,
    tokio::sync::oneshot::Sender<Result<AuditEntry, AuditError>>,
);

/// The audit log of one object store.
#[derive(Debug)]
pub struct AuditLog {
    store: std::sync::Arc<dyn ObjectStore>,
    /// The head, held by the one writer at a time.
    head: Mutex<Option<Head>>,
    /// Records waiting for the next batch.
    queue: std::sync::Mutex<Vec<Queued>>,
}

/// The log's objects in order, and anything else under `audit/` (`None`).
async fn log_objects(
    store: &dyn ObjectStore,
) -> Result<(Vec<Object>, Vec<Path>), object_store::Error> {
    let mut objects = Vec::new();
    let mut unknown = Vec::new();
    let mut stream = store.list(Some(&Path::from(AUDIT_PREFIX)));
    while let Some(meta) = stream.next().await {
        let meta = meta?;
        match meta.location.filename().and_then(object_range) {
            Some((first, last)) => objects.push(Object {
                first,
                last,
                path: meta.location,
            }),
            None => unknown.push(meta.location),
        }
    }
    objects.sort();
    Ok((objects, unknown))
}

fn is_batch(o: &Object) -> bool {
    o.last > o.first
}

impl AuditLog {
    /// The log in `store`.
    pub(crate) fn new(store: std::sync::Arc<dyn ObjectStore>) -> Self {
        Self {
            store,
            head: Mutex::new(None),
            queue: std::sync::Mutex::default(),
        }
    }

    async fn read_head(&self) -> Result<Head, AuditError> {
        let (objects, _) = log_objects(self.store.as_ref()).await?;
        match objects.last() {
            None => Ok(Head {
                next: 0,
                prev: GENESIS_PREV.to_owned(),
            }),
            Some(o) => {
                let bytes = self.store.get(&o.path).await?.bytes().await?;
                let last = record_lines(&bytes, is_batch(o))
                    .last()
                    .map(|l| sha256_hex(l))
                    .unwrap_or_else(|| sha256_hex(&bytes));
                Ok(Head {
                    next: o.last + 1,
                    prev: last,
                })
            }
        }
    }

    /// Appends `entry` (its `n` and `prev` are filled in); returns the
    /// stored record once the object holding it is stored. Fails, and
    /// nothing may be served, if it cannot be stored.
    pub(crate) async fn append(&self, entry: AuditEntry) -> Result<AuditEntry, AuditError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((entry, tx));
        {
            // One writer at a time; whoever holds the head writes everything
            // queued by then (this record, unless the writer before took it).
            // Every queued caller waits for this lock, so what one writer
            // leaves queued (past MAX_BATCH) the next one takes.
            let mut head = self.head.lock().await;
            let batch: Vec<Queued> = {
                let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                let n = q.len().min(MAX_BATCH);
                q.drain(..n).collect()
            };
            if !batch.is_empty() {
                self.write_batch(&mut head, batch).await;
            }
        }
        rx.await
            .unwrap_or_else(|_| Err(AuditError::Unwritten("the writer stopped".to_owned())))
    }

    /// Stores `batch` as one object after the head and tells each waiter.
    async fn write_batch(&self, head: &mut Option<Head>, batch: Vec<Queued>) {
        let (entries, waiters): (Vec<AuditEntry>, Vec<_>) = batch.into_iter().unzip();
        let result = self.store_batch(head, entries).await;
        match result {
            Ok(stored) => {
                for (entry, w) in stored.into_iter().zip(waiters) {
                    tracing::info!(target: "audit", action = %entry.action, outcome = %entry.outcome,
                        actor = ?entry.actor, lesson = ?entry.lesson, n = entry.n, "review audit");
                    let _ = w.send(Ok(entry));
                }
            }
            Err(e) => {
                let why = e.to_string();
                let mut waiters = waiters.into_iter();
                if let Some(first) = waiters.next() {
                    let _ = first.send(Err(e));
                }
                for w in waiters {
                    let _ = w.send(Err(AuditError::Unwritten(why.clone())));
                }
            }
        }
    }

    async fn store_batch(
        &self,
        head: &mut Option<Head>,
        mut entries: Vec<AuditEntry>,
    ) -> Result<Vec<AuditEntry>, AuditError> {
        for _ in 0..8 {
            let h = match head.as_ref() {
                Some(h) => h.clone(),
                None => {
                    let h = self.read_head().await?;
                    *head = Some(h.clone());
                    h
                }
            };
            let mut prev = h.prev.clone();
            let mut body = Vec::new();
            for (i, entry) in entries.iter_mut().enumerate() {
                entry.n = h.next + i as u64;
                entry.prev = prev;
                let bytes =
                    serde_json::to_vec(&entry).map_err(|e| AuditError::Encode(e.to_string()))?;
                prev = sha256_hex(&bytes);
                body.extend_from_slice(&bytes);
                body.push(b'\n');
            }
            let last = h.next + entries.len() as u64 - 1;
            let path = if entries.len() == 1 {
                // A plain record, as before batching: its bytes are the record.
                body.pop();
                record_path(h.next)
            } else {
                batch_path(h.next, last)
            };
            match self
                .store
                .put_opts(
                    &path,
                    PutPayload::from(body),
                    PutOptions::from(PutMode::Create),
                )
                .await
            {
                Ok(_) => {
                    *head = Some(Head {
                        next: last + 1,
                        prev,
                    });
                    return Ok(entries);
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
        for o in log_objects(self.store.as_ref()).await?.0 {
            let bytes = self.store.get(&o.path).await?.bytes().await?;
            for line in record_lines(&bytes, is_batch(&o)) {
                if let Ok(e) = serde_json::from_slice::<AuditEntry>(line) {
                    out.push(e);
                }
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
    let (objects, unknown) = log_objects(store).await?;
    for path in unknown {
        findings.push(AuditFinding::UnknownObject {
            path: path.to_string(),
        });
    }
    let mut expected_next = 0u64;
    // Hash of the previous record present, and its number.
    let mut prev: Option<(u64, String)> = None;
    let mut records = 0;
    let mut head = GENESIS_PREV.to_owned();
    for o in objects {
        if o.first < expected_next {
            // Two objects claim the same numbers.
            findings.push(AuditFinding::UnknownObject {
                path: o.path.to_string(),
            });
            continue;
        }
        for missing in expected_next..o.first {
            findings.push(AuditFinding::Deleted { n: missing });
        }
        expected_next = o.last + 1;
        let result = store.get(&o.path).await?;
        let limit = MAX_RECORD_LEN as u64 * (o.last - o.first + 1);
        if result.meta.size > limit {
            for n in o.first..=o.last {
                findings.push(AuditFinding::Unreadable {
                    n,
                    reason: "too large".to_owned(),
                });
            }
            records += o.last - o.first + 1;
            prev = None;
            continue;
        }
        let bytes = result.bytes().await?;
        let lines = record_lines(&bytes, is_batch(&o));
        if lines.len() as u64 != o.last - o.first + 1 {
            findings.push(AuditFinding::Unreadable {
                n: o.first,
                reason: format!(
                    "the batch holds {} records, its name says {}",
                    lines.len(),
                    o.last - o.first + 1
                ),
            });
        }
        for (i, line) in lines.into_iter().enumerate() {
            let n = o.first + i as u64;
            if n > o.last {
                break;
            }
            records += 1;
            let hash = sha256_hex(line);
            match serde_json::from_slice::<AuditEntry>(line) {
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
    }
    Ok(LogReport {
        records,
        head,
        ok: findings.is_empty(),
        findings,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use object_store::local::LocalFileSystem;

    use super::*;

    fn entry(i: usize) -> AuditEntry {
        AuditEntry {
            action: "view".to_owned(),
            actor: Some(format!("https://idp#slt{i}")),
            at: i as u64,
            outcome: "ok".to_owned(),
            ..AuditEntry::default()
        }
    }

    async fn objects(store: &dyn ObjectStore) -> Vec<Object> {
        log_objects(store).await.unwrap().0
    }

    /// A burst of appends while one is being written becomes one more
    /// object, not one each; every caller gets its own record back, the
    /// chain holds, and every record reads back.
    #[tokio::test]
    async fn a_burst_is_written_in_batches_with_the_chain_intact() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> =
            Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let log = AuditLog::new(store.clone());
        // The first on its own, as before batching.
        log.append(entry(0)).await.unwrap();
        const N: usize = 300;
        let stored = futures_util::future::join_all((1..=N).map(|i| log.append(entry(i)))).await;
        for (i, s) in stored.into_iter().enumerate() {
            let s = s.unwrap();
            assert_eq!(s.at, (i + 1) as u64, "each caller gets its own record");
        }
        let objs = objects(store.as_ref()).await;
        // Unloaded, 1 + the first of the burst alone + the rest in batches
        // of at most MAX_BATCH (4 objects). How many appends queue behind
        // each write depends on how fast the filesystem answers, so on a
        // loaded machine batches are smaller (26 objects seen in CI): the
        // bound is what batching must give whatever the timing, a small
        // fraction of one object a record.
        assert!(
            objs.len() <= N / 4,
            "{} objects for {} records",
            objs.len(),
            N + 1
        );
        assert!(objs.iter().any(is_batch));
        let report = verify_log(store.as_ref()).await.unwrap();
        assert!(report.ok, "{}", report.to_human());
        assert_eq!(report.records, N as u64 + 1);
        let all = log.entries().await.unwrap();
        assert_eq!(all.len(), N + 1);
        assert!(
            all.iter()
                .enumerate()
                .all(|(i, e)| e.n == i as u64 && e.at == i as u64)
        );
        // A new writer (another process) continues after the batch.
        let again = AuditLog::new(store.clone());
        assert_eq!(again.append(entry(999)).await.unwrap().n, N as u64 + 1);
        assert!(verify_log(store.as_ref()).await.unwrap().ok);

        // An edited record inside a batch is named, as is a deleted batch.
        let batch = objs.iter().find(|o| is_batch(o)).unwrap().clone();
        let file = dir.path().join(batch.path.as_ref());
        let original = std::fs::read(&file).unwrap();
        let edited = String::from_utf8(original.clone())
            .unwrap()
            .replacen("slt", "xyz", 2);
        std::fs::write(&file, edited).unwrap();
        let report = verify_log(store.as_ref()).await.unwrap();
        assert!(
            report
                .findings
                .contains(&AuditFinding::Edited { n: batch.first + 1 }),
            "{}",
            report.to_human()
        );
        std::fs::remove_file(&file).unwrap();
        let report = verify_log(store.as_ref()).await.unwrap();
        assert!(
            (batch.first..=batch.last)
                .all(|n| report.findings.contains(&AuditFinding::Deleted { n })),
            "{}",
            report.to_human()
        );
    }

    #[test]
    fn object_names() {
        assert_eq!(object_range("000000000007.json"), Some((7, 7)));
        assert_eq!(
            object_range("000000000007-000000000009.jsonl"),
            Some((7, 9))
        );
        assert_eq!(object_range("000000000009-000000000007.jsonl"), None);
        assert_eq!(object_range("000000000007-000000000007.jsonl"), None);
        assert_eq!(object_range("7.json"), None);
        assert_eq!(object_range("000000000000-000000100000.jsonl"), None);
    }
}
