//! Servers under test as child processes: spawned (optionally pinned to a
//! CPU with `taskset`), waited for, and killed when dropped, also on error.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::clock;

/// A child process killed (and reaped) on drop, with a scratch directory
/// removed after it.
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
    dir: Option<PathBuf>,
}

impl ChildGuard {
    /// Spawns `program args` (under `taskset -c cpu` if given), with
    /// `dir` as its working directory, removed when the guard drops.
    pub fn spawn(
        name: &str,
        program: &std::path::Path,
        args: &[String],
        env: &[(String, String)],
        cpu: Option<usize>,
        dir: PathBuf,
        log: bool,
    ) -> Result<Self> {
        // The child runs in `dir`: a relative program path must not change meaning.
        let program = &std::fs::canonicalize(program)
            .with_context(|| format!("{name}: {} not found", program.display()))?;
        let mut cmd = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu.to_string()).arg(program);
                c
            }
            None => Command::new(program),
        };
        cmd.args(args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if log { Stdio::inherit() } else { Stdio::null() });
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
            dir: Some(dir),
        })
    }

    /// The process id (`taskset` execs the program, so it is the program's).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Fails if the child has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Some(status) = child.try_wait()?
        {
            bail!("{} exited early with {status}", self.name);
        }
        Ok(())
    }

    /// Waits until something accepts TCP connections on `127.0.0.1:port`.
    pub fn wait_for_port(&mut self, port: u16, timeout: Duration) -> Result<()> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = clock::now() + timeout;
        loop {
            self.check_running()?;
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if clock::now() > deadline {
                bail!("{} did not listen on {addr} within {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a free loopback port")?;
    Ok(l.local_addr()?.port())
}

/// A fresh scratch directory under the system temp directory.
pub fn scratch_dir(what: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "chaperone-loadtest-{what}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
