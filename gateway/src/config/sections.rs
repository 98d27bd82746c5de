//! Every `[section]` of the configuration, with its defaults: what the
//! README's configuration table lists, key by key.

use std::net::SocketAddr;
use std::time::Duration;

use chaperone_lesson::LessonConfig;
use serde::{Deserialize, Serialize};

use super::ConfigError;

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
    /// Where spooled frames go (empty: `chaperone-feed/<node>` in the
    /// system's temporary directory, `<node>` being `cluster.node_id` or
    /// the HTTP port, so two nodes on one host never share one). A node
    /// refuses to start on a spool another live process holds.
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
    /// The spool directory of node `node` (see [`Self::spool_dir`]'s field).
    pub fn spool_dir(&self, node: &str) -> std::path::PathBuf {
        if self.spool_dir.is_empty() {
            std::env::temp_dir().join("chaperone-feed").join(node)
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
    /// Seconds a connection may take to send a request head, also while
    /// idle between requests; then it is closed.
    pub header_timeout_secs: u64,
    /// Seconds a request may take to be answered (408 after).
    pub request_timeout_secs: u64,
    /// Cap on open connections; 0 derives it from the descriptor limit.
    pub max_connections: usize,
    /// Cap on open connections from one client address (0: none).
    pub max_connections_per_client: usize,
    /// Descriptors kept back for the media socket, Redis, the recorder
    /// feed, the store and files.
    pub reserved_descriptors: u64,
    /// Seconds over which refused anonymous requests are summed into one
    /// audit record per source.
    pub anonymous_summary_secs: u64,
}

impl HttpConfig {
    /// The listener limits these keys describe.
    pub fn limits(&self) -> chaperone_serve::Limits {
        chaperone_serve::Limits {
            header_timeout: std::time::Duration::from_secs(self.header_timeout_secs),
            request_timeout: std::time::Duration::from_secs(self.request_timeout_secs),
            max_connections: self.max_connections,
            max_per_client: self.max_connections_per_client,
            reserved_descriptors: self.reserved_descriptors,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: String::new(),
            allowed_origins: Vec::new(),
            header_timeout_secs: 10,
            request_timeout_secs: 30,
            max_connections: 0,
            max_connections_per_client: 256,
            reserved_descriptors: 256,
            anonymous_summary_secs: 60,
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

/// `[cluster]`: this node among the others sharing the Redis store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// This node's id, unique per process start. Empty: the host name and
    /// a random suffix.
    pub node_id: String,
    /// Where the other nodes reach this one (`http://10.0.0.5:8080`): the
    /// relayed joins of its lessons arrive there. Empty: `http://` and
    /// `http.listen`.
    pub node_url: String,
    /// How long a lesson's lease lasts without a renewal, in milliseconds:
    /// how long a lesson waits for another node after its owner dies.
    pub lease_ms: u64,
    /// How often the owner renews its leases, in milliseconds.
    pub renew_ms: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            node_id: String::new(),
            node_url: String::new(),
            lease_ms: 4000,
            renew_ms: 1000,
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
    /// Classes lessons may be created for, besides those the identity
    /// provider's claims name for people who signed in.
    pub classes: Vec<String>,
    /// Minutes before its start a lesson opens for joining.
    pub open_before_mins: u64,
    /// Minutes after its end a lesson stays open (staff can extend it);
    /// a lesson still running then is ended by the server.
    pub close_grace_mins: u64,
    /// Minutes before the server ends a running lesson whose time is
    /// running out that its staff are warned (so they can extend it).
    pub close_warning_mins: u64,
    /// Seconds a lesson's room stays open with nobody connected before it
    /// closes (its recording is written; a later join reopens it).
    pub idle_close_secs: u64,
    /// The school's class lists, a CSV file `class,subject,name` (empty:
    /// none; the register then knows only pupils who have signed in).
    pub roster_file: String,
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
            classes: Vec::new(),
            open_before_mins: 15,
            close_grace_mins: 10,
            close_warning_mins: d.close_warning.as_secs() / 60,
            idle_close_secs: 300,
            roster_file: String::new(),
        }
    }
}

impl LessonSettings {
    /// When lessons open for joining and close.
    pub(crate) fn window(&self) -> crate::catalog::WindowSettings {
        crate::catalog::WindowSettings {
            open_before_ms: self.open_before_mins.saturating_mul(60_000),
            close_grace_ms: self.close_grace_mins.saturating_mul(60_000),
        }
    }

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
            close_warning: Duration::from_secs(self.close_warning_mins.saturating_mul(60)),
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
