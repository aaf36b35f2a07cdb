//! The children healer starts and waits for itself (plugin workers and
//! probes): each is started under one lock and tracked until its owner has
//! reaped it, so the reaper (`crate::daemon::reaper`), which reaps orphans under
//! the same lock, never takes one. An owner sees its child exit without
//! reaping it ([`has_exited`]) and kills the child's process group while
//! the exited leader still holds its pid: a group is never signalled after
//! its pid could have been reused.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::{Mutex, MutexGuard};

use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Pids of children an owner waits for, each with how many owners hold it:
/// a pid reaped by one owner may be a new child's before the first owner
/// lets go of it, and the second must stay tracked.
static TRACKED: Mutex<BTreeMap<i32, usize>> = Mutex::new(BTreeMap::new());

fn tracked() -> MutexGuard<'static, BTreeMap<i32, usize>> {
    TRACKED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A child its owner waits for: untracked when dropped, which the owner
/// does once it has reaped the child (or given up on it).
#[derive(Debug)]
pub struct Tracked {
    pid: i32,
}

impl Tracked {
    /// The child's pid (and its process group's id).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Kills the child's whole process group (the child leads it), if the
    /// child has not been reaped yet: the owner calls this before it reaps.
    pub fn kill_group(&self) {
        if self.pid > 0 {
            let _ = nix::sys::signal::killpg(
                Pid::from_raw(self.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let mut tracked = tracked();
        if let Some(owners) = tracked.get_mut(&self.pid) {
            *owners -= 1;
            if *owners == 0 {
                tracked.remove(&self.pid);
            }
        }
    }
}

/// Starts a child with `spawn` and tracks it (by the pid `pid_of` reads)
/// before the reaper can look again.
pub fn spawn<C>(
    spawn: impl FnOnce() -> io::Result<C>,
    pid_of: impl FnOnce(&C) -> Option<u32>,
) -> io::Result<(C, Tracked)> {
    let mut tracked = tracked();
    let child = spawn()?;
    let pid = pid_of(&child)
        .and_then(|pid| i32::try_from(pid).ok())
        .unwrap_or(0);
    *tracked.entry(pid).or_insert(0) += 1;
    Ok((child, Tracked { pid }))
}

/// Runs `reap` with the pids being tracked, none started or untracked
/// meanwhile: the reaper's sweep.
pub fn while_tracked<R>(reap: impl FnOnce(&BTreeSet<i32>) -> R) -> R {
    // Held while the sweep reaps, so no child starts or is let go meanwhile.
    let held = tracked();
    let pids: BTreeSet<i32> = held.keys().copied().collect();
    reap(&pids)
}

/// Whether the child `pid` has ended, without reaping it: its pid stays
/// taken (a zombie) until its owner waits for it. An error (no such child)
/// counts as ended.
pub fn has_exited(pid: i32) -> bool {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    !matches!(
        waitid(Id::Pid(Pid::from_raw(pid)), flags),
        Ok(WaitStatus::StillAlive)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::{Duration, Instant};

    #[test]
    fn an_exit_is_seen_without_reaping_and_the_owner_still_gets_the_status() {
        let (mut child, tracked) = spawn(
            || Command::new("sh").args(["-c", "exit 7"]).spawn(),
            |c| Some(c.id()),
        )
        .unwrap();
        assert!(while_tracked(|pids| pids.contains(&tracked.pid())));
        let started = Instant::now();
        while !has_exited(tracked.pid()) {
            assert!(started.elapsed() < Duration::from_secs(10), "sh exits");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Seen twice, still not reaped: the owner's wait gets the status.
        assert!(has_exited(tracked.pid()));
        tracked.kill_group();
        assert_eq!(child.wait().unwrap().code(), Some(7));
        let pid = tracked.pid();
        drop(tracked);
        assert!(!while_tracked(|pids| pids.contains(&pid)));
    }
}
