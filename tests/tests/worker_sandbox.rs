//! A plugin worker is a sandbox, not just a process: it starts with an
//! environment of the allowlist only (none of healer's secrets), no new
//! privileges, the capabilities its config keeps, as the user its config
//! names (and a process monitor running as `nobody` still watches a root
//! service), and, with `read_only`/`read_write`, Landlock rules under
//! which a read outside its paths is EACCES (the check UNKNOWN, never
//! CRITICAL). It dies with healer whichever thread forked it. `ps` shows
//! it as `healer worker <package file>`.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use healer_e2e::{
    fast_config, free_port, healer_bin, is_alive, package_file, plugins_dir_with, wait_for_port,
    wait_until, workers_of, Daemon, Event,
};
use healer_plugin_sdk::Status;

const LIMIT: Duration = Duration::from_secs(60);

/// What every worker's environment may hold, and nothing else.
const ALLOWLIST: [&str; 7] = [
    "PATH",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "HEALER_WORKER_PARENT",
    "MALLOC_ARENA_MAX",
];

/// The `/proc/PID/status` fields of a process, by name.
fn status_of(pid: u32) -> BTreeMap<String, String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.to_owned(), value.trim().to_owned()))
        .collect()
}

/// A capability set of `/proc/PID/status` (hex) as a mask.
fn mask(status: &BTreeMap<String, String>, field: &str) -> u64 {
    u64::from_str_radix(&status[field], 16).unwrap()
}

/// The worker whose command line names `file`, once it runs.
fn worker_serving(daemon: &Daemon, file: &str) -> u32 {
    wait_until(&format!("the worker of {file} runs"), LIMIT, || {
        workers_of(daemon.pid())
            .into_iter()
            .find(|(_, cmdline)| cmdline.contains(file))
            .map(|(pid, _)| pid)
    })
}

/// Waits for a check of `target` with `status`; returns its summary.
fn checked(daemon: &mut Daemon, target: &'static str, status: Status) -> String {
    let event = daemon.wait_for(
        &format!("a {status:?} check of {target}"),
        LIMIT,
        |e| matches!(e, Event::Checked { target: t, status: s, .. } if t == target && *s == status),
    );
    match event {
        Event::Checked { summary, .. } => summary,
        _ => unreachable!(),
    }
}

#[test]
fn a_worker_shows_in_ps_as_healer_worker_and_its_package_file_name() {
    let plugins = plugins_dir_with(&["healer-plugin-example"]);
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "[[target]]\nname = \"here\"\nmonitor = {{ plugin = \"file-exists\", path = \"{}\" }}\n",
        dir.path().display()
    );
    let mut daemon = Daemon::start(&fast_config(dir.path(), plugins.path(), &body));
    checked(&mut daemon, "here", Status::Ok);
    let worker = worker_serving(&daemon, "libhealer_plugin_example.so");

    let cmdline = std::fs::read(format!("/proc/{worker}/cmdline")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&cmdline),
        "healer\0worker\0libhealer_plugin_example.so\0",
        "its identity, file and sandbox are not on its command line"
    );
    let ps = Command::new("ps")
        .args(["-o", "args=", "-p", &worker.to_string()])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&ps.stdout).trim(),
        "healer worker libhealer_plugin_example.so"
    );
    assert_eq!(
        std::fs::read_link(format!("/proc/{worker}/exe")).unwrap(),
        std::fs::read_link(format!("/proc/{}/exe", daemon.pid())).unwrap(),
        "the worker is healer's own binary"
    );
}

#[test]
fn a_worker_holds_only_the_allowlisted_environment_and_none_of_healers_secrets() {
    let plugins = plugins_dir_with(&["healer-plugin-example"]);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let body = format!(
        "[intake]\nbind = \"127.0.0.1:{port}\"\ntoken_env = \"HEALER_TEST_TOKEN\"\n\n\
         [[target]]\nname = \"here\"\nmonitor = {{ plugin = \"file-exists\", path = \"{}\" }}\n",
        dir.path().display()
    );
    let config = fast_config(dir.path(), plugins.path(), &body);
    let mut daemon = Daemon::start_with(
        &config,
        &[],
        &[
            ("HEALER_TEST_TOKEN", "tok-s3cret-0123456789abcdef"),
            ("HOOK_SECRET", "hmac-s3cret-0123456789"),
            ("SOME_OTHER", "inherited-3"),
            ("LANG", "C.UTF-8"),
        ],
    );
    wait_for_port(port, LIMIT);
    checked(&mut daemon, "here", Status::Ok);
    let worker = worker_serving(&daemon, "libhealer_plugin_example.so");

    let environ = std::fs::read(format!("/proc/{worker}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    let vars: BTreeMap<&str, &str> = environ
        .split('\0')
        .filter_map(|entry| entry.split_once('='))
        .collect();
    println!("the worker's environment: {vars:?}");
    for secret in ["tok-s3cret", "hmac-s3cret", "inherited-3"] {
        assert!(
            !environ.contains(secret),
            "{secret} reached the worker: {vars:?}"
        );
    }
    for name in vars.keys() {
        assert!(
            ALLOWLIST.contains(name),
            "{name} is not on the allowlist: {vars:?}"
        );
    }
    assert_eq!(
        vars.get("PATH").copied(),
        Some(healer_plugin_sdk::command::PATH)
    );
    assert_eq!(vars.get("LANG").copied(), Some("C.UTF-8"));
    assert_eq!(
        vars.get("HEALER_WORKER_PARENT").copied(),
        Some(daemon.pid().to_string().as_str())
    );
}

/// A root worker's cleared environment keeps healer's secrets from it only
/// if it cannot read them where they still are: healer's own
/// `/proc/PID/environ`. A recovery (a program the worker runs, with the
/// worker's capabilities) tries.
#[test]
fn a_root_worker_cannot_read_healers_secrets_from_proc() {
    let plugins = plugins_dir_with(&["healer-fixture-typical", "healer-plugin-command"]);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let stolen = dir.path().join("stolen");
    // The recovery's shell is the worker's child; the worker is healer's.
    let body = format!(
        "[intake]\nbind = \"127.0.0.1:{port}\"\ntoken_env = \"HEALER_TEST_TOKEN\"\n\n\
         [[target]]\nname = \"nosy\"\nmonitor = {{ plugin = \"fixed\", status = \"CRITICAL\", summary = \"down\" }}\n\
         [[target.recover]]\nplugin = \"command\"\nargv = [\"sh\", \"-c\", \"h=$(cut -d' ' -f4 /proc/$PPID/stat); echo healer=$h > {out}; cat /proc/$h/environ >> {out} 2>&1; echo rc=$? >> {out}\"]\n",
        out = stolen.display(),
    );
    let config = fast_config(dir.path(), plugins.path(), &body);
    let mut daemon = Daemon::start_with(
        &config,
        &[],
        &[("HEALER_TEST_TOKEN", "tok-s3cret-0123456789abcdef")],
    );
    daemon.wait_for(
        "the recovery",
        LIMIT,
        |e| matches!(e, Event::RecovererFinished { target, .. } if target == "nosy"),
    );
    let text = std::fs::read_to_string(&stolen).unwrap();
    println!("the recovery's try: {text}");
    assert!(
        text.starts_with(&format!("healer={}\n", daemon.pid())),
        "the recovery looked at healer itself: {text}"
    );
    assert!(
        !text.contains("tok-s3cret"),
        "a root worker read healer's token: {text}"
    );
    assert!(
        text.contains("Permission denied") && !text.contains("rc=0"),
        "{text}"
    );
}

#[test]
fn a_root_worker_has_no_new_privileges_and_keeps_the_capabilities_its_config_names() {
    let plugins = plugins_dir_with(&["healer-plugin-example", "healer-plugin-system"]);
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "[plugins.package.\"libhealer_plugin_example.so\"]\ncapabilities = [\"CAP_KILL\", \"net_bind_service\"]\n\n\
         [[target]]\nname = \"here\"\nmonitor = {{ plugin = \"file-exists\", path = \"{}\" }}\n\
         [[target]]\nname = \"load\"\nmonitor = {{ plugin = \"system\" }}\n",
        dir.path().display()
    );
    let config = fast_config(dir.path(), plugins.path(), &body);
    let mut daemon = Daemon::start(&config);
    checked(&mut daemon, "here", Status::Ok);
    let named = status_of(worker_serving(&daemon, "libhealer_plugin_example.so"));
    let default = status_of(worker_serving(&daemon, "libhealer_plugin_system.so"));
    let healer = status_of(daemon.pid());
    println!("named: {named:?}\ndefault: {default:?}");

    assert_eq!(named["NoNewPrivs"], "1");
    assert_eq!(default["NoNewPrivs"], "1");
    assert_eq!(named["Uid"].split_whitespace().next(), Some("0"));
    // CAP_KILL is 5, CAP_NET_BIND_SERVICE 10.
    let kept = (1 << 5) | (1 << 10);
    for set in ["CapBnd", "CapPrm", "CapEff"] {
        assert_eq!(mask(&named, set), kept, "{set}");
    }
    // By default: all of healer's but loading kernel modules (16), raw
    // I/O (17), rebooting (22), the LSM's policy (32, 33), and reading
    // other processes: ptrace (19), sys_admin (21), perfmon (38), bpf
    // (39), checkpoint_restore (40).
    let dropped = (1 << 16)
        | (1 << 17)
        | (1 << 22)
        | (1 << 32)
        | (1 << 33)
        | (1 << 19)
        | (1 << 21)
        | (1u64 << 38)
        | (1u64 << 39)
        | (1u64 << 40);
    let expected = mask(&healer, "CapBnd") & !dropped;
    assert_eq!(mask(&default, "CapBnd"), expected);
    assert_eq!(mask(&default, "CapEff"), mask(&healer, "CapEff") & !dropped);
}

#[test]
fn a_package_run_as_nobody_still_watches_a_root_service_by_its_pidfile() {
    let plugins = plugins_dir_with(&["healer-plugin-process"]);
    let dir = tempfile::tempdir().unwrap();
    // Its user must be able to reach the pidfile.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let pidfile = dir.path().join("service.pid");
    let mut service = Command::new("sleep")
        .arg("600")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    std::fs::write(&pidfile, format!("{}\n", service.id())).unwrap();
    let body = format!(
        "[plugins.package.\"libhealer_plugin_process.so\"]\nuser = \"nobody\"\n\n\
         [[target]]\nname = \"svc\"\n\
         monitor = {{ plugin = \"process\", pidfile = \"{}\", watch = true }}\n\
         [[target.diagnose]]\nplugin = \"process\"\n",
        pidfile.display()
    );
    let config = fast_config(dir.path(), plugins.path(), &body);
    let mut daemon = Daemon::start(&config);
    checked(&mut daemon, "svc", Status::Ok);
    let worker = status_of(worker_serving(&daemon, "libhealer_plugin_process.so"));
    println!("the worker: {worker:?}");

    assert_eq!(worker["Uid"], "65534\t65534\t65534\t65534");
    assert_eq!(worker["NoNewPrivs"], "1");
    for set in ["CapBnd", "CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(mask(&worker, set), 0, "{set}");
    }
    // The root service dies: the worker, as nobody, sees it.
    service.kill().unwrap();
    service.wait().unwrap();
    daemon.wait_for("its exit opens an issue", LIMIT, |e| {
        matches!(e, Event::IssueOpened { target, issue } if target == "svc" && issue.kind == "process.not_running")
    });
}

#[test]
fn a_landlocked_package_reads_below_its_paths_and_nothing_else_is_unknown_not_critical() {
    let plugins = plugins_dir_with(&["healer-plugin-logscan"]);
    let dir = tempfile::tempdir().unwrap();
    let (allowed, elsewhere) = (dir.path().join("allowed"), dir.path().join("elsewhere"));
    for place in [&allowed, &elsewhere] {
        std::fs::create_dir(place).unwrap();
        std::fs::write(place.join("app.log"), "started\n").unwrap();
    }
    let target = |name: &str, place: &Path| {
        format!(
            "[[target]]\nname = \"{name}\"\nmonitor = {{ plugin = \"logscan\", path = \"{}\", from_start = true }}\n",
            place.join("app.log").display()
        )
    };
    let body = format!(
        "[plugins.package.\"libhealer_plugin_logscan.so\"]\nread_only = [\"{}\", \"/nonexistent-healer-19\"]\n\n{}{}",
        allowed.display(),
        target("inside", &allowed),
        target("outside", &elsewhere),
    );
    let config = fast_config(dir.path(), plugins.path(), &body);
    let mut daemon = Daemon::start(&config);

    let inside = checked(&mut daemon, "inside", Status::Ok);
    let outside = checked(&mut daemon, "outside", Status::Unknown);
    println!("inside: {inside}\noutside: {outside}");
    assert!(outside.contains("Permission denied"), "{outside}");
    // A while later: never CRITICAL. At start, one line named the package
    // and the path that allows nothing; none said the kernel could not
    // enforce the rules (this kernel has Landlock).
    std::thread::sleep(Duration::from_secs(1));
    let critical = daemon.count(|e| {
        matches!(e, Event::Checked { target, status: Status::Critical, .. } if target == "outside")
    });
    assert_eq!(critical, 0);
    let log = daemon.log_text();
    let said: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("its sandbox is not as configured"))
        .collect();
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said[0].contains("libhealer_plugin_logscan.so")
            && said[0].contains(
                "/nonexistent-healer-19 cannot be opened (missing?), so nothing there is allowed"
            )
            && !said[0].contains("Landlock"),
        "{}",
        said[0]
    );
}

#[test]
fn a_worker_forked_from_a_thread_that_exits_lives_on_and_dies_with_its_parent() {
    // A probe of a package whose constructor never returns: it stays up
    // until something kills it.
    let plugins = plugins_dir_with(&["healer-fixture-ctor-hangs"]);
    let file = plugins.path().join(
        package_file("healer-fixture-ctor-hangs")
            .file_name()
            .unwrap(),
    );
    let forked = std::thread::spawn({
        let file = file.clone();
        move || {
            let child = Command::new(healer_bin())
                .args(["worker", "--probe"])
                .arg(&file)
                .env("HEALER_WORKER_PARENT", std::process::id().to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            // The probe is under way (hung in the constructor) when the
            // thread that forked it ends, as a retiring pool thread would.
            std::thread::sleep(Duration::from_secs(2));
            child
        }
    })
    .join()
    .unwrap();
    // The thread that forked it is gone; the probe is not.
    std::thread::sleep(Duration::from_secs(1));
    let mut probe = forked;
    let lives_on = is_alive(probe.id());
    let _ = probe.kill();
    let _ = probe.wait();
    assert!(lives_on, "the probe died with the thread that forked it");

    // Forked by a shell that exits three seconds later: it lives while the
    // shell does, and dies with it.
    let mut shell = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "HEALER_WORKER_PARENT=$$ {} worker --probe {} >/dev/null 2>&1 & echo $!; sleep 3",
            healer_bin().display(),
            file.display()
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(shell.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let pid: u32 = line.trim().parse().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let lived = is_alive(pid);
    shell.wait().unwrap();
    wait_until("the probe dies with its parent", LIMIT, || {
        (!is_alive(pid)).then_some(())
    });
    assert!(lived, "the probe lived while its parent did");
}
