//! The state store: what must survive a gateway node or be shared between
//! nodes — lesson control snapshots (compare-and-set versioned), the block
//! list, visitor grants, login sessions, pending logins, single-use claims
//! (room-token `jti`s), records (lesson descriptions, the people directory),
//! the audit log — and the pub/sub of cluster events (blocks, ended sessions,
//! lesson events).
//!
//! One trait, [`StateStore`], two implementations chosen at start-up through
//! [`Store`]: [`LocalStore`] (in memory, the embedded default for one
//! process) and [`RedisStore`] (shared by every node). The same conformance
//! suite (`tests/tests/store_conformance.rs`) runs against both.
//!
//! The store never reads a clock: callers pass wall-clock times in as
//! [`UnixMillis`]. It never interprets lesson snapshots or session payloads:
//! they are bytes and JSON owned by the lesson core and the auth layer.

mod keys;
mod local;
mod redis;

use std::future::Future;

use chaperone_protocol::{LessonId, UserRef};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

pub use self::local::LocalStore;
pub use self::redis::{RedisStore, RedisStoreConfig};

/// Largest value the store accepts (a snapshot or a session payload).
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

/// How many cluster events a slow subscriber may fall behind before it
/// misses some (it is then told, by `RecvError::Lagged`).
pub const EVENT_BUFFER: usize = 1024;

/// Wall-clock time as milliseconds since the Unix epoch, passed in by callers.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    /// Milliseconds from `self` until `later`, at least 1 (Redis refuses a zero TTL).
    pub fn until(self, later: UnixMillis) -> u64 {
        later.0.saturating_sub(self.0).max(1)
    }
}

/// A value with its compare-and-set version (1 for the first write).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Versioned {
    /// Incremented on every successful write.
    pub version: u64,
    /// The stored bytes.
    pub bytes: Vec<u8>,
}

/// Why and by whom a person was blocked.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Block {
    /// The stated reason (audited).
    pub reason: String,
    /// Who blocked them.
    pub by: UserRef,
    /// When.
    pub at: UnixMillis,
}

/// Time-boxed observer access for a visitor (e.g. an inspector).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisitorGrant {
    /// Unguessable id of the grant.
    pub id: String,
    /// The visitor.
    pub visitor: UserRef,
    /// Lessons they may observe.
    pub lessons: Vec<LessonId>,
    /// Start of the window.
    pub not_before: UnixMillis,
    /// End of the window (exclusive).
    pub not_after: UnixMillis,
    /// Who granted it.
    pub granted_by: UserRef,
    /// Why.
    pub reason: String,
}

impl VisitorGrant {
    /// Whether the grant lets its visitor into `lesson` at `now`.
    pub fn covers(&self, lesson: LessonId, now: UnixMillis) -> bool {
        self.not_before <= now && now < self.not_after && self.lessons.contains(&lesson)
    }
}

/// A login session. The auth layer owns the payload's meaning.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRecord {
    /// Whose session.
    pub user: UserRef,
    /// Opaque JSON owned by the auth layer.
    pub payload: String,
}

/// An event every node hears.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum StoreEvent {
    /// A person was blocked: end their connections everywhere.
    Blocked {
        /// Who.
        user: UserRef,
    },
    /// A block was lifted.
    Unblocked {
        /// Who.
        user: UserRef,
    },
    /// All of a person's sessions were ended.
    SessionsEnded {
        /// Who.
        user: UserRef,
    },
    /// Something for the node that owns a lesson.
    Lesson {
        /// The lesson.
        lesson: LessonId,
        /// Opaque to the store.
        payload: String,
    },
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backing store cannot be reached; nothing was changed that the caller can rely on.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// A compare-and-set write lost: the stored version is `current`.
    #[error("version conflict: stored version is {current}")]
    Conflict {
        /// The version now stored (0 if none).
        current: u64,
    },
    /// A stored value could not be decoded.
    #[error("corrupt value in state store: {0}")]
    Corrupt(String),
    /// A value exceeds [`MAX_VALUE_BYTES`].
    #[error("value of {0} bytes is too large for the state store")]
    TooLarge(usize),
    /// A write under a lease that is no longer the lesson's latest: another
    /// node has taken the lesson over since (fencing).
    #[error("stale lease: the lesson's lease is at epoch {current}")]
    Fenced {
        /// The latest epoch granted for the lesson.
        current: u64,
    },
}

/// A node's hold on one lesson: while it is current, the node is the
/// lesson's only owner. `epoch` grows on every new grant, so a write made
/// under an older one is refused ([`StoreError::Fenced`]).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Lease {
    /// The lesson.
    pub lesson: LessonId,
    /// The owning node's id.
    pub node: String,
    /// The fencing epoch (1 for the lesson's first grant).
    pub epoch: u64,
}

/// How the lease before a new grant ended: whether the lesson's last owner
/// handed it over or simply stopped renewing (it died, was paused, or was
/// cut off), in which case whatever it had not passed on is lost.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Previous {
    /// The lesson's first grant.
    None,
    /// This node already held the lease: extended, same epoch.
    Ours,
    /// The last owner released it ([`StateStore::release_lease`]).
    Released,
    /// The last owner's lease lapsed.
    Lapsed,
}

/// The answer to [`StateStore::acquire_lease`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Acquired {
    /// The lease is this node's (new, or already held by it and extended).
    Granted {
        /// The lease.
        lease: Lease,
        /// How the lease before it ended.
        previous: Previous,
    },
    /// Another node holds it.
    Held {
        /// That node's id.
        node: String,
        /// Its epoch.
        epoch: u64,
    },
}

/// A live gateway node, as it announces itself every lease renewal.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeInfo {
    /// Unique per process start.
    pub id: String,
    /// Where other nodes reach it (`http://10.0.0.5:8080`).
    pub url: String,
    /// Lessons it owns now.
    pub lessons: u32,
    /// It is shutting down: no new lessons go to it.
    pub draining: bool,
}

/// What must survive a node or be shared between nodes. See the module docs.
pub trait StateStore: Clone + Send + Sync + 'static {
    /// Checks the store answers (readiness).
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The latest snapshot of a lesson, if any.
    fn load_lesson(
        &self,
        lesson: LessonId,
    ) -> impl Future<Output = Result<Option<Versioned>, StoreError>> + Send;
    /// Writes a snapshot if the stored version is `expected` (0: none stored);
    /// returns the new version, or `Conflict` with the stored one.
    fn save_lesson(
        &self,
        lesson: LessonId,
        expected: u64,
        bytes: Vec<u8>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Forgets a lesson's snapshot.
    fn delete_lesson(
        &self,
        lesson: LessonId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Takes the lesson's lease for `node` until `expires_at` if nobody
    /// holds it (a new, larger epoch) or `node` already does (extended, same
    /// epoch); otherwise says who holds it.
    fn acquire_lease(
        &self,
        lesson: LessonId,
        node: &str,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> impl Future<Output = Result<Acquired, StoreError>> + Send;
    /// Extends a lease that is still current; false if it expired and was
    /// granted again since (or was released). A lease that merely expired,
    /// with no grant since, is restored: nobody else has held the lesson.
    fn renew_lease(
        &self,
        lease: &Lease,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Gives a current lease up (a drained node); false if it was not
    /// current. The next grant is told the lesson was handed over
    /// ([`Previous::Released`]).
    fn release_lease(&self, lease: &Lease)
    -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Who holds the lesson's lease now, and at which epoch.
    fn lease_holder(
        &self,
        lesson: LessonId,
        now: UnixMillis,
    ) -> impl Future<Output = Result<Option<(String, u64)>, StoreError>> + Send;
    /// Writes a lesson snapshot under `lease`: refused with
    /// [`StoreError::Fenced`] once a later epoch has been granted. Returns
    /// the snapshot's new version.
    fn save_lesson_fenced(
        &self,
        lease: &Lease,
        bytes: Vec<u8>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Announces a live node until `expires_at`.
    fn put_node(
        &self,
        node: NodeInfo,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Every node whose announcement has not expired, by id.
    fn live_nodes(
        &self,
        now: UnixMillis,
    ) -> impl Future<Output = Result<Vec<NodeInfo>, StoreError>> + Send;
    /// Forgets a node (it stopped).
    fn remove_node(&self, id: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Blocks a person (replacing any earlier block).
    fn block(
        &self,
        user: &UserRef,
        block: Block,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Lifts a block; returns whether there was one.
    fn unblock(&self, user: &UserRef) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// The block on a person, if any.
    fn blocked(
        &self,
        user: &UserRef,
    ) -> impl Future<Output = Result<Option<Block>, StoreError>> + Send;
    /// Every block.
    fn list_blocks(&self)
    -> impl Future<Output = Result<Vec<(UserRef, Block)>, StoreError>> + Send;

    /// Stores a visitor grant (replacing one with the same id).
    fn put_grant(&self, grant: VisitorGrant)
    -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Revokes a grant; returns whether it existed.
    fn revoke_grant(&self, id: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// A visitor's grants.
    fn grants_for(
        &self,
        user: &UserRef,
    ) -> impl Future<Output = Result<Vec<VisitorGrant>, StoreError>> + Send;
    /// Moves `grant` from its visitor (an e-mail invitation) to `to`, if it
    /// is still filed under that visitor: of two sign-ins racing for one
    /// grant, one moves it. Returns whether this call did.
    fn move_grant(
        &self,
        grant: &VisitorGrant,
        to: &UserRef,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Stores a session until `expires_at`.
    fn put_session(
        &self,
        id: &str,
        record: SessionRecord,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// A live session (`None` once expired or deleted).
    fn get_session(
        &self,
        id: &str,
        now: UnixMillis,
    ) -> impl Future<Output = Result<Option<SessionRecord>, StoreError>> + Send;
    /// Moves a live session's expiry (idle timeout); returns whether it was live.
    fn touch_session(
        &self,
        id: &str,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Ends a session.
    fn delete_session(&self, id: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Ends every session of a person; returns how many live ones ended.
    fn delete_sessions_of(
        &self,
        user: &UserRef,
        now: UnixMillis,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// True the first time `(namespace, id)` is claimed before `expires_at`,
    /// false on every later claim (single-use tokens).
    fn claim_once(
        &self,
        namespace: &str,
        id: &str,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Stores a JSON record under `(table, id)`, replacing any earlier one
    /// (lesson descriptions, the people directory).
    fn put_record(
        &self,
        table: &str,
        id: &str,
        json: String,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The record under `(table, id)`, if any.
    fn get_record(
        &self,
        table: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;
    /// Every record of `table`, as `(id, json)`, in no particular order.
    fn list_records(
        &self,
        table: &str,
    ) -> impl Future<Output = Result<Vec<(String, String)>, StoreError>> + Send;

    /// Keeps a short-lived value (a pending login) until `expires_at`.
    fn put_temp(
        &self,
        namespace: &str,
        id: &str,
        bytes: Vec<u8>,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Removes and returns a live short-lived value: it can be taken once,
    /// on one node, however many ask at the same time.
    fn take_temp(
        &self,
        namespace: &str,
        id: &str,
        now: UnixMillis,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;

    /// Appends one record to the append-only audit log.
    fn append_audit(&self, json: String) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The last `limit` audit records, oldest first.
    fn audit_tail(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Up to `limit` audit records from position `from` (0 is the oldest),
    /// oldest first, and how many records the log holds.
    fn audit_page(
        &self,
        from: u64,
        limit: usize,
    ) -> impl Future<Output = Result<(u64, Vec<String>), StoreError>> + Send;

    /// Tells every node (this one included).
    fn publish(&self, event: StoreEvent) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Hears every published event from now on.
    fn subscribe(&self) -> broadcast::Receiver<StoreEvent>;
}

/// The store chosen at start-up.
#[derive(Clone, Debug)]
pub enum Store {
    /// In memory, one process.
    Local(LocalStore),
    /// Redis, shared by every node.
    Redis(RedisStore),
}

impl Store {
    /// Whether other processes share it (and its lease epochs outlive this
    /// one). An in-memory store's epochs start again at every restart, so
    /// they fence nothing outside this process.
    pub fn is_shared(&self) -> bool {
        matches!(self, Store::Redis(_))
    }
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Local($s) => $e,
            Store::Redis($s) => $e,
        }
    };
}

impl StateStore for Store {
    async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.ping().await)
    }
    async fn load_lesson(&self, lesson: LessonId) -> Result<Option<Versioned>, StoreError> {
        dispatch!(self, s => s.load_lesson(lesson).await)
    }
    async fn save_lesson(
        &self,
        lesson: LessonId,
        expected: u64,
        bytes: Vec<u8>,
    ) -> Result<u64, StoreError> {
        dispatch!(self, s => s.save_lesson(lesson, expected, bytes).await)
    }
    async fn delete_lesson(&self, lesson: LessonId) -> Result<(), StoreError> {
        dispatch!(self, s => s.delete_lesson(lesson).await)
    }
    async fn acquire_lease(
        &self,
        lesson: LessonId,
        node: &str,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<Acquired, StoreError> {
        dispatch!(self, s => s.acquire_lease(lesson, node, now, expires_at).await)
    }
    async fn renew_lease(
        &self,
        lease: &Lease,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.renew_lease(lease, now, expires_at).await)
    }
    async fn release_lease(&self, lease: &Lease) -> Result<bool, StoreError> {
        dispatch!(self, s => s.release_lease(lease).await)
    }
    async fn lease_holder(
        &self,
        lesson: LessonId,
        now: UnixMillis,
    ) -> Result<Option<(String, u64)>, StoreError> {
        dispatch!(self, s => s.lease_holder(lesson, now).await)
    }
    async fn save_lesson_fenced(&self, lease: &Lease, bytes: Vec<u8>) -> Result<u64, StoreError> {
        dispatch!(self, s => s.save_lesson_fenced(lease, bytes).await)
    }
    async fn put_node(
        &self,
        node: NodeInfo,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.put_node(node, now, expires_at).await)
    }
    async fn live_nodes(&self, now: UnixMillis) -> Result<Vec<NodeInfo>, StoreError> {
        dispatch!(self, s => s.live_nodes(now).await)
    }
    async fn remove_node(&self, id: &str) -> Result<(), StoreError> {
        dispatch!(self, s => s.remove_node(id).await)
    }
    async fn block(&self, user: &UserRef, block: Block) -> Result<(), StoreError> {
        dispatch!(self, s => s.block(user, block).await)
    }
    async fn unblock(&self, user: &UserRef) -> Result<bool, StoreError> {
        dispatch!(self, s => s.unblock(user).await)
    }
    async fn blocked(&self, user: &UserRef) -> Result<Option<Block>, StoreError> {
        dispatch!(self, s => s.blocked(user).await)
    }
    async fn list_blocks(&self) -> Result<Vec<(UserRef, Block)>, StoreError> {
        dispatch!(self, s => s.list_blocks().await)
    }
    async fn put_grant(&self, grant: VisitorGrant) -> Result<(), StoreError> {
        dispatch!(self, s => s.put_grant(grant).await)
    }
    async fn revoke_grant(&self, id: &str) -> Result<bool, StoreError> {
        dispatch!(self, s => s.revoke_grant(id).await)
    }
    async fn grants_for(&self, user: &UserRef) -> Result<Vec<VisitorGrant>, StoreError> {
        dispatch!(self, s => s.grants_for(user).await)
    }
    async fn move_grant(&self, grant: &VisitorGrant, to: &UserRef) -> Result<bool, StoreError> {
        dispatch!(self, s => s.move_grant(grant, to).await)
    }
    async fn put_session(
        &self,
        id: &str,
        record: SessionRecord,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.put_session(id, record, now, expires_at).await)
    }
    async fn get_session(
        &self,
        id: &str,
        now: UnixMillis,
    ) -> Result<Option<SessionRecord>, StoreError> {
        dispatch!(self, s => s.get_session(id, now).await)
    }
    async fn touch_session(
        &self,
        id: &str,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.touch_session(id, now, expires_at).await)
    }
    async fn delete_session(&self, id: &str) -> Result<(), StoreError> {
        dispatch!(self, s => s.delete_session(id).await)
    }
    async fn delete_sessions_of(
        &self,
        user: &UserRef,
        now: UnixMillis,
    ) -> Result<usize, StoreError> {
        dispatch!(self, s => s.delete_sessions_of(user, now).await)
    }
    async fn claim_once(
        &self,
        namespace: &str,
        id: &str,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.claim_once(namespace, id, now, expires_at).await)
    }
    async fn put_record(&self, table: &str, id: &str, json: String) -> Result<(), StoreError> {
        dispatch!(self, s => s.put_record(table, id, json).await)
    }
    async fn get_record(&self, table: &str, id: &str) -> Result<Option<String>, StoreError> {
        dispatch!(self, s => s.get_record(table, id).await)
    }
    async fn list_records(&self, table: &str) -> Result<Vec<(String, String)>, StoreError> {
        dispatch!(self, s => s.list_records(table).await)
    }
    async fn put_temp(
        &self,
        namespace: &str,
        id: &str,
        bytes: Vec<u8>,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.put_temp(namespace, id, bytes, now, expires_at).await)
    }
    async fn take_temp(
        &self,
        namespace: &str,
        id: &str,
        now: UnixMillis,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        dispatch!(self, s => s.take_temp(namespace, id, now).await)
    }
    async fn append_audit(&self, json: String) -> Result<(), StoreError> {
        dispatch!(self, s => s.append_audit(json).await)
    }
    async fn audit_tail(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        dispatch!(self, s => s.audit_tail(limit).await)
    }
    async fn audit_page(&self, from: u64, limit: usize) -> Result<(u64, Vec<String>), StoreError> {
        dispatch!(self, s => s.audit_page(from, limit).await)
    }
    async fn publish(&self, event: StoreEvent) -> Result<(), StoreError> {
        dispatch!(self, s => s.publish(event).await)
    }
    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        dispatch!(self, s => s.subscribe())
    }
}

/// Refuses values over [`MAX_VALUE_BYTES`].
fn check_size(len: usize) -> Result<(), StoreError> {
    if len > MAX_VALUE_BYTES {
        Err(StoreError::TooLarge(len))
    } else {
        Ok(())
    }
}
