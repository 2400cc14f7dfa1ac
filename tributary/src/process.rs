//! What the quickstart and the benchmarks measure about their own process,
//! from `/proc`. The benchmarks include this file and use what they need of
//! it.
#![allow(dead_code)]

use std::time::Duration;

use anyhow::Context as _;

/// User plus system CPU time of the whole process (every thread, live or
/// exited), from `/proc/self/stat`. Zero where it cannot be read.
///
/// `getrusage` would need `unsafe` (forbidden in the workspace) or a new
/// dependency; `/proc` has the same counters in clock ticks.
pub fn cpu_time() -> Duration {
    /// `sysconf(_SC_CLK_TCK)`: 100 on every Linux architecture we build for.
    const TICKS_PER_SEC: u64 = 100;
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the command name, which is in parentheses and may hold spaces:
    // state is the first, utime the 12th, stime the 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => Duration::from_millis((user + system) * 1000 / TICKS_PER_SEC),
        _ => Duration::ZERO,
    }
}

/// Resets the process's peak RSS (`VmHWM`) to its current RSS, so that the
/// next reading is the peak of what runs in between. Returns false where the
/// kernel does not allow it; `VmHWM` is then the peak of the whole process.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// A `kB` figure of `/proc/self/status` (e.g. `VmRSS`, `VmHWM`), in bytes.
pub fn proc_status_bytes(key: &str) -> anyhow::Result<u64> {
    status_bytes_of("self", key)
}

/// A `kB` figure of `/proc/<process>/status` (`process`: a pid, or
/// `self`), in bytes.
pub fn status_bytes_of(process: &str, key: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{process}/status");
    let status = std::fs::read_to_string(&path).with_context(|| path.clone())?;
    let value = status
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .with_context(|| format!("no {key} in {path}"))?;
    let kb: u64 = value
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("{key}: {value:?}"))?;
    Ok(kb * 1024)
}
