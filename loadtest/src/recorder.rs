//! A `recorder serve` process of its own, for runs that measure what
//! recording costs: the gateway streams every lesson's feed to it over
//! loopback instead of to the recorder embedded in `gateway --dev`, so its
//! CPU time is read from its own `/proc/<pid>/stat`.
//!
//! It is configured as in production (segments sealed with age to a fresh
//! review recipient, manifests signed, written to a local store), trusting
//! the gateway's JWKS for the feed's service tokens.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::process::{ChildGuard, free_port, scratch_dir};

/// A running recorder.
#[derive(Debug)]
pub struct Recorder {
    /// Its feed URL (`ws://127.0.0.1:<port>`), for the gateway's `recorder.urls`.
    pub url: String,
    metrics_url: String,
    child: ChildGuard,
}

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

impl Recorder {
    /// Starts `bin serve` for the gateway at `gateway_url` (its public URL,
    /// the issuer of its service tokens), pinned to `cpu` if given. The
    /// gateway need not be up yet: its keys are fetched when a token first
    /// names one.
    pub fn start(bin: &Path, gateway_url: &str, cpu: Option<usize>, log: bool) -> Result<Self> {
        let dir = scratch_dir("recorder")?;
        let port = free_port()?;
        let metrics_port = free_port()?;
        let (_identity, recipient) = chaperone_testkit::recorder::review_identity();
        let s = |k: &str, v: String| (k.to_owned(), v);
        let path = |p: &str| dir.join(p).display().to_string();
        let env = vec![
            s(
                "CHAPERONE_RECORDER_HTTP_LISTEN",
                format!("127.0.0.1:{port}"),
            ),
            s(
                "CHAPERONE_RECORDER_HTTP_METRICS_LISTEN",
                format!("127.0.0.1:{metrics_port}"),
            ),
            s(
                "CHAPERONE_RECORDER_GATEWAY_ISSUERS",
                format!("[\"{gateway_url}\"]"),
            ),
            s(
                "CHAPERONE_RECORDER_GATEWAY_JWKS_URL",
                format!("{gateway_url}/.well-known/jwks.json"),
            ),
            s(
                "CHAPERONE_RECORDER_ARCHIVE_RECIPIENTS",
                format!("[\"{recipient}\"]"),
            ),
            s(
                "CHAPERONE_RECORDER_ARCHIVE_SIGNING_KEY_FILE",
                path("signing.pem"),
            ),
            s("CHAPERONE_RECORDER_STORE_DIR", path("store")),
            s("CHAPERONE_RECORDER_STORE_SPOOL_DIR", path("spool")),
            s(
                "CHAPERONE_LOG",
                if log { "info" } else { "warn" }.to_owned(),
            ),
        ];
        let mut child =
            ChildGuard::spawn("recorder", bin, &["serve".to_owned()], &env, cpu, dir, log)?;
        child.wait_for_port(port, Duration::from_secs(30))?;
        child.wait_for_port(metrics_port, Duration::from_secs(10))?;
        Ok(Self {
            url: format!("ws://127.0.0.1:{port}"),
            metrics_url: format!("http://127.0.0.1:{metrics_port}/metrics"),
            child,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> Result<u32> {
        self.child.pid().context("recorder has no pid")
    }

    /// Its CPU time and counters now.
    pub async fn sample(&self) -> Result<Sample> {
        let cpu = crate::procfs::cpu_ticks(self.pid()?)?;
        let text = reqwest::get(&self.metrics_url)
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("scraping {}", self.metrics_url))?
            .text()
            .await?;
        Ok(Sample::parse(cpu, &text))
    }

    /// Fails if it died.
    pub fn check_running(&mut self) -> Result<()> {
        self.child.check_running()
    }
}

/// `recorder` next to this binary (where `cargo build` puts it).
pub fn default_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("recorder")))
        .unwrap_or_else(|| PathBuf::from("recorder"))
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
