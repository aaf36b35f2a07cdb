//! The fenced blocks of a Markdown page, as the tests that follow a guide
//! or a recipe read them: each block's language, the file it writes
//! (`file=NAME`) and its text; blocks marked `ignore` are not run.

/// One fenced block of a Markdown page.
pub struct Block {
    /// The first word of its info string (```` ```toml ````): `toml`, `sh`, ...
    pub lang: String,
    /// The file it writes, from `file=NAME` in its info string.
    pub file: Option<String>,
    /// Its text, each line ending in a newline.
    pub text: String,
}

/// A closed fenced block: its whole info string and its text.
struct Fenced<'a> {
    info: &'a str,
    text: String,
}

/// Every closed fenced block of a Markdown page, in order (one left open
/// at the end is not one).
fn all_fenced(markdown: &str) -> Vec<Fenced<'_>> {
    let mut blocks = Vec::new();
    let mut open: Option<Fenced> = None;
    for line in markdown.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Fenced {
                    info,
                    text: String::new(),
                })
            }
            (Some(_), Some("")) => blocks.extend(open.take()),
            (Some(block), _) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

/// The fenced blocks of a Markdown page, in order, but those marked
/// `ignore` (```` ```rust ignore ````) and one left open at the end.
pub fn fenced_blocks(markdown: &str) -> Vec<Block> {
    all_fenced(markdown)
        .into_iter()
        .filter_map(|fenced| {
            let mut words = fenced.info.split_whitespace();
            let lang = words.next().unwrap_or("").to_owned();
            let rest: Vec<&str> = words.collect();
            if rest.contains(&"ignore") {
                return None;
            }
            let file = rest
                .iter()
                .find_map(|w| w.strip_prefix("file="))
                .map(str::to_owned);
            Some(Block {
                lang,
                file,
                text: fenced.text,
            })
        })
        .collect()
}

/// The fenced blocks of a Markdown page marked `file=NAME` anywhere in
/// their info string (```` ```toml file=healer.toml ````), in order, marked
/// `ignore` or not: what a recipe or guide writes.
pub fn markdown_files(markdown: &str) -> Vec<(String, String)> {
    all_fenced(markdown)
        .into_iter()
        .filter_map(|fenced| {
            let file = fenced
                .info
                .split_whitespace()
                .find_map(|word| word.strip_prefix("file="))?;
            Some((file.to_owned(), fenced.text))
        })
        .collect()
}
