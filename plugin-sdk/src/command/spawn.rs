//! Starting a program without copying the plugin worker: the child is a
//! `clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD)` of the calling thread, as
//! in glibc's `posix_spawn`. It borrows the parent's memory (the parent
//! thread waits) until it has executed the program or failed to, so
//! nothing is copied, however large the worker's address space; and unlike
//! `posix_spawn`, it can set resource limits on the way. What it does is
//! prepared in the parent ([`Plan`]: every string, every pointer, the PATH
//! candidates): the child makes system calls only, none of which allocates
//! or takes a lock.
//!
//! The child is waited for through the pidfd the clone returned (readable
//! once it exited), and reaped by its pid; never with `waitpid(-1)`, so the
//! host's reaper and other children are left alone. A [`Child`] dropped
//! before it was reaped is reaped later, on the runtime, as tokio does with
//! its orphans.

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, c_void, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::ExitStatus;
use std::ptr;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use rustix::process::{setrlimit, waitpid, Pid, Resource, Rlimit, WaitOptions};
use tokio::io::unix::AsyncFd;

use crate::events::register;

/// What to start: the program, looked up in the `PATH` of `env` unless it
/// holds a `/`, with exactly `env` as its environment.
pub(super) struct Program<'a> {
    pub program: &'a str,
    pub args: &'a [String],
    pub env: &'a BTreeMap<OsString, OsString>,
    pub cwd: Option<&'a Path>,
    /// stdin, stdout and stderr.
    pub stdio: [BorrowedFd<'a>; 3],
    /// Set in the child (failures ignored: it then runs with the parent's).
    pub limits: &'a [(Resource, Rlimit)],
}

/// The shell a program without `#!` is run with when `execve` says
/// ENOEXEC, as `execvp` does.
const SHELL: &str = "/bin/sh";

/// The child's stack: it makes a few system calls, no more.
const STACK: usize = 64 * 1024;

/// Starts `program` in a new process group of its own (pgid = its pid). An
/// error is why it could not be: the child's errno from `chdir` or
/// `execve` (ENOENT, EACCES, ...), or the parent's.
pub(super) fn spawn(program: &Program<'_>) -> io::Result<Child> {
    let strings = Strings::of(program)?;
    // A descriptor among 0-2 could be replaced by the child's own dup2
    // before it is copied: such ones are copied above 2 first.
    let mut raised = Vec::new();
    let mut stdio = program.stdio.map(|fd| fd.as_raw_fd());
    for (fd, borrowed) in stdio.iter_mut().zip(program.stdio) {
        if *fd <= libc::STDERR_FILENO {
            let copy = rustix::io::fcntl_dupfd_cloexec(borrowed, libc::STDERR_FILENO + 1)?;
            *fd = copy.as_raw_fd();
            raised.push(copy);
        }
    }
    let mut plan = strings.plan(stdio, program.limits);
    let stack = Stack::new()?;
    let mut pidfd: c_int = -1;
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD;
    let pid = {
        // No handler of healer's may run in the child (it shares healer's
        // memory): every signal glibc lets a program block is blocked
        // across the clone (not its own two, 32 and 33, which healer never
        // raises: no thread is cancelled, no id changed), and the child
        // resets every handler before it unblocks them all.
        let _blocked = BlockedSignals::all(&mut plan.mask)?;
        // SAFETY: `child` runs on `stack`, which outlives the call; with
        // CLONE_VFORK this thread is suspended until the child has executed
        // a program or exited, so `plan` and the strings it points into
        // stay alive and untouched by us meanwhile, and the child is the
        // only one touching them. `pidfd` is where the kernel writes the
        // pidfd (CLONE_PIDFD puts it at the parent_tid argument).
        let pid = unsafe {
            libc::clone(
                child,
                stack.top(),
                flags,
                ptr::addr_of_mut!(plan).cast::<c_void>(),
                ptr::addr_of_mut!(pidfd),
            )
        };
        if pid == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
            // A kernel (or an emulation of one) that refuses CLONE_PIDFD
            // instead of ignoring it: the child is then polled.
            // SAFETY: as above; nothing was started by the refused call.
            unsafe {
                libc::clone(
                    child,
                    stack.top(),
                    flags & !libc::CLONE_PIDFD,
                    ptr::addr_of_mut!(plan).cast::<c_void>(),
                    ptr::addr_of_mut!(pidfd),
                )
            }
        } else {
            pid
        }
    };
    if pid == -1 {
        return Err(io::Error::last_os_error());
    }
    // A kernel before 5.2 ignores CLONE_PIDFD: the child is then polled.
    let pidfd = (pidfd >= 0).then(|| {
        // SAFETY: the kernel just opened it for us (close-on-exec), and
        // nothing else owns it.
        unsafe { OwnedFd::from_raw_fd(pidfd) }
    });
    let mut child = Child {
        pid,
        pidfd: pidfd.map(Pidfd::Plain),
        status: None,
        reap_on_drop: true,
    };
    match plan.error.load(Ordering::Acquire) {
        0 => Ok(child),
        errno => {
            // It has exited (127) by now, or is about to: reap it here.
            child.reap_blocking();
            Err(io::Error::from_raw_os_error(errno))
        }
    }
}

/// The C strings of a [`Program`], owned by the parent while the child
/// reads them through a [`Plan`].
struct Strings {
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: Option<CString>,
    /// Where `execve` is tried, in order.
    candidates: Vec<CString>,
    shell: CString,
}

impl Strings {
    fn of(program: &Program<'_>) -> io::Result<Strings> {
        let argv = std::iter::once(program.program)
            .chain(program.args.iter().map(String::as_str))
            .map(|arg| c_string(arg.as_bytes()))
            .collect::<io::Result<Vec<_>>>()?;
        let envp = program
            .env
            .iter()
            .map(|(name, value)| {
                let mut pair = name.as_bytes().to_vec();
                pair.push(b'=');
                pair.extend_from_slice(value.as_bytes());
                c_string(&pair)
            })
            .collect::<io::Result<Vec<_>>>()?;
        let cwd = program
            .cwd
            .map(|cwd| c_string(cwd.as_os_str().as_bytes()))
            .transpose()?;
        let path = program.env.get(OsStr::new("PATH"));
        let candidates = candidates(program.program, path.map(|p| p.as_bytes()))?;
        Ok(Strings {
            argv,
            envp,
            cwd,
            candidates,
            shell: c_string(SHELL.as_bytes())?,
        })
    }

    /// The pointers the child uses; they point into `self`.
    fn plan(&self, stdio: [RawFd; 3], limits: &[(Resource, Rlimit)]) -> Plan {
        let pointers = |strings: &[CString]| -> Vec<*const c_char> {
            strings
                .iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(ptr::null()))
                .collect()
        };
        // `sh FILE ARGS...`, FILE filled in by the child.
        let mut script = vec![self.shell.as_ptr(), ptr::null()];
        script.extend(self.argv[1..].iter().map(|arg| arg.as_ptr()));
        script.push(ptr::null());
        Plan {
            stdio,
            cwd: self.cwd.as_ref().map_or(ptr::null(), |cwd| cwd.as_ptr()),
            limits: limits.to_vec(),
            candidates: self.candidates.iter().map(|c| c.as_ptr()).collect(),
            argv: pointers(&self.argv),
            envp: pointers(&self.envp),
            script,
            shell: self.shell.as_ptr(),
            // SAFETY: an all-zero sigset_t is a valid (empty) set; it is
            // overwritten with the parent's mask before the clone.
            mask: unsafe { std::mem::zeroed() },
            error: AtomicI32::new(0),
        }
    }
}

fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "nul byte found in provided data",
        )
    })
}

/// Where `execvp` would look for `program`: itself if it holds a `/`, else
/// each directory of `path` (an empty one is the working directory).
fn candidates(program: &str, path: Option<&[u8]>) -> io::Result<Vec<CString>> {
    if program.is_empty() {
        return Err(io::Error::from_raw_os_error(libc::ENOENT));
    }
    if program.contains('/') {
        return Ok(vec![c_string(program.as_bytes())?]);
    }
    // glibc's `execvp` default, for an environment without PATH.
    let path = path.unwrap_or(b"/bin:/usr/bin");
    path.split(|&byte| byte == b':')
        .map(|dir| {
            let mut candidate = dir.to_vec();
            if !dir.is_empty() {
                candidate.push(b'/');
            }
            candidate.extend_from_slice(program.as_bytes());
            c_string(&candidate)
        })
        .collect()
}

/// Everything the child does, prepared: plain values and pointers into a
/// [`Strings`] the parent keeps alive.
struct Plan {
    stdio: [RawFd; 3],
    /// Null for none.
    cwd: *const c_char,
    limits: Vec<(Resource, Rlimit)>,
    candidates: Vec<*const c_char>,
    /// Null-terminated.
    argv: Vec<*const c_char>,
    /// Null-terminated.
    envp: Vec<*const c_char>,
    /// `[SHELL, (the candidate), argv[1..], null]`.
    script: Vec<*const c_char>,
    shell: *const c_char,
    /// The parent's signal mask, restored once the child has executed.
    mask: libc::sigset_t,
    /// The child's errno when it could not execute the program; 0 if it did.
    error: AtomicI32,
}

/// The child: runs on its own stack in the parent's memory, makes system
/// calls only, and ends in `execve` or `_exit`.
extern "C" fn child(plan: *mut c_void) -> c_int {
    // SAFETY: `plan` is the parent's `Plan`, alive and not touched by the
    // parent until this child has executed a program or exited (CLONE_VFORK).
    // Only async-signal-safe calls follow, and nothing that allocates,
    // locks or panics.
    unsafe {
        let plan = &mut *plan.cast::<Plan>();
        let errno = prepare_and_execute(plan);
        plan.error.store(errno, Ordering::Release);
        libc::_exit(127)
    }
}

/// The child's work; returns only on failure, with the errno.
///
/// # Safety
/// Only in the child of [`spawn`], with its `Plan`.
unsafe fn prepare_and_execute(plan: &mut Plan) -> c_int {
    // Each source is above 2 (see `spawn`): dup2 copies, never a no-op
    // that would leave the close-on-exec flag set.
    for (target, &fd) in (0..).zip(plan.stdio.iter()) {
        if libc::dup2(fd, target) == -1 {
            return errno();
        }
    }
    if !plan.cwd.is_null() && libc::chdir(plan.cwd) == -1 {
        return errno();
    }
    if libc::setpgid(0, 0) == -1 {
        return errno();
    }
    for (resource, limit) in &plan.limits {
        // Failing, the child runs with the parent's limit.
        let _ = setrlimit(*resource, *limit);
    }
    reset_signals();
    let mut denied = false;
    let mut error = libc::ENOENT;
    for &candidate in &plan.candidates {
        libc::execve(candidate, plan.argv.as_ptr(), plan.envp.as_ptr());
        error = errno();
        if error == libc::ENOEXEC {
            // No `#!`: a shell script, as `execvp` runs it.
            if let Some(file) = plan.script.get_mut(1) {
                *file = candidate;
            }
            libc::execve(plan.shell, plan.script.as_ptr(), plan.envp.as_ptr());
            error = errno();
        }
        // As `execvp`: not there, try the next; denied, try the next and
        // say so if none is found; anything else ends the search.
        match error {
            libc::EACCES => denied = true,
            libc::ENOENT | libc::ESTALE | libc::ENOTDIR | libc::ENODEV | libc::ETIMEDOUT => {}
            _ => return error,
        }
    }
    if denied {
        libc::EACCES
    } else {
        error
    }
}

/// Every caught signal back to its default action, SIGPIPE too (healer
/// ignores it; a program expects it to kill), ignored ones left ignored;
/// then no signal blocked (as std gives a child: a signal the spawning
/// thread blocked, such as SIGTERM, must not stay blocked in a service).
///
/// # Safety
/// Only in the child of [`spawn`].
unsafe fn reset_signals() {
    let mut default: libc::sigaction = std::mem::zeroed();
    default.sa_sigaction = libc::SIG_DFL;
    let mut current: libc::sigaction = std::mem::zeroed();
    // Linux numbers its signals 1 to 64; glibc refuses its own (32, 33).
    for signal in 1..=64 {
        if libc::sigaction(signal, ptr::null(), &mut current) != 0 {
            continue;
        }
        let handled =
            current.sa_sigaction != libc::SIG_DFL && current.sa_sigaction != libc::SIG_IGN;
        if handled || signal == libc::SIGPIPE {
            libc::sigaction(signal, &default, ptr::null_mut());
        }
    }
    let mut none: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut none);
    libc::sigprocmask(libc::SIG_SETMASK, &none, ptr::null_mut());
}

fn errno() -> c_int {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// The calling thread's signals all blocked until dropped, when its mask
/// is restored.
struct BlockedSignals {
    old: libc::sigset_t,
}

impl BlockedSignals {
    /// Blocks all; `old` gets the mask before.
    fn all(old: &mut libc::sigset_t) -> io::Result<BlockedSignals> {
        // SAFETY: plain calls on sigset_t values we own.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            let failed = libc::pthread_sigmask(libc::SIG_SETMASK, &all, old);
            if failed != 0 {
                return Err(io::Error::from_raw_os_error(failed));
            }
        }
        Ok(BlockedSignals { old: *old })
    }
}

impl Drop for BlockedSignals {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `all`.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, ptr::null_mut());
        }
    }
}

/// The child's stack: mapped for one spawn, with a guard page below it.
struct Stack {
    base: *mut c_void,
    len: usize,
}

impl Stack {
    fn new() -> io::Result<Stack> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .ok()
            .filter(|&page| page > 0)
            .unwrap_or(4096);
        let len = STACK + page;
        // SAFETY: a new private anonymous mapping; nothing else refers to it.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = Stack { base, len };
        // The stack grows down: an overflow faults on the lowest page
        // instead of writing over the parent's memory.
        // SAFETY: the first page of the mapping just made.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The initial stack pointer, 16-byte aligned.
    fn top(&self) -> *mut c_void {
        let top = self.base as usize + self.len;
        (top & !15) as *mut c_void
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping `new` made, used by no one any more: the
        // child has executed a program or exited.
        unsafe {
            libc::munmap(self.base, self.len);
        }
    }
}

/// A started program until it is reaped.
pub(super) struct Child {
    pid: c_int,
    /// None on a kernel without CLONE_PIDFD, or one whose pidfds cannot
    /// be watched with epoll (before 5.3): the child is polled (this needs
    /// a Tokio runtime with its I/O and time drivers, as the SDK's is).
    pidfd: Option<Pidfd>,
    status: Option<ExitStatus>,
    /// Whether dropping it before it was reaped hands it to a reaping task
    /// (not for the task's own).
    reap_on_drop: bool,
}

enum Pidfd {
    Plain(OwnedFd),
    Watched(AsyncFd<OwnedFd>),
}

/// How often a child is polled without a watched pidfd.
const POLL: Duration = Duration::from_millis(10);

impl Child {
    /// Its pid, which is also its process group's id.
    pub(super) fn id(&self) -> u32 {
        self.pid.unsigned_abs()
    }

    /// Waits until it exits and reaps it. Cancel-safe: a later call goes on.
    pub(super) async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            if let Some(Pidfd::Plain(_)) = self.pidfd {
                if let Some(Pidfd::Plain(fd)) = self.pidfd.take() {
                    // Not watched (no I/O driver): polled.
                    self.pidfd = register(fd).ok().map(Pidfd::Watched);
                }
            }
            let Some(Pidfd::Watched(fd)) = &self.pidfd else {
                tokio::time::sleep(POLL).await;
                continue;
            };
            // A pidfd is readable once its process exited.
            let mut ready = fd.readable().await?;
            match reap(self.pid)? {
                Some(status) => {
                    self.status = Some(status);
                    return Ok(status);
                }
                None => ready.clear_ready(),
            }
        }
    }

    /// Reaps it if it exited.
    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = reap(self.pid)?;
        }
        Ok(self.status)
    }

    /// Waits for it on this thread (it exited or is about to).
    fn reap_blocking(&mut self) {
        if let Some(pid) = Pid::from_raw(self.pid) {
            if let Ok(Some((_, status))) = waitpid(Some(pid), WaitOptions::empty()) {
                self.status = Some(ExitStatus::from_raw(status.as_raw()));
            }
        }
    }
}

/// The status of the child `pid` if it exited, which reaps it.
fn reap(pid: c_int) -> io::Result<Option<ExitStatus>> {
    let pid = Pid::from_raw(pid).ok_or_else(|| io::Error::from_raw_os_error(libc::ECHILD))?;
    Ok(waitpid(Some(pid), WaitOptions::NOHANG)?
        .map(|(_, status)| ExitStatus::from_raw(status.as_raw())))
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reap_on_drop || matches!(self.try_wait(), Ok(Some(_)) | Err(_)) {
            return;
        }
        let mut orphan = Child {
            pid: self.pid,
            pidfd: self.pidfd.take(),
            status: None,
            reap_on_drop: false,
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let _ = orphan.wait().await;
                });
            }
            // No runtime (it is shutting down): a thread waits instead.
            Err(_) => {
                let _ = std::thread::Builder::new()
                    .name("healer-reap".into())
                    .spawn(move || orphan.reap_blocking());
            }
        }
    }
}
