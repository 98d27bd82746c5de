//! `gateway`: the Chaperone gateway binary.
//!
//! `gateway --dev` runs everything on embedded defaults on loopback;
//! `gateway --config chaperone.toml` runs with a configuration file (plus
//! `CHAPERONE_*` environment overrides). See the README.

use std::io::IsTerminal as _;

use anyhow::{Context, Result};
use chaperone_gateway::app::App;
use chaperone_gateway::config::{Config, LogFormat, StoreKind};
use chaperone_gateway::http;
use chaperone_gateway::store::{LocalStore, RedisStore, RedisStoreConfig, Store};
use clap::Parser;

/// Chaperone live-lesson safeguarding gateway.
///
/// Every configuration key can be overridden with CHAPERONE_<SECTION>_<KEY>,
/// e.g. CHAPERONE_HTTP_LISTEN=127.0.0.1:9000. See README.md for every key.
#[derive(Debug, Parser)]
#[command(
    name = "gateway",
    version,
    after_help = "Exit status: 0 after a clean shutdown (SIGTERM or Ctrl-C), 1 when the \
                  gateway cannot start or stops on an error, 2 on a usage error."
)]
#[command(group(clap::ArgGroup::new("mode").required(true).multiple(true).args(["dev", "config"])))]
struct Args {
    /// Run on embedded defaults: loopback only, in-memory state, the
    /// development identity provider. Never with real pupils.
    #[arg(long)]
    dev: bool,
    /// Run with this TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<String>,
    /// Print the effective configuration and exit.
    #[arg(long)]
    print_config: bool,
}

fn load_config(args: &Args) -> Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    config.dev = args.dev;
    config.apply_env(std::env::vars())?;
    config.validate()?;
    Ok(config)
}

fn init_logging(config: &Config) {
    let filter = std::env::var("CHAPERONE_LOG").unwrap_or_else(|_| config.log.filter.clone());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in log files.
        .with_ansi(std::io::stderr().is_terminal());
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn open_store(config: &Config) -> Result<Store> {
    Ok(match config.store.kind {
        StoreKind::Memory => Store::Local(LocalStore::new()),
        StoreKind::Redis => {
            let mut redis = RedisStoreConfig::new(config.store.redis_url.clone());
            redis.prefix = config.store.key_prefix.clone();
            redis.timeout = std::time::Duration::from_millis(config.store.timeout_ms);
            Store::Redis(RedisStore::open(redis)?)
        }
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.dev && !cfg!(feature = "dev") {
        anyhow::bail!(
            "this gateway is built without development mode; build it with `--features dev` to use --dev"
        );
    }
    let config = load_config(&args)?;
    if args.print_config {
        // Printing the configuration is this flag's whole purpose.
        #[allow(clippy::print_stdout)]
        {
            print!("{}", config.to_toml());
        }
        return Ok(());
    }
    init_logging(&config);
    let limits = config.http.limits();
    chaperone_serve::announce_budget("gateway", &limits);

    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("listening on {}", config.http.listen))?;
    let addr = listener.local_addr()?;
    let public_url = if config.http.public_url.is_empty() {
        // --dev only (validate() requires a public URL otherwise).
        format!("http://{addr}")
    } else {
        config.http.public_url.clone()
    };
    let store = open_store(&config)?;
    let app = App::build(&config, store, public_url.clone()).await?;
    if config.dev {
        tracing::warn!("development mode: never use --dev with real pupils");
        #[cfg(feature = "dev")]
        if app.devidp.is_some() {
            tracing::warn!(
                "development identity provider at {public_url}/dev-idp: it signs anyone in as any demo person"
            );
        }
    }
    tracing::info!(%addr, store = ?config.store.kind, media = %app.media.advertised(), "Chaperone gateway listening on {public_url}/");
    if let Some(metrics_addr) = config.metrics.address()? {
        let listener = tokio::net::TcpListener::bind(metrics_addr)
            .await
            .with_context(|| format!("metrics listener on {metrics_addr}"))?;
        tracing::info!(addr = %listener.local_addr()?, "metrics at /metrics");
        let router = app.metrics_router();
        tokio::spawn(async move {
            let serving = chaperone_serve::serve(listener, router, limits, std::future::pending());
            if let Err(e) = serving.await {
                tracing::error!(error = %e, "metrics listener stopped");
            }
        });
    }
    let router = app.router.clone();
    http::run(listener, router, limits, shutdown_signal()).await?;
    let mut app = app;
    app.shutdown().await;
    Ok(())
}
