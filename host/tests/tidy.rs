//! Tidy tests: the shape of the host's code, read from its sources as
//! rust-analyzer's `tidy.rs` does. They hold what `docs/ARCHITECTURE.md`
//! promises:
//!
//! - no module, and no file, of `host/src` imports another in a circle;
//! - every import goes down the layer table (a module may use only
//!   modules of lower layers), the table being the one in ARCHITECTURE.md;
//! - every source file of the host and of the SDK is in the code map.
//!
//! An import is any `crate::` path (in a `use` or inline, nested groups
//! included) or `super::` path in code a build compiles: comments, string
//! and character literals, items under `#[cfg(test)]` and files that are
//! test modules (`#[cfg(test)] mod tests;`, and what they hold) are left
//! out.
//! A parent module using its own child (`check::Watch` in `engine/mod.rs`)
//! is how Rust nests modules, not an edge.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// A source file: its module path (`["engine", "target"]`) and its code
/// without comments and test modules.
struct Source {
    module: Vec<String>,
    code: String,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the host crate is in the workspace")
        .to_owned()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// `engine/target.rs` → `["engine", "target"]`; `engine/mod.rs` → `["engine"]`.
fn module_of(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The code of a file as the compiler reads it for a build: comments and
/// the insides of string and character literals blanked (so neither a URL
/// in a string nor a path in a doc comment counts), and every item under
/// `#[cfg(test)]` (a test module, a test-only `use` or function) blanked
/// too. Line breaks are kept.
fn code_of(text: &str) -> String {
    without_test_items(&blank_comments_and_literals(text))
}

/// `text` with comments (line, block, nested) and the contents of string,
/// raw string, byte string and character literals replaced by spaces.
fn blank_comments_and_literals(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && matches!(next, Some('#') | Some('"')) && !after_ident(&chars, i) {
            // A raw string: r"..." or r#"..."#.
            let mut hashes = 0;
            let mut j = i + 1;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            out.push_str(&" ".repeat(j + 1 - i));
            i = j + 1;
            while i < chars.len() {
                if chars[i] == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#')) {
                    out.push_str(&" ".repeat(hashes + 1));
                    i += hashes + 1;
                    break;
                }
                out.push(blank(chars[i]));
                i += 1;
            }
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if let Some(&inner) = chars.get(i) {
                    out.push(blank(inner));
                }
                i += 1;
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{..}'), not a lifetime.
            let end = if next == Some('\\') {
                (i + 3..chars.len()).find(|&j| chars[j] == '\'')
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(end) => {
                    out.push_str(&" ".repeat(end + 1 - i));
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn after_ident(chars: &[char], i: usize) -> bool {
    i > 0 && is_ident(chars[i - 1])
}

/// `code` (comments and literals blanked) with every item that follows a
/// `#[cfg(test)]` blanked: up to its `;`, or to the end of its first
/// `{ ... }` block.
fn without_test_items(code: &str) -> String {
    const MARK: &str = "#[cfg(test)]";
    let mut out: Vec<char> = code.chars().collect();
    let text: Vec<char> = out.clone();
    let mark: Vec<char> = MARK.chars().collect();
    let mut i = 0;
    while i + mark.len() <= text.len() {
        if text[i..i + mark.len()] != mark[..] {
            i += 1;
            continue;
        }
        let mut j = i + mark.len();
        let mut depth = 0i32;
        let mut opened = false;
        while j < text.len() {
            match text[j] {
                '{' | '(' | '[' => {
                    depth += 1;
                    opened |= text[j] == '{';
                }
                '}' | ')' | ']' => {
                    depth -= 1;
                    if depth == 0 && text[j] == '}' && opened {
                        break;
                    }
                }
                ';' if depth == 0 => break,
                _ => {}
            }
            j += 1;
        }
        for c in &mut out[i..j.min(text.len() - 1) + 1] {
            if *c != '\n' {
                *c = ' ';
            }
        }
        i = j + 1;
    }
    out.into_iter().collect()
}

/// The files of `src` that are test modules (declared `#[cfg(test)] mod
/// x;`), and every file under them.
fn test_files(files: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut roots = Vec::new();
    for file in files {
        let text = blank_comments_and_literals(&fs::read_to_string(file).expect("a source file"));
        let words: Vec<&str> = text.split_whitespace().collect();
        for (i, word) in words.iter().enumerate() {
            if *word != "#[cfg(test)]" {
                continue;
            }
            let rest = &words[i + 1..];
            let rest = match rest.first() {
                Some(&"pub") | Some(&"pub(crate)") | Some(&"pub(super)") => &rest[1..],
                _ => rest,
            };
            let Some(name) = (rest.first() == Some(&"mod"))
                .then(|| rest.get(1).and_then(|n| n.strip_suffix(';')))
                .flatten()
            else {
                continue;
            };
            let dir = if file
                .file_name()
                .is_some_and(|n| n == "mod.rs" || n == "lib.rs")
            {
                file.parent().expect("a parent").to_owned()
            } else {
                file.with_extension("")
            };
            roots.push(dir.join(name));
        }
    }
    files
        .iter()
        .filter(|file| {
            roots
                .iter()
                .any(|root| file.with_extension("") == *root || file.starts_with(root))
        })
        .cloned()
        .collect()
}

fn sources(src: &Path) -> Vec<Source> {
    let files = rust_files(src);
    let tests = test_files(&files);
    files
        .iter()
        .filter(|f| !tests.contains(*f))
        .filter_map(|file| {
            let relative = file.strip_prefix(src).expect("under src");
            let module = module_of(relative);
            if module == ["lib"] || module == ["main"] {
                return None;
            }
            let text = fs::read_to_string(file).expect("a source file");
            Some(Source {
                module,
                code: code_of(&text),
            })
        })
        .collect()
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Reads a path after `crate::` or `super::` at `at`: its segments, and
/// for a group (`{a::b, c}`) each member path appended to the prefix.
fn paths_at(text: &str, at: usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let bytes = text.as_bytes();
    let mut i = at;
    let mut segments = prefix;
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b'{' {
            // A group: split its members at depth 0.
            let mut depth = 0;
            let mut start = i + 1;
            let mut j = i;
            while j < bytes.len() {
                match bytes[j] {
                    b'{' => depth += 1,
                    b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            paths_at(&text[..j], start, segments.clone(), out);
                            return;
                        }
                    }
                    b',' if depth == 1 => {
                        paths_at(&text[..j], start, segments.clone(), out);
                        start = j + 1;
                    }
                    _ => {}
                }
                j += 1;
            }
            return;
        }
        let begin = i;
        while i < bytes.len() && is_ident(bytes[i] as char) {
            i += 1;
        }
        if begin == i {
            break;
        }
        segments.push(text[begin..i].to_owned());
        if text[i..].starts_with("::") {
            i += 2;
        } else {
            break;
        }
    }
    out.push(segments);
}

/// Every module path `source` refers to, as written (`crate::` resolved
/// to the root, `super::` to the parent).
fn references(source: &Source) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let code = &source.code;
    for keyword in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(found) = code[from..].find(keyword) {
            let at = from + found;
            from = at + keyword.len();
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| is_ident(c) || c == ':') {
                continue; // `super::super::` is read from its first `super`
            }
            let prefix = if keyword == "crate::" {
                Vec::new()
            } else {
                let mut rest = &code[from..];
                let mut up = 1;
                while let Some(r) = rest.strip_prefix("super::") {
                    rest = r;
                    up += 1;
                }
                from = code.len() - rest.len();
                let keep = source.module.len().saturating_sub(up);
                source.module[..keep].to_vec()
            };
            paths_at(code, from, prefix, &mut out);
        }
    }
    out
}

/// The longest known module that is a prefix of `path`.
fn resolve<'a>(path: &[String], known: &'a BTreeSet<Vec<String>>) -> Option<&'a Vec<String>> {
    (1..=path.len()).rev().find_map(|n| known.get(&path[..n]))
}

/// Import edges between modules at `depth` 1 (top-level modules) or
/// between files (`None`).
fn edges(sources: &[Source], depth: Option<usize>) -> BTreeMap<String, BTreeSet<String>> {
    let known: BTreeSet<Vec<String>> = sources.iter().map(|s| s.module.clone()).collect();
    let name = |module: &[String]| match depth {
        Some(d) => module[..d.min(module.len())].join("/"),
        None => module.join("/"),
    };
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for source in sources {
        let me = name(&source.module);
        let mine = graph.entry(me.clone()).or_default();
        for path in references(source) {
            if let Some(target) = resolve(&path, &known) {
                let other = name(target);
                if other != me {
                    mine.insert(other);
                }
            }
        }
    }
    graph
}

/// One circle in `graph`, when there is any.
fn a_circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(node.to_owned(), Mark::Open);
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            match marks.get(next).copied().unwrap_or(Mark::New) {
                Mark::Open => {
                    let start = path.iter().position(|p| p == next).expect("on the path");
                    let mut circle = path[start..].to_vec();
                    circle.push(next.clone());
                    return Some(circle);
                }
                Mark::New => {
                    if let Some(circle) = visit(next, graph, marks, path) {
                        return Some(circle);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if marks.get(node).copied().unwrap_or(Mark::New) == Mark::New {
            if let Some(circle) = visit(node, graph, &mut marks, &mut Vec::new()) {
                return Some(circle);
            }
        }
    }
    None
}

fn architecture() -> String {
    let file = root().join("docs/ARCHITECTURE.md");
    fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// The layer table of ARCHITECTURE.md's "Layers" section: each module's
/// layer. Its rows read `| 3 | `issues` | ... |`, the second cell listing
/// the layer's modules in backticks. A module named twice is a mistake.
fn layers(doc: &str) -> BTreeMap<String, u32> {
    let start = doc
        .find("\n## Layers")
        .expect("docs/ARCHITECTURE.md has a \"## Layers\" section");
    let section = &doc[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    let mut layers = BTreeMap::new();
    for line in section.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (Some(number), Some(modules)) = (cells.get(1), cells.get(2)) else {
            continue;
        };
        let Ok(layer) = number.parse::<u32>() else {
            continue;
        };
        for (i, piece) in modules.split('`').enumerate() {
            if i % 2 == 1 {
                let module = piece.trim_end_matches('/').to_owned();
                if let Some(was) = layers.insert(module.clone(), layer) {
                    panic!("docs/ARCHITECTURE.md: `{module}` is in layer {was} and layer {layer}");
                }
            }
        }
    }
    layers
}

/// The text of the code map section whose heading starts with `heading`.
fn code_map_section<'a>(doc: &'a str, heading: &str) -> &'a str {
    let start = doc
        .find(heading)
        .unwrap_or_else(|| panic!("docs/ARCHITECTURE.md has no section {heading:?}"));
    let rest = &doc[start + heading.len()..];
    let end = rest
        .find("\n### ")
        .or_else(|| rest.find("\n## "))
        .unwrap_or(rest.len());
    &rest[..end]
}

#[test]
fn no_module_or_file_of_the_host_imports_another_in_a_circle() {
    let sources = sources(&root().join("host/src"));
    for (depth, what) in [(Some(1), "modules"), (None, "files")] {
        if let Some(circle) = a_circle(&edges(&sources, depth)) {
            panic!(
                "host/src: {what} import each other in a circle: {}; move what both need below both (see the layer table in docs/ARCHITECTURE.md)",
                circle.join(" -> ")
            );
        }
    }
}

#[test]
fn every_import_of_the_host_goes_down_the_layer_table() {
    let layers = layers(&architecture());
    assert!(
        layers.len() > 10,
        "docs/ARCHITECTURE.md: no layer table found (rows `| N | `module` | job |`)"
    );
    let sources = sources(&root().join("host/src"));
    let mut problems = Vec::new();
    for (module, uses) in edges(&sources, Some(1)) {
        let Some(&mine) = layers.get(&module) else {
            problems.push(format!("`{module}` is in no layer: add it to the table"));
            continue;
        };
        for used in uses {
            match layers.get(&used) {
                None => problems.push(format!("`{used}` is in no layer: add it to the table")),
                Some(&theirs) if theirs >= mine => problems.push(format!(
                    "`{module}` (layer {mine}) imports `{used}` (layer {theirs}): a module may use only lower layers"
                )),
                Some(_) => {}
            }
        }
    }
    problems.sort();
    problems.dedup();
    assert!(
        problems.is_empty(),
        "host/src breaks the layer table of docs/ARCHITECTURE.md:\n{}",
        problems.join("\n")
    );
}

/// The crates whose every source file the code map names: the directory
/// of their sources, the heading of their section, and the prefix the
/// section writes paths with.
const MAPPED: [(&str, &str, &str); 3] = [
    ("host/src", "### `host/`", ""),
    ("plugin-sdk/src", "### `plugin-sdk/`", ""),
    ("tests/src", "### `tests/`", "src/"),
];

#[test]
fn every_source_file_is_in_the_code_map() {
    let doc = architecture();
    let mut missing = Vec::new();
    for (crate_dir, heading, prefix) in MAPPED {
        let section = code_map_section(&doc, heading);
        let src = root().join(crate_dir);
        for file in rust_files(&src) {
            let relative = file.strip_prefix(&src).expect("under src");
            let shown = format!("{prefix}{}", relative.to_string_lossy());
            let named = section.contains(&format!("`{shown}`"))
                || (file.file_name().is_some_and(|n| n == "mod.rs")
                    && section.contains(&format!(
                        "`{prefix}{}/`",
                        relative.parent().expect("a directory").to_string_lossy()
                    )));
            if !named {
                missing.push(format!("{crate_dir}/{}", relative.to_string_lossy()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/ARCHITECTURE.md's code map does not name (as `path/from/src.rs` in its crate's section): {}",
        missing.join(", ")
    );
}

#[test]
fn every_file_the_code_map_names_exists() {
    let doc = architecture();
    let mut stale = Vec::new();
    for (crate_dir, heading, prefix) in MAPPED {
        let section = code_map_section(&doc, heading);
        let src = root().join(crate_dir);
        for (i, piece) in section.split('`').enumerate() {
            let Some(relative) = piece.strip_prefix(prefix) else {
                continue;
            };
            let is_path = relative.ends_with(".rs")
                && relative
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_/.-".contains(c));
            if i % 2 == 1 && is_path && !src.join(relative).is_file() {
                stale.push(format!("{heading}: `{piece}`"));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "docs/ARCHITECTURE.md's code map names files that do not exist: {}",
        stale.join(", ")
    );
}
