//! The `constrained` scenario and the figures it and the constrained-link
//! tests read from a run: which simulcast layer a pupil received when, how
//! long it took to adapt to a capped link and back, what audio it lost.
//!
//! A lesson of [`crate::scenario::PUPILS`] pupils and a teacher who
//! publishes a microphone and a three-layer simulcast camera; every
//! participant is a [`crate::media::PeerConfig::full`] peer (NACK, RTX,
//! every packet decrypted, so the SFU's bandwidth estimate gets its
//! feedback), and a third of the pupils reach the gateway through an
//! impairment relay ([`chaperone_testkit::impair`]) whose downlink is capped
//! at one of [`RATES`] for the middle of the window. The same lesson runs
//! once more with nobody capped, to compare the uncapped pupils.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chaperone_protocol::Engagement;
use chaperone_testkit::impair::{Relay, Way};
use serde::Serialize;

use crate::media::{NO_LAYER, Publish, RxFrame, SIMULCAST_LAYERS, Source};
use crate::plan::{LinkChange, ParticipantPlan, ParticipantReport, Role};
use crate::scenario::{self, Kind, PlansRun, RunOptions, SPEAKERS, TargetKind};

/// Downlink caps of the capped pupils, bit/s, in turn.
pub const RATES: [u64; 3] = [2_000_000, 500_000, 150_000];
/// When the caps are applied and lifted, after the window opens.
pub const CAP_AT: Duration = Duration::from_secs(10);
/// How long the caps hold.
pub const CAP_FOR: Duration = Duration::from_secs(25);
/// Frames of one layer for this long, and no other, is "on" that layer.
pub const STEADY: Duration = Duration::from_secs(1);
/// The teacher camera's frame rate (every layer).
pub const CAMERA_FPS: u32 = 30;

/// The teacher: microphone and simulcast camera.
pub fn teacher_publish() -> Vec<Publish> {
    vec![
        Publish {
            source: Source::Audio,
            sending: true,
        },
        Publish {
            source: Source::Simulcast { fps: CAMERA_FPS },
            sending: true,
        },
    ]
}

/// A teacher plan (lesson 0, full peer).
pub fn teacher(link: Option<Arc<Relay>>) -> ParticipantPlan {
    ParticipantPlan {
        lesson: 0,
        role: Role::Teacher,
        publish: teacher_publish(),
        engagement: None,
        reenable_mic_after: None,
        start_after: Duration::ZERO,
        full: true,
        link,
    }
}

/// A pupil plan (lesson 0, full peer): `talking` with a microphone,
/// `camera` with a 150 kbit/s camera.
pub fn pupil(n: usize, talking: bool, camera: bool, link: Option<Arc<Relay>>) -> ParticipantPlan {
    let engagement = match (talking, camera) {
        (true, true) => Engagement::VoiceChatCamera,
        (true, false) => Engagement::VoiceChat,
        (false, true) => Engagement::ChatCamera,
        (false, false) => Engagement::ChatOnly,
    };
    ParticipantPlan {
        lesson: 0,
        role: Role::Pupil(n),
        publish: vec![
            Publish {
                source: Source::Audio,
                sending: talking,
            },
            Publish {
                source: scenario::PUPIL_CAMERA,
                sending: camera,
            },
        ],
        engagement: Some(engagement),
        reenable_mic_after: None,
        start_after: Duration::from_millis(1000 + 30 * n as u64),
        full: true,
        link,
    }
}

/// The teacher camera's frames a peer received (the only simulcast source).
pub fn camera_frames(r: &ParticipantReport) -> Vec<RxFrame> {
    r.media
        .frames
        .iter()
        .filter(|f| !f.audio && f.layer != NO_LAYER)
        .copied()
        .collect()
}

/// How long after `since` (Unix ns) the camera frames were, for
/// [`STEADY`], all of a layer `pred` accepts (the first such stretch that
/// starts after `since` and before `until`).
pub fn time_to(
    frames: &[RxFrame],
    since: u64,
    until: u64,
    pred: impl Fn(u8) -> bool,
) -> Option<Duration> {
    let steady = STEADY.as_nanos() as u64;
    let mut run: Option<u64> = None;
    for f in frames
        .iter()
        .filter(|f| f.rx_ns >= since && f.rx_ns < until)
    {
        if pred(f.layer) {
            let start = *run.get_or_insert(f.rx_ns);
            if f.rx_ns >= start + steady {
                return Some(Duration::from_nanos(start - since));
            }
        } else {
            run = None;
        }
    }
    None
}

/// Camera frames per layer received between `a` and `b` (Unix ns).
pub fn layers_between(frames: &[RxFrame], a: u64, b: u64) -> [u64; 3] {
    let mut n = [0; 3];
    for f in frames.iter().filter(|f| f.rx_ns >= a && f.rx_ns < b) {
        if let Some(c) = n.get_mut(usize::from(f.layer)) {
            *c += 1;
        }
    }
    n
}

/// Audio frames of `sender` whose origin is in `[a, b)`: sent, and of
/// those, received by `receiver`.
pub fn audio_delivery(
    sender: &ParticipantReport,
    receiver: &ParticipantReport,
    a: u64,
    b: u64,
) -> (u64, u64) {
    let sent: HashSet<u64> = sender
        .media
        .tx
        .iter()
        .filter(|t| t.audio)
        .flat_map(|t| t.sent.iter().map(|&(o, _, _)| o))
        .filter(|&o| o >= a && o < b)
        .collect();
    let got: HashSet<u64> = receiver
        .media
        .frames
        .iter()
        .filter(|f| f.audio && sent.contains(&f.origin_ns))
        .map(|f| f.origin_ns)
        .collect();
    (sent.len() as u64, got.len() as u64)
}

/// Camera frames of layer `layer` the teacher sent with origin in `[a, b)`.
pub fn sent_layer(teacher: &ParticipantReport, layer: u8, a: u64, b: u64) -> HashSet<u64> {
    teacher
        .media
        .tx
        .iter()
        .flat_map(|t| t.sent.iter())
        .filter(|&&(o, l, _)| l == layer && o >= a && o < b)
        .map(|&(o, _, _)| o)
        .collect()
}

/// The highest layer of most camera frames between `a` and `b`.
pub fn main_layer(frames: &[RxFrame], a: u64, b: u64) -> Option<usize> {
    let n = layers_between(frames, a, b);
    let total: u64 = n.iter().sum();
    if total == 0 {
        return None;
    }
    n.iter()
        .enumerate()
        .max_by_key(|(_, c)| **c)
        .map(|(l, _)| l)
}

/// The value of a histogram's cumulative bucket `le` in a `/metrics` text,
/// of the series with `labels` (for example `role="pupil"`; empty: a
/// histogram without labels).
pub fn bucket(scrape: &str, name: &str, labels: &str, le: &str) -> Option<f64> {
    let sep = if labels.is_empty() { "" } else { "," };
    let key = format!("chaperone_{name}_bucket{{{labels}{sep}le=\"{le}\"}}");
    scrape.lines().find_map(|l| {
        let (k, v) = l.rsplit_once(' ')?;
        (k == key).then(|| v.parse().ok())?
    })
}

/// One capped rate's figures (medians over its pupils).
#[derive(Debug, Clone, Serialize)]
pub struct RateFigures {
    /// The cap, bit/s.
    pub rate_bps: u64,
    /// Pupils behind it.
    pub pupils: usize,
    /// Layer most received while capped (after adapting), per pupil
    /// (`l`, `m`, `h`, or `paused`).
    pub layer: Vec<String>,
    /// Audio loss while capped (whole capped period, switch included).
    pub audio_loss: f64,
    /// Cap → on the layer it ends on (or video paused), seconds, median.
    pub adapt_down_s: Option<f64>,
    /// Cap lifted → on the top layer, seconds, median.
    pub adapt_up_s: Option<f64>,
    /// Pupils told "video paused".
    pub told_paused: usize,
}

/// The uncapped pupils' figures in one run.
#[derive(Debug, Clone, Serialize)]
pub struct UncappedFigures {
    /// Pupils.
    pub pupils: usize,
    /// Teacher camera frames per second while others are capped, median.
    pub fps: f64,
    /// Share of those frames on the top layer.
    pub top_share: f64,
    /// Audio loss over the window.
    pub audio_loss: f64,
}

/// The scenario's result.
#[derive(Debug, Clone, Serialize)]
pub struct ConstrainedResult {
    /// Per cap.
    pub rates: Vec<RateFigures>,
    /// Uncapped pupils while a third were capped.
    pub uncapped: UncappedFigures,
    /// The same pupils in the run where nobody was capped (same window).
    pub baseline: UncappedFigures,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// A run's plans, its link changes, and each capped pupil's rate.
type Plans = (Vec<ParticipantPlan>, Vec<LinkChange>, BTreeMap<usize, u64>);

fn plans(pupils: usize, capped: bool, bound: Duration) -> Result<Plans> {
    let mut plans = vec![teacher(None)];
    let mut changes = Vec::new();
    let mut rate_of = BTreeMap::new();
    for n in 0..pupils {
        // Every third pupil, from the first, is behind a relay.
        let link = if n % 3 == 0 {
            let relay = Arc::new(Relay::unconnected(bound)?);
            let rate = RATES[(n / 3) % RATES.len()];
            rate_of.insert(n, rate);
            if capped {
                for (at, cap) in [(CAP_AT, Some(rate)), (CAP_AT + CAP_FOR, None)] {
                    changes.push(LinkChange {
                        at,
                        link: relay.clone(),
                        way: Way::Down,
                        rate_bps: cap,
                        loss: 0.0,
                    });
                }
            }
            Some(relay)
        } else {
            None
        };
        // The speakers are uncapped (pupils 1, 2 and 4).
        plans.push(pupil(n, n % 3 != 0 && n < 2 + SPEAKERS, false, link));
    }
    Ok((plans, changes, rate_of))
}

fn uncapped(run: &PlansRun, rate_of: &BTreeMap<usize, u64>, a: u64, b: u64) -> UncappedFigures {
    let teacher = &run.reports[0];
    let secs = (b - a) as f64 / 1e9;
    let (mut fps, mut top, mut sent, mut got) = (Vec::new(), Vec::new(), 0, 0);
    for r in run.reports.iter().skip(1) {
        if r.pupil.is_some_and(|n| rate_of.contains_key(&n)) {
            continue;
        }
        let frames = camera_frames(r);
        let n = layers_between(&frames, a, b);
        let total: u64 = n.iter().sum();
        fps.push(total as f64 / secs);
        top.push(if total > 0 {
            n[2] as f64 / total as f64
        } else {
            0.0
        });
        let (s, g) = audio_delivery(teacher, r, a, b);
        sent += s;
        got += g;
    }
    UncappedFigures {
        pupils: fps.len(),
        fps: median(fps).unwrap_or(0.0),
        top_share: median(top).unwrap_or(0.0),
        audio_loss: if sent > 0 {
            1.0 - got as f64 / sent as f64
        } else {
            0.0
        },
    }
}

/// Runs the scenario: the capped run, then the same lesson uncapped.
pub async fn run(target: &TargetKind, opts: &RunOptions) -> Result<ConstrainedResult> {
    let window = (CAP_AT + CAP_FOR + Duration::from_secs(15)).max(opts.duration);
    let opts = RunOptions {
        lessons: 1,
        duration: window,
        ..opts.clone()
    };
    let bound = window + Duration::from_secs(120);
    let (p, changes, rate_of) = plans(opts.pupils, true, bound)?;
    let capped = scenario::run_plans(Kind::Constrained, p, changes, target, &opts).await?;
    let (p, _, _) = plans(opts.pupils, false, bound)?;
    let base = scenario::run_plans(Kind::Constrained, p, Vec::new(), target, &opts).await?;
    let w0 = capped.window.0;
    let cap_ns = *capped.changes_ns.first().context("the caps were applied")?;
    let lift_ns = *capped.changes_ns.last().context("the caps were lifted")?;
    let end = capped.window.1;
    let teacher = &capped.reports[0];
    let mut rates = Vec::new();
    for rate in RATES {
        let mut layer = Vec::new();
        let (mut down, mut up, mut sent, mut got, mut told) = (Vec::new(), Vec::new(), 0, 0, 0);
        let pupils: Vec<&ParticipantReport> = capped
            .reports
            .iter()
            .filter(|r| r.pupil.and_then(|n| rate_of.get(&n)) == Some(&rate))
            .collect();
        for r in &pupils {
            let frames = camera_frames(r);
            // Where it ends up: the layer most received in the capped
            // period's second half, or paused if nothing came.
            let half = cap_ns + (lift_ns - cap_ns) / 2;
            let settled = main_layer(&frames, half, lift_ns);
            layer.push(settled.map_or("paused".to_owned(), |l| SIMULCAST_LAYERS[l].0.to_owned()));
            let paused_at = r
                .video_paused
                .iter()
                .find(|&&(t, p)| p && t >= cap_ns && t < lift_ns)
                .map(|&(t, _)| Duration::from_nanos(t - cap_ns));
            if paused_at.is_some() {
                told += 1;
            }
            let d = match settled {
                Some(l) => time_to(&frames, cap_ns, lift_ns, |x| usize::from(x) == l),
                None => paused_at,
            };
            down.extend(d.map(|d| d.as_secs_f64()));
            up.extend(time_to(&frames, lift_ns, end, |x| x == 2).map(|d| d.as_secs_f64()));
            let (s, g) = audio_delivery(teacher, r, cap_ns, lift_ns);
            sent += s;
            got += g;
        }
        rates.push(RateFigures {
            rate_bps: rate,
            pupils: pupils.len(),
            layer,
            audio_loss: if sent > 0 {
                1.0 - got as f64 / sent as f64
            } else {
                0.0
            },
            adapt_down_s: median(down),
            adapt_up_s: median(up),
            told_paused: told,
        });
    }
    // The uncapped pupils while the caps held (after 5 s to adapt), and
    // the same stretch of the uncapped run.
    let (a, b) = (cap_ns + 5_000_000_000, lift_ns);
    let offset = |t: u64| base.window.0 + (t - w0);
    Ok(ConstrainedResult {
        rates,
        uncapped: uncapped(&capped, &rate_of, a, b),
        baseline: uncapped(&base, &rate_of, offset(a), offset(b)),
    })
}

impl ConstrainedResult {
    /// A table for people.
    pub fn summary(&self) -> String {
        let mut s = String::from(
            "constrained on chaperone: 1 lesson, a third of the pupils capped (downlink)\n\
             | cap | pupils | layer while capped | audio loss | adapt down | adapt up | told paused |\n\
             |---|---|---|---|---|---|---|\n",
        );
        let secs = |d: Option<f64>| d.map_or("—".to_owned(), |d| format!("{d:.1} s"));
        for r in &self.rates {
            s.push_str(&format!(
                "| {} kbit/s | {} | {} | {:.2} % | {} | {} | {} |\n",
                r.rate_bps / 1000,
                r.pupils,
                r.layer.join(" "),
                r.audio_loss * 100.0,
                secs(r.adapt_down_s),
                secs(r.adapt_up_s),
                r.told_paused
            ));
        }
        for (name, u) in [
            ("uncapped, others capped", &self.uncapped),
            ("nobody capped", &self.baseline),
        ] {
            s.push_str(&format!(
                "{name}: {} pupils, teacher camera {:.1} fps (median), {:.0} % of frames on the top layer, audio loss {:.2} %\n",
                u.pupils,
                u.fps,
                u.top_share * 100.0,
                u.audio_loss * 100.0
            ));
        }
        s
    }
}
