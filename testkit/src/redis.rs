//! A private `redis-server` for one test, on a free loopback port, stopped
//! when dropped. Never the shared instance on 6379.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Result;

use crate::process::{ChildGuard, free_port, scratch_dir, wait_for_port};

/// A running private Redis.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: ChildGuard,
}

impl RedisServer {
    /// Starts `redis-server` (Debian package `redis-server`; `scripts/test.sh`
    /// installs it). Fails, never skips, when it is missing.
    pub fn start() -> Result<Self> {
        let port = free_port()?;
        let dir = scratch_dir("redis")?;
        let child = Self::spawn(port, &dir)?;
        Ok(Self { port, dir, child })
    }

    fn spawn(port: u16, dir: &PathBuf) -> Result<ChildGuard> {
        let mut child = ChildGuard::spawn(
            "redis-server",
            Command::new("redis-server")
                .args(["--port", &port.to_string()])
                .args(["--bind", "127.0.0.1"])
                .args(["--save", ""])
                .args(["--appendonly", "no"])
                .args(["--protected-mode", "yes"])
                .arg("--dir")
                .arg(dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )?;
        wait_for_port(&mut child, port, Duration::from_secs(10))?;
        Ok(child)
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills it (an outage).
    pub fn stop(&mut self) {
        self.child.kill();
    }

    /// Starts it again on the same port (empty: it keeps nothing on disk).
    pub fn restart(&mut self) -> Result<()> {
        self.child.kill();
        self.child = Self::spawn(self.port, &self.dir)?;
        Ok(())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.child.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
