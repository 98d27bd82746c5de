//! One participant of a whole-stack lesson test: a signaling connection
//! (messages out, everything received kept) and, on demand, a str0m WebRTC
//! client negotiated over it (see `media_support`).
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chaperone_protocol::ParticipantId;
use chaperone_protocol::signal::{ClientMsg, ErrorCode, ServerMsg};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::media_support::{Answers, Client, Pending, wait_for};
use crate::web_support::{self, Node, Ws, open_ws};

/// Where server offers go once the client exists, and those that came before.
pub type OfferRoute = Arc<Mutex<(Option<mpsc::UnboundedSender<String>>, Vec<String>)>>;

/// One participant's signaling: messages out, everything received kept.
pub struct Peer {
    pub out: mpsc::UnboundedSender<ClientMsg>,
    pub inbox: Arc<Mutex<Vec<ServerMsg>>>,
    /// Where server offers go; those that arrive before the client exists wait.
    pub offers: OfferRoute,
}

impl Peer {
    pub fn new(ws: Ws) -> Peer {
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<ClientMsg>();
        tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if sink
                    .send(Message::text(serde_json::to_string(&m).unwrap()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            // Dropping the sender closes the socket: the participant leaves.
            let _ = sink.close().await;
        });
        let inbox = Arc::new(Mutex::new(Vec::new()));
        let offers: OfferRoute = Arc::default();
        let (i, o) = (inbox.clone(), offers.clone());
        tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                if let Message::Text(t) = msg {
                    let m = ServerMsg::decode(t.as_bytes()).unwrap();
                    if let ServerMsg::Offer { sdp } = &m {
                        let mut o = o.lock().unwrap();
                        match o.0.as_ref() {
                            Some(tx) => {
                                let _ = tx.send(sdp.clone());
                            }
                            None => o.1.push(sdp.clone()),
                        }
                    }
                    i.lock().unwrap().push(m);
                }
            }
        });
        Peer { out, inbox, offers }
    }

    pub fn send(&self, m: ClientMsg) {
        self.out.send(m).unwrap();
    }

    pub fn seen(&self, f: impl Fn(&ServerMsg) -> bool) -> bool {
        self.inbox.lock().unwrap().iter().any(f)
    }

    pub async fn wait(&self, what: &str, f: impl Fn(&ServerMsg) -> bool) {
        wait_for(Duration::from_secs(15), || self.seen(&f))
            .await
            .unwrap_or_else(|_| panic!("{what}: got {:?}", self.inbox.lock().unwrap()));
    }

    pub fn you(&self) -> ParticipantId {
        self.inbox
            .lock()
            .unwrap()
            .iter()
            .find_map(|m| match m {
                ServerMsg::Welcome { you, .. } => Some(*you),
                _ => None,
            })
            .unwrap()
    }

    pub fn refused(&self, code: ErrorCode) -> bool {
        self.seen(|m| matches!(m, ServerMsg::Error { code: c, .. } if *c == code))
    }

    /// Negotiates a str0m client over this signaling connection.
    pub async fn media(&self, screen: bool) -> Client {
        let (pending, offer) = Pending::new(screen).await.unwrap();
        self.send(ClientMsg::Offer { sdp: offer });
        self.wait("an answer", |m| matches!(m, ServerMsg::Answer { .. }))
            .await;
        let answer = self
            .inbox
            .lock()
            .unwrap()
            .iter()
            .find_map(|m| match m {
                ServerMsg::Answer { sdp } => Some(sdp.clone()),
                _ => None,
            })
            .unwrap();
        let (answers_tx, mut answers_rx) = mpsc::unbounded_channel::<String>();
        let out = self.out.clone();
        tokio::spawn(async move {
            while let Some(sdp) = answers_rx.recv().await {
                let _ = out.send(ClientMsg::Answer { sdp });
            }
        });
        let client = pending
            .finish(self.you(), answer, Answers::Channel(answers_tx))
            .unwrap();
        {
            let mut o = self.offers.lock().unwrap();
            let tx = client.offer_sink().1;
            for sdp in o.1.drain(..) {
                let _ = tx.send(sdp);
            }
            o.0 = Some(tx);
        }
        client.wait_connected().await.unwrap();
        client
    }
}

/// A new lesson socket for a signed-in browser, with a fresh room token:
/// `Err(status)` if the upgrade is refused.
pub async fn connect(node: &Node, b: &mut web_support::Browser, lesson: &str) -> Result<Ws, u16> {
    let token = b.room_token(lesson).await.unwrap().json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    open_ws(node, lesson, &token).await.unwrap()
}

pub async fn join(node: &Node, who: &str, lesson: &str) -> Peer {
    let mut b = node.browser();
    b.login_ok(who).await.unwrap();
    let token = b.room_token(lesson).await.unwrap().json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    Peer::new(open_ws(node, lesson, &token).await.unwrap().unwrap())
}

/// Frames received by `c` stop growing: read, settle, read again.
pub async fn frozen(read: impl Fn() -> u64) -> (u64, u64) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a = read();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    (a, read())
}
