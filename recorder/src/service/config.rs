//! The recorder service's configuration: one TOML file plus environment
//! overrides `CHAPERONE_RECORDER_<SECTION>_<KEY>` (for example
//! `CHAPERONE_RECORDER_HTTP_LISTEN=0.0.0.0:9300`), each value read as a TOML
//! value where it parses as one (numbers, booleans, `[..]` arrays) and as a
//! string otherwise. Unknown keys are refused.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML (file plus overrides) does not describe a configuration.
    #[error("configuration: {0}")]
    Parse(String),
    /// An environment override names no key.
    #[error("{var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        message: String,
    },
    /// The settings are inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// Listeners.
    pub http: HttpSection,
    /// The gateway whose service tokens are accepted.
    pub gateway: GatewaySection,
    /// What is written and how.
    pub archive: ArchiveSection,
    /// Where it is written.
    pub store: chaperone_archive::store::StoreConfig,
}

/// `[http]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// The feed WebSocket (`/feed`) and `/livez`, `/readyz`.
    pub listen: SocketAddr,
    /// `/metrics`, on its own listener; empty for none.
    pub metrics_listen: String,
    /// Seconds a connection may take to send a request head (also idle).
    pub header_timeout_secs: u64,
    /// Cap on open connections; 0 derives it from the descriptor limit.
    pub max_connections: usize,
}

impl HttpSection {
    /// The feed listener's limits. Every gateway node holds one feed
    /// connection per live lesson from one address, so there is no
    /// per-client cap here.
    pub fn limits(&self) -> chaperone_serve::Limits {
        chaperone_serve::Limits {
            header_timeout: std::time::Duration::from_secs(self.header_timeout_secs.max(1)),
            max_connections: self.max_connections,
            max_per_client: 0,
            ..chaperone_serve::Limits::default()
        }
    }
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9300)),
            metrics_listen: "127.0.0.1:9301".to_owned(),
            header_timeout_secs: 10,
            max_connections: 0,
        }
    }
}

/// `[gateway]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySection {
    /// The `iss` a service token may carry: the gateways' public URLs
    /// (one, when every node is behind the same URL).
    pub issuers: Vec<String>,
    /// Where the gateway publishes its keys (`<public_url>/.well-known/jwks.json`).
    pub jwks_url: String,
    /// The `aud` service tokens must carry.
    pub audience: String,
}

impl Default for GatewaySection {
    fn default() -> Self {
        Self {
            issuers: Vec::new(),
            jwks_url: String::new(),
            audience: "chaperone-recorder".to_owned(),
        }
    }
}

/// `[archive]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveSection {
    /// age recipients (`age1...`) every segment is sealed to.
    pub recipients: Vec<String>,
    /// The Ed25519 PEM key that signs manifests (`recorder keygen`).
    pub signing_key_file: String,
    /// Length of one segment, seconds.
    pub segment_secs: u64,
    /// Seconds a lesson whose feed went away is kept open for its gateway
    /// to come back before its last checkpoint is written and it is closed.
    pub idle_close_secs: u64,
}

impl Default for ArchiveSection {
    fn default() -> Self {
        Self {
            recipients: Vec::new(),
            signing_key_file: String::new(),
            segment_secs: 10,
            idle_close_secs: 120,
        }
    }
}

const ENV_PREFIX: &str = "CHAPERONE_RECORDER_";

impl ServiceConfig {
    /// Reads `path` (if any), applies the environment overrides in `vars`,
    /// and validates the result.
    pub fn load(
        path: Option<&std::path::Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_owned(),
                source,
            })?,
            None => String::new(),
        };
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        for (var, value) in vars {
            let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let Some((section, key)) = rest.split_once('_') else {
                return Err(ConfigError::Env {
                    var,
                    message: "expected CHAPERONE_RECORDER_<SECTION>_<KEY>".into(),
                });
            };
            let parsed = format!("v = {value}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or(toml::Value::String(value));
            let section = table
                .entry(section.to_ascii_lowercase())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match section {
                toml::Value::Table(t) => {
                    t.insert(key.to_ascii_lowercase(), parsed);
                }
                _ => {
                    return Err(ConfigError::Env {
                        var,
                        message: "names a key, not a section".into(),
                    });
                }
            }
        }
        let config: ServiceConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Refuses missing or inconsistent settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.gateway.issuers.is_empty() || self.gateway.jwks_url.is_empty() {
            return invalid("gateway.issuers and gateway.jwks_url are required");
        }
        if self.archive.recipients.is_empty() || self.archive.signing_key_file.is_empty() {
            return invalid("archive.recipients and archive.signing_key_file are required");
        }
        if self.archive.segment_secs == 0 || self.archive.segment_secs > 300 {
            return invalid("archive.segment_secs must be between 1 and 300");
        }
        if self.archive.idle_close_secs == 0 {
            return invalid("archive.idle_close_secs must be at least 1");
        }
        self.store
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("store: {e}")))?;
        Ok(())
    }

    /// The effective configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    const REQUIRED: &[(&str, &str)] = &[
        (
            "CHAPERONE_RECORDER_GATEWAY_ISSUERS",
            "[\"https://gw.test\"]",
        ),
        (
            "CHAPERONE_RECORDER_GATEWAY_JWKS_URL",
            "https://gw.test/.well-known/jwks.json",
        ),
        ("CHAPERONE_RECORDER_ARCHIVE_RECIPIENTS", "[\"age1x\"]"),
        ("CHAPERONE_RECORDER_ARCHIVE_SIGNING_KEY_FILE", "/k.pem"),
        ("CHAPERONE_RECORDER_STORE_DIR", "/rec"),
    ];

    #[test]
    fn environment_sets_every_section_and_values_are_typed() {
        let mut v = vars(REQUIRED);
        v.extend(vars(&[
            ("CHAPERONE_RECORDER_ARCHIVE_SEGMENT_SECS", "5"),
            ("CHAPERONE_RECORDER_HTTP_LISTEN", "127.0.0.1:9999"),
            ("OTHER", "x"),
        ]));
        let c = ServiceConfig::load(None, v).unwrap();
        assert_eq!(c.archive.segment_secs, 5);
        assert_eq!(c.archive.recipients, vec!["age1x".to_owned()]);
        assert_eq!(c.http.listen.port(), 9999);
        assert_eq!(c.gateway.audience, "chaperone-recorder");
    }

    #[test]
    fn missing_unknown_and_bad_values_are_refused() {
        assert!(matches!(
            ServiceConfig::load(None, vars(&[])),
            Err(ConfigError::Invalid(_))
        ));
        let mut v = vars(REQUIRED);
        v.push(("CHAPERONE_RECORDER_ARCHIVE_COLOUR".into(), "red".into()));
        assert!(matches!(
            ServiceConfig::load(None, v),
            Err(ConfigError::Parse(_))
        ));
        let mut v = vars(REQUIRED);
        v.push(("CHAPERONE_RECORDER_ARCHIVE_SEGMENT_SECS".into(), "0".into()));
        assert!(matches!(
            ServiceConfig::load(None, v),
            Err(ConfigError::Invalid(_))
        ));
        let printed = ServiceConfig::load(None, vars(REQUIRED)).unwrap().to_toml();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.toml");
        std::fs::write(&path, printed).unwrap();
        assert!(ServiceConfig::load(Some(&path), vec![]).is_ok());
    }
}
