//! `recorder serve`: the recording service. Gateways open one WebSocket per
//! lesson at `/feed`, authenticated by a service token, and stream the
//! lesson's feed frames; the service seals them into the archive and
//! acknowledges every seq once a signed checkpoint covers it.
//!
//! # The feed protocol
//!
//! 1. `GET /feed` with `Authorization: Bearer <service token>` (verified
//!    before the upgrade: 401 otherwise).
//! 2. The gateway's first message is a binary `Hello { lesson, resume_from }`
//!    for the token's lesson; the service answers `Ack { up_to }`: every seq
//!    up to `up_to` is durable (0: nothing yet), after resuming the
//!    lesson's archive if another recorder or an earlier run wrote it.
//! 3. Then each binary message is one feed frame, in seq order. The service
//!    drops seqs it already has, records a gap for seqs that never came,
//!    and sends `Ack` whenever more is durable and at least every second
//!    (a heartbeat: a feed without acks is a feed that is lost).
//! 4. After `End` is durable the service sends its `Ack` and closes.
//!
//! A second feed for the same lesson replaces the first (a gateway that
//! reconnected, or a node that took the lesson over). `Hello` carries the
//! owner epoch of the gateway's lease: a feed with an epoch below the
//! highest the lesson has seen is refused, and a feed replaced by one with
//! a higher epoch is closed, both with close code
//! [`SUPERSEDED_CLOSE_CODE`] (that gateway no longer owns the lesson). The
//! lesson outlives its feed (see [`lesson`]).
//!
//! It must never acknowledge what is not durable, never hold an age
//! identity, and never lose a frame it has acknowledged.

pub mod auth;
pub mod config;
pub mod lesson;
pub mod metrics;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chaperone_protocol::feed::{FeedFrame, MAX_FEED_FRAME, SUPERSEDED_CLOSE_CODE};
use object_store::{ObjectStore, ObjectStoreExt as _};
use tracing::{debug, info, warn};

use auth::ServiceAuth;
use chaperone_archive::keys::RecorderSigningKey;
use chaperone_archive::segment::RecipientSet;
use lesson::{AckState, AttachError, Frame, Incoming, Lessons};
use metrics::IngestMetrics;

/// How long a feed has to send its `Hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Acks are sent at least this often.
const ACK_HEARTBEAT: Duration = Duration::from_secs(1);

/// Where and how lessons are written.
pub struct Archive {
    /// The object store.
    pub store: Arc<dyn ObjectStore>,
    /// Who can open the segments.
    pub recipients: RecipientSet,
    /// The manifest-signing key.
    pub signer: RecorderSigningKey,
    /// Segment length.
    pub segment: Duration,
    /// How long a lesson without a feed stays open.
    pub idle_close: Duration,
    /// Metrics.
    pub metrics: IngestMetrics,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field("recipients", &self.recipients.to_strings())
            .field("segment", &self.segment)
            .finish_non_exhaustive()
    }
}

/// The running service's shared state.
#[derive(Clone, Debug)]
pub struct Service {
    archive: Arc<Archive>,
    spool: Option<Arc<crate::spool::SpooledStore>>,
    backfill: Arc<std::sync::Mutex<Option<crate::spool::BackfillGuard>>>,
    registry: prometheus::Registry,
    auth: Arc<ServiceAuth>,
    lessons: Lessons,
    next_conn: Arc<AtomicU64>,
}

impl Service {
    /// A service writing to `archive`, admitting feeds that `auth` accepts.
    pub fn new(archive: Archive, auth: ServiceAuth, registry: prometheus::Registry) -> Self {
        Self {
            archive: Arc::new(archive),
            spool: None,
            backfill: Arc::default(),
            registry,
            auth: Arc::new(auth),
            lessons: Lessons::default(),
            next_conn: Arc::new(AtomicU64::new(1)),
        }
    }

    /// `/feed`, `/livez`, `/readyz`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/feed", get(feed))
            .route("/livez", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .with_state(self.clone())
    }

    /// The same service, writing through a spool whose backfill `guard` keeps running.
    pub fn with_spool(
        mut self,
        spool: Arc<crate::spool::SpooledStore>,
        guard: crate::spool::BackfillGuard,
    ) -> Self {
        self.spool = Some(spool);
        *self.backfill.lock().unwrap_or_else(|p| p.into_inner()) = Some(guard);
        self
    }

    /// `/metrics`, for a separate listener.
    pub fn metrics_router(&self) -> Router {
        let metrics = self.archive.metrics.clone();
        Router::new().route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        metrics.render(),
                    )
                }
            }),
        )
    }

    /// Whether the service can take recordings: the object store answers,
    /// or, while it does not, the spool still has room.
    pub async fn ready(&self) -> Result<(), object_store::Error> {
        if let Some(spool) = &self.spool
            && !spool.store_up()
        {
            return Ok(());
        }
        let probe = object_store::path::Path::from("_readyz");
        match self.archive.store.head(&probe).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Lessons currently being recorded.
    pub fn lessons_active(&self) -> usize {
        self.lessons.len()
    }

    /// Writes every open lesson's pending frames (a checkpoint; lessons that
    /// did not end stay open for a later resume) and stops them.
    pub async fn shutdown(&self) {
        self.lessons.shutdown(Duration::from_secs(30)).await;
        let guard = self
            .backfill
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(guard) = guard {
            guard.stop().await;
        }
    }

    /// The service's metrics registry (the store's metrics are in it too).
    pub fn registry(&self) -> &prometheus::Registry {
        &self.registry
    }
}

async fn readyz(State(s): State<Service>) -> Response {
    match s.ready().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("object store: {e}"),
        )
            .into_response(),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

async fn feed(State(s): State<Service>, headers: HeaderMap, ws: WebSocketUpgrade) -> Response {
    let Some(token) = bearer(&headers) else {
        s.archive.metrics.feeds_refused.inc();
        return (StatusCode::UNAUTHORIZED, "service token required").into_response();
    };
    let claims = match s.auth.verify(token, crate::clock::unix_secs()).await {
        Ok(c) => c,
        Err(e) => {
            s.archive.metrics.feeds_refused.inc();
            warn!(error = %e, "feed refused");
            return (StatusCode::UNAUTHORIZED, "service token refused").into_response();
        }
    };
    ws.max_message_size(MAX_FEED_FRAME + 4)
        .max_frame_size(MAX_FEED_FRAME + 4)
        .on_upgrade(move |socket| async move {
            s.archive.metrics.feeds_connected.inc();
            let conn = s.next_conn.fetch_add(1, Ordering::Relaxed);
            if let Err(why) = serve_feed(&s, socket, claims.lesson, conn).await {
                warn!(lesson = %claims.lesson, conn, %why, "feed closed");
            }
            s.archive.metrics.feeds_connected.dec();
        })
}

fn ack_message(up_to: u64) -> Message {
    // An Ack has no variable part: it always encodes.
    Message::Binary(
        FeedFrame::Ack { up_to }
            .to_bytes()
            .unwrap_or_default()
            .into(),
    )
}

/// What a frame from the gateway asks of the lesson's task.
fn incoming(conn: u64, frame: FeedFrame, bytes: &[u8]) -> Result<Incoming, String> {
    if let FeedFrame::Flush = frame {
        return Ok(Incoming::Flush { conn });
    }
    if let FeedFrame::Gap {
        seq,
        at_micros,
        reason,
    } = frame
    {
        return Ok(Incoming::Frame(Frame {
            conn,
            seq,
            at: at_micros,
            bytes: Vec::new(),
            track: "events".to_owned(),
            end: false,
            gap: Some(reason),
        }));
    }
    match (frame.seq(), describe(&frame)) {
        (Some(seq), Some((track, at, end))) => Ok(Incoming::Frame(Frame {
            conn,
            seq,
            at,
            bytes: bytes.to_vec(),
            track,
            end,
            gap: None,
        })),
        _ => Err("unexpected frame kind from the gateway".into()),
    }
}

/// The manifest track and time of a frame.
fn describe(frame: &FeedFrame) -> Option<(String, u64, bool)> {
    Some(match frame {
        FeedFrame::Rtp {
            track,
            arrival_micros,
            ..
        }
        | FeedFrame::SenderReport {
            track,
            arrival_micros,
            ..
        }
        | FeedFrame::Media {
            track,
            arrival_micros,
            ..
        } => (track.to_string(), *arrival_micros, false),
        FeedFrame::Event { at_micros, .. } => ("events".to_owned(), *at_micros, false),
        FeedFrame::Chat { at_micros, .. } => ("chat".to_owned(), *at_micros, false),
        FeedFrame::End { at_micros, .. } => ("events".to_owned(), *at_micros, true),
        _ => return None,
    })
}

async fn serve_feed(
    s: &Service,
    mut socket: WebSocket,
    lesson: chaperone_protocol::LessonId,
    conn: u64,
) -> Result<(), String> {
    let hello = tokio::time::timeout(HELLO_TIMEOUT, socket.recv())
        .await
        .map_err(|_| "no hello".to_owned())?;
    let Some(Ok(Message::Binary(bytes))) = hello else {
        return Err("first message is not a hello".into());
    };
    let (fresh, epoch) = match FeedFrame::parse(&bytes) {
        Ok(FeedFrame::Hello {
            lesson: l,
            resume_from,
            owner_epoch,
        }) if l == lesson => {
            debug!(%lesson, conn, resume_from, owner_epoch, "feed hello");
            (resume_from == 0, owner_epoch)
        }
        Ok(_) => {
            s.archive.metrics.feeds_refused.inc();
            return Err("hello for another lesson, or not a hello".into());
        }
        Err(e) => return Err(format!("bad hello: {e}")),
    };
    let handle = s.lessons.get_or_start(lesson, &s.archive);
    let attached = match handle.attach(conn, fresh, epoch).await {
        Some(Ok(a)) => a,
        Some(Err(e @ AttachError::Superseded { .. })) => {
            let _ = socket.send(superseded(&e.to_string())).await;
            return Err(e.to_string());
        }
        Some(Err(e)) => {
            let _ = socket.send(Message::Close(None)).await;
            return Err(e.to_string());
        }
        None => return Err("lesson stopped while attaching".into()),
    };
    let mut acks = attached.acks;
    info!(%lesson, conn, durable = acks.borrow().durable, initial = attached.initial, "feed attached");
    let result = pump(
        &handle,
        &mut socket,
        &mut acks,
        (conn, epoch),
        attached.initial,
    )
    .await;
    handle.detach(conn);
    result
}

async fn pump(
    handle: &lesson::LessonHandle,
    socket: &mut WebSocket,
    acks: &mut tokio::sync::watch::Receiver<AckState>,
    (conn, epoch): (u64, u64),
    initial: u64,
) -> Result<(), String> {
    let mut sent = acks.borrow().durable;
    socket
        .send(ack_message(initial))
        .await
        .map_err(|e| e.to_string())?;
    let mut heartbeat = tokio::time::interval(ACK_HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = socket.recv() => match msg {
                Some(Ok(Message::Binary(bytes))) => {
                    let frame = FeedFrame::parse(&bytes).map_err(|e| format!("bad frame: {e}"))?;
                    let incoming = incoming(conn, frame, &bytes)?;
                    if !handle.frame(incoming).await {
                        return Err("lesson stopped".into());
                    }
                }
                Some(Ok(Message::Close(_))) | None => return Ok(()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.to_string()),
            },
            changed = acks.changed() => {
                if changed.is_err() {
                    return Err("lesson stopped".into());
                }
                let state = *acks.borrow_and_update();
                if state.current != conn {
                    if state.epoch > epoch {
                        let why = format!("the lesson has a newer owner (epoch {}, this feed {epoch})", state.epoch);
                        let _ = socket.send(superseded(&why)).await;
                        return Err(why);
                    }
                    let _ = socket.send(Message::Close(None)).await;
                    return Err("replaced by a newer feed".into());
                }
                if state.durable != sent {
                    sent = state.durable;
                    socket.send(ack_message(sent)).await.map_err(|e| e.to_string())?;
                }
                if state.finished {
                    let _ = socket.send(Message::Close(None)).await;
                    return Ok(());
                }
            }
            _ = heartbeat.tick() => {
                socket.send(ack_message(sent)).await.map_err(|e| e.to_string())?;
            }
        }
    }
}

/// The close message telling a gateway that a newer owner records the lesson.
fn superseded(why: &str) -> Message {
    // A close reason is at most 123 bytes.
    let reason: String = why.chars().take(100).collect();
    Message::Close(Some(axum::extract::ws::CloseFrame {
        code: SUPERSEDED_CLOSE_CODE,
        reason: reason.into(),
    }))
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The signing key could not be read.
    #[error("signing key: {0}")]
    Key(#[from] chaperone_archive::keys::KeyError),
    /// The recipients are not age public keys.
    #[error("recipients: {0}")]
    Recipients(#[from] chaperone_archive::segment::SealError),
    /// The object store could not be opened.
    #[error("object store: {0}")]
    Store(#[from] chaperone_archive::store::StoreError),
    /// The spool could not be opened.
    #[error("spool: {0}")]
    Spool(#[from] crate::spool::SpoolError),
    /// The object store does not answer.
    #[error("object store: {0}")]
    NotReady(#[source] object_store::Error),
    /// The gateway's keys could not be used.
    #[error("gateway keys: {0}")]
    Auth(#[from] auth::AuthError),
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Opens the store and keys of `config`, checks the store answers, and
/// returns the service (not yet listening).
pub async fn start(config: &config::ServiceConfig) -> Result<Service, StartError> {
    let key = RecorderSigningKey::load_or_generate(std::path::Path::new(
        &config.archive.signing_key_file,
    ))?;
    let recipients = RecipientSet::parse(&config.archive.recipients.join("\n"))?;
    // Fails loudly here (wrong key, unreachable, no bucket), never later.
    let store = chaperone_archive::store::open(&config.store).await?;
    let (registry, metrics) = IngestMetrics::new_registry()?;
    let spool = match config.store.spool_path() {
        Some(_) => {
            let m = crate::spool::StoreMetrics::register(&registry)?;
            let (spool, guard) =
                crate::spool::SpooledStore::open(store.clone(), &config.store, m).await?;
            Some((spool, guard))
        }
        None => None,
    };
    let auth = ServiceAuth::from_jwks_url(
        config.gateway.issuers.clone(),
        config.gateway.audience.clone(),
        config.gateway.jwks_url.clone(),
    )?;
    if let Err(e) = auth.refresh().await {
        // The gateway may start after us; keys are fetched again on the first feed.
        tracing::warn!(error = %e, "gateway keys not loaded yet");
    }
    let writes: Arc<dyn ObjectStore> = match &spool {
        Some((s, _)) => s.clone(),
        None => store,
    };
    let mut service = Service::new(
        Archive {
            store: writes,
            recipients,
            signer: key,
            segment: Duration::from_secs(config.archive.segment_secs),
            idle_close: Duration::from_secs(config.archive.idle_close_secs),
            metrics,
        },
        auth,
        registry,
    );
    if let Some((s, guard)) = spool {
        service = service.with_spool(s, guard);
    }
    service.ready().await.map_err(StartError::NotReady)?;
    Ok(service)
}
