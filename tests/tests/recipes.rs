//! The recipes in `docs/recipes/`, run as written: every block marked
//! `file=NAME` is written (with a temporary directory for the recipe's
//! `/srv/...` directory and a free port for its own), and healer runs the
//! recipe's target against a real server from Debian.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use healer_e2e::{
    fast_config, free_port, is_alive, markdown_files, plugins_dir_with, read_pid, signal,
    wait_until, workspace_root, Daemon, Event, Record,
};

const LIMIT: Duration = Duration::from_secs(30);

/// How long a phase is watched after it healed, for a second restart.
const QUIET: Duration = Duration::from_secs(4);

/// The demo nginx, ended with its whole group when the test ends.
struct Nginx<'a> {
    pidfile: &'a Path,
}

impl Drop for Nginx<'_> {
    fn drop(&mut self) {
        if let Some(pid) = read_pid(self.pidfile) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
    }
}

/// Whether nginx answers `200` on `port` within a second.
fn answers(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let request = format!("GET / HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

/// The nginx target's events from `from` on.
fn nginx_events(records: &[Record], from: usize) -> Vec<Event> {
    records
        .iter()
        .skip(from)
        .map(|record| record.event.clone())
        .filter(|event| event.subject() == Some("nginx"))
        .collect()
}

/// What one phase did: its restarts, the kinds opened and resolved.
struct Phase {
    restarts: usize,
    succeeded: usize,
    opened: Vec<String>,
    resolved: HashSet<String>,
    took: Duration,
}

/// Does `act` to the running nginx (its master's pid), then waits until a
/// new master answers, nothing is open, and a quiet while has passed.
fn phase(daemon: &mut Daemon, pidfile: &Path, port: u16, act: impl FnOnce(u32)) -> Phase {
    let from = daemon.records().len();
    let before = read_pid(pidfile).expect("nginx runs");
    let started = Instant::now();
    act(before);
    let took = loop {
        let now = read_pid(pidfile);
        if now.is_some_and(|now| now != before && is_alive(now) && answers(port)) {
            break started.elapsed();
        }
        if started.elapsed() > LIMIT {
            let events: Vec<String> = nginx_events(&daemon.records(), from)
                .iter()
                .filter(|e| !matches!(e, Event::Checked { .. }))
                .map(|e| format!("{e:?}"))
                .collect();
            let errors = pidfile.with_file_name("error.log");
            panic!(
                "no new nginx master answers within {LIMIT:?}; events:\n{}\nerror.log:\n{}",
                events.join("\n"),
                std::fs::read_to_string(errors).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    wait_until("every issue of the phase resolved", LIMIT, || {
        let events = nginx_events(&daemon.records(), from);
        let opened = events
            .iter()
            .filter(|e| matches!(e, Event::IssueOpened { .. }))
            .count();
        let resolved = events
            .iter()
            .filter(|e| matches!(e, Event::IssueResolved { .. }))
            .count();
        (opened > 0 && opened == resolved).then_some(())
    });
    std::thread::sleep(QUIET);
    let events = nginx_events(&daemon.records(), from);
    let mut phase = Phase {
        restarts: 0,
        succeeded: 0,
        opened: Vec::new(),
        resolved: HashSet::new(),
        took,
    };
    for event in events {
        match event {
            Event::AttemptStarted { .. } => phase.restarts += 1,
            Event::AttemptFinished { recovered, .. } => phase.succeeded += usize::from(recovered),
            Event::IssueOpened { issue, .. } => phase.opened.push(issue.kind),
            Event::IssueResolved { issue, .. } => {
                phase.resolved.insert(issue.kind);
            }
            _ => {}
        }
    }
    phase
}

#[test]
fn nginx_watched_by_pidfile_and_http_is_restarted_once_per_failure() {
    // Debian's nginx-light (.ci/run installs it): a real server, never skipped.
    assert!(
        Path::new("/usr/sbin/nginx").exists(),
        "this test needs nginx: apt-get install -y nginx-light (.ci/run installs it)"
    );
    let recipe = workspace_root().join("docs/recipes/nginx.md");
    let markdown = std::fs::read_to_string(&recipe).expect("docs/recipes/nginx.md");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut target = None;
    for (file, text) in markdown_files(&markdown) {
        let text = text
            .replace("/srv/nginx-demo", &dir.path().display().to_string())
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"));
        if file.ends_with(".toml") {
            target = Some(text);
            continue;
        }
        let path = dir.path().join(&file);
        std::fs::write(&path, text).unwrap();
        if file == "restart-nginx" {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    let target = target.expect("the recipe's healer target (a file=... .toml block)");
    let plugins = plugins_dir_with(&[
        "healer-plugin-process",
        "healer-plugin-http",
        "healer-plugin-command",
    ]);
    let pidfile = dir.path().join("nginx.pid");
    let _nginx = Nginx { pidfile: &pidfile };
    let config = fast_config(dir.path(), plugins.path(), &format!("\n{target}"));
    let mut daemon = Daemon::start(&config);

    // healer starts it: the pidfile names nothing yet.
    wait_until("healer starts nginx", LIMIT, || {
        read_pid(&pidfile).filter(|pid| is_alive(*pid) && answers(port))
    });
    wait_until("the first start verified", LIMIT, || {
        let events = nginx_events(&daemon.records(), 0);
        events
            .iter()
            .any(|e| matches!(e, Event::IssueResolved { .. }))
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));

    let stopped_master = phase(&mut daemon, &pidfile, port, |pid| signal(pid, "STOP"));
    let killed_master = phase(&mut daemon, &pidfile, port, |pid| signal(pid, "KILL"));
    let stopped_server = phase(&mut daemon, &pidfile, port, |pid| {
        signal(pid, "STOP");
        let status = std::process::Command::new("kill")
            .args(["-STOP", "--", &format!("-{pid}")])
            .status()
            .expect("kill runs");
        assert!(status.success());
    });
    for (name, phase) in [
        ("kill -STOP of the master", &stopped_master),
        ("kill -9 of the master", &killed_master),
        ("kill -STOP of the whole server", &stopped_server),
    ] {
        println!(
            "{name}: running again after {:.2} s; {} restart(s), {} succeeded; opened {:?}, resolved {:?}",
            phase.took.as_secs_f64(),
            phase.restarts,
            phase.succeeded,
            phase.opened,
            phase.resolved
        );
        assert_eq!(phase.restarts, 1, "{name}: exactly one restart");
        assert_eq!(phase.succeeded, 1, "{name}: and it succeeded");
        for kind in &phase.opened {
            assert!(phase.resolved.contains(kind), "{name}: {kind} resolved");
        }
    }
    assert!(
        stopped_master
            .opened
            .contains(&"process.stopped".to_owned()),
        "{:?}",
        stopped_master.opened
    );
    assert!(
        killed_master
            .opened
            .contains(&"process.not_running".to_owned()),
        "{:?}",
        killed_master.opened
    );

    // No two recoveries ever overlapped: each attempt ended before the next.
    let mut running = false;
    for event in nginx_events(&daemon.records(), 0) {
        match event {
            Event::AttemptStarted { .. } => {
                assert!(!running, "a restart began while another ran");
                running = true;
            }
            Event::AttemptFinished { .. } => running = false,
            _ => {}
        }
    }
    let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
    assert!(
        !log.contains("still could not bind()"),
        "a restart found the port held by the old workers:\n{log}"
    );
}
