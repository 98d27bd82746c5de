//! A network namespace joined to this machine by a `veth` pair, with a
//! link whose rate `tc` caps: a slow home connection for one test, with
//! addresses of its own (`10.213.<n>.1` on the host's end, `10.213.<n>.2`
//! inside) that never leave the machine. Needs root (`ip netns`, `tc`):
//! [`is_root`] lets a test skip with a clear message without it. The
//! namespace (and with it the pair and any cap) is deleted when the guard
//! is dropped, also when the test fails.
//!
//! This kernel has no `netem`: rates are capped with a token bucket
//! (`tbf`), whose queue (`latency`) drops what does not fit, as a home
//! router's does.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// Whether this process runs as root (`ip netns` and `tc` need it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// A namespace and its `veth` pair; deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
    host_dev: String,
    ns_dev: String,
    host: Ipv4Addr,
    inside: Ipv4Addr,
}

fn run(args: &[&str]) -> Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Netns {
    /// A fresh namespace named after this process, its `veth` pair up and
    /// addressed (`/30`), loopback up inside. Fails (never skips) without
    /// root: check [`is_root`] first.
    pub fn create() -> Result<Self> {
        let pid = std::process::id();
        // Interface names are at most 15 bytes; the subnet's third octet
        // from the process id keeps two test processes apart.
        let tag = pid % 100_000;
        let octet = u8::try_from(pid % 250 + 1).context("pid % 250 + 1 fits a byte")?;
        let ns = Self {
            name: format!("chaperone-{pid}"),
            host_dev: format!("chv{tag}h"),
            ns_dev: format!("chv{tag}n"),
            host: Ipv4Addr::new(10, 213, octet, 1),
            inside: Ipv4Addr::new(10, 213, octet, 2),
        };
        // From here on, drop removes whatever was made.
        ns.setup()?;
        Ok(ns)
    }

    fn setup(&self) -> Result<()> {
        let (ns, h, n) = (
            self.name.as_str(),
            self.host_dev.as_str(),
            self.ns_dev.as_str(),
        );
        let host = format!("{}/30", self.host);
        let inside = format!("{}/30", self.inside);
        run(&["ip", "netns", "add", ns])?;
        run(&["ip", "link", "add", h, "type", "veth", "peer", "name", n])?;
        run(&["ip", "link", "set", n, "netns", ns])?;
        run(&["ip", "addr", "add", &host, "dev", h])?;
        run(&["ip", "link", "set", h, "up"])?;
        run(&[
            "ip", "netns", "exec", ns, "ip", "addr", "add", &inside, "dev", n,
        ])?;
        run(&["ip", "netns", "exec", ns, "ip", "link", "set", n, "up"])?;
        run(&["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// The namespace's name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host's end of the pair.
    pub fn host_addr(&self) -> Ipv4Addr {
        self.host
    }

    /// The namespace's end of the pair.
    pub fn inside_addr(&self) -> Ipv4Addr {
        self.inside
    }

    /// The interface inside the namespace (its egress is what leaves the
    /// namespace towards the host).
    pub fn inside_dev(&self) -> &str {
        &self.ns_dev
    }

    /// Caps what leaves the namespace at `kbit` kbit/s with a token
    /// bucket whose queue holds `queue_ms` of traffic (replacing any cap).
    pub fn cap(&self, kbit: u32, queue_ms: u32) -> Result<()> {
        let cmd = self.cap_command(kbit, queue_ms);
        run(&cmd.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The command [`Netns::cap`] runs, for a script that caps the link
    /// itself at a moment of its choosing.
    pub fn cap_command(&self, kbit: u32, queue_ms: u32) -> Vec<String> {
        [
            "ip",
            "netns",
            "exec",
            self.name.as_str(),
            "tc",
            "qdisc",
            "replace",
            "dev",
            self.ns_dev.as_str(),
            "root",
            "tbf",
            "rate",
            format!("{kbit}kbit").as_str(),
            "burst",
            "4kb",
            "latency",
            format!("{queue_ms}ms").as_str(),
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// The command [`Netns::uncap`] runs.
    pub fn uncap_command(&self) -> Vec<String> {
        [
            "ip",
            "netns",
            "exec",
            self.name.as_str(),
            "tc",
            "qdisc",
            "del",
            "dev",
            self.ns_dev.as_str(),
            "root",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Lifts the cap.
    pub fn uncap(&self) -> Result<()> {
        let cmd = self.uncap_command();
        run(&cmd.iter().map(String::as_str).collect::<Vec<_>>())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, which takes
        // the host's end with it; the host's end is deleted too in case
        // the namespace was never made.
        let _ = run(&["ip", "netns", "del", &self.name]);
        let _ = run(&["ip", "link", "del", &self.host_dev]);
    }
}
