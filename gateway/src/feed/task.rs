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

use super::dial::{self, Answer, Connection, DialError};
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
    /// The lesson's room opened again, this node holding its lease at
    /// this owner epoch.
    Reopen(u64),
}

/// How a lesson's feed finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Finish {
    /// Its `End` was acknowledged: nothing more is ever recorded for it.
    Ended,
    /// A newer owner's feed holds the lesson at the recorder.
    Superseded,
    /// Stopped (shutdown, or a closed lesson's feed reaped).
    Stopped,
}

/// The shell's side of the connection the machine asked for.
enum Link {
    /// None (the machine is waiting to retry).
    Idle,
    /// Being opened.
    Connecting(JoinHandle<Result<Connection, DialError>>),
    /// Open and answered.
    Up(Connection),
}

/// What the connection said.
enum LinkEvent {
    /// What the recorder said (None: the connection closed).
    Answer(Option<Answer>),
    /// Connecting finished.
    Connected(Result<Result<Connection, DialError>, tokio::task::JoinError>),
}

/// Runs `feed` until it is done: on `inbox`, connecting with service tokens
/// from `tokens`, telling the room through `rooms`, its figures in `share`,
/// calling `closed` when a closed lesson's feed has everything acknowledged.
/// Returns how it finished.
pub(super) async fn run(
    mut feed: LessonFeed,
    mut inbox: mpsc::Receiver<Inbox>,
    tokens: Arc<TokenIssuer>,
    rooms: Rooms,
    mut share: LessonShare,
    closed: impl Fn() + Send,
) -> Finish {
    let lesson = feed.lesson();
    info!(%lesson, "lesson feed started");
    let gate = gate(lesson, rooms);
    let mut link = Link::Idle;
    let mut inbox_open = true;
    'run: loop {
        while let Some(output) = feed.poll_output() {
            match output {
                Output::Connect {
                    url,
                    resume_from,
                    epoch,
                } => {
                    link = Link::Connecting(dial::spawn(
                        tokens.clone(),
                        url,
                        lesson,
                        resume_from,
                        epoch,
                    ));
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
                Some(Inbox::Reopen(epoch)) => feed.reopen(epoch),
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
                LinkEvent::Answer(Some(Answer::Ack(up_to))) => feed.handle_ack(now(), up_to),
                LinkEvent::Answer(Some(Answer::Superseded)) => {
                    feed.handle_superseded(now(), "the recorder closed the feed");
                }
                LinkEvent::Answer(None) => feed.handle_lost(now(), "the recorder closed the connection"),
                LinkEvent::Connected(joined) => {
                    let outcome = match joined {
                        Ok(Ok(c)) => {
                            let first_ack = c.first_ack;
                            link = Link::Up(c);
                            Ok(first_ack)
                        }
                        Ok(Err(DialError::Superseded(why))) => {
                            link = Link::Idle;
                            feed.handle_superseded(now(), &why);
                            continue 'run;
                        }
                        Ok(Err(DialError::Failed(why))) => Err(why),
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
    if feed.is_ended() {
        Finish::Ended
    } else if feed.is_superseded() {
        Finish::Superseded
    } else {
        Finish::Stopped
    }
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
        Link::Up(c) => LinkEvent::Answer(c.acks.recv().await),
        Link::Connecting(task) => LinkEvent::Connected(task.await),
        Link::Idle => std::future::pending().await,
    }
}
