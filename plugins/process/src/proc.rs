//! Reading `/proc`, telling "there is no such process" (evidence that a
//! service is down) from "healer could not look" (EMFILE, EACCES, ...: no
//! evidence at all, so UNKNOWN). A missing `/proc/<pid>` is "no such
//! process" only when `kill(pid, 0)` agrees: `/proc` may hide processes
//! (`hidepid`) or be another pid namespace's.

use std::io;
use std::path::PathBuf;

use healer_plugin_sdk::events::process_exists;

/// `PF_KTHREAD` in the flags of `/proc/<pid>/stat`.
const KERNEL_THREAD: u64 = 0x0020_0000;

/// What `/proc/<pid>/stat` says about a process.
pub struct Stat {
    /// The process name (`comm`, at most 15 bytes).
    pub comm: String,
    /// Exited and not yet reaped (or being reaped): not running.
    pub dead: bool,
    /// Stopped by a signal (`T`, SIGSTOP or SIGTSTP) or by a tracer
    /// (`t`): it exists, and does nothing until it is continued.
    pub stopped: bool,
    /// A kernel thread, never a service.
    pub kernel_thread: bool,
}

/// A `/proc` file system (another root in tests).
#[derive(Clone)]
pub struct Proc {
    root: PathBuf,
}

impl Proc {
    /// The real `/proc`.
    pub fn new() -> Proc {
        Proc::at(PathBuf::from("/proc"))
    }

    pub fn at(root: PathBuf) -> Proc {
        Proc { root }
    }

    /// Every process's pid.
    pub fn pids(&self) -> Result<Vec<u32>, String> {
        let cannot = |err: io::Error| format!("cannot list {}: {err}", self.root.display());
        let mut pids = Vec::new();
        for entry in std::fs::read_dir(&self.root).map_err(cannot)? {
            if let Some(pid) = entry
                .map_err(cannot)?
                .file_name()
                .to_str()
                .and_then(|name| name.parse().ok())
            {
                pids.push(pid);
            }
        }
        pids.sort_unstable();
        Ok(pids)
    }

    /// Whether this `/proc` hides processes from the reader: PID 1 runs
    /// (`kill(1, 0)` says so, EPERM included) but its entry is not there.
    /// `hidepid=invisible` does this to a reader that is neither in the
    /// mount's `gid=` group nor allowed to trace the process (a root worker
    /// without `CAP_SYS_PTRACE`); a search of such a `/proc` that finds
    /// nothing is no evidence that nothing runs.
    pub fn hides_processes(&self) -> bool {
        !self.root.join("1").exists() && process_exists(1).unwrap_or(false)
    }

    /// `Ok(None)` when there is no process `pid`.
    pub fn stat(&self, pid: u32) -> Result<Option<Stat>, String> {
        let Some(text) = self.read(pid, "stat")? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&text);
        let malformed = || format!("{}/{pid}/stat is malformed", self.root.display());
        // `pid (comm) state ppid pgrp session tty tpgid flags ...`; comm may
        // hold spaces and parentheses, so it ends at the last `)`.
        let open = text.find('(').ok_or_else(malformed)?;
        let close = text.rfind(')').ok_or_else(malformed)?;
        let mut fields = text[close + 1..].split_whitespace();
        let state = fields.next().ok_or_else(malformed)?;
        let flags: u64 = fields
            .nth(5)
            .and_then(|flags| flags.parse().ok())
            .ok_or_else(malformed)?;
        Ok(Some(Stat {
            comm: text[open + 1..close].to_owned(),
            dead: matches!(state, "Z" | "X" | "x"),
            stopped: matches!(state, "T" | "t"),
            kernel_thread: flags & KERNEL_THREAD != 0,
        }))
    }

    /// The command line, arguments joined by spaces; `Ok(None)` when there
    /// is no process `pid`.
    pub fn cmdline(&self, pid: u32) -> Result<Option<String>, String> {
        Ok(self.read(pid, "cmdline")?.map(|raw| {
            raw.split(|&byte| byte == 0)
                .filter(|arg| !arg.is_empty())
                .map(String::from_utf8_lossy)
                .collect::<Vec<_>>()
                .join(" ")
        }))
    }

    /// Whether `pid` runs: `Ok(false)` only on evidence (no such process,
    /// or a zombie), `Err` when it could not be read.
    pub fn running(&self, pid: u32) -> Result<bool, String> {
        Ok(self.stat(pid)?.is_some_and(|stat| !stat.dead))
    }

    fn read(&self, pid: u32, file: &str) -> Result<Option<Vec<u8>>, String> {
        let path = self.root.join(pid.to_string()).join(file);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(err) if gone(&err) => match process_exists(pid) {
                Ok(false) => Ok(None),
                Ok(true) => Err(format!(
                    "cannot read {}: {err}, yet process {pid} exists \
                     (/proc mounted with hidepid, or another pid namespace's?)",
                    path.display()
                )),
                Err(why) => Err(format!(
                    "cannot read {}: {err}, and cannot tell whether process {pid} exists: {why}",
                    path.display()
                )),
            },
            Err(err) => Err(format!("cannot read {}: {err}", path.display())),
        }
    }
}

/// The errors that mean the process does not exist (any more).
fn gone(err: &io::Error) -> bool {
    const ESRCH: i32 = 3;
    err.kind() == io::ErrorKind::NotFound || err.raw_os_error() == Some(ESRCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_runs_and_is_no_kernel_thread() {
        let proc = Proc::new();
        let me = std::process::id();
        let stat = proc.stat(me).unwrap().unwrap();
        assert!(!stat.dead && !stat.kernel_thread);
        assert!(proc.running(me).unwrap());
        assert!(proc.pids().unwrap().contains(&me));
        assert!(proc.cmdline(me).unwrap().unwrap().contains("process"));
    }

    #[test]
    fn a_pid_that_does_not_exist_is_evidence() {
        assert!(!Proc::new().running(u32::MAX - 1).unwrap());
    }

    #[test]
    fn a_proc_entry_that_cannot_be_read_is_no_evidence() {
        let root = tempfile::tempdir().unwrap();
        // A directory where the stat file should be: EISDIR, like EMFILE
        // or EACCES an error of the looking, not of the process.
        std::fs::create_dir_all(root.path().join("42/stat")).unwrap();
        let err = Proc::at(root.path().to_owned()).running(42).unwrap_err();
        assert!(err.starts_with("cannot read "), "{err}");
        assert!(err.contains("42/stat"), "{err}");
    }

    #[test]
    fn a_missing_entry_of_a_process_that_exists_is_no_evidence() {
        // This process exists; a /proc that does not show it (hidepid,
        // another pid namespace) is no evidence that it is gone.
        let root = tempfile::tempdir().unwrap();
        let proc = Proc::at(root.path().to_owned());
        let me = std::process::id();
        let err = proc.running(me).unwrap_err();
        assert!(err.contains(&format!("yet process {me} exists")), "{err}");
        assert!(proc.cmdline(me).is_err());
    }

    #[test]
    fn a_missing_entry_of_a_pid_no_process_has_is_evidence() {
        let root = tempfile::tempdir().unwrap();
        let proc = Proc::at(root.path().to_owned());
        // An unused pid: the highest below pid_max that kill(pid, 0) says
        // no process has.
        let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .map_or(32768, |max| max.trim().parse().unwrap_or(32768));
        let unused = (pid_max / 2..pid_max)
            .rev()
            .find(|&pid| process_exists(pid).is_ok_and(|exists| !exists))
            .expect("an unused pid");
        assert!(!proc.running(unused).unwrap());
        assert!(proc.stat(unused).unwrap().is_none());
        assert!(proc.cmdline(unused).unwrap().is_none());
    }

    #[test]
    fn a_stopped_or_traced_process_is_stopped_and_runs() {
        let root = tempfile::tempdir().unwrap();
        let proc = Proc::at(root.path().to_owned());
        for (pid, state, stopped) in [(7, "T", true), (8, "t", true), (9, "S", false)] {
            std::fs::create_dir_all(root.path().join(pid.to_string())).unwrap();
            std::fs::write(
                root.path().join(format!("{pid}/stat")),
                format!("{pid} (app) {state} 1 {pid} {pid} 0 -1 4194560 0 0"),
            )
            .unwrap();
            let stat = proc.stat(pid).unwrap().unwrap();
            assert_eq!(stat.stopped, stopped, "state {state}");
            assert!(proc.running(pid).unwrap(), "state {state}");
        }
    }

    #[test]
    fn a_comm_with_spaces_and_parentheses_is_read_whole() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("7")).unwrap();
        std::fs::write(
            root.path().join("7/stat"),
            "7 (my (odd) name) Z 1 7 7 0 -1 4194560 0 0",
        )
        .unwrap();
        let stat = Proc::at(root.path().to_owned()).stat(7).unwrap().unwrap();
        assert_eq!(stat.comm, "my (odd) name");
        assert!(stat.dead);
    }
}
