//! The shared store on Redis, for more than one gateway node.
//!
//! Commands go through a lazily connecting [`ConnectionManager`], so the
//! gateway starts (and stays live) while Redis is down and recovers without
//! a restart; every command has a response timeout, so an outage turns into
//! [`StoreError::Unavailable`] quickly instead of a hung request. Cluster
//! events use one dedicated pub/sub connection owned by a background task
//! that resubscribes after every disconnect. Key names live in [`super::keys`].
//!
//! The file is long because it implements the whole [`StateStore`] trait,
//! whose methods Rust keeps in one `impl` block, with each Lua script
//! beside the operations that run it; the key names are already apart.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chaperone_protocol::{LessonId, UserRef};
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use super::{
    Acquired, Block, EVENT_BUFFER, Lease, NodeInfo, Previous, SessionRecord, StateStore,
    StoreError, StoreEvent, UnixMillis, Versioned, VisitorGrant, check_size, keys,
};

/// How to reach Redis.
#[derive(Clone, Debug)]
pub struct RedisStoreConfig {
    /// `redis://host:port/db` (or `rediss://` for TLS).
    pub url: String,
    /// Prefix of every key and channel.
    pub prefix: String,
    /// Longest wait for one command before it counts as unavailable.
    pub timeout: Duration,
}

impl RedisStoreConfig {
    /// A config with the default prefix and a 2 s timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: "chaperone".to_owned(),
            timeout: Duration::from_secs(2),
        }
    }
}

/// Compare-and-set on a lesson snapshot: write only if the stored version is
/// the expected one. Returns `{1, new_version}` or `{0, current_version}`.
const CAS_SCRIPT: &str = r"
local cur = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if cur ~= tonumber(ARGV[1]) then return {0, cur} end
redis.call('HSET', KEYS[1], 'v', cur + 1, 'data', ARGV[2])
return {1, cur + 1}
";

/// Takes a lesson's lease. KEYS: lease, epoch, released; ARGV: node, ttl ms.
/// Returns `{1, epoch, node, previous}` when granted (previous: 0 first
/// grant, 1 already ours, 2 released, 3 lapsed), `{0, epoch, holder, 0}`.
const ACQUIRE_SCRIPT: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur then
  local sep = string.find(cur, ':', 1, true)
  local epoch = tonumber(string.sub(cur, 1, sep - 1))
  local holder = string.sub(cur, sep + 1)
  if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {1, epoch, holder, 1}
  end
  return {0, epoch, holder, 0}
end
local last = redis.call('GET', KEYS[2])
local previous = 0
if last then
  if redis.call('GET', KEYS[3]) == last then previous = 2 else previous = 3 end
end
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], epoch .. ':' .. ARGV[1], 'PX', ARGV[2])
return {1, epoch, ARGV[1], previous}
";

/// Renews a lease. KEYS: lease, epoch; ARGV: epoch, node, ttl ms. An
/// expired lease with no grant since is restored.
const RENEW_SCRIPT: &str = r"
local want = ARGV[1] .. ':' .. ARGV[2]
local cur = redis.call('GET', KEYS[1])
if cur == want then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
if (not cur) and redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('SET', KEYS[1], want, 'PX', ARGV[3])
  return 1
end
return 0
";

/// Releases a lease if it is current, noting that its epoch was handed
/// over. KEYS: lease, released; ARGV: epoch, node.
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] .. ':' .. ARGV[2] then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], ARGV[1])
  return 1
end
return 0
";

/// Writes a snapshot under a lease epoch. KEYS: lesson, epoch; ARGV: epoch,
/// data. Returns `{1, version}` or `{0, latest_epoch}`.
const FENCED_SCRIPT: &str = r"
local latest = tonumber(redis.call('GET', KEYS[2]) or '0')
if latest ~= tonumber(ARGV[1]) then return {0, latest} end
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0') + 1
redis.call('HSET', KEYS[1], 'v', v, 'data', ARGV[2])
return {1, v}
";

/// Moves a grant to another visitor. KEYS: grant, the old visitor's set,
/// the new visitor's set; ARGV: id, the moved grant's JSON. The removal
/// from the old set is the claim: only one caller gets it. Returns 1 if
/// moved, 0 if the grant was gone or already moved.
const MOVE_GRANT_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('SREM', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[1])
return 1
";

/// The Redis-backed store. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
    cas: Script,
    acquire: Script,
    renew: Script,
    release: Script,
    fenced: Script,
    move_grant: Script,
    events: broadcast::Sender<StoreEvent>,
    subscribed: watch::Receiver<bool>,
    listener: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

impl RedisStore {
    /// Connects lazily: this succeeds while Redis is down, and the first
    /// commands report `Unavailable` until it is back. Must be called inside
    /// a tokio runtime (it starts the pub/sub listener).
    pub fn open(config: RedisStoreConfig) -> Result<Self, StoreError> {
        let client = redis::Client::open(config.url.as_str()).map_err(unavailable)?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)
            .map_err(unavailable)?;
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (subscribed_tx, subscribed) = watch::channel(false);
        let listener = tokio::spawn(listen(
            client,
            keys::events(&config.prefix),
            config.timeout,
            events.clone(),
            subscribed_tx,
        ));
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                prefix: config.prefix,
                timeout: config.timeout,
                cas: Script::new(CAS_SCRIPT),
                acquire: Script::new(ACQUIRE_SCRIPT),
                renew: Script::new(RENEW_SCRIPT),
                release: Script::new(RELEASE_SCRIPT),
                fenced: Script::new(FENCED_SCRIPT),
                move_grant: Script::new(MOVE_GRANT_SCRIPT),
                events,
                subscribed,
                listener,
            }),
        })
    }

    /// Waits until the pub/sub listener is subscribed (events published
    /// before that are not heard by this node), or `timeout` passes.
    pub async fn wait_subscribed(&self, timeout: Duration) -> bool {
        let mut rx = self.inner.subscribed.clone();
        tokio::time::timeout(timeout, rx.wait_for(|s| *s))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    fn conn(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// Runs one Redis operation with the store's timeout.
    async fn run<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(self.inner.timeout, op).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(unavailable(e)),
            Err(_) => Err(StoreError::Unavailable("timed out".to_owned())),
        }
    }
}

/// The pub/sub listener: (re)subscribes with backoff for as long as the
/// store lives, and hands every event to local subscribers.
async fn listen(
    client: redis::Client,
    channel: String,
    timeout: Duration,
    events: broadcast::Sender<StoreEvent>,
    subscribed: watch::Sender<bool>,
) {
    // From 50 ms up to 2 s; a new one after every successful subscription.
    let new_backoff = || {
        use backon::BackoffBuilder as _;
        backon::ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_secs(2))
            .without_max_times()
            .build()
    };
    let mut backoff = new_backoff();
    loop {
        let attempt = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            redis::RedisResult::Ok(pubsub)
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(pubsub)) => {
                backoff = new_backoff();
                let _ = subscribed.send(true);
                let mut stream = pubsub.into_on_message();
                while let Some(msg) = stream.next().await {
                    let Ok(payload) = msg.get_payload::<Vec<u8>>() else {
                        tracing::warn!("unreadable pub/sub message ignored");
                        continue;
                    };
                    match serde_json::from_slice::<StoreEvent>(&payload) {
                        Ok(event) => {
                            let _ = events.send(event);
                        }
                        Err(e) => tracing::warn!(error = %e, "malformed cluster event ignored"),
                    }
                }
                let _ = subscribed.send(false);
                tracing::warn!("lost the Redis pub/sub connection; resubscribing");
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "Redis pub/sub subscribe failed; retrying"),
            Err(_) => tracing::debug!("Redis pub/sub subscribe timed out; retrying"),
        }
        let delay = backoff.next().unwrap_or(Duration::from_secs(2));
        tokio::time::sleep(delay).await;
    }
}

impl StateStore for RedisStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.conn();
        let pong: String = self.run(redis::cmd("PING").query_async(&mut c)).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(StoreError::Unavailable(format!(
                "unexpected PING reply {pong:?}"
            )))
        }
    }

    async fn load_lesson(&self, lesson: LessonId) -> Result<Option<Versioned>, StoreError> {
        let mut c = self.conn();
        let key = keys::lesson(self.prefix(), lesson);
        let (version, bytes): (Option<u64>, Option<Vec<u8>>) = self
            .run(
                redis::cmd("HMGET")
                    .arg(&key)
                    .arg("v")
                    .arg("data")
                    .query_async(&mut c),
            )
            .await?;
        match (version, bytes) {
            (Some(version), Some(bytes)) => Ok(Some(Versioned { version, bytes })),
            (None, None) => Ok(None),
            _ => Err(corrupt(format!(
                "lesson {lesson} has a version without data or the reverse"
            ))),
        }
    }

    async fn save_lesson(
        &self,
        lesson: LessonId,
        expected: u64,
        bytes: Vec<u8>,
    ) -> Result<u64, StoreError> {
        check_size(bytes.len())?;
        let mut c = self.conn();
        let key = keys::lesson(self.prefix(), lesson);
        let mut invocation = self.inner.cas.key(&key);
        invocation.arg(expected).arg(bytes);
        let (ok, version): (u8, u64) = self.run(invocation.invoke_async(&mut c)).await?;
        if ok == 1 {
            Ok(version)
        } else {
            Err(StoreError::Conflict { current: version })
        }
    }

    async fn delete_lesson(&self, lesson: LessonId) -> Result<(), StoreError> {
        let mut c = self.conn();
        let _: () = self.run(c.del(keys::lesson(self.prefix(), lesson))).await?;
        Ok(())
    }

    async fn acquire_lease(
        &self,
        lesson: LessonId,
        node: &str,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<Acquired, StoreError> {
        let mut c = self.conn();
        let mut invocation = self.inner.acquire.key(keys::lease(self.prefix(), lesson));
        invocation
            .key(keys::epoch(self.prefix(), lesson))
            .key(keys::released(self.prefix(), lesson))
            .arg(node)
            .arg(now.until(expires_at));
        let (granted, epoch, holder, previous): (u8, u64, String, u8) =
            self.run(invocation.invoke_async(&mut c)).await?;
        Ok(if granted == 1 {
            Acquired::Granted {
                lease: Lease {
                    lesson,
                    node: holder,
                    epoch,
                },
                previous: match previous {
                    0 => Previous::None,
                    1 => Previous::Ours,
                    2 => Previous::Released,
                    _ => Previous::Lapsed,
                },
            }
        } else {
            Acquired::Held {
                node: holder,
                epoch,
            }
        })
    }

    async fn renew_lease(
        &self,
        lease: &Lease,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<bool, StoreError> {
        let mut c = self.conn();
        let mut invocation = self
            .inner
            .renew
            .key(keys::lease(self.prefix(), lease.lesson));
        invocation
            .key(keys::epoch(self.prefix(), lease.lesson))
            .arg(lease.epoch)
            .arg(&lease.node)
            .arg(now.until(expires_at));
        let renewed: u8 = self.run(invocation.invoke_async(&mut c)).await?;
        Ok(renewed == 1)
    }

    async fn release_lease(&self, lease: &Lease) -> Result<bool, StoreError> {
        let mut c = self.conn();
        let mut invocation = self
            .inner
            .release
            .key(keys::lease(self.prefix(), lease.lesson));
        invocation
            .key(keys::released(self.prefix(), lease.lesson))
            .arg(lease.epoch)
            .arg(&lease.node);
        let released: u8 = self.run(invocation.invoke_async(&mut c)).await?;
        Ok(released == 1)
    }

    async fn lease_holder(
        &self,
        lesson: LessonId,
        _now: UnixMillis,
    ) -> Result<Option<(String, u64)>, StoreError> {
        let mut c = self.conn();
        let cur: Option<String> = self.run(c.get(keys::lease(self.prefix(), lesson))).await?;
        cur.map(|v| {
            let (epoch, node) = v
                .split_once(':')
                .ok_or_else(|| corrupt(format!("lease of lesson {lesson}: {v:?}")))?;
            let epoch = epoch.parse().map_err(corrupt)?;
            Ok((node.to_owned(), epoch))
        })
        .transpose()
    }

    async fn save_lesson_fenced(&self, lease: &Lease, bytes: Vec<u8>) -> Result<u64, StoreError> {
        check_size(bytes.len())?;
        let mut c = self.conn();
        let mut invocation = self
            .inner
            .fenced
            .key(keys::lesson(self.prefix(), lease.lesson));
        invocation
            .key(keys::epoch(self.prefix(), lease.lesson))
            .arg(lease.epoch)
            .arg(bytes);
        let (ok, n): (u8, u64) = self.run(invocation.invoke_async(&mut c)).await?;
        if ok == 1 {
            Ok(n)
        } else {
            Err(StoreError::Fenced { current: n })
        }
    }

    async fn put_node(
        &self,
        node: NodeInfo,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<(), StoreError> {
        let mut c = self.conn();
        let json = serde_json::to_string(&node).map_err(corrupt)?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(keys::node(self.prefix(), &node.id))
            .arg(json)
            .arg("PX")
            .arg(now.until(expires_at))
            .ignore()
            .sadd(keys::nodes(self.prefix()), &node.id)
            .ignore();
        let _: () = self.run(pipe.query_async(&mut c)).await?;
        Ok(())
    }

    async fn live_nodes(&self, _now: UnixMillis) -> Result<Vec<NodeInfo>, StoreError> {
        let mut c = self.conn();
        let mut ids: Vec<String> = self.run(c.smembers(keys::nodes(self.prefix()))).await?;
        ids.sort();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let node_keys: Vec<String> = ids.iter().map(|id| keys::node(self.prefix(), id)).collect();
        let values: Vec<Option<String>> = self
            .run(redis::cmd("MGET").arg(&node_keys).query_async(&mut c))
            .await?;
        let mut nodes = Vec::new();
        for (id, value) in ids.iter().zip(values) {
            match value {
                Some(json) => nodes.push(serde_json::from_str(&json).map_err(corrupt)?),
                None => {
                    // Its announcement expired: it is gone.
                    let _: () = self.run(c.srem(keys::nodes(self.prefix()), id)).await?;
                }
            }
        }
        Ok(nodes)
    }

    async fn remove_node(&self, id: &str) -> Result<(), StoreError> {
        let mut c = self.conn();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(keys::node(self.prefix(), id))
            .ignore()
            .srem(keys::nodes(self.prefix()), id)
            .ignore();
        let _: () = self.run(pipe.query_async(&mut c)).await?;
        Ok(())
    }

    async fn block(&self, user: &UserRef, block: Block) -> Result<(), StoreError> {
        let mut c = self.conn();
        let json = serde_json::to_string(&block).map_err(corrupt)?;
        let _: () = self
            .run(c.hset(keys::blocks(self.prefix()), keys::user_key(user), json))
            .await?;
        Ok(())
    }

    async fn unblock(&self, user: &UserRef) -> Result<bool, StoreError> {
        let mut c = self.conn();
        let removed: u64 = self
            .run(c.hdel(keys::blocks(self.prefix()), keys::user_key(user)))
            .await?;
        Ok(removed > 0)
    }

    async fn blocked(&self, user: &UserRef) -> Result<Option<Block>, StoreError> {
        let mut c = self.conn();
        let json: Option<String> = self
            .run(c.hget(keys::blocks(self.prefix()), keys::user_key(user)))
            .await?;
        json.map(|j| serde_json::from_str(&j).map_err(corrupt))
            .transpose()
    }

    async fn list_blocks(&self) -> Result<Vec<(UserRef, Block)>, StoreError> {
        let mut c = self.conn();
        let all: Vec<(String, String)> = self.run(c.hgetall(keys::blocks(self.prefix()))).await?;
        let mut blocks = all
            .into_iter()
            .map(|(u, b)| {
                Ok((
                    serde_json::from_str(&u).map_err(corrupt)?,
                    serde_json::from_str(&b).map_err(corrupt)?,
                ))
            })
            .collect::<Result<Vec<(UserRef, Block)>, StoreError>>()?;
        blocks.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(blocks)
    }

    async fn put_grant(&self, grant: VisitorGrant) -> Result<(), StoreError> {
        let mut c = self.conn();
        let json = serde_json::to_string(&grant).map_err(corrupt)?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .set(keys::grant(self.prefix(), &grant.id), json)
            .ignore()
            .sadd(keys::grants_of(self.prefix(), &grant.visitor), &grant.id)
            .ignore();
        let _: () = self.run(pipe.query_async(&mut c)).await?;
        Ok(())
    }

    async fn revoke_grant(&self, id: &str) -> Result<bool, StoreError> {
        let mut c = self.conn();
        let key = keys::grant(self.prefix(), id);
        let json: Option<String> = self.run(c.get(&key)).await?;
        let Some(json) = json else { return Ok(false) };
        let grant: VisitorGrant = serde_json::from_str(&json).map_err(corrupt)?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(&key)
            .ignore()
            .srem(keys::grants_of(self.prefix(), &grant.visitor), id)
            .ignore();
        let _: () = self.run(pipe.query_async(&mut c)).await?;
        Ok(true)
    }

    async fn grants_for(&self, user: &UserRef) -> Result<Vec<VisitorGrant>, StoreError> {
        let mut c = self.conn();
        let ids: Vec<String> = self
            .run(c.smembers(keys::grants_of(self.prefix(), user)))
            .await?;
        let mut grants = Vec::with_capacity(ids.len());
        for id in ids {
            let json: Option<String> = self.run(c.get(keys::grant(self.prefix(), &id))).await?;
            if let Some(json) = json {
                grants.push(serde_json::from_str::<VisitorGrant>(&json).map_err(corrupt)?);
            }
        }
        grants.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(grants)
    }

    async fn move_grant(&self, grant: &VisitorGrant, to: &UserRef) -> Result<bool, StoreError> {
        let mut c = self.conn();
        let moved = VisitorGrant {
            visitor: to.clone(),
            ..grant.clone()
        };
        let json = serde_json::to_string(&moved).map_err(corrupt)?;
        let mut invocation = self
            .inner
            .move_grant
            .key(keys::grant(self.prefix(), &grant.id));
        invocation
            .key(keys::grants_of(self.prefix(), &grant.visitor))
            .key(keys::grants_of(self.prefix(), to))
            .arg(&grant.id)
            .arg(json);
        let done: u8 = self.run(invocation.invoke_async(&mut c)).await?;
        Ok(done == 1)
    }

    async fn put_session(
        &self,
        id: &str,
        record: SessionRecord,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<(), StoreError> {
        check_size(record.payload.len())?;
        let mut c = self.conn();
        let json = serde_json::to_string(&record).map_err(corrupt)?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .pset_ex(
                keys::session(self.prefix(), id),
                json,
                now.until(expires_at),
            )
            .ignore()
            .sadd(keys::sessions_of(self.prefix(), &record.user), id)
            .ignore();
        let _: () = self.run(pipe.query_async(&mut c)).await?;
        Ok(())
    }

    async fn get_session(
        &self,
        id: &str,
        _now: UnixMillis,
    ) -> Result<Option<SessionRecord>, StoreError> {
        // Redis expires the key itself; `now` only decided the TTL when written.
        let mut c = self.conn();
        let json: Option<String> = self.run(c.get(keys::session(self.prefix(), id))).await?;
        json.map(|j| serde_json::from_str(&j).map_err(corrupt))
            .transpose()
    }

    async fn touch_session(
        &self,
        id: &str,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<bool, StoreError> {
        let mut c = self.conn();
        let live: bool = self
            .run(c.pexpire(
                keys::session(self.prefix(), id),
                now.until(expires_at) as i64,
            ))
            .await?;
        Ok(live)
    }

    async fn delete_session(&self, id: &str) -> Result<(), StoreError> {
        let mut c = self.conn();
        let key = keys::session(self.prefix(), id);
        let json: Option<String> = self.run(c.get(&key)).await?;
        let mut pipe = redis::pipe();
        pipe.atomic().del(&key).ignore();
        if let Some(record) = json.and_then(|j| serde_json::from_str::<SessionRecord>(&j).ok()) {
            pipe.srem(keys::sessions_of(self.prefix(), &record.user), id)
                .ignore();
        }
        let _: () = self.run(pipe.query_async(&mut c)).await?;
        Ok(())
    }

    async fn delete_sessions_of(
        &self,
        user: &UserRef,
        _now: UnixMillis,
    ) -> Result<usize, StoreError> {
        let mut c = self.conn();
        let index = keys::sessions_of(self.prefix(), user);
        let ids: Vec<String> = self.run(c.smembers(&index)).await?;
        let mut ended = 0;
        for id in &ids {
            let removed: u64 = self.run(c.del(keys::session(self.prefix(), id))).await?;
            ended += removed as usize;
        }
        let _: () = self.run(c.del(&index)).await?;
        Ok(ended)
    }

    async fn claim_once(
        &self,
        namespace: &str,
        id: &str,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<bool, StoreError> {
        let mut c = self.conn();
        let set: Option<String> = self
            .run(
                redis::cmd("SET")
                    .arg(keys::once(self.prefix(), namespace, id))
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(now.until(expires_at))
                    .query_async(&mut c),
            )
            .await?;
        Ok(set.is_some())
    }

    async fn put_record(&self, table: &str, id: &str, json: String) -> Result<(), StoreError> {
        check_size(json.len())?;
        let mut c = self.conn();
        let _: () = self
            .run(c.hset(keys::records(self.prefix(), table), id, json))
            .await?;
        Ok(())
    }

    async fn get_record(&self, table: &str, id: &str) -> Result<Option<String>, StoreError> {
        let mut c = self.conn();
        self.run(c.hget(keys::records(self.prefix(), table), id))
            .await
    }

    async fn list_records(&self, table: &str) -> Result<Vec<(String, String)>, StoreError> {
        let mut c = self.conn();
        let all: HashMap<String, String> = self
            .run(c.hgetall(keys::records(self.prefix(), table)))
            .await?;
        Ok(all.into_iter().collect())
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
        let mut c = self.conn();
        let _: () = self
            .run(c.pset_ex(
                keys::temp(self.prefix(), namespace, id),
                bytes,
                now.until(expires_at),
            ))
            .await?;
        Ok(())
    }

    async fn take_temp(
        &self,
        namespace: &str,
        id: &str,
        _now: UnixMillis,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        // GETDEL is atomic: of two nodes racing for the same pending login,
        // exactly one gets it. Redis expires the key itself.
        let mut c = self.conn();
        self.run(c.get_del(keys::temp(self.prefix(), namespace, id)))
            .await
    }

    async fn append_audit(&self, json: String) -> Result<(), StoreError> {
        check_size(json.len())?;
        let mut c = self.conn();
        let _: () = self.run(c.rpush(keys::audit(self.prefix()), json)).await?;
        Ok(())
    }

    async fn audit_tail(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut c = self.conn();
        let from = -isize::try_from(limit).unwrap_or(isize::MAX);
        self.run(c.lrange(keys::audit(self.prefix()), from, -1))
            .await
    }

    async fn audit_page(&self, from: u64, limit: usize) -> Result<(u64, Vec<String>), StoreError> {
        let key = keys::audit(self.prefix());
        let mut c = self.conn();
        let len: u64 = self.run(c.llen(&key)).await?;
        if limit == 0 || from >= len {
            return Ok((len, Vec::new()));
        }
        let start = isize::try_from(from).unwrap_or(isize::MAX);
        let stop = start.saturating_add(isize::try_from(limit).unwrap_or(isize::MAX)) - 1;
        let page: Vec<String> = self.run(c.lrange(&key, start, stop)).await?;
        Ok((len, page))
    }

    async fn publish(&self, event: StoreEvent) -> Result<(), StoreError> {
        let mut c = self.conn();
        let json = serde_json::to_string(&event).map_err(corrupt)?;
        let _: u64 = self
            .run(c.publish(keys::events(self.prefix()), json))
            .await?;
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.inner.events.subscribe()
    }
}
