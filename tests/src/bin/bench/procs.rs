//! Processes as /proc shows them (through `procfs`): CPU time, memory, and which of
//! Chromium's processes does what. Groups are looked up again at every reading, since
//! sshd's session processes come and go.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use procfs::process::Process;
use tabtunnel_e2e::sshd::descendants;

/// User plus system CPU seconds a process has used so far (None once it has exited).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = Process::new(i32::try_from(pid).ok()?).ok()?.stat().ok()?;
    Some((stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64)
}

/// Resident memory in bytes (VmRSS).
pub fn rss(pid: u32) -> Result<u64> {
    status_kib(pid, "VmRSS", |s| s.vmrss)
}

/// Peak resident memory in bytes (VmHWM).
pub fn peak_rss(pid: u32) -> Result<u64> {
    status_kib(pid, "VmHWM", |s| s.vmhwm)
}

fn status_kib(
    pid: u32,
    field: &str,
    pick: impl Fn(&procfs::process::Status) -> Option<u64>,
) -> Result<u64> {
    let status = Process::new(pid as i32)
        .and_then(|p| p.status())
        .with_context(|| format!("reading /proc/{pid}/status (has the process exited?)"))?;
    let kib = pick(&status).with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    Ok(kib * 1024)
}

/// Open file descriptors.
pub fn open_files(pid: u32) -> usize {
    Process::new(pid as i32)
        .and_then(|p| p.fd_count())
        .unwrap_or(0)
}

/// Busy and total CPU time of the whole machine, in clock ticks (/proc/stat).
pub fn machine_ticks() -> Result<(u64, u64)> {
    use procfs::CurrentSI;
    let cpu = procfs::KernelStats::current()
        .context("reading /proc/stat")?
        .total;
    let idle = cpu.idle + cpu.iowait.unwrap_or(0);
    let busy = cpu.user
        + cpu.nice
        + cpu.system
        + cpu.irq.unwrap_or(0)
        + cpu.softirq.unwrap_or(0)
        + cpu.steal.unwrap_or(0);
    Ok((busy, busy + idle))
}

/// What a Chromium process does, from its command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChromiumRole {
    /// `--type=renderer`: the page's main thread and its workers.
    Renderer,
    /// The utility process running `network.mojom.NetworkService` (sockets, WebSocket framing).
    NetworkService,
    /// The browser process, GPU, zygotes and other utilities.
    Other,
}

impl ChromiumRole {
    /// Chromium rewrites its processes' titles, so their flags may come as one
    /// space-separated argument: look at the words.
    fn of(cmdline: &[String]) -> Self {
        let has = |flag: &str| cmdline.iter().flat_map(|a| a.split(' ')).any(|w| w == flag);
        if has("--type=renderer") {
            Self::Renderer
        } else if has("--utility-sub-type=network.mojom.NetworkService") {
            Self::NetworkService
        } else {
            Self::Other
        }
    }
}

/// A set of processes measured together.
#[derive(Debug, Clone)]
pub enum Group {
    /// One process.
    Pid(u32),
    /// Every process below this one (sshd's sessions below the listener).
    Below(u32),
    /// Chromium's processes in `role`, below chromedriver's pid.
    Chromium { driver: u32, role: ChromiumRole },
}

impl Group {
    pub fn pids(&self) -> Vec<u32> {
        match *self {
            Self::Pid(pid) => vec![pid],
            Self::Below(root) => descendants(root),
            Self::Chromium { driver, role } => descendants(driver)
                .into_iter()
                .filter(|pid| {
                    let cmdline = Process::new(*pid as i32)
                        .and_then(|p| p.cmdline())
                        .unwrap_or_default();
                    // chromedriver's children are Chromium; anything else (none expected)
                    // has no Chromium flags and would land in Other.
                    ChromiumRole::of(&cmdline) == role
                })
                .collect(),
        }
    }

    /// Each process's CPU seconds now.
    pub fn cpu(&self) -> CpuReading {
        CpuReading(
            self.pids()
                .into_iter()
                .filter_map(|pid| Some((pid, cpu_seconds(pid)?)))
                .collect(),
        )
    }

    /// Resident memory of the group's processes together, in bytes.
    pub fn rss(&self) -> u64 {
        self.pids()
            .into_iter()
            .filter_map(|pid| rss(pid).ok())
            .sum()
    }
}

/// CPU seconds by pid at one moment.
#[derive(Debug, Clone, Default)]
pub struct CpuReading(BTreeMap<u32, f64>);

impl CpuReading {
    /// CPU seconds used between `earlier` and this reading. A process that started in
    /// between counts from 0; one that exited in between is missing from both ends (its
    /// last slice of CPU is lost, which the bench's steady processes do not do).
    pub fn since(&self, earlier: &CpuReading) -> f64 {
        self.0
            .iter()
            .map(|(pid, now)| (now - earlier.0.get(pid).copied().unwrap_or(0.0)).max(0.0))
            .fold(0.0, |sum, seconds| sum + seconds)
    }
}
