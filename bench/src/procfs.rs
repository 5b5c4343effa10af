//! Reading a server's resident memory and CPU time from `/proc`.

use std::fs;
use std::time::Duration;

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`). Linux
/// fixes it at 100 on every mainstream architecture; std has no `sysconf`.
const USER_HZ: u64 = 100;

/// Resident set size of process `pid` in bytes (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// User plus system CPU time consumed so far by all threads of `pid`.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After ')': state(3) ppid pgrp session tty tpgid flags minflt cminflt
    // majflt cmajflt utime(14) stime(15).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 1000 / USER_HZ))
}

/// Samples a server's CPU time at the start and end of a measurement.
pub struct CpuProbe {
    pid: Option<u32>,
    start: Option<Duration>,
}

impl CpuProbe {
    pub fn start(pid: Option<u32>) -> CpuProbe {
        CpuProbe {
            pid,
            start: pid.and_then(cpu_time),
        }
    }

    /// CPU time used by the server since [`CpuProbe::start`], if known.
    pub fn elapsed(&self) -> Option<Duration> {
        let now = cpu_time(self.pid?)?;
        Some(now.saturating_sub(self.start?))
    }

    /// `key=value` fields describing the server's CPU use for `units` units of work.
    pub fn fields(&self, units: u64) -> String {
        match self.elapsed() {
            Some(cpu) if units > 0 => format!(
                " srv_cpu_ms={} srv_cpu_ns_per_msg={:.1}",
                cpu.as_millis(),
                cpu.as_nanos() as f64 / units as f64
            ),
            _ => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        assert!(rss_bytes(me).unwrap() > 0);
        assert!(cpu_time(me).is_some());
    }
}
