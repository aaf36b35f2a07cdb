//! The `process` monitor. It says "not running" (CRITICAL) only on evidence:
//! the pidfile does not exist, or no process (or only a zombie) has the pid
//! or matches. When healer cannot look (the pidfile or `/proc` cannot be
//! read: EMFILE, EACCES, ...), the check is UNKNOWN, never CRITICAL.
//!
//! The same holds for what its exit watcher pushes: the exit of the watched
//! process is evidence that *that* process is gone, not that the service is
//! down. So the watcher looks again, as a check does, and pushes what is
//! true at that moment: CRITICAL when nothing runs, OK when another process
//! already does (then watched instead), nothing when it cannot tell.
//!
//! A process stopped (state `T` or `t`: SIGSTOP, a tracer) exists but does
//! nothing; no pidfd tells a stop. A check that finds the process stopped
//! notes since when; once it has been stopped for `stopped_for`, a check
//! says CRITICAL `stopped`, and the watcher does not wait for that check:
//! it looks again at the moment the first sighting plus `stopped_for` has
//! passed, and pushes what it sees.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use healer_plugin_sdk::events::watch_process_exit;
use healer_plugin_sdk::tokio::sync::watch;
use healer_plugin_sdk::{tokio, Duration, Error, Monitor, Observation, Push, Status};
use regex::Regex;
use serde::Deserialize;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use crate::proc::Proc;

/// Options of the `process` monitor.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// A file holding the pid (first line).
    pidfile: Option<PathBuf>,
    /// The process name (as in `ps -o comm`).
    name: Option<String>,
    /// A regex on the full command line.
    cmdline: Option<String>,
    /// Push an observation the moment the process exits.
    #[serde(default = "yes")]
    watch: bool,
    /// CRITICAL (`process.stopped`) once the process has been stopped
    /// this long; zero: never.
    #[serde(default = "default_stopped_for")]
    stopped_for: Duration,
}

fn yes() -> bool {
    true
}

fn default_stopped_for() -> Duration {
    Duration::from_secs(5)
}

enum Find {
    Pidfile(PathBuf),
    Name(String),
    Cmdline(Regex),
}

/// The process watched: its pid, and whether it was the only match (only
/// then does its exit mean "not running").
type Watched = Option<(u32, bool)>;

/// The process seen stopped, and when a check first saw it so in this
/// stop.
type Stopped = Option<(u32, Instant)>;

/// Watches one process.
pub struct ProcessMonitor {
    /// How the process is found: the checks and the exit watcher look the
    /// same way.
    finder: Arc<Finder>,
    watch: bool,
    /// The process last seen running, for the exit watcher.
    current: Arc<watch::Sender<Watched>>,
}

/// Finds the process and reads its figures.
struct Finder {
    find: Find,
    proc: Proc,
    /// Keeps the CPU time each process had at the last look (CPU use is the
    /// difference).
    system: Mutex<System>,
    /// How long a stop lasts before it is CRITICAL; `None`: never.
    stopped_for: Option<std::time::Duration>,
    /// The stop seen now, for the checks and the watcher's timer.
    stopped: watch::Sender<Stopped>,
    /// The pid last seen running (0: none yet), and how many times another
    /// took its place since this monitor started: the `process.restarts`
    /// fact.
    last_pid: AtomicU32,
    restarts: AtomicU64,
}

impl Monitor for ProcessMonitor {
    type Config = Config;
    const NAME: &'static str = "process";
    const DESCRIPTION: &'static str =
        "finds a process by pidfile, name or command line; pushes the moment it exits";
    const SAMPLE_CONFIG: &'static str = r#"pidfile = "/run/nginx.pid"  # one of pidfile, name, cmdline
# name = "nginx"                # process name (comm)
# cmdline = "gunicorn .*app"    # regex on the full command line
watch = true                    # push an observation the moment it exits (pidfd)
stopped_for = "5s"              # CRITICAL process.stopped once stopped (state T) this long; "0s": never
"#;

    fn new(config: Config) -> Result<Self, Error> {
        let find = match (config.pidfile, config.name, config.cmdline) {
            (Some(pidfile), None, None) => Find::Pidfile(pidfile),
            (None, Some(name), None) => Find::Name(name),
            (None, None, Some(cmdline)) => Find::Cmdline(
                Regex::new(&cmdline).map_err(|e| format!("invalid `cmdline` regex: {e}"))?,
            ),
            _ => return Err("give exactly one of `pidfile`, `name`, `cmdline`".into()),
        };
        let system = System::new().map_err(|e| format!("cannot read the process table: {e}"))?;
        let (current, _) = watch::channel(None);
        let (stopped, _) = watch::channel(None);
        let stopped_for = Some(std::time::Duration::from(config.stopped_for))
            .filter(|stopped_for| !stopped_for.is_zero());
        Ok(ProcessMonitor {
            finder: Arc::new(Finder {
                find,
                proc: Proc::new(),
                system: Mutex::new(system),
                stopped_for,
                stopped,
                last_pid: AtomicU32::new(0),
                restarts: AtomicU64::new(0),
            }),
            watch: config.watch,
            current: Arc::new(current),
        })
    }

    async fn check(&mut self) -> Result<Observation, Error> {
        Ok(self.look())
    }

    fn watch(&mut self, push: Push) {
        if !self.watch {
            return;
        }
        let mut current = self.current.subscribe();
        let mut stopped = self.finder.stopped.subscribe();
        let watching = Arc::clone(&self.current);
        let finder = Arc::clone(&self.finder);
        tokio::spawn(async move {
            // The stop the timer last looked at: one look per stop.
            let mut looked_at: Stopped = None;
            loop {
                let watched = *current.borrow_and_update();
                let exited = async {
                    match watched {
                        Some((pid, _)) => watch_process_exit(pid).await,
                        None => std::future::pending().await,
                    }
                };
                // A stop a check saw is CRITICAL at its first sighting plus
                // `stopped_for`: look then, not at the next check.
                let stop = *stopped.borrow_and_update();
                let due = match (stop, finder.stopped_for) {
                    (Some((_, since)), Some(limit)) if stop != looked_at => Some(since + limit),
                    _ => None,
                };
                let stop_due = async move {
                    match due {
                        Some(due) => tokio::time::sleep_until(due.into()).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    // An exit first, even when a check has meanwhile moved
                    // on to another pid: whether it still counts is told
                    // against the pid current now.
                    biased;
                    // `Err`: the process could not be watched (no pidfd:
                    // EMFILE, ...). That is no exit; `exit_news` looks in
                    // /proc.
                    _watched = exited => {
                        let Some((pid, alone)) = watched else { continue };
                        match finder.exit_news(&watching, pid, alone) {
                            News::Push(seen) => {
                                if !push.send(seen) && push.is_closed() {
                                    return;
                                }
                            }
                            News::Nothing => {}
                            // Watch the same pid again after a while (a
                            // pid that is gone fires at once); the
                            // scheduled checks go on meanwhile.
                            News::LookAgain => tokio::select! {
                                changed = current.changed() => if changed.is_err() { return },
                                () = tokio::time::sleep(RETRY_WATCH) => {}
                            },
                        }
                    }
                    () = stop_due => {
                        looked_at = stop;
                        let seen = look_and_watch(&finder, &watching);
                        if is_stopped(&seen) && !push.send(seen) && push.is_closed() {
                            return;
                        }
                    }
                    changed = current.changed() => if changed.is_err() { return },
                    changed = stopped.changed() => if changed.is_err() { return },
                }
            }
        });
    }
}

/// Whether `seen` says the process has been stopped too long.
fn is_stopped(seen: &Observation) -> bool {
    seen.status == Status::Critical && seen.details.get("stopped") == Some(&true.into())
}

/// One look for the process, as a check reports it: the process found
/// running is watched from now on, and none on evidence that nothing runs
/// (while UNKNOWN, an exit of the pid last seen is still news).
fn look_and_watch(finder: &Finder, current: &watch::Sender<Watched>) -> Observation {
    let (seen, running) = finder.look();
    match running {
        Some(running) => {
            current.send_if_modified(|current| current.replace(running) != Some(running));
        }
        None if seen.status == Status::Critical => {
            current.send_replace(None);
        }
        None => {}
    }
    seen
}

/// How long a watcher that could not watch, or could not tell what its
/// exit means, waits before it looks and watches again.
const RETRY_WATCH: std::time::Duration = std::time::Duration::from_secs(1);

/// What the exit watcher reports when the process it watches fired.
#[derive(Debug)]
enum News {
    /// This observation.
    Push(Observation),
    /// Nothing: it is no outage, or no news.
    Nothing,
    /// Nothing yet: the exit could not be confirmed, or what runs now could
    /// not be told; look again later.
    LookAgain,
}

impl ProcessMonitor {
    /// One look for the process, as a check reports it; see
    /// [`look_and_watch`].
    fn look(&self) -> Observation {
        look_and_watch(&self.finder, &self.current)
    }

    /// Looks in this `/proc` instead of the real one (before `watch`).
    #[cfg(test)]
    fn with_proc(mut self, proc: Proc) -> ProcessMonitor {
        Arc::get_mut(&mut self.finder)
            .expect("the finder is not shared before `watch`")
            .proc = proc;
        self
    }
}

impl Finder {
    /// What the exit of `pid`, the watched process (the only match when
    /// `alone`), means now: `current` tells which process is watched, and
    /// is moved on to what runs now.
    fn exit_news(&self, current: &watch::Sender<Watched>, pid: u32, alone: bool) -> News {
        // Only a process /proc confirms gone is an exit (not a failure to
        // watch, not a reused pid).
        if self.proc.running(pid) != Ok(false) {
            return News::LookAgain;
        }
        // A check has meanwhile moved on to another pid (the service
        // restarted): this exit is old news.
        if *current.borrow() != Some((pid, alone)) {
            return News::Nothing;
        }
        // With other matching processes alive, one exiting is not an
        // outage: the next check picks another to watch.
        if !alone {
            move_on(current, (pid, alone), None);
            return News::Nothing;
        }
        // It exited, but by now the service may run again: restarted by a
        // supervisor, an operator, or a recovery healer ran on a check that
        // saw this death first, while this exit waited for a busy thread.
        // The host acts on what is pushed, so look again, as a check does,
        // and push what is true now.
        let (seen, running) = self.look();
        match (seen.status, running) {
            (Status::Critical, None) => {
                if move_on(current, (pid, alone), None) {
                    News::Push(not_running(format!("pid {pid} exited")))
                } else {
                    News::Nothing
                }
            }
            // Another runs now (or has been stopped too long: CRITICAL).
            (Status::Ok | Status::Critical, Some(now)) => {
                if move_on(current, (pid, alone), Some(now)) {
                    News::Push(Observation {
                        summary: format!("pid {pid} exited; {}", seen.summary),
                        ..seen
                    })
                } else {
                    News::Nothing
                }
            }
            _ => News::LookAgain,
        }
    }

    /// One look for the process: OK with its figures, CRITICAL on evidence
    /// that it is not running or that it has been stopped for
    /// `stopped_for`, UNKNOWN when healer could not look; and the process
    /// to watch when one runs.
    fn look(&self) -> (Observation, Watched) {
        let (seen, running) = self.look_for_one();
        // A stop ends with the process; it cannot be told while UNKNOWN.
        if running.is_none() && seen.status == Status::Critical {
            self.stopped
                .send_if_modified(|stopped| stopped.take().is_some());
        }
        (seen, running)
    }

    fn look_for_one(&self) -> (Observation, Watched) {
        let (pids, mut unreadable) = match self.candidates() {
            Ok(Ok(found)) => found,
            Ok(Err(absent)) => return (not_running(absent), None),
            Err(why) => return (Observation::unknown(format!("cannot tell: {why}")), None),
        };
        // Each live one, and whether it is stopped.
        let mut alive = Vec::new();
        for &pid in &pids {
            match self.proc.stat(pid) {
                Ok(Some(stat)) if !stat.dead => alive.push((pid, stat.stopped)),
                Ok(_) => {}
                Err(why) => unreadable = unreadable.or(Some(why)),
            }
        }
        // One that runs rather than one that is stopped: the service is
        // stopped only when every process of it is, and one that could not
        // be read may be running: then healer cannot tell.
        let running = alive.iter().find(|(_, stopped)| !stopped);
        if running.is_none() && !alive.is_empty() {
            if let Some(why) = &unreadable {
                return (Observation::unknown(format!("cannot tell: {why}")), None);
            }
        }
        let Some(&(pid, stopped)) = running.or(alive.first()) else {
            if let Some(why) = unreadable {
                return (Observation::unknown(format!("cannot tell: {why}")), None);
            }
            let why = match &self.find {
                Find::Pidfile(path) => {
                    format!("pid {} from {} is not running", pids[0], path.display())
                }
                _ => format!("no running process matches {}", self.describe()),
            };
            return (not_running(why), None);
        };
        let running = Some((pid, alive.len() == 1));
        let seen = self.figures(pid, alive.len());
        let seen = match self.note_stopped(pid, stopped) {
            Some(since) => self.stopped_for(seen, pid, since.elapsed()),
            None => seen,
        };
        (seen, running)
    }

    /// A running process `pid` (one of `count` that match), with its
    /// figures.
    fn figures(&self, pid: u32, count: usize) -> Observation {
        let kind = ProcessRefreshKind::nothing().with_cpu().with_memory();
        let refresh = [Pid::from_u32(pid)];
        let mut system = self.system.lock().unwrap_or_else(PoisonError::into_inner);
        system.refresh_processes_specifics(ProcessesToUpdate::Some(&refresh), true, kind);
        let before = self.last_pid.swap(pid, Ordering::Relaxed);
        if before != 0 && before != pid {
            self.restarts.fetch_add(1, Ordering::Relaxed);
        }
        let seen = Observation::ok(format!("pid {pid} running"))
            .metric("pid", f64::from(pid), "")
            .detail("running", true)
            .detail("pid", pid)
            .fact("process.running", true)
            .fact("process.pid", pid)
            .fact("process.restarts", self.restarts.load(Ordering::Relaxed));
        let Some(process) = system.process(refresh[0]) else {
            // Running (we just read it), but its figures could not be read.
            return seen
                .metric("count", count as f64, "")
                .detail("statistics", "unavailable");
        };
        let rss = process.memory();
        let cpu = f64::from(process.cpu_usage());
        Observation {
            summary: format!(
                "pid {pid} running, rss {:.1} MiB, cpu {cpu:.1}%",
                rss as f64 / 1048576.0
            ),
            ..seen
        }
        .metric("rss", rss as f64, "B")
        .metric("cpu", cpu, "%")
        .metric("uptime", process.run_time() as f64, "s")
        .metric("count", count as f64, "")
        .fact("process.started_at", process.start_time())
    }

    /// When a look first saw `pid` stopped, in the stop it is in now;
    /// `None` when it is not stopped.
    fn note_stopped(&self, pid: u32, stopped: bool) -> Option<Instant> {
        let mut since = None;
        self.stopped.send_if_modified(|seen| {
            let now = match *seen {
                Some((was, first)) if stopped && was == pid => Some((was, first)),
                _ if stopped => Some((pid, Instant::now())),
                _ => None,
            };
            since = now.map(|(_, first)| first);
            std::mem::replace(seen, now) != now
        });
        since
    }

    /// `seen`, of `pid` stopped for `stopped` so far: CRITICAL once that
    /// is `stopped_for`, OK saying so before.
    fn stopped_for(
        &self,
        seen: Observation,
        pid: u32,
        stopped: std::time::Duration,
    ) -> Observation {
        let ms = u64::try_from(stopped.as_millis()).unwrap_or(u64::MAX);
        let seen = seen.detail("stopped", true).detail("stopped_ms", ms);
        let secs = stopped.as_secs_f64();
        match self.stopped_for {
            Some(limit) if stopped >= limit => Observation {
                status: Status::Critical,
                summary: format!(
                    "stopped: pid {pid} stopped for {secs:.1}s (stopped_for = {})",
                    Duration(limit)
                ),
                ..seen
            },
            _ => Observation {
                summary: format!("{} (stopped for {secs:.1}s)", seen.summary),
                ..seen
            },
        }
    }

    /// The pids to look at (`Ok(Ok)`), evidence that there is none
    /// (`Ok(Err)`: the pidfile does not exist), or why healer cannot tell.
    /// The pids to look at (and, from a search, why a process that might
    /// have matched could not be read); `Ok(Err)` on evidence that none
    /// runs, `Err` when healer cannot tell.
    fn candidates(&self) -> Result<Result<Found, String>, String> {
        let path = match &self.find {
            Find::Pidfile(path) => path,
            Find::Name(_) | Find::Cmdline(_) => return self.search().map(Ok),
        };
        match std::fs::read_to_string(path) {
            Ok(text) => match text.lines().next().unwrap_or("").trim().parse::<u32>() {
                Ok(pid) => Ok(Ok((vec![pid], None))),
                // Being written, or garbage: neither says the service is down.
                Err(_) => Err(format!("pidfile {} holds no pid", path.display())),
            },
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                Ok(Err(format!("pidfile {} does not exist", path.display())))
            }
            Err(err) => Err(format!("cannot read pidfile {}: {err}", path.display())),
        }
    }

    /// The pids whose name or command line match, and why a process that
    /// might have matched could not be read; an error when one could not
    /// be read and none matched (it might have been the one).
    fn search(&self) -> Result<Found, String> {
        let me = std::process::id();
        let mut pids = Vec::new();
        let mut unreadable = None;
        for pid in self.proc.pids()? {
            if pid == me {
                continue;
            }
            let matches = match &self.find {
                Find::Name(name) => self
                    .proc
                    .stat(pid)
                    .map(|stat| stat.is_some_and(|stat| !stat.kernel_thread && stat.comm == *name)),
                Find::Cmdline(regex) => self.proc.cmdline(pid).map(|cmdline| {
                    cmdline.is_some_and(|cmdline| !cmdline.is_empty() && regex.is_match(&cmdline))
                }),
                Find::Pidfile(_) => Ok(false),
            };
            match matches {
                Ok(true) => pids.push(pid),
                Ok(false) => {}
                Err(why) => unreadable = unreadable.or(Some(why)),
            }
        }
        match unreadable {
            Some(why) if pids.is_empty() => Err(why),
            None if pids.is_empty() && self.proc.hides_processes() => Err(
                "no process matches, but /proc hides processes from this worker \
                 (mounted with hidepid): give the package's user the mount's gid= group"
                    .to_owned(),
            ),
            unreadable => Ok((pids, unreadable)),
        }
    }

    fn describe(&self) -> String {
        match &self.find {
            Find::Pidfile(path) => format!("pidfile {}", path.display()),
            Find::Name(name) => format!("name {name:?}"),
            Find::Cmdline(regex) => format!("cmdline /{regex}/"),
        }
    }
}

/// The pids a look found, and why one that might have matched could not
/// be read.
type Found = (Vec<u32>, Option<String>);

/// Moves the watch from `was` to `next` if it still is on `was`; whether it
/// was.
fn move_on(current: &watch::Sender<Watched>, was: (u32, bool), next: Watched) -> bool {
    current.send_if_modified(|watched| {
        if *watched == Some(was) {
            *watched = next;
            true
        } else {
            false
        }
    })
}

fn not_running(why: String) -> Observation {
    Observation::critical(format!("not running: {why}"))
        .detail("running", false)
        .fact("process.running", false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use healer_plugin_sdk::Status;
    use std::time::Duration;

    fn monitor(config: serde_json::Value) -> ProcessMonitor {
        ProcessMonitor::new(serde_json::from_value(config).unwrap()).unwrap()
    }

    fn pidfile(path: &std::path::Path) -> ProcessMonitor {
        monitor(serde_json::json!({ "pidfile": path, "watch": false }))
    }

    #[test]
    fn a_missing_pidfile_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let seen = pidfile(&dir.path().join("absent.pid")).look();
        assert_eq!(seen.status, Status::Critical);
        assert!(
            seen.summary.ends_with("absent.pid does not exist"),
            "{}",
            seen.summary
        );
        assert_eq!(seen.details["running"], false);
    }

    #[test]
    fn a_pidfile_naming_no_process_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stale.pid");
        std::fs::write(&path, format!("{}\n", u32::MAX - 1)).unwrap();
        let seen = pidfile(&path).look();
        assert_eq!(seen.status, Status::Critical);
        assert!(seen.summary.contains("is not running"), "{}", seen.summary);
    }

    #[test]
    fn a_pidfile_that_cannot_be_read_is_unknown_not_critical() {
        // Tests run as root, which mode 000 does not stop: a directory
        // (EISDIR) and a path through a file (ENOTDIR) are the same kind of
        // error as EACCES or EMFILE, an error of the looking.
        let dir = tempfile::tempdir().unwrap();
        let directory = dir.path().join("dir.pid");
        std::fs::create_dir(&directory).unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "1").unwrap();
        for path in [directory, file.join("through.pid")] {
            let seen = pidfile(&path).look();
            assert_eq!(seen.status, Status::Unknown, "{}", seen.summary);
            assert!(
                seen.summary.starts_with("cannot tell: cannot read pidfile"),
                "{}",
                seen.summary
            );
            assert!(seen.details.get("running").is_none(), "{:?}", seen.details);
        }
    }

    #[test]
    fn a_pidfile_without_a_pid_is_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pid");
        std::fs::write(&path, "").unwrap();
        assert_eq!(pidfile(&path).look().status, Status::Unknown);
    }

    #[test]
    fn a_running_process_is_ok_with_its_figures() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("me.pid");
        std::fs::write(&path, std::process::id().to_string()).unwrap();
        let seen = pidfile(&path).look();
        assert_eq!(seen.status, Status::Ok, "{}", seen.summary);
        assert_eq!(
            seen.metric_value("pid"),
            Some(f64::from(std::process::id()))
        );
        assert!(seen.metric_value("rss").is_some_and(|rss| rss > 0.0));
    }

    #[test]
    fn a_command_line_search_finds_the_process_and_no_match_is_not_running() {
        let mut child = std::process::Command::new("sleep")
            .arg("123.4567")
            .spawn()
            .unwrap();
        // `spawn` returns once the child forked; its command line is the
        // test binary's until `execve` has run. Wait (bounded) for sleep.
        let cmdline = format!("/proc/{}/cmdline", child.id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !std::fs::read(&cmdline).is_ok_and(|line| line.starts_with(b"sleep\0"))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let seen =
            monitor(serde_json::json!({ "cmdline": "^sleep 123\\.4567$", "watch": false })).look();
        let none = monitor(serde_json::json!({ "name": "no-such-process", "watch": false })).look();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(seen.status, Status::Ok, "{}", seen.summary);
        assert_eq!(seen.metric_value("pid"), Some(f64::from(child.id())));
        assert_eq!(none.status, Status::Critical);
        assert_eq!(
            none.summary,
            "not running: no running process matches name \"no-such-process\""
        );
    }

    #[test]
    fn a_proc_that_cannot_be_read_is_unknown_not_critical() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("42/stat")).unwrap();
        std::fs::create_dir_all(root.path().join("42/cmdline")).unwrap();
        for config in [
            serde_json::json!({ "name": "nginx", "watch": false }),
            serde_json::json!({ "cmdline": "nginx", "watch": false }),
        ] {
            let watched = monitor(config).with_proc(Proc::at(root.path().to_owned()));
            let seen = watched.look();
            assert_eq!(seen.status, Status::Unknown, "{}", seen.summary);
            assert!(seen.summary.contains("42/"), "{}", seen.summary);
        }
        let unlisted = monitor(serde_json::json!({ "name": "nginx", "watch": false }))
            .with_proc(Proc::at(root.path().join("missing")));
        let seen = unlisted.look();
        assert_eq!(seen.status, Status::Unknown);
        assert!(
            seen.summary.starts_with("cannot tell: cannot list"),
            "{}",
            seen.summary
        );
    }

    /// A `sleep 30` to watch.
    fn sleeping() -> std::process::Child {
        std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap()
    }

    /// A monitor of a pidfile naming `pid`, checked once (OK); the dir
    /// holds the pidfile.
    fn watching(pid: u32) -> (tempfile::TempDir, std::path::PathBuf, ProcessMonitor) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.pid");
        std::fs::write(&path, pid.to_string()).unwrap();
        let watched = monitor(serde_json::json!({ "pidfile": path }));
        assert_eq!(watched.look().status, Status::Ok);
        (dir, path, watched)
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn an_exit_is_pushed_the_moment_the_process_exits() {
        let mut child = sleeping();
        let (_dir, _path, mut watched) = watching(child.id());
        let (push, mut pushed) = healer_plugin_sdk::Push::channel();
        let seen = runtime().block_on(async {
            watched.watch(push);
            let early = tokio::time::timeout(Duration::from_millis(300), pushed.recv()).await;
            assert!(early.is_err(), "pushed while running: {early:?}");
            child.kill().unwrap();
            tokio::time::timeout(Duration::from_secs(5), pushed.recv()).await
        });
        child.wait().unwrap();
        let seen = seen.expect("pushed within 5 s").expect("an observation");
        assert_eq!(seen.status, Status::Critical);
        assert_eq!(
            seen.summary,
            format!("not running: pid {} exited", child.id())
        );
    }

    #[test]
    fn the_exit_of_a_pid_a_check_has_moved_on_from_is_not_pushed() {
        // The service restarted: a check found the new pid while the old
        // one's exit was on its way to the watcher. That exit is no outage.
        let (mut old, mut new) = (sleeping(), sleeping());
        let (_dir, path, mut watched) = watching(old.id());
        let (push, mut pushed) = healer_plugin_sdk::Push::channel();
        let (early, late) = runtime().block_on(async {
            watched.watch(push);
            // Let the watcher set up its watch of the old pid.
            let early = tokio::time::timeout(Duration::from_millis(300), pushed.recv()).await;
            // This future watches the old pid too: its exit wakes it and the
            // watcher at once, and (current-thread runtime) this future runs
            // first. So the pidfile and a check move on to the new pid after
            // the watcher's exit fired and before the watcher runs.
            let mut exit = std::pin::pin!(watch_process_exit(old.id()));
            std::future::poll_fn(|cx| {
                assert!(
                    std::future::Future::poll(exit.as_mut(), cx).is_pending(),
                    "old pid not running"
                );
                std::task::Poll::Ready(())
            })
            .await;
            old.kill().unwrap();
            exit.await.unwrap();
            std::fs::write(&path, new.id().to_string()).unwrap();
            let seen = watched.look();
            assert_eq!(seen.status, Status::Ok, "{}", seen.summary);
            assert_eq!(seen.metric_value("pid"), Some(f64::from(new.id())));
            let stale = tokio::time::timeout(Duration::from_millis(500), pushed.recv()).await;
            assert!(stale.is_err(), "pushed the old pid's exit: {stale:?}");
            // The new pid is watched: its exit is pushed.
            new.kill().unwrap();
            let late = tokio::time::timeout(Duration::from_secs(5), pushed.recv()).await;
            (early, late)
        });
        old.wait().unwrap();
        new.wait().unwrap();
        assert!(early.is_err(), "pushed while running: {early:?}");
        let seen = late.expect("pushed within 5 s").expect("an observation");
        assert_eq!(seen.status, Status::Critical);
        assert_eq!(
            seen.summary,
            format!("not running: pid {} exited", new.id())
        );
    }

    #[test]
    fn an_exit_after_a_restart_by_another_is_pushed_as_ok_and_the_new_process_is_watched() {
        // Something else restarted the service: the pidfile names a new,
        // live process before the old one dies, and no check has run since.
        // Its exit is no outage: what is pushed says the service runs.
        let (mut old, mut new) = (sleeping(), sleeping());
        let (_dir, path, mut watched) = watching(old.id());
        let (push, mut pushed) = healer_plugin_sdk::Push::channel();
        let (replaced, crashed) = runtime().block_on(async {
            watched.watch(push);
            std::fs::write(&path, new.id().to_string()).unwrap();
            old.kill().unwrap();
            let replaced = tokio::time::timeout(Duration::from_secs(5), pushed.recv()).await;
            // No check has run: the new process is watched all the same.
            new.kill().unwrap();
            let crashed = tokio::time::timeout(Duration::from_secs(5), pushed.recv()).await;
            (replaced, crashed)
        });
        old.wait().unwrap();
        new.wait().unwrap();
        let replaced = replaced
            .expect("pushed within 5 s")
            .expect("an observation");
        assert_eq!(replaced.status, Status::Ok, "{}", replaced.summary);
        let prefix = format!("pid {} exited; pid {} running, rss ", old.id(), new.id());
        assert!(
            replaced.summary.starts_with(&prefix),
            "{}",
            replaced.summary
        );
        assert_eq!(replaced.metric_value("pid"), Some(f64::from(new.id())));
        assert_eq!(replaced.details["running"], true);
        let crashed = crashed.expect("pushed within 5 s").expect("an observation");
        assert_eq!(crashed.status, Status::Critical);
        assert_eq!(
            crashed.summary,
            format!("not running: pid {} exited", new.id())
        );
    }

    #[test]
    fn an_exit_is_not_pushed_while_what_runs_now_cannot_be_told() {
        // The pidfile is being rewritten (it holds no pid yet) when the
        // process exits: healer cannot tell whether the service runs, so it
        // pushes nothing, and looks again until it can.
        let mut child = sleeping();
        let (_dir, path, mut watched) = watching(child.id());
        let (push, mut pushed) = healer_plugin_sdk::Push::channel();
        let (unsure, seen) = runtime().block_on(async {
            watched.watch(push);
            std::fs::write(&path, "").unwrap();
            child.kill().unwrap();
            let unsure = tokio::time::timeout(RETRY_WATCH * 2, pushed.recv()).await;
            std::fs::remove_file(&path).unwrap();
            let seen = tokio::time::timeout(RETRY_WATCH * 5, pushed.recv()).await;
            (unsure, seen)
        });
        child.wait().unwrap();
        assert!(unsure.is_err(), "pushed without knowing: {unsure:?}");
        let seen = seen
            .expect("pushed once it could tell")
            .expect("an observation");
        assert_eq!(seen.status, Status::Critical);
        assert_eq!(
            seen.summary,
            format!("not running: pid {} exited", child.id())
        );
    }

    #[test]
    fn a_watch_that_cannot_be_set_up_is_retried_and_only_a_confirmed_exit_is_pushed() {
        // No pidfd for a pid past i32::MAX (like one refused for EMFILE):
        // the watcher looks in /proc, which says running, and tries again.
        let pid = 3_000_000_000u32;
        let root = tempfile::tempdir().unwrap();
        let stat = root.path().join(format!("{pid}/stat"));
        std::fs::create_dir_all(stat.parent().unwrap()).unwrap();
        std::fs::write(
            &stat,
            format!("{pid} (app) S 1 {pid} {pid} 0 -1 4194560 0 0"),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.pid");
        std::fs::write(&path, pid.to_string()).unwrap();
        let mut watched = monitor(serde_json::json!({ "pidfile": path }))
            .with_proc(Proc::at(root.path().to_owned()));
        assert_eq!(watched.look().status, Status::Ok);
        let (push, mut pushed) = healer_plugin_sdk::Push::channel();
        runtime().block_on(async {
            watched.watch(push);
            // Longer than RETRY_WATCH: at least one more try, no push.
            let early = tokio::time::timeout(RETRY_WATCH * 2, pushed.recv()).await;
            assert!(early.is_err(), "pushed while /proc says running: {early:?}");
            std::fs::write(
                &stat,
                format!("{pid} (app) Z 1 {pid} {pid} 0 -1 4194560 0 0"),
            )
            .unwrap();
            let seen = tokio::time::timeout(RETRY_WATCH * 5, pushed.recv())
                .await
                .expect("pushed once /proc says it is gone")
                .expect("an observation");
            assert_eq!(seen.status, Status::Critical);
            assert_eq!(seen.summary, format!("not running: pid {pid} exited"));
        });
    }

    #[test]
    fn out_of_descriptors_the_watcher_retries_and_pushes_the_exit_once_it_can_look() {
        if !healer_plugin_sdk::testing::is_alone() {
            // Alone, with at most 64 open files: it uses them all up.
            healer_plugin_sdk::testing::run_alone(
                &["sh", "-c", "ulimit -n 64 && exec \"$@\"", "sh"],
                "monitor::tests::out_of_descriptors_the_watcher_retries_and_pushes_the_exit_once_it_can_look",
                &[],
            );
            return;
        }
        let runtime = runtime();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.pid");
        std::fs::write(&path, child.id().to_string()).unwrap();
        let mut watched = monitor(serde_json::json!({ "pidfile": path }));
        assert_eq!(watched.look().status, Status::Ok);
        let (push, mut pushed) = healer_plugin_sdk::Push::channel();
        // Use up every descriptor: no pidfd, no /proc.
        let mut held = Vec::new();
        let exhausted = loop {
            match std::fs::File::open("/dev/null") {
                Ok(_) if held.len() > 64 => break false,
                Ok(file) => held.push(file),
                Err(err) => break err.raw_os_error() == Some(24),
            }
        };
        let blind = runtime.block_on(async {
            watched.watch(push);
            child.kill().unwrap();
            tokio::time::timeout(RETRY_WATCH * 2, pushed.recv()).await
        });
        drop(held);
        let seen =
            runtime.block_on(async { tokio::time::timeout(RETRY_WATCH * 5, pushed.recv()).await });
        child.wait().unwrap();
        assert!(exhausted, "the limit of open files held");
        assert!(blind.is_err(), "pushed without looking: {blind:?}");
        let seen = seen
            .expect("pushed once it could look")
            .expect("an observation");
        assert_eq!(
            seen.summary,
            format!("not running: pid {} exited", child.id())
        );
    }

    /// Sends `signal` (`STOP`, `CONT`) to `pid`.
    fn signal(pid: u32, signal: &str) {
        let sent = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} {pid}");
    }

    /// Waits (at most 2 s) until /proc says `pid` is stopped, or not.
    fn until_stopped(pid: u32, stopped: bool) {
        let started = std::time::Instant::now();
        while Proc::new().stat(pid).unwrap().unwrap().stopped != stopped {
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "pid {pid} stopped: {stopped}?"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A monitor of a pidfile naming `pid` with these `stopped_for` and
    /// `watch`; the dir holds the pidfile.
    fn stop_watching(
        pid: u32,
        stopped_for: &str,
        watch: bool,
    ) -> (tempfile::TempDir, ProcessMonitor) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.pid");
        std::fs::write(&path, pid.to_string()).unwrap();
        let config =
            serde_json::json!({ "pidfile": path, "stopped_for": stopped_for, "watch": watch });
        (dir, monitor(config))
    }

    /// A `sleep 30` stopped (SIGSTOP), with a monitor of its pidfile.
    fn stopped_child(
        stopped_for: &str,
        watch: bool,
    ) -> (std::process::Child, u32, tempfile::TempDir, ProcessMonitor) {
        let child = sleeping();
        let pid = child.id();
        let (dir, watched) = stop_watching(pid, stopped_for, watch);
        signal(pid, "STOP");
        until_stopped(pid, true);
        (child, pid, dir, watched)
    }

    #[test]
    fn a_process_stopped_for_stopped_for_is_critical_and_before_that_ok() {
        let (mut child, pid, _dir, watched) = stopped_child("300ms", false);
        let early = watched.look();
        std::thread::sleep(Duration::from_millis(350));
        let late = watched.look();
        signal(pid, "CONT");
        until_stopped(pid, false);
        let continued = watched.look();
        child.kill().unwrap();
        child.wait().unwrap();

        assert_eq!(early.status, Status::Ok, "{}", early.summary);
        assert_eq!(early.details["stopped"], true);
        assert!(
            early.summary.contains("(stopped for 0.0s)"),
            "{}",
            early.summary
        );
        assert_eq!(late.status, Status::Critical, "{}", late.summary);
        assert!(
            late.summary
                .starts_with(&format!("stopped: pid {pid} stopped for 0.")),
            "{}",
            late.summary
        );
        assert!(
            late.summary.ends_with("(stopped_for = 300ms)"),
            "{}",
            late.summary
        );
        assert_eq!(late.details["stopped"], true);
        assert_eq!(late.details["running"], true);
        assert_eq!(late.details["pid"], pid);
        assert!(late.details["stopped_ms"].as_u64().unwrap() >= 300);
        assert_eq!(continued.status, Status::Ok, "{}", continued.summary);
        assert!(continued.details.get("stopped").is_none(), "{continued:?}");
    }

    #[test]
    fn the_watcher_pushes_a_stop_once_stopped_for_has_passed_without_waiting_for_a_check() {
        let (mut child, _, _dir, mut watched) = stopped_child("400ms", true);
        let (push, mut pushed) = healer_plugin_sdk::Push::channel();
        let (seen, took, again) = runtime().block_on(async {
            watched.watch(push);
            // The only check: it sees the stop, and arms the watcher.
            let first_seen = std::time::Instant::now();
            assert_eq!(watched.look().status, Status::Ok);
            let seen = tokio::time::timeout(Duration::from_secs(3), pushed.recv()).await;
            let took = first_seen.elapsed();
            let again = tokio::time::timeout(Duration::from_millis(600), pushed.recv()).await;
            (seen, took, again)
        });
        child.kill().unwrap();
        child.wait().unwrap();

        let seen = seen.expect("pushed within 3 s").expect("an observation");
        assert_eq!(seen.status, Status::Critical, "{}", seen.summary);
        assert_eq!(seen.details["stopped"], true);
        assert!(took >= Duration::from_millis(400), "pushed after {took:?}");
        assert!(took < Duration::from_millis(900), "pushed after {took:?}");
        assert!(again.is_err(), "pushed the same stop twice: {again:?}");
    }

    #[test]
    fn a_stop_that_ends_before_stopped_for_pushes_nothing() {
        let (mut child, pid, _dir, mut watched) = stopped_child("400ms", true);
        let (push, mut pushed) = healer_plugin_sdk::Push::channel();
        let quiet = runtime().block_on(async {
            watched.watch(push);
            assert_eq!(watched.look().status, Status::Ok);
            signal(pid, "CONT");
            tokio::time::timeout(Duration::from_millis(900), pushed.recv()).await
        });
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(quiet.is_err(), "pushed a stop that ended: {quiet:?}");
    }

    #[test]
    fn one_stopped_process_among_running_matches_is_no_stop() {
        let spawn = || {
            std::process::Command::new("sleep")
                .arg("123.789")
                .spawn()
                .unwrap()
        };
        let (mut first, mut second) = (spawn(), spawn());
        // A child just forked reads as the test binary until it has run
        // `sleep`: wait until both match, or the look sees only one.
        for child in [&first, &second] {
            let cmdline = format!("/proc/{}/cmdline", child.id());
            let deadline = Instant::now() + Duration::from_secs(5);
            while !std::fs::read(&cmdline).is_ok_and(|c| c.windows(7).any(|w| w == b"123.789"))
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        signal(first.id(), "STOP");
        until_stopped(first.id(), true);
        let watched = monitor(serde_json::json!({
            "cmdline": "^sleep 123\\.789$", "stopped_for": "1ms", "watch": false
        }));
        let seen = watched.look();
        std::thread::sleep(Duration::from_millis(5));
        let later = watched.look();
        for child in [&mut first, &mut second] {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        for seen in [seen, later] {
            assert_eq!(seen.status, Status::Ok, "{}", seen.summary);
            assert_eq!(seen.metric_value("pid"), Some(f64::from(second.id())));
            assert!(seen.details.get("stopped").is_none(), "{seen:?}");
        }
    }

    #[test]
    fn stopped_for_zero_never_says_stopped() {
        let (mut child, _, _dir, watched) = stopped_child("0s", false);
        let seen = watched.look();
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(seen.status, Status::Ok, "{}", seen.summary);
    }

    #[test]
    fn a_state_that_cannot_be_read_is_unknown_never_stopped() {
        // Stopped at one look, unreadable (EISDIR, as EACCES or EMFILE) at
        // the next, long past `stopped_for`: that look cannot tell.
        let root = tempfile::tempdir().unwrap();
        let stat = root.path().join("42/stat");
        std::fs::create_dir_all(root.path().join("42")).unwrap();
        std::fs::write(&stat, "42 (app) T 1 42 42 0 -1 4194560 0 0").unwrap();
        let (_dir, watched) = stop_watching(42, "1ms", false);
        let watched = watched.with_proc(Proc::at(root.path().to_owned()));
        assert_eq!(watched.look().details["stopped"], true);
        std::fs::remove_file(&stat).unwrap();
        std::fs::create_dir(&stat).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let seen = watched.look();
        assert_eq!(seen.status, Status::Unknown, "{}", seen.summary);
        assert!(seen.details.get("stopped").is_none(), "{seen:?}");
    }

    #[test]
    fn a_stopped_match_beside_one_that_cannot_be_read_is_unknown_never_stopped() {
        // Two processes named app: one stopped, one whose state cannot be
        // read (EISDIR, as EACCES or EMFILE). The other may be running.
        let root = tempfile::tempdir().unwrap();
        for pid in ["42", "43"] {
            std::fs::create_dir_all(root.path().join(pid)).unwrap();
        }
        std::fs::write(
            root.path().join("42/stat"),
            "42 (app) T 1 42 42 0 -1 4194560 0 0",
        )
        .unwrap();
        std::fs::create_dir(root.path().join("43/stat")).unwrap();
        let watched = monitor(serde_json::json!({
            "name": "app", "stopped_for": "1ms", "watch": false
        }))
        .with_proc(Proc::at(root.path().to_owned()));
        watched.look();
        std::thread::sleep(Duration::from_millis(5));
        let seen = watched.look();
        assert_eq!(seen.status, Status::Unknown, "{}", seen.summary);
        assert!(seen.details.get("stopped").is_none(), "{seen:?}");
    }

    #[test]
    fn a_process_hidden_from_proc_is_unknown_not_critical() {
        // This process runs; a /proc that does not show it (hidepid, another
        // pid namespace) is no evidence that it stopped.
        let root = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.pid");
        std::fs::write(&path, std::process::id().to_string()).unwrap();
        let watched = pidfile(&path).with_proc(Proc::at(root.path().to_owned()));
        let seen = watched.look();
        assert_eq!(seen.status, Status::Unknown, "{}", seen.summary);
        assert!(seen.summary.contains("exists"), "{}", seen.summary);
    }

    #[test]
    fn no_match_in_a_proc_that_hides_processes_is_unknown_not_critical() {
        // PID 1 runs; a /proc that does not show it hides processes, and a
        // search of it that finds nothing proves nothing.
        let root = tempfile::tempdir().unwrap();
        let watched = monitor(serde_json::json!({ "name": "sshd", "watch": false }))
            .with_proc(Proc::at(root.path().to_owned()));
        let seen = watched.look();
        assert_eq!(seen.status, Status::Unknown, "{}", seen.summary);
        assert!(seen.summary.contains("hidepid"), "{}", seen.summary);
    }

    #[test]
    fn a_pid_whose_proc_entry_cannot_be_read_is_unknown() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("42/stat")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.pid");
        std::fs::write(&path, "42").unwrap();
        let watched = pidfile(&path).with_proc(Proc::at(root.path().to_owned()));
        assert_eq!(watched.look().status, Status::Unknown);
    }
}
