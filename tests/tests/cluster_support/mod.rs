//! Lesson WebSocket clients that can join a [`Cluster`] (the launcher,
//! shared with the load generator's `failover` and `drain` scenarios)
//! through any node.
#![allow(dead_code, clippy::unwrap_used)]

pub mod class;

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
pub use chaperone_loadtest::cluster::Cluster;
use chaperone_protocol::LessonId;
use chaperone_protocol::signal::{ClientMsg, PROTOCOL_VERSION, ServerMsg};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// What a lesson client saw.
#[derive(Debug, Clone)]
pub enum Seen {
    Msg(ServerMsg),
    Closed(Option<u16>),
}

/// A lesson WebSocket client.
pub struct Client {
    pub name: String,
    rx: mpsc::UnboundedReceiver<Seen>,
    tx: mpsc::UnboundedSender<Option<ClientMsg>>,
    pub seen: Vec<Seen>,
}

/// Why a connection was refused before the upgrade: status and body.
#[derive(Debug)]
pub struct Refused(pub u16, pub String);

impl Client {
    /// Connects to `node` (any node) with `token`, says hello.
    pub async fn connect(
        name: &str,
        node: &str,
        origin: &str,
        lesson: LessonId,
        token: &str,
    ) -> Result<Self, Refused> {
        let url = format!("{}/ws/lessons/{lesson}", node.replacen("http", "ws", 1));
        let mut req = url.into_client_request().unwrap();
        req.headers_mut()
            .insert("origin", HeaderValue::from_str(origin).unwrap());
        req.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(&format!("chaperone.v1, chaperone.token.{token}")).unwrap(),
        );
        let attempt = tokio_tungstenite::connect_async(req);
        let (ws, _) = match tokio::time::timeout(Duration::from_secs(10), attempt).await {
            Err(_) => return Err(Refused(0, "timed out".into())),
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
                let body = resp
                    .body()
                    .as_deref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                return Err(Refused(resp.status().as_u16(), body));
            }
            Ok(Err(e)) => return Err(Refused(0, e.to_string())),
            Ok(Ok(ok)) => ok,
        };
        let (mut sink, mut stream) = ws.split();
        let (seen_tx, rx) = mpsc::unbounded_channel();
        let (tx, mut out) = mpsc::unbounded_channel::<Option<ClientMsg>>();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    m = out.recv() => match m {
                        Some(Some(msg)) => {
                            let text = serde_json::to_string(&msg).unwrap();
                            if sink.send(Message::text(text)).await.is_err() { break; }
                        }
                        _ => { let _ = sink.close().await; break; }
                    },
                    m = stream.next() => match m {
                        Some(Ok(Message::Text(t))) => {
                            if let Ok(msg) = serde_json::from_str::<ServerMsg>(t.as_str()) {
                                let _ = seen_tx.send(Seen::Msg(msg));
                            }
                        }
                        Some(Ok(Message::Close(f))) => {
                            let _ = seen_tx.send(Seen::Closed(f.map(|f| u16::from(f.code))));
                            break;
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => {
                            let _ = seen_tx.send(Seen::Closed(None));
                            break;
                        }
                    },
                }
            }
        });
        let client = Self {
            name: name.to_owned(),
            rx,
            tx,
            seen: Vec::new(),
        };
        client.send(ClientMsg::Hello {
            version: PROTOCOL_VERSION,
        });
        Ok(client)
    }

    pub fn send(&self, msg: ClientMsg) {
        let _ = self.tx.send(Some(msg));
    }

    pub fn close(&self) {
        let _ = self.tx.send(None);
    }

    /// Waits (at most `within`) for a message `pick` accepts; every message
    /// seen is kept in [`Self::seen`].
    pub async fn wait_for<T>(
        &mut self,
        within: Duration,
        mut pick: impl FnMut(&Seen) -> Option<T>,
    ) -> Result<T> {
        // Earlier messages first.
        for s in &self.seen {
            if let Some(t) = pick(s) {
                return Ok(t);
            }
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(s)) => {
                    let found = pick(&s);
                    self.seen.push(s);
                    if let Some(t) = found {
                        return Ok(t);
                    }
                }
                Ok(None) => bail!("{}: connection task ended", self.name),
                Err(_) => bail!(
                    "{}: not seen within {within:?}; saw {:?}",
                    self.name,
                    self.seen
                ),
            }
        }
    }

    /// Forgets what was seen (before a step whose answers matter).
    pub fn clear(&mut self) {
        while let Ok(s) = self.rx.try_recv() {
            self.seen.push(s);
        }
        self.seen.clear();
    }

    /// The latest message `pick` accepts among everything seen so far.
    pub fn latest<T>(&mut self, pick: impl FnMut(&Seen) -> Option<T>) -> Option<T> {
        while let Ok(s) = self.rx.try_recv() {
            self.seen.push(s);
        }
        self.seen.iter().rev().find_map(pick)
    }
}

/// Connects through the first node of `doors` that lets the person in,
/// retrying every 250 ms until `within` passes; a refusal with a final
/// code (401, 403, 404, 410) is returned at once.
pub async fn rejoin(
    name: &str,
    doors: &[String],
    origin: &str,
    lesson: LessonId,
    token: impl Fn() -> String,
    within: Duration,
) -> Result<Client, Refused> {
    let deadline = Instant::now() + within;
    let mut last = Refused(0, "never tried".into());
    let mut i = 0;
    while Instant::now() < deadline {
        let door = &doors[i % doors.len()];
        i += 1;
        match Client::connect(name, door, origin, lesson, &token()).await {
            Ok(c) => return Ok(c),
            Err(r) if matches!(r.0, 401 | 403 | 404 | 410) => return Err(r),
            Err(r) => last = r,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(last)
}

/// The id a `Welcome` gave.
pub fn welcome(s: &Seen) -> Option<chaperone_protocol::ParticipantId> {
    match s {
        Seen::Msg(ServerMsg::Welcome { you, .. }) => Some(*you),
        _ => None,
    }
}
