//! healer as a child subreaper: what its recoveries start (and leave behind
//! when a shell that started them exits) becomes healer's child, and healer
//! reaps it when it dies, instead of relying on PID 1 (which, on some
//! machines, does not reap promptly and leaves zombies that look alive).
//!
//! The children healer waits for itself (plugin workers and probes) are
//! tracked (`plugins::children`) and never reaped here: their owner reaps
//! them, after it has killed their process group, so no group is ever
//! signalled by a pid that was reaped and reused. Children that plugins
//! loaded in-process wait for themselves are reaped by their owner at
//! once; any other child seen as a zombie in two sweeps in a row has no
//! owner and is reaped here.

use std::collections::HashSet;
use std::time::Duration;

use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::plugins::children;

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
        reap_orphans_among(&zombies_before, &zombies_now);
        zombies_before = zombies_now;
    }
}

/// Reaps the zombies seen in both sweeps that nobody in healer tracks.
fn reap_orphans_among(before: &HashSet<i32>, now: &HashSet<i32>) {
    children::while_tracked(|tracked| {
        for &pid in now.intersection(before) {
            if tracked.contains(&pid) {
                continue;
            }
            if let Ok(status) = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                debug!(pid, ?status, "reaped an orphaned child");
            }
        }
    });
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::Instant;

    fn until_zombie(pid: i32) {
        let started = Instant::now();
        while !is_zombie(pid) {
            assert!(started.elapsed() < Duration::from_secs(10), "{pid} exits");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_sweep_reaps_an_untracked_zombie_but_never_a_tracked_one() {
        let (mut worker, tracked) = children::spawn(
            || Command::new("sh").args(["-c", "exit 3"]).spawn(),
            |c| Some(c.id()),
        )
        .unwrap();
        // Reaped by the sweep, not by a wait of ours: that is the point.
        #[allow(clippy::zombie_processes)]
        let orphan = Command::new("sh").args(["-c", "exit 4"]).spawn().unwrap();
        let (worker_pid, orphan_pid) = (tracked.pid(), orphan.id() as i32);
        until_zombie(worker_pid);
        until_zombie(orphan_pid);

        let zombies: HashSet<i32> = [worker_pid, orphan_pid].into();
        reap_orphans_among(&zombies, &zombies);

        assert!(!is_zombie(orphan_pid), "the untracked zombie was reaped");
        assert!(
            is_zombie(worker_pid),
            "the tracked one is left to its owner"
        );
        assert_eq!(worker.wait().unwrap().code(), Some(3), "its owner reaps it");
        drop(tracked);
    }
}
