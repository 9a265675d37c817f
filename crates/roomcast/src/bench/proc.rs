//! Reading a server's resource use from `/proc` (Linux).

use std::time::Duration;

/// The resident set size of process `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The CPU time (user + system) process `pid` has used so far.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after ") ".
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_secs_f64(
        ticks as f64 / clock_ticks_per_second(),
    ))
}

fn clock_ticks_per_second() -> f64 {
    // sysconf(_SC_CLK_TCK) is 100 on every Linux this runs on; `getconf` confirms it
    // without unsafe code.
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// A process watched during a run: CPU and memory before and after.
#[derive(Debug, Clone, Copy)]
pub struct Watch {
    pid: u32,
    cpu: Duration,
    rss: u64,
}

impl Watch {
    /// Starts watching `pid`; `None` if it cannot be read.
    pub fn start(pid: u32) -> Option<Self> {
        Some(Self {
            pid,
            cpu: cpu_time(pid)?,
            rss: rss_bytes(pid)?,
        })
    }

    /// CPU used since the start.
    pub fn cpu_used(&self) -> Option<Duration> {
        Some(cpu_time(self.pid)?.saturating_sub(self.cpu))
    }

    /// Memory at the start.
    pub fn rss_start(&self) -> u64 {
        self.rss
    }

    /// Memory now.
    pub fn rss_now(&self) -> Option<u64> {
        rss_bytes(self.pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_process() {
        let me = std::process::id();
        assert!(rss_bytes(me).unwrap() > 1024 * 1024);
        let w = Watch::start(me).unwrap();
        let mut x = 0u64;
        for i in 0..30_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        assert!(w.cpu_used().unwrap() > Duration::ZERO);
    }
}
