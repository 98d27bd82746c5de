//! The media driver: the thin tokio shell around [`Sfu`]. It owns the one
//! UDP socket every participant talks to and is the only media code that
//! reads the clock. It moves bytes and commands into the SFU and its outputs
//! out; it decides nothing.
//!
//! One task `select!`s over the socket, the command channel from
//! [`MediaHandle`]s and the SFU's next deadline. It stops when every handle
//! has been dropped.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use chaperone_protocol::{LessonId, ParticipantId, Role, TrackId};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info};

use crate::clock::now;
use crate::metrics::MediaMetrics;
use chaperone_sfu::{
    MediaError, MediaOutput, MediaSample, RecordedFrame, Sfu, SfuConfig, SfuStats,
};

/// Largest datagram read; WebRTC keeps datagrams under the path MTU.
const RECV_BUF: usize = 2048;

/// Commands queued to the driver before senders wait.
const COMMAND_QUEUE: usize = 1024;

/// Where the media socket listens and what it tells participants.
#[derive(Clone, Debug)]
pub struct MediaDriverConfig {
    /// Address the one UDP socket binds. Default `127.0.0.1:0` (tests).
    pub bind: SocketAddr,
    /// Address put in answers as the only candidate (the server's public
    /// address and port). Default: the bound address, which must then be a
    /// concrete address, not `0.0.0.0`.
    pub advertised: Option<SocketAddr>,
    /// Where every forwarded frame goes for the recording, if anywhere. The
    /// SFU never waits for it: a frame that does not fit is counted in
    /// [`SfuStats::record_dropped`] and logged as an error.
    pub record: Option<mpsc::Sender<RecordedFrame>>,
    /// Where the driver reports forwarding latency, RTCP figures and first
    /// deliveries (the end of a join), if anywhere.
    pub metrics: Option<MediaMetrics>,
}

impl Default for MediaDriverConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            advertised: None,
            record: None,
            metrics: None,
        }
    }
}

/// Something the media plane tells the signaling side.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaEvent {
    /// Send this server offer to the participant; pass their answer to
    /// [`MediaHandle::answer`].
    Offer {
        /// The lesson.
        lesson: LessonId,
        /// The participant.
        participant: ParticipantId,
        /// SDP text.
        sdp: String,
    },
    /// Video to the participant was paused (their link cannot carry the
    /// lowest layer) or resumed; tell their page.
    VideoPaused {
        /// The lesson.
        lesson: LessonId,
        /// The participant.
        participant: ParticipantId,
        /// Paused now, or resumed.
        paused: bool,
    },
}

#[derive(Debug)]
enum Command {
    Add {
        lesson: LessonId,
        participant: ParticipantId,
        reply: oneshot::Sender<Result<(), MediaError>>,
    },
    Remove {
        lesson: LessonId,
        participant: ParticipantId,
        reply: oneshot::Sender<()>,
    },
    Offer {
        lesson: LessonId,
        participant: ParticipantId,
        sdp: String,
        reply: oneshot::Sender<Result<String, MediaError>>,
    },
    Answer {
        lesson: LessonId,
        participant: ParticipantId,
        sdp: String,
        reply: oneshot::Sender<Result<(), MediaError>>,
    },
    Forward {
        lesson: LessonId,
        track: TrackId,
        on: bool,
        reply: oneshot::Sender<()>,
    },
    Receive {
        lesson: LessonId,
        participant: ParticipantId,
        on: bool,
        reply: oneshot::Sender<()>,
    },
    Stats {
        reply: oneshot::Sender<SfuStats>,
    },
    Fence {
        lesson: LessonId,
        until: Option<Instant>,
        reply: oneshot::Sender<()>,
    },
    Role {
        lesson: LessonId,
        participant: ParticipantId,
        role: Role,
        reply: oneshot::Sender<()>,
    },
}

/// The `role` label of a subscriber's estimates.
fn role_label(role: Option<Role>) -> &'static str {
    match role {
        Some(Role::Teacher) => "teacher",
        Some(Role::Assistant) => "assistant",
        Some(Role::Pupil) => "pupil",
        Some(Role::Observer) => "observer",
        None => "unknown",
    }
}

/// Until when each lesson's datagrams may leave (the cluster's proof that
/// this node still owns the lesson). A lesson with no fence is unlimited.
type Fences = std::collections::HashMap<LessonId, Instant>;

/// A cheap, cloneable handle to a running media driver. Each call returns
/// once the SFU has applied it: after `forward(.., false)` returns, no
/// further frame of that track is written to anyone.
#[derive(Clone, Debug)]
pub struct MediaHandle {
    tx: mpsc::Sender<Command>,
    local_addr: SocketAddr,
    advertised: SocketAddr,
}

/// The media socket's receive buffer asked of the kernel, bytes (see
/// [`start`]).
const RECV_BUFFER: usize = 4 * 1024 * 1024;

/// Binds the socket and starts the driver task. Returns the handle and the
/// stream of events for signaling.
pub async fn start(
    config: MediaDriverConfig,
) -> Result<(MediaHandle, mpsc::UnboundedReceiver<MediaEvent>), MediaError> {
    let socket = UdpSocket::bind(config.bind)
        .await
        .map_err(|e| MediaError::Io(e.to_string()))?;
    // Every participant's media arrives on this one socket, and the driver
    // is one task: while it is busy (a burst of work, a loaded machine)
    // datagrams wait in the kernel, and the default buffer (208 kB, a few
    // hundred datagrams) overflowed on the shared test machine (127
    // datagrams in one run), losing the teacher's audio for every
    // subscriber. The kernel caps the request at `net.core.rmem_max`.
    let sock = socket2::SockRef::from(&socket);
    if let Err(e) = sock.set_recv_buffer_size(RECV_BUFFER) {
        tracing::warn!(error = %e, "media: receive buffer not enlarged");
    }
    let recv_buffer = sock.recv_buffer_size().unwrap_or(0);
    let local_addr = socket
        .local_addr()
        .map_err(|e| MediaError::Io(e.to_string()))?;
    let advertised = config.advertised.unwrap_or(local_addr);
    let sfu = Sfu::new(
        SfuConfig {
            advertised,
            record: config.record.is_some(),
        },
        now(),
    )?;
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    info!(%local_addr, %advertised, recv_buffer, "media: listening");
    tokio::spawn(run(
        socket,
        advertised,
        sfu,
        rx,
        events_tx,
        config.record,
        config.metrics,
    ));
    Ok((
        MediaHandle {
            tx,
            local_addr,
            advertised,
        },
        events_rx,
    ))
}

impl MediaHandle {
    /// The address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address participants are told to use.
    pub fn advertised(&self) -> SocketAddr {
        self.advertised
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, MediaError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| MediaError::Stopped)?;
        rx.await.map_err(|_| MediaError::Stopped)
    }

    /// See [`Sfu::add_participant`].
    pub async fn add_participant(
        &self,
        lesson: LessonId,
        participant: ParticipantId,
    ) -> Result<(), MediaError> {
        self.call(|reply| Command::Add {
            lesson,
            participant,
            reply,
        })
        .await?
    }

    /// See [`Sfu::remove_participant`].
    pub async fn remove_participant(
        &self,
        lesson: LessonId,
        participant: ParticipantId,
    ) -> Result<(), MediaError> {
        self.call(|reply| Command::Remove {
            lesson,
            participant,
            reply,
        })
        .await
    }

    /// See [`Sfu::accept_offer`]; returns the SDP answer.
    pub async fn offer(
        &self,
        lesson: LessonId,
        participant: ParticipantId,
        sdp: String,
    ) -> Result<String, MediaError> {
        self.call(|reply| Command::Offer {
            lesson,
            participant,
            sdp,
            reply,
        })
        .await?
    }

    /// See [`Sfu::accept_answer`].
    pub async fn answer(
        &self,
        lesson: LessonId,
        participant: ParticipantId,
        sdp: String,
    ) -> Result<(), MediaError> {
        self.call(|reply| Command::Answer {
            lesson,
            participant,
            sdp,
            reply,
        })
        .await?
    }

    /// See [`Sfu::set_forward`].
    pub async fn set_forward(
        &self,
        lesson: LessonId,
        track: TrackId,
        on: bool,
    ) -> Result<(), MediaError> {
        self.call(|reply| Command::Forward {
            lesson,
            track,
            on,
            reply,
        })
        .await
    }

    /// See [`Sfu::set_receive`].
    pub async fn set_receive(
        &self,
        lesson: LessonId,
        participant: ParticipantId,
        on: bool,
    ) -> Result<(), MediaError> {
        self.call(|reply| Command::Receive {
            lesson,
            participant,
            on,
            reply,
        })
        .await
    }

    /// From `until` on, nothing is transmitted for `lesson` (checked by the
    /// driver itself against the clock before every send, so a node resumed
    /// after a pause sends nothing for a lesson it can no longer prove it
    /// owns); `None` lifts the fence.
    pub async fn set_fence(
        &self,
        lesson: LessonId,
        until: Option<Instant>,
    ) -> Result<(), MediaError> {
        self.call(|reply| Command::Fence {
            lesson,
            until,
            reply,
        })
        .await
    }

    /// The SFU's counters.
    pub async fn stats(&self) -> Result<SfuStats, MediaError> {
        self.call(|reply| Command::Stats { reply }).await
    }

    /// A participant's role: staff's tracks come first in layer selection,
    /// and estimates towards each subscriber are counted by role.
    pub async fn set_role(
        &self,
        lesson: LessonId,
        participant: ParticipantId,
        role: Role,
    ) -> Result<(), MediaError> {
        self.call(|reply| Command::Role {
            lesson,
            participant,
            role,
            reply,
        })
        .await
    }
}

async fn run(
    socket: UdpSocket,
    advertised: SocketAddr,
    mut sfu: Sfu,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::UnboundedSender<MediaEvent>,
    record: Option<mpsc::Sender<RecordedFrame>>,
    metrics: Option<MediaMetrics>,
) {
    let mut buf = vec![0u8; RECV_BUF];
    let mut fences = Fences::new();
    // When the datagram being handled arrived, if it made the SFU forward.
    let mut forwarding_since: Option<Instant> = None;
    loop {
        let next = flush(
            &mut sfu,
            &socket,
            &events,
            record.as_ref(),
            metrics.as_ref(),
            &fences,
        )
        .await;
        // Forwarding latency: the datagram that completed a frame was read
        // at `since`; every packet the SFU wrote for it has now been handed
        // to the socket. Two clock reads per forwarding datagram.
        if let (Some(since), Some(m)) = (forwarding_since.take(), &metrics) {
            m.forwarding_seconds
                .observe(now().saturating_duration_since(since).as_secs_f64());
        }
        collect_samples(&mut sfu, metrics.as_ref());
        // With no connection there is no deadline; wake rarely anyway.
        let deadline = next.unwrap_or_else(|| now() + Duration::from_secs(60));
        tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, from)) => {
                    let data = buf.get(..n).unwrap_or_default();
                    let (at, before) = (now(), sfu.frames_forwarded());
                    sfu.handle_datagram(at, from, advertised, data);
                    if sfu.frames_forwarded() > before {
                        forwarding_since = Some(at);
                    }
                }
                // E.g. ICMP port unreachable surfacing on some platforms:
                // a property of one peer, never a reason to stop serving.
                Err(e) => debug!(error = %e, "media: recv failed"),
            },
            command = commands.recv() => match command {
                Some(command) => apply(&mut sfu, &mut fences, command),
                None => break,
            },
            () = tokio::time::sleep_until(deadline.into()) => sfu.handle_timeout(now()),
        }
    }
    info!("media: driver stopped (no handles left)");
}

/// Hands the SFU's measurements to the metrics (or drops them, without).
fn collect_samples(sfu: &mut Sfu, metrics: Option<&MediaMetrics>) {
    while let Some(sample) = sfu.poll_sample() {
        let Some(m) = metrics else { continue };
        match sample {
            MediaSample::Rtcp {
                path,
                loss,
                jitter,
                rtt,
            } => {
                let path = [path.as_str()];
                if let Some(loss) = loss.filter(|l| l.is_finite()) {
                    m.loss.with_label_values(&path).observe(f64::from(loss));
                }
                if let Some(j) = jitter {
                    m.jitter_seconds
                        .with_label_values(&path)
                        .observe(j.as_secs_f64());
                }
                if let Some(rtt) = rtt {
                    m.rtt_seconds
                        .with_label_values(&path)
                        .observe(rtt.as_secs_f64());
                }
            }
            MediaSample::Estimate { bps, role } => m
                .estimate_bps
                .with_label_values(&[role_label(role)])
                .observe(bps as f64),
            MediaSample::FirstDelivery {
                lesson,
                participant,
            } => m.joins.delivered(lesson, participant, now()),
        }
    }
}

/// Sends what the SFU produced; returns its next deadline.
async fn flush(
    sfu: &mut Sfu,
    socket: &UdpSocket,
    events: &mpsc::UnboundedSender<MediaEvent>,
    record: Option<&mpsc::Sender<RecordedFrame>>,
    metrics: Option<&MediaMetrics>,
    fences: &Fences,
) -> Option<Instant> {
    loop {
        match sfu.poll_output() {
            MediaOutput::Record(frame) => {
                if let Some(tx) = record
                    && let Err(e) = tx.try_send(frame)
                {
                    let frame = match &e {
                        mpsc::error::TrySendError::Full(f)
                        | mpsc::error::TrySendError::Closed(f) => f,
                    };
                    sfu.count_record_dropped();
                    error!(lesson = %frame.lesson, track = %frame.track,
                        "media: recorder not keeping up; frame not recorded");
                }
            }
            MediaOutput::Transmit { lesson, to, bytes } => {
                // A clock read per datagram of a fenced lesson (tens of ns):
                // read here, after any pause of the process, never before.
                if fences.get(&lesson).is_some_and(|until| now() >= *until) {
                    continue;
                }
                if let Err(e) = socket.send_to(&bytes, to).await {
                    debug!(%to, error = %e, "media: send failed");
                }
            }
            MediaOutput::Offer {
                lesson,
                participant,
                sdp,
            } => {
                // Nobody listening means signaling is gone; the offer is moot.
                let _ = events.send(MediaEvent::Offer {
                    lesson,
                    participant,
                    sdp,
                });
            }
            MediaOutput::VideoPaused {
                lesson,
                participant,
                paused,
            } => {
                if let Some(m) = metrics {
                    m.video_paused_total
                        .with_label_values(&[if paused { "paused" } else { "resumed" }])
                        .inc();
                }
                let _ = events.send(MediaEvent::VideoPaused {
                    lesson,
                    participant,
                    paused,
                });
            }
            MediaOutput::Timeout(t) => return t,
        }
    }
}

/// Applies one command. A caller that stopped waiting for the reply does
/// not undo the command, so reply errors are ignored.
fn apply(sfu: &mut Sfu, fences: &mut Fences, command: Command) {
    match command {
        Command::Fence {
            lesson,
            until,
            reply,
        } => {
            match until {
                Some(until) => fences.insert(lesson, until),
                None => fences.remove(&lesson),
            };
            let _ = reply.send(());
        }
        Command::Add {
            lesson,
            participant,
            reply,
        } => {
            let _ = reply.send(sfu.add_participant(lesson, participant));
        }
        Command::Remove {
            lesson,
            participant,
            reply,
        } => {
            sfu.remove_participant(lesson, participant);
            let _ = reply.send(());
        }
        Command::Offer {
            lesson,
            participant,
            sdp,
            reply,
        } => {
            let _ = reply.send(sfu.accept_offer(lesson, participant, &sdp));
        }
        Command::Answer {
            lesson,
            participant,
            sdp,
            reply,
        } => {
            let _ = reply.send(sfu.accept_answer(lesson, participant, &sdp));
        }
        Command::Forward {
            lesson,
            track,
            on,
            reply,
        } => {
            sfu.set_forward(lesson, track, on);
            let _ = reply.send(());
        }
        Command::Receive {
            lesson,
            participant,
            on,
            reply,
        } => {
            sfu.set_receive(lesson, participant, on);
            let _ = reply.send(());
        }
        Command::Stats { reply } => {
            let _ = reply.send(sfu.stats());
        }
        Command::Role {
            lesson,
            participant,
            role,
            reply,
        } => {
            sfu.set_role(lesson, participant, role);
            let _ = reply.send(());
        }
    }
}
