//! Prometheus metrics, in a registry the node hands to each component (no
//! global registry), served on their own listener (`metrics.listen`) so that
//! they are never exposed where people connect.
//!
//! Who feeds what:
//!
//! | figures | fed by |
//! |---|---|
//! | join time, waiting-room time, refused joins | [`JoinClock`] from the join check, the lesson task and the media driver |
//! | forwarding latency, RTCP loss/jitter/RTT | [`MediaMetrics`], handed to the media driver |
//! | frames, packets, bytes, NACKs, PLIs, active tracks | the SFU's counters ([`Metrics::observe_sfu`], read at scrape) |
//! | controls, safeguarding events, lessons held | the lesson task, from the core's outputs as it applies them |
//! | lessons live, recorder, tokio runtime | read at scrape |
//!
//! Label values are bounded: kinds, reasons and paths from fixed lists,
//! never a lesson, user or participant id. Every labelled family is
//! initialised with its known values so that a dashboard's series exist
//! (at zero) before the first event, and so the series count of a node does
//! not grow with the number of lessons or people.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chaperone_protocol::event::HoldReason;
use chaperone_protocol::signal::ErrorCode;
use chaperone_protocol::{LessonId, ParticipantId, UserRef};
use prometheus::{
    Counter, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Why a metric could not be registered (a programming error: duplicate names).
pub(crate) type MetricsError = prometheus::Error;

/// Histogram buckets for control enforcement, in seconds (100 µs to 2 s).
const CONTROL_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0,
];

/// Join time: a token presented to the first media delivered. It includes
/// the waiting room, so it reaches minutes.
const JOIN_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Waiting-room time, seconds.
const WAITING_BUCKETS: &[f64] = &[
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0,
];

/// Forwarding latency inside the SFU, seconds (10 µs to 100 ms).
const FORWARDING_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1,
];

/// Fraction of packets lost in one RTCP report interval.
const LOSS_BUCKETS: &[f64] = &[0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0];

/// Interarrival jitter, seconds.
const JITTER_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5,
];

/// Round-trip time, seconds.
const RTT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0,
];

/// Bandwidth estimates towards subscribers, bit/s: from below the lowest
/// video layer to more than every top layer.
const ESTIMATE_BUCKETS: &[f64] = &[
    100e3, 150e3, 250e3, 400e3, 600e3, 800e3, 1.2e6, 1.6e6, 2.5e6, 4e6, 8e6,
];

/// The two legs a packet takes through the SFU: `uplink` from a publisher
/// to the SFU, `downlink` from the SFU to a subscriber.
pub(crate) const PATHS: [&str; 2] = ["uplink", "downlink"];

/// The roles a subscriber's estimates are counted under (`unknown`: the
/// SFU was not told, which the gateway always does before an offer).
const ROLES: [&str; 5] = ["teacher", "assistant", "pupil", "observer", "unknown"];

/// Why a join is refused: at the handshake (token, lesson, block, store),
/// or by the lesson core.
const JOIN_REFUSALS: &[&str] = &[
    "unauthenticated",
    "not_found",
    "blocked",
    "unavailable",
    "removed",
    "locked",
    "ended",
];

/// The messages that change forwarding (wire names of `ClientMsg`).
const CONTROL_KINDS: &[&str] = &[
    "admit",
    "admit_all",
    "remove",
    "turn_off",
    "set_permission",
    "set_source",
    "set_engagement",
    "end_lesson",
];

/// Why the SFU drops a frame.
const DROP_REASONS: &[&str] = &["not_forwarded", "unknown_mline", "stray_datagram", "layer"];

/// Entries [`JoinClock`] keeps at most per stage; past it, joins go
/// unmeasured rather than grow memory.
const JOIN_CLOCK_CAP: usize = 16 * 1024;

/// How long a presented token waits for its join before it is forgotten
/// (the join follows the check within milliseconds).
const PRESENTED_TTL: Duration = Duration::from_secs(60);

/// The wire name of an error code (`not_found`), as a label value.
pub(crate) fn code_label(code: ErrorCode) -> String {
    serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "other".to_owned())
}

/// The wire names of the annotation messages (whose refusals are counted
/// in `annotation_refused_total`).
pub(crate) const ANNOTATION_ACTIONS: [&str; 7] = [
    "draw",
    "extend_mark",
    "undo_mark",
    "redo_mark",
    "erase_mark",
    "clear_marks",
    "isolate_marks",
];

/// The label value of a hold reason.
pub(crate) fn hold_label(reason: HoldReason) -> &'static str {
    match reason {
        HoldReason::Unsupervised => "unsupervised",
        HoldReason::RecordingLost => "recording_lost",
    }
}

/// Join time, from the room token presented at the handshake to the first
/// media the SFU delivers to that participant. Three components see one
/// join each: the join check ([`JoinClock::presented`]), the lesson task
/// ([`JoinClock::joined`], [`JoinClock::left`]) and the media driver
/// ([`JoinClock::delivered`]). Entries are removed when used or when the
/// participant leaves, and both maps are capped.
#[derive(Debug)]
pub struct JoinClock {
    /// The histogram this clock observes into.
    pub seconds: Histogram,
    state: Mutex<JoinState>,
}

#[derive(Debug, Default)]
struct JoinState {
    /// A token was accepted for this person and lesson at this instant.
    presented: HashMap<(LessonId, UserRef), Instant>,
    /// The person joined as this participant; waiting for their first media.
    started: HashMap<(LessonId, ParticipantId), Instant>,
}

impl JoinClock {
    fn lock(&self) -> std::sync::MutexGuard<'_, JoinState> {
        // Every update is one insert or remove: a poisoned map is still valid.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The join check accepted `user`'s token for `lesson`, presented at `at`.
    pub fn presented(&self, lesson: LessonId, user: &UserRef, at: Instant) {
        let mut s = self.lock();
        if s.presented.len() >= JOIN_CLOCK_CAP / 2 {
            s.presented
                .retain(|_, t| at.saturating_duration_since(*t) < PRESENTED_TTL);
        }
        if s.presented.len() < JOIN_CLOCK_CAP {
            s.presented.insert((lesson, user.clone()), at);
        }
    }

    /// The lesson answered `user`'s join: as `participant`, or refused (`None`).
    pub fn joined(&self, lesson: LessonId, user: &UserRef, participant: Option<ParticipantId>) {
        let mut s = self.lock();
        let Some(at) = s.presented.remove(&(lesson, user.clone())) else {
            return;
        };
        if let Some(p) = participant
            && s.started.len() < JOIN_CLOCK_CAP
        {
            s.started.insert((lesson, p), at);
        }
    }

    /// The participant left before any media reached them.
    pub fn left(&self, lesson: LessonId, participant: ParticipantId) {
        self.lock().started.remove(&(lesson, participant));
    }

    /// The SFU delivered its first media to the participant at `at`.
    pub fn delivered(&self, lesson: LessonId, participant: ParticipantId, at: Instant) {
        let started = self.lock().started.remove(&(lesson, participant));
        if let Some(t) = started {
            self.seconds
                .observe(at.saturating_duration_since(t).as_secs_f64());
        }
    }

    /// Joins being timed (both stages), for tests of the bounds.
    pub fn pending(&self) -> usize {
        let s = self.lock();
        s.presented.len() + s.started.len()
    }
}

/// The media plane's measurements, handed to the media driver.
#[derive(Clone, Debug)]
pub struct MediaMetrics {
    /// Datagram received → the forwarded packets it caused handed to the socket.
    pub forwarding_seconds: Histogram,
    /// Fraction lost per RTCP report interval, per track, by path.
    pub loss: HistogramVec,
    /// Interarrival jitter per track, by path.
    pub jitter_seconds: HistogramVec,
    /// Round-trip time per track, by path.
    pub rtt_seconds: HistogramVec,
    /// The join clock (first media delivered ends a join).
    pub joins: Arc<JoinClock>,
    /// Every send-side bandwidth estimate towards a subscriber, bit/s, by
    /// the subscriber's role.
    pub estimate_bps: HistogramVec,
    /// Subscribers' video paused (their link carries no video layer) or
    /// resumed, by change.
    pub video_paused_total: IntCounterVec,
}

/// The tokio runtime's figures, read at scrape.
#[derive(Debug)]
struct RuntimeMetrics {
    workers: IntGauge,
    alive_tasks: IntGauge,
    global_queue_depth: IntGauge,
    busy_seconds: Counter,
    /// The busy time already added (the runtime reports a total).
    last_busy: Mutex<Duration>,
}

/// Every metric of a gateway node.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Time from a staff member's command reaching the lesson to the SFU
    /// having applied the forwarding change it caused.
    pub control_seconds: Histogram,
    /// Controls that changed forwarding, by kind.
    pub controls: IntCounterVec,
    /// Join attempts refused, by reason.
    pub joins_refused: IntCounterVec,
    /// Lessons running on this node.
    pub lessons_live: IntGauge,
    /// 1 while the recorder is writing, 0 while writes fail.
    pub recorder_attached: IntGauge,
    /// Media frames written to subscribers.
    pub frames_forwarded: IntCounter,
    /// Media frames dropped at the SFU, by reason.
    pub frames_dropped: IntCounterVec,
    /// Forwarded frames the recorder could not take (recording gaps).
    pub frames_unrecorded: IntCounter,
    /// Time a pupil spent in the waiting room before being admitted.
    pub waiting_room_seconds: Histogram,
    /// Lessons on this node whose pupils are held, by reason.
    pub lessons_held: IntGaugeVec,
    /// Teacher-camera-off compliance events.
    pub teacher_camera_off: IntCounter,
    /// Concerns pupils reported.
    pub concerns: IntCounter,
    /// Incidents staff flagged.
    pub incidents: IntCounter,
    /// Joins refused because the person is blocked.
    pub blocked_refusals: IntCounter,
    /// Annotation marks accepted (laser flashes included).
    pub marks: IntCounter,
    /// Annotation messages refused (a mark without permission, on a screen
    /// not shared, malformed, too many), by code.
    pub marks_refused: IntCounterVec,
    /// Refusals of requests nobody could be named for (counted, and summed
    /// into one audit record per source and window), by action.
    pub anonymous_refusals: IntCounterVec,
    /// Join time.
    pub joins: Arc<JoinClock>,
    /// What the media driver measures.
    pub media: MediaMetrics,
    packets_forwarded: IntCounter,
    bytes_forwarded: IntCounter,
    nacks: IntCounterVec,
    plis: IntCounterVec,
    tracks_active: IntGauge,
    layer_switches: IntCounter,
    keyframes_damped: IntCounter,
    video_paused: IntGauge,
    runtime: RuntimeMetrics,
    /// The SFU counters already added (they are read as totals at scrape).
    last_sfu: Mutex<chaperone_sfu::SfuStats>,
}

fn histogram(name: &str, help: &str, buckets: &[f64]) -> Result<Histogram, MetricsError> {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
}

fn by_path(name: &str, help: &str, buckets: &[f64]) -> Result<HistogramVec, MetricsError> {
    by_label(name, help, buckets, "path", &PATHS)
}

fn by_label(
    name: &str,
    help: &str,
    buckets: &[f64],
    label: &str,
    values: &[&str],
) -> Result<HistogramVec, MetricsError> {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        &[label],
    )?;
    for v in values {
        h.with_label_values(&[v]);
    }
    Ok(h)
}

fn counter_vec(
    name: &str,
    help: &str,
    label: &str,
    values: &[&str],
) -> Result<IntCounterVec, MetricsError> {
    let c = IntCounterVec::new(Opts::new(name, help), &[label])?;
    for v in values {
        c.with_label_values(&[v]);
    }
    Ok(c)
}

impl Metrics {
    /// A registry with every metric of the node.
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new_custom(Some("chaperone".to_owned()), None)?;
        let reg = |m: Box<dyn prometheus::core::Collector>| registry.register(m);

        let control_seconds = histogram(
            "control_enforcement_seconds",
            "Time from a staff command reaching the lesson to the SFU applying the forwarding change",
            CONTROL_BUCKETS,
        )?;
        let controls = counter_vec(
            "controls_total",
            "Staff controls that changed forwarding, by kind",
            "kind",
            CONTROL_KINDS,
        )?;
        let joins_refused = counter_vec(
            "joins_refused_total",
            "Lesson joins refused, at the handshake or by the lesson, by reason",
            "reason",
            JOIN_REFUSALS,
        )?;
        let lessons_live = IntGauge::new("lessons_live", "Lessons running on this node")?;
        let recorder_attached = IntGauge::new(
            "recorder_attached",
            "1 while the recorder is writing, 0 while its writes fail",
        )?;
        let frames_forwarded = IntCounter::new(
            "media_frames_forwarded_total",
            "Media frames written to subscribers",
        )?;
        let frames_dropped = counter_vec(
            "media_frames_dropped_total",
            "Media frames dropped at the SFU, by reason (not_forwarded: muted, off or not permitted)",
            "reason",
            DROP_REASONS,
        )?;
        let frames_unrecorded = IntCounter::new(
            "media_frames_unrecorded_total",
            "Forwarded frames the recorder could not take (recording gaps)",
        )?;
        let joins = Arc::new(JoinClock {
            seconds: histogram(
                "join_seconds",
                "Time from a room token presented at the lesson handshake to the first media the SFU delivered to that participant (includes the waiting room)",
                JOIN_BUCKETS,
            )?,
            state: Mutex::default(),
        });
        let waiting_room_seconds = histogram(
            "waiting_room_seconds",
            "Time a pupil waited in the waiting room before being admitted",
            WAITING_BUCKETS,
        )?;
        let lessons_held = IntGaugeVec::new(
            Opts::new(
                "lessons_held",
                "Lessons on this node whose pupils are held, by reason",
            ),
            &["reason"],
        )?;
        for r in [HoldReason::Unsupervised, HoldReason::RecordingLost] {
            lessons_held.with_label_values(&[hold_label(r)]);
        }
        let teacher_camera_off = IntCounter::new(
            "teacher_camera_off_total",
            "Compliance events: a teacher's camera off for longer than the grace",
        )?;
        let concerns = IntCounter::new("concerns_total", "Concerns pupils reported to the DSL")?;
        let incidents = IntCounter::new("incidents_total", "Incidents staff flagged")?;
        let blocked_refusals = IntCounter::new(
            "blocked_refusals_total",
            "Joins refused because the person is blocked",
        )?;
        let media = MediaMetrics {
            forwarding_seconds: histogram(
                "forwarding_latency_seconds",
                "Inside the SFU: a datagram completing a media frame received to the forwarded packets handed to the socket",
                FORWARDING_BUCKETS,
            )?,
            loss: by_path(
                "media_loss_ratio",
                "Fraction of packets lost per RTCP report, per track (uplink: publisher to SFU; downlink: SFU to subscriber)",
                LOSS_BUCKETS,
            )?,
            jitter_seconds: by_path(
                "media_jitter_seconds",
                "Interarrival jitter from RTCP, per track",
                JITTER_BUCKETS,
            )?,
            rtt_seconds: by_path(
                "media_rtt_seconds",
                "Round-trip time from RTCP, per track",
                RTT_BUCKETS,
            )?,
            joins: joins.clone(),
            estimate_bps: by_label(
                "media_estimate_bps",
                "Send-side bandwidth estimates towards subscribers (transport-wide congestion control) by the subscriber's role, bit/s",
                ESTIMATE_BUCKETS,
                "role",
                &ROLES,
            )?,
            video_paused_total: counter_vec(
                "media_video_paused_total",
                "Subscribers whose video was paused because their link carries no video layer, or resumed",
                "change",
                &["paused", "resumed"],
            )?,
        };
        let layer_switches = IntCounter::new(
            "media_layer_switches_total",
            "Times a subscriber's video switched from one simulcast layer to another",
        )?;
        let keyframes_damped = IntCounter::new(
            "media_keyframe_requests_damped_total",
            "Keyframe requests not passed to a publisher because one for the same layer went out within the rate limit",
        )?;
        let video_paused = IntGauge::new(
            "media_video_paused_subscribers",
            "Subscribers whose video is paused now (audio only: their link carries no video layer)",
        )?;
        let packets_forwarded = IntCounter::new(
            "media_packets_forwarded_total",
            "RTP packets sent to subscribers (read from the SFU's per-track statistics each second)",
        )?;
        let bytes_forwarded = IntCounter::new(
            "media_bytes_forwarded_total",
            "RTP payload bytes sent to subscribers (read from the SFU's per-track statistics each second)",
        )?;
        let nacks = counter_vec(
            "media_nacks_total",
            "NACKs: uplink, sent by the SFU to publishers; downlink, received from subscribers",
            "path",
            &PATHS,
        )?;
        let plis = counter_vec(
            "media_plis_total",
            "Picture loss indications: uplink, sent by the SFU to publishers; downlink, received from subscribers",
            "path",
            &PATHS,
        )?;
        let tracks_active = IntGauge::new(
            "media_tracks_active",
            "Published tracks the SFU is forwarding now",
        )?;
        let runtime = RuntimeMetrics {
            workers: IntGauge::new("tokio_workers", "Worker threads of the tokio runtime")?,
            alive_tasks: IntGauge::new("tokio_alive_tasks", "Tasks alive in the tokio runtime")?,
            global_queue_depth: IntGauge::new(
                "tokio_global_queue_depth",
                "Tasks waiting in the tokio runtime's global queue",
            )?,
            busy_seconds: Counter::new(
                "tokio_busy_seconds_total",
                "Time the tokio worker threads spent busy, summed over workers",
            )?,
            last_busy: Mutex::new(Duration::ZERO),
        };

        reg(Box::new(control_seconds.clone()))?;
        reg(Box::new(controls.clone()))?;
        reg(Box::new(joins_refused.clone()))?;
        reg(Box::new(lessons_live.clone()))?;
        reg(Box::new(recorder_attached.clone()))?;
        reg(Box::new(frames_forwarded.clone()))?;
        reg(Box::new(frames_dropped.clone()))?;
        reg(Box::new(frames_unrecorded.clone()))?;
        reg(Box::new(joins.seconds.clone()))?;
        reg(Box::new(waiting_room_seconds.clone()))?;
        reg(Box::new(lessons_held.clone()))?;
        reg(Box::new(teacher_camera_off.clone()))?;
        reg(Box::new(concerns.clone()))?;
        reg(Box::new(incidents.clone()))?;
        reg(Box::new(blocked_refusals.clone()))?;
        let marks = IntCounter::new(
            "annotation_marks_total",
            "Annotation marks accepted on shared screens (laser flashes included)",
        )?;
        let marks_refused = counter_vec(
            "annotation_refused_total",
            "Annotation messages refused by the lesson, by code",
            "code",
            &[
                "not_permitted",
                "not_admitted",
                "forbidden",
                "held",
                "no_share",
                "bad_mark",
                "layer_full",
                "rate_limited",
                "invalid_state",
            ],
        )?;
        reg(Box::new(marks.clone()))?;
        reg(Box::new(marks_refused.clone()))?;
        let anonymous_refusals = counter_vec(
            "anonymous_refusals_total",
            "Refused requests nobody could be named for (summed in the audit log per source and window), by action",
            "action",
            &["login_refused", "review_token_refused", "logout"],
        )?;
        reg(Box::new(anonymous_refusals.clone()))?;
        reg(Box::new(media.forwarding_seconds.clone()))?;
        reg(Box::new(media.loss.clone()))?;
        reg(Box::new(media.jitter_seconds.clone()))?;
        reg(Box::new(media.rtt_seconds.clone()))?;
        reg(Box::new(packets_forwarded.clone()))?;
        reg(Box::new(bytes_forwarded.clone()))?;
        reg(Box::new(nacks.clone()))?;
        reg(Box::new(plis.clone()))?;
        reg(Box::new(tracks_active.clone()))?;
        reg(Box::new(media.estimate_bps.clone()))?;
        reg(Box::new(media.video_paused_total.clone()))?;
        reg(Box::new(layer_switches.clone()))?;
        reg(Box::new(keyframes_damped.clone()))?;
        reg(Box::new(video_paused.clone()))?;
        reg(Box::new(runtime.workers.clone()))?;
        reg(Box::new(runtime.alive_tasks.clone()))?;
        reg(Box::new(runtime.global_queue_depth.clone()))?;
        reg(Box::new(runtime.busy_seconds.clone()))?;
        #[cfg(target_os = "linux")]
        reg(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Self {
            registry,
            control_seconds,
            controls,
            joins_refused,
            lessons_live,
            recorder_attached,
            frames_forwarded,
            frames_dropped,
            frames_unrecorded,
            waiting_room_seconds,
            lessons_held,
            teacher_camera_off,
            concerns,
            incidents,
            blocked_refusals,
            marks,
            marks_refused,
            anonymous_refusals,
            joins,
            media,
            packets_forwarded,
            bytes_forwarded,
            nacks,
            plis,
            tracks_active,
            layer_switches,
            keyframes_damped,
            video_paused,
            runtime,
            last_sfu: Mutex::new(chaperone_sfu::SfuStats::default()),
        })
    }

    /// The registry, for components that register their own metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Counts a refused join (`reason` from [`code_label`] or the handshake's
    /// fixed reasons).
    pub fn join_refused(&self, reason: &str) {
        self.joins_refused.with_label_values(&[reason]).inc();
        if reason == "blocked" {
            self.blocked_refusals.inc();
        }
    }

    /// Adds what the SFU counted since the last call (its counters are totals).
    pub fn observe_sfu(&self, now: chaperone_sfu::SfuStats) {
        let mut last = self.last_sfu.lock().unwrap_or_else(|p| p.into_inner());
        let delta = |n: u64, l: u64| n.saturating_sub(l);
        self.frames_forwarded
            .inc_by(delta(now.forwarded, last.forwarded));
        self.frames_dropped
            .with_label_values(&["not_forwarded"])
            .inc_by(delta(now.dropped_not_forwarded, last.dropped_not_forwarded));
        self.frames_dropped
            .with_label_values(&["unknown_mline"])
            .inc_by(delta(now.dropped_unmapped, last.dropped_unmapped));
        self.frames_dropped
            .with_label_values(&["stray_datagram"])
            .inc_by(delta(now.dropped_datagrams, last.dropped_datagrams));
        self.frames_unrecorded
            .inc_by(delta(now.record_dropped, last.record_dropped));
        self.packets_forwarded
            .inc_by(delta(now.packets_forwarded, last.packets_forwarded));
        self.bytes_forwarded
            .inc_by(delta(now.bytes_forwarded, last.bytes_forwarded));
        self.nacks
            .with_label_values(&["uplink"])
            .inc_by(delta(now.nacks_uplink, last.nacks_uplink));
        self.nacks
            .with_label_values(&["downlink"])
            .inc_by(delta(now.nacks_downlink, last.nacks_downlink));
        self.plis
            .with_label_values(&["uplink"])
            .inc_by(delta(now.plis_uplink, last.plis_uplink));
        self.plis
            .with_label_values(&["downlink"])
            .inc_by(delta(now.plis_downlink, last.plis_downlink));
        self.tracks_active
            .set(i64::try_from(now.tracks_active).unwrap_or(i64::MAX));
        self.frames_dropped
            .with_label_values(&["layer"])
            .inc_by(delta(now.dropped_layer, last.dropped_layer));
        self.layer_switches
            .inc_by(delta(now.layer_switches, last.layer_switches));
        self.keyframes_damped.inc_by(delta(
            now.keyframe_requests_damped,
            last.keyframe_requests_damped,
        ));
        self.video_paused
            .set(i64::try_from(now.video_paused).unwrap_or(i64::MAX));
        *last = now;
    }

    /// Reads the tokio runtime's figures (call on the runtime, at scrape).
    pub fn observe_runtime(&self, handle: &tokio::runtime::Handle) {
        let m = handle.metrics();
        let int = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let r = &self.runtime;
        r.workers.set(int(m.num_workers()));
        r.alive_tasks.set(int(m.num_alive_tasks()));
        r.global_queue_depth.set(int(m.global_queue_depth()));
        let busy: Duration = (0..m.num_workers())
            .map(|w| m.worker_total_busy_duration(w))
            .sum();
        let mut last = r.last_busy.lock().unwrap_or_else(|p| p.into_inner());
        r.busy_seconds
            .inc_by(busy.saturating_sub(*last).as_secs_f64());
        *last = busy.max(*last);
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "metrics not encodable");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sfu_totals_become_counter_increments() {
        let m = Metrics::new().unwrap();
        let mut s = chaperone_sfu::SfuStats {
            forwarded: 10,
            dropped_not_forwarded: 3,
            nacks_downlink: 2,
            tracks_active: 4,
            ..Default::default()
        };
        m.observe_sfu(s);
        s.forwarded = 15;
        s.nacks_downlink = 5;
        s.tracks_active = 1;
        m.observe_sfu(s);
        assert_eq!(m.frames_forwarded.get(), 15);
        let text = m.render();
        assert!(
            text.contains("chaperone_media_frames_forwarded_total 15"),
            "{text}"
        );
        assert!(
            text.contains("chaperone_media_frames_dropped_total{reason=\"not_forwarded\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("chaperone_media_nacks_total{path=\"downlink\"} 5"),
            "{text}"
        );
        assert!(text.contains("chaperone_media_tracks_active 1"), "{text}");
        assert!(text.contains("chaperone_control_enforcement_seconds_bucket"));
    }

    #[test]
    fn labelled_families_exist_before_any_event() {
        let text = Metrics::new().unwrap().render();
        for series in [
            "chaperone_lessons_held{reason=\"unsupervised\"} 0",
            "chaperone_lessons_held{reason=\"recording_lost\"} 0",
            "chaperone_joins_refused_total{reason=\"blocked\"} 0",
            "chaperone_media_loss_ratio_count{path=\"uplink\"} 0",
            "chaperone_media_rtt_seconds_count{path=\"downlink\"} 0",
            "chaperone_join_seconds_count 0",
            "chaperone_forwarding_latency_seconds_count 0",
        ] {
            assert!(text.contains(series), "{series} missing:\n{text}");
        }
    }

    #[test]
    fn a_join_is_timed_from_token_to_first_media_and_then_forgotten() {
        let m = Metrics::new().unwrap();
        let lesson = LessonId::from_bytes([7; 16]);
        let user = UserRef::new("https://idp.test", "pupil").unwrap();
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        m.joins.presented(lesson, &user, t0);
        m.joins.joined(lesson, &user, Some(ParticipantId(3)));
        m.joins
            .delivered(lesson, ParticipantId(3), t0 + Duration::from_millis(1500));
        // A second delivery to the same participant is not a second join.
        m.joins
            .delivered(lesson, ParticipantId(3), t0 + Duration::from_secs(9));
        assert_eq!(m.joins.seconds.get_sample_count(), 1);
        assert!((m.joins.seconds.get_sample_sum() - 1.5).abs() < 1e-9);
        // Refused joins and leavers leave nothing behind.
        m.joins.presented(lesson, &user, t0);
        m.joins.joined(lesson, &user, None);
        m.joins.presented(lesson, &user, t0);
        m.joins.joined(lesson, &user, Some(ParticipantId(4)));
        m.joins.left(lesson, ParticipantId(4));
        assert_eq!(m.joins.pending(), 0);
    }

    #[test]
    fn refusals_of_blocked_people_are_counted_twice_over() {
        let m = Metrics::new().unwrap();
        m.join_refused(&code_label(ErrorCode::Blocked));
        m.join_refused("unauthenticated");
        assert_eq!(m.blocked_refusals.get(), 1);
        assert_eq!(m.joins_refused.with_label_values(&["blocked"]).get(), 1);
        assert_eq!(code_label(ErrorCode::NotFound), "not_found");
    }
}
