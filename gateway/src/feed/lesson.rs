//! One lesson's feed as a state machine without I/O: it owns the lesson's
//! [`FeedLog`] (memory, then a local spool file: that synchronous local file
//! I/O is the only I/O here) and the state of its connection to a recorder,
//! and decides what to connect to, what to send, when the connection counts
//! as lost, what the lesson's recording gate says, and when the feed is done.
//!
//! It never touches the network, a channel, a task or a clock: the shell in
//! [`super::task`] passes the time in (`now`, and the wall clock's
//! `unix_micros` where frames are stamped with it) and carries out what it
//! asks for. That is what lets its tests drive reconnects, failover, backoff
//! and shutdown in virtual time, the way the lesson core's tests do.
//!
//! Call order (as in the lesson core, `chaperone_lesson`):
//!
//! 1. create it with [`LessonFeed::new`];
//! 2. feed it inputs, each with the current time:
//!    [`LessonFeed::handle_item`] (a record or media frame),
//!    [`LessonFeed::handle_connected`] (the outcome of an
//!    [`Output::Connect`]), [`LessonFeed::handle_ack`],
//!    [`LessonFeed::handle_lost`] (the connection broke),
//!    [`LessonFeed::handle_superseded`] (the recorder says a newer owner's
//!    feed holds the lesson),
//!    [`LessonFeed::stop`] (shutdown), and [`LessonFeed::handle_timeout`]
//!    at [`LessonFeed::next_timeout`];
//! 3. after every input, drain [`LessonFeed::poll_output`] and carry out
//!    each output in order;
//! 4. while [`LessonFeed::wants_send`] says so and the connection can take a
//!    frame, take it from [`LessonFeed::poll_transmit`] (and drain the
//!    outputs again: a spool that cannot be read loses the connection).
//!
//! The machine is finished after [`Output::Done`]; drop it then (the spool
//! file goes with its log).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use chaperone_lesson::Record;
use chaperone_protocol::LessonId;
use chaperone_protocol::event::LessonEvent;
use chaperone_protocol::feed::FeedFrame;
use tracing::{debug, error, info, warn};

use super::FeedSettings;
use super::log::FeedLog;
use crate::media::RecordedFrame;

/// How long after `Ended` the `End` frame follows (the last records).
const END_AFTER: Duration = Duration::from_secs(5);
/// At shutdown, how long lessons may take to have everything acknowledged.
pub(super) const DRAIN_LIMIT: Duration = Duration::from_secs(15);
/// How often a lesson's share of the node's figures (lag, buffer, spool) is
/// refreshed.
const FIGURES_EVERY: Duration = Duration::from_secs(1);
/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Pauses between failed attempts to reach a recorder: 100 ms, doubling, at
/// most [`MAX_BACKOFF`], for as long as it takes; rebuilt (reset) when a
/// recorder answers. Without jitter, so that the longest pause stays
/// [`MAX_BACKOFF`].
const BACKOFF: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(100))
    .with_max_delay(MAX_BACKOFF)
    .with_factor(2.0)
    .without_max_times();

type Backoff = <ExponentialBuilder as BackoffBuilder>::Backoff;

/// What the lesson gives its feed.
#[derive(Debug)]
pub(crate) enum Item {
    /// A record of the lesson core, made at `at`.
    Record {
        /// When the lesson made it.
        at: Instant,
        /// The record.
        record: Record,
    },
    /// A media frame the SFU forwarded.
    Media(RecordedFrame),
    /// Nothing was recorded before `at` since the recorder's last frame
    /// (the lesson was taken over from a node that stopped).
    Gap {
        /// When the lesson started here.
        at: Instant,
        /// Why, for the archive.
        reason: String,
    },
}

/// What the shell is to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Output {
    /// Open a connection to the recorder at `url` (upgrade, `Hello` with
    /// `resume_from`, first `Ack`), then report with
    /// [`LessonFeed::handle_connected`].
    Connect {
        /// The recorder's base URL.
        url: String,
        /// What `Hello` says: 0 the first time, else the first seq not
        /// acknowledged.
        resume_from: u64,
        /// The fencing epoch of this node's lease on the lesson (0 without
        /// a cluster), for `Hello`.
        epoch: u64,
    },
    /// Drop the current connection (it counts as lost).
    Disconnect,
    /// Tell the lesson's room whether its recording is attached.
    Gate(bool),
    /// This lesson's share of the node's figures.
    Figures(Figures),
    /// The feed is finished: everything up to `End` is acknowledged, the
    /// shutdown's drain ended, or a newer owner records the lesson.
    Done,
    /// The lesson's room closed for idleness ([`LessonFeed::close`]) and
    /// everything is acknowledged: the hub may stop this feed. It keeps
    /// working until told to (a frame that still comes is recorded).
    Closed,
}

/// One lesson's share of the node's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Figures {
    /// Unacknowledged bytes in memory.
    pub(crate) buffer_bytes: u64,
    /// Unacknowledged bytes in the spool file.
    pub(crate) spool_bytes: u64,
    /// Age of the oldest unacknowledged frame, µs.
    pub(crate) lag_micros: u64,
}

/// The next thing to write on the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Transmit {
    /// A frame, its bytes carrying its wire seq (`base + n`).
    Frame {
        /// The wire seq.
        seq: u64,
        /// The encoded frame.
        bytes: Bytes,
        /// It was sent before, on an earlier connection.
        replay: bool,
    },
    /// Shutting down and everything is sent: ask the recorder to write what
    /// it holds now.
    Flush,
}

/// The connection to a recorder, as far as the machine knows it.
#[derive(Debug)]
enum Conn {
    /// Not connected; try again at `retry_at`.
    Idle { retry_at: Instant },
    /// Asked the shell to connect to `url`.
    Connecting { url: String },
    /// Connected and acknowledged.
    Up {
        url: String,
        /// Local seqs up to this have been sent on this connection.
        sent: u64,
        last_ack_at: Instant,
        /// At shutdown: a `Flush` was sent after the last frame.
        flushed: bool,
    },
}

/// One lesson's feed (see the module docs for the call order).
#[derive(Debug)]
pub(crate) struct LessonFeed {
    lesson: LessonId,
    /// The fencing epoch of this node's lease on the lesson (0 without a
    /// cluster): a recorder refuses it once a newer owner's feed attached.
    epoch: u64,
    /// A newer owner's feed holds the lesson at the recorder: this feed is
    /// done and nothing more of it is recorded.
    superseded: bool,
    log: FeedLog,
    recorders: Vec<String>,
    ack_timeout: Duration,
    spool_max_bytes: u64,
    /// The recorder's seq before this node's first frame (None until a
    /// recorder first answered).
    base: Option<u64>,
    conn: Conn,
    /// Failed attempts since the last success (which recorder is next).
    attempt: usize,
    backoff: Backoff,
    /// What the room was last told (None: nothing yet).
    told: Option<bool>,
    /// When the lesson ended, if it did.
    ended_at: Option<Instant>,
    /// The local seq of the `End` frame, once appended.
    end_seq: Option<u64>,
    /// Shutdown: the deadline for everything to be acknowledged.
    stopping: Option<Instant>,
    /// The lesson's room closed for idleness: send everything, `Flush`,
    /// and say [`Output::Closed`] once all of it is acknowledged.
    closing: bool,
    /// [`Output::Closed`] was said (since the last close).
    closed_told: bool,
    /// The highest local seq ever sent (what is sent again is a replay).
    max_sent: u64,
    /// When the figures are next refreshed: an absolute deadline, so a busy
    /// feed (given frames far more often than once a second) still
    /// refreshes them.
    figures_at: Instant,
    done: bool,
    out: VecDeque<Output>,
}

impl LessonFeed {
    /// A lesson's feed keeping its frames in `log`, sent as the lesson's
    /// owner at `epoch`, not yet connected: the first attempt is due at
    /// `now`, and the room is first told its recording is not attached.
    pub(crate) fn new(
        now: Instant,
        lesson: LessonId,
        epoch: u64,
        log: FeedLog,
        settings: &FeedSettings,
    ) -> Self {
        let mut feed = Self {
            lesson,
            epoch,
            superseded: false,
            log,
            recorders: settings.recorders.clone(),
            ack_timeout: settings.ack_timeout,
            spool_max_bytes: settings.spool_max_bytes,
            base: None,
            conn: Conn::Idle { retry_at: now },
            attempt: 0,
            backoff: BACKOFF.build(),
            told: None,
            ended_at: None,
            end_seq: None,
            stopping: None,
            closing: false,
            closed_told: false,
            max_sent: 0,
            figures_at: now,
            done: false,
            out: VecDeque::new(),
        };
        feed.settle(now);
        feed
    }

    /// The lesson.
    pub(crate) fn lesson(&self) -> LessonId {
        self.lesson
    }

    /// Whether the lesson's `End` is appended and acknowledged: nothing
    /// more is ever recorded for it.
    pub(crate) fn is_ended(&self) -> bool {
        self.end_seq.is_some_and(|e| self.log.acked() >= e)
    }

    /// The lesson's room closed for idleness: send everything held, then
    /// `Flush` (the recorder writes it now); [`Output::Closed`] follows
    /// once all of it is acknowledged. No deadline: nothing recorded is
    /// dropped, however long the recorder takes.
    pub(crate) fn close(&mut self, now: Instant) {
        if self.done {
            return;
        }
        self.closing = true;
        self.closed_told = false;
        self.unflush();
        self.settle(now);
    }

    /// The lesson's room opened again before this feed was stopped, under
    /// a lease of owner `epoch`: it carries on as before, connecting with
    /// that epoch from now on.
    pub(crate) fn reopen(&mut self, epoch: u64) {
        self.closing = false;
        self.closed_told = false;
        self.epoch = self.epoch.max(epoch);
    }

    /// Whether the feed stopped because a newer owner records the lesson.
    pub(crate) fn is_superseded(&self) -> bool {
        self.superseded
    }

    /// The recorder refused this feed, or closed it, because a feed with a
    /// newer owner epoch holds the lesson: this node lost the lesson's
    /// lease. The feed is done; what it holds unacknowledged is not
    /// recorded (it falls in the gap the new owner's recording lists).
    pub(crate) fn handle_superseded(&mut self, now: Instant, why: &str) {
        if self.done {
            return;
        }
        let unacknowledged = self.log.next_seq() - 1 - self.log.acked();
        error!(lesson = %self.lesson, epoch = self.epoch, unacknowledged, why,
            "a newer owner records this lesson: this node's feed stops");
        self.superseded = true;
        self.done = true;
        self.conn = Conn::Idle { retry_at: now };
        self.out.push_back(Output::Disconnect);
        // Nothing of the lesson is recorded here any more: if its room
        // still runs, it holds its pupils as for a lost recording.
        if self.told != Some(false) {
            self.told = Some(false);
            self.out.push_back(Output::Gate(false));
        }
        self.out.push_back(Output::Done);
    }

    /// Another `Flush` is due after what is appended next.
    fn unflush(&mut self) {
        if let Conn::Up { flushed, .. } = &mut self.conn {
            *flushed = false;
        }
    }

    /// Frames appended so far.
    pub(crate) fn frames(&self) -> u64 {
        self.log.next_seq() - 1
    }

    /// The next thing for the shell to do.
    pub(crate) fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Self::handle_timeout`] is next due.
    pub(crate) fn next_timeout(&self) -> Instant {
        let mut t = self.figures_at;
        match &self.conn {
            Conn::Idle { retry_at } => t = t.min(*retry_at),
            // The shell bounds connecting in time (see `super::dial`).
            Conn::Connecting { .. } => {}
            Conn::Up { last_ack_at, .. } => t = t.min(*last_ack_at + self.ack_timeout),
        }
        if let Some(e) = self.ended_at
            && self.end_seq.is_none()
        {
            t = t.min(e + END_AFTER);
        }
        if let Some(s) = self.stopping {
            t = t.min(s);
        }
        t
    }

    /// A record or media frame of the lesson. After the lesson's `End` it is
    /// refused (and logged): nothing follows `End`.
    pub(crate) fn handle_item(&mut self, now: Instant, unix_micros: u64, item: Item) {
        if self.done {
            return;
        }
        if self.end_seq.is_some() {
            error!(lesson = %self.lesson, "frame after the lesson's end; not recorded");
            return;
        }
        if self.closing {
            self.unflush();
        }
        match item {
            Item::Record { at, record } => {
                if matches!(record, Record::Event(LessonEvent::Ended { .. })) {
                    self.ended_at = Some(now);
                }
                let at_micros = micros_at(now, unix_micros, at);
                self.push(at, move |seq| match record {
                    Record::Event(event) => FeedFrame::Event {
                        seq,
                        at_micros,
                        event,
                    },
                    Record::Chat { from, to, text } => FeedFrame::Chat {
                        seq,
                        at_micros,
                        from,
                        to,
                        text,
                    },
                });
            }
            Item::Gap { at, reason } => {
                let at_micros = micros_at(now, unix_micros, at);
                self.push(at, move |seq| FeedFrame::Gap {
                    seq,
                    at_micros,
                    reason,
                });
            }
            Item::Media(f) => {
                let arrival_micros = micros_at(now, unix_micros, f.at);
                self.push(f.at, move |seq| FeedFrame::Media {
                    seq,
                    track: f.track,
                    arrival_micros,
                    media_time: f.media_time,
                    clock_rate: f.clock_rate,
                    codec: f.codec,
                    discontinuity: f.discontinuity,
                    data: f.data.to_vec(),
                });
            }
        }
        self.settle(now);
    }

    /// The outcome of the last [`Output::Connect`]: what the recorder said it
    /// holds for the lesson (its first `Ack`), or why it was not reached.
    pub(crate) fn handle_connected(&mut self, now: Instant, outcome: Result<u64, String>) {
        if self.done {
            return;
        }
        let Conn::Connecting { url } = &self.conn else {
            // Not asked for (the shell keeps one attempt at a time): drop it.
            self.out.push_back(Output::Disconnect);
            return;
        };
        let url = url.clone();
        match outcome {
            Ok(first_ack) => {
                let base = *self.base.get_or_insert(first_ack);
                if first_ack > base {
                    self.log.ack(first_ack - base);
                } else if first_ack < base + self.log.acked() {
                    error!(lesson = %self.lesson, recorder = %url, holds = first_ack,
                        acknowledged = base + self.log.acked(),
                        "recorder holds less than it acknowledged; the difference is recorded as a gap");
                }
                info!(lesson = %self.lesson, recorder = %url, base, resume = base + self.log.acked() + 1, "feed connected");
                self.attempt = 0;
                self.backoff = BACKOFF.build();
                self.conn = Conn::Up {
                    url,
                    sent: self.log.acked(),
                    last_ack_at: now,
                    flushed: false,
                };
            }
            Err(why) => self.failed(now, &why),
        }
        self.settle(now);
    }

    /// The recorder acknowledged every wire seq up to `up_to` as durable.
    pub(crate) fn handle_ack(&mut self, now: Instant, up_to: u64) {
        if self.done {
            return;
        }
        if let Conn::Up { last_ack_at, .. } = &mut self.conn {
            *last_ack_at = now;
        }
        let base = self.base.unwrap_or(0);
        if up_to > base {
            self.log.ack(up_to - base);
        }
        self.settle(now);
    }

    /// The connection broke (closed, or its writer stopped); try again now.
    pub(crate) fn handle_lost(&mut self, now: Instant, why: &str) {
        if self.done {
            return;
        }
        self.lost(now, why);
        self.settle(now);
    }

    /// Time passed: retry, notice silence, append `End`, refresh figures,
    /// end the drain.
    pub(crate) fn handle_timeout(&mut self, now: Instant, unix_micros: u64) {
        if self.done {
            return;
        }
        if now >= self.figures_at {
            self.publish_figures(now);
        }
        if let Some(e) = self.ended_at
            && self.end_seq.is_none()
            && now >= e + END_AFTER
        {
            self.append_end(now, unix_micros);
        }
        match &self.conn {
            Conn::Idle { retry_at } if now >= *retry_at => self.connect(now),
            Conn::Up { last_ack_at, .. } if now >= *last_ack_at + self.ack_timeout => {
                self.lost(now, "no acknowledgement within the timeout");
            }
            _ => {}
        }
        self.settle(now);
    }

    /// Shutdown: send everything held, then `Flush`; the feed is done when
    /// all is acknowledged, or [`DRAIN_LIMIT`] after `now`.
    pub(crate) fn stop(&mut self, now: Instant) {
        if self.done {
            return;
        }
        self.stopping.get_or_insert(now + DRAIN_LIMIT);
        self.settle(now);
    }

    /// Whether there is something to write on the connection (a frame not
    /// yet sent on it, or the `Flush` at shutdown).
    pub(crate) fn wants_send(&self) -> bool {
        match &self.conn {
            Conn::Up { sent, flushed, .. } => {
                sent + 1 < self.log.next_seq()
                    || ((self.stopping.is_some() || self.closing) && !flushed)
            }
            _ => false,
        }
    }

    /// The next thing to write on the connection, in order: every frame not
    /// yet acknowledged (after a reconnect, from the first of them), then at
    /// shutdown one `Flush`.
    pub(crate) fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        let base = self.base.unwrap_or(0);
        loop {
            let Conn::Up { sent, flushed, .. } = &mut self.conn else {
                return None;
            };
            let seq = *sent + 1;
            if seq >= self.log.next_seq() {
                if (self.stopping.is_some() || self.closing) && !*flushed {
                    *flushed = true;
                    return Some(Transmit::Flush);
                }
                return None;
            }
            match self.log.get(seq) {
                Ok(Some(bytes)) => {
                    *sent = seq;
                    let replay = seq <= self.max_sent;
                    self.max_sent = self.max_sent.max(seq);
                    return Some(Transmit::Frame {
                        seq: base + seq,
                        bytes: with_seq(&bytes, base + seq),
                        replay,
                    });
                }
                // Acknowledged meanwhile: move on.
                Ok(None) => *sent = seq.max(self.log.acked()),
                Err(e) => {
                    error!(lesson = %self.lesson, seq, error = %e, "cannot read a spooled frame; reconnecting");
                    self.lost(now, "spool read failed");
                    self.settle(now);
                    return None;
                }
            }
        }
    }

    fn push(&mut self, at: Instant, build: impl FnOnce(u64) -> FeedFrame) {
        match self.log.append(at, |seq| build(seq).to_bytes()) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                error!(lesson = %self.lesson, error = %e, "frame not encodable; not recorded");
            }
            Err(e) => {
                // The spool could not take it: memory keeps it (see FeedLog).
                error!(lesson = %self.lesson, error = %e, "feed spool failing; frames held in memory");
            }
        }
    }

    fn append_end(&mut self, now: Instant, unix_micros: u64) {
        let seq = self.log.next_seq();
        self.push(now, move |seq| FeedFrame::End {
            seq,
            at_micros: unix_micros,
        });
        if self.log.next_seq() > seq {
            self.end_seq = Some(seq);
            info!(lesson = %self.lesson, "lesson ended; its last frame is queued");
        }
    }

    fn connect(&mut self, now: Instant) {
        if self.recorders.is_empty() {
            self.failed(now, "no recorder configured");
            return;
        }
        // The lesson's own recorder, then the others in order.
        let first = usize::from(self.lesson.as_bytes()[0]) % self.recorders.len();
        let url = self.recorders[(first + self.attempt) % self.recorders.len()].clone();
        let resume_from = self.base.map_or(0, |b| b + self.log.acked() + 1);
        debug!(lesson = %self.lesson, %url, resume_from, epoch = self.epoch, "connecting to a recorder");
        self.conn = Conn::Connecting { url: url.clone() };
        self.out.push_back(Output::Connect {
            url,
            resume_from,
            epoch: self.epoch,
        });
    }

    fn failed(&mut self, now: Instant, why: &str) {
        // The builder sets no limit on attempts, so the iterator never ends.
        let delay = self.backoff.next().unwrap_or(MAX_BACKOFF);
        warn!(lesson = %self.lesson, why, retry_in = ?delay, "recorder not reached");
        self.attempt += 1;
        self.conn = Conn::Idle {
            retry_at: now + delay,
        };
    }

    fn lost(&mut self, now: Instant, why: &str) {
        let Conn::Up { url, .. } = &self.conn else {
            return;
        };
        warn!(lesson = %self.lesson, recorder = %url, why, "recorder feed lost; reconnecting");
        self.conn = Conn::Idle { retry_at: now };
        self.out.push_back(Output::Disconnect);
    }

    /// After every input: is the feed done, and if not, what should the room
    /// be told?
    fn settle(&mut self, now: Instant) {
        if self.done {
            return;
        }
        let ended = self.end_seq.is_some_and(|e| self.log.acked() >= e);
        let drained = self
            .stopping
            .is_some_and(|deadline| self.log.all_acked() || now >= deadline);
        if ended || drained {
            if !ended && !self.log.all_acked() {
                error!(lesson = %self.lesson, unacknowledged = self.log.next_seq() - 1 - self.log.acked(),
                    "shutdown before the recorder acknowledged everything; those frames are lost");
            }
            self.done = true;
            self.out.push_back(Output::Done);
            return;
        }
        if self.closing && !self.closed_told && self.log.all_acked() {
            self.closed_told = true;
            self.out.push_back(Output::Closed);
        }
        self.publish(now);
    }

    /// Tells the room (and the node's figures) whether its recording is
    /// attached, when that changes.
    fn publish(&mut self, now: Instant) {
        let over = self.log.spool_bytes() > self.spool_max_bytes;
        let attached = matches!(self.conn, Conn::Up { .. }) && !over;
        if self.told == Some(attached) {
            return;
        }
        self.told = Some(attached);
        if over {
            error!(lesson = %self.lesson, spool = self.log.spool_bytes(),
                "feed spool past its bound: the recording counts as lost until the recorder catches up");
        }
        self.out.push_back(Output::Gate(attached));
        self.publish_figures(now);
    }

    /// This lesson's share of the node's figures (at least every second).
    fn publish_figures(&mut self, now: Instant) {
        self.figures_at = now + FIGURES_EVERY;
        let lag_micros = self.log.oldest().map_or(0, |t| {
            u64::try_from(now.saturating_duration_since(t).as_micros()).unwrap_or(u64::MAX)
        });
        self.out.push_back(Output::Figures(Figures {
            buffer_bytes: self.log.mem_bytes() as u64,
            spool_bytes: self.log.spool_bytes(),
            lag_micros,
        }));
    }
}

/// `at` on the wall clock, given that `now` is `unix_micros` there.
fn micros_at(now: Instant, unix_micros: u64, at: Instant) -> u64 {
    let age = now.saturating_duration_since(at);
    unix_micros.saturating_sub(u64::try_from(age.as_micros()).unwrap_or(u64::MAX))
}

/// `bytes` with the feed seq (bytes 6..14 of every frame that has one) set
/// to `seq`.
fn with_seq(bytes: &Bytes, seq: u64) -> Bytes {
    let mut out = bytes.to_vec();
    if let Some(field) = out.get_mut(6..14) {
        field.copy_from_slice(&seq.to_be_bytes());
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests;
