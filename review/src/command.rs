//! `recorder review`: the review service as its own process (the shell
//! around [`crate::http`]). It reads the clock, fetches the
//! gateway's JWKS (again every five minutes, for key rotation), runs the
//! retention sweep periodically and serves HTTP until interrupted.
//!
//! It is the only place in the crate that reads the clock, and it holds no
//! review logic of its own: what a viewer may do is decided in
//! [`crate::http`] and the modules it calls, never here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::http::{ReviewService, ReviewSettings};
use anyhow::{Context as _, bail};
use chaperone_archive::keys::RecorderPublicKey;
use chaperone_tokens::fetch::{JwksFetcher, JwksSource};

/// Unix microseconds: the only clock the review service reads.
#[allow(clippy::disallowed_methods)]
fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// `recorder review`: serve the review service (the read side, holding the
/// age identity recordings are sealed to).
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("stored").required(true).args(["store", "store_config"])))]
pub struct ReviewArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8090")]
    pub(crate) listen: SocketAddr,
    /// The recordings' directory.
    #[arg(long, value_name = "DIR")]
    pub(crate) store: Option<PathBuf>,
    /// A TOML file with the recorder's `store.*` keys (S3); secrets may come
    /// from `CHAPERONE_REVIEW_STORE_<KEY>`.
    #[arg(long, value_name = "FILE")]
    pub(crate) store_config: Option<PathBuf>,
    /// The review age identity (`age-keygen` format).
    #[arg(long, value_name = "FILE")]
    pub(crate) identity: PathBuf,
    /// The recorder's manifest public key, obtained out of band.
    #[arg(long, value_name = "FILE")]
    pub(crate) recorder_key: PathBuf,
    /// The gateway's public URL (review tokens' `iss`).
    #[arg(long, value_name = "URL")]
    pub(crate) issuer: String,
    /// URL or file of the gateway's JWKS (fetched again every 5 minutes).
    #[arg(long, value_name = "URL|FILE")]
    pub(crate) jwks: String,
    /// Audience of review tokens.
    #[arg(long, default_value = chaperone_tokens::DEFAULT_REVIEW_AUDIENCE)]
    pub(crate) audience: String,
    /// Path prefix, also the review cookie's path.
    #[arg(long, value_name = "PATH", default_value = "/review")]
    pub(crate) mount: String,
    /// Mark the review cookie `Secure` (any https deployment).
    #[arg(long)]
    pub(crate) secure_cookies: bool,
    /// Review session lifetime, seconds.
    #[arg(long, value_name = "SECS", default_value_t = 1800)]
    pub(crate) session_secs: u64,
    /// Memory for opened recordings and remuxed files, MiB.
    #[arg(long, value_name = "MIB", default_value_t = 512)]
    pub(crate) cache_mb: usize,
    /// Retention of recordings without concerns or incidents, days.
    #[arg(long, value_name = "DAYS", default_value_t = 30)]
    pub(crate) retention_standard_days: u64,
    /// Retention of recordings with a concern or incident (once no hold), days.
    #[arg(long, value_name = "DAYS", default_value_t = 365)]
    pub(crate) retention_flagged_days: u64,
    /// How often the retention sweep runs, seconds (at least 60).
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    pub(crate) sweep_secs: u64,
    /// Seconds a connection may take to send a request head (also idle).
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) header_timeout_secs: u32,
    /// Seconds a request may take to be answered (408 after); long, since
    /// opening a whole recording or building an export takes a while.
    #[arg(long, value_name = "SECS", default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) request_timeout_secs: u32,
    /// Cap on open connections (0: from the descriptor limit).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(crate) max_connections: u32,
    /// Cap on open connections from one client address (0: none).
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub(crate) max_connections_per_client: u32,
}

impl ReviewArgs {
    fn settings(&self) -> ReviewSettings {
        let mut settings = ReviewSettings {
            issuer: self.issuer.trim_end_matches('/').to_owned(),
            audience: self.audience.clone(),
            cookie_path: self.mount.trim_end_matches('/').to_owned(),
            secure_cookies: self.secure_cookies,
            session_secs: self.session_secs,
            cache_bytes: self.cache_mb.saturating_mul(1024 * 1024),
            ..ReviewSettings::default()
        };
        settings.retention.standard_days = self.retention_standard_days;
        settings.retention.flagged_days = self.retention_flagged_days;
        if settings.cookie_path.is_empty() {
            settings.cookie_path = "/".to_owned();
        }
        settings
    }
}

/// Reads an age identity file (`age-keygen` format; comments allowed).
fn load_identity(path: &std::path::Path) -> anyhow::Result<age::x25519::Identity> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading identity {}", path.display()))?;
    crate::open::identity_of(&text)
        .with_context(|| format!("{} holds no age X25519 identity", path.display()))
}

/// Runs the review service until Ctrl-C or SIGTERM.
pub async fn run(a: ReviewArgs) -> anyhow::Result<ExitCode> {
    let settings = a.settings();

    let identity = load_identity(&a.identity)?;
    let key = RecorderPublicKey::load(&a.recorder_key)
        .with_context(|| format!("reading {}", a.recorder_key.display()))?;
    let store = match (&a.store, &a.store_config) {
        (Some(dir), _) => chaperone_archive::writer::local_store(dir)?,
        (None, None) => bail!("--store <dir> or --store-config <file> is required"),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let mut config: chaperone_archive::store::StoreConfig =
                toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
            // Secrets may come from the environment instead of the file.
            for (k, v) in std::env::vars() {
                if let Some(key) = k.strip_prefix("CHAPERONE_REVIEW_STORE_") {
                    config.apply_env(key, v)?;
                }
            }
            // Fails loudly now on a wrong key, an unreachable store or no bucket.
            chaperone_archive::store::open(&config).await?
        }
    };
    let jwks = JwksFetcher::new(JwksSource::parse(&a.jwks))?;
    let verifier = jwks.fetch().await?;
    let mount = settings.cookie_path.clone();
    let svc = ReviewService::new(
        store,
        identity,
        key,
        verifier,
        settings,
        Arc::new(unix_micros),
    );
    let router = if mount == "/" {
        svc.router()
    } else {
        axum::Router::new().nest(&mount, svc.router())
    };
    let refresh = {
        let svc = svc.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(300)).await;
                match jwks.fetch().await {
                    Ok(v) => svc.set_verifier(v),
                    Err(e) => {
                        tracing::warn!(error = %e, "JWKS refresh failed; keeping the keys we have")
                    }
                }
            }
        })
    };
    let summaries = {
        let svc = svc.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                svc.flush_anonymous(false).await;
            }
        })
    };
    let sweeper = {
        let svc = svc.clone();
        let every = Duration::from_secs(a.sweep_secs.max(60));
        tokio::spawn(async move {
            loop {
                match svc.sweep().await {
                    Ok(out) => tracing::info!(outcomes = out.len(), "retention sweep done"),
                    Err(e) => tracing::error!(error = %e, "retention sweep failed"),
                }
                tokio::time::sleep(every).await;
            }
        })
    };
    let listener = tokio::net::TcpListener::bind(a.listen).await?;
    tracing::info!(listen = %listener.local_addr()?, %mount, "review service listening");
    let limits = chaperone_serve::Limits {
        header_timeout: Duration::from_secs(a.header_timeout_secs.into()),
        request_timeout: Duration::from_secs(a.request_timeout_secs.into()),
        max_connections: a.max_connections as usize,
        max_per_client: a.max_connections_per_client as usize,
        ..chaperone_serve::Limits::default()
    };
    chaperone_serve::announce_budget("review", &limits);
    chaperone_serve::serve(listener, router, limits, shutdown_signal()).await?;
    refresh.abort();
    sweeper.abort();
    summaries.abort();
    svc.flush_anonymous(true).await;
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C or SIGTERM (what a container runtime sends).
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = term => {},
    }
}
