//! The gateway's configuration: one TOML file plus environment overrides,
//! with defaults for every key and a `validate()` that refuses unsafe or
//! inconsistent settings before anything starts.
//!
//! Environment overrides are `CHAPERONE_<SECTION>_<KEY>` in upper case, e.g.
//! `CHAPERONE_HTTP_LISTEN=127.0.0.1:9000` or
//! `CHAPERONE_STORE_REDIS_URL=redis://10.0.0.5:6379/`. Every key is listed,
//! with its default, in the README's configuration table.

mod env;
mod sections;
mod validate;

use serde::{Deserialize, Serialize};

pub use sections::*;

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
    /// This node among the others.
    pub cluster: ClusterSettings,
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
    use chaperone_lesson::LessonConfig;

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
