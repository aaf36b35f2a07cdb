//! The fenced blocks of a Markdown page, as the tests that follow a guide
//! or a recipe read them: each block's language, the file it writes
//! (`file=NAME`) and its text; blocks marked `ignore` are neither run nor
//! written.

/// One fenced block of a Markdown page.
pub struct Block {
    /// The first word of its info string (```` ```toml ````): `toml`, `sh`, ...
    pub lang: String,
    /// The file it writes, from `file=NAME` in its info string.
    pub file: Option<String>,
    /// Its text, each line ending in a newline.
    pub text: String,
}

/// The fenced blocks of a Markdown page, in order, but those marked
/// `ignore` (```` ```rust ignore ````) and one left open at the end.
pub fn fenced_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    // The block being read, and whether it is marked `ignore`.
    let mut open: Option<(Block, bool)> = None;
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
                let block = Block {
                    lang,
                    file,
                    text: String::new(),
                };
                open = Some((block, rest.contains(&"ignore")));
            }
            (Some(_), Some("")) => {
                if let Some((block, false)) = open.take() {
                    blocks.push(block);
                }
            }
            (Some((block, _)), _) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

/// The fenced blocks of a Markdown page marked `file=NAME` (```` ```toml
/// file=healer.toml ````), in order: what a recipe or guide writes.
pub fn markdown_files(markdown: &str) -> Vec<(String, String)> {
    fenced_blocks(markdown)
        .into_iter()
        .filter_map(|block| Some((block.file?, block.text)))
        .collect()
}
