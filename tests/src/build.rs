//! Building what the tests run: the real `healer` binary and every plugin
//! and fixture package, built once per test process with cargo in the
//! test's own profile (test builds do not produce `.so` files), and fresh
//! plugins directories holding copies of them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The product's plugin packages (the workspace's `plugins/*`).
pub const PLUGIN_PACKAGES: &[&str] = &[
    "healer-plugin-example",
    "healer-plugin-process",
    "healer-plugin-command",
    "healer-plugin-http",
    "healer-plugin-logscan",
    "healer-plugin-nagios",
    "healer-plugin-system",
    "healer-plugin-webhook",
];

/// Every other package the tests load; all are built in one cargo call.
const PACKAGES: &[&str] = &[
    "healer",
    "healer-fixture-no-root",
    "healer-fixture-other-sdk-major",
    "healer-fixture-wrong-layout",
    "healer-fixture-init-panics",
    "healer-fixture-panicky",
    "healer-fixture-typical",
    "healer-fixture-ctor-aborts",
    "healer-fixture-ctor-segfaults",
    "healer-fixture-ctor-exits",
    "healer-fixture-ctor-hangs",
    "healer-fixture-hostile",
    "healer-fixture-hostile-worker",
    "healer-fixture-chatty",
    "healer-fixture-facts-flood",
    "healer-fixture-sdk-1-2",
    "healer-fixture-sdk-1-3",
    "healer-fixture-facts",
    "healer-fixture-facts-reader",
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
        for package in PACKAGES.iter().chain(PLUGIN_PACKAGES) {
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
