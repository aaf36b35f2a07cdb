//! The Debian package, installed on this machine for real (as root, as CI
//! runs): `scripts/package` builds it; `dpkg -i` installs it; the binary,
//! the installed config, the plugins and the systemd unit work; `healer
//! run` from `/` with no `--config` runs the installed config and heals a
//! killed process; `dpkg -r` keeps config and state, `dpkg --purge`
//! removes them. The package is purged again whatever happens.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use healer_e2e::{free_port, is_alive, read_pid, run_bounded, signal, wait_until, workspace_root};

const LIMIT: Duration = Duration::from_secs(60);
const BUILD_LIMIT: Duration = Duration::from_secs(1200);

/// Runs `program args`, bounded; panics with its output unless it exits 0.
fn ok(program: &str, args: &[&str]) -> String {
    let output = run_bounded(Command::new(program).args(args), LIMIT);
    assert!(
        output.status.success(),
        "{program} {args:?}: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Purges the package when the test ends, passed or not.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .args(["--purge", "healer"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn the_debian_package_installs_runs_heals_and_is_removed_as_policy_says() {
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
    assert_eq!(
        uid, 0,
        "this test installs a Debian package: it runs as root (CI does)"
    );
    let started = Instant::now();
    // The package as shipped, built without cross-crate optimisation
    // (fat LTO in one codegen unit takes minutes of CI's 2 cores for what
    // this test does not look at: speed). Files, scripts, unit and the
    // binary's behaviour are the release's.
    let built = run_bounded(
        Command::new("bash")
            .arg(workspace_root().join("scripts/package"))
            .env("CARGO_PROFILE_RELEASE_LTO", "false")
            .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16"),
        BUILD_LIMIT,
    );
    assert!(
        built.status.success(),
        "scripts/package: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let said = String::from_utf8_lossy(&built.stdout);
    println!(
        "{} (the test's clock: {} s)",
        said.trim(),
        started.elapsed().as_secs()
    );
    let deb = said.split(':').next().expect("the .deb's path");
    let deb = workspace_root().join(deb);

    let _purge_at_the_end = Installed;
    ok("dpkg", &["-i", deb.to_str().unwrap()]);
    assert!(ok("/usr/bin/healer", &["--version"]).starts_with("healer "));
    let plugins: Vec<String> = std::fs::read_dir("/usr/lib/healer/plugins")
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for package in [
        "libhealer_plugin_process.so",
        "libhealer_plugin_command.so",
        "libhealer_plugin_system.so",
    ] {
        assert!(
            plugins.iter().any(|p| p == package),
            "{package} in {plugins:?}"
        );
    }
    ok(
        "systemd-analyze",
        &["verify", "/lib/systemd/system/healer.service"],
    );

    // The operator's edits of the installed config: the API on a free
    // port, and a service to keep running.
    let service = tempfile::tempdir().unwrap();
    let pidfile = service.path().join("service.pid");
    let port = free_port();
    let installed = std::fs::read_to_string("/etc/healer/healer.toml").unwrap();
    assert!(installed.contains("plugins_dir = \"/usr/lib/healer/plugins\""));
    let edited = installed.replace("127.0.0.1:8000", &format!("127.0.0.1:{port}"))
        + &format!(
            r#"
[[target]]
name = "kept-running"
interval = "200ms"
[target.monitor]
plugin = "process"
pidfile = "{pid}"
[[target.recover]]
plugin = "command"
argv = ["sh", "-c", "sleep 300 > /dev/null 2>&1 & echo $! > {pid}"]
"#,
            pid = pidfile.display()
        );
    std::fs::write("/etc/healer/healer.toml", edited).unwrap();
    let check = run_bounded(
        Command::new("/usr/bin/healer")
            .arg("check")
            .current_dir("/"),
        LIMIT,
    );
    assert!(
        check.status.success(),
        "healer check from / reads /etc/healer/healer.toml: {check:?}"
    );

    let mut daemon = Command::new("/usr/bin/healer")
        .arg("run")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let first = wait_until("the service started by healer", LIMIT, || {
        read_pid(&pidfile)
    });
    signal(first, "KILL");
    let second = wait_until("the killed service started again", LIMIT, || {
        read_pid(&pidfile).filter(|pid| *pid != first && is_alive(*pid))
    });
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let stopped = wait_until("healer stopped", LIMIT, || daemon.try_wait().ok().flatten());
    assert!(stopped.success(), "{stopped:?}");
    signal(second, "KILL");
    assert!(
        Path::new("/var/lib/healer/healer.db").is_file(),
        "its state in /var/lib/healer"
    );
    assert!(
        Path::new("/var/log/healer/healer.log").is_file(),
        "its log in /var/log/healer"
    );

    ok("dpkg", &["-r", "healer"]);
    assert!(
        !Path::new("/usr/bin/healer").exists(),
        "removed: the binary goes"
    );
    assert!(
        Path::new("/etc/healer/healer.toml").is_file(),
        "removed: the config stays"
    );
    assert!(
        Path::new("/var/lib/healer/healer.db").is_file(),
        "removed: the state stays"
    );

    ok("dpkg", &["--purge", "healer"]);
    for gone in [
        "/etc/healer",
        "/var/lib/healer",
        "/var/log/healer",
        "/usr/lib/healer",
    ] {
        assert!(!Path::new(gone).exists(), "purged: {gone} goes");
    }
    println!("package test: {} s in all", started.elapsed().as_secs());
}
