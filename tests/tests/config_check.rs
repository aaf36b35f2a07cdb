//! `healer check` validates a config and every plugin config without
//! running anything: each broken config in `tests/configs/broken/` exits 1
//! with `file:line:` and the message its first line expects (those about
//! tokens point at the token files in `tests/configs/tokens/`); a file
//! with a problem of its own still has its plugins' configs checked, and
//! every problem is named in file order; the default config exits 0. And
//! what plugins declare is checked: an `on`
//! glob that matches no kind a target can have, a monitor's own timeout
//! at or past its check's deadline; a package built before plugins could
//! declare loads as before, with nothing of it checked.

use std::time::Duration;

use healer_e2e::{plugins_dir_with, run_healer, workspace_root};

const LIMIT: Duration = Duration::from_secs(60);
const PLUGINS: &[&str] = &[
    "healer-plugin-http",
    "healer-plugin-process",
    "healer-plugin-command",
    "healer-plugin-system",
    "healer-plugin-logscan",
];

#[test]
fn each_broken_config_is_refused_with_file_line_and_reason() {
    let plugins = plugins_dir_with(PLUGINS);
    let dir = workspace_root().join("tests/configs/broken");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "the fixture set has {} configs",
        files.len()
    );

    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .expect("first line: # expect: LINE: MESSAGE");
        let (line, message) = expect.split_once(": ").unwrap();
        let output = run_healer(
            &[
                "check",
                "--config",
                file.to_str().unwrap(),
                "--plugins-dir",
                plugins.path().to_str().unwrap(),
            ],
            LIMIT,
        );
        let stderr = String::from_utf8_lossy(&output.stderr);

        assert_eq!(
            output.status.code(),
            Some(1),
            "{}: {stderr}",
            file.display()
        );
        let wanted = format!("{}:{line}:", file.display());
        let error = stderr
            .lines()
            .find(|l| l.starts_with(&wanted))
            .unwrap_or_else(|| panic!("no {wanted} in:\n{stderr}"));
        assert!(
            error.contains(message),
            "{}: wanted {message:?} in:\n{error}",
            file.display()
        );
    }
}

#[test]
fn the_default_config_passes_the_check() {
    let plugins = plugins_dir_with(PLUGINS);
    let config = workspace_root().join("config/healer.toml");
    let output = run_healer(
        &[
            "check",
            "--config",
            config.to_str().unwrap(),
            "--plugins-dir",
            plugins.path().to_str().unwrap(),
        ],
        LIMIT,
    );
    let stdout = String::from_utf8_lossy(&output.stdout);

    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(": OK, "), "{stdout}");
}

/// What `healer check` said of a config.
struct Checked {
    /// The config file, in a directory removed with this.
    config: std::path::PathBuf,
    _dir: tempfile::TempDir,
    code: Option<i32>,
    stderr: String,
}

/// `healer check` of `body` written to `healer.toml` in a fresh
/// directory, with `plugins`.
fn check(plugins: &[&str], body: &str) -> Checked {
    let plugins = plugins_dir_with(plugins);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("healer.toml");
    std::fs::write(&config, body).unwrap();
    let output = run_healer(
        &[
            "check",
            "--config",
            config.to_str().unwrap(),
            "--plugins-dir",
            plugins.path().to_str().unwrap(),
        ],
        LIMIT,
    );
    Checked {
        config,
        _dir: dir,
        code: output.status.code(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The line of `stderr` that reports an error at `line` of `config`.
fn error_at<'a>(stderr: &'a str, config: &std::path::Path, line: usize) -> &'a str {
    let at = format!("{}:{line}:", config.display());
    stderr
        .lines()
        .find(|error| error.starts_with(&at))
        .unwrap_or_else(|| panic!("no {at} in:\n{stderr}"))
}

/// The 1-based line of the first line of `text` that starts with `start`.
fn line_of(text: &str, start: &str) -> usize {
    text.lines()
        .position(|line| line.starts_with(start))
        .expect("the line is in the config")
        + 1
}

#[test]
fn an_on_glob_matching_no_kind_the_diagnosers_declare_is_refused_with_a_suggestion() {
    let body = r#"
[[target]]
name = "app"
[target.monitor]
plugin = "logscan"
path = "/var/log/app.log"
[[target.diagnose]]
plugin = "logscan"
patterns = [{ regex = "No space left", kind = "disk.filling" }]
[[target.recover]]
plugin = "command"
on = ["disk.filing"]
argv = ["/usr/local/bin/clean-up"]
"#;
    let Checked {
        config,
        code,
        stderr,
        ..
    } = check(&["healer-plugin-logscan", "healer-plugin-command"], body);

    assert_eq!(code, Some(1), "{stderr}");
    let error = error_at(&stderr, &config, line_of(body, "on = "));
    assert!(error.contains("`on` glob \"disk.filing\" matches none of the finding kinds this target can have (disk.filling, logscan.critical, logscan.unknown, logscan.warning)"), "{error}");
    assert!(error.ends_with("did you mean \"disk.filling\"?"), "{error}");
}

#[test]
fn an_on_glob_with_a_typo_of_a_system_kind_is_refused_and_the_right_one_passes() {
    let body = |on: &str| {
        format!(
            r#"
[[target]]
name = "this-machine"
[target.monitor]
plugin = "system"
[[target.diagnose]]
plugin = "system"
[[target.recover]]
plugin = "command"
on = ["{on}"]
argv = ["/usr/local/bin/clean-up"]
"#
        )
    };
    let plugins = ["healer-plugin-system", "healer-plugin-command"];
    let Checked { code, stderr, .. } = check(&plugins, &body("system.disk_ful"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("did you mean \"system.disk_full\"?"),
        "{stderr}"
    );

    let Checked { code, stderr, .. } = check(&plugins, &body("system.disk_full"));
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn an_http_monitor_left_at_its_timeout_above_a_one_second_deadline_is_refused() {
    let body = r#"
[healer]
timeout = "1s"

[[target]]
name = "web"
[target.monitor]
plugin = "http"
url = "http://127.0.0.1:8080/health"
[[target.diagnose]]
plugin = "http"
"#;
    let Checked {
        config,
        code,
        stderr,
        ..
    } = check(&["healer-plugin-http"], body);

    assert_eq!(code, Some(1), "{stderr}");
    let error = error_at(&stderr, &config, line_of(body, "[target.monitor]"));
    assert!(
        error.contains(
            "its own timeout (5s) is not below the target's check deadline (timeout = \"1s\")"
        ),
        "{error}"
    );
    assert!(
        error.ends_with(
            "lower the monitor's `timeout` below 1s, or raise the target's `timeout` above 5s"
        ),
        "{error}"
    );
}

#[test]
fn a_package_built_before_declarations_loads_and_nothing_it_would_declare_is_checked() {
    // Its monitor would say it waits an hour (past the 1 s deadline) and
    // its diagnoser that it names only `narrow.only`: healer cannot ask a
    // package built against SDK 1.2, so neither is refused, in a worker
    // or loaded in process.
    for isolation in ["process", "in-process"] {
        let body = format!(
            r#"
[healer]
timeout = "1s"

[plugins]
isolation = "{isolation}"

[[target]]
name = "old"
[target.monitor]
plugin = "patient"
[[target.diagnose]]
plugin = "narrow"
[[target.recover]]
plugin = "command"
on = ["narrow.typo"]
argv = ["true"]
"#
        );
        let plugins = ["healer-fixture-sdk-1-2", "healer-plugin-command"];
        let Checked { code, stderr, .. } = check(&plugins, &body);
        assert_eq!(code, Some(0), "{isolation}: {stderr}");
    }
}

#[test]
fn a_structural_error_and_the_plugin_errors_of_the_same_file_are_all_reported() {
    let plugins = plugins_dir_with(PLUGINS);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("healer.toml");
    // A dependency on no target (healer's own check, at the target's
    // line 1), a typo in the http monitor's table (the plugin's check, line
    // 6) and a recoverer that does not exist (line 8).
    std::fs::write(
        &config,
        "[[target]]\nname = \"web\"\ndepends_on = [\"dbb\"]\n[target.monitor]\nplugin = \"http\"\nurll = \"http://127.0.0.1:1/\"\n\
         [[target.recover]]\nplugin = \"no-such-recoverer\"\n",
    )
    .unwrap();

    let output = run_healer(
        &[
            "check",
            "--config",
            config.to_str().unwrap(),
            "--plugins-dir",
            plugins.path().to_str().unwrap(),
        ],
        LIMIT,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let at = |line: u32| format!("{}:{line}:", config.display());
    let lines: Vec<&str> = stderr.lines().collect();
    let position = |line: u32, says: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(&at(line)) && l.contains(says))
            .unwrap_or_else(|| panic!("no {} ... {says:?} in:\n{stderr}", at(line)))
    };
    let dependency = position(1, "depends on \"dbb\", which is not a target");
    let typo = position(6, "unknown field `urll`");
    let recoverer = position(8, "no-such-recoverer");
    assert!(
        dependency < typo && typo < recoverer,
        "in file order:\n{stderr}"
    );
}
