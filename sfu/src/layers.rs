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
//! desired bitrate ([`desired`]: the next rung up, not the top of
//! everything, so a probe burst never dwarfs a slow link), so the estimate
//! can grow past what is being sent. The state is per track: tracks coming
//! and going never pause or unpause video by themselves.
//!
//! It must never choose a layer that is not arriving (a track's layers are
//! the ones measured now), never put video before audio, and never read the
//! clock.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// An upgrade needs the estimate to exceed the higher allocation's cost by
/// this factor.
pub(crate) const UP_MARGIN: f64 = 1.25;

/// What is sent now is kept while the estimate covers this share of its
/// cost: a congestion controller's estimate falls to 85 % of the acknowledged
/// rate at every overuse signal (Google congestion control's decrease),
/// which a busy sender or receiver sets off without the link being short
/// (on this loaded 2-core machine, an uncapped subscriber's estimate fell
/// from 3.9 to 1.28 Mbit/s for a few seconds, under the top layer's 1.43).
/// A link that really is short loses packets at once, and a congested loss
/// report ([`LOSS_CONGESTED`]) takes the layers down without this slack.
pub(crate) const DOWN_SLACK: f64 = 0.85;

/// How long the headroom for an upgrade must hold before it is taken.
pub(crate) const UP_HOLD: Duration = Duration::from_secs(2);

/// How long the estimate must stay below the lowest layer before video is
/// paused (meanwhile every track is held at its lowest layer): a congestion
/// controller's estimate dips after every loss burst (str0m's fell to 190
/// kbit/s for 2 to 3 s when a 500 kbit/s cap met 1.9 Mbit/s, in
/// `tests/constrained_links.rs`), and a pause costs the pupil at least
/// [`UP_HOLD`] of black tiles.
pub(crate) const PAUSE_HOLD: Duration = Duration::from_secs(4);

/// A subscriber's reported loss above this share (RTCP receiver reports,
/// over a stats interval) means its link is congested now, as Google
/// congestion control reads it (10 %).
pub(crate) const LOSS_CONGESTED: f32 = 0.1;

/// How long a congested report's delivered rate caps the estimate.
pub(crate) const LOSS_HOLD: Duration = Duration::from_secs(2);

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

/// What got through to a subscriber that reported `loss` of what was sent
/// at `sending` bit/s, if the loss says its link is congested
/// ([`LOSS_CONGESTED`]): the link's capacity, measured.
///
/// Why: str0m's estimate is an average over 3 s of the estimator's values,
/// so after a link drops it falls over seconds (from 3 Mbit/s to the
/// middle layer's cost took 4 s when a 500 kbit/s cap met 1.5 Mbit/s),
/// while a drop-tail queue drops most of what it is sent at once. The
/// receiver's loss report, a second later, says how much fits.
pub(crate) fn delivered(sending: u64, loss: f32) -> Option<u64> {
    (loss > LOSS_CONGESTED && sending > 0)
        .then(|| (sending as f64 * (1.0 - f64::from(loss.min(1.0)))) as u64)
}

/// What an allocation costs on the wire, bit/s: `audio`, and each track's
/// layer in `layers` (as the same order as `tracks`; `None` costs nothing).
pub(crate) fn sending_cost<K>(audio: u64, tracks: &[VideoTrack<K>], layers: &[Option<u8>]) -> u64 {
    let video: u64 = tracks
        .iter()
        .zip(layers)
        .filter_map(|(t, l)| {
            let l = (*l)?;
            t.layers.iter().find(|&&(x, _)| x == l).map(|&(_, b)| b)
        })
        .sum();
    cost(audio + video) as u64
}

/// What a subscriber would need to receive the top layer of everything,
/// with the upgrade margin.
pub(crate) fn top<K>(audio: u64, tracks: &[VideoTrack<K>]) -> u64 {
    let video: u64 = tracks
        .iter()
        .filter_map(|t| t.layers.last().map(|&(_, b)| b))
        .sum();
    (cost(audio + video) * UP_MARGIN) as u64
}

/// The costs at which the allocation changes, lowest first: audio and the
/// lowest layer of each track in priority order, then each track raised
/// one layer at a time in priority order (the steps [`allocate`] climbs).
fn rungs<K>(audio: u64, tracks: &[VideoTrack<K>]) -> Vec<f64> {
    let mut order: Vec<&VideoTrack<K>> = tracks.iter().filter(|t| !t.layers.is_empty()).collect();
    order.sort_by_key(|t| t.class);
    let mut total = cost(audio);
    let mut out = Vec::new();
    for t in &order {
        if let Some(&(_, b)) = t.layers.first() {
            total += cost(b);
            out.push(total);
        }
    }
    for t in &order {
        for pair in t.layers.windows(2) {
            if let [(_, lo), (_, hi)] = pair {
                total += cost(*hi) - cost(*lo);
                out.push(total);
            }
        }
    }
    out
}

/// What str0m's estimator should probe towards for a subscriber whose
/// estimate is `estimate`: the next allocation up that the estimate does
/// not yet carry with [`UP_MARGIN`] (the first rung above it), with that
/// margin; the top of everything if the estimate carries it all.
///
/// Not everything at once: str0m probes in bursts of up to twice the
/// desired bitrate (allocation probes, and in the application-limited
/// region a probe every 5 s), and a burst far above a slow link overflows
/// its queue and takes audio with it. A subscriber held on the lowest
/// layer by a 500 kbit/s link asks for the middle layer's cost only; once
/// the link is lifted and a probe finds it, the next rung is asked for at
/// once (str0m probes again when the desired bitrate rises).
pub(crate) fn desired<K>(estimate: u64, audio: u64, tracks: &[VideoTrack<K>]) -> u64 {
    let e = estimate as f64;
    rungs(audio, tracks)
        .into_iter()
        .map(|r| r * UP_MARGIN)
        .find(|&r| r > e)
        .map_or_else(|| top(audio, tracks), |r| r as u64)
}

/// The desired bitrate as given to str0m, changed only when what
/// [`desired`] says moves by more than [`DESIRED_BAND`]: every rise makes
/// str0m send allocation probes, and measured layer rates wobble from one
/// evaluation to the next.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DesiredRate {
    set: Option<u64>,
}

/// How far (as a factor) the desired bitrate must move before it is
/// changed.
pub(crate) const DESIRED_BAND: f64 = 1.15;

impl DesiredRate {
    /// The value to give str0m for a newly computed `want`.
    pub(crate) fn update(&mut self, want: u64) -> u64 {
        let keep = self.set.filter(|&s| {
            let (s, w) = (s as f64, want as f64);
            w <= s * DESIRED_BAND && w >= s / DESIRED_BAND && want != 0
        });
        let v = keep.unwrap_or(want);
        self.set = Some(v);
        v
    }
}

/// One subscriber's hysteresis: turns each allocation for its estimate into
/// the one to apply. State is kept per track (by the caller's key), so a
/// track that appears or goes changes nothing for the others; and the
/// paused state only changes by the estimate, never because tracks came or
/// went.
#[derive(Debug, Clone)]
pub(crate) struct Selector<K> {
    /// The layer applied now per track (`None`: not sent, the budget did
    /// not reach it).
    current: HashMap<K, Option<u8>>,
    /// Video paused now.
    paused: bool,
    /// Since when an upgrade has had headroom.
    up_since: Option<Instant>,
    /// Since when the estimate has not carried the lowest layer.
    pause_since: Option<Instant>,
}

impl<K> Default for Selector<K> {
    fn default() -> Self {
        Selector {
            current: HashMap::new(),
            paused: false,
            up_since: None,
            pause_since: None,
        }
    }
}

impl<K: Clone + Eq + Hash> Selector<K> {
    /// The allocation to apply at `now` for `estimate`, in the order of
    /// `tracks`. Down at once (a pause only after [`PAUSE_HOLD`]), up after
    /// [`UP_HOLD`] with [`UP_MARGIN`] headroom. A track seen for the first
    /// time gets what fits now; one that stopped arriving at its layer
    /// takes what fits.
    pub(crate) fn select(
        &mut self,
        now: Instant,
        estimate: u64,
        congested: bool,
        audio: u64,
        tracks: &[VideoTrack<K>],
    ) -> Allocation {
        if tracks.is_empty() {
            // Nothing to measure the estimate against: the state stands (a
            // camera turned off does not unpause, nor pause, anyone).
            self.current.clear();
            self.up_since = None;
            self.pause_since = None;
            return Allocation {
                layers: Vec::new(),
                paused: self.paused,
            };
        }
        let fits = allocate(estimate, audio, tracks);
        // Down at once: anything the estimate no longer carries (what is
        // sent is kept within [`DOWN_SLACK`], unless the link reported
        // congested loss; once it goes, it goes to what fits).
        let keeps = if congested {
            fits.clone()
        } else {
            allocate((estimate as f64 / DOWN_SLACK) as u64, audio, tracks)
        };
        let mut next = Allocation {
            layers: tracks
                .iter()
                .zip(fits.layers.iter().zip(&keeps.layers))
                .map(|(t, (f, k))| match self.current.get(&t.key) {
                    // Kept whole within the slack; otherwise what fits.
                    Some(Some(c)) if k.is_some_and(|k| k >= *c) => Some(*c),
                    Some(Some(c)) => f.map(|f| f.min(*c)),
                    Some(None) => None,
                    None => *f,
                })
                .collect(),
            paused: self.paused,
        };
        if fits.paused && !self.paused {
            let since = *self.pause_since.get_or_insert(now);
            // Measured loss says the lowest layer does not get through: the
            // shorter hold (reports come every second, so two or three
            // agree); an estimate alone may be a dip.
            let hold = if congested { LOSS_HOLD } else { PAUSE_HOLD };
            if now.saturating_duration_since(since) >= hold {
                next.paused = true;
            } else {
                // Not yet: what was sent goes on at its lowest layer.
                for (n, t) in next.layers.iter_mut().zip(tracks) {
                    let had = self.current.get(&t.key).copied().unwrap_or(Some(0));
                    *n = had.and(t.layers.first().map(|&(l, _)| l));
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
        if roomy.above(&next) {
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
        self.paused = next.paused;
        self.current = tracks
            .iter()
            .zip(&next.layers)
            .map(|(t, l)| (t.key.clone(), *l))
            .collect();
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
mod tests;
