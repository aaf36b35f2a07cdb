//! Outside text shown within one line. A pause reason, a plugin's
//! summary, a worker's output or a key quoted in a config error may hold
//! a newline that would start a line of its own (a forged log line, a
//! forged row of `healer status`) or an escape sequence a terminal obeys.
//! Every place healer shows such text on a line goes through here: C0 and
//! C1 control characters, DEL, and the two Unicode characters some readers
//! take for a line break (U+2028, U+2029) are written escaped (`\n`, `\r`,
//! `\t`, else `\u{..}`).

use std::fmt;

/// Whether `c` would break a line or control a terminal.
pub fn breaks_line(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// `text`, displayed with what would break its line escaped.
pub struct OneLine<'a>(pub &'a str);

impl fmt::Display for OneLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Write::write_str(&mut Escaping(f), self.0)
    }
}

/// A writer that passes text on with what would break its line escaped.
pub struct Escaping<W>(pub W);

impl<W: fmt::Write> fmt::Write for Escaping<W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut rest = text;
        while let Some(at) = rest.find(breaks_line) {
            self.0.write_str(&rest[..at])?;
            let Some(c) = rest[at..].chars().next() else {
                break;
            };
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                c => write!(self.0, "\\u{{{:x}}}", u32::from(c))?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

/// A line of JSON (as serde writes it: C0 controls already escaped inside
/// strings) with DEL, the C1 controls and U+2028/U+2029 escaped as JSON
/// escapes too; they can stand only inside strings, so it stays the same
/// JSON.
pub fn json_line(line: &str) -> std::borrow::Cow<'_, str> {
    if !line.contains(breaks_line_in_json) {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len() + 16);
    for c in line.chars() {
        if breaks_line_in_json(c) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// What serde_json leaves as it is that still breaks a line somewhere.
fn breaks_line_in_json(c: char) -> bool {
    breaks_line(c) && c != '\n' && u32::from(c) >= 0x7f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forged_line_stays_on_its_own_line() {
        let forged = "ok\n2030-01-01T00:00:00.000000Z ERROR forged\r\u{1b}[2J\u{2028}\u{85}\u{7f}";
        let shown = OneLine(forged).to_string();
        assert!(!shown.contains(breaks_line), "{shown}");
        assert_eq!(
            shown,
            "ok\\n2030-01-01T00:00:00.000000Z ERROR forged\\r\\u{1b}[2J\\u{2028}\\u{85}\\u{7f}"
        );
    }

    #[test]
    fn a_json_line_keeps_its_meaning_and_loses_its_line_breakers() {
        let value = serde_json::json!({ "summary": "a\u{2028}b\u{85}c\u{7f}d\ne" });
        let line = serde_json::to_string(&value).unwrap();
        let safe = json_line(&line);
        assert!(!safe.contains(breaks_line), "{safe}");
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, value);
    }
}
