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
    durable: bool,
    child: ChildGuard,
}

impl RedisServer {
    /// Starts `redis-server` (Debian package `redis-server`; `scripts/test.sh`
    /// installs it). Fails, never skips, when it is missing.
    pub fn start() -> Result<Self> {
        Self::start_with(false)
    }

    /// Starts one that keeps everything on disk as a deployment's must
    /// (append-only file, written before each command is answered), so a
    /// [`Self::restart`] keeps leases, epochs, snapshots and sessions.
    pub fn start_durable() -> Result<Self> {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> Result<Self> {
        let port = free_port()?;
        let dir = scratch_dir("redis")?;
        let child = Self::spawn(port, &dir, durable)?;
        Ok(Self {
            port,
            dir,
            durable,
            child,
        })
    }

    fn spawn(port: u16, dir: &PathBuf, durable: bool) -> Result<ChildGuard> {
        let appendonly = if durable { "yes" } else { "no" };
        let mut child = ChildGuard::spawn(
            "redis-server",
            Command::new("redis-server")
                .args(["--port", &port.to_string()])
                .args(["--bind", "127.0.0.1"])
                .args(["--save", ""])
                .args(["--appendonly", appendonly])
                .args(["--appendfsync", "always"])
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

    /// Kills it (`kill -9`) and starts it again on the same port: empty,
    /// or, if it was started durable, with everything it had answered.
    pub fn restart(&mut self) -> Result<()> {
        self.child.kill();
        self.child = Self::spawn(self.port, &self.dir, self.durable)?;
        Ok(())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.child.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
