//! WebSocket signaling: `GET /ws/lessons/{lesson}`.
//!
//! Everything is checked *before* the upgrade (docs/security.md §13, §14), in this
//! order, each refusal answered by [`crate::errors::Refusal`]:
//!
//! 1. `Origin` must be on the configured allowlist (exact match of
//!    `scheme://host[:port]`); a missing or foreign `Origin` is 403 and no
//!    upgrade, so no other site can ride a pupil's browser into a lesson.
//! 2. The room token is taken from the `Sec-WebSocket-Protocol` header,
//!    offered as the subprotocol `chaperone.token.<token>` next to
//!    [`SUBPROTOCOL`] (`chaperone.v1`), which the server selects. Browsers
//!    cannot set `Authorization` on a WebSocket, and a query parameter would
//!    land in proxy and access logs, history and `Referer`; the header does
//!    not. A `token` query parameter is **not** accepted. The token is never
//!    logged. No token: 401.
//! 3. The [`Authenticator`] turns the token into a [`JoinRequest`] (401 for a
//!    bad token, 404 for a token that is not for this lesson).
//! 4. The lesson must be running on this node, and its core must let the
//!    person join (roster, removals, blocks, lock, ended). "No such lesson"
//!    and "not yours" give the same 404 and the same body.
//!
//! Only then is the connection upgraded. The join has already happened, so
//! the lesson's first words (`Welcome`, then `Waiting` or `Admitted`) wait
//! in the connection's queue until the client's first message, which must
//! be `hello` with [`PROTOCOL_VERSION`](chaperone_protocol::signal::PROTOCOL_VERSION);
//! anything else gets a typed error and a close. From then on, see [`conn`]:
//! size cap, rate limit, typed errors for junk, pings and an idle timeout,
//! and a `leave` when the socket goes away, however it goes.
//!
//! This module must never decide a lesson rule (the core does), never log a
//! token or chat text, and never panic on anything a client sends.

mod conn;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chaperone_protocol::LessonId;
use chaperone_protocol::signal::{ErrorCode, MAX_CLIENT_MSG};
use tokio::sync::mpsc;
use tracing::{debug, info};

pub use crate::errors::{Close, Refusal};
use crate::room::Rooms;
use chaperone_lesson::JoinRequest;

/// The subprotocol the server selects.
pub const SUBPROTOCOL: &str = "chaperone.v1";

/// The prefix of the subprotocol entry that carries the room token.
pub const TOKEN_PREFIX: &str = "chaperone.token.";

/// Why the authenticator refused a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthRefusal {
    /// The token is missing, malformed, forged, expired or already used.
    #[error("not authenticated")]
    Unauthenticated,
    /// The token is valid but not for this lesson: answered exactly as a
    /// lesson that does not exist.
    #[error("not found")]
    NotFound,
    /// The person is blocked.
    #[error("blocked")]
    Blocked,
    /// The identity layer could not be consulted: fail closed.
    #[error("identity layer unavailable")]
    Unavailable,
    /// The lesson is not open for joining yet; it opens at this moment (Unix ms).
    #[error("the lesson is not open yet")]
    NotOpen(u64),
    /// The lesson's window has closed.
    #[error("the lesson has closed")]
    Closed,
}

impl AuthRefusal {
    fn refusal(self) -> Refusal {
        match self {
            AuthRefusal::Unauthenticated => Refusal::Unauthenticated,
            AuthRefusal::NotFound => Refusal::Code(ErrorCode::NotFound),
            AuthRefusal::Blocked => Refusal::Code(ErrorCode::Blocked),
            AuthRefusal::Unavailable => Refusal::Unavailable,
            AuthRefusal::NotOpen(at) => Refusal::NotOpen(at),
            AuthRefusal::Closed => Refusal::Closed,
        }
    }
}

/// Turns a room token into a request to join a lesson. The room-token layer
/// implements this; tests plug in fixed tokens.
pub trait Authenticator: Send + Sync + 'static {
    /// Checks `token` for `lesson` and says who is asking. Must not log the token.
    fn authenticate(
        &self,
        lesson: LessonId,
        token: &str,
    ) -> impl Future<Output = Result<JoinRequest, AuthRefusal>> + Send;
}

/// Signaling settings. Defaults are the product's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignalConfig {
    /// Origins allowed to open a lesson socket, exactly as browsers send
    /// them (`https://school.example`). Empty: nobody.
    pub allowed_origins: Vec<String>,
    /// How often the server pings.
    pub ping_interval: Duration,
    /// Close a connection from which nothing (not even a pong) arrived for this long.
    pub idle_timeout: Duration,
    /// How long a new connection has to send `hello`.
    pub hello_timeout: Duration,
    /// How long one write to a client may take before it is dropped.
    pub send_timeout: Duration,
    /// Messages per second a connection may send, sustained.
    pub rate_per_sec: u32,
    /// Messages a connection may send in a burst.
    pub rate_burst: u32,
    /// Refused (over-limit) messages tolerated in a burst before the connection is closed.
    pub abuse_burst: u32,
    /// Refused messages per second tolerated, sustained.
    pub abuse_per_sec: u32,
    /// Largest WebSocket message the socket reads at all. Above
    /// [`MAX_CLIENT_MSG`] and below this, the client gets a typed `too_large`;
    /// above this, the socket is closed (1009).
    pub max_ws_message: usize,
    /// Messages queued to one connection before it counts as too slow.
    pub outbound_queue: usize,
}

impl Default for SignalConfig {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            ping_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(45),
            hello_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(10),
            rate_per_sec: 20,
            rate_burst: 40,
            abuse_burst: 40,
            abuse_per_sec: 2,
            max_ws_message: 2 * MAX_CLIENT_MSG,
            outbound_queue: 256,
        }
    }
}

/// What the signaling routes need.
pub struct SignalState<A> {
    /// The lessons on this node.
    pub rooms: Rooms,
    /// The cluster, when lessons may live on other nodes: joins are routed
    /// to each lesson's owner. Without it, only lessons running here join.
    pub door: Option<crate::cluster::relay::Door>,
    /// The token layer.
    pub auth: Arc<A>,
    /// Settings.
    pub config: Arc<SignalConfig>,
}

impl<A> Clone for SignalState<A> {
    fn clone(&self) -> Self {
        Self {
            rooms: self.rooms.clone(),
            door: self.door.clone(),
            auth: self.auth.clone(),
            config: self.config.clone(),
        }
    }
}

impl<A> std::fmt::Debug for SignalState<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalState")
            .field("rooms", &self.rooms)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The signaling routes, ready to merge into the gateway's router.
pub fn router<A: Authenticator>(state: SignalState<A>) -> Router {
    Router::new()
        .route("/ws/lessons/{lesson}", get(upgrade::<A>))
        .with_state(state)
}

/// The room token from `Sec-WebSocket-Protocol`, if one is offered.
fn token_from(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|p| p.strip_prefix(TOKEN_PREFIX))
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

fn origin_allowed(headers: &HeaderMap, config: &SignalConfig) -> bool {
    let mut origins = headers.get_all(header::ORIGIN).iter();
    match (origins.next(), origins.next()) {
        (Some(origin), None) => origin
            .to_str()
            .is_ok_and(|o| config.allowed_origins.iter().any(|a| a == o)),
        _ => false,
    }
}

async fn upgrade<A: Authenticator>(
    State(state): State<SignalState<A>>,
    Path(lesson): Path<String>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match admit(&state, &lesson, &headers, ws).await {
        Ok(resp) => resp,
        Err(refusal) => {
            debug!(status = %refusal.status(), ?refusal, "signal: refused before upgrade");
            refusal.into_response()
        }
    }
}

async fn admit<A: Authenticator>(
    state: &SignalState<A>,
    lesson: &str,
    headers: &HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, Refusal> {
    let config = &state.config;
    if !origin_allowed(headers, config) {
        return Err(Refusal::Origin);
    }
    let token = token_from(headers).ok_or(Refusal::Unauthenticated)?;
    let not_found = Refusal::Code(ErrorCode::NotFound);
    let lesson: LessonId = lesson.parse().map_err(|_| not_found)?;
    let req = state
        .auth
        .authenticate(lesson, &token)
        .await
        .map_err(AuthRefusal::refusal)?;
    drop(token);
    let ws = match ws {
        Ok(ws) => ws,
        // Not a WebSocket handshake: axum's own answer (400/426), and no join.
        Err(rejection) => return Ok(rejection.into_response()),
    };
    let room = match &state.door {
        None => state.rooms.get(lesson).ok_or_else(|| {
            if state.rooms.has_ended(lesson) {
                Refusal::Code(ErrorCode::Ended)
            } else {
                not_found
            }
        })?,
        Some(door) => match door.route(lesson).await? {
            crate::cluster::Route::Here(room) => room,
            crate::cluster::Route::Relay { node, url } => {
                return door.relay(&node, &url, lesson, &req, ws, config).await;
            }
        },
    };
    serve(room, lesson, req, ws, config).await
}

/// Joins `req` to the lesson running here and upgrades the connection
/// (a browser's, or a relayed one from another node's door).
pub(crate) async fn serve(
    room: crate::room::RoomHandle,
    lesson: LessonId,
    req: JoinRequest,
    ws: WebSocketUpgrade,
    config: &Arc<SignalConfig>,
) -> Result<Response, Refusal> {
    let (tx, rx) = mpsc::channel(config.outbound_queue.max(1));
    let participant = room.join(req, tx).await.map_err(Refusal::Code)?;
    info!(%lesson, %participant, "signal: joined; upgrading");
    let conn = conn::Conn::new(room, participant, rx, config.clone());
    Ok(ws
        .protocols([SUBPROTOCOL])
        .max_message_size(config.max_ws_message)
        .max_frame_size(config.max_ws_message)
        .on_upgrade(move |socket| {
            // Every event of the connection carries lesson and participant.
            let span = tracing::info_span!("signal", %lesson, %participant);
            tracing::Instrument::instrument(conn.run(socket), span)
        }))
}
