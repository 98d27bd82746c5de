//! The ingest side's store: writes go to the object store while it takes
//! them, and to a local spool while it does not; a background task
//! backfills the spool, in order, when the store is back.
//!
//! # Invariants
//!
//! - A put returns `Ok` only once the object is durable: stored (the inner
//!   store's put returned), or in a spool file that was written, fsync'd,
//!   renamed into place and whose directory was fsync'd.
//! - Nothing is dropped: past `spool_max_bytes` a put fails with
//!   [`SpoolError::Full`] (the caller stops acknowledging, which is the
//!   feed's backpressure), a failed spool write fails the put, and a spool
//!   file is deleted only after the store holds the same bytes.
//! - Nothing is overwritten: every write is put-if-absent. The backfill
//!   counts an object the store already holds with identical bytes as done;
//!   different bytes are a loud error, and the spool file is moved to
//!   `conflicts/` for an operator, never uploaded over the stored one.
//! - Order: while anything is spooled (or being spooled), new puts are
//!   spooled behind it, spool writes are serialised, and the backfill
//!   uploads in spool order, so the store receives objects in the order
//!   they were written. (A caller that abandons a put mid-write lets the
//!   next writer start; the abandoned write still completes and is
//!   indexed, possibly after the next one. A lesson's own writes are
//!   sequential, so its order holds regardless.)
//! - Stop the backfill ([`BackfillGuard`]) only when shutting down: while
//!   it is stopped, spooled objects stay spooled and new writes queue
//!   behind them.
//! - Reads (get, head, list) see spooled objects, so `LessonWriter`'s
//!   put-if-absent (which compares bytes on conflict) and `verify` work
//!   while objects wait in the spool. A list also needs the store: when the
//!   store is down the listing fails rather than silently lists only the
//!   spool.
//! - The ingest store writes once: overwrite, update, delete, copy, rename
//!   and multipart uploads are refused (`NotSupported`).
//! - One process per spool directory (an exclusive `flock` on `LOCK`); a
//!   spool left by a process that died is backfilled by the next one.
//!
//! # Spool files
//!
//! `<dir>/<seq:020>.spool`, one per object, numbered in write order: the
//! object's bytes, then a trailer: the object path (UTF-8), its length
//! (`u32` big-endian), the data length (`u64` BE), the SHA-256 of the data
//! (32 bytes) and the magic `CHAPSPL1`. The data first means a spool file
//! is served to readers as a plain file range. A file is written as
//! `<seq>.part` and renamed only once synced, so a `.part` found at start
//! was never acknowledged and is removed; a `.spool` whose trailer or
//! checksum does not match stops [`SpooledStore::open`] with
//! [`SpoolError::Corrupt`], leaving it for inspection.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures_util::stream::{self, BoxStream};
use futures_util::{StreamExt as _, TryStreamExt as _};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, ObjectStoreExt as _, PutMode, PutMultipartOptions, PutOptions, PutPayload,
    PutResult,
};
use sha2::{Digest as _, Sha256};
use tokio::sync::{Notify, watch};

mod file;
mod metrics;
mod store;

use chaperone_archive::store::{PROBE_PREFIX, StoreConfig};
use file::{load, read_data, sync_dir, write_file};
pub use metrics::StoreMetrics;

use crate::clock::now;

const MAGIC: &[u8; 8] = b"CHAPSPL1";
/// Trailer bytes besides the path: path length, data length, SHA-256, magic.
const TRAILER_FIXED: u64 = 4 + 8 + 32 + 8;
const CONFLICTS: &str = "conflicts";
const LOCK: &str = "LOCK";

/// Why the spool could not take, keep or give back an object.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// The spool holds its maximum: the write is refused (backpressure),
    /// nothing is dropped.
    #[error(
        "spool full: {used} of {max} bytes used, {needed} more needed; write refused until the store catches up"
    )]
    Full {
        /// Bytes in the spool.
        used: u64,
        /// Bytes this write needs.
        needed: u64,
        /// `spool_max_bytes`.
        max: u64,
    },
    /// Reading or writing the spool directory failed.
    #[error("spool {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A spool file is damaged; it was left in place.
    #[error("spool file {path} is damaged ({reason}); left in place for inspection")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Another process holds the spool directory.
    #[error("spool {path} is in use by another process")]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// `spool_dir` is empty.
    #[error("store.spool_dir is not set")]
    NotConfigured,
    /// The ingest store writes each object once and never changes it.
    #[error("the ingest store writes once: {operation} is not supported")]
    Unsupported {
        /// The refused operation.
        operation: &'static str,
    },
}

/// The [`SpoolError`] behind an error (for example inside
/// `ArchiveError::Store`), if there is one: `Full` tells the caller to stop
/// acknowledging and retry later.
pub fn spool_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a SpoolError> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(s) = err.downcast_ref::<SpoolError>() {
            return Some(s);
        }
        cur = err.source();
    }
    None
}

fn io_err(path: &FsPath) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

impl From<SpoolError> for object_store::Error {
    fn from(e: SpoolError) -> Self {
        match e {
            SpoolError::Unsupported { .. } => object_store::Error::NotSupported {
                source: Box::new(e),
            },
            e => object_store::Error::Generic {
                store: "spool",
                source: Box::new(e),
            },
        }
    }
}

#[derive(Clone, Debug)]
struct Entry {
    location: Path,
    file: PathBuf,
    /// Data bytes.
    size: u64,
    /// Whole file, trailer included (what counts against the bound).
    file_len: u64,
    sha256: [u8; 32],
    modified: SystemTime,
}

#[derive(Debug)]
struct State {
    /// Committed spool files by seq: the backfill order.
    entries: BTreeMap<u64, Entry>,
    by_path: HashMap<Path, u64>,
    /// Bytes of committed files plus the one being written.
    bytes: u64,
    next_seq: u64,
    /// A spool write is between reservation and commit.
    writing: bool,
    store_up: bool,
    conflicts: u64,
}

/// The ingest side's [`ObjectStore`]: the store, with a local spool when
/// the store cannot take a write. See the module documentation.
#[derive(Debug)]
pub struct SpooledStore {
    inner: Arc<dyn ObjectStore>,
    dir: PathBuf,
    max_bytes: u64,
    backfill_initial: Duration,
    backfill_max: Duration,
    health_interval: Duration,
    // Shared with the blocking spool writes, which commit to the index
    // themselves: a caller that stops waiting cannot leave a written file
    // unindexed or its bytes reserved.
    state: Arc<Mutex<State>>,
    /// Serialises spool writes, so that seq order is commit order.
    write_lock: tokio::sync::Mutex<()>,
    wake: Arc<Notify>,
    objects: Arc<watch::Sender<u64>>,
    metrics: StoreMetrics,
    /// Held for the life of the store: one process per spool directory.
    _lock: nix::fcntl::Flock<File>,
}

/// Stops the backfill task when dropped. The spool stays on disk; the next
/// [`SpooledStore::open`] on the directory backfills what is left.
#[derive(Debug)]
pub struct BackfillGuard {
    task: tokio::task::JoinHandle<()>,
}

impl BackfillGuard {
    /// Stops the backfill task and waits until it has let go of the store
    /// (and so, once the caller drops its handles too, of the spool's
    /// lock). Dropping the guard stops the task without waiting.
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for BackfillGuard {
    fn drop(&mut self) {
        // Safe at any point: a spool file is removed only after its upload
        // succeeded, and a repeated upload is a put-if-absent.
        self.task.abort();
    }
}

impl SpooledStore {
    /// Opens (creating) the spool at `config.spool_dir` over `inner`, loads
    /// what an earlier process left there, and starts the backfill task.
    /// Drop the guard to stop the task.
    pub async fn open(
        inner: Arc<dyn ObjectStore>,
        config: &StoreConfig,
        metrics: StoreMetrics,
    ) -> Result<(Arc<Self>, BackfillGuard), SpoolError> {
        let dir = config.spool_path().ok_or(SpoolError::NotConfigured)?;
        let load_dir = dir.clone();
        let (lock, entries, conflicts) = tokio::task::spawn_blocking(move || load(&load_dir))
            .await
            .map_err(|e| SpoolError::Io {
                path: dir.clone(),
                source: std::io::Error::other(e),
            })??;
        let mut by_path = HashMap::new();
        let mut bytes = 0;
        for (seq, e) in &entries {
            by_path.entry(e.location.clone()).or_insert(*seq);
            bytes += e.file_len;
        }
        let next_seq = entries.last_key_value().map_or(0, |(s, _)| s + 1);
        if !entries.is_empty() {
            tracing::warn!(spool = %dir.display(), objects = entries.len(), bytes, "spool left by an earlier process; backfilling");
        }
        if conflicts > 0 {
            tracing::error!(spool = %dir.display(), conflicts, "spool holds objects that conflict with the store; an operator must inspect conflicts/");
        }
        let count = entries.len() as u64;
        let store = Arc::new(Self {
            inner,
            dir,
            max_bytes: config.spool_max_bytes,
            backfill_initial: Duration::from_millis(config.retry_initial_backoff_ms),
            backfill_max: Duration::from_millis(config.retry_max_backoff_ms),
            health_interval: Duration::from_millis(config.health_interval_ms),
            state: Arc::new(Mutex::new(State {
                entries,
                by_path,
                bytes,
                next_seq,
                writing: false,
                store_up: true,
                conflicts,
            })),
            write_lock: tokio::sync::Mutex::new(()),
            wake: Arc::new(Notify::new()),
            objects: Arc::new(watch::Sender::new(count)),
            metrics,
            _lock: lock,
        });
        store.publish(&store.lock());
        store.metrics.store_up.set(1);
        let task = tokio::spawn(Arc::clone(&store).backfill());
        Ok((store, BackfillGuard { task }))
    }

    /// The store written to when it takes writes.
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// Objects waiting in the spool.
    pub fn spooled_objects(&self) -> u64 {
        self.lock().entries.len() as u64
    }

    /// Bytes the spool holds.
    pub fn spooled_bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Whether the store took the last write or health check.
    pub fn store_up(&self) -> bool {
        self.lock().store_up
    }

    /// Spooled objects set aside in `conflicts/`.
    pub fn conflicts(&self) -> u64 {
        self.lock().conflicts
    }

    /// Resolves once the spool is empty (everything backfilled).
    pub async fn wait_drained(&self) {
        let mut rx = self.objects.subscribe();
        // The sender lives in self, so the channel cannot close here.
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn publish(&self, st: &State) {
        publish(st, &self.metrics, &self.objects);
    }

    fn set_store_up(&self, up: bool) {
        let changed = {
            let mut st = self.lock();
            std::mem::replace(&mut st.store_up, up) != up
        };
        self.metrics.store_up.set(i64::from(up));
        if changed {
            if up {
                tracing::info!(store = %self.inner, "object store is taking writes again");
            } else {
                tracing::warn!(store = %self.inner, "object store is failing; writes go to the spool");
            }
        }
    }

    fn spooled(&self, location: &Path) -> Option<Entry> {
        let st = self.lock();
        st.by_path
            .get(location)
            .and_then(|seq| st.entries.get(seq))
            .cloned()
    }

    /// Writes one object to the spool, durably.
    async fn spool_put(
        &self,
        location: &Path,
        payload: PutPayload,
    ) -> object_store::Result<PutResult> {
        let _serial = self.write_lock.lock().await;
        let size = payload.content_length() as u64;
        let file_len = size + location.as_ref().len() as u64 + TRAILER_FIXED;
        let seq = {
            let mut st = self.lock();
            if st.by_path.contains_key(location) {
                return Err(already_spooled(location));
            }
            if st.bytes + file_len > self.max_bytes {
                return Err(SpoolError::Full {
                    used: st.bytes,
                    needed: file_len,
                    max: self.max_bytes,
                }
                .into());
            }
            st.bytes += file_len;
            st.writing = true;
            let seq = st.next_seq;
            st.next_seq += 1;
            seq
        };
        // The blocking task writes, syncs and commits to the index on its
        // own, so it completes even if this future is dropped.
        let dir = self.dir.clone();
        let loc = location.clone();
        let state = Arc::clone(&self.state);
        let metrics = self.metrics.clone();
        let objects = Arc::clone(&self.objects);
        let wake = Arc::clone(&self.wake);
        let committed = tokio::task::spawn_blocking(move || {
            let written = write_file(&dir, seq, &loc, &payload);
            let mut st = lock(&state);
            st.writing = false;
            let result = match written {
                Ok(entry) => {
                    let e_tag = hex::encode(entry.sha256);
                    st.by_path.insert(loc.clone(), seq);
                    st.entries.insert(seq, entry);
                    Ok(e_tag)
                }
                Err(e) => {
                    st.bytes -= file_len;
                    Err(e)
                }
            };
            publish(&st, &metrics, &objects);
            drop(st);
            if result.is_ok() {
                wake.notify_one();
            }
            result
        })
        .await
        .map_err(|e| object_store::Error::JoinError { source: e })??;
        tracing::debug!(object = %location, seq, bytes = size, "spooled");
        Ok(PutResult {
            e_tag: Some(committed),
            version: None,
            extensions: Default::default(),
        })
    }

    async fn durable_put(
        &self,
        location: &Path,
        payload: PutPayload,
    ) -> object_store::Result<PutResult> {
        if self.spooled(location).is_some() {
            return Err(already_spooled(location));
        }
        let direct = {
            let st = self.lock();
            st.store_up && st.entries.is_empty() && !st.writing
        };
        if direct {
            match self
                .inner
                .put_opts(location, payload.clone(), PutOptions::from(PutMode::Create))
                .await
            {
                Ok(r) => return Ok(r),
                Err(e) if definite(&e) => return Err(e),
                Err(e) => {
                    self.metrics.upload_errors.inc();
                    tracing::warn!(object = %location, error = %e, "store write failed; spooling");
                    self.set_store_up(false);
                }
            }
        }
        self.spool_put(location, payload).await
    }

    /// The backfill task: uploads spooled objects in order, and checks the
    /// store's health while the spool is empty.
    async fn backfill(self: Arc<Self>) {
        let new_backoff =
            || chaperone_archive::store::backoff(self.backfill_initial, self.backfill_max);
        let mut backoff = new_backoff();
        let mut checked_once = false;
        loop {
            let next = self
                .lock()
                .entries
                .first_key_value()
                .map(|(s, e)| (*s, e.clone()));
            let Some((seq, entry)) = next else {
                if checked_once {
                    tokio::select! {
                        _ = self.wake.notified() => continue,
                        _ = tokio::time::sleep(self.health_interval) => {}
                    }
                }
                checked_once = true;
                self.health_check().await;
                continue;
            };
            match self.upload(seq, &entry).await {
                Ok(()) => {
                    backoff = new_backoff();
                    self.set_store_up(true);
                    if self.spooled_objects() == 0 {
                        tracing::info!(store = %self.inner, "spool drained: every spooled object is in the store");
                    }
                }
                Err(e) => {
                    self.metrics.upload_errors.inc();
                    self.set_store_up(false);
                    let delay = backoff.next().unwrap_or(self.backfill_max);
                    tracing::warn!(object = %entry.location, seq, error = %e, ?delay, "backfill failed; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn health_check(&self) {
        // A HEAD of an object that is never written: "not found" is an
        // answer from a working store.
        let probe = Path::from(PROBE_PREFIX).join("health");
        match self.inner.head(&probe).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => self.set_store_up(true),
            Err(e) => {
                tracing::debug!(error = %e, "store health check failed");
                self.set_store_up(false);
            }
        }
    }

    /// Uploads one spooled object and removes its file. An object the
    /// store holds with other bytes is moved to `conflicts/`.
    async fn upload(&self, seq: u64, entry: &Entry) -> Result<(), object_store::Error> {
        let read_entry = entry.clone();
        let data = match tokio::task::spawn_blocking(move || read_data(&read_entry))
            .await
            .map_err(|e| object_store::Error::JoinError { source: e })?
        {
            Ok(d) => d,
            Err(e @ SpoolError::Corrupt { .. }) => {
                tracing::error!(object = %entry.location, error = %e, "spool file damaged; set aside, not uploaded");
                return self.set_aside(seq, entry).await;
            }
            Err(e) => return Err(e.into()),
        };
        let started = now();
        match self
            .inner
            .put_opts(
                &entry.location,
                PutPayload::from(data.clone()),
                PutOptions::from(PutMode::Create),
            )
            .await
        {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => {
                let stored = self.inner.get(&entry.location).await?.bytes().await?;
                if stored != data {
                    tracing::error!(
                        object = %entry.location,
                        seq,
                        "CONFLICT: the store already holds other bytes at this path; not overwritten, spool file set aside in conflicts/"
                    );
                    return self.set_aside(seq, entry).await;
                }
            }
            Err(e) => return Err(e),
        }
        tracing::debug!(object = %entry.location, seq, bytes = entry.size, elapsed = ?started.elapsed(), "backfilled");
        let file = entry.file.clone();
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::remove_file(&file).map_err(io_err(&file))?;
            sync_dir(&dir)
        })
        .await
        .map_err(|e| object_store::Error::JoinError { source: e })??;
        self.forget(seq, entry, false);
        Ok(())
    }

    /// Moves a spool file to `conflicts/` (kept, never uploaded).
    async fn set_aside(&self, seq: u64, entry: &Entry) -> Result<(), object_store::Error> {
        let file = entry.file.clone();
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            let conflicts = dir.join(CONFLICTS);
            std::fs::create_dir_all(&conflicts).map_err(io_err(&conflicts))?;
            let name = file.file_name().map(PathBuf::from).unwrap_or_default();
            let to = conflicts.join(name);
            std::fs::rename(&file, &to).map_err(io_err(&to))?;
            sync_dir(&conflicts)?;
            sync_dir(&dir)
        })
        .await
        .map_err(|e| object_store::Error::JoinError { source: e })??;
        self.forget(seq, entry, true);
        Ok(())
    }

    fn forget(&self, seq: u64, entry: &Entry, conflict: bool) {
        let mut st = self.lock();
        if st.entries.remove(&seq).is_some() {
            st.bytes = st.bytes.saturating_sub(entry.file_len);
        }
        if st.by_path.get(&entry.location) == Some(&seq) {
            st.by_path.remove(&entry.location);
            // Another spool file for the same path (only possible from an
            // older spool) takes over reads.
            if let Some((s, _)) = st
                .entries
                .iter()
                .find(|(_, e)| e.location == entry.location)
            {
                let s = *s;
                st.by_path.insert(entry.location.clone(), s);
            }
        }
        if conflict {
            st.conflicts += 1;
        }
        self.publish(&st);
    }

    fn get_spooled(&self, entry: &Entry, options: &GetOptions) -> object_store::Result<GetResult> {
        let meta = entry_meta(entry);
        options.check_preconditions(&meta)?;
        let range = match &options.range {
            Some(r) => r
                .as_range(entry.size)
                .map_err(|e| object_store::Error::Generic {
                    store: "spool",
                    source: Box::new(e),
                })?,
            None => 0..entry.size,
        };
        let payload = if options.head {
            GetResultPayload::Stream(stream::empty().boxed())
        } else {
            let file = File::open(&entry.file).map_err(|e| object_store::Error::NotFound {
                path: entry.location.to_string(),
                source: Box::new(e),
            })?;
            GetResultPayload::File(file, entry.file.clone())
        };
        Ok(GetResult {
            payload,
            meta,
            range,
            attributes: Default::default(),
            extensions: Default::default(),
        })
    }

    fn spooled_under(&self, prefix: Option<&Path>) -> Vec<ObjectMeta> {
        let st = self.lock();
        let mut seen = HashSet::new();
        st.entries
            .values()
            .filter(|e| prefix.is_none_or(|p| e.location.prefix_matches(p)))
            .filter(|e| seen.insert(e.location.clone()))
            .map(entry_meta)
            .collect()
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock is a bug; the state is plain data that
    // every critical section leaves consistent, so keep going.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn publish(st: &State, metrics: &StoreMetrics, objects: &watch::Sender<u64>) {
    metrics.spool_bytes.set(saturating_i64(st.bytes));
    metrics
        .spool_objects
        .set(saturating_i64(st.entries.len() as u64));
    metrics.spool_conflicts.set(saturating_i64(st.conflicts));
    objects.send_replace(st.entries.len() as u64);
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn already_spooled(location: &Path) -> object_store::Error {
    object_store::Error::AlreadyExists {
        path: location.to_string(),
        source: "already in the spool".into(),
    }
}

/// Answers that a spool cannot improve on: returned to the caller as they
/// are. Everything else (transport, timeouts, server errors, refused
/// credentials, a vanished bucket) means the store cannot take the write
/// now, and the write is spooled.
fn definite(e: &object_store::Error) -> bool {
    matches!(
        e,
        object_store::Error::AlreadyExists { .. }
            | object_store::Error::Precondition { .. }
            | object_store::Error::NotModified { .. }
            | object_store::Error::NotSupported { .. }
            | object_store::Error::NotImplemented { .. }
            | object_store::Error::InvalidPath { .. }
    )
}

fn entry_meta(e: &Entry) -> ObjectMeta {
    ObjectMeta {
        location: e.location.clone(),
        last_modified: e.modified.into(),
        size: e.size,
        e_tag: Some(hex::encode(e.sha256)),
        version: None,
    }
}

fn unsupported(operation: &'static str) -> object_store::Error {
    SpoolError::Unsupported { operation }.into()
}

#[cfg(test)]
mod tests {
    use super::file::read_entry;
    use super::*;

    #[test]
    fn spool_file_round_trips_and_damage_is_caught() {
        let dir = tempfile::tempdir().expect("tempdir");
        let loc = Path::from("lessons/ab/segments/0000000001.age");
        let payload = PutPayload::from_iter([
            bytes::Bytes::from_static(b"hello "),
            bytes::Bytes::from_static(b"world"),
        ]);
        let e = write_file(dir.path(), 7, &loc, &payload).expect("written");
        assert_eq!(e.size, 11);
        let back = read_entry(&e.file, true).expect("reads back");
        assert_eq!(back.location, loc);
        assert_eq!(back.sha256, e.sha256);
        assert_eq!(read_data(&back).expect("data").as_ref(), b"hello world");
        assert!(!dir.path().join(format!("{:020}.part", 7)).exists());

        let mut bytes = std::fs::read(&e.file).expect("read");
        bytes[3] ^= 1;
        std::fs::write(&e.file, &bytes).expect("write");
        assert!(matches!(
            read_entry(&e.file, true),
            Err(SpoolError::Corrupt { .. })
        ));
        bytes.truncate(bytes.len() - 1);
        std::fs::write(&e.file, &bytes).expect("write");
        assert!(matches!(
            read_entry(&e.file, false),
            Err(SpoolError::Corrupt { .. })
        ));
    }
}
