//! CPU and memory figures from `/proc`: per-process CPU time, children,
//! whole-box busy time, resident memory, threads and open files, and the
//! "wait until idle" check.

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Busy share of the box (percent of all CPUs) below which a measurement may start.
pub const IDLE_BELOW_PCT: f64 = 20.0;
/// Longest wait for the box to become idle; past it the measurement starts anyway.
pub const IDLE_WAIT: Duration = Duration::from_secs(60);
/// Window over which busy time is measured.
const IDLE_WINDOW: Duration = Duration::from_secs(2);

/// Clock ticks per second of `/proc` CPU times (`getconf CLK_TCK`, else 100).
pub fn clk_tck() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|&t: &f64| t > 0.0)
            .unwrap_or(100.0)
    })
}

/// The numeric fields of `/proc/<pid>/stat` from the parent pid on: index 0
/// is the parent (field 4), 10/11 utime/stime, 12/13 cutime/cstime.
fn stat_fields(pid: &str) -> Option<Vec<u64>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(
        rest.split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

/// utime + stime of a process, in ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    Some(counters(pid)?.0)
}

/// (utime + stime in ticks, minor page faults) of a process.
fn counters(pid: u32) -> Option<(u64, u64)> {
    let f = stat_fields(&pid.to_string())?;
    Some((f.get(10)? + f.get(11)?, *f.get(6)?))
}

/// CPU ticks of this process and of its reaped children (wrk).
pub fn self_and_reaped_ticks() -> u64 {
    stat_fields("self").map_or(0, |f| f.iter().skip(10).take(4).sum())
}

/// Live processes whose parent is `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| stat_fields(&child.to_string()).and_then(|f| f.first().copied()) == Some(pid.into()))
        .collect()
}

/// (busy, total) ticks of the whole box from `/proc/stat`.
pub fn box_ticks() -> (u64, u64) {
    let text = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).unwrap_or(&0) + v.get(4).unwrap_or(&0);
    (total.saturating_sub(idle), total)
}

/// Waits (at most [`IDLE_WAIT`]) until the box is less than
/// [`IDLE_BELOW_PCT`] busy over 2 s; returns the last busy share seen (%).
pub async fn wait_idle() -> f64 {
    let deadline = Instant::now() + IDLE_WAIT;
    loop {
        let (b0, t0) = box_ticks();
        tokio::time::sleep(IDLE_WINDOW).await;
        let (b1, t1) = box_ticks();
        let busy = 100.0 * (b1 - b0) as f64 / (t1 - t0).max(1) as f64;
        if busy < IDLE_BELOW_PCT || Instant::now() >= deadline {
            return busy;
        }
    }
}

/// CPU used during a measurement.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuUse {
    pub elapsed_s: f64,
    /// By the server's processes.
    pub server_s: f64,
    /// By the bench process and the load generators it reaped (wrk).
    pub client_s: f64,
    /// By everything else on the box.
    pub other_s: f64,
    /// Minor page faults of the server's processes.
    pub server_faults: u64,
}

impl CpuUse {
    /// `seconds` as a percentage of one core over the window.
    pub fn pct(&self, seconds: f64) -> f64 {
        100.0 * seconds / self.elapsed_s.max(1e-9)
    }
}

/// Start of a CPU measurement over the processes `pids`.
pub struct CpuWindow {
    started: Instant,
    box_busy: u64,
    server: Vec<(u32, (u64, u64))>,
    client: u64,
}

impl CpuWindow {
    pub fn start(pids: &[u32]) -> CpuWindow {
        CpuWindow {
            started: Instant::now(),
            box_busy: box_ticks().0,
            server: pids.iter().filter_map(|&p| Some((p, counters(p)?))).collect(),
            client: self_and_reaped_ticks(),
        }
    }

    /// Processes that exit during the window are left out.
    pub fn finish(self) -> CpuUse {
        let elapsed_s = self.started.elapsed().as_secs_f64();
        let tck = clk_tck();
        let (mut server, mut server_faults) = (0, 0);
        for &(pid, (ticks, faults)) in &self.server {
            if let Some((t, f)) = counters(pid) {
                server += t.saturating_sub(ticks);
                server_faults += f.saturating_sub(faults);
            }
        }
        let client = self_and_reaped_ticks().saturating_sub(self.client);
        let busy = box_ticks().0.saturating_sub(self.box_busy);
        let other = busy.saturating_sub(server + client);
        CpuUse {
            elapsed_s,
            server_s: server as f64 / tck,
            client_s: client as f64 / tck,
            other_s: other as f64 / tck,
            server_faults,
        }
    }
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in KiB.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    status_value(pid, field)
}

/// The number a field of `/proc/<pid>/status` starts with (`Threads`; `VmRSS` in KiB).
pub fn status_value(pid: u32, field: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    line[field.len() + 1..].split_whitespace().next()?.parse().ok()
}

/// File descriptors a process has open (entries of `/proc/<pid>/fd`).
pub fn open_fds(pid: u32) -> Option<usize> {
    Some(fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Sum of `field` over `pids`, in MiB.
pub fn sum_mib(pids: &[u32], field: &str) -> f64 {
    pids.iter().filter_map(|&p| status_kib(p, field)).sum::<u64>() as f64 / 1024.0
}

/// Resets the peak RSS (`VmHWM`) of `pid` to its current RSS; false when
/// the kernel refused.
pub fn reset_peak_rss(pid: u32) -> bool {
    fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Samples the summed `VmRSS` of some processes every 10 ms until stopped.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<f64>,
}

impl RssSampler {
    pub fn start(pids: Vec<u32>) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut max = 0.0f64;
            while !flag.load(Ordering::Relaxed) {
                max = max.max(sum_mib(&pids, "VmRSS"));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            max.max(sum_mib(&pids, "VmRSS"))
        });
        RssSampler { stop, task }
    }

    /// The largest summed RSS seen, in MiB.
    pub async fn finish(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_figures() {
        let me = std::process::id();
        assert!(cpu_ticks(me).is_some());
        assert!(status_kib(me, "VmRSS").unwrap_or(0) > 0);
        assert!(status_kib(me, "Vm").is_none());
        assert!(status_value(me, "Threads").unwrap_or(0) >= 1);
        assert!(open_fds(me).unwrap_or(0) >= 3);
        let (busy, total) = box_ticks();
        assert!(total > 0 && busy <= total);
    }
}
