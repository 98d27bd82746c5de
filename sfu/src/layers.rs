//! Simulcast layer selection, pure: which layer of each video track a
//! subscriber gets from its bandwidth estimate, when a switch may happen,
//! how fast each layer arrives, and how often a publisher may be asked for
//! a keyframe. No clock and no str0m: time and rates are passed in, so every
//! rule here is unit-tested with plain numbers.
//!
//! # The rule
//!
//! A subscriber's estimate first pays for every audio track it receives
//! (audio is never dropped for video). What is left goes to video in
//! priority order ([`Class`]): the teacher's screen share, the teacher's
//! camera, pupils' cameras. A first pass gives each track its lowest layer
//! while it fits, in that order; a second pass upgrades, in the same order,
//! each track to the highest layer that fits. If the lowest layer of the
//! first video track does not fit, video is *paused* for that subscriber
//! (audio kept) and its page is told.
//!
//! # Hysteresis
//!
//! Down at once: an allocation below the current one applies at the next
//! evaluation, except a pause, which needs the estimate below the lowest
//! layer for [`PAUSE_HOLD`] (the tracks held at their lowest layers
//! meanwhile). Up only with headroom: an upgrade (or an unpause) needs the
//! estimate to carry the higher allocation with [`UP_MARGIN`] to spare for
//! [`UP_HOLD`] without interruption. str0m's estimator probes towards the
//! desired bitrate ([`Selector::desired`]), so the estimate can grow past
//! what is being sent.
//!
//! It must never choose a layer that is not arriving (a track's layers are
//! the ones measured now), never put video before audio, and never read the
//! clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// An upgrade needs the estimate to exceed the higher allocation's cost by
/// this factor.
pub(crate) const UP_MARGIN: f64 = 1.25;

/// How long the headroom for an upgrade must hold before it is taken.
pub(crate) const UP_HOLD: Duration = Duration::from_secs(2);

/// How long the estimate must stay below the lowest layer before video is
/// paused (meanwhile every track is held at its lowest layer): a congestion
/// controller's estimate dips after every loss burst (str0m's fell to 190
/// kbit/s for 2 to 3 s when a 500 kbit/s cap met 1.9 Mbit/s, in
/// `tests/constrained_links.rs`), and a pause costs the pupil at least
/// [`UP_HOLD`] of black tiles.
pub(crate) const PAUSE_HOLD: Duration = Duration::from_secs(4);

/// Per-packet overhead on top of payload rates (RTP, SRTP, UDP, IP headers
/// and RTCP), as a factor.
pub(crate) const OVERHEAD: f64 = 1.15;

/// The window over which a layer's rate is measured.
pub(crate) const RATE_WINDOW: Duration = Duration::from_secs(2);

/// A layer with no frame for this long is not arriving.
pub(crate) const LAYER_TIMEOUT: Duration = Duration::from_millis(1500);

/// Least time between two keyframe requests to one layer of one track,
/// whoever asks (subscribers' PLIs, upstream loss, layer switches): a lossy
/// subscriber can never make the publisher encode keyframes faster.
pub(crate) const KEYFRAME_INTERVAL: Duration = Duration::from_millis(500);

/// Video priority for a subscriber, highest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Class {
    /// A staff member's screen share.
    StaffScreen,
    /// A staff member's camera.
    StaffCamera,
    /// A pupil's screen share (granted by the teacher).
    PupilScreen,
    /// A pupil's camera.
    PupilCamera,
}

/// A simulcast layer's position by its rid: `l` < `m` < `h`; any other rid
/// (or none: a track without simulcast) is one layer, index 0.
pub(crate) fn layer_index(rid: Option<&str>) -> u8 {
    match rid {
        Some("m") => 1,
        Some("h") | Some("f") => 2,
        _ => 0,
    }
}

/// One video track a subscriber may receive, as the allocator sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VideoTrack<K> {
    /// The caller's name for the track.
    pub(crate) key: K,
    /// Its priority.
    pub(crate) class: Class,
    /// The layers arriving now, lowest first: (layer index, bits per second).
    pub(crate) layers: Vec<(u8, u64)>,
}

/// The layer chosen per track, in the order of the input; `None` = not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Allocation {
    /// Per track, the chosen layer index.
    pub(crate) layers: Vec<Option<u8>>,
    /// Video paused: not even the first track's lowest layer fits.
    pub(crate) paused: bool,
}

impl Allocation {
    /// True if `self` is more than `other`: unpaused where `other` is
    /// paused, or every track at least as high and one higher.
    fn above(&self, other: &Allocation) -> bool {
        if self.paused {
            return false;
        }
        if other.paused {
            return true;
        }
        self.layers.iter().zip(&other.layers).all(|(a, b)| a >= b) && self != other
    }
}

fn cost(bps: u64) -> f64 {
    bps as f64 * OVERHEAD
}

/// The allocation for `estimate` bits per second, of which `audio` go to
/// audio first. `tracks` need not be sorted: they are served by class.
pub(crate) fn allocate<K>(estimate: u64, audio: u64, tracks: &[VideoTrack<K>]) -> Allocation {
    let mut budget = estimate as f64 - cost(audio);
    let mut order: Vec<usize> = (0..tracks.len())
        .filter(|&i| tracks.get(i).is_some_and(|t| !t.layers.is_empty()))
        .collect();
    order.sort_by_key(|&i| tracks.get(i).map(|t| t.class));
    let mut chosen: Vec<Option<usize>> = vec![None; tracks.len()];
    // First pass: the lowest layer of each, in priority order, while it fits.
    for &i in &order {
        let Some(&(_, bps)) = tracks.get(i).and_then(|t| t.layers.first()) else {
            continue;
        };
        if cost(bps) <= budget {
            budget -= cost(bps);
            if let Some(c) = chosen.get_mut(i) {
                *c = Some(0);
            }
        } else {
            // Lower priorities do not jump ahead of a higher one that does
            // not fit: a pupil's camera never shows while the teacher's is off.
            break;
        }
    }
    let paused = order
        .first()
        .is_some_and(|&i| chosen.get(i).copied().flatten().is_none());
    // Second pass: upgrade each, in priority order, to the best that fits.
    for &i in &order {
        let (Some(track), Some(Some(at))) = (tracks.get(i), chosen.get(i).copied()) else {
            continue;
        };
        let now_cost = track.layers.get(at).map_or(0.0, |&(_, b)| cost(b));
        let mut best = at;
        for (j, &(_, bps)) in track.layers.iter().enumerate().skip(at + 1) {
            if cost(bps) - now_cost <= budget {
                best = j;
            }
        }
        let best_cost = track.layers.get(best).map_or(0.0, |&(_, b)| cost(b));
        budget -= best_cost - now_cost;
        if let Some(c) = chosen.get_mut(i) {
            *c = Some(best);
        }
    }
    Allocation {
        layers: chosen
            .iter()
            .enumerate()
            .map(|(i, c)| {
                c.and_then(|j| tracks.get(i).and_then(|t| t.layers.get(j)).map(|&(l, _)| l))
            })
            .collect(),
        paused,
    }
}

/// What a subscriber would need to receive the top layer of everything
/// (what str0m's estimator probes towards).
pub(crate) fn desired<K>(audio: u64, tracks: &[VideoTrack<K>]) -> u64 {
    let video: u64 = tracks
        .iter()
        .filter_map(|t| t.layers.last().map(|&(_, b)| b))
        .sum();
    (cost(audio + video) * UP_MARGIN) as u64
}

/// One subscriber's hysteresis: turns each allocation for its estimate into
/// the one to apply.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selector {
    /// What is applied now, per track key order of the last call.
    current: Option<Allocation>,
    /// Since when an upgrade has had headroom.
    up_since: Option<Instant>,
    /// Since when the estimate has not carried the lowest layer.
    pause_since: Option<Instant>,
}

impl Selector {
    /// The allocation to apply at `now` for `estimate`. Down at once, up
    /// after [`UP_HOLD`] with [`UP_MARGIN`] headroom. `tracks` must be in the
    /// same order from call to call (a change of tracks restarts the choice
    /// from what fits now).
    pub(crate) fn select<K>(
        &mut self,
        now: Instant,
        estimate: u64,
        audio: u64,
        tracks: &[VideoTrack<K>],
    ) -> Allocation {
        let fits = allocate(estimate, audio, tracks);
        let Some(current) = self
            .current
            .clone()
            .filter(|c| c.layers.len() == tracks.len())
        else {
            self.up_since = None;
            self.current = Some(fits.clone());
            return fits;
        };
        // Down at once: anything the estimate no longer carries.
        let mut next = Allocation {
            layers: current
                .layers
                .iter()
                .zip(&fits.layers)
                .map(|(c, f)| match (c, f) {
                    (Some(c), Some(f)) => Some((*c).min(*f)),
                    _ => None,
                })
                .collect(),
            paused: current.paused,
        };
        if fits.paused && !current.paused {
            let since = *self.pause_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= PAUSE_HOLD {
                next.paused = true;
            } else {
                // Not yet: what was sent goes on at its lowest layer.
                for ((n, c), t) in next.layers.iter_mut().zip(&current.layers).zip(tracks) {
                    *n = c.and(t.layers.first().map(|&(l, _)| l));
                }
            }
        } else {
            self.pause_since = None;
        }
        // A track that stopped arriving at the current layer takes what fits.
        for (i, (n, t)) in next.layers.iter_mut().zip(tracks).enumerate() {
            if let Some(l) = *n
                && !t.layers.iter().any(|&(x, _)| x == l)
            {
                *n = fits.layers.get(i).copied().flatten();
            }
        }
        // Up with headroom, held.
        let roomy = allocate((estimate as f64 / UP_MARGIN) as u64, audio, tracks);
        let up = roomy.above(&next);
        if up {
            let since = *self.up_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= UP_HOLD {
                next = roomy;
                self.up_since = None;
            }
        } else {
            self.up_since = None;
        }
        if next.paused {
            next.layers.iter_mut().for_each(|l| *l = None);
        }
        self.current = Some(next.clone());
        next
    }
}

/// A layer's measured rate: the bytes of the frames of the last
/// [`RATE_WINDOW`].
#[derive(Debug, Clone, Default)]
pub(crate) struct RateMeter {
    frames: VecDeque<(Instant, usize)>,
    bytes: usize,
}

impl RateMeter {
    /// A frame of `len` bytes arrived at `now`.
    pub(crate) fn record(&mut self, now: Instant, len: usize) {
        self.frames.push_back((now, len));
        self.bytes += len;
        self.expire(now);
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(t, len)) = self.frames.front() {
            if now.saturating_duration_since(t) <= RATE_WINDOW {
                break;
            }
            self.frames.pop_front();
            self.bytes -= len;
        }
    }

    /// Bits per second at `now`, or `None` if the layer is not arriving
    /// (no frame for [`LAYER_TIMEOUT`]).
    pub(crate) fn rate(&mut self, now: Instant) -> Option<u64> {
        self.expire(now);
        let &(last, _) = self.frames.back()?;
        if now.saturating_duration_since(last) > LAYER_TIMEOUT {
            return None;
        }
        let &(first, _) = self.frames.front()?;
        // Over the window, or since the first frame if younger (never under
        // 250 ms, so one large keyframe is not taken for a huge rate).
        let span = now
            .saturating_duration_since(first)
            .max(Duration::from_millis(250))
            .min(RATE_WINDOW);
        Some((self.bytes as f64 * 8.0 / span.as_secs_f64()) as u64)
    }
}

/// At most one keyframe request per [`KEYFRAME_INTERVAL`] for one layer.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyframeLimiter {
    last: Option<Instant>,
}

impl KeyframeLimiter {
    /// Whether a request may go to the publisher at `now` (and if so, it is
    /// counted as sent).
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < KEYFRAME_INTERVAL)
        {
            return false;
        }
        self.last = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        // Unit tests need one real instant to count from.
        #[allow(clippy::disallowed_methods)]
        Instant::now()
    }

    fn camera(key: u32, class: Class) -> VideoTrack<u32> {
        VideoTrack {
            key,
            class,
            layers: vec![(0, 150_000), (1, 450_000), (2, 1_200_000)],
        }
    }

    #[test]
    fn layer_names_order() {
        assert!(layer_index(Some("l")) < layer_index(Some("m")));
        assert!(layer_index(Some("m")) < layer_index(Some("h")));
        assert_eq!(layer_index(None), 0);
    }

    #[test]
    fn plenty_gives_every_top_layer() {
        let tracks = [camera(1, Class::StaffCamera), camera(2, Class::PupilCamera)];
        let a = allocate(10_000_000, 40_000, &tracks);
        assert_eq!(a.layers, vec![Some(2), Some(2)]);
        assert!(!a.paused);
    }

    #[test]
    fn priority_order_is_screen_teacher_pupils() {
        let tracks = [
            camera(1, Class::PupilCamera),
            camera(2, Class::StaffCamera),
            camera(3, Class::StaffScreen),
        ];
        // Room for three lowest layers and one upgrade to the middle.
        let a = allocate(950_000, 40_000, &tracks);
        assert_eq!(a.layers, vec![Some(0), Some(0), Some(1)]);
        // Room for one lowest layer only: the screen share gets it.
        let a = allocate(250_000, 40_000, &tracks);
        assert_eq!(a.layers, vec![None, None, Some(0)]);
        assert!(!a.paused);
    }

    #[test]
    fn five_hundred_kbit_gets_the_lowest_camera_layer_and_audio() {
        let a = allocate(500_000, 40_000, &[camera(1, Class::StaffCamera)]);
        assert_eq!(a.layers, vec![Some(0)]);
    }

    #[test]
    fn too_little_for_the_lowest_layer_pauses_video_not_audio() {
        let a = allocate(150_000, 40_000, &[camera(1, Class::StaffCamera)]);
        assert_eq!(a.layers, vec![None]);
        assert!(a.paused);
        // No video at all: nothing to pause.
        let none: [VideoTrack<u32>; 0] = [];
        assert!(!allocate(10_000, 40_000, &none).paused);
    }

    #[test]
    fn desired_covers_every_top_layer_with_margin() {
        let d = desired(40_000, &[camera(1, Class::StaffCamera)]);
        assert!(d as f64 >= 1_240_000.0 * OVERHEAD * UP_MARGIN - 1.0);
    }

    #[test]
    fn selector_goes_down_at_once_and_up_after_the_hold() {
        let tracks = [camera(1, Class::StaffCamera)];
        let mut s = Selector::default();
        let t = t0();
        assert_eq!(
            s.select(t, 5_000_000, 40_000, &tracks).layers,
            vec![Some(2)]
        );
        // Down at once.
        let t = t + Duration::from_millis(100);
        assert_eq!(s.select(t, 500_000, 40_000, &tracks).layers, vec![Some(0)]);
        // Up: not before the hold, even with plenty.
        let t1 = t + Duration::from_millis(100);
        assert_eq!(
            s.select(t1, 5_000_000, 40_000, &tracks).layers,
            vec![Some(0)]
        );
        let t2 = t1 + UP_HOLD / 2;
        assert_eq!(
            s.select(t2, 5_000_000, 40_000, &tracks).layers,
            vec![Some(0)]
        );
        // An interruption restarts the hold.
        let t3 = t2 + Duration::from_millis(10);
        assert_eq!(s.select(t3, 500_000, 40_000, &tracks).layers, vec![Some(0)]);
        let t4 = t3 + UP_HOLD - Duration::from_millis(1);
        assert_eq!(
            s.select(t4, 5_000_000, 40_000, &tracks).layers,
            vec![Some(0)]
        );
        let t5 = t4 + UP_HOLD;
        assert_eq!(
            s.select(t5, 5_000_000, 40_000, &tracks).layers,
            vec![Some(2)]
        );
    }

    #[test]
    fn selector_needs_headroom_to_go_up() {
        let tracks = [camera(1, Class::StaffCamera)];
        let mut s = Selector::default();
        let t = t0();
        assert_eq!(s.select(t, 500_000, 40_000, &tracks).layers, vec![Some(0)]);
        // Enough for the middle layer exactly, not with the margin: stays.
        let just = (cost(40_000) + cost(450_000)) as u64 + 1;
        for i in 1..10 {
            let a = s.select(t + UP_HOLD * i, just, 40_000, &tracks);
            assert_eq!(a.layers, vec![Some(0)]);
        }
    }

    #[test]
    fn selector_pauses_after_the_hold_and_resumes_with_headroom() {
        let tracks = [camera(1, Class::StaffCamera)];
        let mut s = Selector::default();
        let t = t0();
        assert!(!s.select(t, 2_000_000, 40_000, &tracks).paused);
        // A dip: held at the lowest layer, not paused.
        let a = s.select(t, 100_000, 40_000, &tracks);
        assert_eq!((a.paused, a.layers), (false, vec![Some(0)]));
        let a = s.select(t + PAUSE_HOLD / 2, 500_000, 40_000, &tracks);
        assert_eq!((a.paused, a.layers), (false, vec![Some(0)]));
        // Below for the whole hold: paused.
        let t = t + PAUSE_HOLD;
        assert!(!s.select(t, 100_000, 40_000, &tracks).paused);
        let a = s.select(t + PAUSE_HOLD, 100_000, 40_000, &tracks);
        assert!(a.paused);
        assert_eq!(a.layers, vec![None]);
        let t = t + PAUSE_HOLD;
        // Back above the lowest layer: resumes only after the hold.
        assert!(
            s.select(t + Duration::from_millis(1), 600_000, 40_000, &tracks)
                .paused
        );
        assert!(!s.select(t + UP_HOLD * 2, 600_000, 40_000, &tracks).paused);
    }

    #[test]
    fn selector_leaves_a_layer_that_stopped_arriving() {
        let mut tracks = [camera(1, Class::StaffCamera)];
        let mut s = Selector::default();
        let t = t0();
        assert_eq!(
            s.select(t, 5_000_000, 40_000, &tracks).layers,
            vec![Some(2)]
        );
        tracks[0].layers.truncate(2);
        assert_eq!(
            s.select(t, 5_000_000, 40_000, &tracks).layers,
            vec![Some(1)]
        );
    }

    #[test]
    fn rate_meter_measures_and_times_out() {
        let mut m = RateMeter::default();
        let t = t0();
        assert_eq!(m.rate(t), None);
        // 100 frames of 1250 bytes over 2 s: 500 kbit/s.
        for i in 0..100 {
            m.record(t + Duration::from_millis(20 * i), 1250);
        }
        let r = m.rate(t + Duration::from_secs(2)).expect("arriving");
        assert!((450_000..=550_000).contains(&r), "{r}");
        assert_eq!(m.rate(t + Duration::from_secs(10)), None);
    }

    #[test]
    fn keyframe_requests_are_bounded() {
        let mut k = KeyframeLimiter::default();
        let t = t0();
        // 100 requests a second for 10 s (a lossy subscriber).
        let allowed = (0..1000)
            .filter(|i| k.allow(t + Duration::from_millis(10 * i)))
            .count();
        let bound = (10_000 / KEYFRAME_INTERVAL.as_millis()) as usize + 1;
        assert!(allowed <= bound, "{allowed} > {bound}");
        assert!(allowed >= bound - 1);
    }
}
