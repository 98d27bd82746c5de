//! One upgraded lesson connection: moves messages between the socket and
//! the lesson task, and polices the socket (hello, size, rate, idleness).
//!
//! It must never forward anything a client sends before `hello`, never
//! block the lesson (the lesson writes to a bounded queue; this task
//! drains it), and always tell the lesson when the socket is gone — a drop
//! guard sends the `leave` even if the upgrade fails or the task panics.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use chaperone_protocol::signal::{ClientMsg, ErrorCode, ServerMsg};
use chaperone_protocol::{ParticipantId, ProtocolError};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};
use tracing::{debug, info, warn};

use super::SignalConfig;
use crate::errors::{Close, close_frame};
use crate::room::{Outbound, RoomHandle};

type Sink = SplitSink<WebSocket, Message>;
type Stream = SplitStream<WebSocket>;

/// Tells the lesson the participant left when dropped.
#[derive(Debug)]
struct LeaveGuard {
    room: RoomHandle,
    participant: ParticipantId,
}

impl Drop for LeaveGuard {
    fn drop(&mut self) {
        self.room.leave_soon(self.participant);
    }
}

/// A token bucket over tokio's clock (so paused-time tests drive it).
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    burst: f64,
    per_sec: f64,
    at: Instant,
}

impl Bucket {
    fn new(per_sec: u32, burst: u32) -> Self {
        Self {
            tokens: f64::from(burst),
            burst: f64::from(burst),
            per_sec: f64::from(per_sec),
            at: Instant::now(),
        }
    }

    /// Takes one token if there is one.
    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * self.per_sec;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// An upgraded (or about to be upgraded) connection of one participant.
#[derive(Debug)]
pub(super) struct Conn {
    room: RoomHandle,
    participant: ParticipantId,
    outbound: mpsc::Receiver<Outbound>,
    config: Arc<SignalConfig>,
    rate: Bucket,
    abuse: Bucket,
    guard: LeaveGuard,
}

impl Conn {
    pub(super) fn new(
        room: RoomHandle,
        participant: ParticipantId,
        outbound: mpsc::Receiver<Outbound>,
        config: Arc<SignalConfig>,
    ) -> Self {
        Self {
            guard: LeaveGuard {
                room: room.clone(),
                participant,
            },
            room,
            participant,
            outbound,
            rate: Bucket::new(config.rate_per_sec, config.rate_burst),
            abuse: Bucket::new(config.abuse_per_sec, config.abuse_burst),
            config,
        }
    }

    pub(super) async fn run(mut self, socket: WebSocket) {
        let lesson = self.room.lesson();
        let participant = self.participant;
        let (mut sink, mut stream) = socket.split();
        let close = self.session(&mut sink, &mut stream).await;
        let (code, reason) = close_frame(close);
        info!(%lesson, %participant, code, reason, "signal: closing");
        let frame = Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }));
        let _ = timeout(self.config.send_timeout, sink.send(frame)).await;
        // The guard tells the lesson, here or on any other way out.
        drop(self.guard);
    }

    async fn send(&self, sink: &mut Sink, msg: &ServerMsg) -> Result<(), Close> {
        let text = msg.encode();
        match timeout(
            self.config.send_timeout,
            sink.send(Message::Text(text.into())),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                debug!(participant = %self.participant, error = %e, "signal: write failed");
                Err(Close::GoingAway)
            }
            Err(_) => {
                warn!(participant = %self.participant, "signal: write timed out");
                Err(Close::GoingAway)
            }
        }
    }

    async fn refuse(
        &self,
        sink: &mut Sink,
        code: ErrorCode,
        action: Option<&str>,
    ) -> Result<(), Close> {
        let msg = ServerMsg::Error {
            code,
            action: action.map(str::to_owned),
        };
        self.send(sink, &msg).await
    }

    /// Runs the connection until it must close; returns why.
    async fn session(&mut self, sink: &mut Sink, stream: &mut Stream) -> Close {
        match self.hello(sink, stream).await {
            Ok(()) => {}
            Err(close) => return close,
        }
        match self.pump(sink, stream).await {
            Ok(()) => Close::GoingAway,
            Err(close) => close,
        }
    }

    /// Waits for `hello`; nothing the lesson queued is written before it.
    async fn hello(&mut self, sink: &mut Sink, stream: &mut Stream) -> Result<(), Close> {
        let deadline = Instant::now() + self.config.hello_timeout;
        let bytes = loop {
            let next = tokio::select! {
                next = stream.next() => next,
                () = sleep_until(deadline) => return Err(Close::Idle),
            };
            match next {
                Some(Ok(Message::Text(t))) => break t.as_bytes().to_vec(),
                Some(Ok(Message::Binary(b))) => break b.to_vec(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                    self.control_frame()?;
                    continue;
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => return Err(Close::GoingAway),
            }
        };
        match ClientMsg::decode(&bytes) {
            Ok(ClientMsg::Hello { .. }) => Ok(()),
            Ok(other) => {
                self.refuse(sink, ErrorCode::InvalidState, Some(other.name()))
                    .await?;
                Err(Close::HelloExpected)
            }
            Err(e @ ProtocolError::UnsupportedVersion(_)) => {
                debug!(participant = %self.participant, error = %e, "signal: bad hello");
                self.refuse(sink, ErrorCode::UnsupportedVersion, Some("hello"))
                    .await?;
                Err(Close::UnsupportedVersion)
            }
            Err(e) => {
                debug!(participant = %self.participant, error = %e, "signal: bad hello");
                self.refuse(sink, ErrorCode::for_protocol_error(&e), None)
                    .await?;
                Err(Close::HelloExpected)
            }
        }
    }

    async fn pump(&mut self, sink: &mut Sink, stream: &mut Stream) -> Result<(), Close> {
        let period = self.config.ping_interval;
        let mut ping = tokio::time::interval_at(Instant::now() + period, period);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_seen = Instant::now();
        loop {
            let idle_at = last_seen + self.config.idle_timeout;
            tokio::select! {
                out = self.outbound.recv() => match out {
                    Some(Outbound::Msg(msg)) => self.send(sink, &msg).await?,
                    Some(Outbound::Close(farewell)) => return Err(Close::Farewell(farewell)),
                    // The lesson dropped this connection (too slow) or stopped.
                    None => return Err(Close::GoingAway),
                },
                incoming = stream.next() => {
                    last_seen = Instant::now();
                    match incoming {
                        Some(Ok(Message::Text(t))) => self.inbound(sink, t.as_bytes()).await?,
                        Some(Ok(Message::Binary(b))) => self.inbound(sink, &b).await?,
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => self.control_frame()?,
                        Some(Ok(Message::Close(_))) | None => return Ok(()),
                        Some(Err(e)) => {
                            // Includes a message over `max_ws_message`.
                            debug!(participant = %self.participant, error = %e, "signal: read failed");
                            return Ok(());
                        }
                    }
                },
                _ = ping.tick() => {
                    if timeout(self.config.send_timeout, sink.send(Message::Ping(Default::default()))).await.is_err() {
                        return Err(Close::GoingAway);
                    }
                },
                () = sleep_until(idle_at) => return Err(Close::Idle),
            }
        }
    }

    /// A ping or pong from the client: each costs a message from the rate
    /// bucket (a ping also makes us write a pong), silently; a client that
    /// keeps pinging past the limit is closed like any other abuser.
    fn control_frame(&mut self) -> Result<(), Close> {
        if !self.rate.take() && !self.abuse.take() {
            warn!(participant = %self.participant, "signal: ping rate abused; closing");
            return Err(Close::RateLimited);
        }
        Ok(())
    }

    /// One data message from the client: rate-limited, size-checked,
    /// parsed, then handed to the lesson. Refusals are typed errors.
    async fn inbound(&mut self, sink: &mut Sink, bytes: &[u8]) -> Result<(), Close> {
        if !self.rate.take() {
            if !self.abuse.take() {
                warn!(participant = %self.participant, "signal: rate limit abused; closing");
                return Err(Close::RateLimited);
            }
            return self.refuse(sink, ErrorCode::RateLimited, None).await;
        }
        match ClientMsg::decode(bytes) {
            Ok(msg) => {
                self.room.message(self.participant, msg).await;
                Ok(())
            }
            Err(e) => {
                debug!(participant = %self.participant, error = %e, "signal: refused a message");
                self.refuse(sink, ErrorCode::for_protocol_error(&e), None)
                    .await
            }
        }
    }
}
