//! `recorder` binary.
//!
//! ```text
//! recorder serve [--config FILE] [--print-config]
//! recorder verify <lesson-id> --store <dir> --key <recorder-public-key> [--json] [--only-segments A-B]
//! recorder verify --audit --store <dir> [--json]
//! recorder keygen --out <signing-key-file>
//! recorder review --store <dir> --identity <file> --recorder-key <file> --issuer <gateway-url>
//!                 --jwks <url-or-file> [--listen 127.0.0.1:8090] [--mount /review] [...]
//! ```
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
  recorder verify <lesson-id> --store <dir> --key <recorder-public-key-file> [--json] [--only-segments A-B]
  recorder verify --audit --store <dir> [--json]
  recorder keygen --out <signing-key-file>
  recorder review (--store <dir> | --store-config <file>) --identity <age-identity-file> --recorder-key <public-key-file>
                  --issuer <gateway-public-url> --jwks <url-or-file> [--listen 127.0.0.1:8090]
                  [--mount /review] [--audience chaperone-review] [--secure-cookies]
                  [--session-secs 1800] [--cache-mb 512] [--retention-standard-days 30]
                  [--retention-flagged-days 365] [--sweep-secs 3600]";

struct VerifyArgs {
    lesson: Option<LessonId>,
    store: PathBuf,
    key: Option<PathBuf>,
    json: bool,
    audit_only: bool,
    only_segments: Option<(u64, u64)>,
}

fn parse_verify(args: &[String]) -> anyhow::Result<VerifyArgs> {
    let mut lesson = None;
    let mut store = None;
    let mut key = None;
    let mut json = false;
    let mut audit_only = false;
    let mut only_segments = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--store" => store = Some(PathBuf::from(it.next().context("--store needs a value")?)),
            "--key" => key = Some(PathBuf::from(it.next().context("--key needs a value")?)),
            "--json" => json = true,
            "--audit" => audit_only = true,
            "--only-segments" => {
                let v = it.next().context("--only-segments needs A-B")?;
                let (a, b) = v.split_once('-').context("--only-segments needs A-B")?;
                only_segments = Some((a.parse()?, b.parse()?));
            }
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
    if !audit_only {
        lesson.as_ref().context("missing <lesson-id>")?;
        key.as_ref().context("missing --key <file>")?;
    }
    Ok(VerifyArgs {
        lesson,
        store: store.context("missing --store <dir>")?,
        key,
        json,
        audit_only,
        only_segments,
    })
}

#[allow(clippy::print_stdout)]
async fn run_verify(args: &[String]) -> anyhow::Result<ExitCode> {
    let a = parse_verify(args)?;
    if !a.store.is_dir() {
        bail!("store directory {} does not exist", a.store.display());
    }
    let store: Arc<dyn ObjectStore> = Arc::new(
        LocalFileSystem::new_with_prefix(&a.store)
            .with_context(|| format!("opening store {}", a.store.display()))?,
    );
    let audit_present = store
        .list_with_delimiter(Some(&object_store::path::Path::from(
            chaperone_recorder::audit::AUDIT_PREFIX,
        )))
        .await
        .map(|l| !l.objects.is_empty())
        .unwrap_or(false);
    let audit = if a.audit_only || audit_present {
        Some(chaperone_recorder::audit::verify_log(store.as_ref()).await?)
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
                !matches!(f, chaperone_recorder::verify::Finding::SegmentMissing { index }
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

mod review_cmd;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => run_serve(&args[1..]).await,
        Some("verify") => run_verify(&args[1..]).await,
        Some("keygen") => run_keygen(&args[1..]),
        Some("review") => review_cmd::run(&args[1..]).await,
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
