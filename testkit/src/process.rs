//! Child processes for tests and the load generator: free loopback ports,
//! readiness waits, scratch directories, the workspace's binaries, and one
//! guard that kills its child (and removes the directory it owns) when it
//! goes out of scope, so a failing test or an aborted benchmark never
//! leaves a server behind.
//!
//! It never signals a process it did not start: the guard only ever kills
//! or terminates its own child, by the id it was spawned with.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::clock;

/// A child process killed (and reaped) on drop, then the directory it owns
/// (if any) removed.
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
    dir: Option<PathBuf>,
}

impl ChildGuard {
    /// Spawns `cmd`, naming it `name` in errors. For a server with a CPU,
    /// a working directory of its own or a quiet log, see [`Launch`].
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Self> {
        let child = cmd.spawn().with_context(|| {
            format!("starting {name}: is it installed? (scripts/test.sh installs it)")
        })?;
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
            dir: None,
        })
    }

    /// Makes the guard remove `dir` (recursively) once the child is gone.
    pub fn owning_dir(mut self, dir: PathBuf) -> Self {
        self.dir = Some(dir);
        self
    }

    /// The name it was started under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The operating-system process id (`None` once killed). Under
    /// `taskset` it is still the program's: taskset execs it.
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

    /// Kills the child now (SIGKILL, `kill -9`) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends the child a signal by name (`STOP`, `CONT`, `TERM`) without
    /// waiting for anything: a pause, a resumption, or the start of a drain.
    pub fn signal(&self, name: &str) -> Result<()> {
        let child = self
            .child
            .as_ref()
            .context("the child was already reaped")?;
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("kill -{name} {}: {status}", self.name);
        }
        Ok(())
    }

    /// Waits (at most `timeout`) for the child to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let child = self
            .child
            .as_mut()
            .context("the child was already reaped")?;
        let deadline = clock::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if clock::now() > deadline {
                bail!("{} did not exit within {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asks the child to stop (SIGTERM, a graceful shutdown) and waits for
    /// it to exit, at most `timeout`; past it the child is killed and this
    /// fails. `None` if it had already been killed.
    pub fn terminate(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        // `kill(1)` rather than a libc call: the crate forbids unsafe code,
        // and the id is our own child's, not yet reaped, so it cannot have
        // been reused.
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = clock::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(Some(status));
            }
            if clock::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "{} did not exit within {timeout:?} of SIGTERM (kill: {sent:?}); killed",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// How to start a server binary as a [`ChildGuard`]: its arguments and
/// environment, and the options a benchmark needs (pinned to one CPU with
/// `taskset`, run in a working directory the guard removes, its log shown
/// on stderr or discarded). Its stdin and stdout are always discarded.
#[derive(Debug, Clone)]
pub struct Launch {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    cpu: Option<usize>,
    dir: Option<PathBuf>,
    remove_dir: bool,
    log: bool,
}

impl Launch {
    /// `program`, named `name` in errors; its log shown, on no particular
    /// CPU, in this process's working directory.
    pub fn new(name: &str, program: impl Into<PathBuf>) -> Self {
        Self {
            name: name.to_owned(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            cpu: None,
            dir: None,
            remove_dir: false,
            log: true,
        }
    }

    /// One more argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// More arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// One environment variable (a later one of the same name wins).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// More environment variables, in order.
    pub fn envs<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<OsString>,
        V: Into<OsString>,
    {
        self.env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Pins it to CPU `cpu` (`taskset -c`, util-linux) if given.
    pub fn cpu(mut self, cpu: Option<usize>) -> Self {
        self.cpu = cpu;
        self
    }

    /// Runs it in `dir`, which the guard removes after the child is gone.
    pub fn work_dir(mut self, dir: PathBuf) -> Self {
        self.dir = Some(dir);
        self.remove_dir = true;
        self
    }

    /// Runs it in `dir`, which outlives the child (another process may be
    /// started in it after this one).
    pub fn current_dir(mut self, dir: PathBuf) -> Self {
        self.dir = Some(dir);
        self.remove_dir = false;
        self
    }

    /// Shows its stderr (`true`, the default) or discards it.
    pub fn log(mut self, log: bool) -> Self {
        self.log = log;
        self
    }

    /// Starts it.
    pub fn spawn(self) -> Result<ChildGuard> {
        // The child may run in another directory: a relative program path
        // must not change meaning.
        let program = std::fs::canonicalize(&self.program)
            .with_context(|| format!("{}: {} not found", self.name, self.program.display()))?;
        let mut cmd = match self.cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu.to_string()).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if self.log {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
        if let Some(dir) = &self.dir {
            cmd.current_dir(dir);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} ({})", self.name, program.display()))?;
        Ok(ChildGuard {
            name: self.name,
            child: Some(child),
            dir: self.dir.filter(|_| self.remove_dir),
        })
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a free loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// Whether something accepts TCP connections on `127.0.0.1:port` now.
pub fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Waits until something accepts TCP connections on `127.0.0.1:port`,
/// checking that `child` is still alive while waiting.
pub fn wait_for_port(child: &mut ChildGuard, port: u16, timeout: Duration) -> Result<()> {
    let deadline = clock::now() + timeout;
    loop {
        child.check_running()?;
        if port_open(port) {
            return Ok(());
        }
        if clock::now() > deadline {
            bail!(
                "{} did not listen on 127.0.0.1:{port} within {timeout:?}",
                child.name
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A fresh directory under the system temp directory,
/// `chaperone-<what>-<pid>-<random>`; the caller removes it (or hands it
/// to [`Launch::work_dir`] or [`ChildGuard::owning_dir`]).
pub fn scratch_dir(what: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "chaperone-{what}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeper() -> Launch {
        Launch::new("sleep", "/usr/bin/sleep").arg("60").log(false)
    }

    #[test]
    fn a_guard_kills_its_child_and_then_removes_its_directory() {
        let dir = scratch_dir("testkit-guard").unwrap();
        let mut child = sleeper().work_dir(dir.clone()).spawn().unwrap();
        assert!(child.id().is_some());
        child.check_running().unwrap();
        drop(child);
        assert!(!dir.exists(), "the working directory goes with the guard");
    }

    #[test]
    fn a_current_dir_outlives_the_child() {
        let dir = scratch_dir("testkit-kept").unwrap();
        let mut child = sleeper().current_dir(dir.clone()).spawn().unwrap();
        child.kill();
        assert!(child.id().is_none());
        drop(child);
        assert!(dir.is_dir(), "another process may start in it");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn sigterm_stops_the_child_and_is_waited_for() {
        let mut child = sleeper().spawn().unwrap();
        let status = child.terminate(Duration::from_secs(10)).unwrap();
        assert!(status.is_some_and(|s| !s.success()), "{status:?}");
        assert_eq!(child.terminate(Duration::from_secs(1)).unwrap(), None);
    }

    #[test]
    fn a_pinned_child_is_the_program_itself() {
        let mut child = sleeper().cpu(Some(0)).spawn().unwrap();
        let pid = child.id().unwrap();
        child.check_running().unwrap();
        // taskset execs the program: the id becomes the program's (once
        // taskset has set the affinity and called exec).
        let comm = || std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
        let deadline = clock::now() + Duration::from_secs(10);
        while comm().trim() != "sleep" && clock::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(comm().trim(), "sleep");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert!(
            status
                .lines()
                .any(|l| l.starts_with("Cpus_allowed_list:") && l.ends_with("\t0")),
            "{status}"
        );
    }

    #[test]
    fn waiting_for_a_port_fails_when_the_child_exits() {
        let mut child = Launch::new("true", "/usr/bin/true").spawn().unwrap();
        let err = wait_for_port(&mut child, free_port().unwrap(), Duration::from_secs(10))
            .unwrap_err()
            .to_string();
        assert!(err.contains("true exited early"), "{err}");
    }

    #[test]
    fn a_missing_program_is_named() {
        let err = Launch::new("nothing", "/nonexistent/program")
            .spawn()
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/program not found"), "{err}");
    }
}
