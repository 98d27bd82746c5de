//! Prometheus metrics, in a registry the node hands to each component (no
//! global registry), served on their own listener (`metrics.listen`) so that
//! they are never exposed where people connect.
//!
//! Label values are bounded: kinds and reasons from fixed lists, never a
//! lesson, user or participant id.

use std::sync::Mutex;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Why a metric could not be registered (a programming error: duplicate names).
pub type MetricsError = prometheus::Error;

/// Every metric of a gateway node.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Time from a staff member's command reaching the lesson to the SFU
    /// having applied the forwarding change it caused.
    pub control_seconds: Histogram,
    /// Controls that changed forwarding, by kind.
    pub controls: IntCounterVec,
    /// Join attempts refused before the socket was upgraded, by reason.
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
    /// The SFU counters already added (they are read as totals at scrape).
    last_sfu: Mutex<crate::media::SfuStats>,
}

/// Histogram buckets for control enforcement, in seconds (100 µs to 2 s).
const CONTROL_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0,
];

impl Metrics {
    /// A registry with every metric of the node.
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new_custom(Some("chaperone".to_owned()), None)?;
        let control_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "control_enforcement_seconds",
                "Time from a staff command reaching the lesson to the SFU applying the forwarding change",
            )
            .buckets(CONTROL_BUCKETS.to_vec()),
        )?;
        let controls = IntCounterVec::new(
            Opts::new(
                "controls_total",
                "Staff controls that changed forwarding, by kind",
            ),
            &["kind"],
        )?;
        let joins_refused = IntCounterVec::new(
            Opts::new(
                "joins_refused_total",
                "Lesson joins refused at the handshake, by reason",
            ),
            &["reason"],
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
        let frames_dropped = IntCounterVec::new(
            Opts::new(
                "media_frames_dropped_total",
                "Media frames dropped at the SFU, by reason (not_forwarded: muted, off or not permitted)",
            ),
            &["reason"],
        )?;
        let frames_unrecorded = IntCounter::new(
            "media_frames_unrecorded_total",
            "Forwarded frames the recorder could not take (recording gaps)",
        )?;
        registry.register(Box::new(control_seconds.clone()))?;
        registry.register(Box::new(controls.clone()))?;
        registry.register(Box::new(joins_refused.clone()))?;
        registry.register(Box::new(lessons_live.clone()))?;
        registry.register(Box::new(recorder_attached.clone()))?;
        registry.register(Box::new(frames_forwarded.clone()))?;
        registry.register(Box::new(frames_dropped.clone()))?;
        registry.register(Box::new(frames_unrecorded.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
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
            last_sfu: Mutex::new(crate::media::SfuStats::default()),
        })
    }

    /// The registry, for components that register their own metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Adds what the SFU counted since the last call (its counters are totals).
    pub fn observe_sfu(&self, now: crate::media::SfuStats) {
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
        *last = now;
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
        let mut s = crate::media::SfuStats {
            forwarded: 10,
            dropped_not_forwarded: 3,
            ..Default::default()
        };
        m.observe_sfu(s);
        s.forwarded = 15;
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
        assert!(text.contains("chaperone_control_enforcement_seconds_bucket"));
    }
}
