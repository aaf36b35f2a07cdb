//! `healer plugins new`: a package written in an empty directory builds
//! as it is, its own tests pass (they drive its plugins through the SDK's
//! `testing::Host`, the FFI path healer takes), and `healer plugins` lists
//! the built `.so` with the plugins asked for. The build uses only crates
//! already in cargo's cache (`--offline`): no network.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use healer_e2e::{run_bounded, run_healer, stdout, workspace_root};

/// A cold build of the package and its dependencies, test and release.
const BUILD_LIMIT: Duration = Duration::from_secs(900);
const LIMIT: Duration = Duration::from_secs(60);

/// cargo in `dir`, sharing one target directory across runs of this test.
fn cargo(dir: &Path, args: &[&str]) -> std::process::Output {
    let output = run_bounded(
        Command::new(env!("CARGO"))
            .current_dir(dir)
            .args(args)
            .arg("--offline")
            .env(
                "CARGO_TARGET_DIR",
                workspace_root().join("target/plugins-new"),
            ),
        BUILD_LIMIT,
    );
    assert!(
        output.status.success(),
        "cargo {args:?} in the new package:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn a_new_package_builds_passes_its_tests_and_is_listed_with_the_plugins_asked() {
    let empty = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let wrote = run_bounded(
        Command::new(healer_e2e::healer_bin())
            .current_dir(empty.path())
            .args([
                "plugins",
                "new",
                "probe",
                "--kind",
                "monitor",
                "--kind",
                "recoverer",
            ]),
        LIMIT,
    );
    assert!(wrote.status.success(), "{wrote:?}");
    let package = empty.path().join("probe");
    for file in ["Cargo.toml", "src/lib.rs", "README.md"] {
        assert!(package.join(file).is_file(), "{file} written");
    }

    let tested = cargo(&package, &["test"]);
    let said = String::from_utf8_lossy(&tested.stdout);
    assert!(
        said.contains("test result: ok. 3 passed"),
        "its three tests ran: {said}"
    );
    cargo(&package, &["build", "--release"]);

    let plugins = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        plugins.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::copy(
        workspace_root().join("target/plugins-new/release/libhealer_plugin_probe.so"),
        plugins.path().join("libhealer_plugin_probe.so"),
    )
    .unwrap();
    let listed = run_healer(
        &[
            "plugins",
            "--dir",
            plugins.path().to_str().unwrap(),
            "--json",
        ],
        LIMIT,
    );
    let took = started.elapsed();
    assert!(listed.status.success(), "{listed:?}");
    let catalog: serde_json::Value = serde_json::from_str(&stdout(&listed)).unwrap();
    let package = &catalog["packages"][0];
    assert_eq!(package["name"], "healer-plugin-probe", "{catalog}");
    let kinds: Vec<(String, String)> = package["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap().to_owned(),
                p["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("monitor".to_owned(), "probe".to_owned()),
            ("recoverer".to_owned(), "probe".to_owned()),
        ]
    );
    println!(
        "from `healer plugins new` to a listed package: {:.1} s",
        took.as_secs_f64()
    );
}

#[test]
fn a_bad_name_or_a_directory_in_use_is_one_line_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("taken"), "").unwrap();
    let cases = [
        (
            vec!["plugins", "new", "Bad_Name"],
            "\"Bad_Name\" cannot name a plugin",
        ),
        (
            vec![
                "plugins",
                "new",
                "fine",
                "--path",
                dir.path().to_str().unwrap(),
            ],
            "is not empty: name a new or empty directory with --path",
        ),
    ];
    for (args, said) in cases {
        let output = run_healer(&args, LIMIT);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?}");
        assert!(
            stderr.contains(said) && stderr.trim().lines().count() == 1,
            "{stderr}"
        );
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "nothing written"
    );
}
