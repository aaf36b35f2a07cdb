//! healer as a child subreaper: what its recoveries start (and leave behind
//! when a shell that started them exits) becomes healer's child, and healer
//! reaps it when it dies, instead of relying on PID 1 (which, on some
//! machines, does not reap promptly and leaves zombies that look alive).
//!
//! Children that plugins wait for themselves are reaped by their owner at
//! once; a child seen as a zombie in two sweeps in a row has no owner and
//! is reaped here.

use std::collections::HashSet;
use std::time::Duration;

use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use tokio::sync::watch;
use tracing::{debug, warn};

/// How often orphaned zombies are looked for.
const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// Makes this process the reaper of its orphaned descendants.
pub fn become_subreaper() {
    if let Err(err) = nix::sys::prctl::set_child_subreaper(true) {
        warn!(error = %err, "cannot become a child subreaper; orphans of recoveries will be reaped by init");
    }
}

/// Reaps orphaned zombie children until `shutdown` changes.
pub async fn reap_orphans(mut shutdown: watch::Receiver<bool>) {
    let mut zombies_before = HashSet::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
            _ = shutdown.changed() => return,
        }
        let zombies_now: HashSet<i32> = children()
            .into_iter()
            .filter(|&pid| is_zombie(pid))
            .collect();
        for &pid in zombies_now.intersection(&zombies_before) {
            if let Ok(status) = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                debug!(pid, ?status, "reaped an orphaned child");
            }
        }
        zombies_before = zombies_now;
    }
}

/// This process's children, from every thread's `children` list.
fn children() -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}
