//! Many gateway nodes sharing one Redis store: each lesson has one owner
//! node at a time (docs/architecture.md, "Many nodes").
//!
//! - **Leases.** A node owns a lesson while it holds the lesson's lease in
//!   the store ([`StateStore::acquire_lease`]); it renews every
//!   `cluster.renew_ms` and the lease lapses `cluster.lease_ms` after the
//!   last renewal. Every grant has a larger epoch, and every snapshot write
//!   carries it ([`StateStore::save_lesson_fenced`]), so a node that lost
//!   its lease cannot overwrite the new owner's state.
//! - **Proof.** A renewal sent at `t` proves the lease until
//!   `t + lease − lease/4`, which is before anyone else can take it. Past
//!   that, with no newer proof, the node stops the lesson: the media plane
//!   transmits nothing more for it (it checks the proof itself, so a node
//!   resumed after a pause sends nothing first) and every connection is
//!   closed so that the pages rejoin wherever the lesson is now.
//! - **Routing.** A join reaching any node goes to the owner: here, or
//!   relayed ([`relay`]). A lesson nobody owns is placed on the live,
//!   non-draining node that owns fewest lessons.
//! - **State.** Every control change the lesson core reports
//!   ([`chaperone_lesson::Output::Persist`]) is written, latest first, under
//!   the lease; a node taking a lesson over restores the last snapshot.
//! - **Drain.** A stopping node announces that it is draining, stops its
//!   lessons (the pages rejoin elsewhere), writes their last snapshots and
//!   releases their leases.

pub mod relay;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chaperone_lesson::{LessonConfig, Snapshot};
use chaperone_protocol::LessonId;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::catalog::{LessonInfo, TABLE};
use crate::clock::{now, unix_millis};
use crate::config::ClusterSettings;
use crate::media::MediaHandle;
use crate::room::{PersistFn, RoomHandle, Rooms};
use crate::store::{
    Acquired, Lease, NodeInfo, Previous, StateStore, Store, StoreError, UnixMillis,
};

/// The archive's reason for the time a lesson lost when its owner's lease
/// lapsed instead of being handed over.
const LAPSED: &str = "the lesson's owner lost its lease without handing the lesson over (it stopped, was paused or was cut off from Redis); recording resumed at the next owner";

/// This node's place in the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Unique per process start.
    pub node_id: String,
    /// Where other nodes reach this one.
    pub node_url: String,
    /// A lease's lifetime without renewal.
    pub lease: Duration,
    /// How often leases are renewed.
    pub renew: Duration,
}

impl ClusterConfig {
    /// From `[cluster]`, with the defaults that depend on the listener.
    pub fn from_settings(s: &ClusterSettings, listen: SocketAddr) -> Self {
        let node_id = if s.node_id.is_empty() {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_default();
            let host = if host.is_empty() {
                "node".to_owned()
            } else {
                host
            };
            format!("{host}-{:08x}", rand::random::<u32>())
        } else {
            s.node_id.clone()
        };
        let node_url = if s.node_url.is_empty() {
            format!("http://{listen}")
        } else {
            s.node_url.trim_end_matches('/').to_owned()
        };
        Self {
            node_id,
            node_url,
            lease: Duration::from_millis(s.lease_ms),
            renew: Duration::from_millis(s.renew_ms),
        }
    }

    /// How long after sending a renewal this node may act on it.
    fn proof(&self) -> Duration {
        self.lease - self.lease / 4
    }

    fn lease_ms(&self) -> u64 {
        u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX)
    }
}

/// Where a join for a lesson goes.
#[derive(Debug)]
pub enum Route {
    /// The lesson runs here.
    Here(RoomHandle),
    /// The lesson's owner is another node, reached at this URL.
    Relay {
        /// The owner's id.
        node: String,
        /// The owner's URL.
        url: String,
    },
}

/// Why a join cannot be routed now.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// No lesson of that id.
    #[error("no such lesson")]
    NotFound,
    /// The lesson is between owners (its owner died and its lease has not
    /// lapsed yet, or this node is draining): try again in a second.
    #[error("the lesson is moving to another node")]
    Moving,
    /// The state store cannot be reached: nobody can prove ownership.
    #[error("state store unavailable")]
    Unavailable,
    /// The lesson has ended: it is never started again.
    #[error("the lesson has ended")]
    Ended,
}

/// Figures about this node's leases, for `/metrics`.
#[derive(Clone, Debug)]
pub struct ClusterMetrics {
    /// Lessons owned now.
    pub owned: prometheus::IntGauge,
    /// Lease renewals, by result (`ok`, `lost`, `failed`).
    pub renewals: prometheus::IntCounterVec,
    /// Lessons taken, by cause (`new`, `takeover`).
    pub takes: prometheus::IntCounterVec,
    /// Lessons given up, by cause (`lost`, `unproven`, `fenced_write`, `drain`, `closed`).
    pub released: prometheus::IntCounterVec,
    /// Joins relayed to another node, and refused relays.
    pub relayed: prometheus::IntCounterVec,
    /// Snapshot writes, by result (`ok`, `fenced`, `failed`).
    pub snapshot_writes: prometheus::IntCounterVec,
    /// From the lesson core reporting a change (the teacher is told at the
    /// same moment) to its snapshot being written, seconds.
    pub snapshot_lag: prometheus::Histogram,
    /// 1 while draining.
    pub draining: prometheus::IntGauge,
}

impl ClusterMetrics {
    /// Registers the cluster's figures in `registry`.
    pub fn register(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        use prometheus::{IntCounterVec, IntGauge, Opts};
        let counter =
            |name: &str, help: &str, label: &str| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), &[label])?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let m = Self {
            owned: gauge(
                "cluster_lessons_owned",
                "Lessons whose lease this node holds",
            )?,
            renewals: counter(
                "cluster_lease_renewals_total",
                "Lease renewals by result (ok, lost, failed)",
                "result",
            )?,
            takes: counter(
                "cluster_lessons_taken_total",
                "Lessons this node took by cause (new, takeover)",
                "cause",
            )?,
            released: counter(
                "cluster_lessons_released_total",
                "Lessons this node gave up by cause (lost, unproven, fenced_write, drain, closed)",
                "cause",
            )?,
            relayed: counter(
                "cluster_relays_total",
                "Joins relayed between nodes by direction and result",
                "kind",
            )?,
            snapshot_writes: counter(
                "cluster_snapshot_writes_total",
                "Lesson snapshot writes by result (ok, fenced, failed)",
                "result",
            )?,
            snapshot_lag: {
                let h = prometheus::Histogram::with_opts(
                    prometheus::HistogramOpts::new(
                        "cluster_snapshot_lag_seconds",
                        "From a control change to its snapshot being written under the lease",
                    )
                    .buckets(vec![
                        0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    ]),
                )?;
                registry.register(Box::new(h.clone()))?;
                h
            },
            draining: gauge("cluster_node_draining", "1 while this node is draining")?,
        };
        // Every series exists from the start (at 0), so rates and alerts
        // see the first event.
        for (vec, labels) in [
            (&m.renewals, &["ok", "lost", "failed"][..]),
            (&m.takes, &["new", "takeover"][..]),
            (
                &m.released,
                &["lost", "unproven", "fenced_write", "drain", "closed"][..],
            ),
            (
                &m.relayed,
                &["out", "in", "refused", "refused_by_owner"][..],
            ),
            (&m.snapshot_writes, &["ok", "fenced", "failed"][..]),
        ] {
            for l in labels {
                vec.with_label_values(&[l]);
            }
        }
        Ok(m)
    }
}

/// A lease this node holds and how long its last renewal proves it.
#[derive(Debug)]
struct Held {
    lease: Lease,
    proven_until: Instant,
}

struct Inner {
    config: ClusterConfig,
    store: Store,
    rooms: Rooms,
    media: Option<MediaHandle>,
    lesson_config: LessonConfig,
    held: Mutex<HashMap<LessonId, Held>>,
    /// Serialises taking lessons, so one node never takes a lesson twice.
    taking: tokio::sync::Mutex<()>,
    draining: AtomicBool,
    metrics: Option<ClusterMetrics>,
    /// The recorder feed: a stopped lesson's lease is kept until the feed
    /// has everything this node holds of it acknowledged.
    feed: std::sync::OnceLock<crate::feed::FeedStatus>,
}

/// This node's view of the cluster. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.inner.config.node_id)
            .finish_non_exhaustive()
    }
}

/// The sending half of the snapshot writer, for [`crate::room::RoomDeps::persist`].
pub fn persist_channel() -> (PersistFn, mpsc::UnboundedReceiver<Snapshot>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let persist: PersistFn = Arc::new(move |s: &Snapshot| {
        let _ = tx.send(s.clone());
    });
    (persist, rx)
}

impl Cluster {
    /// This node, in `rooms`, on `store`.
    pub fn new(
        config: ClusterConfig,
        store: Store,
        rooms: Rooms,
        media: Option<MediaHandle>,
        lesson_config: LessonConfig,
        metrics: Option<ClusterMetrics>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                store,
                rooms,
                media,
                lesson_config,
                held: Mutex::default(),
                taking: tokio::sync::Mutex::new(()),
                draining: AtomicBool::new(false),
                metrics,
                feed: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Tells the cluster about the node's recorder feed (once): from then
    /// on the lease of a lesson whose room stopped is given back only once
    /// the recorder has acknowledged everything this node holds of it, so
    /// that the next owner's recording continues after it, never beside it.
    pub fn set_feed(&self, feed: crate::feed::FeedStatus) {
        let _ = self.inner.feed.set(feed);
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.inner.config.node_id
    }

    /// Whether this node is draining.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }

    fn held(&self) -> MutexGuard<'_, HashMap<LessonId, Held>> {
        // Every update is one insert or remove: a poisoned map is still whole.
        self.inner.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn metric(&self, f: impl FnOnce(&ClusterMetrics)) {
        if let Some(m) = &self.inner.metrics {
            f(m);
        }
    }

    /// The lessons whose lease this node holds.
    pub fn owned(&self) -> Vec<LessonId> {
        self.held().keys().copied().collect()
    }

    /// Where a join for `lesson` goes: here (taking the lesson if nobody
    /// owns it and this node is the best place), or the owner's URL.
    pub async fn route(&self, lesson: LessonId) -> Result<Route, RouteError> {
        if let Some(room) = self.local(lesson) {
            return Ok(Route::Here(room));
        }
        let unix = UnixMillis(unix_millis());
        let store = &self.inner.store;
        let holder = store
            .lease_holder(lesson, unix)
            .await
            .map_err(|_| RouteError::Unavailable)?;
        let nodes = store
            .live_nodes(unix)
            .await
            .map_err(|_| RouteError::Unavailable)?;
        let me = self.node_id();
        match holder {
            Some((node, _)) if node != me => match nodes.into_iter().find(|n| n.id == node) {
                Some(n) => Ok(Route::Relay { node, url: n.url }),
                // Its owner stopped announcing itself: the lease will lapse.
                None => Err(RouteError::Moving),
            },
            // Ours (a room that is restarting), or nobody's.
            _ => {
                let best = nodes
                    .iter()
                    .filter(|n| !n.draining)
                    .min_by_key(|n| (n.lessons, spread(lesson, &n.id)));
                match best {
                    Some(n) if n.id != me => Ok(Route::Relay {
                        node: n.id.clone(),
                        url: n.url.clone(),
                    }),
                    _ if self.is_draining() => Err(RouteError::Moving),
                    _ => self.take(lesson).await,
                }
            }
        }
    }

    /// The lesson's room here, if this node holds its lease and runs it.
    fn local(&self, lesson: LessonId) -> Option<RoomHandle> {
        if !self.held().contains_key(&lesson) {
            return None;
        }
        self.inner.rooms.get(lesson)
    }

    /// Takes `lesson` here (a relayed join, or a lesson placed here):
    /// acquires its lease and starts it from its last snapshot. Another
    /// node's lease: [`Route::Relay`] to it.
    pub async fn take(&self, lesson: LessonId) -> Result<Route, RouteError> {
        if self.is_draining() {
            return Err(RouteError::Moving);
        }
        let _one_at_a_time = self.inner.taking.lock().await;
        if let Some(room) = self.local(lesson) {
            return Ok(Route::Here(room));
        }
        let store = &self.inner.store;
        let info = load_info(store, lesson).await?;
        let sent = now();
        let unix = UnixMillis(unix_millis());
        let expires = UnixMillis(unix.0 + self.inner.config.lease_ms());
        let (lease, previous) = match store
            .acquire_lease(lesson, self.node_id(), unix, expires)
            .await
            .map_err(|_| RouteError::Unavailable)?
        {
            Acquired::Granted { lease, previous } => (lease, previous),
            Acquired::Held { node, .. } => {
                let nodes = store
                    .live_nodes(unix)
                    .await
                    .map_err(|_| RouteError::Unavailable)?;
                return match nodes.into_iter().find(|n| n.id == node) {
                    Some(n) => Ok(Route::Relay { node, url: n.url }),
                    None => Err(RouteError::Moving),
                };
            }
        };
        let snapshot = match store.load_lesson(lesson).await {
            Ok(s) => s,
            Err(e) => {
                // Without the last state the lesson cannot start safely.
                warn!(%lesson, error = %e, "cannot read the lesson's snapshot; giving the lease back");
                let _ = store.release_lease(&lease).await;
                return Err(RouteError::Unavailable);
            }
        };
        let proven_until = sent + self.inner.config.proof();
        self.fence_media(lesson, Some(proven_until)).await;
        let config = self.inner.lesson_config.clone();
        let snapshot = match snapshot.map(|v| Snapshot::decode(&v.bytes)).transpose() {
            Ok(Some(s)) if s.ended => {
                // An ended lesson is over: nobody joins it and nothing of it
                // runs again (its recording was sealed when it ended).
                let _ = store.release_lease(&lease).await;
                self.fence_media(lesson, None).await;
                return Err(RouteError::Ended);
            }
            Ok(s) => s,
            Err(e) => {
                // Never start a lesson more permissive than it was.
                error!(%lesson, error = %e, "the lesson's snapshot cannot be read; not taking it");
                let _ = store.release_lease(&lease).await;
                return Err(RouteError::Unavailable);
            }
        };
        // The epoch the recorder fences this node's feed with: only a
        // shared store's epochs outlive this process (an in-memory store
        // starts again at 1 after a restart, below what a recorder that
        // kept running has seen), so without one the feed presents none.
        let owner_epoch = if store.is_shared() { lease.epoch } else { 0 };
        // Its last owner stopped without handing it over: the recording
        // says so, rather than silently jumping over the time it lost.
        let lost = (previous == Previous::Lapsed).then_some(LAPSED);
        let (room, cause) = match snapshot {
            Some(s) => match self
                .inner
                .rooms
                .restore(info.setup(), config, s, (owner_epoch, lost))
                .await
            {
                Ok(room) => (room, "takeover"),
                Err(e) => {
                    // Never start a lesson more permissive than it was.
                    error!(%lesson, error = %e, "the lesson's snapshot cannot be restored; not taking it");
                    let _ = store.release_lease(&lease).await;
                    return Err(RouteError::Unavailable);
                }
            },
            None => (
                self.inner
                    .rooms
                    .open_owned(info.setup(), config, owner_epoch),
                "new",
            ),
        };
        info!(%lesson, epoch = lease.epoch, cause, "took the lesson's lease");
        self.metric(|m| m.takes.with_label_values(&[cause]).inc());
        self.held().insert(
            lesson,
            Held {
                lease,
                proven_until,
            },
        );
        self.metric(|m| m.owned.set(gauge(self.held().len())));
        Ok(Route::Here(room))
    }

    /// Tells the media plane until when it may transmit for `lesson`
    /// (`None`: no limit any more, the lesson is gone from it anyway).
    async fn fence_media(&self, lesson: LessonId, until: Option<Instant>) {
        if let Some(media) = &self.inner.media
            && let Err(e) = media.set_fence(lesson, until).await
        {
            error!(%lesson, error = %e, "media: cannot set the lesson's fence");
        }
    }

    /// Stops a lesson this node no longer owns (or gives up): nothing more
    /// is transmitted for it, every connection closes (the pages rejoin,
    /// reaching the new owner), and its lease is forgotten here.
    async fn let_go(&self, lesson: LessonId, cause: &'static str) -> Option<Lease> {
        let held = self.held().remove(&lesson);
        self.metric(|m| {
            m.owned.set(gauge(self.held().len()));
            m.released.with_label_values(&[cause]).inc();
        });
        // Nothing leaves for this lesson from now on, whatever is queued.
        self.fence_media(lesson, Some(now())).await;
        if let Some(room) = self.inner.rooms.get(lesson) {
            room.shutdown().await;
        }
        if held.is_some() {
            warn!(%lesson, cause, "let the lesson go");
        }
        held.map(|h| h.lease)
    }

    /// Renews every lease once; lets go of lessons whose lease is lost or
    /// can no longer be proven, and of lessons whose task has stopped and
    /// whose recorder feed has everything acknowledged.
    pub async fn renew_once(&self) {
        let leases: Vec<(LessonId, Lease)> = self
            .held()
            .iter()
            .map(|(l, h)| (*l, h.lease.clone()))
            .collect();
        let store = &self.inner.store;
        for (lesson, lease) in leases {
            if self.inner.rooms.get(lesson).is_none() {
                // The lesson's task stopped (it ended or closed): give the
                // lease back, unless a join has just started it here again
                // (taking is serialised, so look again under that lock).
                let _one_at_a_time = self.inner.taking.lock().await;
                let same = self.held().get(&lesson).is_some_and(|h| h.lease == lease);
                let feeding = self.inner.feed.get().is_some_and(|f| f.is_feeding(lesson));
                if !same {
                    continue;
                }
                if self.inner.rooms.get(lesson).is_none() && !feeding {
                    self.let_go(lesson, "closed").await;
                    let _ = store.release_lease(&lease).await;
                    continue;
                }
                // Started here again, or the recorder does not yet have
                // everything of it: the lease is kept (renewed below).
            }
            let sent = now();
            let unix = UnixMillis(unix_millis());
            let expires = UnixMillis(unix.0 + self.inner.config.lease_ms());
            match store.renew_lease(&lease, unix, expires).await {
                Ok(true) => {
                    self.metric(|m| m.renewals.with_label_values(&["ok"]).inc());
                    let proven_until = sent + self.inner.config.proof();
                    if let Some(h) = self.held().get_mut(&lesson)
                        && h.lease == lease
                    {
                        h.proven_until = proven_until;
                    }
                    self.fence_media(lesson, Some(proven_until)).await;
                }
                Ok(false) => {
                    self.metric(|m| m.renewals.with_label_values(&["lost"]).inc());
                    self.let_go(lesson, "lost").await;
                }
                Err(e) => {
                    self.metric(|m| m.renewals.with_label_values(&["failed"]).inc());
                    let unproven = self
                        .held()
                        .get(&lesson)
                        .is_some_and(|h| now() >= h.proven_until);
                    if unproven {
                        warn!(%lesson, error = %e, "cannot prove the lesson's lease; stopping it here");
                        self.let_go(lesson, "unproven").await;
                    }
                }
            }
        }
        let info = NodeInfo {
            id: self.node_id().to_owned(),
            url: self.inner.config.node_url.clone(),
            lessons: u32::try_from(self.held().len()).unwrap_or(u32::MAX),
            draining: self.is_draining(),
        };
        let unix = UnixMillis(unix_millis());
        let expires = UnixMillis(unix.0 + self.inner.config.lease_ms());
        if let Err(e) = store.put_node(info, unix, expires).await {
            warn!(error = %e, "cannot announce this node");
        }
    }

    /// Renews leases every `cluster.renew_ms`, for as long as the node runs.
    pub fn spawn_renewals(&self) -> tokio::task::JoinHandle<()> {
        let cluster = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(cluster.inner.config.renew);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                cluster.renew_once().await;
            }
        })
    }

    /// Writes the snapshots the lessons here report, latest first, under
    /// their leases, until the rooms stop reporting. A write refused for a
    /// stale epoch means another node owns the lesson now: it is let go.
    pub fn spawn_writer(
        &self,
        mut snapshots: mpsc::UnboundedReceiver<Snapshot>,
    ) -> tokio::task::JoinHandle<()> {
        let cluster = self.clone();
        tokio::spawn(async move {
            // The latest snapshot of each lesson, and since when it has
            // waited (the oldest change it carries).
            let mut pending: HashMap<LessonId, (Snapshot, Instant)> = HashMap::new();
            let take = |pending: &mut HashMap<LessonId, (Snapshot, Instant)>, s: Snapshot| {
                let since = pending.get(&s.lesson).map_or_else(now, |(_, t)| *t);
                pending.insert(s.lesson, (s, since));
            };
            loop {
                if pending.is_empty() {
                    match snapshots.recv().await {
                        Some(s) => take(&mut pending, s),
                        None => return,
                    }
                }
                while let Ok(s) = snapshots.try_recv() {
                    take(&mut pending, s);
                }
                let mut retry = false;
                for (lesson, (snapshot, since)) in std::mem::take(&mut pending) {
                    if cluster.write(lesson, &snapshot).await {
                        let lag = now().saturating_duration_since(since);
                        cluster.metric(|m| m.snapshot_lag.observe(lag.as_secs_f64()));
                    } else {
                        pending.insert(lesson, (snapshot, since));
                        retry = true;
                    }
                }
                if retry {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        })
    }

    /// One snapshot write; false if it should be tried again.
    async fn write(&self, lesson: LessonId, snapshot: &Snapshot) -> bool {
        let Some(lease) = self.held().get(&lesson).map(|h| h.lease.clone()) else {
            // Not ours (any more): the owner writes its own.
            return true;
        };
        match self
            .inner
            .store
            .save_lesson_fenced(&lease, snapshot.encode())
            .await
        {
            Ok(_) => {
                self.metric(|m| m.snapshot_writes.with_label_values(&["ok"]).inc());
                true
            }
            Err(StoreError::Fenced { current }) => {
                self.metric(|m| m.snapshot_writes.with_label_values(&["fenced"]).inc());
                warn!(%lesson, epoch = lease.epoch, current, "snapshot refused: another node owns the lesson");
                self.let_go(lesson, "fenced_write").await;
                true
            }
            Err(e) => {
                self.metric(|m| m.snapshot_writes.with_label_values(&["failed"]).inc());
                warn!(%lesson, error = %e, "snapshot not written yet; retrying");
                // Retried while the lease is proven; past that the renewals
                // stop the lesson here and the next owner restores the last
                // snapshot that was written.
                let proven = self
                    .held()
                    .get(&lesson)
                    .is_some_and(|h| now() < h.proven_until);
                !proven
            }
        }
    }

    /// Stops taking lessons and stops every lesson here: each one's pages
    /// are told to rejoin (they reach another node once the lease is
    /// released), its last state is written under its lease. Returns the
    /// leases, still held: release them ([`Cluster::release`]) once the
    /// recorder feed has everything, so the next owner's recording
    /// continues after this node's, never beside it.
    pub async fn drain(&self) -> Vec<Lease> {
        self.inner.draining.store(true, Ordering::Release);
        self.metric(|m| m.draining.set(1));
        // Others stop placing lessons here from their next look.
        self.renew_once().await;
        let mut leases = Vec::new();
        for lesson in self.owned() {
            let snapshot = match self.inner.rooms.get(lesson) {
                Some(room) => room.snapshot().await,
                None => None,
            };
            let Some(lease) = self.let_go(lesson, "drain").await else {
                continue;
            };
            if let Some(s) = snapshot
                && let Err(e) = self
                    .inner
                    .store
                    .save_lesson_fenced(&lease, s.encode())
                    .await
            {
                error!(%lesson, error = %e, "last snapshot not written at drain");
            }
            leases.push(lease);
        }
        leases
    }

    /// Gives drained leases back and withdraws this node.
    pub async fn release(&self, leases: Vec<Lease>) {
        for lease in leases {
            if let Err(e) = self.inner.store.release_lease(&lease).await {
                warn!(lesson = %lease.lesson, error = %e, "lease not released; it lapses instead");
            }
        }
        if let Err(e) = self.inner.store.remove_node(self.node_id()).await {
            warn!(error = %e, "cannot withdraw this node");
        }
    }
}

/// A stable per-(lesson, node) number, so that equally loaded nodes share
/// new lessons instead of all choosing the same one.
fn spread(lesson: LessonId, node: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    lesson.hash(&mut h);
    node.hash(&mut h);
    h.finish()
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The lesson's description, or why it cannot be had.
async fn load_info(store: &Store, lesson: LessonId) -> Result<LessonInfo, RouteError> {
    let json = store
        .get_record(TABLE, &lesson.to_string())
        .await
        .map_err(|_| RouteError::Unavailable)?
        .ok_or(RouteError::NotFound)?;
    serde_json::from_str(&json).map_err(|e| {
        error!(%lesson, error = %e, "unreadable lesson record");
        RouteError::NotFound
    })
}
