//! Probing: before healer loads a package file, a short-lived
//! `healer worker --probe FILE` loads it first, in its own process group
//! and with a deadline. A library constructor that aborts, crashes, calls
//! `exit` or never returns takes that child down, not healer; the file is
//! named with the reason and skipped. Only a file that probed clean is
//! loaded for real, and only if it is still the same file (device, inode,
//! size, mtime, sha256).
//!
//! The child answers with one line, [`ANSWER`] followed by a JSON
//! [`Verdict`]; anything else it prints (a constructor may print) is
//! ignored.
//!
//! A probe runs in its package's sandbox (the same environment allowlist,
//! user, capabilities and Landlock rules as its workers, see
//! [`super::sandbox`]), so a constructor never runs with more than the
//! package's plugins will; what the kernel cannot enforce of it comes back
//! in the verdict, for healer to say at start.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::child::describe_exit;
use super::sandbox::environment;
use crate::config::Sandbox;
use crate::plugins::children::{self, Tracked};
use crate::plugins::identity::Identity;
use crate::plugins::package::PluginInfo;

/// How long a package may take to load in its probe.
pub const PROBE_WITHIN: Duration = Duration::from_secs(5);

/// Probes run at once, at most.
const AT_ONCE: usize = 16;

/// The most of a probe's output read (a hostile constructor may print
/// without end).
const MAX_OUTPUT: u64 = 1 << 20;

/// What starts the probe's answer line.
pub const ANSWER: &str = "HEALER-PROBE ";

/// A probe's answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The package loaded and checked out.
    Loaded(Probed),
    /// The package was refused, for the reason given (a [`LoadError`]'s).
    ///
    /// [`LoadError`]: crate::plugins::LoadError
    Refused {
        reason: String,
        detail: Option<String>,
    },
}

/// What a clean probe saw: the file, the package, and what is wrong with
/// its sample configs (each sample is checked by its own plugin, in the
/// probe, so healer need not load the package to list it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Probed {
    pub identity: Identity,
    pub name: String,
    pub version: String,
    pub sdk_version: String,
    pub plugins: Vec<PluginInfo>,
    /// One line per plugin whose sample config its plugin rejects.
    pub problems: Vec<String>,
    /// What of its sandbox the kernel does not enforce, one note each.
    #[serde(default)]
    pub sandbox: Vec<String>,
}

/// Why a probe says no: one line, and the loader's full text if any.
#[derive(Debug, PartialEq)]
pub struct Refusal {
    pub reason: String,
    pub detail: Option<String>,
}

impl Refusal {
    fn new(reason: String) -> Refusal {
        Refusal {
            reason,
            detail: None,
        }
    }
}

/// A file to probe, in the sandbox and with the variables its workers get.
#[derive(Clone, Debug)]
pub struct ToProbe {
    pub file: PathBuf,
    pub sandbox: Sandbox,
    pub env: Vec<String>,
}

/// Probes each file with `healer` (the binary at `exe`), at most
/// [`AT_ONCE`] at a time, each within `limit`; the results in order.
pub fn probe_all(exe: &Path, files: &[ToProbe], limit: Duration) -> Vec<Result<Probed, Refusal>> {
    let mut results = Vec::with_capacity(files.len());
    for batch in files.chunks(AT_ONCE) {
        let started: Vec<_> = batch.iter().map(|file| Probe::start(exe, file)).collect();
        let deadline = Instant::now() + limit;
        for probe in started {
            results.push(probe.and_then(|probe| probe.finish(deadline, limit)));
        }
    }
    results
}

/// One probe under way.
struct Probe {
    child: Child,
    /// Tracked until reaped: the reaper leaves it alone.
    tracked: Tracked,
    stdout: mpsc::Receiver<Vec<u8>>,
    stderr: mpsc::Receiver<Vec<u8>>,
}

impl Probe {
    fn start(exe: &Path, probing: &ToProbe) -> Result<Probe, Refusal> {
        let sandbox = serde_json::to_string(&probing.sandbox).unwrap_or_default();
        let mut command = Command::new(exe);
        command
            .arg0("healer")
            .arg("worker")
            .arg("--probe")
            .arg(&probing.file)
            .arg("--sandbox")
            .arg(sandbox)
            .stdin(Stdio::null())
            .env_clear()
            .envs(environment(&probing.env))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group: whatever a constructor forks is killed with it.
            .process_group(0);
        let (mut child, tracked) = children::spawn(|| command.spawn(), |child| Some(child.id()))
            .map_err(|err| {
                Refusal::new(format!(
                    "cannot be probed: starting {} worker --probe failed: {err}",
                    exe.display()
                ))
            })?;
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        Ok(Probe {
            child,
            tracked,
            stdout,
            stderr,
        })
    }

    fn finish(mut self, deadline: Instant, limit: Duration) -> Result<Probed, Refusal> {
        // Seen to end, not reaped: its pid (its group's id) stays taken
        // until the group is killed.
        let exited = loop {
            if children::has_exited(self.tracked.pid()) {
                break true;
            }
            if Instant::now() >= deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        // The whole group: a hung constructor, and anything it forked.
        self.tracked.kill_group();
        let status = self.child.wait().ok().filter(|_| exited);
        drop(self.tracked);
        // A descendant that left the group may hold the pipes: wait briefly.
        let grace = Duration::from_millis(200);
        let stdout = self.stdout.recv_timeout(grace).unwrap_or_default();
        let stderr = self.stderr.recv_timeout(grace).unwrap_or_default();
        let Some(status) = status else {
            return Err(Refusal::new(format!(
                "did not finish loading within {} (a library constructor that never returns?); its probe was killed",
                humantime::format_duration(limit)
            )));
        };
        verdict_of(status, &stdout, &stderr)
    }
}

/// Reads `pipe` to its end (at most [`MAX_OUTPUT`]) on a thread; what was
/// read arrives on the receiver.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> mpsc::Receiver<Vec<u8>> {
    let (sender, receiver) = mpsc::channel();
    if let Some(pipe) = pipe {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.take(MAX_OUTPUT).read_to_end(&mut bytes);
            let _ = sender.send(bytes);
        });
    }
    receiver
}

/// What a finished probe said, or why it said nothing.
fn verdict_of(status: ExitStatus, stdout: &[u8], stderr: &[u8]) -> Result<Probed, Refusal> {
    let stdout = String::from_utf8_lossy(stdout);
    let answer = stdout
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix(ANSWER))
        .and_then(|json| serde_json::from_str::<Verdict>(json).ok());
    match answer {
        Some(Verdict::Loaded(probed)) if status.success() => Ok(probed),
        Some(Verdict::Refused { reason, detail }) => Err(Refusal { reason, detail }),
        _ => {
            let said = last_line(stderr)
                .map(|line| format!(" (it printed: {line})"))
                .unwrap_or_default();
            let reason = match (status.signal(), status.code()) {
                (Some(_), _) => format!(
                    "crashed while loading: {}{said}",
                    describe_exit(status)
                ),
                (None, Some(code)) => format!(
                    "exited with status {code} while loading, before it could be checked (a library constructor that calls exit?){said}"
                ),
                (None, None) => format!("its probe ended without an answer{said}"),
            };
            Err(Refusal::new(reason))
        }
    }
}

fn last_line(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().rev().find(|line| !line.trim().is_empty())?;
    Some(line.trim().chars().take(200).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn an_answer_among_a_constructors_chatter_is_found() {
        let probed = Probed {
            identity: Identity {
                dev: 1,
                inode: 2,
                size: 3,
                mtime_ns: 4,
                sha256: "ab".into(),
            },
            name: "p".into(),
            version: "1.0.0".into(),
            sdk_version: "1.1.0".into(),
            plugins: Vec::new(),
            problems: Vec::new(),
            sandbox: Vec::new(),
        };
        let line = format!(
            "hello from a constructor\n{ANSWER}{}\n",
            serde_json::to_string(&Verdict::Loaded(probed.clone())).unwrap()
        );
        assert_eq!(verdict_of(exited(0), line.as_bytes(), b""), Ok(probed));
    }

    #[test]
    fn a_probe_that_dies_or_exits_without_answering_is_named_for_it() {
        let aborted = verdict_of(ExitStatus::from_raw(6), b"", b"fatal: oops\n").unwrap_err();
        assert_eq!(
            aborted.reason,
            "crashed while loading: killed by SIGABRT (it printed: fatal: oops)"
        );
        let exited = verdict_of(exited(0), b"bye\n", b"").unwrap_err();
        assert!(
            exited
                .reason
                .starts_with("exited with status 0 while loading"),
            "{}",
            exited.reason
        );
    }
}
