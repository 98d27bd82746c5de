//! The recorder inside the gateway (`gateway --dev` and single-node
//! deployments): the same `recorder serve` service, started in-process on a
//! loopback port, so that the gateway's feed talks to it exactly as to a
//! remote recorder (service token, `Hello`, acknowledged frames). It is
//! given the gateway's public keys directly instead of fetching the JWKS.
//!
//! In development mode missing keys are made (and kept) under
//! `.chaperone-dev/`: the review identity beside the recordings (by
//! [`crate::dev`]), so they stay openable across restarts (`age -d -i
//! review-identity.txt`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chaperone_archive::keys::RecorderSigningKey;
use chaperone_archive::segment::RecipientSet;
use chaperone_recorder::service::auth::ServiceAuth;
use chaperone_recorder::service::metrics::IngestMetrics;
use chaperone_recorder::service::{Archive, Service};
use chaperone_tokens::Verifier;
use tokio::task::JoinHandle;

use crate::config::Config;

/// A running in-process recorder.
#[derive(Debug)]
pub struct Embedded {
    /// Its feed base URL (`ws://127.0.0.1:<port>`).
    pub url: String,
    /// The service (for shutdown and metrics).
    pub service: Service,
    task: JoinHandle<()>,
}

impl Drop for Embedded {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The directory recordings go to.
pub(crate) fn recordings_dir(config: &Config) -> PathBuf {
    if config.recorder.dir.is_empty() {
        PathBuf::from(".chaperone-dev").join("recordings")
    } else {
        PathBuf::from(&config.recorder.dir)
    }
}

fn parent_of(dir: &Path) -> PathBuf {
    dir.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// The recipients: the configured ones, or in development mode the
/// development review identity's (made on first use).
fn recipients(config: &Config, dir: &Path) -> Result<RecipientSet, EmbeddedError> {
    let r = &config.recorder;
    let list = if r.recipients.is_empty() {
        dev_recipient(config, &parent_of(dir))?
    } else {
        r.recipients.clone()
    };
    Ok(RecipientSet::parse(&list.join("\n"))?)
}

#[cfg(feature = "dev")]
fn dev_recipient(config: &Config, dir: &Path) -> Result<Vec<String>, EmbeddedError> {
    if !config.dev {
        return Err(EmbeddedError::NoRecipients(
            "recorder.recipients is required outside --dev",
        ));
    }
    crate::dev::review_recipient(dir)
        .map(|r| vec![r])
        .map_err(EmbeddedError::DevIdentity)
}

#[cfg(not(feature = "dev"))]
fn dev_recipient(_config: &Config, _dir: &Path) -> Result<Vec<String>, EmbeddedError> {
    Err(EmbeddedError::NoRecipients(
        "recorder.recipients is required (this gateway is built without development mode)",
    ))
}

/// Why the in-process recorder could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddedError {
    /// No recipients are configured, and this is not development mode.
    #[error("{0}")]
    NoRecipients(&'static str),
    /// The development review identity could not be made or read.
    #[error("development review identity: {0}")]
    DevIdentity(String),
    /// The recipients are not age public keys.
    #[error("recipients: {0}")]
    Recipients(#[from] chaperone_archive::segment::SealError),
    /// A directory could not be created.
    #[error("{path}: {source}")]
    Dir {
        /// The directory.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The manifest-signing key could not be read or made.
    #[error("signing key: {0}")]
    Key(#[from] chaperone_archive::keys::KeyError),
    /// The recordings' store could not be opened.
    #[error("store: {0}")]
    Store(#[from] chaperone_archive::store::StoreError),
    /// The store does not answer.
    #[error("store: {0}")]
    NotReady(#[source] object_store::Error),
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The loopback listener could not be opened.
    #[error("listener: {0}")]
    Listen(#[source] std::io::Error),
}

/// Starts the in-process recorder, trusting service tokens signed by
/// `keys` for `issuer`.
pub(crate) async fn start(
    config: &Config,
    issuer: String,
    keys: Verifier,
    registry: &prometheus::Registry,
) -> Result<Embedded, EmbeddedError> {
    let r = &config.recorder;
    let dir = recordings_dir(config);
    let recipients = recipients(config, &dir)?;
    let key_path = if r.signing_key_file.is_empty() {
        parent_of(&dir).join("recorder-signing-key.pem")
    } else {
        PathBuf::from(&r.signing_key_file)
    };
    if let Some(p) = key_path.parent() {
        std::fs::create_dir_all(p).map_err(|source| EmbeddedError::Dir {
            path: p.display().to_string(),
            source,
        })?;
    }
    let signer = RecorderSigningKey::load_or_generate(&key_path)?;
    // The same store layer as `recorder serve` (writes fsync'd, probed now).
    let store = chaperone_archive::store::open(&chaperone_archive::store::StoreConfig {
        dir: dir.display().to_string(),
        ..chaperone_archive::store::StoreConfig::default()
    })
    .await?;
    let metrics = IngestMetrics::register(registry)?;
    tracing::info!(dir = %dir.display(), recipients = ?recipients.to_strings(), "recorder: embedded, writing sealed segments");
    let service = Service::new(
        Archive {
            store,
            recipients,
            signer,
            segment: Duration::from_secs(r.segment_secs),
            idle_close: Duration::from_secs(120),
            metrics,
        },
        ServiceAuth::with_keys(issuer, config.tokens.service_audience.clone(), keys),
        registry.clone(),
    );
    service.ready().await.map_err(EmbeddedError::NotReady)?;
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(EmbeddedError::Listen)?;
    let addr = listener.local_addr().map_err(EmbeddedError::Listen)?;
    let router = service.router();
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "embedded recorder stopped");
        }
    });
    Ok(Embedded {
        url: format!("ws://{addr}"),
        service,
        task,
    })
}
