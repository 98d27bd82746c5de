//! The shell around one lesson's feed: a task that waits on the lesson's
//! inbox, its connection (the outcome of connecting, then acknowledgements),
//! room on the connection's writer, and the machine's next timeout; hands
//! each to the state machine ([`super::lesson::LessonFeed`]) with the time;
//! and carries out what the machine asks (connect, send, drop the
//! connection, tell the room, update the node's figures).
//!
//! What it must never do: decide. Every rule of the feed (numbering,
//! replay, failover, backoff, the gate, `End`, the drain) is the machine's;
//! this only moves bytes and reads the clock.

use std::sync::Arc;

use chaperone_protocol::LessonId;
use chaperone_protocol::feed::FeedFrame;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tracing::info;

use super::dial::{self, Connection};
use super::lesson::{Item, LessonFeed, Output, Transmit};
use super::status::LessonShare;
use crate::auth::tokens::TokenIssuer;
use crate::clock::{now, unix_millis};
use crate::room::Rooms;

/// What the hub gives a lesson's feed.
#[derive(Debug)]
pub(super) enum Inbox {
    /// A record or media frame.
    Item(Item),
    /// Shutdown (or the hub is done with a closed lesson's feed): drain and stop.
    Stop,
    /// The lesson's room closed for idleness: write everything and say so.
    Close,
    /// The lesson's room opened again.
    Reopen,
}

/// The shell's side of the connection the machine asked for.
enum Link {
    /// None (the machine is waiting to retry).
    Idle,
    /// Being opened.
    Connecting(JoinHandle<Result<Connection, String>>),
    /// Open and answered.
    Up(Connection),
}

/// What the connection said.
enum LinkEvent {
    /// An acknowledgement (None: the connection closed).
    Ack(Option<u64>),
    /// Connecting finished.
    Connected(Result<Result<Connection, String>, tokio::task::JoinError>),
}

/// Runs `feed` until it is done: on `inbox`, connecting with service tokens
/// from `tokens`, telling the room through `rooms`, its figures in `share`,
/// calling `closed` when a closed lesson's feed has everything acknowledged.
/// Returns whether the lesson's `End` was acknowledged.
pub(super) async fn run(
    mut feed: LessonFeed,
    mut inbox: mpsc::Receiver<Inbox>,
    tokens: Arc<TokenIssuer>,
    rooms: Rooms,
    mut share: LessonShare,
    closed: impl Fn() + Send,
) -> bool {
    let lesson = feed.lesson();
    info!(%lesson, "lesson feed started");
    let gate = gate(lesson, rooms);
    let mut link = Link::Idle;
    let mut inbox_open = true;
    'run: loop {
        while let Some(output) = feed.poll_output() {
            match output {
                Output::Connect { url, resume_from } => {
                    link = Link::Connecting(dial::spawn(tokens.clone(), url, lesson, resume_from));
                }
                Output::Disconnect => link = Link::Idle,
                Output::Gate(attached) => {
                    share.gate(attached);
                    gate.send_replace(attached);
                }
                Output::Figures(f) => share.figures(f.buffer_bytes, f.spool_bytes, f.lag_micros),
                Output::Done => break 'run,
                Output::Closed => closed(),
            }
        }
        let timer = feed.next_timeout();
        let writer = match &link {
            Link::Up(c) if feed.wants_send() => Some(c.writer.clone()),
            _ => None,
        };
        tokio::select! {
            item = inbox.recv(), if inbox_open => match item {
                Some(Inbox::Item(item)) => feed.handle_item(now(), wall_micros(), item),
                Some(Inbox::Stop) | None => {
                    inbox_open = false;
                    feed.stop(now());
                }
                Some(Inbox::Close) => feed.close(now()),
                Some(Inbox::Reopen) => feed.reopen(),
            },
            permit = reserve(writer) => match permit {
                Some(permit) => match feed.poll_transmit(now()) {
                    Some(Transmit::Frame { bytes, replay, .. }) => {
                        permit.send(Message::Binary(bytes));
                        if replay {
                            share.replayed();
                        }
                    }
                    Some(Transmit::Flush) => {
                        if let Ok(flush) = FeedFrame::Flush.to_bytes() {
                            permit.send(Message::Binary(flush.into()));
                        }
                    }
                    None => {}
                },
                None => feed.handle_lost(now(), "the connection's writer stopped"),
            },
            event = link_event(&mut link) => match event {
                LinkEvent::Ack(Some(up_to)) => feed.handle_ack(now(), up_to),
                LinkEvent::Ack(None) => feed.handle_lost(now(), "the recorder closed the connection"),
                LinkEvent::Connected(joined) => {
                    let outcome = match joined {
                        Ok(Ok(c)) => {
                            let first_ack = c.first_ack;
                            link = Link::Up(c);
                            Ok(first_ack)
                        }
                        Ok(Err(why)) => Err(why),
                        Err(e) => Err(e.to_string()),
                    };
                    if outcome.is_err() {
                        link = Link::Idle;
                    }
                    feed.handle_connected(now(), outcome);
                }
            },
            () = tokio::time::sleep_until(timer.into()) => feed.handle_timeout(now(), wall_micros()),
        }
    }
    info!(%lesson, frames = feed.frames(), "lesson feed done");
    // The spool file goes with the machine's log; the lesson's share of the
    // node's figures with `share`.
    feed.is_ended()
}

/// The wall clock, µs since the Unix epoch (at the clock module's
/// millisecond resolution).
fn wall_micros() -> u64 {
    unix_millis() * 1000
}

/// Tells the lesson's room whether its recording is attached, in order and
/// without the feed ever waiting on the room's inbox: the feed sets the
/// latest value, this task delivers it (a value superseded before delivery
/// is skipped, never reordered). It ends with the feed.
fn gate(lesson: LessonId, rooms: Rooms) -> watch::Sender<bool> {
    let (tx, mut rx) = watch::channel(false);
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let attached = *rx.borrow_and_update();
            if let Some(room) = rooms.get(lesson) {
                room.recorder(attached).await;
            }
        }
    });
    tx
}

/// Room for one frame on the connection's writer (None: the writer
/// stopped); never ready without a writer.
async fn reserve(writer: Option<mpsc::Sender<Message>>) -> Option<mpsc::OwnedPermit<Message>> {
    match writer {
        Some(w) => w.reserve_owned().await.ok(),
        None => std::future::pending().await,
    }
}

/// The next thing the connection says; never ready without one.
async fn link_event(link: &mut Link) -> LinkEvent {
    match link {
        Link::Up(c) => LinkEvent::Ack(c.acks.recv().await),
        Link::Connecting(task) => LinkEvent::Connected(task.await),
        Link::Idle => std::future::pending().await,
    }
}
