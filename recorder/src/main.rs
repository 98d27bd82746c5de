//! `recorder` binary.
//!
//! ```text
//! recorder serve [--config FILE] [--print-config]
//! recorder verify <lesson-id> --store <dir> --key <recorder-public-key> [--json]
//! recorder keygen --out <signing-key-file>
//! ```
//!
//! `serve` runs the recording service (see `chaperone_recorder::service`):
//! configuration from the TOML file and `CHAPERONE_RECORDER_<SECTION>_<KEY>`
//! environment overrides; it stops on SIGTERM or Ctrl-C after writing every
//! open lesson's frames.
//!
//! `verify` exits 0 when the lesson verifies (recorded gaps are reported but
//! do not fail it), 1 when any problem is found, 2 on a usage or setup error.
//! `--key` is a file holding the recorder's Ed25519 public key (PEM or raw
//! base64), obtained out of band, not the copy inside the archive.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use chaperone_protocol::LessonId;
use chaperone_recorder::keys::{RecorderPublicKey, RecorderSigningKey};
use chaperone_recorder::verify::verify_lesson;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;

const USAGE: &str = "usage:
  recorder serve [--config FILE] [--print-config]
  recorder verify <lesson-id> --store <dir> --key <recorder-public-key-file> [--json]
  recorder keygen --out <signing-key-file>";

struct VerifyArgs {
    lesson: LessonId,
    store: PathBuf,
    key: PathBuf,
    json: bool,
}

fn parse_verify(args: &[String]) -> anyhow::Result<VerifyArgs> {
    let mut lesson = None;
    let mut store = None;
    let mut key = None;
    let mut json = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--store" => store = Some(PathBuf::from(it.next().context("--store needs a value")?)),
            "--key" => key = Some(PathBuf::from(it.next().context("--key needs a value")?)),
            "--json" => json = true,
            s if s.starts_with("--") => bail!("unknown option {s}"),
            s if lesson.is_none() => {
                lesson = Some(
                    s.parse::<LessonId>()
                        .map_err(|_| anyhow::anyhow!("lesson id must be 32 hex digits: {s}"))?,
                )
            }
            s => bail!("unexpected argument {s}"),
        }
    }
    Ok(VerifyArgs {
        lesson: lesson.context("missing <lesson-id>")?,
        store: store.context("missing --store <dir>")?,
        key: key.context("missing --key <file>")?,
        json,
    })
}

#[allow(clippy::print_stdout)]
async fn run_verify(args: &[String]) -> anyhow::Result<ExitCode> {
    let a = parse_verify(args)?;
    let key = RecorderPublicKey::load(&a.key)
        .with_context(|| format!("reading recorder public key {}", a.key.display()))?;
    if !a.store.is_dir() {
        bail!("store directory {} does not exist", a.store.display());
    }
    let store: Arc<dyn ObjectStore> = Arc::new(
        LocalFileSystem::new_with_prefix(&a.store)
            .with_context(|| format!("opening store {}", a.store.display()))?,
    );
    let report = verify_lesson(store.as_ref(), &a.lesson, &key).await;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_human());
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[allow(clippy::print_stdout)]
fn run_keygen(args: &[String]) -> anyhow::Result<ExitCode> {
    let out = match args {
        [flag, path] if flag == "--out" => PathBuf::from(path),
        _ => bail!("keygen needs --out <file>"),
    };
    if out.exists() {
        bail!("{} exists; not overwriting a signing key", out.display());
    }
    let key = RecorderSigningKey::load_or_generate(&out)?;
    print!("{}", key.public().to_pem());
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[allow(clippy::print_stdout)]
async fn run_serve(args: &[String]) -> anyhow::Result<ExitCode> {
    use chaperone_recorder::service::config::ServiceConfig;
    let mut config_path = None;
    let mut print = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" => {
                config_path = Some(PathBuf::from(it.next().context("--config needs a file")?))
            }
            "--print-config" => print = true,
            other => bail!("unknown option {other}"),
        }
    }
    let config = ServiceConfig::load(config_path.as_deref(), std::env::vars())?;
    if print {
        print!("{}", config.to_toml());
        return Ok(ExitCode::SUCCESS);
    }
    let filter = std::env::var("CHAPERONE_LOG").unwrap_or_else(|_| "info".to_owned());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let service = chaperone_recorder::service::start(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("listening on {}", config.http.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "recorder listening (feed at /feed)");
    if !config.http.metrics_listen.is_empty() {
        let metrics = tokio::net::TcpListener::bind(&config.http.metrics_listen)
            .await
            .with_context(|| format!("metrics listener on {}", config.http.metrics_listen))?;
        let router = service.metrics_router();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(metrics, router).await {
                tracing::error!(error = %e, "metrics listener stopped");
            }
        });
    }
    let router = service.router();
    let server = axum::serve(listener, router).with_graceful_shutdown(shutdown_signal());
    server.await.context("serving")?;
    tracing::info!("shutting down: writing every open lesson");
    service.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => run_serve(&args[1..]).await,
        Some("verify") => run_verify(&args[1..]).await,
        Some("keygen") => run_keygen(&args[1..]),
        _ => Err(anyhow::anyhow!("{USAGE}")),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("recorder: {e:#}");
            ExitCode::from(2)
        }
    }
}
