//! CPU time and resident memory of a process, read from `/proc` (Linux only): the server's
//! cost per message, and the bench's own CPU to show it is not the bottleneck.

use std::fs;
use std::io;

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessSample {
    /// User plus system CPU time so far, in seconds.
    pub cpu_seconds: f64,
    /// Resident set size (`VmRSS`), in bytes.
    pub rss_bytes: u64,
}

/// Reads one process's `/proc/PID/stat` and `/proc/PID/status`.
#[derive(Debug, Clone)]
pub struct ProcessProbe {
    dir: String,
    ticks_per_second: f64,
}

impl ProcessProbe {
    /// A probe for `pid`; fails when there is no such process.
    pub fn new(pid: u32) -> io::Result<ProcessProbe> {
        let probe = ProcessProbe { dir: format!("/proc/{pid}"), ticks_per_second: clock_ticks_per_second() };
        probe.sample()?;
        Ok(probe)
    }

    /// A probe for this process.
    pub fn own() -> ProcessProbe {
        ProcessProbe { dir: "/proc/self".to_owned(), ticks_per_second: clock_ticks_per_second() }
    }

    pub fn sample(&self) -> io::Result<ProcessSample> {
        let stat = fs::read_to_string(format!("{}/stat", self.dir))?;
        let status = fs::read_to_string(format!("{}/status", self.dir))?;
        let ticks = parse_cpu_ticks(&stat).ok_or_else(|| malformed("stat"))?;
        let rss_kib = parse_rss_kib(&status).ok_or_else(|| malformed("status"))?;
        Ok(ProcessSample { cpu_seconds: ticks as f64 / self.ticks_per_second, rss_bytes: rss_kib * 1024 })
    }
}

fn malformed(file: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("unexpected format of /proc/PID/{file}"))
}

/// `utime + stime` from `/proc/PID/stat`, in clock ticks (fields 14 and 15, proc(5)). The
/// command name (field 2) may hold spaces and parentheses, so fields are counted from the
/// last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = after_name.split_ascii_whitespace().skip(11); // field 3 (state) is index 0
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS` from `/proc/PID/status`, in KiB.
fn parse_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// The kernel's clock tick rate (`getconf CLK_TCK`). 100 is the value on every Linux
/// architecture we run on, used when `getconf` is missing.
fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|&t| t > 0.0)
        .unwrap_or(100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_counted_after_a_command_name_with_spaces() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 1 0 100 1000 50";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
    }

    #[test]
    fn rss_is_read_from_status() {
        assert_eq!(parse_rss_kib("Name:\tx\nVmPeak:\t 10 kB\nVmRSS:\t    2048 kB\n"), Some(2048));
    }

    #[test]
    fn own_process_can_be_sampled() {
        let sample = ProcessProbe::own().sample().unwrap();
        assert!(sample.rss_bytes > 0);
    }
}
