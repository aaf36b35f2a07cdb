//! `healer worker`: the same binary, started by healer itself, to load
//! plugin packages away from the daemon.
//!
//! - `--probe FILE` loads one package in this short-lived process, checks
//!   each plugin's sample config, and answers one line (see
//!   [`crate::plugins::probe`]): a constructor that aborts, crashes, exits
//!   or hangs takes down only this process.
//! - `healer worker NAME` (what `ps` shows) loads the package healer
//!   probed and serves its plugin calls (see [`crate::plugins::serve`]);
//!   what to load and how to confine itself come on its socket.
//!
//! Either first confines itself (a probe's `--sandbox`, a worker's
//! assignment; see [`crate::plugins::sandbox`]), then loads the package,
//! and dies with healer ([`Parent`]).

use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::ExitCode;

use rustix::event::{poll, PollFd, PollFlags};
use rustix::process::{pidfd_open, PidfdFlags};

use crate::config::Sandbox;
use crate::plugins::probe::{Probed, Verdict, ANSWER};
use crate::plugins::sandbox::confine;
use crate::plugins::{identity, load_opened, Package};

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

/// The sandbox healer handed a probe as JSON (`--sandbox`); the default
/// one (no_new_privs, the default capabilities) when it gave none.
pub fn sandbox_of(json: Option<&str>) -> Result<Sandbox, String> {
    json.map_or_else(
        || Ok(Sandbox::default()),
        |json| {
            serde_json::from_str(json).map_err(|err| format!("--sandbox is not a sandbox: {err}"))
        },
    )
}

/// `healer worker --probe FILE [--sandbox JSON]`.
pub fn probe(file: &Path, sandbox: Option<&str>) -> ExitCode {
    let Some(parent) = Parent::find() else {
        return ExitCode::FAILURE;
    };
    let refused = |reason: String| Verdict::Refused {
        reason,
        detail: None,
    };
    let verdict = match (identity::open(file), sandbox_of(sandbox)) {
        (Err(reason), _) | (_, Err(reason)) => refused(reason),
        (Ok(opened), Ok(sandbox)) => match confine(&sandbox, &opened.file) {
            Err(err) => refused(format!("cannot be sandboxed: {err}")),
            Ok(notes) => {
                parent.die_with();
                let identity = opened.identity.clone();
                match load_opened(opened, file) {
                    Ok(package) => {
                        let problems = sample_problems(&package);
                        Verdict::Loaded(Probed {
                            identity,
                            name: package.name,
                            version: package.version,
                            sdk_version: package.sdk_version,
                            plugins: package.plugins,
                            problems,
                            sandbox: notes,
                        })
                    }
                    Err(err) => Verdict::Refused {
                        reason: err.reason,
                        detail: err.detail,
                    },
                }
            }
        },
    };
    match serde_json::to_string(&verdict) {
        Ok(json) => {
            println!("{ANSWER}{json}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("healer worker: cannot encode the verdict: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Every plugin's sample config must be accepted by the plugin itself:
/// users copy it, so a stale sample is a bug worth a line.
fn sample_problems(package: &Package) -> Vec<String> {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    package
        .plugins
        .iter()
        .filter(|plugin| !plugin.sample_config.trim().is_empty())
        .filter_map(|plugin| {
            let problem =
                crate::config::plugin_table_to_json(&plugin.sample_config).and_then(|config| {
                    runtime.block_on(package.check_config(plugin.kind, &plugin.name, &config))
                });
            problem.err().map(|err| {
                format!(
                    "{} {:?}: its sample config is rejected: {err}",
                    plugin.kind, plugin.name
                )
            })
        })
        .collect()
}
