//! The recorder service's Prometheus metrics, in a registry handed to each
//! part (the store layer registers its own there too). No lesson ids in
//! labels.

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntGauge, Registry, TextEncoder};

/// Every metric of the feed ingest.
#[derive(Debug, Clone)]
pub struct IngestMetrics {
    registry: Registry,
    /// Lessons being recorded.
    pub lessons_active: IntGauge,
    /// Feed connections open.
    pub feeds_connected: IntGauge,
    /// Frames taken into a recording.
    pub frames: IntCounter,
    /// Frames received again (a replay) and dropped as already taken.
    pub duplicate_frames: IntCounter,
    /// Bytes of frames taken.
    pub frame_bytes: IntCounter,
    /// Losses written into a manifest.
    pub gaps: IntCounter,
    /// Segment sealed → stored and covered by a checkpoint.
    pub segment_durable_seconds: Histogram,
    /// Failed segment or checkpoint writes (retried; frames kept).
    pub write_errors: IntCounter,
    /// Finished lessons whose archive did not verify.
    pub verify_failures: IntCounter,
    /// Feeds refused at the handshake (bad or replayed token, bad hello).
    pub feeds_refused: IntCounter,
}

impl IngestMetrics {
    /// Registers the metrics in `registry` (prefix `chaperone_`).
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let segment_durable_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "recorder_segment_durable_seconds",
                "Time from sealing a segment to it and its checkpoint being durable",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        )?;
        registry.register(Box::new(segment_durable_seconds.clone()))?;
        Ok(Self {
            registry: registry.clone(),
            lessons_active: gauge("recorder_lessons_active", "Lessons being recorded")?,
            feeds_connected: gauge("recorder_feeds_connected", "Feed connections open")?,
            frames: counter("recorder_frames_total", "Frames taken into a recording")?,
            duplicate_frames: counter(
                "recorder_duplicate_frames_total",
                "Replayed frames dropped because they were already taken",
            )?,
            frame_bytes: counter("recorder_frame_bytes_total", "Bytes of frames taken")?,
            gaps: counter(
                "recorder_gaps_total",
                "Losses written into a manifest (frames that never arrived)",
            )?,
            segment_durable_seconds,
            write_errors: counter(
                "recorder_write_errors_total",
                "Failed segment or checkpoint writes (retried; frames kept)",
            )?,
            verify_failures: counter(
                "recorder_verify_failures_total",
                "Finished lessons whose archive did not verify",
            )?,
            feeds_refused: counter(
                "recorder_feeds_refused_total",
                "Feeds refused at the handshake",
            )?,
        })
    }

    /// A fresh registry (prefix `chaperone`) with these metrics and the
    /// process figures.
    pub fn new_registry() -> Result<(Registry, Self), prometheus::Error> {
        let registry = Registry::new_custom(Some("chaperone".to_owned()), None)?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let m = Self::register(&registry)?;
        Ok((registry, m))
    }

    /// The text exposition of the whole registry.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "metrics not encodable");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}
