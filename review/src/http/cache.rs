//! What the review service holds in memory: recordings opened for review
//! and files remuxed for a scope, each in a bounded LRU (half of
//! `cache_bytes` each), and one small summary per lesson for the search.
//!
//! A cached value is only ever served to a request that would have made
//! it: remuxed files are keyed by the withheld spans of the requester's
//! access, and an unfinished lesson is reopened when a newer checkpoint is
//! signed. The cache must never outlive a deletion by the retention sweep
//! ([`Cache::forget`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chaperone_protocol::LessonId;

use super::ReviewService;
use super::refusal::Refusal;
use crate::library::{self, LibraryError, Recording, Summary};
use crate::policy::{self, Access};
use crate::webm::{self, MuxInput, Span, VideoCodec, WebmFile};

/// A bounded cache of shared values by key, least recently used out first.
struct Lru<K, V> {
    items: Vec<(K, Arc<V>, usize)>,
    bytes: usize,
    bound: usize,
}

impl<K: PartialEq, V> Lru<K, V> {
    fn new(bound: usize) -> Self {
        Self {
            items: Vec::new(),
            bytes: 0,
            bound,
        }
    }
    fn get(&mut self, k: &K) -> Option<Arc<V>> {
        let i = self.items.iter().position(|(x, ..)| x == k)?;
        let item = self.items.remove(i);
        let v = item.1.clone();
        self.items.push(item);
        Some(v)
    }
    fn put(&mut self, k: K, v: Arc<V>, size: usize) {
        self.items.retain(|(x, ..)| x != &k);
        self.items.push((k, v, size));
        self.bytes = self.items.iter().map(|i| i.2).sum();
        while self.bytes > self.bound && self.items.len() > 1 {
            let (_, _, s) = self.items.remove(0);
            self.bytes -= s;
        }
    }
    fn retain(&mut self, f: impl Fn(&K) -> bool) {
        self.items.retain(|(k, ..)| f(k));
        self.bytes = self.items.iter().map(|i| i.2).sum();
    }
}

type FileKey = (LessonId, u64, String, Vec<Span>);

/// The service's caches.
pub(super) struct Cache {
    recordings: Mutex<Lru<LessonId, Recording>>,
    files: Mutex<Lru<FileKey, WebmFile>>,
    summaries: Mutex<HashMap<LessonId, (u64, Summary)>>,
}

impl Cache {
    /// Caches holding at most `bound` bytes of recordings and files together.
    pub(super) fn new(bound: usize) -> Self {
        Self {
            recordings: Mutex::new(Lru::new(bound / 2)),
            files: Mutex::new(Lru::new(bound / 2)),
            summaries: Mutex::default(),
        }
    }

    /// Drops everything of the `deleted` lessons.
    pub(super) fn forget(&self, deleted: &[LessonId]) {
        self.recordings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|l| !deleted.contains(l));
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k| !deleted.contains(&k.0));
        self.summaries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|l, _| !deleted.contains(l));
    }
}

impl ReviewService {
    /// The lesson's recording, opened (or from the cache; reopened when a
    /// newer checkpoint of an unfinished lesson exists).
    pub(super) async fn recording(&self, lesson: LessonId) -> Result<Arc<Recording>, Refusal> {
        let cached = self
            .cache
            .recordings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&lesson);
        if let Some(r) = &cached
            && r.is_final
        {
            return Ok(r.clone());
        }
        let manifest =
            match library::trusted_manifest(self.store.as_ref(), &lesson, &self.key).await {
                Ok(m) => m,
                Err(LibraryError::NotFound) => return Err(Refusal::NotFound),
                Err(e) => {
                    tracing::error!(%lesson, error = %e, "recording unreadable");
                    return Err(Refusal::Unavailable);
                }
            };
        if let Some(r) = cached
            && r.checkpoint == manifest.checkpoint
        {
            return Ok(r);
        }
        let rec = match library::open(self.store.as_ref(), &lesson, &self.key, &self.identity).await
        {
            Ok(r) => Arc::new(r),
            Err(LibraryError::NotFound) => return Err(Refusal::NotFound),
            Err(e) => {
                tracing::error!(%lesson, error = %e, "recording cannot be replayed");
                return Err(Refusal::Unavailable);
            }
        };
        self.cache
            .summaries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(lesson, (rec.checkpoint, rec.summary()));
        self.cache
            .recordings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(lesson, rec.clone(), rec.bytes);
        Ok(rec)
    }

    pub(super) async fn summary(&self, lesson: LessonId) -> Result<Summary, Refusal> {
        if let Some((_, s)) = self
            .cache
            .summaries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&lesson)
            .filter(|(_, s)| s.is_final)
        {
            return Ok(s.clone());
        }
        Ok(self.recording(lesson).await?.summary())
    }

    /// One remuxed file for `access` (from the cache when made before).
    pub(super) async fn file(
        &self,
        rec: &Arc<Recording>,
        name: &str,
        access: Access,
    ) -> Result<Arc<WebmFile>, Refusal> {
        let allowed = policy::files(rec, access);
        let Some(info) = allowed.iter().find(|f| f.name == name) else {
            return Err(Refusal::NotFound);
        };
        let restrictions = self.restrictions(rec.lesson).await?;
        let omit = policy::withheld(access, &restrictions);
        let key = (rec.lesson, rec.checkpoint, info.name.clone(), omit.clone());
        if let Some(f) = self
            .cache
            .files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(f);
        }
        let (video, audio) = library::file_tracks(info.participant, info.screen);
        let rec2 = rec.clone();
        let made = tokio::task::spawn_blocking(move || {
            let v = rec2.tracks.get(&video).and_then(|t| {
                t.codec
                    .and_then(VideoCodec::of)
                    .map(|c| (c, t.frames.as_slice()))
            });
            let a = audio
                .and_then(|a| rec2.tracks.get(&a))
                .map(|t| t.frames.as_slice());
            webm::mux(&MuxInput {
                video: v,
                audio: a,
                omit: &omit,
                duration_micros: rec2.duration_micros,
            })
        })
        .await
        .map_err(|_| Refusal::Unavailable)?;
        let file = match made {
            Ok(f) => Arc::new(f),
            Err(webm::WebmError::Empty) => return Err(Refusal::NotFound),
            Err(e) => {
                tracing::error!(lesson = %rec.lesson, file = name, error = %e, "remux failed");
                return Err(Refusal::Unavailable);
            }
        };
        let size = file.bytes.len();
        self.cache
            .files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(key, file.clone(), size);
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::Lru;

    #[test]
    fn the_least_recently_used_goes_first_and_the_newest_always_stays() {
        let mut lru = Lru::new(10);
        lru.put(1, Arc::new("a"), 4);
        lru.put(2, Arc::new("b"), 4);
        assert!(lru.get(&1).is_some()); // 2 is now the least recently used
        lru.put(3, Arc::new("c"), 4);
        assert!(lru.get(&2).is_none());
        assert!(lru.get(&1).is_some() && lru.get(&3).is_some());
        assert_eq!(lru.bytes, 8);
        // One value larger than the bound is still kept, alone.
        lru.put(4, Arc::new("d"), 50);
        assert_eq!(lru.items.len(), 1);
        assert!(lru.get(&4).is_some());
        lru.retain(|k| *k != 4);
        assert_eq!((lru.items.len(), lru.bytes), (0, 0));
    }
}
