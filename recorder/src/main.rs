//! `recorder`: the Chaperone recorder binary (`recorder --help`).
//!
//! `serve` runs the recording service (see `chaperone_recorder::service`):
//! configuration from the TOML file and `CHAPERONE_RECORDER_<SECTION>_<KEY>`
//! environment overrides; it stops on SIGTERM or Ctrl-C after writing every
//! open lesson's frames.
//!
//! `verify <lesson>` also checks the review audit log's hash chain when the
//! store has one (`audit/`); `verify --audit` checks only that.
//! `--only-segments A-B` checks a partial export: segments outside A..=B are
//! expected to be absent (everything else is checked as usual).
//!
//! `review` runs the review service (`chaperone_review`), the read side.
//! The binary needs the `review` feature (on by default); the library, which
//! the gateway embeds, never uses it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use std::io::IsTerminal as _;

use anyhow::{Context as _, bail};
use chaperone_archive::keys::{RecorderPublicKey, RecorderSigningKey};
use chaperone_archive::verify::verify_lesson;
use chaperone_protocol::LessonId;
use clap::{Parser, Subcommand};
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;

/// The Chaperone recorder: the feed service gateways stream lessons to,
/// verification of archives, and the review service.
#[derive(Debug, Parser)]
#[command(
    name = "recorder",
    version,
    after_help = "Exit status: 0 on success (and after a clean shutdown), 1 when verify \
                  finds a problem or a service stops on an error, 2 on a usage or setup error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The exit status of the long-running services.
const SERVICE_EXIT: &str = "Exit status: 0 after a clean shutdown (SIGTERM or Ctrl-C), 2 when \
                            it cannot start (configuration, keys, store) or stops on an error.";

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the recording service: the feed from gateways, sealed to the
    /// configured recipients, written to the object store.
    #[command(after_help = SERVICE_EXIT)]
    Serve {
        /// TOML configuration file (every key can also be set with
        /// CHAPERONE_RECORDER_<SECTION>_<KEY>).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print the effective configuration and exit.
        #[arg(long)]
        print_config: bool,
    },
    /// Check a lesson's archive end to end: every segment's hash, the
    /// manifest chain and signatures, gaps; and the review audit log's
    /// chain when the store has one.
    #[command(
        after_help = "Exit status: 0 when it verifies (recorded gaps are reported \
                            but do not fail it), 1 when any problem is found, 2 on a usage \
                            or setup error."
    )]
    Verify(VerifyArgs),
    /// Make a manifest-signing key and print its public half.
    #[command(
        after_help = "Exit status: 0 when the key was written, 2 when the file exists \
                            or cannot be written."
    )]
    Keygen {
        /// Where to write the new signing key (never overwritten).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Run the review service (the read side, holding the age identity).
    #[command(after_help = SERVICE_EXIT)]
    Review(chaperone_review::command::ReviewArgs),
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["lesson", "audit"])))]
struct VerifyArgs {
    /// The lesson (32 hex digits).
    #[arg(value_name = "LESSON-ID", requires = "key")]
    lesson: Option<LessonId>,
    /// The archive's directory.
    #[arg(long, value_name = "DIR")]
    store: PathBuf,
    /// The recorder's Ed25519 public key (PEM or raw base64), obtained out
    /// of band, not the copy inside the archive.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Check only the review audit log.
    #[arg(long, conflicts_with = "lesson")]
    audit: bool,
    /// A partial export: only segments A..=B are expected to be present.
    #[arg(long, value_name = "A-B", value_parser = parse_range)]
    only_segments: Option<(u64, u64)>,
}

fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s.split_once('-').ok_or("expected A-B")?;
    let a = a
        .parse()
        .map_err(|_| format!("{a} is not a segment number"))?;
    let b = b
        .parse()
        .map_err(|_| format!("{b} is not a segment number"))?;
    Ok((a, b))
}

#[allow(clippy::print_stdout)]
async fn run_verify(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    if !a.store.is_dir() {
        bail!("store directory {} does not exist", a.store.display());
    }
    let store: Arc<dyn ObjectStore> = Arc::new(
        LocalFileSystem::new_with_prefix(&a.store)
            .with_context(|| format!("opening store {}", a.store.display()))?,
    );
    let audit_present = store
        .list_with_delimiter(Some(&object_store::path::Path::from(
            chaperone_review::audit::AUDIT_PREFIX,
        )))
        .await
        .map(|l| !l.objects.is_empty())
        .unwrap_or(false);
    let audit = if a.audit || audit_present {
        Some(chaperone_review::audit::verify_log(store.as_ref()).await?)
    } else {
        None
    };
    let mut ok = audit.as_ref().is_none_or(|r| r.ok);
    // JSON: the lesson's report as before (with the audit log's under
    // "audit", and "ok" for both), or the audit log's report alone.
    let mut json = serde_json::Value::Null;
    let mut human = String::new();
    if let (Some(lesson), Some(key_path)) = (a.lesson, a.key.as_ref()) {
        let key = RecorderPublicKey::load(key_path)
            .with_context(|| format!("reading recorder public key {}", key_path.display()))?;
        let mut report = verify_lesson(store.as_ref(), &lesson, &key).await;
        if let Some((first, last)) = a.only_segments {
            // A partial export: the segments outside the range are meant to be absent.
            report.findings.retain(|f| {
                !matches!(f, chaperone_archive::verify::Finding::SegmentMissing { index }
                    if !(first..=last).contains(index))
            });
            let clean = report.problems().next().is_none();
            report.ok = clean;
            human.push_str(&format!(
                "partial export: segments {first}..={last} checked; the others are not included\n"
            ));
        }
        ok &= report.ok;
        human.push_str(&report.to_human());
        json = serde_json::to_value(&report)?;
    }
    if let Some(r) = &audit {
        human.push_str(&r.to_human());
        if json.is_null() {
            json = serde_json::to_value(r)?;
        } else {
            json["audit"] = serde_json::to_value(r)?;
        }
    }
    json["ok"] = serde_json::Value::Bool(ok);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print!("{human}");
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[allow(clippy::print_stdout)]
fn run_keygen(out: PathBuf) -> anyhow::Result<ExitCode> {
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
async fn run_serve(config_path: Option<PathBuf>, print: bool) -> anyhow::Result<ExitCode> {
    use chaperone_recorder::service::config::ServiceConfig;
    let config = ServiceConfig::load(config_path.as_deref(), std::env::vars())?;
    if print {
        print!("{}", config.to_toml());
        return Ok(ExitCode::SUCCESS);
    }
    init_logging();
    let limits = config.http.limits();
    chaperone_serve::announce_budget("recorder", &limits);
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
            let serving = chaperone_serve::serve(metrics, router, limits, std::future::pending());
            if let Err(e) = serving.await {
                tracing::error!(error = %e, "metrics listener stopped");
            }
        });
    }
    let router = service.router();
    let server = chaperone_serve::serve(listener, router, limits, shutdown_signal());
    server.await.context("serving")?;
    tracing::info!("shutting down: writing every open lesson");
    service.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Logs to stderr, filtered by `CHAPERONE_LOG` (default `info`), with colour
/// codes only for a person at a terminal.
fn init_logging() {
    let filter = std::env::var("CHAPERONE_LOG").unwrap_or_else(|_| "info".to_owned());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve {
            config,
            print_config,
        } => run_serve(config, print_config).await,
        Command::Verify(args) => run_verify(args).await,
        Command::Keygen { out } => run_keygen(out),
        Command::Review(args) => {
            init_logging();
            chaperone_review::command::run(args).await
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("recorder: {e:#}");
            ExitCode::from(2)
        }
    }
}
