//! Processes as the tests see them through `/proc` and `kill`: pidfiles,
//! liveness, signals, memory, CPU time, a healer's plugin workers, and a
//! healthy [`Service`] for a process target.

use std::path::Path;
use std::process::{Command, Stdio};

/// The pid a pidfile names, if it names one.
pub fn read_pid(pidfile: &Path) -> Option<u32> {
    std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()
}

/// Whether `pid` is a live process (not a zombie).
pub fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Sends `signal` (e.g. "KILL", "STOP") to `pid`.
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// A healthy service for a process target: `sleep` running, its pid in a
/// pidfile. Killed when dropped.
pub struct Service(std::process::Child);

impl Service {
    /// Starts `sleep 600` and writes its pid to `pidfile`.
    pub fn start(pidfile: &Path) -> Service {
        let child = Command::new("sleep")
            .arg("600")
            .stdin(Stdio::null())
            .spawn()
            .expect("sleep starts");
        std::fs::write(pidfile, format!("{}\n", child.id())).expect("the pidfile is written");
        Service(child)
    }

    /// Kills it (SIGKILL) and reaps it: the service is down.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The resident set size of process `pid`, in bytes.
pub fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The plugin workers `healer` (pid) runs: each `healer worker PACKAGE`
/// child (not a probe), with its command line (NULs as spaces).
pub fn workers_of(healer: u32) -> Vec<(u32, String)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{healer}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|pid| pid.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let serving = cmdline.starts_with("healer worker ") && !cmdline.contains(" --probe ");
            serving.then_some((pid, cmdline))
        })
        .collect()
}

/// This process's CPU time (all threads), in ns.
pub fn own_cpu_ns() -> f64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to fill in.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
    now.tv_sec as f64 * 1e9 + now.tv_nsec as f64
}
