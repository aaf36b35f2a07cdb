//! Events a push monitor can wait for without polling. Each is a future to
//! await inside a task spawned from [`Monitor::watch`](crate::Monitor::watch).
//! And [`process_exists`], to confirm that a process is gone before saying
//! so.

use std::io;
use std::os::fd::OwnedFd;

use rustix::process::{pidfd_open, test_kill_process, Pid, PidfdFlags};
use tokio::io::unix::AsyncFd;

/// Resolves with `Ok` when process `pid` exits, the moment it does (Linux
/// pidfd, no polling), or at once if there is no such process (ESRCH) or it
/// is already a zombie. Resolves with `Err`, at once, when the process
/// cannot be watched (out of descriptors, no pidfd support, no reactor, a
/// pid that is no pid): a failure to watch is not an exit, so try again
/// later and let the scheduled checks look meanwhile. Must be awaited on
/// the package's runtime (inside `check`, or a task spawned from `watch`).
///
/// `Ok` says the pidfd fired (or the pid was not found); before reporting
/// "not running", confirm in `/proc` that the process is gone (its pid may
/// have been reused, for one).
pub async fn watch_process_exit(pid: u32) -> io::Result<()> {
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot watch pid {pid}: not a process id"),
        ));
    };
    let pidfd = match pidfd_open(pid, PidfdFlags::empty()) {
        Ok(pidfd) => pidfd,
        // No such process (any more): that is an exit.
        Err(rustix::io::Errno::SRCH) => return Ok(()),
        Err(errno) => {
            let error = io::Error::from(errno);
            return Err(io::Error::new(
                error.kind(),
                format!(
                    "cannot watch pid {pid}: pidfd_open: {error}",
                    pid = pid.as_raw_pid()
                ),
            ));
        }
    };
    let pidfd = register(pidfd).map_err(|error| {
        io::Error::new(
            error.kind(),
            format!("cannot watch pid {}: {error}", pid.as_raw_pid()),
        )
    })?;
    // A pidfd becomes readable when its process exits.
    pidfd.readable().await.map(drop)
}

/// Resolves when process `pid` exits, like [`watch_process_exit`]; never
/// resolves when the process cannot be watched (a failure to look is not an
/// exit). Prefer [`watch_process_exit`], which says so and lets the caller
/// try again.
pub async fn process_exit(pid: u32) {
    if watch_process_exit(pid).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Whether process `pid` exists (`kill(pid, 0)`; a zombie exists too):
/// `Ok(false)` only on evidence (ESRCH, or a number that is no pid),
/// `Ok(true)` also when it may not be signalled (EPERM). Ask this before
/// taking a missing `/proc/<pid>` as "gone": `/proc` may hide processes
/// (`hidepid`) or belong to another pid namespace.
pub fn process_exists(pid: u32) -> io::Result<bool> {
    // Pid 0 (or a negative one) would ask about process groups: no pid.
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return Ok(false);
    };
    match test_kill_process(pid) {
        Ok(()) | Err(rustix::io::Errno::PERM) => Ok(true),
        Err(rustix::io::Errno::SRCH) => Ok(false),
        Err(errno) => Err(errno.into()),
    }
}

/// `fd` (a pidfd) watched by the runtime of the calling task.
pub(crate) fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: `fd` is an open descriptor that the `AsyncFd` takes ownership
    // of; it stays open, referring to the same pidfd, until the `AsyncFd` is
    // dropped, and `OwnedFd::as_raw_fd` always returns that descriptor.
    unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn resolves_when_a_child_exits_and_not_before() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        runtime().block_on(async {
            let early =
                tokio::time::timeout(Duration::from_millis(100), watch_process_exit(pid)).await;
            assert!(early.is_err(), "resolved while the process was alive");
            let early = tokio::time::timeout(Duration::from_millis(100), process_exit(pid)).await;
            assert!(early.is_err(), "resolved while the process was alive");
            child.kill().unwrap();
            tokio::time::timeout(Duration::from_secs(5), watch_process_exit(pid))
                .await
                .expect("resolved after the kill")
                .expect("watched");
            tokio::time::timeout(Duration::from_secs(5), process_exit(pid))
                .await
                .expect("resolved after the kill");
        });
        child.wait().unwrap();
    }

    #[test]
    fn resolves_at_once_for_a_process_that_does_not_exist() {
        runtime().block_on(async {
            tokio::time::timeout(Duration::from_secs(5), watch_process_exit(i32::MAX as u32))
                .await
                .expect("resolved")
                .expect("no such process is an exit");
            tokio::time::timeout(Duration::from_secs(5), process_exit(i32::MAX as u32))
                .await
                .expect("resolved");
        });
    }

    #[test]
    fn a_pid_that_is_no_pid_cannot_be_watched() {
        runtime().block_on(async {
            for pid in [0, u32::MAX] {
                let err = watch_process_exit(pid).await.unwrap_err();
                assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
                let never = tokio::time::timeout(Duration::from_millis(100), process_exit(pid));
                assert!(never.await.is_err(), "process_exit({pid}) resolved");
            }
        });
    }

    #[test]
    fn only_a_pid_no_process_has_is_said_not_to_exist() {
        assert!(process_exists(std::process::id()).unwrap());
        // Pid 1 exists; as root it may be signalled, else EPERM: both exist.
        assert!(process_exists(1).unwrap());
        for pid in [0, u32::MAX, i32::MAX as u32] {
            assert!(!process_exists(pid).unwrap(), "{pid}");
        }
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let started = Instant::now();
        // Exited but not reaped: a zombie still exists.
        while !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| stat.contains(") Z "))
        {
            assert!(started.elapsed() < Duration::from_secs(10), "never exited");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(process_exists(pid).unwrap());
        child.wait().unwrap();
        assert!(!process_exists(pid).unwrap());
    }

    #[test]
    fn a_watch_without_descriptors_is_an_error_not_an_exit() {
        if !crate::testing::is_alone() {
            // The limit of open files is per process: run this test alone
            // in a child process, so no other test runs out of descriptors.
            crate::testing::run_alone(
                &[],
                "events::tests::a_watch_without_descriptors_is_an_error_not_an_exit",
                &[],
            );
            return;
        }
        let runtime = runtime();
        // Its output on /dev/null: it must not hold the parent's pipes.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        let highest = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u64>().ok())
            .max()
            .unwrap();
        let low = highest + 8;
        rustix::process::setrlimit(
            rustix::process::Resource::Nofile,
            rustix::process::Rlimit {
                current: Some(low),
                maximum: limit.maximum,
            },
        )
        .unwrap();
        // Use up every descriptor left (at most `low` opens).
        let mut held = Vec::new();
        let exhausted = loop {
            match std::fs::File::open("/dev/null") {
                Ok(_) if held.len() as u64 > low => break None,
                Ok(file) => held.push(file),
                Err(err) => break Some(err),
            }
        };
        let watched = runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), watch_process_exit(child.id())).await
        });
        drop(held);
        let _ = child.kill();
        let _ = child.wait();
        let exhausted = exhausted.expect("the limit of open files held");
        assert_eq!(exhausted.raw_os_error(), Some(24), "{exhausted}");
        let err = watched.expect("resolved at once").unwrap_err();
        assert!(err.to_string().starts_with("cannot watch pid"), "{err}");
        assert!(err.to_string().contains("open files"), "{err}");
    }
}
