//! [`RoomHandle`]: the cheap, cloneable handle through which connections,
//! the recorder feed, the media plane and the cluster relay talk to one
//! lesson task. It only queues commands; it never decides anything.

use chaperone_lesson::JoinRequest;
use chaperone_protocol::signal::{ClientMsg, ErrorCode};
use chaperone_protocol::{LessonId, ParticipantId, UserRef};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use super::Outbound;

/// What a lesson task is asked to do.
#[derive(Debug)]
pub(super) enum Command {
    Join {
        req: Box<JoinRequest>,
        conn: mpsc::Sender<Outbound>,
        reply: oneshot::Sender<Result<ParticipantId, ErrorCode>>,
    },
    Message {
        from: ParticipantId,
        msg: ClientMsg,
    },
    Leave {
        participant: ParticipantId,
    },
    Recorder {
        attached: bool,
    },
    Block {
        user: UserRef,
    },
    Unblock {
        user: UserRef,
    },
    ServerOffer {
        participant: ParticipantId,
        sdp: String,
    },
    Snapshot {
        reply: oneshot::Sender<chaperone_lesson::Snapshot>,
    },
    VideoPaused {
        participant: ParticipantId,
        paused: bool,
    },
    Window,
    Shutdown,
}

/// A cheap, cloneable handle to one lesson's task.
#[derive(Clone, Debug)]
pub struct RoomHandle {
    pub(super) lesson: LessonId,
    pub(super) tx: mpsc::Sender<Command>,
    /// Set by the task when it stops because the lesson ended.
    pub(super) ended: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl RoomHandle {
    /// The lesson.
    pub fn lesson(&self) -> LessonId {
        self.lesson
    }

    /// Whether the lesson task has stopped.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Whether the lesson ended (its task stopped, or is stopping, for that).
    pub fn is_ended(&self) -> bool {
        self.ended.load(std::sync::atomic::Ordering::Acquire)
    }

    async fn send(&self, cmd: Command) -> bool {
        self.tx.send(cmd).await.is_ok()
    }

    /// Someone authenticated asks to join; `conn` receives everything the
    /// lesson says to them from now on (starting with `Welcome`). A stopped
    /// lesson answers `NotFound`, as for a lesson that was never here.
    pub async fn join(
        &self,
        req: JoinRequest,
        conn: mpsc::Sender<Outbound>,
    ) -> Result<ParticipantId, ErrorCode> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Join {
            req: Box::new(req),
            conn,
            reply,
        };
        if !self.send(cmd).await {
            return Err(ErrorCode::NotFound);
        }
        rx.await.unwrap_or(Err(ErrorCode::NotFound))
    }

    /// A message from a joined participant's connection.
    pub async fn message(&self, from: ParticipantId, msg: ClientMsg) {
        self.send(Command::Message { from, msg }).await;
    }

    /// A participant's connection ended.
    pub async fn leave(&self, participant: ParticipantId) {
        self.send(Command::Leave { participant }).await;
    }

    /// [`RoomHandle::leave`] from a synchronous context (a drop guard): never
    /// waits, and never loses the leave while a runtime is running.
    pub fn leave_soon(&self, participant: ParticipantId) {
        match self.tx.try_send(Command::Leave { participant }) {
            Ok(()) | Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(cmd)) => {
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    let tx = self.tx.clone();
                    rt.spawn(async move {
                        let _ = tx.send(cmd).await;
                    });
                }
            }
        }
    }

    /// The recorder feed became attached (acknowledged) or was lost.
    pub async fn recorder(&self, attached: bool) {
        self.send(Command::Recorder { attached }).await;
    }

    /// A user was blocked everywhere.
    pub async fn block(&self, user: UserRef) {
        self.send(Command::Block { user }).await;
    }

    /// A block was lifted.
    pub async fn unblock(&self, user: UserRef) {
        self.send(Command::Unblock { user }).await;
    }

    /// The media plane wants to renegotiate with a participant (a
    /// [`crate::media::MediaEvent::Offer`]); it goes to them as `ServerMsg::Offer`.
    pub async fn server_offer(&self, participant: ParticipantId, sdp: String) {
        self.send(Command::ServerOffer { participant, sdp }).await;
    }

    /// The lesson's control state now (`None` if its task has stopped).
    pub async fn snapshot(&self) -> Option<chaperone_lesson::Snapshot> {
        let (reply, rx) = oneshot::channel();
        if !self.send(Command::Snapshot { reply }).await {
            return None;
        }
        rx.await.ok()
    }

    /// The media plane paused (or resumed) video to a participant whose
    /// link is too weak (a [`crate::media::MediaEvent::VideoPaused`]); it
    /// goes to them as `ServerMsg::MediaQuality`.
    pub async fn video_paused(&self, participant: ParticipantId, paused: bool) {
        self.send(Command::VideoPaused {
            participant,
            paused,
        })
        .await;
    }

    /// The lesson's window may have changed (its staff extended it): the
    /// task reads its close again and tells the lesson core.
    pub async fn window_changed(&self) {
        self.send(Command::Window).await;
    }

    /// Stops the lesson task; every connection is closed.
    pub async fn shutdown(&self) {
        self.send(Command::Shutdown).await;
    }
}
