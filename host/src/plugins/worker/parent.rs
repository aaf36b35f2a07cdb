//! A worker dies with the healer that started it: healer's pid is in the
//! worker's environment ([`PARENT`]), and the worker holds healer by a
//! pidfd ([`Parent`]) from the moment its sandbox is in place. A worker
//! (or probe) whose healer is already gone does not start.

use std::os::fd::OwnedFd;

use rustix::event::{poll, PollFd, PollFlags};
use rustix::process::{pidfd_open, PidfdFlags};

/// What healer puts in a worker's environment: its own pid.
pub const PARENT: &str = "HEALER_WORKER_PARENT";

/// healer, the parent of this worker, held by a pidfd: a worker dies with
/// the healer that started it.
///
/// Not `PR_SET_PDEATHSIG`: that signal fires when the *thread* that forked
/// the worker exits (a worker forked from a retiring blocking-pool thread
/// was killed and counted as a crash), and the kernel clears it when the
/// worker changes its user or drops capabilities, as its sandbox does. A
/// pidfd names the process, whatever thread forked and whoever the worker
/// has become.
pub struct Parent {
    /// The expected parent's pid, when healer named one.
    pid: Option<i32>,
    pidfd: Option<OwnedFd>,
}

impl Parent {
    /// healer, by the pid it put in [`PARENT`]; `None` if healer is already
    /// gone (this process was handed to another parent). A worker started
    /// by hand, with no [`PARENT`], watches nobody.
    pub fn find() -> Option<Parent> {
        let Some(pid) = std::env::var(PARENT)
            .ok()
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            return Some(Parent {
                pid: None,
                pidfd: None,
            });
        };
        let pidfd = rustix::process::Pid::from_raw(pid)
            .and_then(|named| pidfd_open(named, PidfdFlags::empty()).ok());
        // Opened first, compared after: while healer is still the parent,
        // the pidfd is healer's (a parent's pid cannot be reused under its
        // living child).
        if nix::unistd::getppid().as_raw() != pid {
            return None;
        }
        Some(Parent {
            pid: Some(pid),
            pidfd,
        })
    }

    /// From now on this process is killed (SIGKILL) the moment healer
    /// exits, or at once if it already has. Called once the sandbox is in
    /// place: the watching thread is confined like the rest. Without
    /// pidfds (Linux before 5.3), PR_SET_PDEATHSIG, set after the
    /// sandbox changed the worker's credentials, does the same.
    pub fn die_with(self) {
        let Some(pid) = self.pid else { return };
        let watched = self.pidfd.is_some_and(|pidfd| {
            let (ready, started) = std::sync::mpsc::channel();
            let spawned = std::thread::Builder::new()
                .name("healer-parent".to_owned())
                .spawn(move || watch(&pidfd, pid, &ready));
            // Started and waiting before the package loads: a thread
            // still starting could wait on the dynamic linker's lock that
            // a library constructor holds (one that never returns, say).
            spawned.is_ok() && started.recv().is_ok()
        });
        if !watched {
            death_signal(pid);
        }
    }
}

/// Waits for `pidfd` (healer) to exit, then kills this process. Only raw
/// system calls once `ready` is told: nothing that could wait on a lock
/// the rest of the process holds.
fn watch(pidfd: &OwnedFd, pid: i32, ready: &std::sync::mpsc::Sender<()>) {
    let this = rustix::process::getpid();
    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
    let _ = ready.send(());
    loop {
        match poll(&mut fds, None) {
            Ok(ready) if ready > 0 => break,
            Ok(_) | Err(rustix::io::Errno::INTR) => continue,
            // A pidfd that cannot be polled: the signal instead.
            Err(_) => return death_signal(pid),
        }
    }
    let _ = rustix::process::kill_process(this, rustix::process::Signal::KILL);
}

fn death_signal(pid: i32) {
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    if nix::unistd::getppid().as_raw() != pid {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
    }
}
