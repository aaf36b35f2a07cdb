//! A worker process: starting one (`healer worker NAME`, its end of a
//! socketpair on descriptor 3 with its assignment waiting there, its own
//! process group, RLIMIT_AS, the environment allowlist, tracked until
//! reaped), seeing it end without reaping it ([`Exit`]), ending it with its
//! whole process group, and saying how it ended ([`describe_exit`]: "killed
//! by SIGSEGV").

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::process::Child;
use tokio::task::JoinHandle;

use super::assignment::{Assignment, WORKER_FD};
use super::output::{self, Allowance};
use super::sandbox::environment;
use crate::plugins::children::{self, Tracked};

/// A worker just started: the process, and healer's end of its socket.
pub struct Started {
    pub worker: Worker,
    pub socket: tokio::net::UnixStream,
    /// Its pid (0 if it ended already).
    pub pid: u32,
}

/// Starts a worker of the binary `exe` for the package file `name`, with
/// `assignment` waiting on its socket, the variables `env` names from
/// healer's environment, an address space of `memory` bytes (0: no
/// limit), and what it prints relayed to healer's log within `allowance`.
pub fn spawn(
    exe: &Path,
    name: &str,
    env: &[String],
    memory: u64,
    allowance: &Arc<Allowance>,
    assignment: &Assignment,
) -> Result<Started, String> {
    let fail = |what: &str, err: io::Error| {
        format!("cannot start a plugin worker for {name}: {what}: {err}")
    };
    let (mut ours, theirs) =
        std::os::unix::net::UnixStream::pair().map_err(|err| fail("socketpair", err))?;
    // Waiting for the worker on its socket before it starts: a few
    // KiB, far below the socket's buffer; the timeout only makes sure.
    ours.set_write_timeout(Some(Duration::from_secs(1)))
        .and_then(|()| assignment.send(&mut ours))
        .map_err(|err| fail("its assignment", err))?;
    let mut command = tokio::process::Command::new(exe);
    // `ps` shows `healer worker libfoo.so`: the rest is in the
    // assignment.
    command
        .arg0("healer")
        .arg("worker")
        .arg(name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Nothing of healer's environment but the allowlist.
        .env_clear()
        .envs(environment(env))
        // Its own group: whatever a plugin forks is killed with it.
        .process_group(0)
        .kill_on_drop(true);
    // Only the soft limit: what a plugin starts (a service, by a
    // recovery) gets the hard one back (the SDK's command runner).
    let fd = theirs.as_raw_fd();
    // SAFETY: the closure runs in the child between fork and exec and
    // makes only async-signal-safe calls (fcntl, dup2, setrlimit) on
    // values copied in; it allocates nothing.
    unsafe {
        command.pre_exec(move || hand_over(fd, memory));
    }
    let (mut child, tracked) =
        children::spawn(|| command.spawn(), Child::id).map_err(|err| fail("spawn", err))?;
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(output::relay(
            name.to_owned(),
            Arc::clone(allowance),
            stdout,
        ));
    }
    let said = child.stderr.take().map(|stderr| {
        tokio::spawn(output::relay(
            name.to_owned(),
            Arc::clone(allowance),
            stderr,
        ))
    });
    drop(theirs);
    ours.set_nonblocking(true)
        .map_err(|err| fail("socket", err))?;
    let stream = tokio::net::UnixStream::from_std(ours).map_err(|err| fail("socket", err))?;
    let pid = child.id().unwrap_or(0);
    Ok(Started {
        worker: Worker::new(child, tracked, said),
        socket: stream,
        pid,
    })
}

/// A worker process as its supervisor holds it.
pub struct Worker {
    child: Child,
    pub exit: Exit,
    /// What it printed last on stderr, once that ends.
    said: Option<JoinHandle<Option<String>>>,
}

/// How a supervisor sees its worker end without reaping it (a pidfd, or
/// a look every 100 ms without one), so the worker's process group can be
/// killed while the exited worker still holds the group's id.
pub struct Exit {
    tracked: Tracked,
    pidfd: Option<AsyncFd<std::os::fd::OwnedFd>>,
}

impl Exit {
    fn watch(tracked: Tracked) -> Exit {
        let pidfd = rustix::process::Pid::from_raw(tracked.pid())
            .and_then(|pid| {
                rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
            })
            // SAFETY: the pidfd was just opened and is owned by the
            // `AsyncFd`, which keeps it open, as the same descriptor, until
            // it is dropped.
            .and_then(|pidfd| unsafe { AsyncFd::register(pidfd) }.ok());
        Exit { tracked, pidfd }
    }

    /// Returns once the worker has ended (it stays unreaped).
    pub async fn ended(&self) {
        match &self.pidfd {
            // A pidfd is readable once its process has exited.
            Some(pidfd) => {
                let _ = pidfd.readable().await;
            }
            None => {
                while !children::has_exited(self.tracked.pid()) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Why a supervisor stopped watching its worker.
pub enum Ending {
    /// It ended by itself: its exit status says how.
    Exited,
    /// It is killed for this.
    Killed(String),
    /// Its package is no longer used.
    Stopped,
}

impl Worker {
    /// `child`, started and tracked as `tracked`; `said` is what it prints
    /// last on stderr, once that ends.
    pub fn new(child: Child, tracked: Tracked, said: Option<JoinHandle<Option<String>>>) -> Worker {
        Worker {
            child,
            exit: Exit::watch(tracked),
            said,
        }
    }

    /// Ends the worker (and its process group) for `ending`, and says why
    /// it ended: empty when it was stopped.
    pub async fn end(self, ending: Ending) -> String {
        // The whole group (the worker, and whatever a plugin forked), while
        // the worker is not yet reaped: its pid cannot have been reused.
        let Worker {
            mut child,
            exit,
            said,
        } = self;
        exit.tracked.kill_group();
        let status = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
        // Untracked only after the child is dropped: one not reaped by now is
        // killed on drop while it still holds its pid.
        drop(child);
        drop(exit);
        let reason = match (ending, status) {
            (Ending::Stopped, _) => String::new(),
            (Ending::Killed(reason), _) => reason,
            (Ending::Exited, Ok(Ok(status))) => describe_exit(status),
            (Ending::Exited, Ok(Err(err))) => format!("cannot be waited for: {err}"),
            (Ending::Exited, Err(_)) => "ended, but could not be reaped".to_owned(),
        };
        // Its last words on stderr often say why ("memory allocation of
        // 268435456 bytes failed").
        let last_words = match said {
            Some(said) => tokio::time::timeout(Duration::from_millis(500), said)
                .await
                .ok()
                .and_then(Result::ok)
                .flatten(),
            None => None,
        };
        match last_words {
            Some(line) if !reason.is_empty() => format!("{reason} (it printed: {line})"),
            _ => reason,
        }
    }
}

/// "killed by SIGSEGV", "exited with status 0".
pub fn describe_exit(status: ExitStatus) -> String {
    match (status.signal(), status.code()) {
        (Some(signal), _) => format!(
            "killed by {}{}",
            signal_name(signal),
            if status.core_dumped() {
                " (core dumped)"
            } else {
                ""
            }
        ),
        (None, Some(code)) => format!("exited with status {code}"),
        (None, None) => "ended".to_owned(),
    }
}

/// `SIGSEGV` for 11: the name operators know.
fn signal_name(signal: i32) -> String {
    nix::sys::signal::Signal::try_from(signal)
        .map_or_else(|_| format!("signal {signal}"), |s| s.as_str().to_owned())
}

/// In the child, before exec: its end of the socketpair becomes
/// [`WORKER_FD`] (open across exec), and its address space is limited.
fn hand_over(fd: RawFd, memory: u64) -> io::Result<()> {
    // SAFETY: fcntl, dup2, getrlimit and setrlimit are async-signal-safe and take
    // only plain values; `fd` is open in the child (inherited).
    unsafe {
        if fd == WORKER_FD {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(io::Error::last_os_error());
            }
        } else if libc::dup2(fd, WORKER_FD) < 0 {
            return Err(io::Error::last_os_error());
        }
        if memory > 0 {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_AS, &mut limit) != 0 {
                return Err(io::Error::last_os_error());
            }
            limit.rlim_cur = memory.min(limit.rlim_max);
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}
