//! The `process` monitor.

use std::path::PathBuf;
use std::sync::Arc;

use healer_plugin_sdk::events::process_exit;
use healer_plugin_sdk::tokio::sync::watch;
use healer_plugin_sdk::{tokio, Error, Monitor, Observation, Push};
use regex::Regex;
use serde::Deserialize;
use sysinfo::{Pid, ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, System, UpdateKind};

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
}

fn yes() -> bool {
    true
}

enum Find {
    Pidfile(PathBuf),
    Name(String),
    Cmdline(Regex),
}

/// Watches one process.
pub struct ProcessMonitor {
    find: Find,
    system: System,
    watch: bool,
    /// The pid last seen running, for the exit watcher, and whether it was
    /// the only match (only then does its exit mean "not running").
    current: Arc<watch::Sender<Option<(u32, bool)>>>,
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
        let (current, _) = watch::channel(None);
        Ok(ProcessMonitor {
            find,
            system: System::new().map_err(|e| format!("cannot read the process table: {e}"))?,
            watch: config.watch,
            current: Arc::new(current),
        })
    }

    async fn check(&mut self) -> Result<Observation, Error> {
        let found = match &self.find {
            Find::Pidfile(path) => match std::fs::read_to_string(path) {
                Ok(text) => match text.lines().next().unwrap_or("").trim().parse::<u32>() {
                    Ok(pid) => Ok(vec![pid]),
                    Err(_) => Err(format!("pidfile {} holds no pid", path.display())),
                },
                Err(err) => Err(format!("pidfile {}: {err}", path.display())),
            },
            Find::Name(_) | Find::Cmdline(_) => Ok(self.search()),
        };
        let pids = match found {
            Ok(pids) => pids,
            Err(why) => {
                self.current.send_replace(None);
                return Ok(not_running(why));
            }
        };
        let kind = ProcessRefreshKind::nothing().with_cpu().with_memory();
        let refresh: Vec<Pid> = pids.iter().map(|&p| Pid::from_u32(p)).collect();
        self.system
            .refresh_processes_specifics(ProcessesToUpdate::Some(&refresh), true, kind);
        let alive: Vec<&sysinfo::Process> = refresh
            .iter()
            .filter_map(|pid| self.system.process(*pid))
            .filter(|p| !matches!(p.status(), ProcessStatus::Zombie | ProcessStatus::Dead))
            .collect();
        let Some(process) = alive.first() else {
            self.current.send_replace(None);
            let why = match &self.find {
                Find::Pidfile(path) => {
                    format!("pid {} from {} is not running", pids[0], path.display())
                }
                _ => format!("no running process matches {}", self.describe()),
            };
            return Ok(not_running(why));
        };
        let pid = process.pid().as_u32();
        let alone = alive.len() == 1;
        self.current
            .send_if_modified(|current| current.replace((pid, alone)) != Some((pid, alone)));
        let rss = process.memory();
        let cpu = f64::from(process.cpu_usage());
        Ok(Observation::ok(format!(
            "pid {pid} running, rss {:.1} MiB, cpu {cpu:.1}%",
            rss as f64 / 1048576.0
        ))
        .metric("pid", f64::from(pid), "")
        .metric("rss", rss as f64, "B")
        .metric("cpu", cpu, "%")
        .metric("uptime", process.run_time() as f64, "s")
        .metric("count", alive.len() as f64, "")
        .detail("running", true)
        .detail("pid", pid))
    }

    fn watch(&mut self, push: Push) {
        if !self.watch {
            return;
        }
        let mut current = self.current.subscribe();
        let forget = Arc::clone(&self.current);
        tokio::spawn(async move {
            loop {
                let watched = *current.borrow_and_update();
                let pid = watched.map(|(pid, _)| pid);
                let exited = async {
                    match pid {
                        Some(pid) => process_exit(pid).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    changed = current.changed() => if changed.is_err() { return },
                    () = exited => {
                        let Some((pid, alone)) = watched else { continue };
                        forget.send_if_modified(|seen| if *seen == Some((pid, alone)) { *seen = None; true } else { false });
                        // With other matching processes alive, one exiting is
                        // not an outage: the next check picks another to watch.
                        if alone && !push.send(not_running(format!("pid {pid} exited"))) && push.is_closed() {
                            return;
                        }
                    }
                }
            }
        });
    }
}

impl ProcessMonitor {
    fn search(&mut self) -> Vec<u32> {
        let kind = ProcessRefreshKind::nothing().with_cmd(UpdateKind::OnlyIfNotSet);
        self.system
            .refresh_processes_specifics(ProcessesToUpdate::All, true, kind);
        let me = std::process::id();
        let mut pids: Vec<u32> = self
            .system
            .processes()
            .values()
            .filter(|p| p.pid().as_u32() != me && p.thread_kind().is_none())
            .filter(|p| match &self.find {
                Find::Name(name) => p.name() == name.as_str(),
                Find::Cmdline(regex) => {
                    let cmdline: Vec<String> = p
                        .cmd()
                        .iter()
                        .map(|a| a.to_string_lossy().into_owned())
                        .collect();
                    !cmdline.is_empty() && regex.is_match(&cmdline.join(" "))
                }
                Find::Pidfile(_) => false,
            })
            .map(|p| p.pid().as_u32())
            .collect();
        pids.sort_unstable();
        pids
    }

    fn describe(&self) -> String {
        match &self.find {
            Find::Pidfile(path) => format!("pidfile {}", path.display()),
            Find::Name(name) => format!("name {name:?}"),
            Find::Cmdline(regex) => format!("cmdline /{regex}/"),
        }
    }
}

fn not_running(why: String) -> Observation {
    Observation::critical(format!("not running: {why}")).detail("running", false)
}
