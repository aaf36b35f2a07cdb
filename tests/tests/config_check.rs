//! `healer check` validates a config and every plugin config without
//! running anything: each broken config in `tests/configs/broken/` exits 1
//! with `file:line:` and the message its first line expects (those about
//! tokens point at the token files in `tests/configs/tokens/`); a file
//! with a problem of its own still has its plugins' configs checked, and
//! every problem is named in file order; the default config exits 0.

use std::time::Duration;

use healer_e2e::{plugins_dir_with, run_healer, workspace_root};

const LIMIT: Duration = Duration::from_secs(60);
const PLUGINS: &[&str] = &[
    "healer-plugin-http",
    "healer-plugin-process",
    "healer-plugin-command",
    "healer-plugin-system",
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
