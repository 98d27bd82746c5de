//! Shared pieces of the signaling tests: a lesson with a teacher, two pupils
//! of class 7A and an outsider; a test [`Authenticator`] mapping fixed test
//! tokens to join requests (the seam where the room-token layer plugs in);
//! an in-process server on 127.0.0.1:0; and a `tokio-tungstenite` client.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use chaperone_gateway::room::{RoomDeps, RoomHandle, RoomRecord, Rooms};
use chaperone_gateway::signal::{
    AuthRefusal, Authenticator, SUBPROTOCOL, SignalConfig, SignalState, TOKEN_PREFIX, router,
};
use chaperone_lesson::{Account, JoinRequest, LessonConfig, LessonSetup};
use chaperone_protocol::signal::{ClientMsg, PROTOCOL_VERSION, ServerMsg};
use chaperone_protocol::{LessonId, UserRef};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Upper bound for waiting on any one message.
pub const STEP: Duration = Duration::from_secs(5);

/// The origin the test server allows.
pub const ORIGIN: &str = "https://school.test";

pub const LESSON: LessonId = LessonId::from_bytes([0x5a; 16]);
pub const OTHER_LESSON: LessonId = LessonId::from_bytes([0x77; 16]);

pub fn user(subject: &str) -> UserRef {
    UserRef::new("https://idp.test", subject).expect("non-empty test parts")
}

pub fn setup() -> LessonSetup {
    LessonSetup {
        id: LESSON,
        class: "7A".into(),
        teachers: vec![user("teacher")],
        assistants: vec![],
        extra_pupils: vec![],
    }
}

pub fn teacher() -> JoinRequest {
    JoinRequest {
        user: user("teacher"),
        name: "Ms Teacher".into(),
        account: Account {
            staff: true,
            ..Account::default()
        },
    }
}

pub fn pupil(subject: &str, class: &str) -> JoinRequest {
    JoinRequest {
        user: user(subject),
        name: subject.to_uppercase(),
        account: Account {
            pupil_classes: vec![class.into()],
            ..Account::default()
        },
    }
}

/// Test tokens: `t-teacher`, `t-ann`, `t-bob` (7A), `t-eve` (8B, not rostered).
#[derive(Debug)]
pub struct TestAuth {
    tokens: HashMap<String, JoinRequest>,
}

impl TestAuth {
    pub fn new() -> Self {
        let tokens = [
            ("t-teacher", teacher()),
            ("t-ann", pupil("ann", "7A")),
            ("t-bob", pupil("bob", "7A")),
            ("t-eve", pupil("eve", "8B")),
        ]
        .into_iter()
        .map(|(t, r)| (t.to_owned(), r))
        .collect();
        Self { tokens }
    }
}

impl Authenticator for TestAuth {
    async fn authenticate(
        &self,
        _lesson: LessonId,
        token: &str,
    ) -> Result<JoinRequest, AuthRefusal> {
        self.tokens
            .get(token)
            .cloned()
            .ok_or(AuthRefusal::Unauthenticated)
    }
}

/// A running signaling server with one lesson (`LESSON`).
pub struct Server {
    pub addr: SocketAddr,
    pub room: RoomHandle,
    pub rooms: Rooms,
    pub records: mpsc::Receiver<RoomRecord>,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn test_config() -> SignalConfig {
    SignalConfig {
        allowed_origins: vec![ORIGIN.into()],
        ..SignalConfig::default()
    }
}

pub async fn start() -> anyhow::Result<Server> {
    start_with(test_config(), LessonConfig::default()).await
}

pub async fn start_with(config: SignalConfig, lesson: LessonConfig) -> anyhow::Result<Server> {
    let (records_tx, records) = mpsc::channel(10_000);
    let rooms = Rooms::new(RoomDeps {
        records: records_tx,
        media: None,
        persist: None,
    });
    let room = rooms.open(setup(), lesson);
    let app = router(SignalState {
        rooms: rooms.clone(),
        door: None,
        auth: Arc::new(TestAuth::new()),
        config: Arc::new(config),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
    });
    Ok(Server {
        addr,
        room,
        rooms,
        records,
        stop: Some(stop),
    })
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A refusal before the upgrade.
#[derive(Debug)]
pub struct Refused {
    pub status: StatusCode,
    pub body: String,
}

/// A lesson WebSocket client.
pub struct Client {
    ws: Ws,
}

impl Server {
    pub fn url(&self, lesson: LessonId) -> String {
        format!("ws://{}/ws/lessons/{lesson}", self.addr)
    }

    /// Opens a socket with `token` and `origin`; `Err` carries an HTTP refusal.
    pub async fn open(
        &self,
        lesson: LessonId,
        token: Option<&str>,
        origin: Option<&str>,
    ) -> anyhow::Result<Result<Client, Refused>> {
        let mut req = self.url(lesson).into_client_request()?;
        if let Some(origin) = origin {
            req.headers_mut()
                .insert("origin", HeaderValue::from_str(origin)?);
        }
        let protocols = match token {
            Some(t) => format!("{SUBPROTOCOL}, {TOKEN_PREFIX}{t}"),
            None => SUBPROTOCOL.to_owned(),
        };
        req.headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_str(&protocols)?);
        match tokio::time::timeout(STEP, tokio_tungstenite::connect_async(req)).await? {
            Ok((ws, resp)) => {
                let chosen = resp.headers().get("sec-websocket-protocol");
                if chosen.and_then(|v| v.to_str().ok()) != Some(SUBPROTOCOL) {
                    bail!("server selected {chosen:?}, not {SUBPROTOCOL}");
                }
                Ok(Ok(Client { ws }))
            }
            Err(tungstenite::Error::Http(resp)) => {
                let status = resp.status();
                let body = resp
                    .into_body()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                Ok(Err(Refused { status, body }))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Opens `path` (a raw, possibly invalid, lesson path); expects a refusal.
    pub async fn open_path(&self, path: &str, token: Option<&str>) -> anyhow::Result<Refused> {
        let mut req = format!("ws://{}{path}", self.addr).into_client_request()?;
        req.headers_mut()
            .insert("origin", HeaderValue::from_static(ORIGIN));
        if let Some(t) = token {
            let protocols = format!("{SUBPROTOCOL}, {TOKEN_PREFIX}{t}");
            req.headers_mut()
                .insert("sec-websocket-protocol", HeaderValue::from_str(&protocols)?);
        }
        match tokio::time::timeout(STEP, tokio_tungstenite::connect_async(req)).await? {
            Ok(_) => bail!("upgraded, but a refusal was expected"),
            Err(tungstenite::Error::Http(resp)) => {
                let status = resp.status();
                let body = resp
                    .into_body()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                Ok(Refused { status, body })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Connects with a token from the allowed origin and says hello.
    pub async fn connect(&self, token: &str) -> anyhow::Result<Client> {
        let mut c = self
            .open(LESSON, Some(token), Some(ORIGIN))
            .await?
            .map_err(|r| anyhow!("refused: {r:?}"))?;
        c.send(&ClientMsg::Hello {
            version: PROTOCOL_VERSION,
        })
        .await?;
        Ok(c)
    }

    /// Expects a refusal before the upgrade.
    pub async fn refused(
        &self,
        lesson: LessonId,
        token: Option<&str>,
        origin: Option<&str>,
    ) -> anyhow::Result<Refused> {
        match self.open(lesson, token, origin).await? {
            Ok(_) => bail!("upgraded, but a refusal was expected"),
            Err(r) => Ok(r),
        }
    }
}

impl Client {
    pub async fn send(&mut self, msg: &ClientMsg) -> anyhow::Result<()> {
        let text = serde_json::to_string(msg)?;
        self.send_raw(text).await
    }

    pub async fn send_raw(&mut self, text: String) -> anyhow::Result<()> {
        self.ws.send(Message::text(text)).await?;
        Ok(())
    }

    /// The next server message (skipping pings), within [`STEP`].
    pub async fn recv(&mut self) -> anyhow::Result<ServerMsg> {
        loop {
            let next = tokio::time::timeout(STEP, self.ws.next())
                .await
                .context("no message in time")?;
            match next {
                Some(Ok(Message::Text(t))) => return Ok(ServerMsg::decode(t.as_bytes())?),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => bail!("expected a message, got {other:?}"),
            }
        }
    }

    /// Reads until `pred` matches; returns everything read, the match last.
    pub async fn recv_until(
        &mut self,
        mut pred: impl FnMut(&ServerMsg) -> bool,
    ) -> anyhow::Result<Vec<ServerMsg>> {
        let mut seen = Vec::new();
        loop {
            let m = self
                .recv()
                .await
                .with_context(|| format!("after {seen:?}"))?;
            let done = pred(&m);
            seen.push(m);
            if done {
                return Ok(seen);
            }
        }
    }

    /// Reads until the server closes; returns the close code (skipping
    /// messages before it).
    pub async fn closed(&mut self) -> anyhow::Result<u16> {
        loop {
            let next = tokio::time::timeout(STEP, self.ws.next())
                .await
                .context("not closed in time")?;
            match next {
                Some(Ok(Message::Close(Some(frame)))) => return Ok(u16::from(frame.code)),
                Some(Ok(Message::Close(None))) => return Ok(u16::from(CloseCode::Status)),
                Some(Ok(_)) => continue,
                Some(Err(e)) => bail!("read failed before a close frame: {e}"),
                None => bail!("stream ended without a close frame"),
            }
        }
    }

    /// Reads until the connection ends, however it ends (close frame,
    /// reset); fails only if it stays open.
    pub async fn gone(&mut self) -> anyhow::Result<()> {
        loop {
            let next = tokio::time::timeout(STEP, self.ws.next())
                .await
                .context("still open")?;
            match next {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Ok(()),
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Reads until `n` pings have arrived (tungstenite answers each with a
    /// pong as it reads); fails if the connection ends first.
    pub async fn count_pings(&mut self, n: usize) -> anyhow::Result<usize> {
        let mut pings = 0;
        while pings < n {
            let next = tokio::time::timeout(STEP, self.ws.next())
                .await
                .context("no ping in time")?;
            match next {
                Some(Ok(Message::Ping(_))) => pings += 1,
                Some(Ok(Message::Text(_) | Message::Pong(_))) => {}
                other => bail!("connection ended after {pings} pings: {other:?}"),
            }
        }
        Ok(pings)
    }

    pub async fn close(mut self) -> anyhow::Result<()> {
        self.ws.close(None).await?;
        // Drain to the server's close reply so the leave has happened.
        while let Ok(Some(Ok(_))) = tokio::time::timeout(STEP, self.ws.next()).await {}
        Ok(())
    }
}
