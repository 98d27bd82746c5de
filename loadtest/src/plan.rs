//! What a scenario asks of each simulated participant, and what each one
//! reports back: shared by the Chaperone and the Janus adapters.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chaperone_testkit::impair::{Relay, Way};

use chaperone_protocol::Engagement;

use crate::media::{MediaReport, Publish};

/// Who a participant is in their lesson.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The lesson's teacher (publishes, admits, controls).
    Teacher,
    /// Pupil number `n` of the lesson (0-based).
    Pupil(usize),
}

/// A teacher's command, sent by the scenario at a chosen moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Turn every pupil's microphone off.
    MuteAll,
    /// End the lesson for everyone (`end_lesson`).
    EndLesson,
    /// Revoke pupil `n`'s microphone (the pupil's client ignores it and
    /// keeps sending: the server must hold).
    RevokeMic(usize),
}

/// One participant of a run.
#[derive(Debug, Clone)]
pub struct ParticipantPlan {
    /// Lesson index within the run.
    pub lesson: usize,
    /// Teacher or pupil.
    pub role: Role,
    /// The m-lines it offers, in order (for Chaperone: microphone, camera,
    /// then screen share, as the browser client does).
    pub publish: Vec<Publish>,
    /// A pupil's engagement choice once admitted.
    pub engagement: Option<Engagement>,
    /// A pupil whose mic a teacher turns off switches it on again after
    /// this long (`mute-all` repeats its rounds this way).
    pub reenable_mic_after: Option<Duration>,
    /// When it starts joining, after the run starts.
    pub start_after: Duration,
    /// Behave as a browser on a real network ([`crate::media::PeerConfig::full`]).
    pub full: bool,
    /// Reach the server through this impairment relay.
    pub link: Option<Arc<Relay>>,
}

/// A change to a participant's link during a run's measurement window.
#[derive(Debug, Clone)]
pub struct LinkChange {
    /// After the window starts.
    pub at: Duration,
    /// The relay.
    pub link: Arc<Relay>,
    /// Which direction.
    pub way: Way,
    /// The new rate cap (`None`: none).
    pub rate_bps: Option<u64>,
    /// The new random loss, 0.0 to 1.0.
    pub loss: f64,
}

/// What one participant saw and did.
#[derive(Debug, Default)]
pub struct ParticipantReport {
    /// Lesson index.
    pub lesson: usize,
    /// Teacher (`None`) or pupil number.
    pub pupil: Option<usize>,
    /// When it started joining (Unix ns).
    pub join_start_ns: u64,
    /// When it was admitted (Unix ns).
    pub admitted_ns: Option<u64>,
    /// Why it failed, if it did (refused, signaling lost, media failed).
    pub failure: Option<String>,
    /// Its media.
    pub media: MediaReport,
    /// The global key of each of its published streams (same order as `media.tx`).
    pub tx_keys: Vec<String>,
    /// Received streams' keys, by the mid they arrive on.
    pub rx_key_by_mid: HashMap<String, String>,
    /// When it sent each `MuteAll` (Unix ns), if it is a teacher.
    pub mute_cmds_ns: Vec<u64>,
    /// `media_quality` notices received (Unix ns, video paused).
    pub video_paused: Vec<(u64, bool)>,
}

impl ParticipantReport {
    /// The key of a received SSRC: by the SDP's `a=ssrc` lines, else by
    /// the mid header extension.
    pub fn rx_key(&self, ssrc: u32) -> Option<&String> {
        let by_sdp = self
            .media
            .sections
            .iter()
            .rev()
            .find(|s| s.ssrcs.contains(&ssrc))
            .and_then(|s| self.rx_key_by_mid.get(&s.mid));
        by_sdp.or_else(|| {
            self.media
                .rx
                .get(&ssrc)
                .and_then(|r| r.mid.as_ref())
                .and_then(|m| self.rx_key_by_mid.get(m))
        })
    }
}
