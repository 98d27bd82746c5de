//! The named scenarios and the runner that plays one against a server.
//!
//! Every scenario has a fixed shape and duration and bounded loops: it
//! starts the server, joins its participants (teachers first), waits until
//! everyone receives media (bounded), measures over a fixed window, stops
//! everyone and the server, and summarises.

use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chaperone_protocol::Engagement;
use tokio::sync::{mpsc, watch};

use crate::clock;
use crate::media::{Publish, RunCtx, Source};
use crate::plan::{Control, LinkChange, ParticipantPlan, ParticipantReport, Role};
use crate::procfs;
use crate::report::{Resources, ScenarioResult, summarise};

/// Pupils per lesson (the scenarios' class size).
pub const PUPILS: usize = 30;
/// Pupils with their microphone on in `lesson31`.
pub const SPEAKERS: usize = 3;
/// Teacher camera and screen share, pupils' cameras.
pub const TEACHER_CAMERA: Source = Source::Video {
    bitrate_bps: 1_200_000,
    fps: 30,
};
/// The teacher's screen share.
pub const TEACHER_SCREEN: Source = Source::Video {
    bitrate_bps: 1_500_000,
    fps: 15,
};
/// A pupil's camera in `lesson31-cams`.
pub const PUPIL_CAMERA: Source = Source::Video {
    bitrate_bps: 150_000,
    fps: 15,
};
/// Time between two mute-all rounds, and how long a muted pupil waits
/// before switching the mic on again.
const MUTE_ROUND: Duration = Duration::from_secs(3);
const MUTE_REENABLE: Duration = Duration::from_secs(1);
/// A round's "last forwarded packet" is looked for this long after the command.
const MUTE_LOOK: Duration = Duration::from_millis(900);

/// A scenario's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 1 teacher + 30 pupils (3 speaking, cameras off), N lessons.
    Lesson31,
    /// As `Lesson31`, every pupil's camera on at 150 kbit/s.
    Lesson31Cams,
    /// 31 participants join one lesson within a second.
    JoinStorm,
    /// The teacher mutes all 30 talking pupils, in rounds.
    MuteAll,
    /// `lesson31` with a third of the pupils behind capped links
    /// ([`crate::constrained`]).
    Constrained,
}

impl Kind {
    /// Its name on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Lesson31 => "lesson31",
            Kind::Lesson31Cams => "lesson31-cams",
            Kind::JoinStorm => "join-storm",
            Kind::MuteAll => "mute-all",
            Kind::Constrained => "constrained",
        }
    }
}

/// Which server is under test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetKind {
    /// The Chaperone gateway binary.
    Chaperone {
        /// Path of `gateway`.
        bin: PathBuf,
        /// Path of `recorder`, to record with a `recorder serve` process
        /// of its own (its CPU measured apart); `None`: the gateway's
        /// embedded recorder.
        recorder: Option<PathBuf>,
    },
    /// Janus with the VideoRoom plugin.
    Janus {
        /// Path of `janus`.
        bin: PathBuf,
        /// Directory of the committed Janus configuration.
        config: PathBuf,
    },
}

impl TargetKind {
    /// `chaperone` or `janus`.
    pub fn name(&self) -> &'static str {
        match self {
            TargetKind::Chaperone { .. } => "chaperone",
            TargetKind::Janus { .. } => "janus",
        }
    }
}

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Concurrent lessons.
    pub lessons: usize,
    /// Pupils per lesson ([`PUPILS`]; fewer only for the debug-build smoke test).
    pub pupils: usize,
    /// Measurement window.
    pub duration: Duration,
    /// Settling time between "everyone has media" and the window.
    pub warmup: Duration,
    /// CPU the server is pinned to.
    pub server_cpu: Option<usize>,
    /// Show the server's log.
    pub server_log: bool,
}

/// The participants of a scenario, teachers first.
pub fn plan(kind: Kind, lessons: usize, pupils: usize) -> Vec<ParticipantPlan> {
    let mut out = Vec::new();
    let (spread, first_pupil) = match kind {
        // Everyone of a lesson within one second, after the teacher.
        Kind::JoinStorm => (
            Duration::from_millis(1000) / pupils.max(1) as u32,
            Duration::from_millis(1500),
        ),
        // A steady stream of joins, a few per second per lesson.
        _ => (Duration::from_millis(15), Duration::from_millis(1000)),
    };
    for lesson in 0..lessons {
        out.push(ParticipantPlan {
            lesson,
            role: Role::Teacher,
            publish: vec![
                Publish {
                    source: Source::Audio,
                    sending: true,
                },
                Publish {
                    source: TEACHER_CAMERA,
                    sending: true,
                },
                Publish {
                    source: TEACHER_SCREEN,
                    sending: true,
                },
            ],
            engagement: None,
            reenable_mic_after: None,
            start_after: Duration::from_millis(50 * lesson as u64),
            full: false,
            link: None,
        });
    }
    for n in 0..pupils {
        for lesson in 0..lessons {
            let talking = match kind {
                Kind::MuteAll => true,
                _ => n < SPEAKERS,
            };
            let camera = kind == Kind::Lesson31Cams;
            let engagement = match (talking, camera) {
                (true, true) => Engagement::VoiceChatCamera,
                (true, false) => Engagement::VoiceChat,
                (false, true) => Engagement::ChatCamera,
                (false, false) => Engagement::ChatOnly,
            };
            let order = match kind {
                Kind::JoinStorm => n as u32,
                _ => (n * lessons + lesson) as u32,
            };
            out.push(ParticipantPlan {
                lesson,
                role: Role::Pupil(n),
                publish: vec![
                    Publish {
                        source: Source::Audio,
                        sending: talking,
                    },
                    Publish {
                        source: PUPIL_CAMERA,
                        sending: camera,
                    },
                ],
                engagement: Some(engagement),
                reenable_mic_after: (kind == Kind::MuteAll).then_some(MUTE_REENABLE),
                start_after: first_pupil + spread * order,
                full: false,
                link: None,
            });
        }
    }
    out
}

/// Runs one scenario on a fresh server and returns its figures.
pub async fn run(kind: Kind, target: &TargetKind, opts: &RunOptions) -> Result<ScenarioResult> {
    let plans = plan(kind, opts.lessons, opts.pupils);
    let r = run_plans(kind, plans, Vec::new(), target, opts).await?;
    if std::env::var_os("LOADTEST_DEBUG").is_some() {
        for r in &r.reports {
            let tx: Vec<(u64, u64)> = r
                .media
                .tx
                .iter()
                .map(|t| (t.frames, t.frames_in_window))
                .collect();
            let rx: u64 = r.media.rx.values().map(|s| s.packets).sum();
            let per: Vec<(u8, u64, u64, u64)> = r
                .media
                .rx
                .values()
                .map(|s| (s.pt, s.packets, s.seq_lost, s.padding_only))
                .collect();
            eprintln!("loadtest: rx streams (pt, packets, gaps, padded) {per:?}");
            eprintln!(
                "loadtest: lesson {} pupil {:?}: tx {tx:?} rx packets {rx} samples {} decrypt {:?} keys {:?}",
                r.lesson,
                r.pupil,
                r.media.samples.len(),
                r.media.decrypt,
                r.tx_keys
            );
        }
    }
    Ok(summarise(
        kind.name(),
        target.name(),
        opts.lessons,
        &r.lesson_sizes,
        &r.reports,
        r.window,
        r.resources,
        MUTE_LOOK.as_nanos() as u64,
    ))
}

/// What a run of given plans produced, before it is summarised.
#[derive(Debug)]
pub struct PlansRun {
    /// Every participant's report, in the order of the plans.
    pub reports: Vec<ParticipantReport>,
    /// The measurement window (Unix ns).
    pub window: (u64, u64),
    /// Resources over the window.
    pub resources: Resources,
    /// Participants per lesson.
    pub lesson_sizes: HashMap<usize, usize>,
    /// When each link change was applied (Unix ns), in the order given.
    pub changes_ns: Vec<u64>,
    /// The gateway's `/metrics` text at the window's start, after each link
    /// change, and at the window's end (Chaperone only; empty for Janus).
    pub scrapes: Vec<String>,
}

/// Runs `plans` on a fresh server: everyone joins, the window opens once
/// everyone has media and the warm-up has passed, `changes` are applied to
/// their links at their times in the window, everyone stops at its end.
pub async fn run_plans(
    kind: Kind,
    plans: Vec<ParticipantPlan>,
    mut changes: Vec<LinkChange>,
    target: &TargetKind,
    opts: &RunOptions,
) -> Result<PlansRun> {
    let mut lesson_sizes: HashMap<usize, usize> = HashMap::new();
    for p in &plans {
        *lesson_sizes.entry(p.lesson).or_default() += 1;
    }
    let lessons = lesson_sizes.len();
    let (stop_tx, stop_rx) = watch::channel(false);
    let ctx = Rc::new(RunCtx {
        window: std::cell::Cell::new((0, 0)),
        stop: stop_rx,
        with_media: std::cell::Cell::new(0),
        fence: std::cell::Cell::new(0),
    });
    let mut server = crate::target::Server::start(target, opts, kind.name())?;
    let pid = server.pid()?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = procfs::rss_kib(pid)?;
    let joiners = server.prepare(lessons, &plans).await?;
    let t0 = clock::now();
    let mut tasks = Vec::new();
    let mut controls = Vec::new();
    let last_start = plans
        .iter()
        .map(|p| p.start_after)
        .max()
        .unwrap_or_default();
    for (p, join) in plans.clone().into_iter().zip(joiners) {
        let control = if p.role == Role::Teacher {
            let (tx, rx) = mpsc::unbounded_channel();
            controls.push(tx);
            Some(rx)
        } else {
            None
        };
        let ctx = ctx.clone();
        tasks.push(tokio::task::spawn_local(async move {
            tokio::time::sleep_until((t0 + p.start_after).into()).await;
            join.run(p, ctx, control).await
        }));
    }
    // Everyone receives media, or a bounded wait runs out (failed joins).
    let deadline = t0 + last_start + Duration::from_secs(15);
    while ctx.with_media.get() < plans.len() && clock::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        server.check_running()?;
    }
    let w0 = clock::unix_ns() + opts.warmup.as_nanos() as u64;
    let w1 = w0 + opts.duration.as_nanos() as u64;
    ctx.window.set((w0, w1));
    sleep_until_unix(w0).await;
    let cpu0 = procfs::cpu_ticks(pid)?;
    let rec0 = server.recorder_sample().await?;
    let gen0 = procfs::cpu_ticks(procfs::self_pid())?;
    let mut scrapes = Vec::new();
    scrapes.extend(server.metrics_text().await?);
    if kind == Kind::MuteAll {
        // Rounds inside the window: mute, the pupils switch back on, repeat.
        let mut at = w0 + 1_000_000_000;
        while at + (MUTE_LOOK.as_nanos() as u64) < w1 {
            sleep_until_unix(at).await;
            for c in &controls {
                let _ = c.send(Control::MuteAll);
            }
            at += MUTE_ROUND.as_nanos() as u64;
        }
    }
    changes.sort_by_key(|c| c.at);
    let mut changes_ns = Vec::new();
    for c in &changes {
        sleep_until_unix(w0 + c.at.as_nanos() as u64).await;
        let mut shape = c.link.shape(c.way);
        shape.rate_bps = c.rate_bps;
        shape.loss = c.loss;
        c.link.set(c.way, shape);
        changes_ns.push(clock::unix_ns());
        scrapes.extend(server.metrics_text().await?);
    }
    sleep_until_unix(w1).await;
    let cpu1 = procfs::cpu_ticks(pid)?;
    let rec1 = server.recorder_sample().await?;
    let gen1 = procfs::cpu_ticks(procfs::self_pid())?;
    let rss = procfs::rss_kib(pid)?;
    scrapes.extend(server.metrics_text().await?);
    server
        .check_running()
        .context("the server died during the run")?;
    // Frames in flight at the window's end arrive; then everyone stops.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop_tx.send(true);
    let mut reports: Vec<ParticipantReport> = Vec::new();
    for t in tasks {
        match tokio::time::timeout(Duration::from_secs(10), t).await {
            Ok(Ok(r)) => reports.push(r),
            Ok(Err(e)) => bail!("a participant task panicked: {e}"),
            Err(_) => bail!("a participant did not stop within 10 s"),
        }
    }
    drop(server);
    Ok(PlansRun {
        reports,
        window: (w0, w1),
        resources: Resources {
            server_cpu_ticks: cpu1 - cpu0,
            generator_cpu_ticks: gen1 - gen0,
            server_rss_idle_kib: rss_idle,
            server_rss_kib: rss,
            recorder: rec0.zip(rec1).map(|(a, b)| b.since(&a)),
        },
        lesson_sizes,
        changes_ns,
        scrapes,
    })
}

async fn sleep_until_unix(t: u64) {
    let now = clock::unix_ns();
    if t > now {
        tokio::time::sleep(Duration::from_nanos(t - now)).await;
    }
}

/// `capacity`: `lesson31` with more and more lessons until frame loss
/// exceeds 0.1 % or p99 latency 2 ms (or a join fails). Bounded by `max`.
pub async fn capacity(
    target: &TargetKind,
    opts: &RunOptions,
    start: usize,
    step: usize,
    max: usize,
) -> Result<(Option<usize>, Vec<ScenarioResult>)> {
    let mut last_pass = None;
    let mut results = Vec::new();
    let mut n = start.max(1);
    while n <= max {
        let r = run(
            Kind::Lesson31,
            target,
            &RunOptions {
                lessons: n,
                ..opts.clone()
            },
        )
        .await?;
        let pass = passes(&r);
        eprintln!(
            "capacity: {n} lesson(s): frame loss {:.4}%, packet loss {:.4}%, p99 {:.0} µs, failed joins {} -> {}",
            r.frame_loss.unwrap_or(1.0) * 100.0,
            r.packet_loss.unwrap_or(1.0) * 100.0,
            r.latency_all_us.p99,
            r.failed_joins,
            if pass { "pass" } else { "FAIL" }
        );
        results.push(r);
        if !pass {
            break;
        }
        last_pass = Some(n);
        n += step.max(1);
    }
    Ok((last_pass, results))
}

/// The capacity criterion.
pub fn passes(r: &ScenarioResult) -> bool {
    // Frames end to end where the origin is read from every frame (the
    // Chaperone SFU), packets where only a sample of frames is decrypted (Janus).
    let loss = match r.target.as_str() {
        "janus" => r.packet_loss,
        _ => r.frame_loss,
    };
    r.failed_joins == 0
        && loss.is_some_and(|l| l <= 0.001)
        && r.latency_all_us.count > 0
        && r.latency_all_us.p99 <= 2000.0
}
