//! Where things are in the config text: byte offsets to line and column,
//! the line of a key inside a table, and "did you mean" hints.

use std::fmt;
use std::ops::Range;

/// A 1-based line and column in the config file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// The config's text, for turning spans into locations.
#[derive(Clone, Debug, Default)]
pub struct Source {
    text: String,
    /// Where each line starts: a location is a binary search, so
    /// locating every target of a large config stays linear.
    line_starts: Vec<usize>,
}

impl Source {
    /// Wraps the config's text.
    pub fn new(text: String) -> Source {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(at, _)| at + 1))
            .collect();
        Source { text, line_starts }
    }

    /// The whole text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The location of a byte offset.
    pub fn locate(&self, offset: usize) -> Location {
        let offset = offset.min(self.text.len());
        // The last line starting at or before the offset.
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let start = self
            .line_starts
            .get(line.wrapping_sub(1))
            .copied()
            .unwrap_or(0);
        Location {
            line: line.max(1),
            column: offset - start + 1,
        }
    }

    /// Where `key` is written inside the table whose span is `table`: a
    /// header table (`[target.monitor]`) runs to the next header, an inline
    /// table (`{ ... }`) to its closing brace. Falls back to the table.
    pub fn key_in_table(&self, table: Range<usize>, key: &str) -> Location {
        let text = &self.text;
        let start = table.start.min(text.len());
        let end = if text[start..].starts_with('{') {
            table.end.min(text.len())
        } else {
            let after_header = table.end.min(text.len());
            text[after_header..]
                .match_indices('\n')
                .map(|(at, _)| after_header + at + 1)
                .find(|&line_start| text[line_start..].trim_start().starts_with('['))
                .unwrap_or(text.len())
        };
        let region = &text[start..end];
        let found = region.match_indices(key).find(|&(at, _)| {
            let before = region[..at].trim_end_matches([' ', '\t']);
            let after = region[at + key.len()..].trim_start_matches([' ', '\t']);
            let starts_key = before.is_empty() || before.ends_with(['\n', '{', ',']);
            starts_key && after.starts_with('=')
        });
        self.locate(found.map_or(start, |(at, _)| start + at))
    }
}

/// The candidate closest to `word`, if it is close enough to be a typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        // Edits: insert, delete, substitute, swap two neighbours (the
        // optimal string alignment distance), so `fien` is one from `fine`.
        .map(|candidate| (strsim::osa_distance(word, candidate), candidate))
        .filter(|&(distance, _)| distance <= limit)
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, candidate)| candidate)
}

/// The names serde lists in "expected one of `a`, `b`" or "expected `a`".
pub fn expected_names(message: &str) -> Vec<&str> {
    let Some(at) = message.find("expected") else {
        return Vec::new();
    };
    message[at..].split('`').skip(1).step_by(2).collect()
}

/// The field serde names in "unknown field `x`".
pub fn unknown_field(message: &str) -> Option<&str> {
    message.strip_prefix("unknown field `")?.split('`').next()
}

/// Adds `(did you mean "x"?)` to a serde "unknown field" message.
pub fn with_hint(message: &str) -> String {
    match unknown_field(message).and_then(|field| did_you_mean(field, expected_names(message))) {
        Some(guess) => format!("{message} (did you mean \"{guess}\"?)"),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_columns() {
        let source = Source::new("a = 1\nbb = 2\n".to_owned());
        assert_eq!(source.locate(0), Location { line: 1, column: 1 });
        assert_eq!(source.locate(6), Location { line: 2, column: 1 });
        assert_eq!(source.locate(8), Location { line: 2, column: 3 });
    }

    #[test]
    fn finds_a_key_in_a_header_table_and_an_inline_table() {
        let text = "[t]\nurl = 1\n[t.monitor]\nplugin = \"x\"\nurll = 2\n[other]\nurll = 3\n";
        let source = Source::new(text.to_owned());
        let header = text.find("[t.monitor]").unwrap();
        assert_eq!(source.key_in_table(header..header + 11, "urll").line, 5);
        let inline = "m = { plugin = \"x\", urll = 1 }\n";
        let source = Source::new(inline.to_owned());
        assert_eq!(
            source.key_in_table(4..inline.len() - 1, "urll"),
            Location {
                line: 1,
                column: 21
            }
        );
    }

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(did_you_mean("urll", ["url", "timeout"]), Some("url"));
        assert_eq!(
            did_you_mean("intervall", ["interval", "timeout"]),
            Some("interval")
        );
        assert_eq!(did_you_mean("zzz", ["url", "timeout"]), None);
        assert_eq!(did_you_mean("fien", ["fine", "db"]), Some("fine"));
    }

    #[test]
    fn hints_unknown_fields_from_serde_messages() {
        assert_eq!(
            with_hint("unknown field `urll`, expected one of `url`, `method`"),
            "unknown field `urll`, expected one of `url`, `method` (did you mean \"url\"?)"
        );
        assert_eq!(
            with_hint("unknown field `pth`, expected `path`"),
            "unknown field `pth`, expected `path` (did you mean \"path\"?)"
        );
        assert_eq!(with_hint("missing field `url`"), "missing field `url`");
    }
}
