//! `Config::validate`: refuses unsafe or inconsistent settings before
//! anything starts (development mode only on loopback; production needs
//! https, a real identity provider, signing keys and a recorder).

use super::sections::*;
use super::{Config, ConfigError};

impl Config {
    /// Refuses inconsistent or unsafe settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.store.kind == StoreKind::Redis && self.store.redis_url.is_empty() {
            return invalid("store.kind = \"redis\" needs store.redis_url");
        }
        if self.store.key_prefix.is_empty() || self.store.key_prefix.contains(char::is_whitespace) {
            return invalid("store.key_prefix must be a non-empty word");
        }
        if self.http.header_timeout_secs == 0
            || self.http.request_timeout_secs == 0
            || self.http.anonymous_summary_secs == 0
        {
            return invalid(
                "http.header_timeout_secs, request_timeout_secs and anonymous_summary_secs must be at least 1",
            );
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
        if l.open_before_mins > 24 * 60 || l.close_grace_mins > 24 * 60 {
            return invalid(
                "lesson.open_before_mins and lesson.close_grace_mins must be at most 1440",
            );
        }
        if l.close_warning_mins > 120 {
            return invalid("lesson.close_warning_mins must be at most 120");
        }
        if l.idle_close_secs == 0 {
            return invalid("lesson.idle_close_secs must be at least 1");
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
        if self.cluster.renew_ms < 100 || self.cluster.lease_ms < 2 * self.cluster.renew_ms + 1000 {
            return invalid(
                "cluster.renew_ms must be at least 100 and cluster.lease_ms at least twice it plus 1000",
            );
        }
        if !(self.cluster.node_url.is_empty()
            || self.cluster.node_url.starts_with("http://")
            || self.cluster.node_url.starts_with("https://"))
        {
            return invalid("cluster.node_url is an http:// or https:// URL");
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
}
