//! Assembles a gateway node from its configuration: keys, the relying
//! party (and, in development mode, the built-in identity provider it talks
//! to), the signed-in web, lesson signaling, the lessons on this node and
//! the relay of cluster events. `main` and the in-process tests both start
//! a node through [`App::build`], so what the tests drive is what runs.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

mod identity;

pub use crate::feed::embedded::EmbeddedError;

use crate::auth::join::JoinAuth;
use crate::auth::oidc::{OidcError, RelyingParty};
use crate::auth::session::SessionConfig;
use crate::auth::tokens::TokenError;
use crate::config::{Config, ConfigError};
use crate::feed::{FeedSettings, FeedStatus};
use crate::http::{AppState, Probe};
use crate::media::MediaError;
use crate::metrics::Metrics;
use crate::room::{RoomDeps, RoomRecord, Rooms};
use crate::signal::{SignalConfig, SignalState};
use crate::store::{StateStore, Store};
use crate::web::{WebConfig, WebState};

/// Why a node could not be assembled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A signing key file could not be read.
    #[error("signing key {path}: {source}")]
    KeyFile {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A signing key could not be used.
    #[error("signing key: {0}")]
    Key(#[from] TokenError),
    /// The relying party could not be configured.
    #[error("identity provider: {0}")]
    Oidc(#[from] OidcError),
    /// No identity provider is configured and this build has no
    /// development provider.
    #[error("oidc.issuer is required (this gateway is built without development mode)")]
    NoIdentityProvider,
    /// The development identity provider could not start.
    #[cfg(feature = "dev")]
    #[error("development identity provider: {0}")]
    DevIdp(#[from] crate::dev::idp::DevIdpError),
    /// A setting is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The media socket could not be opened.
    #[error("media: {0}")]
    Media(#[from] MediaError),
    /// The class lists (`lesson.roster_file`) cannot be used.
    #[error("lesson.roster_file: {0}")]
    Roster(#[from] crate::roster::RosterError),
    /// The embedded recorder could not be set up (directory, keys, recipients).
    #[error("recorder: {0}")]
    Recorder(#[from] EmbeddedError),
    /// The feed's spool directory cannot be used, or another live process
    /// (another node on this host) holds it.
    #[error("feed spool {path}: {why}")]
    SpoolDir {
        /// The directory.
        path: String,
        /// Why.
        why: String,
    },
    /// The metrics registry could not be built.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// A node, ready to serve.
#[derive(Debug)]
pub struct App {
    /// Every HTTP route.
    pub router: Router,
    /// The development identity provider, when it runs.
    #[cfg(feature = "dev")]
    pub devidp: Option<crate::dev::idp::DevIdp>,
    /// The lessons on this node.
    pub rooms: Rooms,
    /// This node among the others: leases, routing, drain.
    pub cluster: crate::cluster::Cluster,
    /// The URL people reach this node at.
    pub public_url: String,
    /// The media plane.
    pub media: crate::media::MediaHandle,
    /// The recorder feed's health.
    pub recorder: FeedStatus,
    /// The recorder running inside this node, if no remote one is configured.
    pub embedded_recorder: Option<crate::feed::embedded::Embedded>,
    /// The node's metrics.
    pub metrics: Arc<Metrics>,
    feed_metrics: crate::feed::FeedMetrics,
    recorder_task: Option<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
    /// Held (locked) while the node runs: no other process spools there.
    _spool_lock: std::fs::File,
}

impl Drop for App {
    fn drop(&mut self) {
        for t in self.tasks.iter().chain(self.recorder_task.as_ref()) {
            t.abort();
        }
    }
}

/// Forwarded media frames buffered for the recorder: about ten seconds of a
/// full class with cameras on. Past it the SFU records a drop rather than wait.
const RECORD_QUEUE: usize = 32 * 1024;

fn unix_secs() -> u64 {
    crate::clock::unix_millis() / 1000
}

impl App {
    /// Assembles a node serving at `public_url` (no trailing slash) on `store`.
    pub async fn build(
        config: &Config,
        store: Store,
        public_url: String,
    ) -> Result<Self, StartError> {
        let public_url = public_url.trim_end_matches('/').to_owned();
        let tokens = identity::token_issuer(config, &public_url)?;
        let jwks = tokens.keys.jwks();
        let verifier = tokens.keys.verifier();

        // The identity provider: the configured one, or in development mode
        // with none configured, the built-in one at /dev-idp.
        let (rp_config, devidp) = identity::relying_party_config(config, &public_url)?;
        let rp = Arc::new(RelyingParty::new(rp_config)?);
        // The school's class lists, read once (a bad row stops the start).
        let roster = Arc::new(if config.lesson.roster_file.is_empty() {
            crate::roster::Roster::empty()
        } else {
            crate::roster::Roster::load(&config.lesson.roster_file, rp.issuer())?
        });

        let mut origins = config.allowed_origins();
        if !origins.contains(&public_url) {
            origins.push(public_url.clone());
        }

        // The media plane: one UDP socket for every participant; every
        // forwarded frame also goes to the recorder.
        let metrics = Arc::new(Metrics::new()?);
        let (frames_tx, frames_rx) = mpsc::channel(RECORD_QUEUE);
        let (media, media_events) = crate::media::driver::start(crate::media::MediaDriverConfig {
            bind: config.media.udp_listen,
            record: Some(frames_tx),
            advertised: config.media.advertised()?,
            metrics: Some(metrics.media.clone()),
        })
        .await?;

        // Lessons, and the recorder feed their records go to.
        let (records_tx, records_rx) = mpsc::channel::<RoomRecord>(1024);
        // Concerns and incidents reach the DSL's list on their way to the recorder.
        let records_rx = crate::web::incidents::tap(store.clone(), records_rx);
        // So do the register's joins, admissions and departures.
        let records_rx = crate::web::register::tap(store.clone(), records_rx);
        // Every control change is written under the lesson's lease.
        let (persist, snapshots) = crate::cluster::persist_channel();
        let rooms = Rooms::new(RoomDeps {
            records: records_tx,
            media: Some(media.clone()),
            persist: Some(persist),
        })
        .with_metrics(metrics.clone())
        .with_idle_close(Duration::from_secs(config.lesson.idle_close_secs))
        .with_windows(crate::catalog::Windows::new(
            store.clone(),
            config.lesson.window(),
        ));
        let cluster = crate::cluster::Cluster::new(
            crate::cluster::ClusterConfig::from_settings(&config.cluster, config.http.listen),
            store.clone(),
            rooms.clone(),
            Some(media.clone()),
            config.lesson.lesson_config(),
            Some(crate::cluster::ClusterMetrics::register(
                metrics.registry(),
            )?),
        );
        let writer = cluster.spawn_writer(snapshots);
        let renewals = cluster.spawn_renewals();
        let media_router = rooms.route_media_events(media_events);
        let spool_node = if config.cluster.node_id.is_empty() {
            format!("port-{}", config.http.listen.port())
        } else {
            config.cluster.node_id.clone()
        };
        let spool_dir = config.feed.spool_dir(&spool_node);
        let spool_lock = lock_spool(&spool_dir)?;
        let (embedded_recorder, recorders) =
            recorders(config, &public_url, verifier, metrics.registry()).await?;
        let feed_metrics = crate::feed::FeedMetrics::register(metrics.registry())?;
        let (recorder_task, recorder_status) = crate::feed::spawn(
            FeedSettings {
                recorders: recorders.clone(),
                buffer_bytes: usize::try_from(config.feed.buffer_bytes).unwrap_or(usize::MAX),
                spool_dir: spool_dir.clone(),
                spool_max_bytes: config.feed.spool_max_bytes,
                ack_timeout: Duration::from_millis(config.feed.ack_timeout_ms),
            },
            tokens.clone(),
            records_rx,
            frames_rx,
            rooms.clone(),
        );
        cluster.set_feed(recorder_status.clone());
        let relay = tokio::spawn(crate::room::relay_cluster_events(
            store.clone(),
            rooms.clone(),
        ));

        let web = WebState::new(
            store.clone(),
            rp.clone(),
            tokens.clone(),
            web_config(config, &public_url, origins.clone(), roster),
            crate::web::audit::AnonymousTally::start(
                store.clone(),
                std::time::Duration::from_secs(config.http.anonymous_summary_secs),
                Some(metrics.anonymous_refusals.clone()),
            ),
        );
        let signal_config = Arc::new(SignalConfig {
            allowed_origins: origins,
            ..SignalConfig::default()
        });
        let signal = crate::signal::router(SignalState {
            rooms: rooms.clone(),
            door: Some(crate::cluster::relay::Door {
                cluster: cluster.clone(),
                tokens: tokens.clone(),
            }),
            auth: Arc::new(
                JoinAuth::new(tokens.clone(), store.clone())
                    .with_metrics(metrics.clone())
                    .with_window(config.lesson.window()),
            ),
            config: signal_config.clone(),
        });
        let relay_in = crate::cluster::relay::router(crate::cluster::relay::RelayState {
            cluster: cluster.clone(),
            tokens: tokens.clone(),
            store: store.clone(),
            config: signal_config,
        });

        let probes = probes(&store, devidp.is_none().then(|| rp.clone()), &recorders);
        let health = crate::http::router(AppState {
            probes,
            dev: config.dev,
            jwks,
        });

        let router = crate::web::router(web)
            .merge(signal)
            .merge(relay_in)
            .merge(health);
        #[cfg(feature = "dev")]
        let router = match &devidp {
            Some(idp) => router.nest(crate::dev::idp::MOUNT, idp.router()),
            None => router,
        };
        // The review service: in --dev in-process under /review.
        #[cfg(feature = "dev")]
        let (router, review_tasks) = crate::dev::review::mount_embedded(router, config, &tokens);
        #[cfg(not(feature = "dev"))]
        let review_tasks: Vec<JoinHandle<()>> = Vec::new();
        Ok(Self {
            router: router.layer(axum::middleware::map_response(
                crate::http::security_headers,
            )),
            #[cfg(feature = "dev")]
            devidp,
            rooms,
            cluster,
            public_url,
            media,
            recorder: recorder_status,
            embedded_recorder,
            feed_metrics,
            metrics,
            recorder_task: Some(recorder_task),
            _spool_lock: spool_lock,
            tasks: [relay, media_router, writer, renewals]
                .into_iter()
                .chain(review_tasks)
                .collect(),
        })
    }
}

/// Creates the feed's spool directory and locks it for this process (the
/// lock goes with the process, however it ends).
fn lock_spool(dir: &std::path::Path) -> Result<std::fs::File, StartError> {
    let fail = |why: String| StartError::SpoolDir {
        path: dir.display().to_string(),
        why,
    };
    std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("LOCK"))
        .map_err(|e| fail(e.to_string()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(fail(
            "another running gateway uses it; give each node its own feed.spool_dir".to_owned(),
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(fail(e.to_string())),
    }
}

/// The recorders lessons are fed to: the configured ones, or one started
/// in this process (single-node deployments, `--dev`).
async fn recorders(
    config: &Config,
    public_url: &str,
    verifier: chaperone_tokens::Verifier,
    registry: &prometheus::Registry,
) -> Result<(Option<crate::feed::embedded::Embedded>, Vec<String>), StartError> {
    if !config.recorder.urls.is_empty() {
        return Ok((None, config.recorder.urls.clone()));
    }
    let e = crate::feed::embedded::start(config, public_url.to_owned(), verifier, registry).await?;
    let url = e.url.clone();
    Ok((Some(e), vec![url]))
}

/// The signed-in web's settings.
/// `lesson.classes`, and in `--dev` the demo school's classes, so that a
/// lesson for 7A can be made before any pupil has signed in.
fn known_classes(config: &Config, roster: &crate::roster::Roster) -> Vec<String> {
    #[allow(unused_mut)]
    let mut classes = config.lesson.classes.clone();
    classes.extend(roster.classes().map(str::to_owned));
    #[cfg(feature = "dev")]
    if config.dev {
        for person in crate::dev::idp::demo_people() {
            classes.extend(person.classes);
        }
    }
    classes.sort();
    classes.dedup();
    classes
}

fn web_config(
    config: &Config,
    public_url: &str,
    allowed_origins: Vec<String>,
    roster: Arc<crate::roster::Roster>,
) -> WebConfig {
    WebConfig {
        public_url: public_url.to_owned(),
        allowed_origins,
        sessions: SessionConfig {
            idle: Duration::from_secs(config.session.idle_timeout_secs),
            absolute: Duration::from_secs(config.session.absolute_timeout_secs),
        },
        mapping: config.oidc.claims.clone(),
        room_token_secs: config.tokens.room_token_secs,
        step_up_max_age_secs: config.oidc.step_up_max_age_secs,
        lookups_per_minute: config.session.lesson_lookups_per_minute,
        turn: config.turn.clone(),
        classes: known_classes(config, &roster),
        dev: config.dev,
        window: config.lesson.window(),
        roster,
    }
}

/// Readiness: the state store answers, the identity provider's metadata
/// (unless it is the built-in development provider, `rp` then `None`), and
/// some recorder's `/readyz`.
fn probes(store: &Store, rp: Option<Arc<RelyingParty>>, recorders: &[String]) -> Vec<Probe> {
    let probe_store = store.clone();
    let mut probes = vec![Probe::new("store", move || {
        let store = probe_store.clone();
        Box::pin(async move { store.ping().await.map_err(|e| e.to_string()) })
    })];
    if let Some(rp) = rp {
        probes.push(Probe::new("identity_provider", move || {
            let rp = rp.clone();
            Box::pin(async move { rp.probe(unix_secs()).await })
        }));
    }
    let probe_recorders = crate::feed::ReadinessProbe::new(recorders);
    probes.push(Probe::new("recorder", move || {
        let probe = probe_recorders.clone();
        Box::pin(async move { probe.check().await })
    }));
    probes
}

impl App {
    /// Stops the lessons, then sends the recorder everything pending and
    /// waits (bounded) until it is durable: nothing recorded is lost at a
    /// clean shutdown. An embedded recorder then closes its lessons.
    pub async fn shutdown(&mut self) {
        // Every lesson here stops (its pages rejoin elsewhere) with its
        // last state written; its lease is given back only once the
        // recorder has everything (below).
        let leases = self.cluster.drain().await;
        self.rooms.shutdown_all().await;
        self.recorder.stop();
        if let Some(task) = self.recorder_task.take()
            && tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .is_err()
        {
            tracing::error!("recorder feed did not finish within 30 s");
        }
        if let Some(e) = &self.embedded_recorder {
            e.service.shutdown().await;
        }
        let handed = leases.len();
        self.cluster.release(leases).await;
        if handed > 0 {
            tracing::info!(lessons = handed, "handed this node's lessons over");
        }
    }

    /// The `/metrics` route, for the separate metrics listener. Each scrape
    /// first reads the figures that are totals elsewhere (lessons running,
    /// the SFU's counters, the recorder's health, the tokio runtime).
    pub fn metrics_router(&self) -> Router {
        let metrics = self.metrics.clone();
        let rooms = self.rooms.clone();
        let media = self.media.clone();
        let recorder = self.recorder.clone();
        let feed_metrics = self.feed_metrics.clone();
        Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let (metrics, rooms, media, recorder, feed_metrics) = (
                    metrics.clone(),
                    rooms.clone(),
                    media.clone(),
                    recorder.clone(),
                    feed_metrics.clone(),
                );
                async move {
                    metrics
                        .lessons_live
                        .set(i64::try_from(rooms.all().len()).unwrap_or(i64::MAX));
                    metrics
                        .recorder_attached
                        .set(i64::from(recorder.attached()));
                    feed_metrics.observe(recorder.figures());
                    if let Ok(stats) = media.stats().await {
                        metrics.observe_sfu(stats);
                    }
                    metrics.observe_runtime(&tokio::runtime::Handle::current());
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
}
