//! Any node is a door: a lesson WebSocket that reaches a node other than
//! the lesson's owner is relayed to the owner, node to node.
//!
//! Why relay rather than send the browser to the owner's own URL: pages
//! keep one address (the school's), nodes need no public names or
//! certificates of their own, and the media never passes through the door
//! anyway (the owner's SDP answer names the owner's UDP address).
//!
//! The door checks the room token exactly as for a local join (signature,
//! single use, lesson, block), then opens a WebSocket to the owner's
//! `/internal/relay/{lesson}` carrying a **node token** in `Authorization`:
//! signed with the deployment's token key, audience `chaperone-cluster`,
//! valid 30 s, naming the person the room token named. The owner verifies
//! it and consumes its `jti` once in the store, so a forged token (another
//! key), a room token presented as a node token, or a replayed one is
//! refused with 401 before any lesson is touched. Then the door pipes
//! frames both ways unchanged (close codes included); the owner polices the
//! connection (hello, size, rate, idleness) as for a browser of its own.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message as AxMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chaperone_lesson::JoinRequest;
use chaperone_protocol::LessonId;
use chaperone_protocol::signal::{ErrorCode, ServerMsg};
use chaperone_tokens::{AccountClaims, TokenIssuer};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as TMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame as TCloseFrame;
use tracing::{debug, info, warn};

use super::{Cluster, Route, RouteError};
use crate::clock::{now, unix_millis};
use crate::errors::Refusal;
use crate::signal::{SUBPROTOCOL, SignalConfig};
use crate::store::{StateStore, Store, UnixMillis};

/// The owner's route for relayed joins.
pub const RELAY_PATH: &str = "/internal/relay/{lesson}";

/// How long a node token is valid.
const NODE_TOKEN_SECS: u64 = 30;

/// The single-use namespace of node tokens' `jti`s.
const CLAIM_NAMESPACE: &str = "node";

/// How long the door waits for the owner to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn route_refusal(e: RouteError) -> Refusal {
    match e {
        RouteError::NotFound => Refusal::Code(ErrorCode::NotFound),
        RouteError::Moving => Refusal::Moving,
        RouteError::Ended => Refusal::Code(ErrorCode::Ended),
        _ => Refusal::Unavailable,
    }
}

/// The door side: routes joins and relays those for other nodes' lessons.
#[derive(Clone, Debug)]
pub struct Door {
    /// This node in the cluster.
    pub cluster: Cluster,
    /// Signs node tokens.
    pub tokens: Arc<TokenIssuer>,
}

impl Door {
    /// Where a join for `lesson` goes.
    pub(crate) async fn route(&self, lesson: LessonId) -> Result<Route, Refusal> {
        self.cluster.route(lesson).await.map_err(route_refusal)
    }

    /// Relays a checked join to the lesson's owner at `url`.
    pub(crate) async fn relay(
        &self,
        node: &str,
        url: &str,
        lesson: LessonId,
        req: &JoinRequest,
        ws: WebSocketUpgrade,
        config: &Arc<SignalConfig>,
    ) -> Result<Response, Refusal> {
        let counted = |kind: &str| {
            if let Some(m) = &self.cluster.inner.metrics {
                m.relayed.with_label_values(&[kind]).inc();
            }
        };
        let token = self.node_token(lesson, req).map_err(|e| {
            warn!(%lesson, error = %e, "cannot sign a node token");
            Refusal::Unavailable
        })?;
        let owner = match connect(url, lesson, &token, config).await {
            Ok(owner) => owner,
            Err(refusal) => {
                counted("refused_by_owner");
                debug!(%lesson, node, ?refusal, "the owner refused the relayed join");
                return Err(refusal);
            }
        };
        counted("out");
        info!(%lesson, node, "signal: relaying to the lesson's owner");
        Ok(ws
            .protocols([SUBPROTOCOL])
            .max_message_size(config.max_ws_message)
            .max_frame_size(config.max_ws_message)
            .on_upgrade(move |client| pipe(client, owner)))
    }

    fn node_token(
        &self,
        lesson: LessonId,
        req: &JoinRequest,
    ) -> Result<String, chaperone_tokens::TokenError> {
        let now_ms = unix_millis();
        let at = now();
        let visitor_until = req.account.visitor_until.map(|until| {
            let left = until.saturating_duration_since(at);
            (now_ms + u64::try_from(left.as_millis()).unwrap_or(u64::MAX)) / 1000
        });
        self.tokens.issue_node(
            now_ms / 1000,
            NODE_TOKEN_SECS,
            random_id(),
            self.cluster.node_id(),
            lesson,
            req.user.clone(),
            req.name.clone(),
            AccountClaims {
                staff: req.account.staff,
                pupil_classes: req.account.pupil_classes.clone(),
                safeguarding_observer: req.account.safeguarding_observer,
                visitor_until,
            },
        )
    }
}

fn random_id() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())
}

type OwnerSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the relayed connection at the owner; a refusal there is the
/// door's refusal (same status and code as a local join would give).
async fn connect(
    url: &str,
    lesson: LessonId,
    token: &str,
    config: &SignalConfig,
) -> Result<OwnerSocket, Refusal> {
    let ws_url = format!(
        "{}{}",
        url.replacen("http", "ws", 1),
        RELAY_PATH.replace("{lesson}", &lesson.to_string())
    );
    let mut request = ws_url.into_client_request().map_err(|e| {
        warn!(error = %e, "bad node URL");
        Refusal::Unavailable
    })?;
    let bearer =
        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| Refusal::Unavailable)?;
    request.headers_mut().insert(header::AUTHORIZATION, bearer);
    let ws_config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(config.max_ws_message))
        .max_frame_size(Some(config.max_ws_message));
    let attempt = tokio_tungstenite::connect_async_with_config(request, Some(ws_config), true);
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
            let status = resp.status().as_u16();
            let code = resp
                .body()
                .as_deref()
                .and_then(|b| ServerMsg::decode(b).ok())
                .and_then(|m| match m {
                    ServerMsg::Error { code, .. } => Some(code),
                    _ => None,
                });
            Err(match (status, code) {
                (_, Some(code)) => Refusal::Code(code),
                (503, None) => Refusal::Moving,
                _ => Refusal::Unavailable,
            })
        }
        Ok(Err(e)) => {
            warn!(error = %e, "cannot reach the lesson's owner");
            Err(Refusal::Moving)
        }
        Err(_) => {
            warn!("the lesson's owner did not answer in time");
            Err(Refusal::Moving)
        }
    }
}

/// Moves frames between the browser and the owner until either side closes;
/// the close (code and reason) is passed on.
async fn pipe(client: WebSocket, owner: OwnerSocket) {
    let (mut client_tx, mut client_rx) = client.split();
    let (mut owner_tx, mut owner_rx) = owner.split();
    let up = async {
        while let Some(Ok(msg)) = client_rx.next().await {
            let out = match msg {
                AxMessage::Text(t) => TMessage::Text(t.as_str().into()),
                AxMessage::Binary(b) => TMessage::Binary(b),
                AxMessage::Ping(p) => TMessage::Ping(p),
                AxMessage::Pong(p) => TMessage::Pong(p),
                AxMessage::Close(frame) => {
                    let frame = frame.map(|f| TCloseFrame {
                        code: f.code.into(),
                        reason: f.reason.as_str().into(),
                    });
                    let _ = owner_tx.send(TMessage::Close(frame)).await;
                    return;
                }
            };
            if owner_tx.send(out).await.is_err() {
                return;
            }
        }
        let _ = owner_tx.close().await;
    };
    let down = async {
        while let Some(Ok(msg)) = owner_rx.next().await {
            let out = match msg {
                TMessage::Text(t) => AxMessage::Text(t.as_str().into()),
                TMessage::Binary(b) => AxMessage::Binary(b),
                TMessage::Ping(p) => AxMessage::Ping(p),
                TMessage::Pong(p) => AxMessage::Pong(p),
                TMessage::Close(frame) => {
                    let frame = frame.map(|f| CloseFrame {
                        code: f.code.into(),
                        reason: f.reason.as_str().into(),
                    });
                    let _ = client_tx.send(AxMessage::Close(frame)).await;
                    return;
                }
                TMessage::Frame(_) => continue,
            };
            if client_tx.send(out).await.is_err() {
                return;
            }
        }
        // The owner went away without a close: the page rejoins.
        let _ = client_tx
            .send(AxMessage::Close(Some(CloseFrame {
                code: 1001,
                reason: "going away".into(),
            })))
            .await;
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

/// The owner side's state.
#[derive(Clone, Debug)]
pub struct RelayState {
    /// This node in the cluster.
    pub cluster: Cluster,
    /// Verifies node tokens.
    pub tokens: Arc<TokenIssuer>,
    /// Consumes node tokens' `jti`s.
    pub store: Store,
    /// Signaling settings (the relayed connection is policed as any other).
    pub config: Arc<SignalConfig>,
}

/// The owner's relay route.
pub fn router(state: RelayState) -> Router {
    Router::new()
        .route(RELAY_PATH, get(accept))
        .with_state(state)
}

async fn accept(
    State(state): State<RelayState>,
    Path(lesson): Path<String>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match accept_checked(&state, &lesson, &headers, ws).await {
        Ok(resp) => resp,
        Err(refusal) => {
            if let Some(m) = &state.cluster.inner.metrics {
                m.relayed.with_label_values(&["refused"]).inc();
            }
            debug!(?refusal, "relayed join refused");
            refusal.into_response()
        }
    }
}

async fn accept_checked(
    state: &RelayState,
    lesson: &str,
    headers: &HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, Refusal> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(Refusal::Unauthenticated)?;
    let lesson: LessonId = lesson
        .parse()
        .map_err(|_| Refusal::Code(ErrorCode::NotFound))?;
    let now_ms = unix_millis();
    let claims = state
        .tokens
        .verify_node(now_ms / 1000, token)
        .map_err(|e| {
            warn!(%lesson, code = e.code(), "node token refused");
            Refusal::Unauthenticated
        })?;
    if claims.lesson != lesson {
        return Err(Refusal::Code(ErrorCode::NotFound));
    }
    let expires = UnixMillis(claims.exp.saturating_add(chaperone_tokens::LEEWAY_SECS) * 1000);
    match state
        .store
        .claim_once(CLAIM_NAMESPACE, &claims.jti, UnixMillis(now_ms), expires)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            warn!(%lesson, door = claims.sub, "replayed node token refused");
            return Err(Refusal::Unauthenticated);
        }
        Err(_) => return Err(Refusal::Unavailable),
    }
    let ws = ws.map_err(|_| Refusal::Code(ErrorCode::Malformed))?;
    let room = match state.cluster.take(lesson).await.map_err(route_refusal)? {
        Route::Here(room) => room,
        // Someone else took it meanwhile: the door's page tries again.
        Route::Relay { .. } => return Err(Refusal::Moving),
    };
    if let Some(m) = &state.cluster.inner.metrics {
        m.relayed.with_label_values(&["in"]).inc();
    }
    let req = crate::auth::join::join_request(claims.user, claims.name, claims.account, now_ms);
    crate::signal::serve(room, lesson, req, ws, &state.config).await
}
