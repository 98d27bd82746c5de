//! The embedded store: everything in one process's memory. Used by
//! `gateway --dev` and single-node deployments; nothing survives a restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use chaperone_protocol::{LessonId, UserRef};
use tokio::sync::broadcast;

use super::{
    Acquired, Block, EVENT_BUFFER, Lease, NodeInfo, Previous, SessionRecord, StateStore,
    StoreError, StoreEvent, UnixMillis, Versioned, VisitorGrant, check_size,
};

#[derive(Debug, Default)]
struct Inner {
    lessons: HashMap<LessonId, Versioned>,
    /// Each lesson's lease: holder, epoch, expiry.
    leases: HashMap<LessonId, (String, u64, UnixMillis)>,
    /// Each lesson's last epoch released by its holder (not lapsed).
    released: HashMap<LessonId, u64>,
    /// Each lesson's latest epoch granted.
    epochs: HashMap<LessonId, u64>,
    nodes: HashMap<String, (NodeInfo, UnixMillis)>,
    blocks: HashMap<UserRef, Block>,
    grants: HashMap<String, VisitorGrant>,
    sessions: HashMap<String, (SessionRecord, UnixMillis)>,
    claims: HashMap<(String, String), UnixMillis>,
    records: HashMap<String, HashMap<String, String>>,
    temp: HashMap<(String, String), (Vec<u8>, UnixMillis)>,
    audit: Vec<String>,
}

/// The in-memory store. Cheap to clone; clones share state.
#[derive(Clone, Debug)]
pub struct LocalStore {
    // A std mutex: every critical section is a few map operations and never
    // awaits, so an async mutex would only add cost (see mini-redis `Db`).
    inner: Arc<Mutex<Inner>>,
    events: broadcast::Sender<StoreEvent>,
}

impl Default for LocalStore {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalStore {
    /// An empty store.
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Self {
            inner: Arc::new(Mutex::new(Inner::default())),
            events,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave these maps half-updated
        // in a way later readers could misread (each operation is one insert
        // or remove), so a poisoned lock is safe to keep using.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl StateStore for LocalStore {
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn load_lesson(&self, lesson: LessonId) -> Result<Option<Versioned>, StoreError> {
        Ok(self.lock().lessons.get(&lesson).cloned())
    }

    async fn save_lesson(
        &self,
        lesson: LessonId,
        expected: u64,
        bytes: Vec<u8>,
    ) -> Result<u64, StoreError> {
        check_size(bytes.len())?;
        let mut inner = self.lock();
        let current = inner.lessons.get(&lesson).map_or(0, |v| v.version);
        if current != expected {
            return Err(StoreError::Conflict { current });
        }
        let version = current + 1;
        inner.lessons.insert(lesson, Versioned { version, bytes });
        Ok(version)
    }

    async fn delete_lesson(&self, lesson: LessonId) -> Result<(), StoreError> {
        self.lock().lessons.remove(&lesson);
        Ok(())
    }

    async fn acquire_lease(
        &self,
        lesson: LessonId,
        node: &str,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<Acquired, StoreError> {
        let mut inner = self.lock();
        if let Some((holder, epoch, until)) = inner.leases.get_mut(&lesson)
            && *until > now
        {
            if holder == node {
                *until = expires_at;
                return Ok(Acquired::Granted {
                    lease: Lease {
                        lesson,
                        node: node.to_owned(),
                        epoch: *epoch,
                    },
                    previous: Previous::Ours,
                });
            }
            return Ok(Acquired::Held {
                node: holder.clone(),
                epoch: *epoch,
            });
        }
        let last = inner.epochs.get(&lesson).copied().unwrap_or(0);
        let previous = if last == 0 {
            Previous::None
        } else if inner.released.get(&lesson) == Some(&last) {
            Previous::Released
        } else {
            Previous::Lapsed
        };
        let epoch = last + 1;
        inner.epochs.insert(lesson, epoch);
        inner
            .leases
            .insert(lesson, (node.to_owned(), epoch, expires_at));
        Ok(Acquired::Granted {
            lease: Lease {
                lesson,
                node: node.to_owned(),
                epoch,
            },
            previous,
        })
    }

    async fn renew_lease(
        &self,
        lease: &Lease,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        if inner.epochs.get(&lease.lesson) != Some(&lease.epoch) {
            return Ok(false);
        }
        match inner.leases.get_mut(&lease.lesson) {
            Some((holder, epoch, until)) if *holder == lease.node && *epoch == lease.epoch => {
                *until = expires_at;
                Ok(true)
            }
            // Someone else's, still current.
            Some((_, _, until)) if *until > now => Ok(false),
            // Expired or released with no grant since: nobody else held it.
            _ => {
                inner
                    .leases
                    .insert(lease.lesson, (lease.node.clone(), lease.epoch, expires_at));
                Ok(true)
            }
        }
    }

    async fn release_lease(&self, lease: &Lease) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        match inner.leases.get(&lease.lesson) {
            Some((holder, epoch, _)) if *holder == lease.node && *epoch == lease.epoch => {
                inner.leases.remove(&lease.lesson);
                inner.released.insert(lease.lesson, lease.epoch);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn lease_holder(
        &self,
        lesson: LessonId,
        now: UnixMillis,
    ) -> Result<Option<(String, u64)>, StoreError> {
        Ok(self
            .lock()
            .leases
            .get(&lesson)
            .filter(|(_, _, until)| *until > now)
            .map(|(holder, epoch, _)| (holder.clone(), *epoch)))
    }

    async fn save_lesson_fenced(&self, lease: &Lease, bytes: Vec<u8>) -> Result<u64, StoreError> {
        check_size(bytes.len())?;
        let mut inner = self.lock();
        let current = inner.epochs.get(&lease.lesson).copied().unwrap_or(0);
        if current != lease.epoch {
            return Err(StoreError::Fenced { current });
        }
        let version = inner.lessons.get(&lease.lesson).map_or(0, |v| v.version) + 1;
        inner
            .lessons
            .insert(lease.lesson, Versioned { version, bytes });
        Ok(version)
    }

    async fn put_node(
        &self,
        node: NodeInfo,
        _now: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<(), StoreError> {
        self.lock()
            .nodes
            .insert(node.id.clone(), (node, expires_at));
        Ok(())
    }

    async fn live_nodes(&self, now: UnixMillis) -> Result<Vec<NodeInfo>, StoreError> {
        let mut inner = self.lock();
        inner.nodes.retain(|_, (_, until)| *until > now);
        let mut nodes: Vec<NodeInfo> = inner.nodes.values().map(|(n, _)| n.clone()).collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }

    async fn remove_node(&self, id: &str) -> Result<(), StoreError> {
        self.lock().nodes.remove(id);
        Ok(())
    }

    async fn block(&self, user: &UserRef, block: Block) -> Result<(), StoreError> {
        self.lock().blocks.insert(user.clone(), block);
        Ok(())
    }

    async fn unblock(&self, user: &UserRef) -> Result<bool, StoreError> {
        Ok(self.lock().blocks.remove(user).is_some())
    }

    async fn blocked(&self, user: &UserRef) -> Result<Option<Block>, StoreError> {
        Ok(self.lock().blocks.get(user).cloned())
    }

    async fn list_blocks(&self) -> Result<Vec<(UserRef, Block)>, StoreError> {
        let mut all: Vec<_> = self
            .lock()
            .blocks
            .iter()
            .map(|(u, b)| (u.clone(), b.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(all)
    }

    async fn put_grant(&self, grant: VisitorGrant) -> Result<(), StoreError> {
        self.lock().grants.insert(grant.id.clone(), grant);
        Ok(())
    }

    async fn revoke_grant(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.lock().grants.remove(id).is_some())
    }

    async fn grants_for(&self, user: &UserRef) -> Result<Vec<VisitorGrant>, StoreError> {
        let mut grants: Vec<_> = self
            .lock()
            .grants
            .values()
            .filter(|g| g.visitor == *user)
            .cloned()
            .collect();
        grants.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(grants)
    }

    async fn move_grant(&self, grant: &VisitorGrant, to: &UserRef) -> Result<bool, StoreError> {
        match self.lock().grants.get_mut(&grant.id) {
            Some(g) if g.visitor == grant.visitor => {
                g.visitor = to.clone();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn put_session(
        &self,
        id: &str,
        record: SessionRecord,
        _now: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<(), StoreError> {
        check_size(record.payload.len())?;
        self.lock()
            .sessions
            .insert(id.to_owned(), (record, expires_at));
        Ok(())
    }

    async fn get_session(
        &self,
        id: &str,
        now: UnixMillis,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let mut inner = self.lock();
        match inner.sessions.get(id) {
            Some((record, expires_at)) if now < *expires_at => Ok(Some(record.clone())),
            Some(_) => {
                inner.sessions.remove(id);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn touch_session(
        &self,
        id: &str,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        match inner.sessions.get_mut(id) {
            Some((_, exp)) if now < *exp => {
                *exp = expires_at;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn delete_session(&self, id: &str) -> Result<(), StoreError> {
        self.lock().sessions.remove(id);
        Ok(())
    }

    async fn delete_sessions_of(
        &self,
        user: &UserRef,
        now: UnixMillis,
    ) -> Result<usize, StoreError> {
        let mut inner = self.lock();
        let mut ended = 0;
        inner.sessions.retain(|_, (record, expires_at)| {
            if record.user == *user {
                if now < *expires_at {
                    ended += 1;
                }
                false
            } else {
                true
            }
        });
        Ok(ended)
    }

    async fn claim_once(
        &self,
        namespace: &str,
        id: &str,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        // Forget claims whose tokens can no longer be presented anyway.
        inner.claims.retain(|_, exp| now < *exp);
        let key = (namespace.to_owned(), id.to_owned());
        if inner.claims.contains_key(&key) {
            return Ok(false);
        }
        inner.claims.insert(key, expires_at);
        Ok(true)
    }

    async fn put_record(&self, table: &str, id: &str, json: String) -> Result<(), StoreError> {
        check_size(json.len())?;
        self.lock()
            .records
            .entry(table.to_owned())
            .or_default()
            .insert(id.to_owned(), json);
        Ok(())
    }

    async fn get_record(&self, table: &str, id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .lock()
            .records
            .get(table)
            .and_then(|t| t.get(id))
            .cloned())
    }

    async fn list_records(&self, table: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(self
            .lock()
            .records
            .get(table)
            .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }

    async fn put_temp(
        &self,
        namespace: &str,
        id: &str,
        bytes: Vec<u8>,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<(), StoreError> {
        check_size(bytes.len())?;
        let mut inner = self.lock();
        inner.temp.retain(|_, (_, until)| *until > now);
        inner
            .temp
            .insert((namespace.to_owned(), id.to_owned()), (bytes, expires_at));
        Ok(())
    }

    async fn take_temp(
        &self,
        namespace: &str,
        id: &str,
        now: UnixMillis,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let taken = self
            .lock()
            .temp
            .remove(&(namespace.to_owned(), id.to_owned()));
        Ok(taken.and_then(|(bytes, until)| (until > now).then_some(bytes)))
    }

    async fn append_audit(&self, json: String) -> Result<(), StoreError> {
        check_size(json.len())?;
        self.lock().audit.push(json);
        Ok(())
    }

    async fn audit_tail(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        let inner = self.lock();
        let from = inner.audit.len().saturating_sub(limit);
        Ok(inner.audit[from..].to_vec())
    }

    async fn audit_page(&self, from: u64, limit: usize) -> Result<(u64, Vec<String>), StoreError> {
        let inner = self.lock();
        let len = inner.audit.len();
        let start = usize::try_from(from).unwrap_or(usize::MAX).min(len);
        let end = start.saturating_add(limit).min(len);
        Ok((len as u64, inner.audit[start..end].to_vec()))
    }

    async fn publish(&self, event: StoreEvent) -> Result<(), StoreError> {
        // No subscriber is not an error: nobody needed telling.
        let _ = self.events.send(event);
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.events.subscribe()
    }
}
