//! Turning participants' reports into a scenario's figures: forwarded
//! packets per second, CPU per packet, latency percentiles, fan-out skew,
//! loss, join and control times, memory per participant.

use std::collections::HashMap;

use serde::Serialize;

use crate::plan::ParticipantReport;

/// Percentiles of a set of samples.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Percentiles {
    /// How many samples.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `v` (sorted here), scaled by `scale`.
    pub fn of(mut v: Vec<u64>, scale: f64) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        v.sort_unstable();
        let at = |q: f64| {
            let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
            v[rank - 1] as f64 * scale
        };
        Self {
            count: v.len(),
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            p999: at(0.999),
            max: v[v.len() - 1] as f64 * scale,
        }
    }
}

/// Resource figures sampled around the measurement window.
#[derive(Debug, Clone, Default)]
pub struct Resources {
    /// Server CPU ticks (1/100 s) spent in the window.
    pub server_cpu_ticks: u64,
    /// Generator CPU ticks spent in the window.
    pub generator_cpu_ticks: u64,
    /// Server resident memory before anyone joined, KiB.
    pub server_rss_idle_kib: u64,
    /// Server resident memory at the end of the window, KiB.
    pub server_rss_kib: u64,
    /// A recorder process apart from the server, if there is one: what it
    /// did in the window.
    pub recorder: Option<crate::recorder::Sample>,
}

/// What recording cost, from a recorder process of its own over the window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RecorderFigures {
    /// Its CPU per lesson, cores.
    pub cpu_cores_per_lesson: f64,
    /// Tracks that sent media in the window (all lessons).
    pub tracks: usize,
    /// Its CPU per second of one recorded track, µs (CPU ÷ tracks ÷ window).
    pub cpu_us_per_track_second: f64,
    /// Feed frames recorded per second.
    pub frames_per_sec: f64,
    /// Feed bytes recorded (then sealed and written) per second, MB.
    pub mb_per_sec: f64,
    /// The same per CPU second it spent: MB/s per core.
    pub mb_per_cpu_second: f64,
    /// Segments sealed and made durable in the window.
    pub segments: u64,
    /// Sealed → durable (stored and checkpointed), median, ms (bucket bound).
    pub durable_p50_ms: Option<f64>,
    /// The same, 99th percentile, ms (bucket bound).
    pub durable_p99_ms: Option<f64>,
}

/// Everything one scenario run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScenarioResult {
    /// Scenario name.
    pub scenario: String,
    /// `chaperone` or `janus`.
    pub target: String,
    /// Concurrent lessons.
    pub lessons: usize,
    /// Participants planned.
    pub participants: usize,
    /// Length of the measurement window, seconds.
    pub window_secs: f64,
    /// SRTP packets the receivers got in the window.
    pub packets_received: u64,
    /// Retransmission packets received besides (the generator never asks
    /// for any; Janus sends some anyway). Not counted anywhere else.
    pub rtx_packets_received: u64,
    /// Of those per second: the forwarded packet rate.
    pub forwarded_pps: f64,
    /// Sequence gaps (downstream packet loss) in the window.
    pub packets_lost_seq: u64,
    /// Frames the receivers should have got (frames sent in the window
    /// times the other participants of the lesson).
    pub frames_expected: u64,
    /// Frames they got.
    pub frames_received: u64,
    /// `1 - received / expected` (end to end, upstream drops included);
    /// `None` where the scenario drops media on purpose (`mute-all`).
    pub frame_loss: Option<f64>,
    /// RTP packets the receivers should have got (packets sent in the
    /// window times the other participants of the lesson).
    pub packets_expected: u64,
    /// `1 - received / expected`, by packets (a relay keeps packets 1:1;
    /// the Chaperone SFU repacketises frames, so `frame_loss` is its exact
    /// figure); `None` in `mute-all`.
    pub packet_loss: Option<f64>,
    /// Server CPU used in the window, in cores.
    pub server_cpu_cores: f64,
    /// Server CPU time per forwarded packet, microseconds.
    pub server_cpu_us_per_packet: f64,
    /// Generator CPU used, in cores (near 1.0: the generator bounds the figures).
    pub generator_cpu_cores: f64,
    /// One-way latency of audio packets through the server, µs.
    pub latency_audio_us: Percentiles,
    /// One-way latency of video frames (first packet out after the
    /// capture time of the frame), µs.
    pub latency_video_us: Percentiles,
    /// Both together, µs.
    pub latency_all_us: Percentiles,
    /// Spread of one frame's arrival across its receivers, µs.
    pub fanout_skew_us: Percentiles,
    /// Join (socket opened) to first media packet received, ms.
    pub join_ms: Percentiles,
    /// Participants that never got media or failed.
    pub failed_joins: usize,
    /// The first few failures, for the log.
    pub failures: Vec<String>,
    /// Teacher's mute-all to the last forwarded packet of each pupil, ms.
    pub control_ms: Option<Percentiles>,
    /// Server resident memory, KiB.
    pub server_rss_kib: u64,
    /// Its growth from idle per participant, KiB.
    pub server_rss_per_participant_kib: f64,
    /// What recording cost (only with a recorder process of its own: the
    /// embedded recorder's cost is inside the server's).
    pub recorder: Option<RecorderFigures>,
}

/// Builds the figures of one run.
#[allow(clippy::too_many_arguments)]
pub fn summarise(
    scenario: &str,
    target: &str,
    lessons: usize,
    lesson_sizes: &HashMap<usize, usize>,
    reports: &[ParticipantReport],
    window: (u64, u64),
    res: Resources,
    mute_window_ns: u64,
) -> ScenarioResult {
    let window_secs = (window.1 - window.0) as f64 / 1e9;
    let participants: usize = lesson_sizes.values().sum();
    // Keys of published streams: audio or not, and which lesson.
    let mut audio_key: HashMap<&str, bool> = HashMap::new();
    let mut frames_expected = 0u64;
    let mut packets_expected = 0u64;
    for r in reports {
        let others = lesson_sizes
            .get(&r.lesson)
            .copied()
            .unwrap_or(1)
            .saturating_sub(1);
        packets_expected += r.media.tx_packets_in_window * others as u64;
        for (i, t) in r.media.tx.iter().enumerate() {
            if let Some(k) = r.tx_keys.get(i) {
                audio_key.insert(k.as_str(), t.audio);
                let others = lesson_sizes
                    .get(&r.lesson)
                    .copied()
                    .unwrap_or(1)
                    .saturating_sub(1);
                frames_expected += t.frames_in_window * others as u64;
            }
        }
    }
    let mut packets = 0u64;
    let mut lost = 0u64;
    let rtx: u64 = reports.iter().map(|r| r.media.rtx_packets).sum();
    let mut frames_received = 0u64;
    let mut lat_audio = Vec::new();
    let mut lat_video = Vec::new();
    // (stream key, origin) -> arrivals, for fan-out skew and control latency.
    let mut arrivals: Vec<(&str, u64, u64)> = Vec::new();
    for r in reports {
        for s in r.media.rx.values() {
            packets += s.packets_in_window;
            lost += s.seq_lost;
        }
        for s in &r.media.samples {
            let Some(key) = r.rx_key(s.ssrc) else {
                continue;
            };
            let Some(&audio) = audio_key.get(key.as_str()) else {
                continue;
            };
            frames_received += 1;
            let lat = s.rx_ns.saturating_sub(s.origin_ns) / 1000;
            if audio {
                lat_audio.push(lat);
            } else {
                lat_video.push(lat);
            }
            arrivals.push((key.as_str(), s.origin_ns, s.rx_ns));
        }
    }
    arrivals.sort_unstable();
    let mut skew = Vec::new();
    let mut i = 0;
    while i < arrivals.len() {
        let mut j = i + 1;
        while j < arrivals.len() && arrivals[j].0 == arrivals[i].0 && arrivals[j].1 == arrivals[i].1
        {
            j += 1;
        }
        if j - i >= 2 {
            let (lo, hi) = arrivals[i..j]
                .iter()
                .fold((u64::MAX, 0), |(lo, hi), a| (lo.min(a.2), hi.max(a.2)));
            skew.push((hi - lo) / 1000);
        }
        i = j;
    }

    // Control latency: for each mute-all, the last arrival of each pupil's
    // microphone after it, within the round.
    let mut control = Vec::new();
    for t in reports.iter().filter(|r| r.pupil.is_none()) {
        for &cmd in &t.mute_cmds_ns {
            for p in reports
                .iter()
                .filter(|r| r.lesson == t.lesson && r.pupil.is_some())
            {
                let Some(mic) = p.tx_keys.first() else {
                    continue;
                };
                let last = arrivals
                    .iter()
                    .filter(|a| a.0 == mic.as_str() && a.2 >= cmd && a.2 < cmd + mute_window_ns)
                    .map(|a| a.2)
                    .max();
                control.push(last.map_or(0, |l| l - cmd) / 1000);
            }
        }
    }

    let mut joins = Vec::new();
    let mut failed = 0;
    let mut failures = Vec::new();
    for r in reports {
        match (r.media.first_media_ns, &r.failure) {
            (Some(first), None) => joins.push(first.saturating_sub(r.join_start_ns) / 1000),
            (_, f) => {
                failed += 1;
                if failures.len() < 5 {
                    failures.push(f.clone().unwrap_or_else(|| "no media received".into()));
                }
            }
        }
    }
    failed += participants.saturating_sub(reports.len());

    let mutes = reports.iter().any(|r| !r.mute_cmds_ns.is_empty());
    let mut all = lat_audio.clone();
    all.extend_from_slice(&lat_video);
    let cpu_secs = res.server_cpu_ticks as f64 / crate::procfs::TICKS_PER_SEC as f64;
    ScenarioResult {
        scenario: scenario.to_owned(),
        target: target.to_owned(),
        lessons,
        participants,
        window_secs,
        packets_received: packets,
        rtx_packets_received: rtx,
        forwarded_pps: packets as f64 / window_secs,
        packets_lost_seq: lost,
        frames_expected,
        frames_received,
        packets_expected,
        packet_loss: (!mutes && packets_expected > 0)
            .then(|| 1.0 - packets.min(packets_expected) as f64 / packets_expected as f64),
        // Janus's receivers decrypt only some frames (see `janus`): no frame loss there.
        frame_loss: (!mutes && frames_expected > 0 && target != "janus")
            .then(|| 1.0 - frames_received.min(frames_expected) as f64 / frames_expected as f64),
        server_cpu_cores: cpu_secs / window_secs,
        server_cpu_us_per_packet: if packets > 0 {
            cpu_secs * 1e6 / packets as f64
        } else {
            0.0
        },
        generator_cpu_cores: res.generator_cpu_ticks as f64
            / crate::procfs::TICKS_PER_SEC as f64
            / window_secs,
        latency_audio_us: Percentiles::of(lat_audio, 1.0),
        latency_video_us: Percentiles::of(lat_video, 1.0),
        latency_all_us: Percentiles::of(all, 1.0),
        fanout_skew_us: Percentiles::of(skew, 1.0),
        join_ms: Percentiles::of(joins, 1e-3),
        failed_joins: failed,
        failures,
        control_ms: mutes.then(|| Percentiles::of(control, 1e-3)),
        server_rss_kib: res.server_rss_kib,
        server_rss_per_participant_kib: if participants > 0 {
            res.server_rss_kib.saturating_sub(res.server_rss_idle_kib) as f64 / participants as f64
        } else {
            0.0
        },
        recorder: res
            .recorder
            .as_ref()
            .map(|r| recorder_figures(r, reports, lessons, window_secs)),
    }
}

fn recorder_figures(
    r: &crate::recorder::Sample,
    reports: &[ParticipantReport],
    lessons: usize,
    window_secs: f64,
) -> RecorderFigures {
    let cpu_secs = r.cpu_ticks as f64 / crate::procfs::TICKS_PER_SEC as f64;
    let tracks = reports
        .iter()
        .flat_map(|p| &p.media.tx)
        .filter(|t| t.frames_in_window > 0)
        .count();
    let mb = r.frame_bytes as f64 / 1e6;
    RecorderFigures {
        cpu_cores_per_lesson: cpu_secs / window_secs / lessons.max(1) as f64,
        tracks,
        cpu_us_per_track_second: if tracks > 0 {
            cpu_secs * 1e6 / tracks as f64 / window_secs
        } else {
            0.0
        },
        frames_per_sec: r.frames as f64 / window_secs,
        mb_per_sec: mb / window_secs,
        mb_per_cpu_second: if cpu_secs > 0.0 { mb / cpu_secs } else { 0.0 },
        segments: r.segments(),
        durable_p50_ms: r.durable_quantile(0.50).map(|s| s * 1e3),
        durable_p99_ms: r.durable_quantile(0.99).map(|s| s * 1e3),
    }
}

impl ScenarioResult {
    /// A few lines for people.
    pub fn summary(&self) -> String {
        let l = |p: &Percentiles| {
            format!(
                "p50 {:.0} / p99 {:.0} / p99.9 {:.0} µs (n={})",
                p.p50, p.p99, p.p999, p.count
            )
        };
        let mut s = format!(
            "{} on {} — {} lesson(s), {} participants, {:.1} s window\n",
            self.scenario, self.target, self.lessons, self.participants, self.window_secs
        );
        s += &format!(
            "  forwarded {:.0} packets/s; server CPU {:.2} cores = {:.2} µs/packet; generator CPU {:.2} cores\n",
            self.forwarded_pps,
            self.server_cpu_cores,
            self.server_cpu_us_per_packet,
            self.generator_cpu_cores
        );
        s += &format!("  latency audio {}\n", l(&self.latency_audio_us));
        s += &format!("  latency video {}\n", l(&self.latency_video_us));
        s += &format!("  fan-out skew  {}\n", l(&self.fanout_skew_us));
        match self.frame_loss {
            Some(loss) => {
                s += &format!(
                    "  frame loss {:.4}% ({} of {}); sequence gaps {}\n",
                    loss * 100.0,
                    self.frames_expected.saturating_sub(self.frames_received),
                    self.frames_expected,
                    self.packets_lost_seq
                )
            }
            None => s += &format!("  sequence gaps {}\n", self.packets_lost_seq),
        }
        if self.rtx_packets_received > 0 {
            s += &format!(
                "  unrequested retransmissions received {}\n",
                self.rtx_packets_received
            );
        }
        if let Some(loss) = self.packet_loss {
            s += &format!(
                "  packet loss {:.4}% ({} of {} packets)\n",
                loss * 100.0,
                self.packets_expected.saturating_sub(self.packets_received),
                self.packets_expected
            );
        }
        s += &format!(
            "  join → first media p50 {:.1} / p95 {:.1} ms (n={}); failed joins {}\n",
            self.join_ms.p50, self.join_ms.p95, self.join_ms.count, self.failed_joins
        );
        if let Some(c) = &self.control_ms {
            s += &format!(
                "  mute-all → last forwarded packet p50 {:.1} / p99 {:.1} / max {:.1} ms (n={})\n",
                c.p50, c.p99, c.max, c.count
            );
        }
        s += &format!(
            "  server RSS {:.1} MiB; {:.0} KiB per participant\n",
            self.server_rss_kib as f64 / 1024.0,
            self.server_rss_per_participant_kib
        );
        if let Some(r) = &self.recorder {
            let ms = |v: Option<f64>| v.map_or("—".to_owned(), |v| format!("≤ {v:.1} ms"));
            s += &format!(
                "  recorder process CPU {:.4} cores per lesson; {:.1} µs per track-second ({} tracks); \
                 {:.2} MB/s recorded = {:.1} MB per CPU second; sealed → durable p50 {} / p99 {} ({} segments)\n",
                r.cpu_cores_per_lesson,
                r.cpu_us_per_track_second,
                r.tracks,
                r.mb_per_sec,
                r.mb_per_cpu_second,
                ms(r.durable_p50_ms),
                ms(r.durable_p99_ms),
                r.segments
            );
        }
        for f in &self.failures {
            s += &format!("  failure: {f}\n");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let p = Percentiles::of((1..=1000).collect(), 1.0);
        assert_eq!((p.p50, p.p99, p.p999, p.max), (500.0, 990.0, 999.0, 1000.0));
        assert_eq!(Percentiles::of(vec![], 1.0).count, 0);
        assert_eq!(Percentiles::of(vec![7], 1.0).p99, 7.0);
    }
}
