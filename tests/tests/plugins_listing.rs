//! `healer plugins` over real packages: good ones are listed with their own
//! plugins, bad ones cost one line each and never stop the others.

use std::time::Duration;

use healer_e2e::{package_file, plugins_dir_with, run_healer, stdout};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

fn list_json(dir: &std::path::Path) -> (Value, i32) {
    let output = run_healer(
        &["plugins", "--dir", dir.to_str().unwrap(), "--json"],
        LIMIT,
    );
    let json = serde_json::from_str(&stdout(&output)).expect("--json prints JSON");
    (json, output.status.code().unwrap_or(-1))
}

fn plugin_names(package: &Value) -> Vec<&str> {
    package["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect()
}

#[test]
fn two_packages_in_one_directory_each_report_their_own_plugins() {
    let dir = plugins_dir_with(&["healer-plugin-example", "healer-fixture-panicky"]);
    let (listing, code) = list_json(dir.path());

    assert_eq!(code, 0, "both loaded (one with a warning):\n{listing:#}");
    let packages = listing["packages"].as_array().unwrap();
    assert_eq!(packages.len(), 2, "{listing:#}");
    for package in packages {
        assert_eq!(package["isolation"], "process", "the default");
        assert_eq!(package["sha256"].as_str().unwrap().len(), 64);
    }
    let by_name = |name: &str| packages.iter().find(|p| p["name"] == name).unwrap();

    let example = by_name("healer-plugin-example");
    assert_eq!(
        plugin_names(example),
        ["file-exists", "file-size", "restore-file"]
    );
    assert!(example["file"]
        .as_str()
        .unwrap()
        .ends_with("libhealer_plugin_example.so"));
    assert_eq!(example["sdk_version"], healer_plugin_sdk::ffi::SDK_VERSION);

    let panicky = by_name("healer-fixture-panicky");
    assert_eq!(
        plugin_names(panicky),
        [
            "panics-in-new",
            "panics-in-check",
            "hangs-in-check",
            "counter",
            "ticker",
            "blocks-forever"
        ]
    );
    assert!(panicky["file"]
        .as_str()
        .unwrap()
        .ends_with("libhealer_fixture_panicky.so"));
    // Listing validates each sample config by creating the plugin (in the
    // probe): the one whose constructor panics is reported, and only that
    // one, as a warning: its package is loaded.
    assert_eq!(
        listing["errors"].as_array().unwrap().len(),
        0,
        "{listing:#}"
    );
    let warnings = listing["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{listing:#}");
    let reason = warnings[0]["reason"].as_str().unwrap();
    assert!(reason.starts_with(PANICKING_CONSTRUCTOR), "{reason}");
}

#[test]
fn the_listing_shows_kind_description_and_sample_config() {
    let dir = plugins_dir_with(&["healer-plugin-example"]);
    let output = run_healer(&["plugins", "--dir", dir.path().to_str().unwrap()], LIMIT);
    let text = stdout(&output);

    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("healer-plugin-example 0.1.0 (SDK 1."),
        "{text}"
    );
    let plugin_line = text
        .lines()
        .find(|l| l.contains("file-exists"))
        .expect(&text);
    assert!(
        plugin_line.trim_start().starts_with("monitor"),
        "{plugin_line}"
    );
    assert!(
        plugin_line.contains("CRITICAL while a file is missing"),
        "{plugin_line}"
    );
    assert!(text.contains("path = \"/etc/hostname\""), "{text}");
}

/// The line for the fixture plugin whose constructor panics.
const PANICKING_CONSTRUCTOR: &str = "monitor \"panics-in-new\": its sample config is rejected: panicked at tests/fixtures/panicky/src/lib.rs:";

/// Each bad file with the reason its line must give.
const BAD_FILES: &[(&str, &str)] = &[
    ("x.so", "not a shared library (no ELF header)"),
    ("libhealer_fixture_no_root.so", "not a healer plugin package: it exports no root module"),
    ("libhealer_fixture_other_sdk_major.so", "built against SDK 2.x, this host has SDK 1."),
    ("libhealer_fixture_wrong_layout.so", "its ABI layout does not match SDK 1."),
    (
        "libhealer_fixture_init_panics.so",
        "package init panicked at tests/fixtures/init-panics/src/lib.rs:7:5: init exploded on purpose",
    ),
];

fn dir_with_good_and_bad_packages() -> tempfile::TempDir {
    let dir = plugins_dir_with(&[
        "healer-plugin-example",
        "healer-fixture-panicky",
        "healer-fixture-no-root",
        "healer-fixture-other-sdk-major",
        "healer-fixture-wrong-layout",
        "healer-fixture-init-panics",
    ]);
    std::fs::write(
        dir.path().join("x.so"),
        "this is a text file, not a library\n",
    )
    .unwrap();
    dir
}

#[test]
fn each_bad_package_costs_one_line_naming_the_file_and_the_reason() {
    let dir = dir_with_good_and_bad_packages();
    let output = run_healer(&["plugins", "--dir", dir.path().to_str().unwrap()], LIMIT);
    let text = stdout(&output);

    assert_eq!(
        output.status.code(),
        Some(1),
        "any load error makes the exit code 1:\n{text}"
    );
    assert!(
        text.contains("2 packages, 9 plugins, 5 errors, 1 warning"),
        "{text}"
    );
    for (file, reason) in BAD_FILES {
        let path = dir.path().join(file);
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(path.to_str().unwrap()))
            .collect();
        assert_eq!(lines.len(), 1, "one line for {file}:\n{text}");
        assert!(
            lines[0]
                .trim_start()
                .starts_with(&format!("{}: {reason}", path.display())),
            "{}",
            lines[0]
        );
    }
}

#[test]
fn json_listing_carries_the_same_errors_and_the_good_packages() {
    let dir = dir_with_good_and_bad_packages();
    let (listing, code) = list_json(dir.path());

    assert_eq!(code, 1);
    let names: Vec<&str> = listing["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["healer-fixture-panicky", "healer-plugin-example"]);
    let errors = listing["errors"].as_array().unwrap();
    assert_eq!(errors.len(), BAD_FILES.len(), "{listing:#}");
    let warnings = listing["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{listing:#}");
    assert!(
        warnings[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with(PANICKING_CONSTRUCTOR),
        "{listing:#}"
    );
    for (file, reason) in BAD_FILES {
        let path = dir.path().join(file);
        let error = errors
            .iter()
            .find(|e| e["file"] == path.to_str().unwrap())
            .expect(file);
        assert!(
            error["reason"].as_str().unwrap().starts_with(reason),
            "{error}"
        );
    }
}

#[test]
fn verbose_listing_shows_the_full_layout_comparison() {
    let dir = plugins_dir_with(&["healer-fixture-wrong-layout"]);
    let quiet = stdout(&run_healer(
        &["plugins", "--dir", dir.path().to_str().unwrap()],
        LIMIT,
    ));
    let verbose = stdout(&run_healer(
        &["plugins", "-v", "--dir", dir.path().to_str().unwrap()],
        LIMIT,
    ));

    assert_eq!(
        quiet.lines().filter(|l| !l.trim().is_empty()).count(),
        3,
        "{quiet}"
    );
    assert!(verbose.lines().count() > 50, "{verbose}");
    assert!(verbose.contains("Error:mismatched package"), "{verbose}");
}

#[test]
fn packages_that_all_loaded_some_with_warnings_exit_0_and_say_so() {
    let dir = plugins_dir_with(&["healer-plugin-example", "healer-fixture-panicky"]);
    let output = run_healer(&["plugins", "--dir", dir.path().to_str().unwrap()], LIMIT);
    let text = stdout(&output);

    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.contains(", 0 errors, 1 warning\n"), "{text}");
    assert!(text.contains("\nwarnings (loaded):\n"), "{text}");
}

#[test]
fn the_same_plugin_name_in_two_packages_is_a_warning_naming_both_files() {
    let dir = plugins_dir_with(&["healer-plugin-example"]);
    let copy = dir.path().join("libzz_copy_of_example.so");
    std::fs::copy(package_file("healer-plugin-example"), &copy).unwrap();
    let (listing, code) = list_json(dir.path());

    assert_eq!(code, 0, "the copy loaded, without its repeated plugin");
    assert_eq!(
        listing["errors"].as_array().unwrap().len(),
        0,
        "{listing:#}"
    );
    // The copy loads, without the plugins it repeats: one warning each.
    let warnings = listing["warnings"].as_array().unwrap();
    let repeated = [
        "monitor \"file-exists\"",
        "diagnoser \"file-size\"",
        "recoverer \"restore-file\"",
    ];
    assert_eq!(warnings.len(), repeated.len(), "{listing:#}");
    for (warning, plugin) in warnings.iter().zip(repeated) {
        assert_eq!(warning["file"], copy.to_str().unwrap());
        let reason = warning["reason"].as_str().unwrap();
        assert!(
            reason.contains(&format!("{plugin} is also exported by")),
            "{reason}"
        );
        assert!(reason.contains("libhealer_plugin_example.so"), "{reason}");
    }
}

#[test]
fn an_unreadable_plugins_directory_is_one_clear_error() {
    let output = run_healer(&["plugins", "--dir", "/nonexistent/healer-plugins"], LIMIT);
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr.trim(),
        "healer: /nonexistent/healer-plugins: cannot read the plugins directory: No such file or directory (os error 2)"
    );
}

/// The C library this test process runs with: a real shared library that
/// is not a healer package.
fn a_shared_library_that_is_not_a_package() -> std::path::PathBuf {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let path = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| path.contains("/libc.so"))
        .expect("this process maps the C library");
    std::path::PathBuf::from(path)
}

#[test]
fn plugins_check_says_in_one_true_line_whether_a_built_file_loads_here() {
    let dir = plugins_dir_with(&["healer-plugin-example", "healer-fixture-other-sdk-major"]);
    let not_a_package = dir.path().join("libc-copy.so");
    std::fs::copy(a_shared_library_that_is_not_a_package(), &not_a_package).unwrap();
    let cases = [
        (
            dir.path().join("libhealer_fixture_other_sdk_major.so"),
            false,
            "does not load here: built against SDK 2.x, this host has SDK 1.",
        ),
        (
            not_a_package,
            false,
            "does not load here: not a healer plugin package: it exports no root module",
        ),
        (
            dir.path().join("libhealer_plugin_example.so"),
            true,
            "loads here: healer-plugin-example 0.1.0 (SDK 1.",
        ),
    ];
    for (file, loads, said) in cases {
        let file = file.to_str().unwrap();
        let output = run_healer(
            &[
                "plugins",
                "--check",
                file,
                "--config",
                "/nonexistent/healer.toml",
            ],
            LIMIT,
        );
        let out = stdout(&output);
        assert_eq!(output.status.success(), loads, "{file}: {output:?}");
        assert_eq!(out.lines().count(), 1, "one line: {out}");
        assert!(out.starts_with(&format!("{file}: {said}")), "{out}");
        if loads {
            assert!(
                out.contains(
                    "3 plugins: monitor file-exists, diagnoser file-size, recoverer restore-file"
                ),
                "{out}"
            );
        }
    }
}
