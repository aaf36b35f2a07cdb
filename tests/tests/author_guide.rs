//! Follows `docs/PLUGIN_AUTHORS.md` to the letter: every `sh` block is run
//! and every block with `file=NAME` is written, in order, in a temporary
//! directory outside the workspace. The guide's package, the example
//! package file for file, must then be listed by the real `healer plugins`
//! with its monitor, diagnoser and recoverer, pass `healer check`, and,
//! under `healer once --recover`, put back the file it watches.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use healer_e2e::{built, fenced_blocks, profile_dir, run_bounded, stdout, workspace_root, Block};

/// A first build compiles the SDK's dependencies in release mode.
const LIMIT: Duration = Duration::from_secs(20 * 60);

/// The guide as one bash script, with `/path/to/healer` pointing here.
fn guide_as_script(markdown: &str, healer_src: &Path) -> String {
    let mut script = String::from("set -euxo pipefail\n");
    for block in fenced_blocks(markdown) {
        let text = block
            .text
            .replace("/path/to/healer", healer_src.to_str().unwrap());
        match (block.lang.as_str(), block.file) {
            (_, Some(file)) => script.push_str(&format!(
                "cat > {file} <<'HEALER_GUIDE_EOF'\n{text}HEALER_GUIDE_EOF\n"
            )),
            ("sh", None) => script.push_str(&text),
            (lang, None) => {
                panic!("a {lang} block without file= is neither run nor written; mark it `ignore`")
            }
        }
    }
    script
}

#[test]
fn the_guides_package_is_the_example_package_file_for_file() {
    let guide = std::fs::read_to_string(workspace_root().join("docs/PLUGIN_AUTHORS.md")).unwrap();
    let example = workspace_root().join("plugins/example");

    let sources: Vec<Block> = fenced_blocks(&guide)
        .into_iter()
        .filter(|b| b.file.as_deref().is_some_and(|f| f.starts_with("src/")))
        .collect();
    let mut in_guide: Vec<&str> = sources.iter().filter_map(|b| b.file.as_deref()).collect();
    let mut in_example: Vec<String> = std::fs::read_dir(example.join("src"))
        .unwrap()
        .map(|entry| format!("src/{}", entry.unwrap().file_name().to_string_lossy()))
        .collect();
    in_guide.sort_unstable();
    in_example.sort();

    assert_eq!(
        in_guide, in_example,
        "the guide writes every file of the example, once"
    );
    for block in &sources {
        let file = block.file.as_deref().unwrap();
        let text = std::fs::read_to_string(example.join(file)).unwrap();
        assert_eq!(
            block.text, text,
            "docs/PLUGIN_AUTHORS.md and plugins/example/{file} must stay identical"
        );
    }
}

/// The `healer plugins` line of a plugin: its kind, name and description.
fn plugin_line<'a>(listing: &'a str, name: &str) -> &'a str {
    listing
        .lines()
        .find(|line| line.split_whitespace().nth(1) == Some(name))
        .unwrap_or_else(|| panic!("{name} is not listed:\n{listing}"))
}

#[test]
fn a_package_written_by_following_the_guide_is_listed_and_puts_a_lost_file_back() {
    let guide = std::fs::read_to_string(workspace_root().join("docs/PLUGIN_AUTHORS.md")).unwrap();
    let script = guide_as_script(&guide, &workspace_root());
    let outside = tempfile::tempdir().unwrap();
    let path = format!(
        "{}:{}",
        built().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // Next to the tests' own builds, shared between runs so only the first
    // one compiles the SDK's dependencies; the guide's commands honour it.
    let target_dir = profile_dir()
        .parent()
        .expect("target/<profile>")
        .join("author-guide");

    let output = run_bounded(
        Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(outside.path())
            .env("PATH", path)
            .env("CARGO_TARGET_DIR", target_dir)
            // Everything the guide needs is already downloaded by the workspace.
            .env("CARGO_NET_OFFLINE", "true"),
        LIMIT,
    );

    let said = stdout(&output);
    assert!(
        output.status.success(),
        "the guide failed:\n{said}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(said.contains("1 package, 3 plugins, 0 errors"), "{said}");
    assert!(said.contains("my-checks 0.1.0 (SDK 1."), "{said}");
    for (kind, name, description) in [
        ("monitor", "file-exists", "CRITICAL while a file is missing"),
        ("diagnoser", "file-size", "file.missing, or file.too_large"),
        ("recoverer", "restore-file", "copies a known-good file"),
    ] {
        let line = plugin_line(&said, name);
        assert!(line.trim_start().starts_with(kind), "{line}");
        assert!(line.contains(description), "{line}");
    }
    assert!(
        said.contains("healer.toml: OK, 1 target (1 enabled), 3 plugins in 1 package"),
        "healer check:\n{said}"
    );
    let rows: Vec<Vec<&str>> = said
        .lines()
        .filter(|line| line.starts_with("report "))
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec!["report", "OK", "present"],
            vec!["report", "CRITICAL", "missing", "[file.missing]"],
            vec!["report", "OK", "present"],
        ],
        "healer once, before, while and after the file was lost:\n{said}"
    );
    assert!(said.contains("healer once exited 2"), "{said}");
    let restored = outside.path().join("my-checks/report.csv");
    assert_eq!(
        std::fs::read_to_string(&restored).unwrap(),
        "id,total\n1,42\n"
    );
}
