//! The one way a plugin runs a program (a recovery command, a Nagios check):
//! a clean environment, its own process group, a deadline that kills the
//! whole group, and output captured with bounded memory.
//!
//! ```no_run
//! # async fn example() -> Result<(), healer_plugin_sdk::command::RunError> {
//! use std::time::Duration;
//! use healer_plugin_sdk::command::Command;
//!
//! let output = Command::new("systemctl")
//!     .args(["reload", "nginx"])
//!     .timeout(Duration::from_secs(30))
//!     .run()
//!     .await?;
//! if output.code != 0 {
//!     println!("failed: {}", output.last_stderr_line().unwrap_or_default());
//! }
//! # Ok(()) }
//! ```
//!
//! **Environment.** The child's environment is cleared; it gets only
//!
//! 1. `PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`
//!    (fixed; not the parent's `PATH`),
//! 2. `LANG`, copied from healer's own environment when it is set,
//! 3. the `HEALER_*` variables of [`Command::recovery`]: `HEALER_TARGET`,
//!    `HEALER_FINDING`, `HEALER_SEVERITY`, `HEALER_SUMMARY`,
//!    `HEALER_ATTEMPT`, `HEALER_DETAILS`, `HEALER_DETAILS_FILE`,
//!    `HEALER_PARAMS`, and in a fleet `HEALER_FENCE` and `HEALER_EPOCH`
//!    (the claim's and the shard's etcd revisions, [`crate::Fence`]),
//! 4. the configured variables of [`Command::env`], last, so they may
//!    override any of the above (`PATH` and `LANG` included).
//!
//! Nothing else of healer's environment reaches the child: its secrets (the
//! intake token, webhook HMAC secrets) live there.
//!
//! **Bounded values.** `HEALER_TARGET`, `HEALER_FINDING` and
//! `HEALER_SUMMARY` are cut at [`MAX_ENV_VALUE`] bytes (4 KiB, on a
//! character boundary). `HEALER_DETAILS` and `HEALER_PARAMS` are the JSON
//! when it is at most 4 KiB long, else the small valid JSON
//! `{"truncated":true,"bytes":N}` (N the full length). The full details
//! are always in the file named by `HEALER_DETAILS_FILE` (mode 0600,
//! removed when the command has finished, or after the grace period of a
//! detached command).
//!
//! **Processes.** stdin is `/dev/null`. The child leads a new process
//! group. When it runs past its timeout, or when the future of
//! [`Command::run`] is dropped before it exited (the host drops a plugin
//! call that passes its deadline), the whole group is killed with SIGKILL,
//! and so is every descendant of the child found in `/proc`, also one that
//! left the group (`setsid`): no grandchild survives. (A grandchild whose
//! parent had already exited is no descendant of the child any more: it was
//! reparented to healer, which the host makes a child subreaper
//! (`PR_SET_CHILD_SUBREAPER`), not to init. It is killed only if it is still
//! in the group; the host reaps it when it exits.) After a normal exit
//! nothing is killed: starting a daemon may be the point of a recovery.
//!
//! **Limits.** The child's soft limit of open files is at most
//! [`MAX_OPEN_FILES`] (1024): healer raises its own to the hard limit, and
//! a program using `select()` breaks with more. Its soft limit of address
//! space is the hard one: a plugin worker runs under a lower soft limit
//! (healer's `memory_limit`), which must not cap a service a recovery
//! starts.
//!
//! **Starting.** The program is started on the package's blocking pool,
//! never on its one worker thread, the way `posix_spawn` starts one: the
//! child is a `clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD)` of that thread
//! (in `command/spawn.rs`). It borrows healer's memory until it has
//! executed the program, the thread waiting meanwhile, so nothing of the
//! plugin worker is copied, where a fork copies its page tables and then
//! faults on each page either side writes. Unlike `posix_spawn`, the child
//! sets the limits above on its way (neither can be set in healer's own
//! process for a moment: it is shared by all threads), and std's `Command`
//! cannot do both: the `pre_exec` hook that could set them makes it fork.
//! Everything the child needs is prepared beforehand (the program's
//! candidate paths in `PATH`, the environment, the argument vectors): it
//! makes system calls only, which neither allocate nor lock. It starts
//! with no signal blocked, SIGPIPE and every caught signal at their
//! default actions. As with `posix_spawn`, a kernel before 5.16 kills
//! every process sharing the memory when one dumps core: a child that
//! faulted before it executed the program would take the plugin worker
//! with it (healer itself for an `in-process` package). A program without `#!` is run with `/bin/sh`, and
//! one found in `PATH` but not executable is passed over, as `execvp` does.
//! Its exit is seen through the pidfd the clone returned (polled every
//! 10 ms on a kernel before 5.2, which has none), and it is reaped by its
//! pid, never by `waitpid(-1)`. A burst of a hundred recoveries starts
//! side by side on the pool; on the worker thread, they would start one
//! after another, holding up every check and pushed exit of the package.
//!
//! **A service of its own.** A program started as above is healer's
//! descendant: it inherits the process attributes of the plugin worker that
//! started it and of healer's own systemd unit (control group, mount
//! namespace, seccomp filters, no_new_privs, capability bounding set, user,
//! umask, limits), and keeps them for its whole life. [`Command::systemd_run`]
//! instead asks systemd to start it as a transient service
//! (`systemd-run --unit=NAME --service-type=exec`): forked by PID 1, it
//! inherits nothing of healer, and outlives it like any other service.
//! [`Command::run`] then runs `systemd-run` itself, which ends once the
//! program was executed (exit 0) or could not be (systemd's reason on
//! stderr). The service gets the environment systemd gives every service
//! plus the configured [`Command::env`] (passed with `--setenv`, so visible
//! to local users in its unit's properties: never a secret), not the
//! `HEALER_*` variables nor a details file: a service outlives the finding
//! that started it. `systemd-run --scope` is not offered: a scope only moves
//! the program to a control group of its own, and it would still be
//! healer's child with everything else inherited.
//!
//! **Output.** stdout and stderr go to unnamed temporary files (unlinked at
//! once), not pipes: a daemon the command starts in the background never
//! holds a pipe of healer's, and the result is the exit of the program, not
//! the end of its output. Once it exited, only a bounded part is read back
//! ([`Output`]: the first [`STDOUT_HEAD`] bytes of stdout, the last
//! [`OUTPUT_TAIL`] bytes of each, and the byte counts), so healer's memory
//! does not depend on what the command prints. (What a background daemon
//! keeps writing to the inherited stdout or stderr goes to that unlinked
//! file until it exits: give a daemon its own log.)

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io::{self, Write as _};
use std::os::fd::AsFd as _;
use std::os::unix::fs::FileExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use rustix::process::{getrlimit, kill_process, kill_process_group, Pid, Resource, Rlimit, Signal};

use crate::finding::Recovery;

mod spawn;

/// The child's `PATH`, unless the configured environment sets another.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How much of the start of stdout [`Output::stdout_head`] keeps.
pub const STDOUT_HEAD: usize = 16 * 1024;

/// How much of the end of stdout and of stderr [`Output`] keeps.
pub const OUTPUT_TAIL: usize = 4 * 1024;

/// The longest `HEALER_*` value; longer ones are cut or summarized.
pub const MAX_ENV_VALUE: usize = 4 * 1024;

/// The child's soft limit of open files, at most (`select()` cannot watch
/// descriptors past 1023).
pub const MAX_OPEN_FILES: u64 = 1024;

/// How long to wait for a killed child to be reaped.
const REAP_AFTER_KILL: Duration = Duration::from_secs(5);

/// The program that asks systemd for a transient service.
pub const SYSTEMD_RUN: &str = "systemd-run";

/// The longest unit name systemd accepts, `.service` included.
const MAX_UNIT_NAME: usize = 255;

/// A program to run; see the module documentation for what it gets.
#[derive(Clone, Debug)]
pub struct Command {
    program: String,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    healer: Vec<(&'static str, String)>,
    details: Option<String>,
    cwd: Option<PathBuf>,
    timeout: Duration,
    /// Started as this transient systemd service (`NAME.service`).
    service: Option<String>,
}

/// What a program that exited printed, bounded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// The exit code (a death by signal is a [`RunError::Signal`] instead).
    pub code: i32,
    /// The first [`STDOUT_HEAD`] bytes of stdout.
    pub stdout_head: Vec<u8>,
    /// The last [`OUTPUT_TAIL`] bytes of stdout.
    pub stdout_tail: Vec<u8>,
    /// The last [`OUTPUT_TAIL`] bytes of stderr.
    pub stderr_tail: Vec<u8>,
    /// How many bytes the program wrote to stdout in all.
    pub stdout_bytes: u64,
    /// How many bytes the program wrote to stderr in all.
    pub stderr_bytes: u64,
}

/// Why a program did not run to an exit code; one line naming the program.
#[derive(Debug)]
#[non_exhaustive]
pub enum RunError {
    /// It could not be started (ENOENT, EACCES, EMFILE, ...).
    CannotStart { program: String, error: io::Error },
    /// It ran past its timeout; its process group was killed.
    TimedOut { program: String, after: Duration },
    /// It died of a signal.
    Signal { program: String, signal: i32 },
    /// Detached, it exited within its grace period.
    ExitedEarly {
        program: String,
        within: Duration,
        status: ExitStatus,
    },
    /// Waiting for it failed; its process group was killed.
    Wait { program: String, error: io::Error },
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::CannotStart { program, error } => {
                write!(f, "cannot start {program:?}: {error}")
            }
            RunError::TimedOut { program, after } => write!(
                f,
                "{program:?} timed out after {after:?} (its process group was killed)"
            ),
            RunError::Signal { program, signal } => {
                write!(f, "{program:?} was killed by signal {signal}")
            }
            RunError::ExitedEarly {
                program,
                within,
                status,
            } => write!(f, "{program:?} exited within {within:?} ({status})"),
            RunError::Wait { program, error } => {
                write!(
                    f,
                    "cannot wait for {program:?}: {error} (its process group was killed)"
                )
            }
        }
    }
}

impl std::error::Error for RunError {}

impl Command {
    /// Runs `program` (looked up in [`PATH`], or the configured `PATH`);
    /// no shell is involved. The default timeout is 30 s.
    pub fn new(program: impl Into<String>) -> Command {
        Command {
            program: program.into(),
            args: Vec::new(),
            env: BTreeMap::new(),
            healer: Vec::new(),
            details: None,
            cwd: None,
            timeout: Duration::from_secs(30),
            service: None,
        }
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The configured environment: set last, so it may override anything.
    pub fn env(mut self, vars: &BTreeMap<String, String>) -> Command {
        self.env
            .extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        self
    }

    /// The working directory (default: healer's).
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Command {
        self.cwd = Some(dir.into());
        self
    }

    /// How long [`run`](Command::run) waits before killing the group.
    pub fn timeout(mut self, timeout: Duration) -> Command {
        self.timeout = timeout;
        self
    }

    /// Starts the program as the transient systemd service `unit` (see the
    /// module documentation): [`run`](Command::run) runs `systemd-run`,
    /// which is looked up in the configured `PATH` if [`Command::env`] sets
    /// one, else in [`PATH`]; exit 0 means systemd started the program. Its
    /// timeout is `systemd-run`'s. `unit` is checked by [`service_name`]
    /// (use it where the name is configured, to refuse a bad one early).
    pub fn systemd_run(mut self, unit: impl Into<String>) -> Command {
        let unit = unit.into();
        self.service = Some(service_name(&unit).unwrap_or(unit));
        self
    }

    /// Passes `recovery` as the `HEALER_*` variables and the details file.
    pub fn recovery(mut self, recovery: &Recovery) -> Command {
        let finding = &recovery.finding;
        let details = finding.details.to_string();
        self.healer = vec![
            ("HEALER_TARGET", cut(&recovery.target)),
            ("HEALER_FINDING", cut(&finding.kind)),
            ("HEALER_SEVERITY", finding.severity.as_str().to_owned()),
            ("HEALER_SUMMARY", cut(&finding.summary)),
            ("HEALER_ATTEMPT", recovery.attempt.to_string()),
            ("HEALER_DETAILS", bounded_json(&details)),
            ("HEALER_PARAMS", bounded_json(&recovery.params.to_string())),
        ];
        if let Some(fence) = &recovery.fence {
            self.healer.push(("HEALER_FENCE", fence.claim.to_string()));
            self.healer.push(("HEALER_EPOCH", fence.epoch.to_string()));
        }
        self.details = Some(details);
        self
    }

    /// Runs the program to its exit, or kills its process group at the
    /// timeout (or when this future is dropped first).
    pub async fn run(self) -> Result<Output, RunError> {
        let (command, started, (stdout, stderr)) = self.start::<(File, File)>().await?;
        // Bound in this order so that they drop in the reverse: the group
        // is killed before the child is handed over to be reaped (never a
        // group signalled by a pid already reaped).
        let Started {
            details,
            mut child,
            mut group,
        } = started;
        let status = match tokio::time::timeout(command.timeout, child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(error)) => {
                group.kill();
                let _ = tokio::time::timeout(REAP_AFTER_KILL, child.wait()).await;
                return Err(RunError::Wait {
                    program: command.program,
                    error,
                });
            }
            Err(_) => {
                group.kill();
                let _ = tokio::time::timeout(REAP_AFTER_KILL, child.wait()).await;
                return Err(RunError::TimedOut {
                    program: command.program,
                    after: command.timeout,
                });
            }
        };
        group.exited();
        drop(details);
        let Some(code) = status.code() else {
            return Err(RunError::Signal {
                program: command.program,
                signal: status.signal().unwrap_or(0),
            });
        };
        let (stdout_head, stdout_tail, stdout_bytes) =
            read_bounded(&stdout, STDOUT_HEAD, OUTPUT_TAIL);
        let (_, stderr_tail, stderr_bytes) = read_bounded(&stderr, 0, OUTPUT_TAIL);
        Ok(Output {
            code,
            stdout_head,
            stdout_tail,
            stderr_tail,
            stdout_bytes,
            stderr_bytes,
        })
    }

    /// Starts the program with stdout and stderr on `/dev/null` and returns
    /// its pid if it is still running after `grace`; it is then left
    /// running. It exiting within `grace` is an error; this future dropped
    /// within `grace` kills its group (its outcome was never reported).
    pub async fn start_detached(self, grace: Duration) -> Result<u32, RunError> {
        if let Some(unit) = &self.service {
            return Err(self.cannot_start(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{unit} is a systemd service: systemd starts it (run), healer does not detach it"),
            )));
        }
        let (command, started, ()) = self.start::<()>().await?;
        // Bound in this order so that they drop in the reverse: the group
        // is killed before the child is handed over to be reaped (never a
        // group signalled by a pid already reaped).
        let Started {
            details: _details,
            mut child,
            mut group,
        } = started;
        let pid = child.id();
        match tokio::time::timeout(grace, child.wait()).await {
            Err(_) => {
                group.exited();
                Ok(pid)
            }
            Ok(Ok(status)) => {
                group.exited();
                Err(RunError::ExitedEarly {
                    program: command.program,
                    within: grace,
                    status,
                })
            }
            Ok(Err(error)) => {
                group.kill();
                Err(RunError::Wait {
                    program: command.program,
                    error,
                })
            }
        }
    }

    /// Starts the program on the blocking pool, not on the runtime's worker:
    /// creating its files and starting it block (the thread waits until
    /// the child has executed the program: well under a millisecond, more
    /// on a busy machine), and a hundred recoveries at once would otherwise
    /// start one after another on that one thread, which meanwhile runs
    /// nothing else (no check, no pushed exit). Gives the command back with
    /// what was started and its output files.
    async fn start<O: OutputFiles>(self) -> Result<(Command, Started, O), RunError> {
        let program = self.program.clone();
        let spawning = tokio::task::spawn_blocking(move || {
            let output = O::create().map_err(|e| self.cannot_start(output_file(e)))?;
            let started = self.start_here(output.files())?;
            Ok((self, started, output))
        });
        // Dropped before the spawn returned, the task still finishes; what
        // it started is then dropped with its result, and `Started::group`
        // kills it.
        spawning.await.unwrap_or_else(|failed| {
            Err(RunError::CannotStart {
                program,
                error: io::Error::other(format!("the thread starting it failed: {failed}")),
            })
        })
    }

    /// [`start`](Command::start)'s blocking part, on the calling thread:
    /// stdout and stderr to `output`, or to `/dev/null`.
    fn start_here(&self, output: Option<(&File, &File)>) -> Result<Started, RunError> {
        let details = match self.service {
            Some(_) => None,
            None => self.details_file()?,
        };
        let null = File::options()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|e| self.cannot_start(e))?;
        let (stdout, stderr) = output.unwrap_or((&null, &null));
        let (program, args) = self.argv();
        let child = spawn::spawn(&spawn::Program {
            program,
            args: &args,
            env: &self.environment(details.as_ref()),
            // A service's goes to systemd (`--working-directory`).
            cwd: self.cwd.as_deref().filter(|_| self.service.is_none()),
            stdio: [null.as_fd(), stdout.as_fd(), stderr.as_fd()],
            limits: &child_limits(),
        })
        .map_err(|e| self.cannot_start(e))?;
        Ok(Started {
            group: Group::of(child.id()),
            child,
            details,
        })
    }

    /// What is executed: the program and its arguments, or, for a
    /// transient service, `systemd-run` and the arguments that ask systemd
    /// to start them.
    fn argv(&self) -> (&str, Vec<String>) {
        let Some(unit) = &self.service else {
            return (&self.program, self.args.clone());
        };
        let mut argv = vec![
            format!("--unit={unit}"),
            // Unloaded when it ends, failed or not, so the name is free
            // for the next start.
            "--collect".to_owned(),
            "--quiet".to_owned(),
            // systemd-run ends once the program was executed: a missing
            // program is its failure, not a service that dies at once.
            "--service-type=exec".to_owned(),
        ];
        if let Some(cwd) = &self.cwd {
            argv.push(format!("--working-directory={}", cwd.display()));
        }
        argv.extend(
            self.env
                .iter()
                .map(|(name, value)| format!("--setenv={name}={value}")),
        );
        argv.push("--".to_owned());
        argv.push(self.program.clone());
        argv.extend(self.args.iter().cloned());
        (SYSTEMD_RUN, argv)
    }

    /// The child's whole environment (see the module documentation).
    fn environment(
        &self,
        details: Option<&tempfile::NamedTempFile>,
    ) -> BTreeMap<OsString, OsString> {
        let mut env = BTreeMap::from([("PATH".into(), PATH.into())]);
        if let Some(lang) = std::env::var_os("LANG") {
            env.insert("LANG".into(), lang);
        }
        if self.service.is_some() {
            // The service's environment went to systemd; systemd-run is
            // found in the configured PATH, if any.
            if let Some(path) = self.env.get("PATH") {
                env.insert("PATH".into(), path.into());
            }
            return env;
        }
        for (name, value) in &self.healer {
            env.insert(name.into(), value.into());
        }
        if let Some(file) = details {
            env.insert("HEALER_DETAILS_FILE".into(), file.path().into());
        }
        env.extend(
            self.env
                .iter()
                .map(|(name, value)| (name.into(), value.into())),
        );
        env
    }

    /// The full details in a 0600 file, removed when the result is dropped.
    fn details_file(&self) -> Result<Option<tempfile::NamedTempFile>, RunError> {
        let Some(details) = &self.details else {
            return Ok(None);
        };
        let write = || -> io::Result<tempfile::NamedTempFile> {
            let mut file = tempfile::Builder::new()
                .prefix("healer-details-")
                .suffix(".json")
                .tempfile()?;
            file.write_all(details.as_bytes())?;
            file.flush()?;
            Ok(file)
        };
        write().map(Some).map_err(|error| {
            self.cannot_start(io::Error::new(
                error.kind(),
                format!("cannot write its details file: {error}"),
            ))
        })
    }

    fn cannot_start(&self, error: io::Error) -> RunError {
        if let Some(unit) = &self.service {
            let error = match error.kind() {
                io::ErrorKind::NotFound => io::Error::new(
                    error.kind(),
                    format!("{error}: starting {unit} needs systemd's {SYSTEMD_RUN} in PATH (`apt install systemd`), and systemd as PID 1"),
                ),
                _ => error,
            };
            return RunError::CannotStart {
                program: SYSTEMD_RUN.to_owned(),
                error,
            };
        }
        let error = match &self.cwd {
            Some(cwd) => io::Error::new(error.kind(), format!("{error} (cwd {})", cwd.display())),
            None => error,
        };
        RunError::CannotStart {
            program: self.program.clone(),
            error,
        }
    }
}

/// `name` as the name of a transient systemd service, `.service` added if
/// it has no suffix; an error saying what is wrong with it. systemd's rule,
/// without templates (`@`): ASCII letters, digits and `:_.-\`, starting
/// with neither `.` nor `-`, at most 255 bytes with the suffix.
pub fn service_name(name: &str) -> Result<String, String> {
    let stem = name.strip_suffix(".service").unwrap_or(name);
    if stem.is_empty() {
        return Err(format!("{name:?} is no service name: it is empty"));
    }
    if let Some(bad) = stem
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || ":_.-\\".contains(c)))
    {
        return Err(format!(
            "{name:?} is no service name: {bad:?} is not allowed (letters, digits and :_.-\\ only)"
        ));
    }
    if stem.starts_with(['.', '-']) {
        return Err(format!(
            "{name:?} is no service name: it starts with {:?}",
            &stem[..1]
        ));
    }
    let unit = format!("{stem}.service");
    if unit.len() > MAX_UNIT_NAME {
        return Err(format!(
            "{name:?} is no service name: longer than {MAX_UNIT_NAME} bytes"
        ));
    }
    Ok(unit)
}

/// A program just started, and what it needs until it exits.
struct Started {
    /// Killed when dropped unless told the leader exited: also when this
    /// never reaches its caller (the caller's future was dropped). Before
    /// `child`, so it is killed before it is handed to be reaped.
    group: Group,
    child: spawn::Child,
    /// Removed when dropped.
    details: Option<tempfile::NamedTempFile>,
}

impl Output {
    /// The first [`STDOUT_HEAD`] bytes of stdout as text (invalid UTF-8
    /// replaced).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout_head).into_owned()
    }

    /// Whether stdout was longer than [`STDOUT_HEAD`].
    pub fn stdout_cut(&self) -> bool {
        self.stdout_bytes > self.stdout_head.len() as u64
    }

    /// The last line with text on it that the program wrote to stderr.
    pub fn last_stderr_line(&self) -> Option<String> {
        String::from_utf8_lossy(&self.stderr_tail)
            .lines()
            .rev()
            .find(|line| !line.trim().is_empty())
            .map(|line| line.trim().to_owned())
    }
}

/// The child's process group, killed when dropped unless it exited.
struct Group(Option<Pid>);

impl Group {
    fn of(leader: u32) -> Group {
        // Pid 1 (or 0) as a group would mean "every process": never.
        let pid = i32::try_from(leader)
            .ok()
            .filter(|&pid| pid > 1)
            .and_then(Pid::from_raw);
        Group(pid)
    }

    /// The leader exited normally: leave the group alone.
    fn exited(&mut self) {
        self.0 = None;
    }

    /// Kills the group and every descendant of its leader, also those that
    /// left the group (`setsid`, `setpgid`). They are stopped first, so
    /// none forks or exits (its children would be reparented to healer, the
    /// subreaper, out of the tree walked) while /proc is walked; then all
    /// are killed.
    fn kill(&mut self) {
        let Some(leader) = self.0.take() else {
            return;
        };
        // ESRCH (already gone) is what we wanted anyway, here and below.
        let _ = kill_process_group(leader, Signal::STOP);
        let mut stopped = BTreeSet::new();
        for _ in 0..MAX_WALKS {
            let new: Vec<Pid> = descendants(leader)
                .into_iter()
                .filter(|&pid| stopped.insert(pid))
                .filter_map(Pid::from_raw)
                .collect();
            if new.is_empty() {
                break;
            }
            for pid in new {
                let _ = kill_process(pid, Signal::STOP);
            }
        }
        for pid in stopped.into_iter().filter_map(Pid::from_raw) {
            let _ = kill_process(pid, Signal::KILL);
        }
        let _ = kill_process_group(leader, Signal::KILL);
    }
}

/// How often [`Group::kill`] walks /proc for descendants it has not stopped
/// yet (each walk finds those forked before the previous stops landed).
const MAX_WALKS: usize = 16;

/// The live descendants of `leader`, transitively: from the kernel's lists
/// of children ([`listed_descendants`]), or, where those cannot be read, by
/// the parent pid of every process ([`scanned_descendants`]). Empty when
/// /proc cannot be read: the group is still killed.
fn descendants(leader: Pid) -> Vec<i32> {
    listed_descendants(Path::new("/proc"), leader.as_raw_pid())
        .unwrap_or_else(|| scanned_descendants(leader))
}

/// The descendants of `leader` in the `task/<tid>/children` lists under
/// `proc` (each thread's children; reliable once they are all stopped, as
/// [`Group::kill`] has them), without reading every process in /proc.
/// `None` when a list that should be there cannot be read: a kernel without
/// them (`CONFIG_PROC_CHILDREN`), or out of descriptors.
fn listed_descendants(proc: &Path, leader: i32) -> Option<Vec<i32>> {
    let mut found = Vec::new();
    let mut next = vec![leader];
    while let Some(parent) = next.pop() {
        for child in children_of(proc, parent)? {
            // A cycle cannot happen, but a pid reused mid-walk must not loop.
            if child != leader && !found.contains(&child) {
                found.push(child);
                next.push(child);
            }
        }
    }
    Some(found)
}

/// The children of `pid` in the lists of its threads under `proc`; none for
/// a process or thread that is gone (its children went to the subreaper);
/// `None` when a list cannot be read.
fn children_of(proc: &Path, pid: i32) -> Option<Vec<i32>> {
    let process = proc.join(pid.to_string());
    let tasks = match std::fs::read_dir(process.join("task")) {
        Ok(tasks) => tasks,
        Err(_) if !process.exists() => return Some(Vec::new()),
        Err(_) => return None,
    };
    let mut children = Vec::new();
    for task in tasks {
        let task = task.ok()?.path();
        match std::fs::read_to_string(task.join("children")) {
            Ok(list) => children.extend(
                list.split_whitespace()
                    .filter_map(|pid| pid.parse::<i32>().ok()),
            ),
            Err(_) if !task.exists() => {}
            Err(_) => return None,
        }
    }
    Some(children)
}

/// The live descendants of `leader`, found by their parent pids in
/// `/proc/<pid>/stat`, transitively: every process is read.
fn scanned_descendants(leader: Pid) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut children: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if let Some(ppid) = parent_of(pid) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut next = vec![leader.as_raw_pid()];
    while let Some(parent) = next.pop() {
        for &child in children.get(&parent).into_iter().flatten() {
            // A cycle cannot happen, but a pid reused mid-walk must not loop.
            if child != leader.as_raw_pid() && !found.contains(&child) {
                found.push(child);
                next.push(child);
            }
        }
    }
    found
}

/// The parent pid in `/proc/<pid>/stat` (`pid (comm) state ppid ...`; comm
/// may hold spaces and parentheses, so it ends at the last `)`).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    rest.split(' ').nth(1)?.parse().ok()
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The limits the child must not keep from healer, as they are to be set
/// in it: its soft limit of open files at most [`MAX_OPEN_FILES`] (healer
/// raises its own), and the hard limit of address space as its soft one (a
/// plugin worker runs under a lower soft limit, healer's `memory_limit`,
/// which must not cap a service a recovery starts). None when healer's own
/// already hold.
fn child_limits() -> Vec<(Resource, Rlimit)> {
    let mut limits = Vec::new();
    let files = getrlimit(Resource::Nofile);
    // `None` is unlimited.
    if files.current.is_none_or(|soft| soft > MAX_OPEN_FILES) {
        limits.push((
            Resource::Nofile,
            Rlimit {
                current: Some(MAX_OPEN_FILES),
                maximum: files.maximum,
            },
        ));
    }
    let space = getrlimit(Resource::As);
    if space.current != space.maximum {
        limits.push((
            Resource::As,
            Rlimit {
                current: space.maximum,
                maximum: space.maximum,
            },
        ));
    }
    limits
}

/// Where a started program's stdout and stderr go: two files read back
/// once it exited ([`Command::run`]), or `/dev/null` (`()`).
trait OutputFiles: Sized + Send + 'static {
    fn create() -> io::Result<Self>;
    /// stdout's and stderr's; None for `/dev/null`.
    fn files(&self) -> Option<(&File, &File)>;
}

impl OutputFiles for (File, File) {
    fn create() -> io::Result<Self> {
        Ok((tempfile::tempfile()?, tempfile::tempfile()?))
    }

    fn files(&self) -> Option<(&File, &File)> {
        Some((&self.0, &self.1))
    }
}

impl OutputFiles for () {
    fn create() -> io::Result<()> {
        Ok(())
    }

    fn files(&self) -> Option<(&File, &File)> {
        None
    }
}

fn output_file(error: io::Error) -> io::Error {
    io::Error::new(
        error.kind(),
        format!("cannot create a temporary file for its output: {error}"),
    )
}

/// The first `head` and last `tail` bytes of `file`, and its length.
fn read_bounded(file: &File, head: usize, tail: usize) -> (Vec<u8>, Vec<u8>, u64) {
    let len = file.metadata().map_or(0, |meta| meta.len());
    let head_len = len.min(head as u64);
    let tail_len = len.min(tail as u64);
    (
        read_at(file, 0, head_len as usize),
        read_at(file, len - tail_len, tail_len as usize),
        len,
    )
}

fn read_at(file: &File, offset: u64, len: usize) -> Vec<u8> {
    let mut buffer = vec![0; len];
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut buffer[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    buffer.truncate(filled);
    buffer
}

/// `text` without NULs, cut at [`MAX_ENV_VALUE`] bytes on a char boundary.
fn cut(text: &str) -> String {
    let mut end = text.len().min(MAX_ENV_VALUE);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].replace('\0', "")
}

/// `json` if it is at most [`MAX_ENV_VALUE`] bytes, else a valid summary.
fn bounded_json(json: &str) -> String {
    if json.len() <= MAX_ENV_VALUE {
        json.to_owned()
    } else {
        format!("{{\"truncated\":true,\"bytes\":{}}}", json.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::Finding;
    use rustix::process::setrlimit;
    use std::time::Instant;

    fn sh(script: &str) -> Command {
        Command::new("sh")
            .args(["-c", script])
            .timeout(Duration::from_secs(10))
    }

    fn recovery(details: serde_json::Value) -> Recovery {
        let mut finding = Finding::critical("http.status_5xx", "answered 503");
        finding.details = details;
        Recovery {
            target: "web".into(),
            finding,
            attempt: 2,
            params: serde_json::json!({"service": "web"}),
            fence: None,
        }
    }

    /// The pid a script wrote to `path`, waiting for it a bounded time.
    fn pid_in(path: &std::path::Path) -> u32 {
        let started = Instant::now();
        loop {
            if let Some(pid) = std::fs::read_to_string(path)
                .ok()
                .and_then(|text| text.trim().parse().ok())
            {
                return pid;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no pid written"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether `pid` is a live process (not gone, not a zombie).
    fn alive(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => !matches!(
                stat.rsplit_once(") ")
                    .and_then(|(_, rest)| rest.chars().next()),
                Some('Z' | 'X')
            ),
            Err(_) => false,
        }
    }

    fn gone_within(pid: u32, limit: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < limit {
            if !alive(pid) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn stdout_lines(output: &Output) -> Vec<String> {
        output.stdout_text().lines().map(str::to_owned).collect()
    }

    #[tokio::test]
    async fn the_environment_is_cleared_but_for_the_allowlist() {
        // std's `set_var` and its spawning share a lock; this test process
        // starts no thread that reads the environment through libc.
        std::env::set_var("HEALER_TEST_PARENT_SECRET", "hunter2");
        let env = BTreeMap::from([("EXTRA".to_owned(), "yes".to_owned())]);
        let output = Command::new("env")
            .env(&env)
            .recovery(&recovery(serde_json::json!({"code": 503})))
            .run()
            .await
            .unwrap();
        let lines = stdout_lines(&output);
        let names: Vec<&str> = lines
            .iter()
            .filter_map(|line| line.split_once('=').map(|(name, _)| name))
            .collect();
        assert!(!output.stdout_text().contains("hunter2"), "{lines:?}");
        assert!(lines.contains(&format!("PATH={PATH}")), "{lines:?}");
        assert!(lines.contains(&"EXTRA=yes".to_owned()), "{lines:?}");
        assert!(
            lines.contains(&"HEALER_DETAILS={\"code\":503}".to_owned()),
            "{lines:?}"
        );
        let mut expected = vec![
            "EXTRA",
            "HEALER_ATTEMPT",
            "HEALER_DETAILS",
            "HEALER_DETAILS_FILE",
            "HEALER_FINDING",
            "HEALER_PARAMS",
            "HEALER_SEVERITY",
            "HEALER_SUMMARY",
            "HEALER_TARGET",
            "PATH",
        ];
        if std::env::var_os("LANG").is_some() {
            expected.push("LANG");
        }
        let mut names = names;
        names.sort_unstable();
        expected.sort_unstable();
        assert_eq!(names, expected);
    }

    #[tokio::test]
    async fn the_configured_environment_may_override_path() {
        let env = BTreeMap::from([("PATH".to_owned(), "/opt/bin:/usr/bin:/bin".to_owned())]);
        let output = sh("echo $PATH").env(&env).run().await.unwrap();
        assert_eq!(output.stdout_text(), "/opt/bin:/usr/bin:/bin\n");
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild.pid");
        let script = format!("sleep 1000 & echo $! > {}; sleep 1000", pidfile.display());
        let started = Instant::now();
        let err = sh(&script)
            .timeout(Duration::from_secs(1))
            .run()
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(
            err.to_string(),
            "\"sh\" timed out after 1s (its process group was killed)"
        );
        let grandchild = pid_in(&pidfile);
        assert!(
            gone_within(grandchild, Duration::from_secs(5)),
            "the background sleep {grandchild} survived"
        );
    }

    // Multi-threaded: the test thread blocks (pid_in) while `run` goes on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_timeout_kills_a_descendant_that_left_the_group_with_setsid() {
        // The timeout must not fire before the test has seen the escaped
        // process run sleep in a session of its own (a busy machine may take
        // seconds to fork and exec): 10 s, well past that.
        const TIMEOUT: Duration = Duration::from_secs(10);
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("escaped.pid");
        let script = format!(
            "setsid sleep 1000 & echo $! > {}; sleep 1000",
            pidfile.display()
        );
        let running = tokio::spawn(sh(&script).timeout(TIMEOUT).run());
        let escaped = pid_in(&pidfile);
        // It really left: a session of its own (sid == its pid), running sleep.
        let started = Instant::now();
        while !std::fs::read_to_string(format!("/proc/{escaped}/stat"))
            .is_ok_and(|stat| stat.starts_with(&format!("{escaped} (sleep) ")))
        {
            assert!(
                !running.is_finished(),
                "the timeout fired before {escaped} ran sleep"
            );
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{escaped} never ran sleep"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let stat = std::fs::read_to_string(format!("/proc/{escaped}/stat")).unwrap();
        let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
        assert_eq!(
            fields[3],
            escaped.to_string(),
            "not a session leader: {stat}"
        );
        let err = tokio::time::timeout(TIMEOUT + REAP_AFTER_KILL + Duration::from_secs(5), running)
            .await
            .expect("run returned")
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, RunError::TimedOut { .. }), "{err}");
        assert!(
            gone_within(escaped, Duration::from_secs(5)),
            "the setsid sleep {escaped} survived"
        );
    }

    #[test]
    fn the_children_lists_are_walked_and_a_missing_list_falls_back_to_the_scan() {
        // 10 has threads 10 and 13; 12 is gone (its children went to the
        // subreaper); 16 lacks the lists (a kernel without them).
        let proc = tempfile::tempdir().unwrap();
        for (pid, tid, children) in [
            (10, 10, Some("11 12 ")),
            (10, 13, Some("14")),
            (11, 11, Some("")),
            (14, 14, Some("15\n")),
            (15, 15, Some("")),
            (16, 16, None),
        ] {
            let task = proc.path().join(format!("{pid}/task/{tid}"));
            std::fs::create_dir_all(&task).unwrap();
            if let Some(children) = children {
                std::fs::write(task.join("children"), children).unwrap();
            }
        }
        let mut found = listed_descendants(proc.path(), 10).unwrap();
        found.sort_unstable();
        assert_eq!(found, [11, 12, 14, 15]);
        assert_eq!(listed_descendants(proc.path(), 12), Some(Vec::new()));
        assert_eq!(listed_descendants(proc.path(), 16), None);
        std::fs::write(proc.path().join("15/task/15/children"), "16").unwrap();
        assert_eq!(listed_descendants(proc.path(), 10), None);
    }

    #[test]
    fn the_children_lists_find_what_the_scan_finds_and_all_of_it_is_killed() {
        use std::os::unix::process::CommandExt as _;
        // A background sleep, one in a session of its own, and a subshell
        // with a sleep of its own: four descendants, one a grandchild.
        let mut leader = std::process::Command::new("sh")
            .args([
                "-c",
                "sleep 1000 & setsid sleep 1000 & (sleep 1000 & wait) & wait",
            ])
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(leader.id() as i32).unwrap();
        let sleeping = |pids: &[i32]| {
            pids.iter()
                .filter(|pid| {
                    std::fs::read_to_string(format!("/proc/{pid}/comm"))
                        .is_ok_and(|comm| comm == "sleep\n")
                })
                .count()
        };
        let started = Instant::now();
        let mut scanned = scanned_descendants(pid);
        while scanned.len() < 4 || sleeping(&scanned) < 3 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "descendants never all started: {scanned:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
            scanned = scanned_descendants(pid);
        }
        let mut listed = listed_descendants(Path::new("/proc"), pid.as_raw_pid())
            .expect("this kernel lists children");
        listed.sort_unstable();
        scanned.sort_unstable();
        assert_eq!(listed, scanned);
        Group(Some(pid)).kill();
        let _ = leader.wait();
        for &descendant in &listed {
            assert!(
                gone_within(descendant as u32, Duration::from_secs(5)),
                "{descendant} survived"
            );
        }
    }

    #[tokio::test]
    async fn dropping_the_future_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild.pid");
        let script = format!("sleep 1000 & echo $! > {}; sleep 1000", pidfile.display());
        let mut running = Box::pin(sh(&script).timeout(Duration::from_secs(1000)).run());
        let started = Instant::now();
        let grandchild = loop {
            tokio::select! {
                finished = &mut running => panic!("the command finished: {finished:?}"),
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            if let Ok(Ok(pid)) = std::fs::read_to_string(&pidfile).map(|t| t.trim().parse()) {
                break pid;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no pid written"
            );
        };
        // The host drops a plugin call that passes its deadline.
        drop(running);
        assert!(
            gone_within(grandchild, Duration::from_secs(5)),
            "the background sleep {grandchild} survived"
        );
    }

    #[tokio::test]
    async fn dropping_the_future_while_the_program_starts_leaves_nothing_running() {
        // `run` starts the program on the blocking pool; dropped right
        // after its first poll, the start goes on there and what it
        // started must still be killed.
        let token = format!("1000.{}", std::process::id());
        let script = format!("sleep {token} & exec sleep {token}");
        let mut running = Box::pin(sh(&script).timeout(Duration::from_secs(1000)).run());
        let first = futures_poll_once(running.as_mut()).await;
        assert!(first.is_none(), "finished at once: {first:?}");
        drop(running);
        // Long enough for the start to have happened on a busy machine.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let started = Instant::now();
        loop {
            let left = with_argument(&token);
            if left.is_empty() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "still running: {left:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls `future` once: its output if it was ready.
    async fn futures_poll_once<F: std::future::Future + Unpin>(mut future: F) -> Option<F::Output> {
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut future).poll(cx) {
                std::task::Poll::Ready(output) => Some(output),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }

    /// The live processes with `argument` on their command line.
    fn with_argument(argument: &str) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                    cmdline
                        .split(|&byte| byte == 0)
                        .any(|arg| arg == argument.as_bytes())
                })
            })
            .filter(|&pid| alive(pid))
            .collect()
    }

    #[tokio::test]
    async fn a_normal_exit_leaves_a_started_daemon_running_and_does_not_wait_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("daemon.pid");
        // The daemon keeps stdout and stderr open: with pipes, this would
        // wait for it.
        let script = format!("sleep 30 & echo $! > {}; echo started", pidfile.display());
        let started = Instant::now();
        let output = sh(&script).run().await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(output.code, 0);
        assert_eq!(output.stdout_text(), "started\n");
        let daemon = pid_in(&pidfile);
        assert!(alive(daemon), "the daemon {daemon} was killed");
        let _ = rustix::process::kill_process(Pid::from_raw(daemon as i32).unwrap(), Signal::KILL);
    }

    #[tokio::test]
    async fn the_child_gets_at_most_1024_open_files_though_healer_has_more() {
        // As healer does at start-up: the soft limit up to the hard one.
        let hard = getrlimit(Resource::Nofile).maximum;
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: hard,
                maximum: hard,
            },
        )
        .unwrap();
        let expected = hard.map_or(MAX_OPEN_FILES, |hard| hard.min(MAX_OPEN_FILES));
        let output = sh("ulimit -n").run().await.unwrap();
        let soft: u64 = output.stdout_text().trim().parse().unwrap();
        assert!(soft <= MAX_OPEN_FILES, "the child's soft limit is {soft}");
        assert_eq!(soft, expected, "hard limit {hard:?}");
    }

    #[tokio::test]
    async fn a_hundred_megabytes_of_output_are_captured_bounded() {
        let output = sh("head -c 100000000 /dev/zero; printf 'the end' >&2; printf 'last'")
            .run()
            .await
            .unwrap();
        assert_eq!(output.stdout_bytes, 100_000_004);
        assert_eq!(output.stdout_head.len(), STDOUT_HEAD);
        assert_eq!(output.stdout_tail.len(), OUTPUT_TAIL);
        assert!(output.stdout_tail.ends_with(b"last"));
        assert!(output.stdout_cut());
        assert_eq!(output.stderr_bytes, 7);
        assert_eq!(output.last_stderr_line().as_deref(), Some("the end"));
    }

    #[tokio::test]
    async fn the_details_file_holds_the_full_details_and_is_removed_after() {
        let big = "x".repeat(10_000);
        let recovery = recovery(serde_json::json!({ "big": big }));
        let output = sh(r#"echo "$HEALER_DETAILS_FILE"; stat -c %a "$HEALER_DETAILS_FILE"; echo "$HEALER_DETAILS"; cat "$HEALER_DETAILS_FILE""#)
            .recovery(&recovery)
            .run()
            .await
            .unwrap();
        let lines = stdout_lines(&output);
        assert_eq!(lines[1], "600");
        let full = recovery.finding.details.to_string();
        assert_eq!(
            lines[2],
            format!("{{\"truncated\":true,\"bytes\":{}}}", full.len())
        );
        assert!(serde_json::from_str::<serde_json::Value>(&lines[2]).is_ok());
        assert_eq!(lines[3], full);
        assert!(
            !std::path::Path::new(&lines[0]).exists(),
            "{} was left behind",
            lines[0]
        );
    }

    #[tokio::test]
    async fn long_values_are_cut_at_4_kib() {
        let mut recovery = recovery(serde_json::Value::Null);
        recovery.finding.summary = "é".repeat(5000);
        let output = sh(r#"printf %s "$HEALER_SUMMARY" | wc -c; echo "$HEALER_DETAILS""#)
            .recovery(&recovery)
            .run()
            .await
            .unwrap();
        assert_eq!(stdout_lines(&output), ["4096", "null"]);
    }

    #[tokio::test]
    async fn errors_are_one_line_naming_the_program() {
        let missing = Command::new("/nonexistent/program")
            .run()
            .await
            .unwrap_err();
        assert!(
            missing
                .to_string()
                .starts_with("cannot start \"/nonexistent/program\": No such file"),
            "{missing}"
        );
        let killed = sh("kill -9 $$").run().await.unwrap_err();
        assert_eq!(killed.to_string(), "\"sh\" was killed by signal 9");
        let failed = sh("echo first >&2; echo 'disk full' >&2; echo >&2; exit 3")
            .run()
            .await
            .unwrap();
        assert_eq!(failed.code, 3);
        assert_eq!(failed.last_stderr_line().as_deref(), Some("disk full"));
    }

    #[tokio::test]
    async fn a_missing_working_directory_is_named_in_the_error() {
        let err = sh("true").cwd("/nonexistent/dir").run().await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot start \"sh\": No such file or directory (os error 2) (cwd /nonexistent/dir)"
        );
    }

    #[tokio::test]
    async fn the_program_is_found_past_a_file_in_path_it_may_not_execute_and_a_script_without_hash_bang_runs_in_sh(
    ) {
        use std::os::unix::fs::PermissionsExt as _;
        let (denied, allowed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let write = |dir: &Path, mode: u32| {
            let file = dir.join("healer-test-tool");
            std::fs::write(&file, "echo \"ran $0 $1\"\n").unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            file
        };
        write(denied.path(), 0o644);
        let tool = write(allowed.path(), 0o755);
        let path = format!("{}:{}", denied.path().display(), allowed.path().display());
        let env = BTreeMap::from([("PATH".to_owned(), path)]);
        let output = Command::new("healer-test-tool")
            .args(["first"])
            .env(&env)
            .run()
            .await
            .unwrap();
        assert_eq!(
            output.stdout_text(),
            format!("ran {} first\n", tool.display())
        );
        // Only the one it may not execute: EACCES, as `execvp` says.
        let only_denied =
            BTreeMap::from([("PATH".to_owned(), denied.path().display().to_string())]);
        let err = Command::new("healer-test-tool")
            .env(&only_denied)
            .run()
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot start \"healer-test-tool\": Permission denied"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn the_child_starts_with_no_signal_blocked_and_sigpipe_not_ignored() {
        // This test binary ignores SIGPIPE, as every Rust program does; and
        // the thread that starts the child inherits SIGUSR2 blocked from
        // this one, which spawns it.
        // SAFETY: plain values; only this test's thread's mask changes.
        unsafe {
            let mut usr2: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut usr2);
            libc::sigaddset(&mut usr2, libc::SIGUSR2);
            libc::pthread_sigmask(libc::SIG_BLOCK, &usr2, std::ptr::null_mut());
        }
        let output = Command::new("grep")
            .args(["-E", "^Sig(Blk|Ign)", "/proc/self/status"])
            .run()
            .await
            .unwrap();
        let text = output.stdout_text();
        let mask = |name: &str| {
            let line = text.lines().find(|l| l.starts_with(name)).unwrap();
            u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
        };
        assert_eq!(mask("SigBlk:"), 0, "{text}");
        assert_eq!(mask("SigIgn:") & (1 << (libc::SIGPIPE - 1)), 0, "{text}");
    }

    #[test]
    fn a_transient_service_is_asked_of_systemd_run_with_only_the_configured_environment() {
        let env = BTreeMap::from([("MODE".to_owned(), "prod".to_owned())]);
        let command = Command::new("/usr/bin/myapp")
            .args(["--foreground", "--port=8080"])
            .env(&env)
            .cwd("/srv/myapp")
            .recovery(&recovery(serde_json::json!({"code": 503})))
            .systemd_run("myapp");
        let (program, args) = command.argv();
        assert_eq!(program, "systemd-run");
        assert_eq!(
            args,
            [
                "--unit=myapp.service",
                "--collect",
                "--quiet",
                "--service-type=exec",
                "--working-directory=/srv/myapp",
                "--setenv=MODE=prod",
                "--",
                "/usr/bin/myapp",
                "--foreground",
                "--port=8080",
            ]
        );
        // Without it, the program itself.
        let plain = Command::new("/usr/bin/myapp").args(["-f"]);
        assert_eq!(plain.argv(), ("/usr/bin/myapp", vec!["-f".to_owned()]));
    }

    #[tokio::test]
    async fn a_missing_systemd_run_is_one_line_saying_what_is_needed() {
        let nowhere = tempfile::tempdir().unwrap();
        let env = BTreeMap::from([("PATH".to_owned(), nowhere.path().display().to_string())]);
        let err = Command::new("/usr/bin/myapp")
            .env(&env)
            .systemd_run("myapp.service")
            .run()
            .await
            .unwrap_err();
        let err = err.to_string();
        assert!(
            err.starts_with("cannot start \"systemd-run\": No such file or directory"),
            "{err}"
        );
        assert!(
            err.ends_with("starting myapp.service needs systemd's systemd-run in PATH (`apt install systemd`), and systemd as PID 1"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }

    #[tokio::test]
    async fn a_transient_service_is_never_detached_by_healer() {
        let err = Command::new("sleep")
            .args(["30"])
            .systemd_run("sleeper")
            .start_detached(Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("sleeper.service is a systemd service: systemd starts it (run)"),
            "{err}"
        );
    }

    #[test]
    fn service_names_follow_systemds_rule() {
        assert_eq!(service_name("myapp").unwrap(), "myapp.service");
        assert_eq!(
            service_name("my-app_2:x.y").unwrap(),
            "my-app_2:x.y.service"
        );
        assert_eq!(service_name("myapp.service").unwrap(), "myapp.service");
        assert_eq!(
            service_name("my app").unwrap_err(),
            "\"my app\" is no service name: ' ' is not allowed (letters, digits and :_.-\\ only)"
        );
        assert!(service_name("app@1")
            .unwrap_err()
            .contains("'@' is not allowed"));
        assert!(service_name("").unwrap_err().contains("it is empty"));
        assert!(service_name(".service")
            .unwrap_err()
            .contains("it is empty"));
        assert!(service_name("-x")
            .unwrap_err()
            .contains("starts with \"-\""));
        assert!(service_name(&"a".repeat(247)).is_ok());
        assert!(service_name(&"a".repeat(248))
            .unwrap_err()
            .contains("longer than 255 bytes"));
    }

    #[tokio::test]
    async fn a_detached_command_is_left_running_after_its_grace() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("daemon.pid");
        let script = format!("echo $$ > {}; exec sleep 30", pidfile.display());
        let pid = sh(&script)
            .start_detached(Duration::from_millis(200))
            .await
            .unwrap();
        assert_eq!(pid, pid_in(&pidfile));
        assert!(alive(pid));
        let _ = rustix::process::kill_process(Pid::from_raw(pid as i32).unwrap(), Signal::KILL);
        let early = sh("exit 1")
            .start_detached(Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(
            early.to_string(),
            "\"sh\" exited within 5s (exit status: 1)"
        );
    }
}
