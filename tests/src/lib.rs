//! Helpers for the end-to-end tests: build the real `healer` binary and the
//! real plugin packages with cargo (test builds do not produce `.so` files),
//! copy packages into a fresh plugins directory, and run the binary with a
//! bounded wait.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Every package the tests load, built in one cargo call.
const PACKAGES: &[&str] = &[
    "healer",
    "healer-plugin-example",
    "healer-fixture-no-root",
    "healer-fixture-other-sdk-major",
    "healer-fixture-wrong-layout",
    "healer-fixture-init-panics",
    "healer-fixture-panicky",
    "healer-fixture-typical",
];

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e crate lives inside the workspace")
        .to_owned()
}

/// The `target/<profile>` directory the running test was built into, so
/// the binary and packages are built with the same profile.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/<profile>/deps/<test-binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps")
        .to_owned()
}

/// Builds the healer binary and every plugin/fixture package once per test
/// process, and returns the directory holding them.
pub fn built() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let profile_dir = profile_dir();
        let target_dir = profile_dir.parent().expect("target/<profile>");
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .current_dir(workspace_root())
            .arg("build")
            .arg("--quiet");
        cargo.arg("--target-dir").arg(target_dir);
        if profile_dir
            .file_name()
            .is_some_and(|name| name == "release")
        {
            cargo.arg("--release");
        }
        for package in PACKAGES {
            cargo.args(["-p", package]);
        }
        let status = cargo.status().expect("cargo runs");
        assert!(status.success(), "building the binary and packages failed");
        profile_dir
    })
}

/// The real `healer` binary.
pub fn healer_bin() -> PathBuf {
    built().join("healer")
}

/// The `.so` file of a package built by [`built`], e.g. `healer-plugin-example`.
pub fn package_file(package: &str) -> PathBuf {
    built().join(format!("lib{}.so", package.replace('-', "_")))
}

/// A fresh temporary plugins directory holding copies of these packages.
pub fn plugins_dir_with(packages: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for package in packages {
        let from = package_file(package);
        let to = dir.path().join(from.file_name().expect("file name"));
        std::fs::copy(&from, &to).unwrap_or_else(|err| panic!("copy {}: {err}", from.display()));
    }
    dir
}

/// Runs `healer` with `args`, killing it if it has not finished in `limit`.
pub fn run_healer(args: &[&str], limit: Duration) -> Output {
    run_bounded(Command::new(healer_bin()).args(args), limit)
}

/// Runs a command to completion, killing it after `limit`. Output is read
/// on threads, so a chatty command cannot stall on a full pipe.
pub fn run_bounded(command: &mut Command, limit: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait works") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err.join().unwrap_or_default();
            panic!(
                "{command:?} did not finish within {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Stdout as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}
