//! Child processes for tests: free loopback ports, readiness waits, and a
//! guard that kills the child when it goes out of scope, so a failing test
//! never leaves a server behind.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// A child process killed (and reaped) on drop.
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
}

impl ChildGuard {
    /// Spawns `cmd`, naming it `name` in errors.
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Self> {
        let child = cmd.spawn().with_context(|| {
            format!("starting {name}: is it installed? (scripts/test.sh installs it)")
        })?;
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
        })
    }

    /// The operating-system process id.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Fails if the child has already exited (it crashed or refused to start).
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Some(status) = child.try_wait()?
        {
            bail!("{} exited early with {status}", self.name);
        }
        Ok(())
    }

    /// Kills the child now (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a free loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// Waits until something accepts TCP connections on `127.0.0.1:port`,
/// checking that `child` is still alive while waiting.
pub fn wait_for_port(child: &mut ChildGuard, port: u16, timeout: Duration) -> Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = std::time::Instant::now() + timeout;
    loop {
        child.check_running()?;
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("{} did not listen on {addr} within {timeout:?}", child.name);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Path of a workspace binary (`target/<profile>/<name>`): next to the
/// running executable (the load generator), or next to its directory (a
/// test executable in `target/<profile>/deps/`). `scripts/test.sh` builds
/// every binary before the tests run.
pub fn binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let here = exe.parent().context("the executable has no directory")?;
    let candidates = [Some(here), here.parent()];
    for dir in candidates.into_iter().flatten() {
        let path = dir.join(name);
        if path.is_file() {
            return Ok(path);
        }
    }
    bail!(
        "the `{name}` binary is missing next to {}: build the workspace first (`cargo build --workspace --bins`; scripts/test.sh does)",
        here.display()
    )
}
