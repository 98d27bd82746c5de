//! `recorder review`: the review service as its own process (the shell
//! around [`chaperone_recorder::replay`]). It reads the clock, fetches the
//! gateway's JWKS (again every five minutes, for key rotation), runs the
//! retention sweep periodically and serves HTTP until interrupted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use chaperone_recorder::keys::RecorderPublicKey;
use chaperone_recorder::replay::{ReviewService, ReviewSettings};
use chaperone_tokens::Verifier;

/// Unix microseconds: the only clock the review service reads.
#[allow(clippy::disallowed_methods)]
fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Where the recordings are: a directory, or a store configuration file
/// (`[store]`-style TOML: `kind = "s3"`, bucket, endpoint, keys; see README).
enum StoreArg {
    Dir(PathBuf),
    Config(PathBuf),
}

struct Args {
    listen: SocketAddr,
    store: StoreArg,
    identity: PathBuf,
    recorder_key: PathBuf,
    jwks: String,
    settings: ReviewSettings,
    sweep_secs: u64,
}

fn parse(args: &[String]) -> anyhow::Result<Args> {
    let mut listen: SocketAddr = "127.0.0.1:8090".parse()?;
    let (mut store, mut identity, mut key, mut jwks) = (None, None, None, None);
    let mut settings = ReviewSettings::default();
    let mut sweep_secs = 3600;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--listen" => listen = value()?.parse()?,
            "--store" => store = Some(StoreArg::Dir(PathBuf::from(value()?))),
            "--store-config" => store = Some(StoreArg::Config(PathBuf::from(value()?))),
            "--identity" => identity = Some(PathBuf::from(value()?)),
            "--recorder-key" => key = Some(PathBuf::from(value()?)),
            "--issuer" => settings.issuer = value()?.trim_end_matches('/').to_owned(),
            "--jwks" => jwks = Some(value()?.to_owned()),
            "--audience" => settings.audience = value()?.to_owned(),
            "--mount" => settings.cookie_path = value()?.trim_end_matches('/').to_owned(),
            "--secure-cookies" => settings.secure_cookies = true,
            "--session-secs" => settings.session_secs = value()?.parse()?,
            "--cache-mb" => settings.cache_bytes = value()?.parse::<usize>()? * 1024 * 1024,
            "--retention-standard-days" => settings.retention.standard_days = value()?.parse()?,
            "--retention-flagged-days" => settings.retention.flagged_days = value()?.parse()?,
            "--sweep-secs" => sweep_secs = value()?.parse()?,
            other => bail!("unknown option {other}"),
        }
    }
    if settings.issuer.is_empty() {
        bail!("--issuer <gateway public URL> is required");
    }
    if settings.cookie_path.is_empty() {
        settings.cookie_path = "/".to_owned();
    }
    Ok(Args {
        listen,
        store: store.context("--store <dir> or --store-config <file> is required")?,
        identity: identity.context("--identity <age identity file> is required")?,
        recorder_key: key.context("--recorder-key <file> is required")?,
        jwks: jwks.context("--jwks <url or file> is required")?,
        settings,
        sweep_secs,
    })
}

async fn fetch_jwks(source: &str) -> anyhow::Result<Verifier> {
    let doc: serde_json::Value = if source.starts_with("http://") || source.starts_with("https://")
    {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()?
            .get(source)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?
    } else {
        serde_json::from_str(&std::fs::read_to_string(source)?)?
    };
    Verifier::from_jwks(&doc).map_err(|e| anyhow::anyhow!("JWKS: {e}"))
}

/// Reads an age identity file (`age-keygen` format; comments allowed).
pub fn load_identity(path: &std::path::Path) -> anyhow::Result<age::x25519::Identity> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading identity {}", path.display()))?;
    chaperone_recorder::review::identity_of(&text)
        .with_context(|| format!("{} holds no age X25519 identity", path.display()))
}

pub async fn run(args: &[String]) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CHAPERONE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let a = parse(args)?;
    let identity = load_identity(&a.identity)?;
    let key = RecorderPublicKey::load(&a.recorder_key)
        .with_context(|| format!("reading {}", a.recorder_key.display()))?;
    let store = match &a.store {
        StoreArg::Dir(dir) => chaperone_recorder::archive::local_store(dir)?,
        StoreArg::Config(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let mut config: chaperone_recorder::store::StoreConfig =
                toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
            // Secrets may come from the environment instead of the file.
            for (k, v) in std::env::vars() {
                if let Some(key) = k.strip_prefix("CHAPERONE_REVIEW_STORE_") {
                    config.apply_env(key, v)?;
                }
            }
            // Fails loudly now on a wrong key, an unreachable store or no bucket.
            chaperone_recorder::store::open(&config).await?
        }
    };
    let verifier = fetch_jwks(&a.jwks).await?;
    let mount = a.settings.cookie_path.clone();
    let svc = ReviewService::new(
        store,
        identity,
        key,
        verifier,
        a.settings,
        Arc::new(unix_micros),
    );
    let router = if mount == "/" {
        svc.router()
    } else {
        axum::Router::new().nest(&mount, svc.router())
    };
    let refresh = {
        let svc = svc.clone();
        let source = a.jwks.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(300)).await;
                match fetch_jwks(&source).await {
                    Ok(v) => svc.set_verifier(v),
                    Err(e) => {
                        tracing::warn!(error = %e, "JWKS refresh failed; keeping the keys we have")
                    }
                }
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
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    refresh.abort();
    sweeper.abort();
    Ok(ExitCode::SUCCESS)
}
