//! Starts the real `gateway` binary for a test, on a free loopback port,
//! and stops it when dropped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::process::{ChildGuard, binary, free_port, scratch_dir, wait_for_port};

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    port: u16,
    metrics_port: u16,
    child: ChildGuard,
    recordings: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.child.kill();
        let _ = std::fs::remove_dir_all(&self.recordings);
    }
}

impl Gateway {
    /// `gateway --dev` with extra `CHAPERONE_*` environment settings.
    pub fn start_dev(env: &[(&str, &str)]) -> Result<Self> {
        Self::start_dev_on(free_port()?, &[], env)
    }

    /// `gateway --dev <args>` on `port` with extra environment settings.
    pub fn start_dev_on(port: u16, args: &[&str], env: &[(&str, &str)]) -> Result<Self> {
        let mut cmd = Command::new(binary("gateway")?);
        // Recordings of this run go to a directory of its own, removed with it.
        let recordings = scratch_dir("gateway")?;
        let metrics_port = free_port()?;
        cmd.arg("--dev")
            .args(args)
            .env(
                "CHAPERONE_METRICS_LISTEN",
                format!("127.0.0.1:{metrics_port}"),
            )
            .env("CHAPERONE_RECORDER_DIR", recordings.join("recordings"))
            .current_dir(std::env::temp_dir())
            .env("CHAPERONE_HTTP_LISTEN", format!("127.0.0.1:{port}"))
            .env("CHAPERONE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = ChildGuard::spawn("gateway", &mut cmd)?;
        wait_for_port(&mut child, port, Duration::from_secs(20))?;
        Ok(Self {
            port,
            metrics_port,
            child,
            recordings,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Where this gateway's recordings go (`<dir>/recordings`, with the dev
    /// review identity and manifest key beside it).
    pub fn recordings_dir(&self) -> &std::path::Path {
        &self.recordings
    }

    /// The metrics listener's port.
    pub fn metrics_port(&self) -> u16 {
        self.metrics_port
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Fails if the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        self.child.check_running()
    }
}

/// A minimal HTTP/1.1 GET over a fresh connection: status and body.
pub fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status line")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
