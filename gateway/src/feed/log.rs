//! One lesson's unacknowledged feed frames, in order: the newest in memory,
//! the overflow (past a byte bound) in a spool file on local disk, so that a
//! recorder that is slow or away costs disk, never a frame.
//!
//! Frames are numbered here with *local* seqs from 1; the feed adds the
//! recorder's base when it sends them (see [`super`]). A frame leaves the
//! log only when the recorder acknowledges it as durable.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::time::Instant;

use bytes::Bytes;

/// Why a frame could not be kept.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum LogError {
    /// The spool file could not be written or read.
    #[error("feed spool {path}: {source}")]
    Spool {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

#[derive(Debug)]
struct MemFrame {
    seq: u64,
    at: Instant,
    bytes: Bytes,
}

#[derive(Debug, Clone, Copy)]
struct Spooled {
    seq: u64,
    at: Instant,
    offset: u64,
    len: u32,
}

/// The log.
#[derive(Debug)]
pub(crate) struct FeedLog {
    /// Local seq the next frame gets.
    next: u64,
    /// Every local seq up to this is acknowledged (and gone).
    acked: u64,
    /// Oldest unacknowledged frames that overflowed memory, in seq order;
    /// all older than everything in `mem`.
    spooled: VecDeque<Spooled>,
    spool: Option<File>,
    spool_path: PathBuf,
    spool_len: u64,
    spool_bytes: u64,
    mem: VecDeque<MemFrame>,
    mem_bytes: usize,
    mem_limit: usize,
}

impl FeedLog {
    /// An empty log keeping up to `mem_limit` bytes in memory and the rest
    /// in `spool_path` (created when first needed, removed on drop).
    pub(crate) fn new(mem_limit: usize, spool_path: PathBuf) -> Self {
        Self {
            next: 1,
            acked: 0,
            spooled: VecDeque::new(),
            spool: None,
            spool_path,
            spool_len: 0,
            spool_bytes: 0,
            mem: VecDeque::new(),
            mem_bytes: 0,
            mem_limit,
        }
    }

    /// The local seq the next frame will get.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next
    }

    /// Every local seq up to this is acknowledged.
    pub(crate) fn acked(&self) -> u64 {
        self.acked
    }

    /// Bytes held in memory.
    pub(crate) fn mem_bytes(&self) -> usize {
        self.mem_bytes
    }

    /// Bytes of unacknowledged frames in the spool file.
    pub(crate) fn spool_bytes(&self) -> u64 {
        self.spool_bytes
    }

    /// When the oldest unacknowledged frame was appended.
    pub(crate) fn oldest(&self) -> Option<Instant> {
        self.spooled
            .front()
            .map(|s| s.at)
            .or_else(|| self.mem.front().map(|m| m.at))
    }

    /// Appends a frame encoded by `encode(local_seq)`; returns its seq.
    /// An encoding error consumes no seq.
    pub(crate) fn append<E>(
        &mut self,
        at: Instant,
        encode: impl FnOnce(u64) -> Result<Vec<u8>, E>,
    ) -> Result<Result<u64, E>, LogError> {
        let seq = self.next;
        let bytes = match encode(seq) {
            Ok(b) => Bytes::from(b),
            Err(e) => return Ok(Err(e)),
        };
        self.next += 1;
        self.mem_bytes += bytes.len();
        self.mem.push_back(MemFrame { seq, at, bytes });
        self.overflow()?;
        Ok(Ok(seq))
    }

    /// Moves the oldest frames in memory to the spool until memory is
    /// within its bound.
    fn overflow(&mut self) -> Result<(), LogError> {
        while self.mem_bytes > self.mem_limit && self.mem.len() > 1 {
            let Some(f) = self.mem.pop_front() else {
                break;
            };
            self.mem_bytes -= f.bytes.len();
            let file = match &mut self.spool {
                Some(file) => file,
                None => {
                    let file = File::options()
                        .create(true)
                        .truncate(true)
                        .read(true)
                        .write(true)
                        .open(&self.spool_path)
                        .map_err(|source| self.spool_error(source))?;
                    self.spool.insert(file)
                }
            };
            // Positioned writes: the file is truncated and reused once all of it is acknowledged.
            let result = file.write_all_at(&f.bytes, self.spool_len);
            if let Err(source) = result {
                // Keep the frame in memory rather than lose it.
                self.mem_bytes += f.bytes.len();
                self.mem.push_front(f);
                return Err(self.spool_error(source));
            }
            // Frames are bounded far below u32::MAX by the feed's frame limit.
            let len = u32::try_from(f.bytes.len()).unwrap_or(u32::MAX);
            self.spooled.push_back(Spooled {
                seq: f.seq,
                at: f.at,
                offset: self.spool_len,
                len,
            });
            self.spool_len += u64::from(len);
            self.spool_bytes += u64::from(len);
        }
        Ok(())
    }

    fn spool_error(&self, source: std::io::Error) -> LogError {
        LogError::Spool {
            path: self.spool_path.clone(),
            source,
        }
    }

    /// The frame with local seq `seq`, if it is still held.
    pub(crate) fn get(&self, seq: u64) -> Result<Option<Bytes>, LogError> {
        if seq <= self.acked || seq >= self.next {
            return Ok(None);
        }
        if let Some(first) = self.mem.front()
            && seq >= first.seq
        {
            // Memory holds a contiguous run of seqs.
            let i = usize::try_from(seq - first.seq).unwrap_or(usize::MAX);
            return Ok(self.mem.get(i).map(|f| f.bytes.clone()));
        }
        let Some(first) = self.spooled.front() else {
            return Ok(None);
        };
        let i = usize::try_from(seq.saturating_sub(first.seq)).unwrap_or(usize::MAX);
        let Some(s) = self.spooled.get(i).copied() else {
            return Ok(None);
        };
        let Some(file) = &self.spool else {
            return Ok(None);
        };
        let mut buf = vec![0; s.len as usize];
        file.read_exact_at(&mut buf, s.offset)
            .map_err(|source| self.spool_error(source))?;
        Ok(Some(Bytes::from(buf)))
    }

    /// Drops every frame up to local seq `up_to` (acknowledged as durable).
    pub(crate) fn ack(&mut self, up_to: u64) {
        let up_to = up_to.min(self.next - 1);
        if up_to <= self.acked {
            return;
        }
        self.acked = up_to;
        while self.spooled.front().is_some_and(|s| s.seq <= up_to) {
            if let Some(s) = self.spooled.pop_front() {
                self.spool_bytes -= u64::from(s.len);
            }
        }
        if self.spooled.is_empty() && self.spool_len > 0 {
            // Everything spooled is durable: start the file again.
            if let Some(file) = &self.spool
                && file.set_len(0).is_ok()
            {
                self.spool_len = 0;
            }
        }
        while self.mem.front().is_some_and(|m| m.seq <= up_to) {
            if let Some(m) = self.mem.pop_front() {
                self.mem_bytes -= m.bytes.len();
            }
        }
    }

    /// Whether every frame appended so far is acknowledged.
    pub(crate) fn all_acked(&self) -> bool {
        self.acked + 1 == self.next
    }
}

impl Drop for FeedLog {
    fn drop(&mut self) {
        if self.spool.take().is_some() {
            let _ = std::fs::remove_file(&self.spool_path);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn t() -> Instant {
        crate::clock::now()
    }

    fn frame(seq: u64) -> Result<Vec<u8>, ()> {
        Ok(format!("frame-{seq:04}").into_bytes())
    }

    #[test]
    fn frames_overflow_to_disk_come_back_in_order_and_leave_when_acked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.spool");
        // Room for two 10-byte frames in memory.
        let mut log = FeedLog::new(20, path.clone());
        for _ in 0..10 {
            log.append(t(), frame).unwrap().unwrap();
        }
        assert_eq!(log.next_seq(), 11);
        assert!(log.mem_bytes() <= 20);
        assert_eq!(log.spool_bytes(), 80);
        assert!(path.exists());
        for seq in 1..=10 {
            assert_eq!(
                log.get(seq).unwrap().unwrap(),
                Bytes::from(frame(seq).unwrap())
            );
        }
        assert!(log.get(0).unwrap().is_none());
        assert!(log.get(11).unwrap().is_none());
        log.ack(4);
        assert!(log.get(4).unwrap().is_none());
        assert_eq!(log.get(5).unwrap().unwrap(), Bytes::from("frame-0005"));
        assert_eq!(log.spool_bytes(), 40);
        log.ack(9);
        assert_eq!(log.spool_bytes(), 0);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        assert_eq!(log.get(10).unwrap().unwrap(), Bytes::from("frame-0010"));
        // Acks beyond what exists are clamped; more frames spool again.
        log.ack(100);
        assert!(log.all_acked());
        for _ in 0..5 {
            log.append(t(), frame).unwrap().unwrap();
        }
        assert_eq!(log.get(11).unwrap().unwrap(), Bytes::from("frame-0011"));
        assert_eq!(log.get(15).unwrap().unwrap(), Bytes::from("frame-0015"));
        drop(log);
        assert!(!path.exists(), "the spool is removed with the log");
    }

    #[test]
    fn an_encoding_error_takes_no_seq() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = FeedLog::new(1 << 20, dir.path().join("l.spool"));
        assert_eq!(log.append(t(), frame).unwrap().unwrap(), 1);
        assert!(log.append(t(), |_| Err::<Vec<u8>, _>(())).unwrap().is_err());
        assert_eq!(log.append(t(), frame).unwrap().unwrap(), 2);
        assert!(log.oldest().is_some());
        log.ack(2);
        assert!(log.oldest().is_none());
    }
}
