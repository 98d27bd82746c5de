//! Process figures from `/proc`: CPU time from `/proc/<pid>/stat` (user +
//! system, in clock ticks), resident memory from `/proc/<pid>/status`.

use anyhow::{Context, Result};

/// `/proc` reports CPU times in USER_HZ, which is 100 on Linux x86-64 and arm64.
pub const TICKS_PER_SEC: u64 = 100;

/// User + system CPU time of `pid` so far, in ticks (all threads).
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_cpu_ticks(&text).with_context(|| format!("parsing /proc/{pid}/stat"))
}

/// utime (field 14) + stime (field 15); the command name (field 2) may
/// hold spaces and parentheses, so fields are counted after the last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Resident set size of `pid`, KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

/// Open file descriptors of `pid` (entries of `/proc/<pid>/fd`).
pub fn fd_count(pid: u32) -> Result<usize> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("reading /proc/{pid}/fd"))?;
    Ok(dir.filter(|e| e.is_ok()).count())
}

/// Threads of `pid` (`Threads` of `/proc/<pid>/status`).
pub fn threads(pid: u32) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no Threads")
}

/// The process's own id.
pub fn self_pid() -> u32 {
    std::process::id()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_the_command_name() {
        let stat =
            "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 731 205 0 0 20 0 3 0 1 2 3";
        assert_eq!(parse_cpu_ticks(stat), Some(936));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn own_figures_are_readable() {
        assert!(cpu_ticks(self_pid()).is_ok());
        assert!(rss_kib(self_pid()).unwrap_or(0) > 0);
        // stdin, stdout and stderr at least; this thread at least.
        assert!(fd_count(self_pid()).unwrap_or(0) >= 3);
        assert!(threads(self_pid()).unwrap_or(0) >= 1);
    }
}
