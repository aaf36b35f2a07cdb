//! Crash-to-restart time of a supervised process: `kill -9`, then poll (every
//! millisecond) until the pidfile names a new live process. Ten kills with
//! the process monitor's pidfd watch in a plugin worker (the default), ten
//! with the package in-process, ten with polling only; all with a 1 s
//! check interval (Monit's cycle in the issue's comparison).
//!
//! Run with `cargo bench -p healer-e2e --bench crash_restart`.

use std::hash::BuildHasher;
use std::path::Path;
use std::time::{Duration, Instant};

use healer_e2e::{is_alive, plugins_dir_with, signal, test_paths, wait_until, Daemon, Event};

const KILLS: usize = 10;
const LIMIT: Duration = Duration::from_secs(30);

fn read_pid(pidfile: &Path) -> Option<u32> {
    std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()
}

fn measure(watch: bool, isolation: &str) -> Vec<Duration> {
    let plugins = plugins_dir_with(&["healer-plugin-process", "healer-plugin-command"]);
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("service.pid");
    let config = format!(
        r#"
[healer]
interval = "1s"
max_attempts = 1000
stable_after = "0s"
{paths}
[plugins]
isolation = "{isolation}"

[[target]]
name = "service"
monitor = {{ plugin = "process", pidfile = "{pidfile}", watch = {watch} }}
[[target.recover]]
plugin = "command"
argv = ["sh", "-c", "sleep 600 & echo $! > {pidfile}"]
"#,
        paths = test_paths(plugins.path()),
        pidfile = pidfile.display(),
    );
    std::fs::write(dir.path().join("healer.toml"), config).unwrap();
    let mut daemon = Daemon::start(&dir.path().join("healer.toml"));
    daemon.wait_for("the first start", LIMIT, |e| {
        matches!(e, Event::IssueResolved { .. })
    });

    let mut times = Vec::new();
    for _ in 0..KILLS {
        let old = wait_until("the service runs", LIMIT, || {
            read_pid(&pidfile).filter(|&p| is_alive(p))
        });
        // Kill at a random point of the check cycle.
        let random = std::collections::hash_map::RandomState::new().hash_one(times.len());
        std::thread::sleep(Duration::from_millis(1000 + random % 1000));
        let killed = Instant::now();
        signal(old, "KILL");
        wait_until("restarted", LIMIT, || {
            read_pid(&pidfile).filter(|&p| p != old && is_alive(p))
        });
        times.push(killed.elapsed());
    }
    if let Some(pid) = read_pid(&pidfile) {
        signal(pid, "KILL");
    }
    times
}

fn report(label: &str, mut times: Vec<Duration>) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{label:<42} min {:>8.1} ms   median {:>8.1} ms   max {:>8.1} ms",
        ms(times[0]),
        ms((times[KILLS / 2 - 1] + times[KILLS / 2]) / 2),
        ms(times[KILLS - 1])
    );
}

fn main() {
    println!("crash-to-restart over {KILLS} kills, check interval 1 s\n");
    report(
        "process watch (pidfd push), in a worker",
        measure(true, "process"),
    );
    report(
        "process watch (pidfd push), in-process",
        measure(true, "in-process"),
    );
    report("polling only (watch = false)", measure(false, "process"));
}
