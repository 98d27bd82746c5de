//! Opening one feed connection to a recorder: the WebSocket upgrade with a
//! service token for the lesson, `Hello`, the recorder's first `Ack`; then a
//! writer task (frames out, flushed in batches) and a reader task (acks in).
//!
//! What it must never do: decide anything about the feed. It reports what
//! the recorder said (its first `Ack`, then every `Ack`) or why the
//! connection failed, and the lesson's state machine ([`super::lesson`])
//! decides. Dropping a [`Connection`] stops both of its tasks.

use std::sync::Arc;
use std::time::Duration;

use chaperone_protocol::LessonId;
use chaperone_protocol::feed::{FeedFrame, MAX_FEED_FRAME, SUPERSEDED_CLOSE_CODE};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tracing::warn;

use crate::auth::tokens::TokenIssuer;
use crate::clock::unix_millis;

/// Frames queued on one connection's writer.
const WRITER_QUEUE: usize = 256;
/// Longest wait for a recorder to accept a connection and answer `Hello`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Lifetime of the service token presented when connecting.
const SERVICE_TOKEN_SECS: u64 = 60;

/// What the recorder says on an open connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    /// Every wire seq up to this is durable.
    Ack(u64),
    /// The recorder closed the feed because a newer owner's feed holds the
    /// lesson.
    Superseded,
}

/// Why a connection was not opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum DialError {
    /// The recorder was not reached, or did not answer as it should.
    #[error("{0}")]
    Failed(String),
    /// The recorder refused the feed: a newer owner's feed holds the lesson.
    #[error("superseded: {0}")]
    Superseded(String),
}

impl From<String> for DialError {
    fn from(why: String) -> Self {
        DialError::Failed(why)
    }
}

/// An open, answered feed connection.
#[derive(Debug)]
pub(super) struct Connection {
    /// Frames to write (the writer task's queue).
    pub(super) writer: mpsc::Sender<Message>,
    /// The recorder's answers, in order; closed when the connection is.
    pub(super) acks: mpsc::Receiver<Answer>,
    /// What the recorder said it holds, answering `Hello`.
    pub(super) first_ack: u64,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Connection {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Connects `lesson`'s feed to the recorder at `url`, as the lesson's owner
/// at `owner_epoch`, in a task of its own (bounded by [`CONNECT_TIMEOUT`]
/// per step).
pub(super) fn spawn(
    tokens: Arc<TokenIssuer>,
    url: String,
    lesson: LessonId,
    resume_from: u64,
    owner_epoch: u64,
) -> JoinHandle<Result<Connection, DialError>> {
    tokio::spawn(async move {
        let token = tokens
            .issue_service(
                unix_millis() / 1000,
                SERVICE_TOKEN_SECS,
                format!("{:032x}", rand::random::<u128>()),
                lesson,
            )
            .map_err(|e| format!("cannot issue a service token: {e}"))?;
        open(url, token, lesson, resume_from, owner_epoch).await
    })
}

/// Opens a feed connection: upgrade with the service token, `Hello`, and
/// the recorder's first `Ack`.
async fn open(
    url: String,
    token: String,
    lesson: LessonId,
    resume_from: u64,
    owner_epoch: u64,
) -> Result<Connection, DialError> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut request = format!("{}/feed", url.trim_end_matches('/'))
        .into_client_request()
        .map_err(|e| format!("bad recorder URL {url}: {e}"))?;
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .map_err(|_| "token is not a header value".to_owned())?,
    );
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_FEED_FRAME + 4))
        .max_frame_size(Some(MAX_FEED_FRAME + 4));
    let (ws, _) = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_tungstenite::connect_async_with_config(request, Some(config), false),
    )
    .await
    .map_err(|_| format!("{url}: connect timed out"))?
    .map_err(|e| format!("{url}: {e}"))?;
    let (mut sink, mut stream) = ws.split();
    let hello = FeedFrame::Hello {
        lesson,
        resume_from,
        owner_epoch,
    }
    .to_bytes()
    .map_err(|e| e.to_string())?;
    sink.send(Message::Binary(hello.into()))
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let first = tokio::time::timeout(CONNECT_TIMEOUT, async {
        loop {
            match stream.next().await {
                Some(Ok(Message::Binary(b))) => return Ok(b),
                Some(Ok(Message::Close(Some(c)))) if is_superseded(&c) => {
                    return Err(DialError::Superseded(format!("{url}: {}", c.reason)));
                }
                Some(Ok(Message::Close(_))) | None => {
                    return Err("closed before answering".to_owned().into());
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.to_string().into()),
            }
        }
    })
    .await
    .map_err(|_| format!("{url}: no answer to hello"))??;
    let first_ack = match FeedFrame::parse(&first) {
        Ok(FeedFrame::Ack { up_to }) => up_to,
        other => return Err(format!("{url}: unexpected answer to hello: {other:?}").into()),
    };
    let (writer, mut rx) = mpsc::channel::<Message>(WRITER_QUEUE);
    let write_task = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.feed(m).await.is_err() {
                return;
            }
            while let Ok(m) = rx.try_recv() {
                if sink.feed(m).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });
    let (ack_tx, acks) = mpsc::channel(64);
    let read_task = tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            match msg {
                Message::Binary(b) => match FeedFrame::parse(&b) {
                    Ok(FeedFrame::Ack { up_to }) => {
                        if ack_tx.send(Answer::Ack(up_to)).await.is_err() {
                            return;
                        }
                    }
                    other => {
                        warn!(?other, "unexpected frame from the recorder");
                        return;
                    }
                },
                Message::Close(Some(c)) if is_superseded(&c) => {
                    warn!(reason = %c.reason, "recorder: the lesson has a newer owner");
                    let _ = ack_tx.send(Answer::Superseded).await;
                    return;
                }
                Message::Close(_) => return,
                _ => {}
            }
        }
    });
    Ok(Connection {
        writer,
        acks,
        first_ack,
        tasks: [write_task, read_task],
    })
}

/// Whether a close frame says a newer owner's feed holds the lesson.
fn is_superseded(c: &tokio_tungstenite::tungstenite::protocol::CloseFrame) -> bool {
    u16::from(c.code) == SUPERSEDED_CLOSE_CODE
}
