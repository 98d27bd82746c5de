//! The signaling [`Authenticator`]: a room token becomes a join request
//! (docs/security.md §10–12). The token is verified and its `jti` consumed (once,
//! on any node), it must be for the lesson asked for (otherwise the answer
//! is "not found", as for a lesson that does not exist), and the person's
//! block status is read from the state store on every join and every
//! reconnect. If the store cannot be read, nobody joins (fail closed).
//!
//! The lesson must exist and be inside its window (open from
//! `lesson.open_before_mins` before its start until `lesson.close_grace_mins`
//! after its end, or staff's extension): a token issued just before the
//! window closed joins no later. Where it runs (here, or on another node) is the
//! cluster's business ([`crate::cluster`]).

use std::sync::Arc;
use std::time::Duration;

use chaperone_protocol::LessonId;

use super::tokens::{JoinTokens as _, TokenError, TokenIssuer};
use crate::catalog::{InWindow, LessonInfo, TABLE, WindowSettings};
use crate::clock::{now, unix_millis};
use crate::signal::{AuthRefusal, Authenticator};
use crate::store::{StateStore, Store};
use chaperone_lesson::{Account, JoinRequest};

/// Room-token authentication for lesson WebSockets.
#[derive(Clone, Debug)]
pub struct JoinAuth {
    tokens: Arc<TokenIssuer>,
    store: Store,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    window: WindowSettings,
}

impl JoinAuth {
    /// An authenticator using `tokens` and `store`.
    pub fn new(tokens: Arc<TokenIssuer>, store: Store) -> Self {
        Self {
            tokens,
            store,
            metrics: None,
            window: WindowSettings::default(),
        }
    }

    /// Lessons open for joining in `window` (default: 15 minutes before
    /// their start to 10 minutes after their end).
    pub(crate) fn with_window(mut self, window: WindowSettings) -> Self {
        self.window = window;
        self
    }

    /// Counts refusals, and starts join timing, in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The lesson exists and is open for joining at `now_ms`.
    async fn ensure_open(&self, lesson: LessonId, now_ms: u64) -> Result<(), AuthRefusal> {
        let json = self
            .store
            .get_record(TABLE, &lesson.to_string())
            .await
            .map_err(|_| AuthRefusal::Unavailable)?
            .ok_or(AuthRefusal::NotFound)?;
        let info: LessonInfo = serde_json::from_str(&json).map_err(|e| {
            tracing::error!(%lesson, error = %e, "unreadable lesson record");
            AuthRefusal::NotFound
        })?;
        match self.window.at(&info, now_ms) {
            InWindow::Open => Ok(()),
            InWindow::Before(at) => {
                tracing::info!(%lesson, opens_at_ms = at, "join before the lesson opens refused");
                Err(AuthRefusal::NotOpen(at))
            }
            InWindow::After(_) => {
                tracing::info!(%lesson, "join after the lesson closed refused");
                Err(AuthRefusal::Closed)
            }
        }
    }
}

impl Authenticator for JoinAuth {
    // The token is never a field: only the lesson it is presented for.
    #[tracing::instrument(name = "join", skip(self, token), fields(%lesson))]
    async fn authenticate(
        &self,
        lesson: LessonId,
        token: &str,
    ) -> Result<JoinRequest, AuthRefusal> {
        let presented = now();
        let result = self.check(lesson, token).await;
        if let Some(m) = &self.metrics {
            match &result {
                Ok(req) => m.joins.presented(lesson, &req.user, presented),
                Err(refusal) => m.join_refused(match refusal {
                    AuthRefusal::Unauthenticated => "unauthenticated",
                    AuthRefusal::NotFound => "not_found",
                    AuthRefusal::Blocked => "blocked",
                    AuthRefusal::Unavailable => "unavailable",
                    AuthRefusal::NotOpen(_) => "not_open",
                    AuthRefusal::Closed => "closed",
                }),
            }
        }
        result
    }
}

impl JoinAuth {
    async fn check(&self, lesson: LessonId, token: &str) -> Result<JoinRequest, AuthRefusal> {
        let now_ms = unix_millis();
        let claims = match self
            .tokens
            .verify_room_for_join(now_ms / 1000, token, &self.store)
            .await
        {
            Ok(c) => c,
            Err(TokenError::Unavailable(e)) => {
                tracing::error!(%lesson, error = %e, "cannot consume a join token: store unavailable");
                return Err(AuthRefusal::Unavailable);
            }
            Err(e) => {
                tracing::info!(%lesson, code = e.code(), "room token refused");
                return Err(AuthRefusal::Unauthenticated);
            }
        };
        if claims.lesson != lesson {
            return Err(AuthRefusal::NotFound);
        }
        match self.store.blocked(&claims.user).await {
            Err(_) => return Err(AuthRefusal::Unavailable),
            Ok(Some(_)) => {
                tracing::info!(%lesson, user = %claims.user, "blocked person refused at join");
                return Err(AuthRefusal::Blocked);
            }
            Ok(None) => {}
        }
        // A token issued to a session joins only while that session lives.
        // Tokens minted without one (the load generator, with the signing
        // key) have no entry and are judged by their claims alone.
        let at = crate::store::UnixMillis(now_ms);
        match self
            .store
            .take_temp(super::ROOM_TOKEN_SESSION, &claims.jti, at)
            .await
        {
            Err(_) => return Err(AuthRefusal::Unavailable),
            Ok(None) => {}
            Ok(Some(session)) => {
                let id = String::from_utf8_lossy(&session).into_owned();
                match self.store.get_session(&id, at).await {
                    Err(_) => return Err(AuthRefusal::Unavailable),
                    Ok(None) => {
                        tracing::info!(%lesson, user = %claims.user, "room token of an ended session refused");
                        return Err(AuthRefusal::Unauthenticated);
                    }
                    Ok(Some(_)) => {}
                }
            }
        }
        self.ensure_open(lesson, now_ms).await?;
        Ok(join_request(
            claims.user,
            claims.name,
            claims.account,
            now_ms,
        ))
    }
}

/// The join a checked token names (a room token here, a node token at a
/// relayed join's owner): the account as the lesson core sees it, a
/// visitor grant's end as an instant of this node's clock.
pub(crate) fn join_request(
    user: chaperone_protocol::UserRef,
    name: String,
    account: chaperone_tokens::AccountClaims,
    now_ms: u64,
) -> JoinRequest {
    let visitor_until = account.visitor_until.map(|secs| {
        now() + Duration::from_millis(secs.saturating_mul(1000).saturating_sub(now_ms))
    });
    JoinRequest {
        user,
        name,
        account: Account {
            staff: account.staff,
            pupil_classes: account.pupil_classes,
            safeguarding_observer: account.safeguarding_observer,
            visitor_until,
        },
    }
}
