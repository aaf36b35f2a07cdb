//! Follows `docs/PLUGIN_AUTHORS.md` to the letter: every `sh` block is run
//! and every block with `file=NAME` is written, in order, in a temporary
//! directory outside the workspace. The guide's plugin must then be listed
//! by the real `healer plugins`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use healer_e2e::{built, run_bounded, stdout, workspace_root};

/// A first build compiles the SDK's dependencies in release mode.
const LIMIT: Duration = Duration::from_secs(20 * 60);

struct Block {
    lang: String,
    file: Option<String>,
    text: String,
}

fn fenced_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for line in markdown.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                let mut words = info.split_whitespace();
                let lang = words.next().unwrap_or("").to_owned();
                let rest: Vec<&str> = words.collect();
                let file = rest
                    .iter()
                    .find_map(|w| w.strip_prefix("file="))
                    .map(str::to_owned);
                let text = if rest.contains(&"ignore") {
                    "\u{0}ignore".to_owned()
                } else {
                    String::new()
                };
                open = Some(Block { lang, file, text });
            }
            (Some(_), Some("")) => blocks.extend(open.take()),
            (Some(block), _) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks.retain(|b| !b.text.starts_with('\u{0}'));
    blocks
}

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
fn the_guides_example_is_the_example_plugin() {
    let guide = std::fs::read_to_string(workspace_root().join("docs/PLUGIN_AUTHORS.md")).unwrap();
    let example =
        std::fs::read_to_string(workspace_root().join("plugins/example/src/lib.rs")).unwrap();

    let lib_rs = fenced_blocks(&guide)
        .into_iter()
        .find(|b| b.file.as_deref() == Some("src/lib.rs"))
        .unwrap();

    assert_eq!(
        lib_rs.text, example,
        "docs/PLUGIN_AUTHORS.md and plugins/example/src/lib.rs must stay identical"
    );
}

#[test]
fn a_plugin_written_by_following_the_guide_is_listed_by_healer_plugins() {
    let guide = std::fs::read_to_string(workspace_root().join("docs/PLUGIN_AUTHORS.md")).unwrap();
    let script = guide_as_script(&guide, &workspace_root());
    let outside = tempfile::tempdir().unwrap();
    let path = format!(
        "{}:{}",
        built().display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let output = run_bounded(
        Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(outside.path())
            .env("PATH", path)
            // Shared between runs so only the first one compiles the SDK's
            // dependencies; the guide's commands honour it.
            .env(
                "CARGO_TARGET_DIR",
                workspace_root().join("target/author-guide"),
            )
            // Everything the guide needs is already downloaded by the workspace.
            .env("CARGO_NET_OFFLINE", "true"),
        LIMIT,
    );

    let listing = stdout(&output);
    assert!(
        output.status.success(),
        "the guide failed:\n{listing}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        listing.contains("1 package, 1 plugin, 0 errors"),
        "{listing}"
    );
    assert!(listing.contains("my-checks 0.1.0 (SDK 1."), "{listing}");
    let plugin_line = listing
        .lines()
        .find(|l| l.contains("file-exists"))
        .expect(&listing);
    assert!(
        plugin_line.contains("CRITICAL while a file is missing"),
        "{plugin_line}"
    );
}
