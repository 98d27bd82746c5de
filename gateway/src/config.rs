//! The gateway's configuration: one TOML file plus environment overrides,
//! with defaults for every key and a `validate()` that refuses unsafe or
//! inconsistent settings before anything starts.
//!
//! Environment overrides are `CHAPERONE_<SECTION>_<KEY>` in upper case, e.g.
//! `CHAPERONE_HTTP_LISTEN=127.0.0.1:9000` or
//! `CHAPERONE_STORE_REDIS_URL=redis://10.0.0.5:6379/`. Every key is listed,
//! with its default, in the README's configuration table.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use chaperone_lesson::LessonConfig;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is invalid or has an unknown key.
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// An environment override has a value of the wrong type.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        message: String,
    },
    /// The values are inconsistent or unsafe.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Development mode (`--dev`): loopback only, development identity provider.
    #[serde(skip)]
    pub dev: bool,
    /// The HTTP listener.
    pub http: HttpConfig,
    /// The state store.
    pub store: StoreConfig,
    /// Lesson rules' timings and limits.
    pub lesson: LessonSettings,
    /// Logging.
    pub log: LogConfig,
    /// The school's OpenID Connect provider.
    pub oidc: OidcSettings,
    /// Login sessions.
    pub session: SessionSettings,
    /// The gateway's signing keys and room tokens.
    pub tokens: TokenSettings,
    /// The media plane (SFU).
    pub media: MediaSettings,
    /// Where recordings go: remote recorders, or the embedded one.
    pub recorder: RecorderSettings,
    /// The feed to the recorder: buffering and spooling.
    pub feed: FeedSettingsConfig,
    /// TURN relays for clients that cannot reach the media port directly.
    pub turn: TurnSettings,
    /// The Prometheus endpoint.
    pub metrics: MetricsSettings,
}

/// `[metrics]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// Address of the separate listener serving `/metrics`; empty: no metrics listener.
    pub listen: String,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9100".to_owned(),
        }
    }
}

impl MetricsSettings {
    /// The listener address, if metrics are served.
    pub fn address(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.listen.is_empty() {
            return Ok(None);
        }
        self.listen
            .parse()
            .map(Some)
            .map_err(|e| ConfigError::Invalid(format!("metrics.listen: {e}")))
    }
}

/// `[turn]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TurnSettings {
    /// TURN URLs handed to browsers (`turn:turn.school.example:3478?transport=udp`); empty: no TURN.
    pub urls: Vec<String>,
    /// The secret shared with coturn (`static-auth-secret`).
    pub shared_secret: String,
    /// Lifetime of the credentials handed out, seconds.
    pub ttl_secs: u64,
}

impl Default for TurnSettings {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            shared_secret: String::new(),
            ttl_secs: 3600,
        }
    }
}

/// `[media]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaSettings {
    /// The one UDP socket every participant's media uses (port 0: any free port).
    pub udp_listen: SocketAddr,
    /// Address and port put in answers as the only candidate (the public
    /// address behind NAT); empty: `udp_listen`, which must then be concrete.
    pub advertised: String,
}

impl Default for MediaSettings {
    fn default() -> Self {
        Self {
            udp_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertised: String::new(),
        }
    }
}

impl MediaSettings {
    /// The advertised address, if set.
    pub fn advertised(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.advertised.is_empty() {
            return Ok(None);
        }
        self.advertised
            .parse()
            .map(Some)
            .map_err(|e| ConfigError::Invalid(format!("media.advertised: {e}")))
    }
}

/// `[feed]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeedSettingsConfig {
    /// Unacknowledged bytes one lesson keeps in memory before spooling to disk.
    pub buffer_bytes: u64,
    /// Where spooled frames go (empty: `chaperone-feed` in the system's temporary directory).
    pub spool_dir: String,
    /// Spooled bytes per lesson past which its recording counts as lost (pupils held; nothing dropped).
    pub spool_max_bytes: u64,
    /// Silence from the recorder after which its connection counts as lost, milliseconds.
    pub ack_timeout_ms: u64,
}

impl Default for FeedSettingsConfig {
    fn default() -> Self {
        Self {
            buffer_bytes: 64 * 1024 * 1024,
            spool_dir: String::new(),
            spool_max_bytes: 8 * 1024 * 1024 * 1024,
            ack_timeout_ms: 5000,
        }
    }
}

impl FeedSettingsConfig {
    /// The spool directory.
    pub fn spool_dir(&self) -> std::path::PathBuf {
        if self.spool_dir.is_empty() {
            std::env::temp_dir().join("chaperone-feed")
        } else {
            self.spool_dir.clone().into()
        }
    }
}

/// `[recorder]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecorderSettings {
    /// Recorder services (`ws://` or `wss://` base URLs; `recorder serve`).
    /// Empty: the recorder runs inside the gateway with the settings below.
    pub urls: Vec<String>,
    /// Directory recordings are written to (dev default: `.chaperone-dev/recordings`).
    pub dir: String,
    /// age recipients (`age1...`) segments are sealed to: the review key and
    /// any escrow keys. Dev default: a generated identity kept in
    /// `.chaperone-dev/review-identity.txt`.
    pub recipients: Vec<String>,
    /// PEM Ed25519 key signing manifests (dev default: generated next to the recordings).
    pub signing_key_file: String,
    /// Length of one sealed segment, seconds.
    pub segment_secs: u64,
}

impl Default for RecorderSettings {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            dir: String::new(),
            recipients: Vec::new(),
            signing_key_file: String::new(),
            segment_secs: 10,
        }
    }
}

/// `[oidc]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcSettings {
    /// The provider's issuer URL, exactly as its discovery document states it.
    /// Empty with `--dev`: the built-in development provider at `/dev-idp`.
    pub issuer: String,
    /// Our client id at the provider.
    pub client_id: String,
    /// Our client secret.
    pub client_secret: String,
    /// Scopes requested (`openid` is always sent).
    pub scopes: Vec<String>,
    /// How far an ID token's `iat` may be from our clock, seconds.
    pub max_iat_skew_secs: u64,
    /// Timeout of one request to the provider, milliseconds.
    pub http_timeout_ms: u64,
    /// Recording replay needs an MFA login at most this old, seconds.
    pub step_up_max_age_secs: u64,
    /// How claims become roles and classes.
    pub claims: crate::auth::ClaimMapping,
}

impl Default for OidcSettings {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            client_id: String::new(),
            client_secret: String::new(),
            scopes: vec!["openid".to_owned(), "profile".to_owned()],
            max_iat_skew_secs: 300,
            http_timeout_ms: 10_000,
            step_up_max_age_secs: 900,
            claims: crate::auth::ClaimMapping::default(),
        }
    }
}

/// `[session]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionSettings {
    /// A session unused this long ends, seconds.
    pub idle_timeout_secs: u64,
    /// A session ends this long after login however busy, seconds.
    pub absolute_timeout_secs: u64,
    /// Lesson look-ups (open a lesson, ask for a room token) one session may make per minute.
    pub lesson_lookups_per_minute: u32,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            idle_timeout_secs: 1800,
            absolute_timeout_secs: 12 * 3600,
            lesson_lookups_per_minute: 60,
        }
    }
}

/// `[tokens]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenSettings {
    /// Lifetime of a room token, seconds (at most 300).
    pub room_token_secs: u64,
    /// PKCS#8 PEM Ed25519 private key signing room and service tokens
    /// (required outside `--dev`, which makes a fresh key each start).
    pub signing_key_file: String,
    /// The key's `kid`.
    pub signing_key_id: String,
    /// Keys still accepted (not used for signing) during a rollover, as
    /// `kid=path` entries of PEM Ed25519 keys (private or public).
    pub previous_keys: Vec<String>,
    /// Audience of service tokens (the recorder).
    pub service_audience: String,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            room_token_secs: 120,
            signing_key_file: String::new(),
            signing_key_id: "gateway-1".to_owned(),
            previous_keys: Vec::new(),
            service_audience: "chaperone-recorder".to_owned(),
        }
    }
}

/// `[http]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address and port the HTTP server listens on.
    pub listen: SocketAddr,
    /// The URL people reach the gateway at (required outside dev mode; must be https).
    pub public_url: String,
    /// Origins allowed to open lesson WebSockets (defaults to `public_url`'s origin).
    pub allowed_origins: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: String::new(),
            allowed_origins: Vec::new(),
        }
    }
}

/// Which state store to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// In memory: one node, nothing survives a restart.
    #[default]
    Memory,
    /// Redis: shared by every node.
    Redis,
}

/// `[store]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `memory` or `redis`.
    pub kind: StoreKind,
    /// Redis URL (required when `kind = "redis"`).
    pub redis_url: String,
    /// Prefix of every Redis key and channel.
    pub key_prefix: String,
    /// Longest wait for one Redis command, in milliseconds.
    pub timeout_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            kind: StoreKind::Memory,
            redis_url: String::new(),
            key_prefix: "chaperone".to_owned(),
            timeout_ms: 2000,
        }
    }
}

/// `[lesson]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LessonSettings {
    /// Seconds without a teacher or assistant before pupils are held.
    pub supervision_grace_secs: u64,
    /// Seconds without a recorder before pupils are held.
    pub recorder_grace_secs: u64,
    /// Seconds a teacher's camera may be off before a compliance event.
    pub teacher_camera_grace_secs: u64,
    /// Seconds a dropped participant may rejoin without waiting again.
    pub reconnect_grace_secs: u64,
    /// Longest chat message, in characters (at most 2000).
    pub chat_max_chars: usize,
    /// Chat messages a pupil may send per `chat_window_secs`.
    pub chat_rate: usize,
    /// The chat rate window, in seconds.
    pub chat_window_secs: u64,
}

impl Default for LessonSettings {
    fn default() -> Self {
        let d = LessonConfig::default();
        Self {
            supervision_grace_secs: d.supervision_grace.as_secs(),
            recorder_grace_secs: d.recorder_grace.as_secs(),
            teacher_camera_grace_secs: d.teacher_camera_grace.as_secs(),
            reconnect_grace_secs: d.reconnect_grace.as_secs(),
            chat_max_chars: d.chat_max_chars,
            chat_rate: d.chat_rate,
            chat_window_secs: d.chat_window.as_secs(),
        }
    }
}

impl LessonSettings {
    /// The lesson core's configuration.
    pub fn lesson_config(&self) -> LessonConfig {
        LessonConfig {
            supervision_grace: Duration::from_secs(self.supervision_grace_secs),
            recorder_grace: Duration::from_secs(self.recorder_grace_secs),
            teacher_camera_grace: Duration::from_secs(self.teacher_camera_grace_secs),
            reconnect_grace: Duration::from_secs(self.reconnect_grace_secs),
            chat_max_chars: self.chat_max_chars,
            chat_rate: self.chat_rate,
            chat_window: Duration::from_secs(self.chat_window_secs),
            ..LessonConfig::default()
        }
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info,chaperone_gateway=debug`.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: "info".to_owned(),
        }
    }
}

impl Config {
    /// Parses TOML text (unknown keys refused).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// Reads a TOML file.
    pub fn from_file(path: &str) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Applies `CHAPERONE_*` overrides from `vars` (normally `std::env::vars()`).
    pub fn apply_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        for (var, value) in vars {
            let Some(key) = var.strip_prefix("CHAPERONE_") else {
                continue;
            };
            let bad = |message: String| ConfigError::Env {
                var: var.clone(),
                message,
            };
            let num = |v: &str| v.parse::<u64>().map_err(|e| bad(e.to_string()));
            match key {
                "HTTP_LISTEN" => {
                    self.http.listen = value.parse().map_err(|e| bad(format!("{e}")))?
                }
                "HTTP_PUBLIC_URL" => self.http.public_url = value,
                "HTTP_ALLOWED_ORIGINS" => {
                    self.http.allowed_origins = value
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect();
                }
                "STORE_KIND" => {
                    self.store.kind = match value.as_str() {
                        "memory" => StoreKind::Memory,
                        "redis" => StoreKind::Redis,
                        other => {
                            return Err(bad(format!(
                                "unknown store kind {other:?} (memory or redis)"
                            )));
                        }
                    }
                }
                "STORE_REDIS_URL" => self.store.redis_url = value,
                "STORE_KEY_PREFIX" => self.store.key_prefix = value,
                "STORE_TIMEOUT_MS" => self.store.timeout_ms = num(&value)?,
                "LESSON_SUPERVISION_GRACE_SECS" => {
                    self.lesson.supervision_grace_secs = num(&value)?
                }
                "LESSON_RECORDER_GRACE_SECS" => self.lesson.recorder_grace_secs = num(&value)?,
                "LESSON_TEACHER_CAMERA_GRACE_SECS" => {
                    self.lesson.teacher_camera_grace_secs = num(&value)?
                }
                "LESSON_RECONNECT_GRACE_SECS" => self.lesson.reconnect_grace_secs = num(&value)?,
                "LESSON_CHAT_MAX_CHARS" => self.lesson.chat_max_chars = num(&value)? as usize,
                "LESSON_CHAT_RATE" => self.lesson.chat_rate = num(&value)? as usize,
                "LESSON_CHAT_WINDOW_SECS" => self.lesson.chat_window_secs = num(&value)?,
                "LOG_FORMAT" => {
                    self.log.format = match value.as_str() {
                        "text" => LogFormat::Text,
                        "json" => LogFormat::Json,
                        other => {
                            return Err(bad(format!(
                                "unknown log format {other:?} (text or json)"
                            )));
                        }
                    }
                }
                "LOG_FILTER" => self.log.filter = value,
                "OIDC_ISSUER" => self.oidc.issuer = value,
                "OIDC_CLIENT_ID" => self.oidc.client_id = value,
                "OIDC_CLIENT_SECRET" => self.oidc.client_secret = value,
                "OIDC_SCOPES" => {
                    self.oidc.scopes = value
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect();
                }
                "OIDC_MAX_IAT_SKEW_SECS" => self.oidc.max_iat_skew_secs = num(&value)?,
                "OIDC_HTTP_TIMEOUT_MS" => self.oidc.http_timeout_ms = num(&value)?,
                "OIDC_STEP_UP_MAX_AGE_SECS" => self.oidc.step_up_max_age_secs = num(&value)?,
                "SESSION_IDLE_TIMEOUT_SECS" => self.session.idle_timeout_secs = num(&value)?,
                "SESSION_ABSOLUTE_TIMEOUT_SECS" => {
                    self.session.absolute_timeout_secs = num(&value)?
                }
                "SESSION_LESSON_LOOKUPS_PER_MINUTE" => {
                    self.session.lesson_lookups_per_minute =
                        u32::try_from(num(&value)?).map_err(|e| bad(e.to_string()))?
                }
                "TOKENS_ROOM_TOKEN_SECS" => self.tokens.room_token_secs = num(&value)?,
                "TOKENS_SIGNING_KEY_FILE" => self.tokens.signing_key_file = value,
                "TOKENS_SIGNING_KEY_ID" => self.tokens.signing_key_id = value,
                "TOKENS_PREVIOUS_KEYS" => {
                    self.tokens.previous_keys = value
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect();
                }
                "TOKENS_SERVICE_AUDIENCE" => self.tokens.service_audience = value,
                "MEDIA_UDP_LISTEN" => {
                    self.media.udp_listen = value.parse().map_err(|e| bad(format!("{e}")))?
                }
                "MEDIA_ADVERTISED" => self.media.advertised = value,
                "RECORDER_URLS" => {
                    self.recorder.urls = value
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect();
                }
                "FEED_BUFFER_BYTES" => self.feed.buffer_bytes = num(&value)?,
                "FEED_SPOOL_DIR" => self.feed.spool_dir = value,
                "FEED_SPOOL_MAX_BYTES" => self.feed.spool_max_bytes = num(&value)?,
                "FEED_ACK_TIMEOUT_MS" => self.feed.ack_timeout_ms = num(&value)?,
                "RECORDER_DIR" => self.recorder.dir = value,
                "RECORDER_RECIPIENTS" => {
                    self.recorder.recipients = value
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect();
                }
                "RECORDER_SIGNING_KEY_FILE" => self.recorder.signing_key_file = value,
                "RECORDER_SEGMENT_SECS" => self.recorder.segment_secs = num(&value)?,
                "TURN_URLS" => {
                    self.turn.urls = value
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect();
                }
                "TURN_SHARED_SECRET" => self.turn.shared_secret = value,
                "TURN_TTL_SECS" => self.turn.ttl_secs = num(&value)?,
                "METRICS_LISTEN" => self.metrics.listen = value,
                // CHAPERONE_LOG is read by the logger directly; others are not ours.
                _ => {}
            }
        }
        Ok(())
    }

    /// Refuses inconsistent or unsafe settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.store.kind == StoreKind::Redis && self.store.redis_url.is_empty() {
            return invalid("store.kind = \"redis\" needs store.redis_url");
        }
        if self.store.key_prefix.is_empty() || self.store.key_prefix.contains(char::is_whitespace) {
            return invalid("store.key_prefix must be a non-empty word");
        }
        let l = &self.lesson;
        if l.supervision_grace_secs == 0
            || l.recorder_grace_secs == 0
            || l.teacher_camera_grace_secs == 0
        {
            return invalid("lesson graces must be at least 1 second");
        }
        if l.chat_max_chars == 0 || l.chat_max_chars > chaperone_protocol::signal::MAX_CHAT_CHARS {
            return invalid("lesson.chat_max_chars must be between 1 and 2000");
        }
        if l.chat_rate == 0 || l.chat_window_secs == 0 {
            return invalid("lesson.chat_rate and lesson.chat_window_secs must be at least 1");
        }
        if self.tokens.room_token_secs == 0
            || self.tokens.room_token_secs > crate::auth::MAX_LIFETIME_SECS
        {
            return invalid("tokens.room_token_secs must be between 1 and 300");
        }
        if self
            .tokens
            .previous_keys
            .iter()
            .any(|e| !matches!(e.split_once('='), Some((k, p)) if !k.is_empty() && !p.is_empty()))
        {
            return invalid("tokens.previous_keys entries are kid=path");
        }
        let s = &self.session;
        if s.idle_timeout_secs < 60 || s.absolute_timeout_secs < s.idle_timeout_secs {
            return invalid(
                "session.idle_timeout_secs must be at least 60 and at most session.absolute_timeout_secs",
            );
        }
        if s.lesson_lookups_per_minute == 0 {
            return invalid("session.lesson_lookups_per_minute must be at least 1");
        }
        if self.oidc.claims.roles.is_empty() {
            return invalid("oidc.claims.roles must map at least one claim value to a role");
        }
        if !self.oidc.issuer.is_empty()
            && (self.oidc.client_id.is_empty() || self.oidc.client_secret.is_empty())
        {
            return invalid("oidc.issuer needs oidc.client_id and oidc.client_secret");
        }
        self.media.advertised()?;
        self.metrics.address()?;
        if self.media.advertised.is_empty() && self.media.udp_listen.ip().is_unspecified() {
            return invalid("media.udp_listen is a wildcard address: set media.advertised");
        }
        if !self.turn.urls.is_empty()
            && (self.turn.shared_secret.len() < 16 || self.turn.ttl_secs == 0)
        {
            return invalid(
                "turn.urls needs turn.shared_secret (at least 16 characters) and turn.ttl_secs",
            );
        }
        if self.recorder.segment_secs == 0 || self.recorder.segment_secs > 300 {
            return invalid("recorder.segment_secs must be between 1 and 300");
        }
        if self
            .recorder
            .urls
            .iter()
            .any(|u| !(u.starts_with("ws://") || u.starts_with("wss://")))
        {
            return invalid("recorder.urls are ws:// or wss:// URLs");
        }
        if self.feed.buffer_bytes < 1024 * 1024 || self.feed.ack_timeout_ms < 1000 {
            return invalid(
                "feed.buffer_bytes must be at least 1 MiB and feed.ack_timeout_ms at least 1000",
            );
        }
        if self.dev {
            if !self.http.listen.ip().is_loopback() {
                return invalid(
                    "--dev listens on loopback only (it serves a development identity provider)",
                );
            }
        } else {
            if !self.http.public_url.starts_with("https://") {
                return invalid("http.public_url must be set to an https:// URL outside --dev");
            }
            if !self.oidc.issuer.starts_with("https://") {
                return invalid(
                    "oidc.issuer must be the https:// URL of the school's identity provider outside --dev",
                );
            }
            if self.tokens.signing_key_file.is_empty() {
                return invalid("tokens.signing_key_file is required outside --dev");
            }
            if self.recorder.urls.is_empty()
                && (self.recorder.dir.is_empty()
                    || self.recorder.recipients.is_empty()
                    || self.recorder.signing_key_file.is_empty())
            {
                return invalid(
                    "recorder.urls, or (for the embedded recorder) recorder.dir, recorder.recipients and recorder.signing_key_file, are required outside --dev",
                );
            }
        }
        Ok(())
    }

    /// The origins allowed to open lesson WebSockets.
    pub fn allowed_origins(&self) -> Vec<String> {
        if !self.http.allowed_origins.is_empty() {
            return self.http.allowed_origins.clone();
        }
        if self.dev {
            let port = self.http.listen.port();
            return vec![
                format!("http://127.0.0.1:{port}"),
                format!("http://localhost:{port}"),
            ];
        }
        vec![self.http.public_url.trim_end_matches('/').to_owned()]
    }

    /// The effective configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> Config {
        Config {
            dev: true,
            ..Config::default()
        }
    }

    #[test]
    fn defaults_are_valid_in_dev_and_refused_in_production() {
        assert!(dev().validate().is_ok());
        let err = Config::default().validate().unwrap_err();
        assert!(err.to_string().contains("public_url"), "{err}");
    }

    #[test]
    fn defaults_match_the_lesson_core() {
        assert_eq!(
            Config::default().lesson.lesson_config(),
            LessonConfig::default()
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = Config::from_toml("[http]\nlisten = \"127.0.0.1:1\"\nlsiten = 1\n").unwrap_err();
        assert!(matches!(err, ConfigError::Parse(_)), "{err}");
        assert!(matches!(
            Config::from_toml("[nope]\n"),
            Err(ConfigError::Parse(_))
        ));
    }

    #[test]
    fn a_file_sets_keys_and_keeps_other_defaults() {
        let c =
            Config::from_toml("[store]\nkind = \"redis\"\nredis_url = \"redis://127.0.0.1:1/\"\n")
                .unwrap();
        assert_eq!(c.store.kind, StoreKind::Redis);
        assert_eq!(c.store.key_prefix, "chaperone");
        assert_eq!(c.http, HttpConfig::default());
    }

    #[test]
    fn environment_overrides_win() {
        let mut c = dev();
        c.apply_env([
            (
                "CHAPERONE_HTTP_LISTEN".to_owned(),
                "127.0.0.1:9999".to_owned(),
            ),
            ("CHAPERONE_STORE_KIND".to_owned(), "redis".to_owned()),
            (
                "CHAPERONE_STORE_REDIS_URL".to_owned(),
                "redis://127.0.0.1:6380/".to_owned(),
            ),
            (
                "CHAPERONE_LESSON_SUPERVISION_GRACE_SECS".to_owned(),
                "30".to_owned(),
            ),
            (
                "CHAPERONE_HTTP_ALLOWED_ORIGINS".to_owned(),
                "https://a.test, https://b.test".to_owned(),
            ),
            ("UNRELATED".to_owned(), "x".to_owned()),
        ])
        .unwrap();
        assert_eq!(c.http.listen.port(), 9999);
        assert_eq!(c.store.kind, StoreKind::Redis);
        assert_eq!(c.lesson.supervision_grace_secs, 30);
        assert_eq!(
            c.allowed_origins(),
            vec!["https://a.test", "https://b.test"]
        );
        assert!(c.validate().is_ok());
    }

    #[test]
    fn bad_environment_values_name_the_variable() {
        let mut c = dev();
        let err = c
            .apply_env([("CHAPERONE_LESSON_CHAT_RATE".to_owned(), "lots".to_owned())])
            .unwrap_err();
        assert!(
            err.to_string().contains("CHAPERONE_LESSON_CHAT_RATE"),
            "{err}"
        );
        let err = c
            .apply_env([("CHAPERONE_STORE_KIND".to_owned(), "etcd".to_owned())])
            .unwrap_err();
        assert!(err.to_string().contains("etcd"), "{err}");
    }

    #[test]
    fn validation_refuses_inconsistent_settings() {
        let mut c = dev();
        c.store.kind = StoreKind::Redis;
        assert!(c.validate().is_err(), "redis without a url");
        let mut c = dev();
        c.lesson.supervision_grace_secs = 0;
        assert!(c.validate().is_err());
        let mut c = dev();
        c.lesson.chat_max_chars = 5000;
        assert!(c.validate().is_err());
        let mut c = dev();
        c.http.listen = "0.0.0.0:8080".parse().unwrap();
        assert!(c.validate().is_err(), "dev mode stays on loopback");
        let mut c = Config::default();
        c.http.public_url = "http://school.test".into();
        assert!(c.validate().is_err(), "production needs https");
        c.http.public_url = "https://school.test".into();
        assert!(
            c.validate().is_err(),
            "production needs an identity provider"
        );
        c.oidc.issuer = "https://login.school.test".into();
        assert!(c.validate().is_err(), "and client credentials");
        c.oidc.client_id = "chaperone".into();
        c.oidc.client_secret = "secret".into();
        assert!(c.validate().is_err(), "and a signing key");
        c.tokens.signing_key_file = "/etc/chaperone/key.pem".into();
        assert!(c.validate().is_err(), "and a recorder");
        c.recorder.dir = "/var/lib/chaperone/recordings".into();
        c.recorder.recipients = vec!["age1example".into()];
        c.recorder.signing_key_file = "/etc/chaperone/recorder.pem".into();
        assert!(c.validate().is_ok());
        let mut remote = c.clone();
        remote.recorder = RecorderSettings {
            urls: vec!["wss://recorder.school.test".into()],
            ..RecorderSettings::default()
        };
        assert!(
            remote.validate().is_ok(),
            "a remote recorder needs no local keys"
        );
        remote.recorder.urls = vec!["https://recorder.school.test".into()];
        assert!(remote.validate().is_err(), "recorders are WebSocket URLs");
        assert_eq!(c.allowed_origins(), vec!["https://school.test"]);
        c.tokens.room_token_secs = 301;
        assert!(c.validate().is_err(), "room tokens live at most 5 minutes");
        let mut c = dev();
        c.session.idle_timeout_secs = 10;
        assert!(c.validate().is_err(), "idle timeout too short");
        let mut c = dev();
        c.oidc.claims.roles.clear();
        assert!(
            c.validate().is_err(),
            "no role mapping: nobody could sign in"
        );
    }

    #[test]
    fn printed_config_parses_back() {
        let c = Config::default();
        assert_eq!(Config::from_toml(&c.to_toml()).unwrap(), c);
    }
}
