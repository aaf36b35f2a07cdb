//! Following a file the way `tail -F` does, but by checks instead of a
//! stream: each `read` returns the complete lines appended since the last.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The longest line kept: a longer one is passed on cut at this length, so a
/// file without newlines cannot grow the host's memory.
const MAX_LINE: usize = 64 * 1024;

/// The open file, where we are in it, and a partial last line.
pub struct Tail {
    path: PathBuf,
    file: Option<(File, u64)>,
    offset: u64,
    partial: Vec<u8>,
    from_start: bool,
    rotations: u64,
}

impl Tail {
    /// Follows `path`; the first read starts at its end unless `from_start`.
    pub fn new(path: PathBuf, from_start: bool) -> Tail {
        Tail {
            path,
            file: None,
            offset: 0,
            partial: Vec::new(),
            from_start,
            rotations: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many rotations were followed.
    pub fn rotations(&self) -> u64 {
        self.rotations
    }

    /// Complete lines appended since the last read, at most `max`.
    pub fn read(&mut self, max: usize) -> io::Result<Vec<String>> {
        let mut lines = Vec::new();
        let current = match std::fs::metadata(&self.path) {
            Ok(meta) => Some(meta.ino()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => None,
            Err(err) => return Err(err),
        };
        match (&self.file, current) {
            (None, None) => {
                self.from_start = true;
                return Ok(lines);
            }
            (None, Some(_)) => {
                let file = File::open(&self.path)?;
                let inode = file.metadata()?.ino();
                self.offset = if self.from_start {
                    0
                } else {
                    file.metadata()?.len()
                };
                self.file = Some((file, inode));
            }
            (Some((_, inode)), now) if now != Some(*inode) => {
                // Rotated (renamed, or removed): finish the old file through
                // the handle we hold (its last line even without a newline),
                // then start the new one from its top.
                self.drain(&mut lines, usize::MAX)?;
                if !self.partial.is_empty() {
                    lines.push(String::from_utf8_lossy(&self.partial).into_owned());
                }
                self.file = None;
                self.offset = 0;
                self.partial.clear();
                self.rotations += 1;
                if now.is_some() {
                    let file = File::open(&self.path)?;
                    let inode = file.metadata()?.ino();
                    self.file = Some((file, inode));
                }
            }
            _ => {}
        }
        // Only the file found on the first read holds history to skip: a
        // file that appears later is new, and is read from its top.
        self.from_start = true;
        if let Some((file, _)) = &self.file {
            if file.metadata()?.len() < self.offset {
                // Truncated in place (`> app.log`): start over from the top.
                self.offset = 0;
                self.partial.clear();
            }
        }
        self.drain(&mut lines, max)?;
        Ok(lines)
    }

    fn drain(&mut self, lines: &mut Vec<String>, max: usize) -> io::Result<()> {
        let Some((file, _)) = &mut self.file else {
            return Ok(());
        };
        file.seek(SeekFrom::Start(self.offset))?;
        let mut buffer = [0u8; 64 * 1024];
        while lines.len() < max {
            let read = file.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            let mut consumed = 0;
            for (at, byte) in buffer[..read].iter().enumerate() {
                if *byte == b'\n' {
                    self.partial.extend_from_slice(&buffer[consumed..at]);
                    lines.push(
                        String::from_utf8_lossy(&self.partial)
                            .trim_end_matches('\r')
                            .to_owned(),
                    );
                    self.partial.clear();
                    consumed = at + 1;
                    if lines.len() >= max {
                        break;
                    }
                }
            }
            if lines.len() >= max {
                self.offset += consumed as u64;
                return Ok(());
            }
            self.partial.extend_from_slice(&buffer[consumed..read]);
            self.offset += read as u64;
            if self.partial.len() >= MAX_LINE {
                lines.push(String::from_utf8_lossy(&self.partial[..MAX_LINE]).into_owned());
                self.partial.clear();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(path: &Path, text: &str) {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }

    #[test]
    fn reads_only_what_was_appended_and_waits_for_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "old line\n");
        let mut tail = Tail::new(path.clone(), false);
        assert!(tail.read(100).unwrap().is_empty());
        append(&path, "one\ntw");
        assert_eq!(tail.read(100).unwrap(), ["one"]);
        append(&path, "o\n");
        assert_eq!(tail.read(100).unwrap(), ["two"]);
    }

    #[test]
    fn rotation_loses_no_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "");
        let mut tail = Tail::new(path.clone(), false);
        tail.read(100).unwrap();
        let mut writer = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        writer.write_all(b"before rotation\n").unwrap();
        std::fs::rename(&path, dir.path().join("app.log.1")).unwrap();
        writer.write_all(b"late line in the old file\n").unwrap();
        append(&path, "first line of the new file\n");
        assert_eq!(
            tail.read(100).unwrap(),
            [
                "before rotation",
                "late line in the old file",
                "first line of the new file"
            ]
        );
        assert_eq!(tail.rotations(), 1);
    }

    #[test]
    fn a_file_that_appears_later_is_read_from_its_top() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        let mut tail = Tail::new(path.clone(), false);
        assert!(tail.read(100).unwrap().is_empty());
        append(&path, "born with a line\n");
        assert_eq!(tail.read(100).unwrap(), ["born with a line"]);
    }

    #[test]
    fn a_line_without_end_is_cut_at_max_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "");
        let mut tail = Tail::new(path.clone(), false);
        tail.read(10).unwrap();
        append(&path, &"x".repeat(MAX_LINE * 2 + 10));
        let lines = tail.read(10).unwrap();
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| l.len() == MAX_LINE));
    }

    #[test]
    fn the_rotated_files_unterminated_last_line_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "");
        let mut tail = Tail::new(path.clone(), false);
        tail.read(10).unwrap();
        append(&path, "complete\nno newline at the end");
        std::fs::rename(&path, dir.path().join("app.log.1")).unwrap();
        append(&path, "new\n");
        assert_eq!(
            tail.read(10).unwrap(),
            ["complete", "no newline at the end", "new"]
        );
    }

    #[test]
    fn truncation_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "");
        let mut tail = Tail::new(path.clone(), false);
        tail.read(100).unwrap();
        append(&path, "a long line before truncation\n");
        tail.read(100).unwrap();
        std::fs::write(&path, "fresh\n").unwrap();
        assert_eq!(tail.read(100).unwrap(), ["fresh"]);
    }

    #[test]
    fn at_most_max_lines_per_read_the_rest_next_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "");
        let mut tail = Tail::new(path.clone(), false);
        tail.read(10).unwrap();
        append(&path, "1\n2\n3\n");
        assert_eq!(tail.read(2).unwrap(), ["1", "2"]);
        assert_eq!(tail.read(2).unwrap(), ["3"]);
    }
}
