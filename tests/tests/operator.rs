//! The operator's commands against the real daemon: live reload (SIGHUP
//! and `healer reload`), maintenance pauses, `healer status` against the
//! API, the token on reads, and systemd's notify protocol with a
//! watchdog that follows the engine's real progress.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use healer_e2e::{
    api, fast_config, free_port, get, get_with_token, intake, plugins_dir_with, read_pid,
    run_healer, stdout, supervised_target, wait_for_port, wait_until, Daemon, Event, Running,
};

const LIMIT: Duration = Duration::from_secs(20);

/// A target that is always healthy (`true` as a Nagios check).
fn healthy(name: &str) -> String {
    format!(
        "\n[[target]]\nname = \"{name}\"\nmonitor = {{ plugin = \"nagios\", command = [\"true\"] }}\n"
    )
}

/// A target whose process never runs and whose recovery never helps:
/// its issue counts attempts, `backoff` apart.
fn failing(dir: &Path, name: &str, extra: &str) -> String {
    format!(
        "\n[[target]]\nname = \"{name}\"\nmax_attempts = 5\nbackoff = \"300ms\"\nbackoff_max = \"300ms\"\n{extra}\
         monitor = {{ plugin = \"process\", pidfile = \"{}/{name}.pid\" }}\n\
         [[target.recover]]\nplugin = \"command\"\nargv = [\"true\"]\n",
        dir.display()
    )
}

fn issue_attempts(port: u16, target: &str) -> Option<u64> {
    let issues = api(port, &format!("/api/v1/issues?target={target}"));
    issues.as_array()?.first()?["attempts"].as_u64()
}

fn checks_of(daemon: &Daemon, target: &str) -> usize {
    daemon.count(|e| matches!(e, Event::Checked { target: t, .. } if t == target))
}

#[test]
fn sighup_adds_and_removes_targets_keeps_attempts_and_a_broken_config_changes_nothing() {
    let mut healer = Running::start(
        &[
            "healer-plugin-nagios",
            "healer-plugin-process",
            "healer-plugin-command",
        ],
        |dir| {
            format!(
                "{}{}{}",
                healthy("stays"),
                healthy("goes"),
                failing(dir, "flaky", "")
            )
        },
    );
    let (port, config) = (healer.port, healer.config.clone());
    wait_until("flaky has made two attempts", LIMIT, || {
        issue_attempts(port, "flaky").filter(|n| *n >= 2)
    });

    // flaky changes (its interval), goes goes, comes comes.
    let after = format!(
        "{}{}{}",
        healthy("stays"),
        healthy("comes"),
        failing(healer.dir.path(), "flaky", "interval = \"150ms\"\n")
    );
    healer.rewrite(&after);
    let daemon = &mut healer.daemon;
    let attempts_before = issue_attempts(port, "flaky").expect("flaky's issue is open");
    healer_e2e::signal(daemon.pid(), "HUP");
    let reloaded = daemon.wait_for("the reload", LIMIT, |e| {
        matches!(e, Event::ConfigReloaded { .. })
    });
    let Event::ConfigReloaded {
        added,
        removed,
        changed,
        ..
    } = reloaded
    else {
        unreachable!()
    };
    assert_eq!(
        (added, removed, changed),
        (
            vec!["comes".to_owned()],
            vec!["goes".to_owned()],
            vec!["flaky".to_owned()]
        )
    );
    let attempts_after = issue_attempts(port, "flaky").expect("flaky's issue is still open");
    assert!(
        attempts_after >= attempts_before,
        "the restarted target kept its attempts: {attempts_before} before, {attempts_after} after"
    );
    wait_until("comes is checked", LIMIT, || {
        (checks_of(daemon, "comes") > 0).then_some(())
    });
    let goes = checks_of(daemon, "goes");
    let names: Vec<String> = api(port, "/api/v1/targets")
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(names, ["comes", "flaky", "stays"]);

    // A broken config is rejected; the running targets carry on.
    std::fs::write(
        &config,
        format!(
            "{}\n[[target]]\nnmae = \"x\"\n",
            std::fs::read_to_string(&config).unwrap()
        ),
    )
    .unwrap();
    healer_e2e::signal(daemon.pid(), "HUP");
    let rejected = daemon.wait_for("the rejection", LIMIT, |e| {
        matches!(e, Event::ConfigRejected { .. })
    });
    let Event::ConfigRejected { problems, .. } = rejected else {
        unreachable!()
    };
    assert!(problems.iter().any(|p| p.contains("nmae")), "{problems:?}");
    let stays = checks_of(daemon, "stays");
    wait_until("stays is still checked", LIMIT, || {
        (checks_of(daemon, "stays") > stays + 3).then_some(())
    });
    assert_eq!(
        checks_of(daemon, "goes"),
        goes,
        "a removed target is not checked again"
    );
    assert!(daemon.is_running());

    // `healer reload` on a broken config says so, and sends nothing.
    let output = run_healer(&["reload", "--config", config.to_str().unwrap()], LIMIT);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("not sent for reload"),
        "{output:?}"
    );
}

#[test]
fn a_package_copied_in_is_loaded_by_healer_reload_and_its_plugin_runs() {
    let mut healer = Running::start(&["healer-plugin-nagios"], |_| healthy("first"));
    let port = healer.port;
    std::fs::copy(
        healer_e2e::package_file("healer-plugin-process"),
        healer.plugins.path().join("libhealer_plugin_process.so"),
    )
    .unwrap();
    let pidfile = healer.dir.path().join("me.pid");
    std::fs::write(&pidfile, std::process::id().to_string()).unwrap();
    healer.rewrite(&format!(
        "{}\n[[target]]\nname = \"me\"\nmonitor = {{ plugin = \"process\", pidfile = \"{}\" }}\n",
        healthy("first"),
        pidfile.display()
    ));
    let output = run_healer(
        &["reload", "--json", "--config", healer.config_arg()],
        LIMIT,
    );
    assert!(output.status.success(), "{output:?}");
    let answer: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON");
    assert_eq!(answer["added"], serde_json::json!(["me"]));
    assert!(
        answer["packages_added"][0]
            .as_str()
            .is_some_and(|f| f.ends_with("libhealer_plugin_process.so")),
        "{answer}"
    );
    healer.daemon.wait_for("the new target checked OK", LIMIT, |e| {
        matches!(e, Event::Checked { target, status: healer_plugin_sdk::Status::Ok, .. } if target == "me")
    });
    let plugins_seen = api(port, "/api/v1/plugins");
    assert_eq!(
        plugins_seen["packages"].as_array().map(Vec::len),
        Some(2),
        "{plugins_seen}"
    );
}

#[test]
fn a_reload_that_changes_plugins_settings_needs_a_restart_and_keeps_every_package_in_its_worker() {
    let mut healer = Running::start(&["healer-plugin-nagios"], |_| healthy("first"));
    healer.daemon.wait_for(
        "the first check",
        LIMIT,
        |e| matches!(e, Event::Checked { target, .. } if target == "first"),
    );
    // Asking for the packages in healer itself, and a new target whose
    // instances a reload creates at once.
    healer.rewrite(&format!(
        "\n[plugins]\nisolation = \"in-process\"\nmemory_limit = \"512MiB\"\n{}{}",
        healthy("first"),
        healthy("second")
    ));
    let output = run_healer(
        &["reload", "--json", "--config", healer.config_arg()],
        LIMIT,
    );
    assert!(output.status.success(), "{output:?}");
    let answer: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON");
    assert_eq!(answer["added"], serde_json::json!(["second"]), "{answer}");
    assert_eq!(
        answer["needs_restart"],
        serde_json::json!(["[plugins]"]),
        "{answer}"
    );
    healer.daemon.wait_for(
        "the new target checked",
        LIMIT,
        |e| matches!(e, Event::Checked { target, .. } if target == "second"),
    );
    let pid = healer.daemon.pid();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert!(
        !maps.contains("libhealer_plugin_nagios"),
        "a reload loaded the package into healer itself"
    );
    let workers = healer_e2e::workers_of(pid);
    assert!(
        workers
            .iter()
            .any(|(_, cmdline)| cmdline.contains("libhealer_plugin_nagios.so")),
        "{workers:?}"
    );
    // The next reload still says so: healer still runs the old settings.
    let again = run_healer(
        &["reload", "--json", "--config", healer.config_arg()],
        LIMIT,
    );
    let answer: serde_json::Value = serde_json::from_str(&stdout(&again)).expect("JSON");
    assert_eq!(answer["needs_restart"], serde_json::json!(["[plugins]"]));
}

/// healer supervising `sleep` through a pidfile (`supervised_target`),
/// with its API on a free port; the service runs.
struct Supervised {
    running: Running,
    pidfile: std::path::PathBuf,
    /// The service's first pid.
    first: u32,
}

impl Supervised {
    fn start() -> Supervised {
        let running = Running::start(&["healer-plugin-process", "healer-plugin-command"], |dir| {
            supervised_target(dir, 120)
        });
        let pidfile = running.dir.path().join("service.pid");
        let first = wait_until("the service runs", LIMIT, || read_pid(&pidfile));
        Supervised {
            running,
            pidfile,
            first,
        }
    }

    /// `healer pause service --for FOR --reason REASON`, which succeeds.
    fn pause(&self, duration: &str, reason: &str) {
        let output = run_healer(
            &[
                "pause",
                "service",
                "--for",
                duration,
                "--reason",
                reason,
                "--config",
                self.running.config_arg(),
            ],
            LIMIT,
        );
        assert!(output.status.success(), "{output:?}");
    }
}

#[test]
fn a_paused_target_is_not_recovered_until_the_pause_expires_even_across_a_restart() {
    let mut healer = Supervised::start();
    // Taken before the request: the pause runs from when healer gets it,
    // which a loaded machine may answer well after.
    let paused_at = Instant::now();
    healer.pause("6s", "disk swap");
    healer_e2e::signal(healer.first, "KILL");
    healer.running.daemon.wait_for(
        "the paused recovery",
        LIMIT,
        |e| matches!(e, Event::RecoveryPaused { reason, .. } if reason == "disk swap"),
    );
    let status = run_healer(&["status", "--config", healer.running.config_arg()], LIMIT);
    assert_eq!(status.status.code(), Some(2), "CRITICAL: {status:?}");
    assert!(
        stdout(&status).contains("PAUSED until"),
        "{}",
        stdout(&status)
    );

    // A restart keeps the pause.
    assert!(healer.running.daemon.stop());
    healer.running.daemon = Daemon::start(&healer.running.config);
    wait_for_port(healer.running.port, LIMIT);
    let targets = api(healer.running.port, "/api/v1/targets");
    assert_eq!(targets[0]["paused"]["reason"], "disk swap", "{targets}");
    assert_eq!(
        read_pid(&healer.pidfile),
        Some(healer.first),
        "not restarted while paused"
    );

    healer.running.daemon.wait_for(
        "the pause to expire",
        LIMIT,
        |e| matches!(e, Event::TargetResumed { reason, .. } if reason == "the pause expired"),
    );
    assert!(
        paused_at.elapsed() >= Duration::from_secs(6),
        "not before its time"
    );
    let next = wait_until("the service runs again", LIMIT, || {
        read_pid(&healer.pidfile).filter(|pid| *pid != healer.first)
    });
    healer_e2e::signal(next, "KILL");
}

#[test]
fn status_json_agrees_with_the_api_and_reads_need_the_token() {
    let plugins = plugins_dir_with(&["healer-plugin-nagios"]);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-operator-token\n").unwrap();
    let body = format!(
        "\n[intake]\nbind = \"127.0.0.1:{port}\"\ntoken_file = \"{}\"\n{}{}",
        token_file.display(),
        healthy("a"),
        healthy("b")
    );
    let config = fast_config(dir.path(), plugins.path(), &body);
    let _daemon = Daemon::start(&config);
    wait_for_port(port, LIMIT);
    for path in [
        "/api/v1/targets",
        "/api/v1/issues",
        "/api/v1/history",
        "/api/v1/plugins",
        "/metrics",
        "/",
    ] {
        assert_eq!(get(port, path).0, 401, "{path} without the token");
        assert_eq!(
            get_with_token(port, path, Some("wrong")).0,
            401,
            "{path} with a wrong token"
        );
    }
    assert_eq!(get(port, "/healthz").0, 200, "/healthz needs no token");
    wait_until("both targets checked", LIMIT, || {
        let (_, body) = get_with_token(port, "/api/v1/targets", Some("s3cret-operator-token"));
        let seen: serde_json::Value = serde_json::from_str(&body).ok()?;
        seen.as_array()?
            .iter()
            .all(|t| t["status"] == "OK")
            .then_some(())
    });
    let output = run_healer(
        &["status", "--json", "--config", config.to_str().unwrap()],
        LIMIT,
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let from_cli: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON");
    let (status, body) = get_with_token(port, "/api/v1/targets", Some("s3cret-operator-token"));
    assert_eq!(status, 200);
    let from_api: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let essentials = |targets: &serde_json::Value| -> Vec<(String, String, String, usize)> {
        targets
            .as_array()
            .expect("a list")
            .iter()
            .map(|t| {
                (
                    t["name"].as_str().unwrap_or_default().to_owned(),
                    t["monitor"].as_str().unwrap_or_default().to_owned(),
                    t["status"].as_str().unwrap_or_default().to_owned(),
                    t["issues"].as_array().map_or(0, Vec::len),
                )
            })
            .collect()
    };
    assert_eq!(essentials(&from_cli), essentials(&from_api));
    assert_eq!(essentials(&from_api).len(), 2);
}

/// A `NOTIFY_SOCKET` listener, as systemd would be.
struct Systemd {
    socket: UnixDatagram,
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl Systemd {
    fn new() -> Systemd {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("the notify socket binds");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        Systemd {
            socket,
            _dir: dir,
            path,
        }
    }

    /// Forgets the datagrams already queued.
    fn drain(&self) {
        self.socket.set_nonblocking(true).unwrap();
        let mut buffer = [0u8; 4096];
        while self.socket.recv(&mut buffer).is_ok() {}
        self.socket.set_nonblocking(false).unwrap();
    }

    /// Every datagram received within `within`, with when it came.
    fn listen(&self, within: Duration) -> Vec<(Instant, String)> {
        let started = Instant::now();
        let mut got = Vec::new();
        let mut buffer = [0u8; 4096];
        while started.elapsed() < within {
            if let Ok(n) = self.socket.recv(&mut buffer) {
                got.push((
                    Instant::now(),
                    String::from_utf8_lossy(&buffer[..n]).into_owned(),
                ));
            }
        }
        got
    }
}

#[test]
fn ready_and_watchdog_reach_systemd_and_a_stalled_target_loop_stops_the_pings() {
    let plugins = plugins_dir_with(&["healer-plugin-nagios"]);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Checks with a 1 s deadline: each nagios check's own timeout below it.
    let within = |target: String| target.replace("[\"true\"]", "[\"true\"], timeout = \"500ms\"");
    let body = format!(
        "timeout = \"1s\"\n{}{}{}",
        intake(port),
        within(healthy("steady")),
        within(healthy("stuck"))
    );
    let config = fast_config(dir.path(), plugins.path(), &body);
    let systemd = Systemd::new();
    let daemon = Daemon::start_with(
        &config,
        &[],
        &[
            ("NOTIFY_SOCKET", systemd.path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
            // Every wait of a loop has a deadline: only a bug stalls one.
            // Debug builds let a test stand in for that bug.
            ("HEALER_FAULT_FREEZE_TARGET", "stuck"),
        ],
    );
    let first = systemd.listen(Duration::from_secs(3));
    let said: Vec<&str> = first.iter().map(|(_, text)| text.as_str()).collect();
    assert!(said.iter().any(|t| t.contains("READY=1")), "{said:?}");
    wait_for_port(port, LIMIT);
    let started = Instant::now();
    let stalled = loop {
        let (status, body) = get(port, "/healthz");
        if status == 503 && body.contains("stuck") {
            break body;
        }
        assert!(
            started.elapsed() < LIMIT,
            "healthz never named the stuck loop: {body}; recoveries: {:?}",
            daemon
                .records()
                .iter()
                .filter(|r| matches!(
                    r.event,
                    Event::AttemptStarted { .. }
                        | Event::AttemptFinished { .. }
                        | Event::IssueEscalated { .. }
                ))
                .map(|r| format!("{} {}", r.event.name(), r.event.subject().unwrap_or("")))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let pings_before = first
        .iter()
        .filter(|(_, t)| t.contains("WATCHDOG=1"))
        .count();
    assert!(pings_before >= 3, "pinged while alive: {said:?}");
    // A ping on its way when the loop stalled is not a ping after it.
    std::thread::sleep(Duration::from_millis(300));
    systemd.drain();
    let during = systemd.listen(Duration::from_millis(1500));
    let pings = during
        .iter()
        .filter(|(_, t)| t.contains("WATCHDOG=1"))
        .count();
    assert_eq!(pings, 0, "no ping while {stalled}: {during:?}");
    assert!(
        during
            .iter()
            .any(|(_, t)| t.contains("STATUS=not making progress")),
        "{during:?}"
    );
}

#[test]
fn a_reload_that_changes_a_paused_target_keeps_it_paused() {
    let mut healer = Supervised::start();
    healer.pause("1h", "upgrade");
    let running = &mut healer.running;
    running.rewrite(&supervised_target(running.dir.path(), 120).replace(
        "name = \"service\"",
        "name = \"service\"\ninterval = \"150ms\"",
    ));
    healer_e2e::signal(running.daemon.pid(), "HUP");
    running.daemon.wait_for("the reload", LIMIT, |e| {
        matches!(e, Event::ConfigReloaded { changed, .. } if changed == &["service".to_owned()])
    });
    let targets = api(running.port, "/api/v1/targets");
    assert_eq!(targets[0]["paused"]["reason"], "upgrade", "{targets}");

    let attempts = |daemon: &Daemon| daemon.count(|e| matches!(e, Event::AttemptStarted { .. }));
    let before = attempts(&running.daemon); // the one that started the service
    healer_e2e::signal(healer.first, "KILL");
    running.daemon.wait_for(
        "the paused recovery",
        LIMIT,
        |e| matches!(e, Event::RecoveryPaused { reason, .. } if reason == "upgrade"),
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        attempts(&running.daemon),
        before,
        "nothing recovers a paused target"
    );
    assert_eq!(
        running
            .daemon
            .count(|e| matches!(e, Event::TargetResumed { .. })),
        0
    );
}

#[test]
fn api_writes_must_be_json_from_the_same_origin_and_status_says_when_healer_is_unreachable() {
    let mut healer = Running::start(&["healer-plugin-nagios"], |_| healthy("web"));
    let (port, daemon) = (healer.port, &mut healer.daemon);
    let pause = "/api/v1/targets/web/pause";
    let body = br#"{"for": "30m", "reason": "x"}"#;
    // What a form or a script on another page can send without asking.
    let (status, _) = healer_e2e::post(port, pause, "text/plain", &[], body);
    assert_eq!(status, 415);
    let (status, answer) = healer_e2e::post(
        port,
        pause,
        "application/json",
        &[("Origin", "http://evil.example")],
        body,
    );
    assert_eq!(status, 403, "{answer}");
    assert_eq!(daemon.count(|e| matches!(e, Event::TargetPaused { .. })), 0);
    let (status, answer) = healer_e2e::post(
        port,
        "/api/v1/targets/nope/pause",
        "application/json",
        &[],
        body,
    );
    assert_eq!(status, 404, "{answer}");
    let (status, answer) = healer_e2e::post(
        port,
        pause,
        "application/json",
        &[],
        br#"{"for": "forever"}"#,
    );
    assert_eq!(status, 400, "{answer}");
    let (status, _) = healer_e2e::post(port, pause, "application/json", &[], body);
    assert_eq!(status, 200);
    daemon.wait_for("the pause", LIMIT, |e| {
        matches!(e, Event::TargetPaused { .. })
    });

    assert!(daemon.stop());
    let output = run_healer(&["status", "--config", healer.config_arg()], LIMIT);
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("cannot reach healer"),
        "{output:?}"
    );
}
