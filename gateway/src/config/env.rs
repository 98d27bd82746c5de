//! Environment overrides: `CHAPERONE_<SECTION>_<KEY>` in upper case, each
//! parsed as its key's type; a bad value names the variable.

use super::sections::*;
use super::{Config, ConfigError};

impl Config {
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
                "HTTP_HEADER_TIMEOUT_SECS" => self.http.header_timeout_secs = num(&value)?,
                "HTTP_REQUEST_TIMEOUT_SECS" => self.http.request_timeout_secs = num(&value)?,
                "HTTP_MAX_CONNECTIONS" => self.http.max_connections = num(&value)? as usize,
                "HTTP_MAX_CONNECTIONS_PER_CLIENT" => {
                    self.http.max_connections_per_client = num(&value)? as usize
                }
                "HTTP_RESERVED_DESCRIPTORS" => self.http.reserved_descriptors = num(&value)?,
                "HTTP_ANONYMOUS_SUMMARY_SECS" => self.http.anonymous_summary_secs = num(&value)?,
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
                "CLUSTER_NODE_ID" => self.cluster.node_id = value,
                "CLUSTER_NODE_URL" => self.cluster.node_url = value,
                "CLUSTER_LEASE_MS" => self.cluster.lease_ms = num(&value)?,
                "CLUSTER_RENEW_MS" => self.cluster.renew_ms = num(&value)?,
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
                "LESSON_OPEN_BEFORE_MINS" => self.lesson.open_before_mins = num(&value)?,
                "LESSON_CLOSE_GRACE_MINS" => self.lesson.close_grace_mins = num(&value)?,
                "LESSON_CLOSE_WARNING_MINS" => self.lesson.close_warning_mins = num(&value)?,
                "LESSON_IDLE_CLOSE_SECS" => self.lesson.idle_close_secs = num(&value)?,
                "LESSON_ROSTER_FILE" => self.lesson.roster_file = value,
                "LESSON_CLASSES" => {
                    self.lesson.classes = value
                        .split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect();
                }
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
}
