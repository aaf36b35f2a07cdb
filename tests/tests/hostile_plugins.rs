//! A bad `.so` can never take healer down: files whose library constructor
//! aborts, crashes, exits or hangs sit next to a healthy package; `healer
//! plugins` names each with its reason and lists the healthy one, and
//! `healer run` heals on. Files healer may not trust are refused, one line
//! each.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use healer_e2e::{
    fast_config, is_alive, package_file, plugins_dir_with, read_pid, run_healer, signal, stdout,
    supervised_target, wait_until, workers_of, Daemon, Event,
};
use healer_plugin_sdk::Status;

const LIMIT: Duration = Duration::from_secs(60);

const HOSTILE: [(&str, &str); 4] = [
    (
        "healer-fixture-ctor-aborts",
        "crashed while loading: killed by SIGABRT",
    ),
    (
        "healer-fixture-ctor-segfaults",
        "crashed while loading: killed by SIGSEGV",
    ),
    (
        "healer-fixture-ctor-exits",
        "exited with status 0 while loading",
    ),
    (
        "healer-fixture-ctor-hangs",
        "did not finish loading within 5s",
    ),
];

fn hostile_dir_with(healthy: &[&str]) -> tempfile::TempDir {
    let mut packages: Vec<&str> = HOSTILE.iter().map(|(package, _)| *package).collect();
    packages.extend(healthy);
    plugins_dir_with(&packages)
}

fn file_name(package: &str) -> String {
    package_file(package)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn healer_plugins_survives_constructors_that_abort_crash_exit_or_hang() {
    let dir = hostile_dir_with(&["healer-plugin-process"]);
    let started = Instant::now();
    let output = run_healer(&["plugins", "--dir", dir.path().to_str().unwrap()], LIMIT);
    let took = started.elapsed();
    let listing = stdout(&output);
    println!("healer plugins over 4 hostile files and 1 healthy one: {took:?}\n{listing}");

    assert_eq!(output.status.signal(), None, "killed: {listing}");
    assert_eq!(output.status.code(), Some(1), "{listing}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert!(
        listing.contains("healer-plugin-process 0.1.0"),
        "the healthy package is listed: {listing}"
    );
    for (package, reason) in HOSTILE {
        let line = listing
            .lines()
            .find(|line| line.contains(&file_name(package)))
            .unwrap_or_else(|| panic!("{package} is named: {listing}"));
        assert!(line.contains(reason), "{package}: {line}");
    }
}

#[test]
fn healer_run_heals_on_next_to_hostile_packages() {
    let plugins = hostile_dir_with(&["healer-plugin-process", "healer-plugin-command"]);
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("service.pid");
    let mut service = Command::new("sleep").arg("600").spawn().unwrap();
    std::fs::write(&pidfile, service.id().to_string()).unwrap();
    let config = fast_config(
        dir.path(),
        plugins.path(),
        &supervised_target(dir.path(), 600),
    );
    let mut daemon = Daemon::start(&config);
    daemon.wait_for(
        "the service is seen running",
        LIMIT,
        |e| matches!(e, Event::Checked { target, status: Status::Ok, .. } if target == "service"),
    );
    signal(service.id(), "KILL");
    let _ = service.wait();
    let restarted = wait_until("healer restarts the service", LIMIT, || {
        read_pid(&pidfile).filter(|&pid| pid != service.id() && is_alive(pid))
    });

    assert!(daemon.is_running());
    let log = std::fs::read_to_string(dir.path().join("healer.log")).unwrap_or_default();
    for (package, _) in HOSTILE {
        assert!(
            log.contains(&file_name(package)),
            "{package} named in the log"
        );
    }
    signal(restarted, "KILL");
}

#[test]
fn files_healer_may_not_trust_are_refused_one_line_each() {
    let dir = plugins_dir_with(&["healer-plugin-example"]);
    let copy_as = |name: &str| {
        let path = dir.path().join(name);
        std::fs::copy(package_file("healer-plugin-process"), &path).unwrap();
        path
    };
    let writable = copy_as("libworld_writable.so");
    std::fs::set_permissions(&writable, std::fs::Permissions::from_mode(0o666)).unwrap();
    let theirs = copy_as("libtheirs.so");
    nix_chown(&theirs, 65534);
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("libtarget.so");
    std::fs::copy(package_file("healer-plugin-http"), &target).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join("liblinked.so")).unwrap();

    let output = run_healer(&["plugins", "--dir", dir.path().to_str().unwrap()], LIMIT);
    let listing = stdout(&output);
    println!("{listing}");

    assert_eq!(output.status.code(), Some(1), "{listing}");
    assert!(listing.contains("healer-plugin-example"), "{listing}");
    let line_of = |name: &str| {
        let lines: Vec<&str> = listing.lines().filter(|l| l.contains(name)).collect();
        assert_eq!(lines.len(), 1, "one line for {name}: {listing}");
        lines[0].to_owned()
    };
    assert!(line_of("libworld_writable.so").contains("writable by group and others (mode 0666)"));
    assert!(line_of("libtheirs.so").contains("owned by uid 65534"));
    let linked = line_of("liblinked.so");
    assert!(linked.contains("links to"), "{linked}");
    assert!(
        linked.contains("writable by group and others (mode 0666)"),
        "{linked}"
    );
    assert!(!listing.contains("healer-plugin-process"), "{listing}");
    assert!(!listing.contains("healer-plugin-http "), "{listing}");
}

fn nix_chown(path: &Path, uid: u32) {
    let status = Command::new("chown")
        .arg(uid.to_string())
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

/// The SHA-256 of a file, lowercase hex.
fn sha256_of(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

#[test]
fn a_package_whose_sha256_does_not_match_its_pin_is_refused_and_a_matching_one_loads() {
    let plugins = plugins_dir_with(&["healer-plugin-example", "healer-plugin-process"]);
    let dir = tempfile::tempdir().unwrap();
    let example = file_name("healer-plugin-example");
    let process = file_name("healer-plugin-process");
    let good = sha256_of(&plugins.path().join(&process));
    let wrong = "0".repeat(64);
    let config = fast_config(
        dir.path(),
        plugins.path(),
        &format!(
            "[plugins.package.\"{example}\"]\nsha256 = \"{wrong}\"\n[plugins.package.\"{process}\"]\nsha256 = \"{good}\"\n"
        ),
    );
    let output = run_healer(&["--config", config.to_str().unwrap(), "plugins"], LIMIT);
    let listing = stdout(&output);
    println!("{listing}");

    assert_eq!(output.status.code(), Some(1), "{listing}");
    let refused: Vec<&str> = listing.lines().filter(|l| l.contains(&example)).collect();
    assert_eq!(refused.len(), 1, "one line for the pinned file: {listing}");
    assert!(
        refused[0].contains(&format!(
            "but [plugins.package.\"{example}\"] pins {wrong}; not loaded"
        )),
        "{}",
        refused[0]
    );
    assert!(
        refused[0].contains(&sha256_of(&plugins.path().join(&example))),
        "names the file's own sha256: {}",
        refused[0]
    );
    assert!(
        listing.contains(&format!("sha256 {good}  isolation process")),
        "the matching pin loads, its sha256 printed: {listing}"
    );
}

#[test]
fn a_package_may_opt_in_to_run_in_process() {
    let plugins = plugins_dir_with(&["healer-plugin-example"]);
    let dir = tempfile::tempdir().unwrap();
    let example = file_name("healer-plugin-example");
    let config = fast_config(
        dir.path(),
        plugins.path(),
        &format!(
            "[plugins.package.\"{example}\"]\nisolation = \"in-process\"\n\n[[target]]\nname = \"here\"\nmonitor = {{ plugin = \"file-exists\", path = \"{}\" }}\n",
            dir.path().display()
        ),
    );
    let listing = stdout(&run_healer(
        &["--config", config.to_str().unwrap(), "plugins"],
        LIMIT,
    ));
    assert!(listing.contains("isolation in-process"), "{listing}");
    let mut daemon = Daemon::start(&config);
    daemon.wait_for(
        "the in-process monitor checks",
        LIMIT,
        |e| matches!(e, Event::Checked { target, status: Status::Ok, .. } if target == "here"),
    );
    assert_eq!(
        workers_of(daemon.pid()),
        [],
        "no worker for an in-process package"
    );
}
