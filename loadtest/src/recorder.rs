//! A `recorder serve` process of its own, for runs that measure what
//! recording costs: the gateway streams every lesson's feed to it over
//! loopback instead of to the recorder embedded in `gateway --dev`, so its
//! CPU time is read from its own `/proc/<pid>/stat`.
//!
//! It is the testkit's recorder ([`chaperone_testkit::recorder`]: set up as
//! in production, segments sealed with age to a fresh review recipient,
//! manifests signed, written to a local store with a spool, trusting the
//! gateway's JWKS for the feed's service tokens); what is the generator's
//! own is reading its figures ([`Sample`]).

use std::path::Path;

use anyhow::{Context, Result};
use chaperone_testkit::recorder::{Recorder, RecorderSettings};

/// The recorder's own counters at one moment (from its `/metrics`) and its
/// CPU time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// CPU ticks (1/100 s) so far.
    pub cpu_ticks: u64,
    /// Feed frames taken into recordings.
    pub frames: u64,
    /// Their bytes.
    pub frame_bytes: u64,
    /// `recorder_segment_durable_seconds` buckets: (upper bound in
    /// seconds, cumulative count), `+Inf` last.
    pub durable: Vec<(f64, u64)>,
}

impl Sample {
    /// Reads the figures out of a Prometheus text exposition.
    pub fn parse(cpu_ticks: u64, text: &str) -> Self {
        let mut s = Sample {
            cpu_ticks,
            ..Sample::default()
        };
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(v) = value.parse::<f64>() else {
                continue;
            };
            match name {
                "chaperone_recorder_frames_total" => s.frames = v as u64,
                "chaperone_recorder_frame_bytes_total" => s.frame_bytes = v as u64,
                _ => {
                    if let Some(le) = name
                        .strip_prefix("chaperone_recorder_segment_durable_seconds_bucket{le=\"")
                        .and_then(|r| r.strip_suffix("\"}"))
                    {
                        let le = if le == "+Inf" {
                            f64::INFINITY
                        } else {
                            le.parse().unwrap_or(f64::INFINITY)
                        };
                        s.durable.push((le, v as u64));
                    }
                }
            }
        }
        s.durable.sort_by(|a, b| a.0.total_cmp(&b.0));
        s
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Sample) -> Sample {
        Sample {
            cpu_ticks: self.cpu_ticks.saturating_sub(earlier.cpu_ticks),
            frames: self.frames.saturating_sub(earlier.frames),
            frame_bytes: self.frame_bytes.saturating_sub(earlier.frame_bytes),
            durable: self
                .durable
                .iter()
                .map(|&(le, n)| {
                    let before = earlier
                        .durable
                        .iter()
                        .find(|(l, _)| *l == le)
                        .map_or(0, |&(_, m)| m);
                    (le, n.saturating_sub(before))
                })
                .collect(),
        }
    }

    /// Segments made durable (the histogram's count).
    pub fn segments(&self) -> u64 {
        self.durable.last().map_or(0, |&(_, n)| n)
    }

    /// The durable latency at quantile `q`, as the upper bound of the
    /// bucket it falls in (seconds); `None` without observations or past
    /// the last finite bucket.
    pub fn durable_quantile(&self, q: f64) -> Option<f64> {
        let total = self.segments();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        self.durable
            .iter()
            .find(|&&(_, n)| n >= rank)
            .map(|&(le, _)| le)
            .filter(|le| le.is_finite())
    }
}

/// Starts `bin serve` for the gateway at `gateway_url` (its public URL,
/// the issuer of its service tokens), pinned to `cpu` if given, its log
/// shown (at `info`) or discarded. The gateway need not be up yet: its
/// keys are fetched when a token first names one.
pub fn start(bin: &Path, gateway_url: &str, cpu: Option<usize>, log: bool) -> Result<Recorder> {
    let mut settings = RecorderSettings::new(gateway_url);
    settings.binary = Some(bin.to_owned());
    settings.cpu = cpu;
    settings.log = log;
    if log {
        settings.env("CHAPERONE_LOG", "info");
    }
    Recorder::start_with(settings)
}

/// Its CPU time and counters now.
pub async fn sample(recorder: &Recorder) -> Result<Sample> {
    let pid = recorder.pid().context("recorder has no pid")?;
    let cpu = crate::procfs::cpu_ticks(pid)?;
    let url = recorder.setup().metrics_url();
    let text = reqwest::get(&url)
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("scraping {url}"))?
        .text()
        .await?;
    Ok(Sample::parse(cpu, &text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP chaperone_recorder_frames_total Frames taken into a recording
chaperone_recorder_frames_total 1200
chaperone_recorder_frame_bytes_total 3000000
chaperone_recorder_segment_durable_seconds_bucket{le=\"0.001\"} 0
chaperone_recorder_segment_durable_seconds_bucket{le=\"0.005\"} 8
chaperone_recorder_segment_durable_seconds_bucket{le=\"0.01\"} 9
chaperone_recorder_segment_durable_seconds_bucket{le=\"+Inf\"} 10
chaperone_recorder_segment_durable_seconds_count 10
";

    #[test]
    fn counters_and_the_durable_histogram_are_read() {
        let s = Sample::parse(7, TEXT);
        assert_eq!((s.cpu_ticks, s.frames, s.frame_bytes), (7, 1200, 3_000_000));
        assert_eq!(s.segments(), 10);
        assert_eq!(s.durable_quantile(0.5), Some(0.005));
        assert_eq!(s.durable_quantile(0.9), Some(0.01));
        // The slowest tenth is past the last finite bucket.
        assert_eq!(s.durable_quantile(0.99), None);
    }

    #[test]
    fn a_window_is_the_difference_of_two_samples() {
        let before = Sample::parse(2, TEXT);
        let after = Sample::parse(
            12,
            &TEXT
                .replace("1200", "2400")
                .replace("} 8", "} 18")
                .replace("} 9", "} 19")
                .replace("} 10", "} 20"),
        );
        let w = after.since(&before);
        assert_eq!((w.cpu_ticks, w.frames, w.frame_bytes), (10, 1200, 0));
        assert_eq!(w.segments(), 10);
        assert_eq!(w.durable_quantile(0.5), Some(0.005));
        assert_eq!(Sample::default().durable_quantile(0.5), None);
    }
}
