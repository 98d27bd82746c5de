//! The real `recorder serve` binary as a child process, configured as in
//! production (segments sealed with age to a fresh review identity,
//! manifests signed with a key of its own, a local or S3 store, a spool),
//! trusting the given gateway's JWKS for the feed's service tokens; for the
//! whole-stack recording tests and for the load generator's recording-cost
//! runs. The one place that knows how `recorder serve` is launched.
//!
//! A [`RecorderSetup`] is where a recorder runs: its directory (signing
//! key, store, spool), its two loopback ports and its review identity. It
//! outlives the processes started from it, so a recorder killed with
//! SIGKILL can be replaced by another on the same store and ports, as in
//! production. [`Recorder`] is a setup and one process, for the callers
//! that start it once.
//!
//! It never reads what the recorder wrote (that is the product crates'
//! job: `chaperone_archive::verify`, `chaperone_review::open`), and never
//! shares a directory between two setups.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{Context, Result, bail};
#[cfg(feature = "archive")]
use chaperone_archive::store::{StoreConfig, StoreKind};

use crate::clock;
use crate::gateway::http_get;
use crate::process::{ChildGuard, Launch, binary, free_port, port_open, scratch_dir};

/// How a recorder is started, apart from its directory, ports and keys
/// (those belong to the [`RecorderSetup`]). Change it between two starts
/// of one setup to restart with other settings.
#[derive(Debug, Clone)]
pub struct RecorderSettings {
    /// The gateway's public URL: the issuer of the feed's service tokens,
    /// its JWKS under `/.well-known/jwks.json`. The gateway need not be up
    /// yet: its keys are fetched when a token first names one.
    pub gateway_url: String,
    /// `archive.segment_secs`; `None`: the recorder's default.
    pub segment_secs: Option<u64>,
    /// A spool under the setup's directory (`store.spool_dir`), as deployed.
    pub spool: bool,
    /// Extra `CHAPERONE_RECORDER_*` (or `CHAPERONE_LOG`) settings, applied
    /// after the setup's own, so they win.
    pub env: Vec<(String, String)>,
    /// Pin it to this CPU with `taskset`.
    pub cpu: Option<usize>,
    /// Show its log on stderr (at `CHAPERONE_LOG=warn` unless [`Self::env`]
    /// says otherwise); off: discarded.
    pub log: bool,
    /// The `recorder` binary; `None`: the workspace's ([`binary`]).
    pub binary: Option<PathBuf>,
    /// Longest wait for it to listen and answer `/readyz`.
    pub ready_timeout: Duration,
}

impl RecorderSettings {
    /// A recorder for the gateway at `gateway_url`: the recorder's default
    /// segment length, a spool, its log shown, on no particular CPU.
    pub fn new(gateway_url: &str) -> Self {
        Self {
            gateway_url: gateway_url.to_owned(),
            segment_secs: None,
            spool: true,
            env: Vec::new(),
            cpu: None,
            log: true,
            binary: None,
            ready_timeout: Duration::from_secs(30),
        }
    }

    /// Adds one `CHAPERONE_RECORDER_*` (or other) setting.
    pub fn env(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    /// Writes to the S3 store `config` names instead of the filesystem,
    /// spooling under the setup's directory while it is down (the spool is
    /// switched on; `config.spool_dir` is not used, `spool_max_bytes` is).
    #[cfg(feature = "archive")]
    pub fn s3_store(&mut self, config: &StoreConfig) -> &mut Self {
        self.spool = true;
        self.env.extend(store_env(config));
        self
    }
}

/// `CHAPERONE_RECORDER_STORE_*` for an S3 store: everything in `config`
/// but the filesystem directory and the spool directory (the setup's own).
#[cfg(feature = "archive")]
pub fn store_env(config: &StoreConfig) -> Vec<(String, String)> {
    let c = config;
    let kind = match c.kind {
        StoreKind::Fs => "fs",
        StoreKind::S3 => "s3",
    };
    [
        ("KIND", kind.to_owned()),
        ("BUCKET", c.bucket.clone()),
        ("ENDPOINT", c.endpoint.clone()),
        ("REGION", c.region.clone()),
        ("ACCESS_KEY_ID", c.access_key_id.clone()),
        ("SECRET_ACCESS_KEY", c.secret_access_key.clone()),
        ("ALLOW_HTTP", c.allow_http.to_string()),
        ("PREFIX", c.prefix.clone()),
        ("TIMEOUT_MS", c.timeout_ms.to_string()),
        ("CONNECT_TIMEOUT_MS", c.connect_timeout_ms.to_string()),
        ("RETRY_ATTEMPTS", c.retry_attempts.to_string()),
        (
            "RETRY_INITIAL_BACKOFF_MS",
            c.retry_initial_backoff_ms.to_string(),
        ),
        ("RETRY_MAX_BACKOFF_MS", c.retry_max_backoff_ms.to_string()),
        ("HEALTH_INTERVAL_MS", c.health_interval_ms.to_string()),
        ("SPOOL_MAX_BYTES", c.spool_max_bytes.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (format!("CHAPERONE_RECORDER_STORE_{k}"), v))
    .collect()
}

/// Where a recorder runs: a directory of its own (removed when the setup
/// is dropped), two loopback ports, a fresh review identity, and its
/// [`RecorderSettings`]. Start it with [`RecorderSetup::start`], again
/// after a kill, on the same store and ports.
pub struct RecorderSetup {
    /// How its processes are started; change it between starts.
    pub settings: RecorderSettings,
    dir: PathBuf,
    port: u16,
    metrics_port: u16,
    identity: age::x25519::Identity,
}

impl std::fmt::Debug for RecorderSetup {
    // By hand: the review identity is a secret (and age keeps it out of
    // `Debug`); its recipient says which one it is.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecorderSetup")
            .field("settings", &self.settings)
            .field("dir", &self.dir)
            .field("port", &self.port)
            .field("metrics_port", &self.metrics_port)
            .field("recipient", &self.recipient())
            .finish()
    }
}

impl Drop for RecorderSetup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl RecorderSetup {
    /// A fresh directory, two free ports and a review identity; nothing
    /// started yet.
    pub fn new(settings: RecorderSettings) -> Result<Self> {
        Ok(Self {
            settings,
            dir: scratch_dir("recorder")?,
            port: free_port()?,
            metrics_port: free_port()?,
            identity: age::x25519::Identity::generate(),
        })
    }

    /// Starts `recorder serve` and waits until it listens on both ports
    /// and answers `/readyz` (blocking; from async code, [`Self::spawn`]
    /// and poll [`RecorderProcess::ready`]).
    pub fn start(&self) -> Result<RecorderProcess> {
        let mut process = self.spawn()?;
        process.wait_ready(self.settings.ready_timeout)?;
        Ok(process)
    }

    /// Starts `recorder serve` without waiting for it.
    pub fn spawn(&self) -> Result<RecorderProcess> {
        let s = &self.settings;
        let program = match &s.binary {
            Some(path) => path.clone(),
            None => binary("recorder")?,
        };
        let mut launch = Launch::new("recorder", program)
            .arg("serve")
            .env(
                "CHAPERONE_RECORDER_HTTP_LISTEN",
                format!("127.0.0.1:{}", self.port),
            )
            .env(
                "CHAPERONE_RECORDER_HTTP_METRICS_LISTEN",
                format!("127.0.0.1:{}", self.metrics_port),
            )
            .env(
                "CHAPERONE_RECORDER_GATEWAY_ISSUERS",
                format!("[\"{}\"]", s.gateway_url),
            )
            .env(
                "CHAPERONE_RECORDER_GATEWAY_JWKS_URL",
                format!("{}/.well-known/jwks.json", s.gateway_url),
            )
            .env(
                "CHAPERONE_RECORDER_ARCHIVE_RECIPIENTS",
                format!("[\"{}\"]", self.recipient()),
            )
            .env(
                "CHAPERONE_RECORDER_ARCHIVE_SIGNING_KEY_FILE",
                self.signing_key_file(),
            )
            .env("CHAPERONE_RECORDER_STORE_DIR", self.dir.join("store"))
            .env("CHAPERONE_LOG", "warn")
            .cpu(s.cpu)
            .log(s.log)
            // Its own directory, kept across restarts (the setup removes it).
            .current_dir(self.dir.clone());
        if let Some(secs) = s.segment_secs {
            launch = launch.env("CHAPERONE_RECORDER_ARCHIVE_SEGMENT_SECS", secs.to_string());
        }
        if s.spool {
            launch = launch.env("CHAPERONE_RECORDER_STORE_SPOOL_DIR", self.spool_dir());
        }
        let child = launch.envs(s.env.iter().cloned()).spawn()?;
        Ok(RecorderProcess {
            child,
            port: self.port,
            metrics_port: self.metrics_port,
        })
    }

    /// Its feed URL (`ws://127.0.0.1:<port>`): what the gateway's
    /// `recorder.urls` names.
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// The feed and health port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The metrics listener's port.
    pub fn metrics_port(&self) -> u16 {
        self.metrics_port
    }

    /// `http://127.0.0.1:<metrics port>/metrics`.
    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.metrics_port)
    }

    /// Its `/metrics` text now (a blocking request; from async code, fetch
    /// [`Self::metrics_url`] with an async client).
    pub fn scrape(&self) -> Result<String> {
        let (status, body) = http_get(self.metrics_port, "/metrics")
            .with_context(|| format!("scraping {}", self.metrics_url()))?;
        if status != 200 {
            bail!("{} answered {status}", self.metrics_url());
        }
        Ok(body)
    }

    /// Its directory (signing key, store, spool).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Where a filesystem store writes the archive.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.join("store")
    }

    /// Its spool directory (used when [`RecorderSettings::spool`] is on).
    pub fn spool_dir(&self) -> PathBuf {
        self.dir.join("spool")
    }

    /// Its manifest signing key (PEM; made by the recorder at first start).
    pub fn signing_key_file(&self) -> PathBuf {
        self.dir.join("signing.pem")
    }

    /// The review identity its segments are sealed to.
    pub fn identity(&self) -> &age::x25519::Identity {
        &self.identity
    }

    /// The review identity as text (`AGE-SECRET-KEY-1…`).
    pub fn identity_secret(&self) -> String {
        use age::secrecy::ExposeSecret as _;
        self.identity.to_string().expose_secret().to_owned()
    }

    /// The recipient it seals to (`age1…`).
    pub fn recipient(&self) -> String {
        self.identity.to_public().to_string()
    }
}

/// A running `recorder serve`, killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct RecorderProcess {
    child: ChildGuard,
    port: u16,
    metrics_port: u16,
}

impl RecorderProcess {
    /// Its process id (`None` once stopped).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Fails if it has exited.
    pub fn check_running(&mut self) -> Result<()> {
        self.child.check_running()
    }

    /// Whether it is ready now: both ports listen and `/readyz` answers
    /// 200. Fails if it has exited.
    pub fn ready(&mut self) -> Result<bool> {
        self.child.check_running()?;
        Ok(port_open(self.port)
            && port_open(self.metrics_port)
            && matches!(http_get(self.port, "/readyz"), Ok((200, _))))
    }

    /// Waits until it is [ready](Self::ready), at most `timeout`.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = clock::now() + timeout;
        while !self.ready()? {
            if clock::now() > deadline {
                bail!(
                    "recorder not ready on 127.0.0.1:{} within {timeout:?}",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// `kill -9`: whatever it had not made durable is lost with it.
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// SIGTERM, and waits (at most `timeout`) for it to exit: a graceful
    /// shutdown, which seals and stores what it holds first.
    pub fn terminate(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        self.child.terminate(timeout)
    }
}

/// A recorder started once: its setup and its process (stopped before its
/// directory is removed).
#[derive(Debug)]
pub struct Recorder {
    // Declared first: dropped (killed) before the setup removes the directory.
    process: RecorderProcess,
    setup: RecorderSetup,
}

impl Recorder {
    /// `recorder serve` for the gateway at `gateway_url` (its public URL),
    /// with a spool and extra `CHAPERONE_RECORDER_*` settings; ready when
    /// this returns.
    pub fn start(gateway_url: &str, env: &[(&str, &str)]) -> Result<Self> {
        let mut settings = RecorderSettings::new(gateway_url);
        for (k, v) in env {
            settings.env(k, *v);
        }
        Self::start_with(settings)
    }

    /// `recorder serve` with `settings`; ready when this returns.
    pub fn start_with(settings: RecorderSettings) -> Result<Self> {
        let setup = RecorderSetup::new(settings)?;
        let process = setup.start()?;
        Ok(Self { process, setup })
    }

    /// Its setup: URLs, ports, directories, identity.
    pub fn setup(&self) -> &RecorderSetup {
        &self.setup
    }

    /// Its process.
    pub fn process(&mut self) -> &mut RecorderProcess {
        &mut self.process
    }

    /// The feed URL the gateway's `recorder.urls` names.
    pub fn url(&self) -> String {
        self.setup.url()
    }

    /// The feed and health port.
    pub fn port(&self) -> u16 {
        self.setup.port()
    }

    /// The metrics listener's port.
    pub fn metrics_port(&self) -> u16 {
        self.setup.metrics_port()
    }

    /// Where the archive is written.
    pub fn store_dir(&self) -> PathBuf {
        self.setup.store_dir()
    }

    /// Its process id.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Fails if it has exited.
    pub fn check_running(&mut self) -> Result<()> {
        self.process.check_running()
    }
}

/// One unlabelled sample (`name value`) of a Prometheus text exposition
/// such as [`RecorderSetup::scrape`] returns, if present.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse().ok()).flatten()
    })
}

/// A fresh review identity (`AGE-SECRET-KEY-1…`) and its public recipient
/// (`age1…`): what a recorder under test seals to.
pub fn review_identity() -> (String, String) {
    use age::secrecy::ExposeSecret as _;
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    (identity.to_string().expose_secret().to_owned(), recipient)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unlabelled_sample_is_read_and_labelled_ones_are_not_it() {
        let text = "\
# HELP chaperone_recorder_store_up Whether the store answers
chaperone_recorder_store_up 0
chaperone_recorder_spool_bytes 1234
chaperone_recorder_segment_durable_seconds_bucket{le=\"+Inf\"} 3
";
        assert_eq!(metric(text, "chaperone_recorder_store_up"), Some(0.0));
        assert_eq!(metric(text, "chaperone_recorder_spool_bytes"), Some(1234.0));
        assert_eq!(
            metric(text, "chaperone_recorder_segment_durable_seconds_bucket"),
            None
        );
        assert_eq!(metric(text, "chaperone_recorder_frames_total"), None);
    }

    #[cfg(feature = "archive")]
    #[test]
    fn an_s3_store_maps_to_the_recorders_environment() {
        let config = StoreConfig {
            kind: StoreKind::S3,
            bucket: "b".to_owned(),
            endpoint: "http://127.0.0.1:9000".to_owned(),
            allow_http: true,
            spool_max_bytes: 256 << 20,
            ..StoreConfig::default()
        };
        let env = store_env(&config);
        let get = |k: &str| {
            env.iter()
                .find(|(n, _)| n == &format!("CHAPERONE_RECORDER_STORE_{k}"))
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("KIND"), Some("s3"));
        assert_eq!(get("BUCKET"), Some("b"));
        assert_eq!(get("ENDPOINT"), Some("http://127.0.0.1:9000"));
        assert_eq!(get("ALLOW_HTTP"), Some("true"));
        assert_eq!(get("SPOOL_MAX_BYTES"), Some("268435456"));
        // The spool is the setup's, never the configuration's.
        assert_eq!(get("SPOOL_DIR"), None);
        assert_eq!(get("DIR"), None);
        let mut settings = RecorderSettings::new("http://127.0.0.1:1");
        settings.spool = false;
        settings.s3_store(&config);
        assert!(settings.spool, "an S3 store spools while it is down");
    }

    #[test]
    fn a_setup_owns_its_directory() {
        let setup = RecorderSetup::new(RecorderSettings::new("http://127.0.0.1:1")).unwrap();
        let dir = setup.dir().to_owned();
        assert!(dir.is_dir());
        assert_ne!(setup.port(), setup.metrics_port());
        assert!(setup.url().starts_with("ws://127.0.0.1:"));
        assert!(setup.recipient().starts_with("age1"));
        assert!(setup.identity_secret().starts_with("AGE-SECRET-KEY-1"));
        drop(setup);
        assert!(!dir.exists(), "removed with the setup");
    }
}
