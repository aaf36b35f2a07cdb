//! Events a push monitor can wait for without polling. Each is a future to
//! await inside a task spawned from [`Monitor::watch`](crate::Monitor::watch).

use std::os::fd::OwnedFd;

use rustix::process::{pidfd_open, Pid, PidfdFlags};
use tokio::io::unix::AsyncFd;

/// Resolves when process `pid` exits, the moment it does (Linux pidfd, no
/// polling). Resolves at once if there is no such process, or if it is
/// already a zombie; never resolves when the process cannot be watched
/// (e.g. out of descriptors): a failure to look is not an exit. Must be
/// awaited on the package's runtime (inside `check`, or a task spawned from
/// `watch`).
pub async fn process_exit(pid: u32) {
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return;
    };
    let pidfd = match pidfd_open(pid, PidfdFlags::empty()) {
        Ok(pidfd) => pidfd,
        // No such process (any more): that is an exit.
        Err(rustix::io::Errno::SRCH) => return,
        // healer cannot watch (too many open files, ...): that is no
        // evidence of anything; the scheduled checks still look.
        Err(_) => return std::future::pending().await,
    };
    match register(pidfd) {
        // A pidfd becomes readable when its process exits.
        Some(pidfd) => drop(pidfd.readable().await),
        // No reactor to wait with: report nothing rather than a false exit.
        None => std::future::pending().await,
    }
}

fn register(fd: OwnedFd) -> Option<AsyncFd<OwnedFd>> {
    // SAFETY: `fd` is an open descriptor that the `AsyncFd` takes ownership
    // of; it stays open, referring to the same pidfd, until the `AsyncFd` is
    // dropped, and `OwnedFd::as_raw_fd` always returns that descriptor.
    unsafe { AsyncFd::register(fd) }.ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn resolves_when_a_child_exits_and_not_before() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        runtime.block_on(async {
            let early = tokio::time::timeout(Duration::from_millis(100), process_exit(pid)).await;
            assert!(early.is_err(), "resolved while the process was alive");
            child.kill().unwrap();
            tokio::time::timeout(Duration::from_secs(5), process_exit(pid))
                .await
                .expect("resolved after the kill");
        });
        child.wait().unwrap();
    }

    #[test]
    fn resolves_at_once_for_a_process_that_does_not_exist() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), process_exit(i32::MAX as u32))
                .await
                .expect("resolved");
        });
    }
}
