//! healer never acts on false evidence: a flood on the intake at the
//! descriptor limit fakes no outage and spends no recovery attempt, while a
//! real kill during it is still healed.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use healer::clock::Wall;
use healer_e2e::{
    fast_config, free_port, is_alive, plugins_dir_with, post_json, read_pid, signal, wait_for_port,
    wait_until, Daemon, Event, Record,
};

const LIMIT: Duration = Duration::from_secs(30);

/// Kills the service and waits until healer has started a new one and
/// seen it healthy; how long the restart took.
fn kill_and_see_it_restarted(daemon: &Daemon, pidfile: &Path) -> Duration {
    let resolved = || daemon.count(|e| matches!(e, Event::IssueResolved { .. }));
    let before = resolved();
    let old = wait_until("the service runs", LIMIT, || {
        read_pid(pidfile).filter(|&p| is_alive(p))
    });
    let killed = Instant::now();
    signal(old, "KILL");
    wait_until("healer restarts the service", LIMIT, || {
        read_pid(pidfile).filter(|&p| p != old && is_alive(p))
    });
    let restarted_in = killed.elapsed();
    wait_until("healer sees it healthy", LIMIT, || {
        (resolved() > before).then_some(())
    });
    restarted_in
}

/// Connections that each send half a request, then a byte every 500 ms (a
/// slow-loris attack), until dropped.
struct SlowLoris {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<usize>>,
}

impl SlowLoris {
    fn start(port: u16, connections: usize) -> SlowLoris {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut open: Vec<TcpStream> = (0..connections)
                .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
                .collect();
            for stream in &mut open {
                let _ = stream.write_all(
                    b"POST /anomaly HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n",
                );
            }
            let opened = open.len();
            while !stopping.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(500));
                for stream in &mut open {
                    let _ = stream.write_all(b"X");
                }
            }
            opened
        });
        SlowLoris {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().map_or(0, |t| t.join().unwrap_or(0))
    }
}

impl Drop for SlowLoris {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The events of `target` between `from` and `to`.
fn during(records: &[Record], from: Wall, to: Wall) -> Vec<Event> {
    records
        .iter()
        .filter(|r| r.at >= from && r.at <= to)
        .map(|r| r.event.clone())
        .collect()
}

#[test]
fn a_slow_loris_flood_at_the_descriptor_limit_fakes_no_outage() {
    let plugins = plugins_dir_with(&["healer-plugin-process", "healer-plugin-command"]);
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("service.pid");
    // The service runs before healer starts: healer spends no attempt on it.
    let mut first = Command::new("sleep").arg("600").spawn().unwrap();
    std::fs::write(&pidfile, first.id().to_string()).unwrap();
    let port = free_port();
    let body = format!(
        r#"
[[target]]
name = "service"
interval = "200ms"
stable_after = "3s"
monitor = {{ plugin = "process", pidfile = "{pidfile}" }}
[[target.recover]]
plugin = "command"
argv = ["sh", "-c", "sleep 600 & echo $! > {pidfile}"]

[intake]
bind = "127.0.0.1:{port}"
"#,
        pidfile = pidfile.display()
    );
    let config = fast_config(dir.path(), plugins.path(), &body);
    // The usual soft limit of 1,024 open files, which healer cannot raise.
    let mut daemon = Daemon::start_under(&config, &["prlimit", "--nofile=1024:1024"]);
    wait_for_port(port, LIMIT);
    daemon.wait_for("the service is seen running", LIMIT, |e| {
        matches!(e, Event::Checked { target, status: healer_plugin_sdk::Status::Ok, .. } if target == "service")
    });
    // This test process holds the 1,100 connections itself.
    let own = std::process::id().to_string();
    let raised = Command::new("prlimit")
        .args(["--pid", &own, "--nofile=4096:"])
        .status()
        .unwrap();
    assert!(raised.success());

    let attack_started = Wall::now();
    let attack = SlowLoris::start(port, 1_100);
    std::thread::sleep(Duration::from_secs(3));
    let asked = Instant::now();
    let (status, answer) = post_json(port, "/anomaly", r#"{"name": "nobody.knows.this"}"#);
    let answered_in = asked.elapsed();
    let healed_in = kill_and_see_it_restarted(&daemon, &pidfile);
    std::thread::sleep(Duration::from_secs(3));
    let opened = attack.stop();
    let attack_ended = Wall::now();

    println!(
        "{opened} trickling connections: a good request answered in {answered_in:?}, a kill -9 restarted in {healed_in:?}"
    );
    assert!(opened >= 1_000, "the attack opened {opened} connections");
    assert_eq!(status, 200, "{answer}");
    assert!(
        answered_in < Duration::from_secs(1),
        "a good request took {answered_in:?} during the attack"
    );
    let attacked = during(&daemon.records(), attack_started, attack_ended);
    let opened_issues: Vec<_> = attacked
        .iter()
        .filter_map(|e| match e {
            Event::IssueOpened { issue, .. } => Some(issue.kind.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        opened_issues,
        ["process.critical"],
        "the one real kill, nothing made up: {attacked:?}"
    );
    let attempts = attacked
        .iter()
        .filter(|e| matches!(e, Event::AttemptStarted { .. }))
        .count();
    assert_eq!(attempts, 1, "one attempt, for the real kill");
    assert!(
        !attacked.iter().any(|e| matches!(
            e,
            Event::PluginFailed { .. } | Event::RecoveryWithheld { .. }
        )),
        "the monitor never failed: {attacked:?}"
    );

    // After it: three real kills in a row are all healed.
    std::thread::sleep(Duration::from_millis(3_500)); // stable_after
    for n in 1..=3 {
        let healed_in = kill_and_see_it_restarted(&daemon, &pidfile);
        println!("after the attack, kill {n} of 3 restarted in {healed_in:?}");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !daemon
            .records()
            .iter()
            .any(|r| matches!(r.event, Event::IssueEscalated { .. })),
        "no attempt was spent on the attack"
    );
    assert!(daemon.is_running());
    let _ = first.kill();
    let _ = first.wait();
    if let Some(pid) = read_pid(&pidfile) {
        signal(pid, "KILL");
    }
}
