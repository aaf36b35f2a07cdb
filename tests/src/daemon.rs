//! A `healer run` daemon started for a test, and what it writes: its log,
//! its event log read back as [`Record`]s, the events after a given start.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::healer_bin;

pub use healer::events::{Event, Record, StepResult};

/// A `healer run` daemon started for a test; stopped (SIGTERM, then
/// SIGKILL) when dropped. Its log (`healer.log`), event log
/// (`events.jsonl`) and stderr (`healer.stderr`) are in its config's
/// directory; [`fast_config`](crate::fast_config) sets them up.
pub struct Daemon {
    child: std::process::Child,
    /// The daemon's log file.
    pub log: PathBuf,
    /// The daemon's event log: one JSON [`Record`] per line.
    pub events: PathBuf,
}

impl Daemon {
    /// Starts `healer run` on `config`.
    pub fn start(config: &Path) -> Daemon {
        Daemon::start_under(config, &[])
    }

    /// Starts `healer run` on `config` under a wrapper command, e.g.
    /// `["prlimit", "--nofile=1024:1024"]`.
    pub fn start_under(config: &Path, wrapper: &[&str]) -> Daemon {
        Daemon::start_with(config, wrapper, &[])
    }

    /// Starts `healer run` on `config` under a wrapper command (may be
    /// empty), with these environment variables set.
    pub fn start_with(config: &Path, wrapper: &[&str], env: &[(&str, &str)]) -> Daemon {
        let dir = config.parent().expect("the config is in a directory");
        let log = dir.join("healer.log");
        let stderr = std::fs::File::create(dir.join("healer.stderr")).expect("stderr file");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(healer_bin());
                command
            }
            None => Command::new(healer_bin()),
        };
        let child = command
            .envs(env.iter().copied())
            .args(["run", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("healer starts");
        Daemon {
            child,
            log,
            events: dir.join("events.jsonl"),
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every event so far, of this and earlier runs on the same event log
    /// (a line being written is skipped).
    pub fn records(&self) -> Vec<Record> {
        read_records(&self.events)
    }

    /// Waits until an event matching `wanted` has been written; panics
    /// (with the latest events) when healer exits first or after `limit`.
    pub fn wait_for(
        &mut self,
        what: &str,
        limit: Duration,
        mut wanted: impl FnMut(&Event) -> bool,
    ) -> Event {
        let started = Instant::now();
        loop {
            let records = self.records();
            if let Some(found) = records.iter().find(|r| wanted(&r.event)) {
                return found.event.clone();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "healer exited ({status}) before {what}; events:\n{}\nstderr:\n{}",
                    tail(&records),
                    self.stderr()
                );
            }
            assert!(
                started.elapsed() < limit,
                "{what}: not within {limit:?}; events:\n{}",
                tail(&records)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// How many events so far match `wanted`.
    pub fn count(&self, mut wanted: impl FnMut(&Event) -> bool) -> usize {
        self.records().iter().filter(|r| wanted(&r.event)).count()
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the daemon is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the daemon with SIGKILL (no chance to write anything more)
    /// and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the daemon with SIGTERM, as an operator would, and waits (at
    /// most 20 s: it lets running workflows and the store finish) until it
    /// has exited; its store is then written and can be read. Returns
    /// whether it exited by itself in time.
    pub fn stop(&mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        false
    }

    /// What the daemon wrote to stderr.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.log.with_extension("stderr")).unwrap_or_default()
    }
}

/// The events of an event log file, skipping a line still being written.
pub fn read_records(path: &Path) -> Vec<Record> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// The last events, one per line, for a failure message.
fn tail(records: &[Record]) -> String {
    let from = records.len().saturating_sub(40);
    records[from..]
        .iter()
        .map(|r| serde_json::to_string(r).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The events after the `n`-th start (1-based) of healer on this event log.
pub fn after_start(records: &[Record], n: usize) -> Vec<Event> {
    records
        .iter()
        .skip_while({
            let mut starts = 0;
            move |r| {
                if matches!(r.event, Event::Started { .. }) {
                    starts += 1;
                }
                starts < n
            }
        })
        .map(|r| r.event.clone())
        .collect()
}

/// `[intake]` on 127.0.0.1:`port`: the API and the dashboard.
pub fn intake(port: u16) -> String {
    format!("\n[intake]\nbind = \"127.0.0.1:{port}\"\n")
}

/// healer with these plugin packages, its API on a free port and the
/// targets `targets` writes for the test's directory (it may also start
/// what they watch there); started, its API answering.
pub struct Running {
    pub dir: tempfile::TempDir,
    pub plugins: tempfile::TempDir,
    pub port: u16,
    pub config: std::path::PathBuf,
    pub daemon: Daemon,
}

impl Running {
    /// Starts it; panics when its API does not answer within 30 s.
    pub fn start(packages: &[&str], targets: impl FnOnce(&Path) -> String) -> Running {
        let plugins = crate::plugins_dir_with(packages);
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = crate::free_port();
        let body = format!("{}{}", intake(port), targets(dir.path()));
        let config = crate::fast_config(dir.path(), plugins.path(), &body);
        let daemon = Daemon::start(&config);
        crate::wait_for_port(port, std::time::Duration::from_secs(30));
        Running {
            dir,
            plugins,
            port,
            config,
            daemon,
        }
    }

    /// Writes the config again with these targets (for a reload).
    pub fn rewrite(&self, targets: &str) {
        let body = format!("{}{targets}", intake(self.port));
        crate::fast_config(self.dir.path(), self.plugins.path(), &body);
    }

    /// The config's path, as an argument.
    pub fn config_arg(&self) -> &str {
        self.config.to_str().expect("a temporary path is UTF-8")
    }
}

/// `healer run` on a config that writes no event log (with one, every
/// check is an event and crosses from its plugin worker, which the tests
/// of quiet checks must not have); killed when dropped. Waits until the
/// intake or API answers on `port`.
pub struct Unlogged(std::process::Child);

impl Unlogged {
    pub fn start(config: &Path, port: u16) -> Unlogged {
        let child = std::process::Command::new(crate::healer_bin())
            .args(["run", "--config"])
            .arg(config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("healer starts");
        let running = Unlogged(child);
        crate::wait_for_port(port, std::time::Duration::from_secs(30));
        running
    }
}

impl Drop for Unlogged {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
